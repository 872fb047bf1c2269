"""OpenAI Responses API clients (the Agents SDK, Codex-style tools: `POST /v1/responses`) get
failover too, end to end: the official OpenAI Python SDK is the client, a real Envoy runs the
filter, the primary is an OpenAI provider that serves Responses natively (`responses: true`) and
answers 429 or 503, and the fallback is another native one, an OpenAI-compatible one with chat
completions only, Anthropic, Gemini or Ollama (all translated through chat completions). The
fakes check every request the way the real APIs do."""

from __future__ import annotations

import json

import openai
import pytest

from envoy_config import Provider, start_gateway
from fake_api import anthropic as fake_anthropic
from fake_api import gemini as fake_gemini
from fake_api import ollama as fake_ollama
from fake_api import openai as fake_openai

PRIMARY_KEY = "sk-openai-primary"
CLIENT_KEY = "sk-client-own"
FALLBACKS = {
    # name: (fake API, provider format, model the fallback is asked for, its key, serves Responses)
    "openai-responses": (fake_openai, "openai", "gpt-4.1-fallback", "sk-openai-fallback", True),
    "openai-chat": (fake_openai, "openai", "qwen-chat-only", "sk-compat-fallback", False),
    "anthropic": (fake_anthropic, "anthropic", "claude-fallback-model", "sk-ant-fallback", False),
    "gemini": (fake_gemini, "gemini", "gemini-2.5-flash", "gm-fallback-key", False),
    "ollama": (fake_ollama, "ollama", "qwen2.5-coder:32b", None, False),
}
# The usage each fake reports: (input, output) tokens.
USAGE = {"openai-responses": (13, 5), "openai-chat": (13, 5), "anthropic": (11, 7), "gemini": (11, 7), "ollama": (11, 7)}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def openai_error(status: int, kind: str, code: str | None, retry_after: int | None = None) -> dict:
    spec = fake_openai.error_spec(status, kind, f"primary says {kind}", code)
    if retry_after is not None:
        spec["headers"] = {"retry-after": str(retry_after)}
    return spec


RATE_LIMITED = openai_error(429, "requests", "rate_limit_exceeded", retry_after=30)
UNAVAILABLE = openai_error(503, "server_error", None)


class Setup:
    def __init__(self, tmp_path, mock, fallback: str, primary_fails_with: dict | None, **gateway):
        self.fake, fallback_format, self.model, self.key, native = FALLBACKS[fallback]
        self.kind = fallback
        self.name = f"{fallback}-fallback"
        self.primary = mock("gpt-primary")
        self.fallback = mock(self.name)
        self.primary.set_default(primary_fails_with or fake_openai.responder("gpt-primary", PRIMARY_KEY, responses=True))
        if self.fake is fake_openai:
            self.fallback.set_default(fake_openai.responder(self.name, self.key, responses=native))
        else:
            self.fallback.set_default(self.fake.responder(self.name, self.key))
        provider = Provider(self.name, self.fallback.port, format=fallback_format, models={"*": self.model},
                            extra={"responses": True} if native else {})
        if self.key:
            provider.key_env, provider.key = "FALLBACK_KEY", self.key
        self.envoy = start_gateway(tmp_path, [
            Provider("gpt-primary", self.primary.port, key_env="PRIMARY_KEY", key=PRIMARY_KEY,
                     models={"*": "gpt-4.1-primary"}, extra={"responses": True}),
            provider,
        ], **gateway)
        self.base_url = f"http://127.0.0.1:{self.envoy.listener_ports[0]}"
        self.client = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{self.base_url}/v1", max_retries=0, timeout=15)

    def received_without_problems(self) -> list:
        received = self.fallback.requests
        assert received, "the fallback got no request"
        for request in received:
            assert self.fake.problems(request, self.key) == [], (request.path, request.json)
            assert CLIENT_KEY not in json.dumps(request.headers) and PRIMARY_KEY not in json.dumps(request.headers)
            if self.kind == "openai-responses":
                assert request.path == fake_openai.RESPONSES_PATH
            elif self.kind == "openai-chat":
                assert request.path == fake_openai.PATH, "a chat-only provider is never sent /v1/responses"
        for request in self.primary.requests:
            assert fake_openai.problems(request, PRIMARY_KEY) == [], request.json
            assert request.path == fake_openai.RESPONSES_PATH
        return received

    def counter(self, name: str) -> int:
        return self.envoy.stats().get(f"wasmcustom.llm_failover.{name}", 0)


