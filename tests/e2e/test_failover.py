"""Failover end to end: a real Envoy (2 workers) with the built filter, mock providers on loopback."""

from __future__ import annotations

import base64
import json
import time

import pytest

import harness
from envoy_config import Provider, start_gateway, envoy_version
from mock_provider import openai_error

CHAT_PATH = "/v1/chat/completions"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


gateway = start_gateway


def chat(envoy, body=CHAT, headers=None, timeout=10) -> harness.Response:
    return envoy.post_json(CHAT_PATH, body, headers=headers, timeout=timeout)


def counter(envoy, name: str) -> int:
    return envoy.stats().get(f"wasmcustom.llm_failover.{name}", 0)


@pytest.mark.core
def test_rate_limited_primary_fails_over_and_is_skipped_until_retry_after(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)])
    a.script(openai_error(429, retry_after=30))

    first = chat(envoy)
    assert first.status == 200, first.text()
    assert first.json()["choices"][0]["message"]["content"] == "hello from b"
    assert first.headers["x-llm-provider"] == "b"
    assert first.headers["x-llm-attempts"] == "2"
    assert "x-llm-skipped" not in first.headers
    envoy.wait_for_log(r"provider `a` failed \(429 rate_limited\) for model `gpt-4o` on attempt 1; cooling down 30s")

    # New connections land on both workers: every one of them must skip `a`.
    for _ in range(8):
        again = chat(envoy)
        assert again.status == 200
        assert again.headers["x-llm-provider"] == "b"
        assert again.headers["x-llm-attempts"] == "1"
        assert again.headers["x-llm-skipped"] == "a"
    assert len(a.requests) == 1
    assert len(b.requests) == 9
    assert counter(envoy, "provider.a.failover.rate_limited") == 1
    assert counter(envoy, "provider.a.skipped") == 8
    assert counter(envoy, "provider.b.served") == 9
    assert counter(envoy, "requests") == 9


@pytest.mark.core
def test_unavailable_primary_fails_over(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)])
    a.script(openai_error(503))
    response = chat(envoy)
    assert response.status == 200
    assert response.headers["x-llm-provider"] == "b"
    assert counter(envoy, "provider.a.failover.server_error") == 1
    envoy.wait_for_log(r"provider `a` failed \(503 server_error\) for model `gpt-4o` on attempt 1; cooling down 5s")


@pytest.mark.core
def test_unauthorized_primary_fails_over_and_cools_down_long(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port, key_env="A_KEY", key="sk-a-revoked"),
                               Provider("b", b.port)])
    a.script(openai_error(401))
    response = chat(envoy)
    assert response.status == 200
    assert response.headers["x-llm-provider"] == "b"
    envoy.wait_for_log(r"provider `a` failed \(401 unauthorized\) on attempt 1; cooling down until an operator resets it")
    for _ in range(4):
        assert chat(envoy).headers["x-llm-skipped"] == "a"
    assert len(a.requests) == 1
    assert counter(envoy, "provider.a.failover.unauthorized") == 1


@pytest.mark.core
def test_connection_refused_fails_over(tmp_path, mock):
    b = mock("b")
    nobody_listens = harness.free_port()
    envoy = gateway(tmp_path, [Provider("a", nobody_listens), Provider("b", b.port)])
    response = chat(envoy)
    assert response.status == 200
    assert response.headers["x-llm-provider"] == "b"
    assert response.headers["x-llm-attempts"] == "2"
    envoy.wait_for_stat("wasmcustom.llm_failover.provider.a.failover.connect_failure")
    assert chat(envoy).headers["x-llm-skipped"] == "a"


@pytest.mark.core
def test_slow_provider_hits_per_try_timeout_and_fails_over(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)], per_try_timeout="0.4s")
    # `a` would answer after 10 s and the client gives up at 5 s: only the per-try timeout
    # moving the request to `b` can produce an answer.
    a.script({"delay": 10})
    response = chat(envoy, timeout=5)
    assert response.status == 200
    assert response.headers["x-llm-provider"] == "b"
    envoy.wait_for_stat("wasmcustom.llm_failover.provider.a.failover.no_response")


@pytest.mark.core
def test_provider_recovers_after_its_cooldown(tmp_path, mock):
    a, b = mock("a"), mock("b")
    quick = {"failureBase": "1s", "failureMax": "1s"}
    envoy = gateway(tmp_path, [Provider("a", a.port, cooldowns=quick), Provider("b", b.port)])
    a.script(openai_error(503))
    assert chat(envoy).headers["x-llm-provider"] == "b"
    assert chat(envoy).headers["x-llm-provider"] == "b"
    time.sleep(1.3)
    recovered = chat(envoy)
    assert recovered.headers["x-llm-provider"] == "a"
    assert "x-llm-skipped" not in recovered.headers
    assert len(a.requests) == 2


