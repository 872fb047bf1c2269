"""Credentials the filter renews itself, end to end: a real Envoy (2 workers) with the built
filter, the official OpenAI SDK as the client, fake token endpoints (Entra ID's OAuth2 client
credentials, GitHub Copilot's token exchange) whose tokens expire after a few seconds, and fake
APIs (Azure OpenAI, an OpenAI-compatible Copilot) that take only a current token."""

from __future__ import annotations

import time

import openai
import pytest

from envoy_config import Provider, start_gateway
from fake_api import openai as openai_fake
from fake_api import tokens

HEALTH = "/llm-failover/health"
ADMIN_SECRET = "s3cret-admin-token-for-renewal-tests"
TENANT = "contoso-tenant"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_SECRET = "entra~client~secret~Zx9"
GITHUB_TOKEN = "gho_longlivedgithubtoken0123456789"
BACKUP_KEY = "sk-backup-static-key"
DEPLOYMENT = "gpt4o-deployment"
API_VERSION = "2024-10-21"
# What Copilot asks of clients besides the token (sent with the exchange and every chat request).
COPILOT_HEADERS = {"Copilot-Integration-Id": "vscode-chat", "Editor-Version": "vscode/1.95.0"}


class Renewed:
    """A provider whose token the filter renews: its token endpoint, its API and their issuer."""

    def __init__(self, mock, kind: str, lifetime: float, cooldowns: dict | None = None):
        self.kind = kind
        self.issuer = tokens.Issuer(lifetime, "eyJ0eXAi." if kind == "entra" else "tid=fake;exp=")
        self.endpoint = mock(f"{kind}-token")
        self.api = mock(kind)
        url = f"http://127.0.0.1:{self.endpoint.port}"
        if kind == "entra":
            self.name = "azure"
            self.endpoint.set_default(tokens.entra_responder(self.issuer, TENANT, CLIENT_ID, CLIENT_SECRET))
            self.api.set_default(tokens.azure_responder(self.issuer, DEPLOYMENT, API_VERSION, self.name))
            auth = {"kind": "oauth2-client-credentials", "tokenUrl": f"{url}/{TENANT}/oauth2/v2.0/token",
                    "clientIdEnv": "AZURE_CLIENT_ID", "clientSecretEnv": "AZURE_CLIENT_SECRET", "scope": tokens.ENTRA_SCOPE}
            self.provider = Provider(self.name, self.api.port, format="azure-openai", api_version=API_VERSION,
                                     models={"*": DEPLOYMENT}, extra={"auth": auth}, cooldowns=cooldowns or {})
            self.env = {"AZURE_CLIENT_ID": CLIENT_ID, "AZURE_CLIENT_SECRET": CLIENT_SECRET}
        else:
            self.name = "copilot"
            required = {k.lower(): v for k, v in COPILOT_HEADERS.items()}
            self.endpoint.set_default(tokens.exchange_responder(self.issuer, GITHUB_TOKEN, required))
            self.api.set_default(tokens.copilot_responder(self.issuer, self.name, required))
            auth = {"kind": "token-exchange", "tokenUrl": f"{url}{tokens.EXCHANGE_PATH}", "tokenEnv": "GITHUB_TOKEN",
                    "headers": COPILOT_HEADERS}
            self.provider = Provider(self.name, self.api.port, base_path="/", models={"*": "gpt-4o"},
                                     extra={"auth": auth}, cooldowns=cooldowns or {})
            self.env = {"GITHUB_TOKEN": GITHUB_TOKEN}

    def served(self) -> int:
        return sum(1 for r in self.api.requests if (r.header("authorization") or "").startswith("Bearer "))


def backup_provider(mock, key: str = BACKUP_KEY):
    api = mock("backup")
    api.set_default(openai_fake.responder("backup", key))
    return api, Provider("backup", api.port, key_env="BACKUP_KEY", key=key)