@pytest.fixture(params=sorted(FALLBACKS))
def fallback(request) -> str:
    return request.param


@pytest.mark.core
def test_responses_create_after_a_rate_limited_primary(tmp_path, mock, fallback):
    s = Setup(tmp_path, mock, fallback, RATE_LIMITED)
    raw = s.client.responses.with_raw_response.create(
        model="gpt-4.1", input="hello", instructions="Be brief.", max_output_tokens=50, temperature=0.3)
    response = raw.parse()
    assert raw.headers["x-llm-provider"] == s.name
    assert raw.headers["x-llm-model"] == s.model
    assert raw.headers["x-llm-attempts"] == "2"
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.output_text == f"hello from {s.name}"
    assert [item.type for item in response.output] == ["message"]
    assert (response.usage.input_tokens, response.usage.output_tokens) == USAGE[fallback]
    (request,) = s.received_without_problems()
    (primary_request,) = s.primary.requests
    if fallback == "openai-responses":
        # Natively served: only the model name differs from what the primary got.
        assert request.body.replace(s.model.encode(), b"gpt-4.1-primary") == primary_request.body
    elif fallback == "openai-chat":
        body = request.json
        assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
        assert (body["model"], body["max_tokens"], body["temperature"]) == (s.model, 50, 0.3)
    assert s.counter("provider.gpt-primary.failover.rate_limited") == 1
    assert s.counter(f"provider.{s.name}.served") == 1
    assert s.counter("api.responses.requests") == 1
    # The primary cools down (Retry-After: 30): the next request skips it.
    again = s.client.responses.with_raw_response.create(model="gpt-4.1", input="again")
    assert again.parse().output_text == f"hello from {s.name}"
    assert (again.headers["x-llm-attempts"], again.headers["x-llm-skipped"]) == ("1", "gpt-primary")
    assert len(s.primary.requests) == 1


@pytest.mark.core
def test_responses_streamed_after_an_unavailable_primary(tmp_path, mock, fallback):
    s = Setup(tmp_path, mock, fallback, UNAVAILABLE)
    with s.client.responses.stream(model="gpt-4.1", input="hello", max_output_tokens=64) as stream:
        names = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == f"hello from {s.name}"
    assert final.status == "completed"
    assert final.usage.output_tokens == USAGE[fallback][1]
    assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.completed"
    for name in ("response.output_item.added", "response.content_part.added", "response.output_text.delta",
                 "response.output_text.done", "response.content_part.done", "response.output_item.done"):
        assert name in names, names
    # `stream=True`: the raw events, numbered in order.
    events = list(s.client.responses.create(model="gpt-4.1", input="hello again", stream=True))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == f"hello from {s.name}"
    received = s.received_without_problems()
    assert len(received) == 2
    if fallback == "gemini":
        assert "streamGenerateContent" in received[0].path
    else:
        assert received[0].json["stream"] is True
    assert s.counter("provider.gpt-primary.failover.server_error") == 1


