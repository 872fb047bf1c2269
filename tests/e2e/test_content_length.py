"""Every attempt sends its body with an exact `content-length` and no chunked framing, whatever
the client sent and whatever an earlier attempt of the same request set in the request headers
Envoy shares between attempts: a translated body, then the client's own, then a translation
again; hedges too. Some providers refuse chunked bodies (Claude on Vertex AI answers 400)."""

from __future__ import annotations

import http.client
import json

import pytest

from envoy_config import Provider, start_gateway
from fake_api import anthropic
from mock_provider import openai_error
from test_routing import chat, hedged_gateway

CLAUDE = "claude-sonnet-4-5"
BODY = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "hello ünïcode"}], "max_tokens": 40}


def framed_exactly(request) -> None:
    assert request.header("transfer-encoding") is None, f"{request.path}: sent chunked"
    assert request.header("content-length") == str(len(request.body)), (
        f"{request.path}: content-length {request.header('content-length')} for {len(request.body)} bytes")


def gateway(tmp_path, mock, order: list[str], fail_first: bool = True):
    """`order` of "native" (OpenAI) and "claude" (Anthropic, translated) providers; the first fails."""
    mocks, providers = {}, []
    for name in order:
        mocks[name] = mock(name)
        if name == "claude":
            mocks[name].set_default(anthropic.responder(name, "sk-ant"))
            providers.append(Provider(name, mocks[name].port, format="anthropic", key_env="ANT_KEY", key="sk-ant",
                                      models={"*": CLAUDE}))
        else:
            providers.append(Provider(name, mocks[name].port, key_env=f"{name.upper()}_KEY", key=f"sk-{name}"))
    if fail_first:
        first = order[0]
        mocks[first].script({"status": 503, "body": {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}}
                            if first == "claude" else openai_error(503))
    return start_gateway(tmp_path, providers), mocks


def post_chunked(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    """As an HTTP/1.1 client that streams its upload: no content-length, chunked."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, body=iter([body[:17], body[17:]]), encode_chunked=True,
                           headers={"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.core
def test_a_translated_attempt_sends_its_exact_length(tmp_path, mock):
    envoy, mocks = gateway(tmp_path, mock, ["claude"], fail_first=False)
    response = envoy.post_json("/v1/chat/completions", BODY)
    assert response.status == 200, response.text()
    (sent,) = mocks["claude"].requests
    assert sent.path == "/v1/messages" and sent.json["model"] == CLAUDE
    framed_exactly(sent)
    assert anthropic.problems(sent, "sk-ant") == []


@pytest.mark.core
@pytest.mark.parametrize("order", [["claude", "native"], ["native", "claude"]], ids=["translated-then-native", "native-then-translated"])
@pytest.mark.parametrize("client", ["content-length", "chunked"])
def test_each_attempt_of_a_failover_sends_its_own_length(tmp_path, mock, order, client):
    envoy, mocks = gateway(tmp_path, mock, order)
    raw = json.dumps(BODY).encode()
    if client == "chunked":
        status, answer = post_chunked(envoy.listener_ports[0], "/v1/chat/completions", raw)
    else:
        response = envoy.post_raw("/v1/chat/completions", raw, {"content-type": "application/json"})
        status, answer = response.status, response.body
    assert status == 200, answer
    for name in order:
        (sent,) = mocks[name].requests
        framed_exactly(sent)
    assert mocks["native"].requests[0].body == raw, "the native provider gets the client's bytes"
    assert mocks["claude"].requests[0].json["model"] == CLAUDE


@pytest.mark.core
def test_a_streamed_request_after_a_translated_attempt(tmp_path, mock):
    envoy, mocks = gateway(tmp_path, mock, ["native", "claude", "backup"])
    mocks["claude"].script({"status": 429, "body": {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}})
    status, headers, chunks = envoy.stream("/v1/chat/completions", {**BODY, "stream": True})
    assert status == 200
    assert headers["x-llm-provider"] == "backup"
    assert b"[DONE]" in b"".join(data for _, data in chunks)
    for name in ("native", "claude", "backup"):
        (sent,) = mocks[name].requests
        framed_exactly(sent)
    assert mocks["claude"].requests[0].json["stream"] is True
    assert mocks["backup"].requests[0].json == {**BODY, "stream": True}


def test_a_hedge_to_a_native_provider_after_a_translated_attempt(tmp_path, mock):
    """The slow first attempt is translated: the hedge, sent while it waits, gets the client's
    length, not the translation's."""
    envoy, mocks = hedged_gateway(tmp_path, mock, llama={"format": "anthropic", "models": {"*": CLAUDE}})
    claude = anthropic.responder("llama", "sk-llama")
    mocks["llama"].set_default(lambda request: {**claude(request), "delay": 2.0})
    response = chat(envoy, "hello")
    assert response.status == 200, response.text()
    assert response.headers["x-llm-provider"] == "qwen"
    mocks["llama"].wait_for_requests(1)
    for name in ("llama", "qwen"):
        (sent,) = mocks[name].requests
        framed_exactly(sent)