@pytest.mark.core
def test_everything_down_answers_503_with_retry_after_then_tries_only_the_first_to_recover(tmp_path, mock):
    a, b, c = mock("a"), mock("b"), mock("c")
    providers = [
        Provider("a", a.port, cooldowns={"failureBase": "30s"}),
        Provider("b", b.port, cooldowns={"failureBase": "8s"}),
        Provider("c", c.port, cooldowns={"failureBase": "20s"}),
    ]
    envoy = gateway(tmp_path, providers)
    for m in (a, b, c):
        m.set_default(openai_error(503))

    down = chat(envoy)
    assert down.status == 503
    assert down.headers["content-type"] == "application/json"
    error = down.json()["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "all_providers_unavailable"
    assert "gpt-4o" in error["message"]
    assert 7 <= int(down.headers["retry-after"]) <= 8
    assert [len(m.requests) for m in (a, b, c)] == [1, 1, 1]
    assert counter(envoy, "exhausted") == 1

    # All cooling: one attempt only, at `b`, whose cooldown ends first.
    b.set_default({"echo": True})
    last_resort = chat(envoy)
    assert last_resort.status == 200
    assert last_resort.headers["x-llm-provider"] == "b"
    assert last_resort.headers["x-llm-skipped"] == "a,c"
    assert [len(m.requests) for m in (a, b, c)] == [1, 2, 1]
    assert counter(envoy, "last_resort") == 1


def test_last_resort_failure_is_one_attempt_and_a_503(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port, cooldowns={"failureBase": "20s"}),
                               Provider("b", b.port, cooldowns={"failureBase": "10s"})])
    a.set_default(openai_error(503))
    b.set_default(openai_error(503))
    assert chat(envoy).status == 503
    second = chat(envoy)
    assert second.status == 503
    assert [len(a.requests), len(b.requests)] == [1, 2]
    # b failed twice: backoff doubled to 20s, so a (20s from the first request) is back first.
    assert 15 <= int(second.headers["retry-after"]) <= 20


@pytest.mark.core
def test_no_provider_receives_another_providers_or_the_clients_credentials(tmp_path, mock):
    a, b, c, d = mock("a"), mock("b"), mock("c"), mock("d")
    providers = [
        Provider("a", a.port, key_env="A_KEY", key="sk-a-secret"),
        Provider("b", b.port, key_env="B_KEY", key="sk-b-secret", auth_style="x-api-key"),
        Provider("c", c.port, format="azure-openai", key_env="C_KEY", key="az-c-secret",
                 api_version="2024-10-21", models={"*": "gpt4o-deployment"}),
        Provider("d", d.port),  # a local model: no key at all
    ]
    envoy = gateway(tmp_path, providers)
    a.script(openai_error(401))
    b.script(openai_error(429))
    c.script(openai_error(503))
    client_secrets = {"authorization": "Bearer client-token", "x-api-key": "client-x",
                      "api-key": "client-api", "x-goog-api-key": "client-goog",
                      "proxy-authorization": "Basic client-proxy", "cookie": "session=client"}
    response = chat(envoy, headers=client_secrets)
    assert response.status == 200
    assert response.headers["x-llm-provider"] == "d"
    assert response.headers["x-llm-attempts"] == "4"

    secrets = ["sk-a-secret", "sk-b-secret", "az-c-secret", *client_secrets.values()]
    expected = {"a": ("authorization", "Bearer sk-a-secret"), "b": ("x-api-key", "sk-b-secret"),
                "c": ("api-key", "az-c-secret"), "d": None}
    for m in (a, b, c, d):
        [received] = m.requests
        own = expected[m.name]
        for name in ("authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization", "cookie"):
            if own and name == own[0]:
                assert received.header_values(name) == [own[1]], m.name
            else:
                assert received.header(name) is None, f"{m.name} received {name}"
        others = [s for s in secrets if not (own and s in own[1])]
        for _, value in received.header_list:
            assert not any(s in value for s in others), f"{m.name} received a foreign secret"

    assert c.requests[0].path == "/openai/deployments/gpt4o-deployment/chat/completions"
    assert c.requests[0].query == "api-version=2024-10-21"
    log = envoy.log()
    assert not any(s in log for s in secrets), "a secret reached the Envoy log"