def gateway(tmp_path, providers: list[Provider], env: dict):
    return start_gateway(tmp_path, providers, extra_env={"LLM_ADMIN_SECRET": ADMIN_SECRET, **env},
                         router_extra={"admin": {"path": HEALTH, "secretEnv": "LLM_ADMIN_SECRET"}})


def client(envoy) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-client-own-key", base_url=f"http://127.0.0.1:{envoy.listener_ports[0]}/v1",
                         max_retries=0, timeout=15)


def report(envoy) -> dict:
    response = envoy.get(HEALTH, headers={"x-llm-failover-admin-secret": ADMIN_SECRET})
    assert response.status == 200, response.text()
    return {p["name"]: p for p in response.json()["providers"]}


def wait_for_credential(envoy, name: str, state: str, timeout: float = 8) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        credential = report(envoy)[name].get("credential")
        if credential and credential["state"] == state:
            return credential
        assert time.monotonic() < deadline, f"credential of {name}: {credential}"
        time.sleep(0.2)


def ask(sdk: openai.OpenAI, stream: bool) -> tuple[str, str]:
    """(the text, the provider that served it)."""
    messages = [{"role": "user", "content": "hello"}]
    if stream:
        raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
        return text, raw.headers.get("x-llm-provider")
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    return raw.parse().choices[0].message.content, raw.headers.get("x-llm-provider")


def assert_no_secret_in_log(envoy, renewed: Renewed) -> None:
    log = envoy.log()
    for secret in [CLIENT_SECRET, GITHUB_TOKEN, BACKUP_KEY, *renewed.issuer.issued()]:
        assert secret not in log, f"a secret reached the Envoy log: {secret[:6]}..."


@pytest.mark.core
@pytest.mark.parametrize("kind", ["entra", "copilot"])
@pytest.mark.parametrize("place", ["primary", "fallback"])
def test_a_renewed_provider_serves_plain_and_streamed(tmp_path, mock, kind, place):
    renewed = Renewed(mock, kind, lifetime=30)
    backup, backup_entry = backup_provider(mock)
    if place == "fallback":
        backup.set_default({"status": 503, "body": {"error": {"message": "overloaded", "type": "server_error"}}})
    order = [renewed.provider, backup_entry] if place == "primary" else [backup_entry, renewed.provider]
    envoy = gateway(tmp_path, order, renewed.env)
    credential = wait_for_credential(envoy, renewed.name, "fresh")
    assert credential["kind"] == ("oauth2-client-credentials" if kind == "entra" else "token-exchange")
    sdk = client(envoy)
    for stream in (False, True):
        text, provider = ask(sdk, stream)
        assert (text, provider) == (f"hello from {renewed.name}", renewed.name), stream
    assert renewed.served() == 2 and renewed.issuer.refused == []
    # Every worker used the token one worker fetched: one token request, or a few at most.
    assert 1 <= len(renewed.endpoint.requests) <= 2, len(renewed.endpoint.requests)
    for request in renewed.api.requests:
        assert request.header("api-key") is None and request.header("x-api-key") is None
        assert BACKUP_KEY not in str(request.headers) and "sk-client-own-key" not in str(request.headers)
    if place == "fallback":
        assert all(r.header("authorization") == f"Bearer {BACKUP_KEY}" for r in backup.requests)
    assert envoy.stats().get(f"wasmcustom.llm_failover.provider.{renewed.name}.credential.renewed", 0) >= 1
    assert_no_secret_in_log(envoy, renewed)


@pytest.mark.core
@pytest.mark.parametrize("kind", ["entra", "copilot"])
def test_a_token_that_expires_mid_run_is_renewed_with_no_failed_request(tmp_path, mock, kind):
    # 6 s tokens (Copilot's expiry is in whole seconds): renewed about every 3 s, on a 1 s tick.
    renewed = Renewed(mock, kind, lifetime=6)
    envoy = gateway(tmp_path, [renewed.provider], renewed.env)
    wait_for_credential(envoy, renewed.name, "fresh")
    sdk = client(envoy)
    started = time.monotonic()
    served = 0
    for i in range(80):     # about 15 s: several token lifetimes
        if time.monotonic() - started > 15:
            break
        text, provider = ask(sdk, stream=i % 2 == 1)
        assert provider == renewed.name and text == f"hello from {renewed.name}"
        served += 1
        time.sleep(0.15)
    assert served >= 20
    assert renewed.issuer.refused == [], renewed.issuer.refused
    assert len(renewed.issuer.issued()) >= 3, "renewed ahead of each expiry"
    tokens_used = {r.header("authorization") for r in renewed.api.requests}
    assert len(tokens_used) >= 3
    assert_no_secret_in_log(envoy, renewed)


