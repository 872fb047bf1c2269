"""Gemini on Vertex AI with the filter's own Google access token, end to end: a real Envoy (2
workers), the official OpenAI SDK as the client, the service-account key file in the VM's
environment, the Google token endpoint fake (it verifies each RS256 assertion against the key's
public half and issues tokens that expire after a few seconds) and the Vertex fake (it takes
only a current token the endpoint issued)."""

from __future__ import annotations

import json
import time

import openai
import pytest

from envoy_config import Provider, start_gateway
from fake_api import openai as openai_fake
from fake_api import vertex

HEALTH = "/llm-failover/health"
ADMIN_SECRET = "s3cret-admin-token-for-google-tests"
PROJECT, LOCATION = "llm-failover-test", "us-central1"
MODEL = "gemini-2.5-flash"
KEY_ENV = "GOOGLE_SERVICE_ACCOUNT_JSON"
OTHER_KEY = "sk-other-static-key"
KIND = "google-service-account"


class Google:
    """The Vertex provider `vertex`, its token endpoint, and `other`, an OpenAI-compatible one."""

    def __init__(self, tmp_path, mock, lifetime_s: float, vertex_first: bool = True,
                 other_fails: bool = False, cooldowns: dict | None = None, token_endpoint_down: bool = False,
                 token_answer: dict | None = None):
        self.token_server = mock("google-token")
        token_uri = f"http://127.0.0.1:{self.token_server.port}/token"
        self.key_file = vertex.load_key_file(token_uri=token_uri)
        self.tokens = vertex.TokenEndpoint(self.key_file, lifetime_s=lifetime_s)
        self.token_server.set_default(token_answer or self.tokens.responder())
        if token_endpoint_down:
            self.token_server.stop()
        self.api = mock("vertex")
        self.api.set_default(vertex.gemini_responder("vertex", self.tokens, PROJECT, LOCATION))
        self.other = mock("other")
        self.other.set_default({"status": 503, "body": {"error": {"message": "overloaded", "type": "server_error"}}}
                               if other_fails else openai_fake.responder("other", OTHER_KEY))
        auth = {"kind": KIND, "keyEnv": KEY_ENV, "tokenUrl": token_uri}
        on_vertex = Provider("vertex", self.api.port, format="gemini", models={"*": MODEL}, cooldowns=cooldowns or {},
                             extra={"vertex": {"project": PROJECT, "location": LOCATION}, "auth": auth})
        other = Provider("other", self.other.port, key_env="OTHER_KEY", key=OTHER_KEY)
        self.envoy = start_gateway(
            tmp_path, [on_vertex, other] if vertex_first else [other, on_vertex],
            extra_env={"LLM_ADMIN_SECRET": ADMIN_SECRET, KEY_ENV: json.dumps(self.key_file)},
            router_extra={"admin": {"path": HEALTH, "secretEnv": "LLM_ADMIN_SECRET"}})
        self.client = openai.OpenAI(api_key="sk-client-own-key", max_retries=0, timeout=15,
                                    base_url=f"http://127.0.0.1:{self.envoy.listener_ports[0]}/v1")

    def ask(self, stream: bool) -> tuple[str, str]:
        """(the text, the provider that served it)."""
        messages = [{"role": "user", "content": "hello"}]
        if stream:
            raw = self.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, stream=True)
            text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
            return text, raw.headers.get("x-llm-provider")
        raw = self.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
        return raw.parse().choices[0].message.content, raw.headers.get("x-llm-provider")

    def report(self) -> dict:
        response = self.envoy.get(HEALTH, headers={"x-llm-failover-admin-secret": ADMIN_SECRET})
        assert response.status == 200, response.text()
        return {p["name"]: p for p in response.json()["providers"]}

    def wait_for_credential(self, state: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            credential = self.report()["vertex"].get("credential")
            if credential and credential["state"] == state:
                return credential
            assert time.monotonic() < deadline, f"credential of vertex: {credential}"
            time.sleep(0.2)

    def vertex_requests_were_clean(self) -> None:
        assert self.api.requests, "Vertex got no request"
        for request in self.api.requests:
            assert vertex.problems(request, self.tokens, PROJECT, LOCATION) == [], request.path
            headers = json.dumps(request.headers)
            assert OTHER_KEY not in headers and "sk-client-own-key" not in headers
            assert (request.header("authorization") or "").startswith("Bearer ya29.fake-")

    def assert_no_secret_in_log(self) -> None:
        log = self.envoy.log()
        pem_lines = [line for line in self.key_file["private_key"].splitlines() if "-----" not in line]
        for secret in [*pem_lines[1:4], OTHER_KEY, *self.tokens.issued()]:
            assert secret not in log, f"a secret reached the Envoy log: {secret[:6]}..."
        # An RS256 assertion starts with the base64url of `{"alg":"RS256"`.
        assert "eyJhbGciOiJSUzI1NiIs" not in log, "an assertion reached the Envoy log"


@pytest.mark.core
@pytest.mark.parametrize("place", ["primary", "fallback"])
def test_gemini_on_vertex_with_the_filter_s_own_google_token_plain_and_streamed(tmp_path, mock, place):
    g = Google(tmp_path, mock, lifetime_s=60, vertex_first=place == "primary", other_fails=place == "fallback")
    credential = g.wait_for_credential("fresh")
    assert credential["kind"] == KIND and credential["failures"] == 0
    for stream in (False, True):
        assert g.ask(stream) == ("hello from vertex", "vertex"), stream
    assert g.tokens.refused == [] and g.tokens.unauthorized == []
    plain, streamed = g.api.requests
    assert plain.path.endswith(":generateContent") and streamed.path.endswith(":streamGenerateContent")
    assert plain.header("authorization") == f"Bearer {g.tokens.issued()[0]}"
    g.vertex_requests_were_clean()
    # One worker signed and fetched; the other used its token.
    assert 1 <= len(g.token_server.requests) <= 2, len(g.token_server.requests)
    if place == "fallback":
        assert all(r.header("authorization") == f"Bearer {OTHER_KEY}" for r in g.other.requests)
        assert len(g.other.requests) >= 1     # then cooling down: the second request may skip it
    else:
        assert g.other.requests == []
    assert g.envoy.stats().get("wasmcustom.llm_failover.provider.vertex.credential.renewed", 0) >= 1
    g.assert_no_secret_in_log()


@pytest.mark.core
def test_a_google_token_that_expires_mid_run_is_renewed_with_no_failed_request(tmp_path, mock):
    # 10 s tokens, renewed half-way (about every 5 s) on a 1 s tick.
    g = Google(tmp_path, mock, lifetime_s=10)
    g.wait_for_credential("fresh")
    started = time.monotonic()
    served = 0
    for i in range(150):    # about 22 s: two token lifetimes and more
        if time.monotonic() - started > 22:
            break
        assert g.ask(stream=i % 2 == 1) == ("hello from vertex", "vertex"), i
        served += 1
        time.sleep(0.15)
    assert served >= 30
    assert g.tokens.unauthorized == [], "Vertex never saw an expired token"
    assert g.tokens.refused == [], g.tokens.refused
    assert len(g.tokens.issued()) >= 4, "renewed ahead of each expiry"
    assert len({r.header("authorization") for r in g.api.requests}) >= 4
    assert g.other.requests == []
    g.assert_no_secret_in_log()


@pytest.mark.core
def test_a_down_google_token_endpoint_fails_over_and_shows_in_health_metrics_and_log(tmp_path, mock):
    g = Google(tmp_path, mock, lifetime_s=60, token_endpoint_down=True)
    credential = g.wait_for_credential("failed")
    assert credential["failures"] >= 1 and credential["lastError"] and credential["expiresInS"] is None, credential
    for stream in (False, True):
        assert g.ask(stream) == ("hello from other", "other")
    assert g.api.requests == [], "no attempt without a token"
    assert g.envoy.wait_for_stat("wasmcustom.llm_failover.provider.vertex.credential.renewal_failed") >= 1
    g.envoy.wait_for_log(r"renewing the credential of `vertex` failed \(\d+ in a row\): .*next try in \d+s")
    g.assert_no_secret_in_log()


@pytest.mark.core
def test_a_401_from_vertex_renews_the_google_token_and_vertex_serves_again_without_an_operator(tmp_path, mock):
    g = Google(tmp_path, mock, lifetime_s=300, cooldowns={"authFailure": "1s"})
    g.wait_for_credential("fresh")
    assert g.ask(False)[1] == "vertex"
    fetched_before = len(g.token_server.requests)
    g.tokens.revoke_all()       # as when Google revokes the service account's tokens early
    assert g.ask(False) == ("hello from other", "other"), "the 401 fails over"
    assert g.tokens.unauthorized == ["expired"]
    g.envoy.wait_for_log(r"`vertex` refused its renewed token: renewing it now")
    assert g.report()["vertex"]["cooldownRemainingS"] != "until-reset"
    g.wait_for_credential("fresh")
    assert len(g.token_server.requests) > fetched_before
    deadline = time.monotonic() + 8
    while g.ask(True)[1] != "vertex":
        assert time.monotonic() < deadline, g.report()["vertex"]
        time.sleep(0.3)
    assert all(r.header("authorization") == f"Bearer {OTHER_KEY}" for r in g.other.requests), \
        "Vertex's token does not follow the request"
    g.assert_no_secret_in_log()


def test_a_deleted_key_fails_renewal_with_invalid_grant_and_the_provider_is_held_out(tmp_path, mock):
    """What Google answers once the key is deleted or disabled: 400 invalid_grant (the runbook)."""
    refused = {"status": 400, "body": {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}}
    g = Google(tmp_path, mock, lifetime_s=60, token_answer=refused)
    credential = g.wait_for_credential("failed")
    assert credential["lastError"] == "token endpoint answered 400 (invalid_grant)", credential
    assert g.ask(False) == ("hello from other", "other")
    assert g.api.requests == []
    g.envoy.wait_for_log(r"renewing the credential of `vertex` failed .*\(invalid_grant\)")
    g.assert_no_secret_in_log()
