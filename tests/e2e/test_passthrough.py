"""An API the gateway does not understand (audio, files, batches) reaches one provider the
operator named (`passthrough`), as the client sent it but for the key and host: nothing is
read, translated or failed over. Any other unknown path still reaches no provider."""

from __future__ import annotations

import pytest

from envoy_config import Provider, start_gateway

CLIENT_KEY = "sk-client-own"
AUDIO = bytes(range(256)) * 64  # 16 KiB that is not JSON, nor UTF-8
MULTIPART = "multipart/form-data; boundary=llmf"


class Setup:
    def __init__(self, tmp_path, mock):
        self.openai, self.other = mock("openai-main"), mock("other")
        self.envoy = start_gateway(tmp_path, [
            Provider("openai-main", self.openai.port, key_env="MAIN_KEY", key="sk-main"),
            Provider("other", self.other.port, key_env="OTHER_KEY", key="sk-other"),
        ], router_extra={"passthrough": [
            {"prefix": "/v1/audio/", "provider": "openai-main"},
            {"prefix": "/files/", "provider": "other", "rewritePrefix": "/v1/files/"},
        ]})

    def counter(self, name: str) -> int:
        return self.envoy.stats().get(f"wasmcustom.llm_failover.{name}", 0)


@pytest.mark.core
def test_a_passthrough_request_reaches_its_provider_as_sent_with_the_providers_key(tmp_path, mock):
    s = Setup(tmp_path, mock)
    s.openai.script({"status": 200, "body": AUDIO[::-1], "headers": {"content-type": "audio/mpeg"}})
    answer = s.envoy.post_raw("/v1/audio/transcriptions?x=1", AUDIO,
                              {"content-type": MULTIPART, "authorization": f"Bearer {CLIENT_KEY}"})
    assert answer.status == 200
    assert answer.body == AUDIO[::-1], "the answer is not read or changed"
    assert answer.headers["content-type"] == "audio/mpeg"
    assert answer.headers["x-llm-provider"] == "openai-main"
    (sent,) = s.openai.requests
    assert (sent.method, sent.path, sent.query) == ("POST", "/v1/audio/transcriptions", "x=1")
    assert sent.body == AUDIO and sent.header("content-type") == MULTIPART
    assert sent.header("authorization") == "Bearer sk-main"
    assert CLIENT_KEY not in str(sent.headers)
    assert "x-llm-failover-order" not in sent.headers
    assert s.other.requests == []
    assert s.counter("api.passthrough.requests") == 1


@pytest.mark.core
def test_a_passthrough_prefix_can_be_rewritten_and_takes_any_method(tmp_path, mock):
    s = Setup(tmp_path, mock)
    s.other.script({"status": 200, "body": {"id": "file-abc", "object": "file"}})
    answer = s.envoy.get("/files/file-abc", {"x-api-key": CLIENT_KEY})
    assert answer.status == 200, answer.text()
    assert answer.json()["id"] == "file-abc", answer.text()
    (sent,) = s.other.requests
    assert (sent.method, sent.path) == ("GET", "/v1/files/file-abc")
    assert sent.header("authorization") == "Bearer sk-other" and sent.header("x-api-key") is None
    assert s.openai.requests == []


@pytest.mark.core
def test_a_passthrough_provider_failing_is_not_failed_over_and_still_counted(tmp_path, mock):
    """One provider, no other to try: its 503 goes back as it is, and its health records it."""
    s = Setup(tmp_path, mock)
    s.openai.script({"status": 503, "body": {"error": {"message": "overloaded", "type": "server_error"}}})
    answer = s.envoy.post_raw("/v1/audio/speech", b'{"input":"hi"}', {"content-type": "application/json"})
    assert answer.status == 503
    assert answer.json()["error"]["message"] == "overloaded"
    assert len(s.openai.requests) == 1 and s.other.requests == []
    assert s.counter("provider.openai-main.failover.server_error") == 1


@pytest.mark.core
def test_a_path_under_no_prefix_still_reaches_no_provider(tmp_path, mock):
    s = Setup(tmp_path, mock)
    answer = s.envoy.post_raw("/v1/batches", b"{}", {"content-type": "application/json"})
    assert answer.status == 404
    assert answer.json()["error"]["code"] == "unsupported_path"
    assert s.openai.requests == [] and s.other.requests == []