@pytest.mark.core
def test_client_cannot_choose_the_order_or_the_retries(tmp_path, mock):
    a, b, c = mock("a"), mock("b"), mock("c")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port), Provider("c", c.port)])
    a.script(openai_error(429))
    forged_order = base64.b64encode(priority_groups(["c"])).decode()
    response = chat(envoy, headers={"x-llm-failover-order": forged_order, "x-envoy-max-retries": "0",
                                    "x-envoy-retry-on": "none"})
    assert response.status == 200
    assert response.headers["x-llm-provider"] == "b"
    assert [len(a.requests), len(b.requests), len(c.requests)] == [1, 1, 0]
    assert b.requests[0].header("x-llm-failover-order") is None


def priority_groups(names: list[str]) -> bytes:
    """The same google.protobuf.Value the router role sends, to forge one."""
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload
    groups = b"".join(field(1, field(5, field(1, field(1, b"name") + field(2, field(3, n.encode())))))
                      for n in names)
    return field(6, groups)


def test_fallback_receives_the_body_byte_for_byte(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)])
    a.script(openai_error(503))
    body = ('{ "model":"gpt-4o",  "temperature": 0.70, "messages": [{"role":"user","content":"'
            + "héllo wörld ✓ " * 4000 + '"}], "metadata": {"k": [1, 2.50, null]} }').encode()
    response = envoy.post_raw(CHAT_PATH, body, {"content-type": "application/json"})
    assert response.status == 200
    assert a.requests[0].body == body
    assert b.requests[0].body == body


def test_model_is_mapped_per_provider_and_nothing_else_changes(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port, models={"gpt-4o": "gpt-4o-2024-08-06"}),
                               Provider("b", b.port, models={"*": "meta-llama/llama-3.3-70b"})])
    a.script(openai_error(429))
    body = b'{"model": "gpt-4o", "stream": false, "messages": [{"role": "user", "content": "model: gpt-4o"}]}'
    response = envoy.post_raw(CHAT_PATH, body, {"content-type": "application/json"})
    assert response.status == 200
    assert response.headers["x-llm-model"] == "meta-llama/llama-3.3-70b"
    assert a.requests[0].body == body.replace(b'"gpt-4o", "stream"', b'"gpt-4o-2024-08-06", "stream"')
    assert b.requests[0].json["model"] == "meta-llama/llama-3.3-70b"
    assert b.requests[0].json["messages"][0]["content"] == "model: gpt-4o"


def test_model_aliases_choose_the_chain(tmp_path, mock):
    a, b, c = mock("a"), mock("b"), mock("c")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port), Provider("c", c.port)],
                    chains={"default": ["a", "b"], "local": ["c", "b"]}, models={"llama3.3": "local"})
    assert chat(envoy, {**CHAT, "model": "llama3.3"}).headers["x-llm-provider"] == "c"
    assert chat(envoy).headers["x-llm-provider"] == "a"


@pytest.mark.core
def test_streamed_answer_flows_through_a_failover_chunk_by_chunk(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)])
    a.script(openai_error(429))
    events = [{"data": {"choices": [{"index": 0, "delta": {"content": f"part {i}"}}]}, "delay": 0.25}
              for i in range(4)] + [{"data": "[DONE]", "delay": 0.25}]
    b.script({"sse": events})
    status, headers, chunks = envoy.stream(CHAT_PATH, {**CHAT, "stream": True})
    assert status == 200
    assert headers["x-llm-provider"] == "b"
    assert headers["content-type"].startswith("text/event-stream")
    text = b"".join(c for _, c in chunks).decode()
    assert [f"part {i}" in text for i in range(4)] == [True] * 4
    assert text.rstrip().endswith("data: [DONE]")
    assert len(chunks) >= 4, "the stream was buffered instead of passed through"
    assert chunks[-1][0] - chunks[0][0] >= 0.6, "chunks did not arrive spaced in time"


@pytest.mark.parametrize("body, param, fragment", [
    (b"this is not json", None, "not valid JSON"),
    (b'{"model": "gpt-4o"}', "messages", "`messages` must be a non-empty array"),
    (b'{"model": "gpt-4o", "messages": []}', "messages", "`messages` must be a non-empty array"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "model", "`model`"),
    (b'["model", "messages"]', None, "must be a JSON object"),
])
@pytest.mark.core
def test_malformed_chat_requests_get_400_and_reach_no_provider(tmp_path, mock, body, param, fragment):
    a = mock("a")
    envoy = gateway(tmp_path, [Provider("a", a.port)])
    response = envoy.post_raw(CHAT_PATH, body, {"content-type": "application/json"})
    assert response.status == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]
    assert a.requests == []
    assert counter(envoy, "rejected.bad_request") == 1


