"""TLS to a provider as envoy/real-providers.yaml sets it up: SNI and certificate check for the
provider's host, the host the attempt role also sends as :authority."""

from __future__ import annotations

import subprocess

import pytest

from envoy_config import Provider, start_gateway
from mock_provider import MockProvider, openai_error

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


def certificate(tmp_path, name: str, host: str) -> tuple[str, str]:
    """A self-signed certificate for `host` (it is its own CA)."""
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


@pytest.fixture
def tls_mock(tmp_path):
    started = []

    def make(name: str, host: str) -> tuple[MockProvider, str]:
        cert, key = certificate(tmp_path, name, host)
        provider = MockProvider(name, tls=(cert, key)).start()
        started.append(provider)
        return provider, cert
    yield make
    for provider in started:
        provider.stop()


@pytest.mark.core
def test_fallback_over_tls_sends_the_providers_host_as_sni(tmp_path, mock, tls_mock):
    a = mock("a")
    secure, ca = tls_mock("secure", "api.secure-provider.test")
    envoy = start_gateway(tmp_path, [Provider("a", a.port),
                               Provider("secure", secure.port, host="api.secure-provider.test", tls_ca=ca,
                                        key_env="SECURE_KEY", key="sk-secure")])
    a.script(openai_error(503))
    response = envoy.post_json("/v1/chat/completions", CHAT)
    assert response.status == 200
    assert response.headers["x-llm-provider"] == "secure"
    [received] = secure.requests
    assert received.sni == "api.secure-provider.test"
    assert received.header("host") == "api.secure-provider.test"
    assert received.header("authorization") == "Bearer sk-secure"


def test_a_certificate_for_another_host_is_refused_and_failed_over(tmp_path, mock, tls_mock):
    impostor, ca = tls_mock("impostor", "somebody-else.test")
    b = mock("b")
    envoy = start_gateway(tmp_path, [Provider("impostor", impostor.port, host="api.secure-provider.test", tls_ca=ca,
                                        key_env="IMPOSTOR_KEY", key="sk-not-for-them"),
                               Provider("b", b.port)])
    response = envoy.post_json("/v1/chat/completions", CHAT)
    assert response.status == 200
    assert response.headers["x-llm-provider"] == "b"
    assert impostor.requests == [], "the key must never be sent over an unverified connection"
    envoy.wait_for_stat("wasmcustom.llm_failover.provider.impostor.failover.connect_failure")


def test_a_hedge_through_an_aggregate_cluster_keeps_each_providers_tls(tmp_path, tls_mock):
    """An order cluster's attempts connect with the provider cluster's own TLS: each provider
    gets its own SNI, host and key, hedge or not."""
    slow, slow_ca = tls_mock("slow", "api.slow-provider.test")
    fast, fast_ca = tls_mock("fast", "api.fast-provider.test")
    providers = [Provider("slow", slow.port, host="api.slow-provider.test", tls_ca=slow_ca, key_env="SLOW_KEY", key="sk-slow"),
                 Provider("fast", fast.port, host="api.fast-provider.test", tls_ca=fast_ca, key_env="FAST_KEY", key="sk-fast")]
    envoy = start_gateway(tmp_path, providers, per_try_timeout="10s",
                          router_extra={"chains": {}, "profiles": {"default": {"normal": ["slow", "fast"], "hedgeAfter": "300ms"}}})
    slow.script({"delay": 2.0}, {"echo": True})
    response = envoy.post_json("/v1/chat/completions", CHAT)
    assert response.status == 200
    assert (response.headers["x-llm-provider"], response.headers["x-llm-attempts"]) == ("fast", "2")
    slow.wait_for_requests(1)
    for mock, host, key in [(slow, "api.slow-provider.test", "sk-slow"), (fast, "api.fast-provider.test", "sk-fast")]:
        [received] = mock.requests
        assert (received.sni, received.header("host")) == (host, host)
        assert received.header("authorization") == f"Bearer {key}"
