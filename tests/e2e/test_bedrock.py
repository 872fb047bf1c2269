"""AWS Bedrock (Converse) end to end: the official OpenAI SDK is the client, a real Envoy signs
each Bedrock attempt with its own SigV4 signer (credentials from its environment) after the
attempt role translated it, and the fake Bedrock recomputes that signature with botocore's
signer. Covers Bedrock as primary and as fallback, plain and streamed, tool calls, and that no
signature, AWS token or client AWS header reaches another provider."""

from __future__ import annotations

import base64
import json

import anthropic
import openai
import pytest

from envoy_config import Provider, envoy_version, reads_error_answers, start_gateway
from fake_api import bedrock
from mock_provider import openai_error

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather in a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}
# What a client might send to smuggle (or leak) AWS credentials.
CLIENT_AWS_HEADERS = {"x-amz-security-token": "client-session-token", "x-amz-date": "20200101T000000Z",
                      "x-amz-content-sha256": "client-hash"}


def bedrock_provider(name: str, port: int) -> Provider:
    return Provider(name, port, format="bedrock", host=bedrock.HOST, models={"*": bedrock.MODEL},
                    extra={"auth": {"style": "aws-sigv4", "region": bedrock.REGION, "service": "bedrock"}})


class Setup:
    def __init__(self, tmp_path, mock, monkeypatch, bedrock_first: bool, **gateway):
        for name, value in bedrock.CREDENTIALS.environment().items():
            monkeypatch.setenv(name, value)
        self.bedrock = mock("bedrock")
        self.bedrock.set_default(bedrock.responder("bedrock"))
        self.openai = mock("openai")
        self.openai.set_default({"echo": True})
        providers = [Provider("openai", self.openai.port, key_env="OPENAI_KEY", key="sk-openai"),
                     bedrock_provider("bedrock", self.bedrock.port)]
        if bedrock_first:
            providers.reverse()
        self.envoy = start_gateway(tmp_path, providers, **gateway)
        self.base = f"http://127.0.0.1:{self.envoy.listener_ports[0]}"
        self.client = openai.OpenAI(api_key="sk-client", base_url=f"{self.base}/v1", max_retries=0, timeout=15,
                                    default_headers=CLIENT_AWS_HEADERS)

    def bedrock_requests(self) -> list:
        received = self.bedrock.requests
        assert received, "Bedrock got no request"
        for request in received:
            assert bedrock.problems(request) == [], (request.path, request.headers, request.json)
            assert request.header("x-amz-security-token") == bedrock.CREDENTIALS.session_token
            assert "sk-client" not in json.dumps(request.headers) and "sk-openai" not in json.dumps(request.headers)
        return received

    def openai_requests_carry_no_aws_credential(self) -> list:
        received = self.openai.requests
        for request in received:
            leaked = {k: v for k, v in request.headers.items() if k.startswith("x-amz-")}
            assert leaked == {}, leaked
            assert request.header("authorization") == "Bearer sk-openai", request.headers
        return received

    def counter(self, name: str) -> int:
        return self.envoy.stats().get(f"wasmcustom.llm_failover.{name}", 0)