@pytest.mark.core
def test_a_down_token_endpoint_fails_over_and_shows_in_health_metrics_and_log(tmp_path, mock):
    renewed = Renewed(mock, "entra", lifetime=30)
    renewed.endpoint.stop()
    backup, backup_entry = backup_provider(mock)
    envoy = gateway(tmp_path, [renewed.provider, backup_entry], renewed.env)
    credential = wait_for_credential(envoy, renewed.name, "failed")
    assert credential["failures"] >= 1 and credential["lastError"], credential
    assert credential["expiresInS"] is None
    sdk = client(envoy)
    for stream in (False, True):
        assert ask(sdk, stream) == ("hello from backup", "backup")
    assert renewed.api.requests == [], "no attempt without a token"
    assert envoy.wait_for_stat("wasmcustom.llm_failover.provider.azure.credential.renewal_failed") >= 1
    envoy.wait_for_log(r"renewing the credential of `azure` failed \(\d+ in a row\): .*next try in \d+s")
    assert_no_secret_in_log(envoy, renewed)


@pytest.mark.core
def test_a_refused_renewed_token_is_renewed_and_the_provider_serves_again_without_an_operator(tmp_path, mock):
    renewed = Renewed(mock, "copilot", lifetime=60, cooldowns={"authFailure": "1s"})
    backup, backup_entry = backup_provider(mock)
    envoy = gateway(tmp_path, [renewed.provider, backup_entry], renewed.env)
    wait_for_credential(envoy, renewed.name, "fresh")
    sdk = client(envoy)
    assert ask(sdk, False)[1] == "copilot"
    issued_before = len(renewed.endpoint.requests)
    renewed.issuer.revoke_all()     # as when GitHub revokes the short-lived token early
    assert ask(sdk, False) == ("hello from backup", "backup"), "the 401 fails over"
    [after_copilot] = backup.requests
    assert after_copilot.header("copilot-integration-id") is None and after_copilot.header("editor-version") is None, \
        "another provider's headers do not follow the request"
    envoy.wait_for_log(r"`copilot` refused its renewed token: renewing it now")
    health = report(envoy)["copilot"]
    assert health["cooldownRemainingS"] != "until-reset", health
    wait_for_credential(envoy, "copilot", "fresh")
    assert len(renewed.endpoint.requests) > issued_before
    deadline = time.monotonic() + 8
    while ask(sdk, False)[1] != "copilot":
        assert time.monotonic() < deadline, report(envoy)["copilot"]
        time.sleep(0.3)
    assert_no_secret_in_log(envoy, renewed)


@pytest.mark.core
def test_a_static_key_refused_with_401_still_waits_for_an_operator(tmp_path, mock):
    renewed = Renewed(mock, "entra", lifetime=60)
    backup, backup_entry = backup_provider(mock, key="sk-backup-revoked")
    backup.set_default({"status": 401, "body": {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}})
    envoy = gateway(tmp_path, [backup_entry, renewed.provider], renewed.env)
    wait_for_credential(envoy, renewed.name, "fresh")
    sdk = client(envoy)
    assert ask(sdk, False)[1] == "azure"
    health = report(envoy)["backup"]
    assert health["cooldownRemainingS"] == "until-reset" and "credential" not in health, health
    for _ in range(3):
        assert ask(sdk, True)[1] == "azure"
    assert len(backup.requests) == 1, "left out until an operator resets it"