def test_body_over_the_limit_gets_413(tmp_path, mock):
    a = mock("a")
    envoy = gateway(tmp_path, [Provider("a", a.port)], router_extra={"maxRequestBytes": 2000})
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 3000}]}).encode()
    response = envoy.post_raw(CHAT_PATH, big, {"content-type": "application/json"})
    assert response.status == 413
    assert response.json()["error"]["code"] == "too_large"
    # Without a content-length the limit still holds, counted as the body arrives.
    chunked = harness.http_request(envoy.listener_ports[0], "POST", CHAT_PATH, iter([big[:1500], big[1500:]]),
                                   {"content-type": "application/json"})
    assert chunked.status == 413
    assert a.requests == []
    assert chat(envoy).status == 200


def test_unknown_model_without_default_chain_gets_404(tmp_path, mock):
    a = mock("a")
    envoy = gateway(tmp_path, [Provider("a", a.port)], chains={"main": ["a"]},
                    models={"gpt-4o": "main"}, default_chain=None)
    assert chat(envoy).status == 200
    missing = chat(envoy, {**CHAT, "model": "gpt-9"})
    assert missing.status == 404
    assert missing.json()["error"]["param"] == "model"
    assert len(a.requests) == 1


def test_client_errors_are_returned_as_they_are_without_failover(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)])
    a.script(openai_error(400, "max_tokens is too large"))
    response = chat(envoy)
    assert response.status == 400
    assert response.json()["error"]["message"] == "max_tokens is too large"
    assert b.requests == []
    assert "x-llm-skipped" not in chat(envoy).headers


@pytest.mark.core
def test_counters_match_what_the_mocks_saw(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port, cooldowns={"failureBase": "1ms", "rateLimited": "1ms"}),
                               Provider("b", b.port)])
    a.script(openai_error(429), openai_error(503), openai_error(503), {"echo": True}, openai_error(401))
    for _ in range(5):
        assert chat(envoy).status == 200
        time.sleep(0.01)
    stats = envoy.stats()

    def stat(name):
        return stats.get(f"wasmcustom.llm_failover.{name}", 0)
    assert stat("provider.a.attempts") == len(a.requests) == 5
    assert stat("provider.b.attempts") == len(b.requests) == 4
    assert stat("provider.a.failover.rate_limited") == 1
    assert stat("provider.a.failover.server_error") == 2
    assert stat("provider.a.failover.unauthorized") == 1
    assert stat("provider.a.served") == 1
    assert stat("provider.b.served") == 4
    assert stat("requests") == 5


@pytest.mark.skipif(envoy_version() < (1, 38), reason="maxRequestBytes over 1 MiB needs Envoy 1.38")
def test_envoys_own_buffer_limit_answers_413_in_openai_form(tmp_path, mock):
    """The plugin allows 4 MiB but Envoy buffers less: the listener's buffer, which holds the
    paused body, is rendered at maxAnswerBytes + 1 MiB = 2 MiB here (the render keeps requests
    under maxRequestBytes; a hand-edited config may not). Envoy refuses, and the client still
    gets an OpenAI-style error, not Envoy's plain text."""
    a = mock("a")
    envoy = gateway(tmp_path, [Provider("a", a.port)], router_extra={"maxRequestBytes": 4 << 20, "maxAnswerBytes": 1 << 20},
                    body_buffer_limit=1 << 20)
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * (3 << 20)}]}).encode()
    chunked = harness.http_request(envoy.listener_ports[0], "POST", CHAT_PATH,
                                   iter([big[i:i + 16384] for i in range(0, len(big), 16384)]),
                                   {"content-type": "application/json"})
    assert chunked.status == 413
    assert chunked.headers["content-type"] == "application/json"
    assert chunked.json()["error"]["code"] == "too_large"
    assert a.requests == []


@pytest.mark.skipif(envoy_version() < (1, 38), reason="Envoy 1.36 and 1.37 do not retry a body over 1 MiB "
                    "whatever the route's buffer limit (docs/compatibility.md)")
def test_bodies_over_a_mebibyte_fail_over_when_the_route_buffers_them(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)],
                    router_extra={"maxRequestBytes": 4 << 20}, body_buffer_limit=4 << 20)
    a.script(openai_error(503))
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * (2 << 20)}]}).encode()
    response = envoy.post_raw(CHAT_PATH, big, {"content-type": "application/json"})
    assert response.status == 200
    assert response.headers["x-llm-provider"] == "b"
    assert b.requests[0].body == big