@pytest.mark.core
def test_chat_through_bedrock_after_a_rate_limited_primary(tmp_path, mock, monkeypatch):
    s = Setup(tmp_path, mock, monkeypatch, bedrock_first=False)
    s.openai.set_default(openai_error(429, retry_after=30))
    raw = s.client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
        max_tokens=50, temperature=0.3)
    answer = raw.parse()
    assert raw.headers["x-llm-provider"] == "bedrock"
    assert raw.headers["x-llm-attempts"] == "2"
    assert answer.choices[0].message.content == "hello from bedrock"
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (bedrock.PROMPT_TOKENS, bedrock.COMPLETION_TOKENS)
    (request,) = s.bedrock_requests()
    assert request.path == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert request.json["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.3}
    assert request.json["system"] == [{"text": "Be brief."}]
    # Signed and sent with the translation's exact length, not chunked.
    assert request.header("transfer-encoding") is None
    assert request.header("content-length") == str(len(request.body))
    # The signer skipped the OpenAI attempt: it went first, and carries nothing of AWS.
    assert len(s.openai_requests_carry_no_aws_credential()) == 1
    assert s.counter("provider.openai.failover.rate_limited") == 1
    assert s.counter("provider.bedrock.served") == 1


@pytest.mark.core
def test_streamed_tool_call_from_bedrock_as_primary(tmp_path, mock, monkeypatch):
    s = Setup(tmp_path, mock, monkeypatch, bedrock_first=True)
    stream = s.client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Weather in Paris? Please use the tool."}],
        tools=[WEATHER_TOOL], stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0].id.startswith("tooluse_") and calls[0].function.name == "get_weather"
    assert json.loads("".join(c.function.arguments or "" for c in calls)) == bedrock.TOOL_ARGS
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage.prompt_tokens == bedrock.PROMPT_TOKENS
    (request,) = s.bedrock_requests()
    assert request.path.endswith("/converse-stream")
    assert request.json["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"
    assert s.openai.requests == []


@pytest.mark.core
def test_plain_text_stream_and_a_tool_round_trip_through_bedrock(tmp_path, mock, monkeypatch):
    s = Setup(tmp_path, mock, monkeypatch, bedrock_first=True)
    chunks = list(s.client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello from bedrock"
    question = {"role": "user", "content": "What is the weather in Paris? Please use the tool."}
    first = s.client.chat.completions.create(model="gpt-4o", messages=[question], tools=[WEATHER_TOOL])
    (call,) = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == bedrock.TOOL_ARGS
    second = s.client.chat.completions.create(model="gpt-4o", tools=[WEATHER_TOOL], messages=[
        question, first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}])
    assert second.choices[0].message.content == "hello from bedrock"
    last = s.bedrock_requests()[-1].json
    assert last["messages"][-1]["content"][0]["toolResult"]["toolUseId"] == call.id


@pytest.mark.core
def test_bedrock_throttled_then_openai_gets_no_signature_and_no_aws_token(tmp_path, mock, monkeypatch):
    """The measured leak: after a signed attempt failed, the next provider got its
    x-amz-security-token, x-amz-date, x-amz-content-sha256 and authorization."""
    s = Setup(tmp_path, mock, monkeypatch, bedrock_first=True)
    s.bedrock.script(bedrock.error_spec("ThrottlingException"), bedrock.error_spec("ServiceUnavailableException"))
    for _ in range(2):
        raw = s.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-llm-provider"] == "openai"
        if raw.headers["x-llm-attempts"] == "1":
            break  # the throttled Bedrock is cooling down: left out of the order
    received = s.openai_requests_carry_no_aws_credential()
    assert received
    # Bedrock's attempt was signed by Envoy, never with the client's AWS headers.
    (signed,) = s.bedrock.requests
    assert bedrock.signature_problems(signed, bedrock.CREDENTIALS) == []
    assert signed.header("x-amz-date") != CLIENT_AWS_HEADERS["x-amz-date"]
    assert s.counter("provider.bedrock.failover.rate_limited") == 1


def test_bedrock_errors_reach_the_client_in_openai_shape(tmp_path, mock, monkeypatch):
    s = Setup(tmp_path, mock, monkeypatch, bedrock_first=True)
    s.openai.set_default(openai_error(503))
    s.bedrock.set_default(bedrock.error_spec("ValidationException", "messages: too long for this model"))
    with pytest.raises(openai.BadRequestError) as refused:
        s.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 400
    # With `errorAnswers: pass` (1.36) the router role translates it, after Envoy's router.
    assert refused.value.body["message"] == "messages: too long for this model"
    assert refused.value.body["code"] == "ValidationException", "named after x-amzn-ErrorType"
    assert s.openai.requests == [], "a bad request is not failed over"


def test_a_bedrock_exception_mid_stream_is_an_error_the_client_sees(tmp_path, mock, monkeypatch):
    s = Setup(tmp_path, mock, monkeypatch, bedrock_first=True)
    frames = [bedrock.event("messageStart", {"role": "assistant"}),
              bedrock.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
              bedrock.exception("modelStreamErrorException", "The model stopped.")]
    s.bedrock.set_default({"status": 200, "headers": {"content-type": "application/vnd.amazon.eventstream"},
                           "sse_raw": [{"bytes": c} for c in bedrock.split_oddly(frames)]})
    stream = s.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.APIError) as failed:
        for _ in stream:
            pass
    assert "The model stopped." in str(failed.value)


@pytest.mark.core
@pytest.mark.reads_error_answers
def test_a_bedrock_exception_before_any_content_fails_over(tmp_path, mock, monkeypatch):
    """A 200 converse-stream whose first frames are `messageStart` and an exception has sent the
    client nothing yet: it fails over as the exception's status would. (With `errorAnswers:
    pass`, Envoy 1.36, the stream start is not held and the client sees the error instead.)"""
    s = Setup(tmp_path, mock, monkeypatch, bedrock_first=True)
    frames = [bedrock.event("messageStart", {"role": "assistant"}),
              bedrock.exception("throttlingException", "Too many tokens, please wait before trying again.")]
    s.bedrock.script({"status": 200, "headers": {"content-type": "application/vnd.amazon.eventstream"},
                      "sse_raw": [{"bytes": c} for c in bedrock.split_oddly(frames)]})
    status, headers, chunks = s.envoy.stream("/v1/chat/completions", {
        "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert status == 200
    assert (headers["x-llm-provider"], headers["x-llm-attempts"]) == ("openai", "2")
    streamed = b"".join(data for _, data in chunks)
    assert b"[DONE]" in streamed and b"Too many tokens" not in streamed
    assert len(s.bedrock_requests()) == 1
    assert len(s.openai_requests_carry_no_aws_credential()) == 1
    assert s.counter("provider.bedrock.failover.rate_limited") == 1


def test_a_messages_client_through_bedrock(tmp_path, mock, monkeypatch):
    s = Setup(tmp_path, mock, monkeypatch, bedrock_first=True)
    client = anthropic.Anthropic(api_key="sk-ant-client", base_url=s.base, max_retries=0, timeout=15)
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                                     messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].text == "hello from bedrock"
    assert message.stop_reason == "end_turn"
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                messages=[{"role": "user", "content": "hello"}]) as stream:
        assert "".join(stream.text_stream) == "hello from bedrock"
    for request in s.bedrock_requests():
        assert request.header("x-api-key") is None


def test_a_body_over_a_mebibyte_is_buffered_and_signed_whole(tmp_path, mock, monkeypatch):
    if envoy_version() < (1, 38):
        pytest.skip("Envoy 1.36 and 1.37 do not retry bodies over 1 MiB: maxRequestBytes is capped there")
    s = Setup(tmp_path, mock, monkeypatch, bedrock_first=True, router_extra={"maxRequestBytes": 4 * 1024 * 1024})
    png = base64.b64encode(b"\x89PNG" + b"x" * 1_400_000).decode()
    answer = s.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]}])
    assert answer.choices[0].message.content == "hello from bedrock"
    (request,) = s.bedrock_requests()
    assert len(request.body) > 1024 * 1024
    assert request.json["messages"][0]["content"][1]["image"]["source"]["bytes"] == png