@pytest.mark.core
@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_a_function_tool_and_its_second_turn(tmp_path, mock, fallback, streamed):
    s = Setup(tmp_path, mock, fallback, RATE_LIMITED)
    question = {"role": "user", "content": "What is the weather in Paris? Please use the tool."}
    if streamed:
        with s.client.responses.stream(model="gpt-4.1", input=[question], tools=[WEATHER_TOOL]) as stream:
            names = [event.type for event in stream]
            first = stream.get_final_response()
        assert "response.function_call_arguments.delta" in names and "response.function_call_arguments.done" in names
    else:
        first = s.client.responses.create(model="gpt-4.1", input=[question], tools=[WEATHER_TOOL], tool_choice="auto")
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id
    second = s.client.responses.create(
        model="gpt-4.1", tools=[WEATHER_TOOL],
        input=[question, *[item.model_dump(exclude_none=True) for item in first.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "18C, sunny"}])
    assert second.output_text == f"hello from {s.name}"
    received = s.received_without_problems()
    assert len(received) == 2
    if fallback == "openai-chat":
        turn = received[1].json["messages"]
        assert turn[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert turn[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "18C, sunny"}
        assert received[1].json["tools"][0] == {"type": "function", "function": {k: v for k, v in WEATHER_TOOL.items() if k != "type"}}


@pytest.mark.core
@pytest.mark.parametrize("field,value", [
    ("previous_response_id", "resp_abc"), ("store", True), ("tools", [{"type": "web_search"}]),
    ("background", True), ("conversation", "conv_abc"),
])
def test_a_stateful_field_is_a_400_naming_it_when_the_chain_may_fail_over_to_chat(tmp_path, mock, field, value):
    s = Setup(tmp_path, mock, "anthropic", None)
    with pytest.raises(openai.BadRequestError) as raised:
        s.client.responses.create(model="gpt-4.1", input="hello", **{field: value})
    error = raised.value.body
    assert error["code"] == "unsupported_parameter" and error["param"] == field
    assert f"`{field}" in error["message"] and "anthropic-fallback" in error["message"]
    assert s.primary.requests == [] and s.fallback.requests == []
    # Left out (the SDK's default) or false, `store` is no state to keep: served.
    assert s.client.responses.create(model="gpt-4.1", input="hello", store=False).output_text == "hello from gpt-primary"


@pytest.mark.core
def test_a_chain_of_native_providers_carries_stateful_fields(tmp_path, mock):
    s = Setup(tmp_path, mock, "openai-responses", RATE_LIMITED)
    response = s.client.responses.create(model="gpt-4.1", input="hello", store=True, previous_response_id="resp_earlier")
    assert response.output_text == f"hello from {s.name}"
    (request,) = s.received_without_problems()
    assert (request.json["store"], request.json["previous_response_id"]) == (True, "resp_earlier")


@pytest.mark.core
def test_every_provider_down_is_a_503_in_openais_shape(tmp_path, mock):
    s = Setup(tmp_path, mock, "openai-chat", RATE_LIMITED)
    s.fallback.set_default(fake_openai.error_spec(503, "server_error", "down", None))
    with pytest.raises(openai.APIStatusError) as raised:
        s.client.responses.create(model="gpt-4.1", input="hi")
    assert raised.value.status_code == 503
    assert raised.value.body["code"] == "all_providers_unavailable"
    assert "No provider could serve model `gpt-4.1`" in raised.value.body["message"]
    assert raised.value.response.headers.get("retry-after")


@pytest.mark.core
def test_a_request_the_gateway_refuses_reaches_no_provider(tmp_path, mock):
    s = Setup(tmp_path, mock, "openai-chat", RATE_LIMITED)
    with pytest.raises(openai.BadRequestError) as raised:
        s.client.responses.create(model="gpt-4.1", input=None)
    assert raised.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as raised:
        # Not stateful, but no chat provider can take it: refused by the attempt, not failed over.
        s.client.responses.create(model="gpt-4.1", input=[{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}])
    assert raised.value.body["code"] == "unsupported_by_provider", raised.value.body
    assert "openai-chat-fallback" in raised.value.body["message"] and "file_id" in raised.value.body["message"]
    assert len(s.primary.requests) == 1, "the refused input reached only the native primary, which understood it"
    assert s.fallback.requests == []