def test_envoy_cutting_the_chain_short_is_logged_and_counted(tmp_path, mock):
    """A route buffering less than maxRequestBytes makes Envoy stop retrying: the operator
    must learn why the healthy fallback was never tried."""
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)],
                    router_extra={"maxRequestBytes": 1 << 20}, body_buffer_limit=64 << 10)
    a.script(openai_error(503))
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * (200 << 10)}]}).encode()
    response = envoy.post_raw(CHAT_PATH, big, {"content-type": "application/json"})
    assert response.status == 503
    assert [len(a.requests), len(b.requests)] == [1, 0]
    envoy.wait_for_log(r"Envoy stopped after 1 of 2 attempts; check the order clusters' circuit_breakers "
                       r"max_retries .* and that the route's body buffer limit .* is at least maxRequestBytes")
    assert counter(envoy, "retries_cut_short") == 1


@pytest.mark.core
def test_concurrent_failures_on_two_workers_are_all_counted_in_shared_health(tmp_path, mock):
    """Sixteen requests reach `a` together and all fail at once, spread over both workers.
    Each failure doubles the backoff, so if no update is lost the cooldowns logged are exactly
    1, 2, 4 ... 32768 seconds: a lost update (no compare-and-swap) would repeat one."""
    import re

    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port, cooldowns={"failureBase": "1s", "failureMax": "1d"}),
                               Provider("b", b.port)], per_try_timeout="8s")
    # Long enough that every request is at `a` before the first failure is recorded.
    a.set_default({**openai_error(503), "delay": 2.0})
    responses = harness.concurrently(16, lambda _: chat(envoy, timeout=15))
    assert [r.status for r in responses] == [200] * 16
    assert {r.headers["x-llm-provider"] for r in responses} == {"b"}
    assert len(a.requests) == 16
    envoy.wait_for_stat("wasmcustom.llm_failover.provider.a.failover.server_error", 16)
    time.sleep(0.1)
    cooldowns = sorted(int(s) for s in re.findall(r"provider `a` failed \(503 server_error\) for model `gpt-4o` on attempt 1; cooling down (\d+)s",
                                                   envoy.log()))
    assert cooldowns == [2 ** i for i in range(16)]
    workers = set(re.findall(r"\]\[(\d+)\]\[warning\]\[wasm\].*provider `a` failed", envoy.log()))
    assert len(workers) == 2, "the failures should have been recorded by both workers"


@pytest.mark.core
def test_other_paths_get_an_openai_style_404_and_reach_no_provider(tmp_path, mock):
    """Only a chat request gets an order cluster: a path the gateway does not serve is answered
    by the route itself, and no provider sees it or a key."""
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port, key_env="A_KEY", key="sk-a"), Provider("b", b.port)])
    for method, path in [("GET", "/v1/files"), ("POST", "/v1/embeddings"), ("GET", "/v1/chat/completions")]:
        response = harness.http_request(envoy.listener_ports[0], method, path, b"{}" if method == "POST" else None,
                                        {"authorization": "Bearer client", "content-type": "application/json"})
        assert response.status == 404, (method, path)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == "unsupported_path"
    # The model list is the router role's own answer: no provider sees it either.
    models = harness.http_request(envoy.listener_ports[0], "GET", "/v1/models", None, {"authorization": "Bearer client"})
    assert models.status == 200 and models.json()["object"] == "list"
    assert a.requests == [] and b.requests == []


def test_a_client_that_gives_up_does_not_put_the_provider_in_cooldown(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)])
    a.script({"delay": 1.0})
    with pytest.raises(OSError):
        chat(envoy, timeout=0.2)
    time.sleep(1.0)
    after = chat(envoy)
    assert after.headers["x-llm-provider"] == "a"
    assert "x-llm-skipped" not in after.headers
    assert counter(envoy, "provider.a.failover.no_response") == 0


def test_non_utf8_header_values_do_not_crash_the_filter(tmp_path, mock):
    """Header values may carry obs-text bytes; a provider's odd Retry-After must not take the
    VM down (the SDK's string getters panic on them)."""
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)])
    a.script({**openai_error(429), "headers": {"retry-after": "\xff\xfe"}})
    response = chat(envoy, headers={"x-client-note": "caf\xe9"})
    assert response.status == 200
    assert response.headers["x-llm-provider"] == "b"
    assert "panicked" not in envoy.log()
    for _ in range(3):
        assert chat(envoy).status == 200
