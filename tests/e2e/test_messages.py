"""Anthropic Messages clients (Claude Code, the Anthropic SDKs) get failover too, end to end: the
official Anthropic Python SDK is the client, a real Envoy runs the filter, the primary is an
Anthropic-format provider that answers 429 or 503, and the fallback is another Anthropic-format
provider (served natively) or an OpenAI-compatible one (translated). The fakes check every
request the way the real APIs do; the model list is answered by the gateway itself."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import anthropic
import openai
import pytest

from envoy_config import Provider, reads_error_answers, start_gateway
from fake_api import anthropic as fake_anthropic
from fake_api import gemini as fake_gemini
from fake_api import ollama as fake_ollama
from fake_api import openai as fake_openai

PRIMARY_KEY = "sk-ant-primary"
CLIENT_KEY = "sk-ant-client"
FALLBACKS = {
    # format: (fake API, model the fallback is asked for, its key)
    "anthropic": (fake_anthropic, "claude-fallback-model", "sk-ant-fallback"),
    "openai": (fake_openai, "gpt-4o-fallback", "sk-openai-fallback"),
    # Through chat completions, then the provider's own translation.
    "gemini": (fake_gemini, "gemini-2.5-flash", "gm-fallback-key"),
    "ollama": (fake_ollama, "qwen2.5-coder:32b", None),
}
# The usage each fake reports: (input, output) tokens.
USAGE = {"anthropic": (11, 7), "openai": (13, 5), "gemini": (11, 7), "ollama": (11, 7)}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# A 1x1 PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def anthropic_error(status: int, kind: str, retry_after: int | None = None) -> dict:
    spec = fake_anthropic.error_spec(status, kind, f"primary says {kind}", 1)
    if retry_after is not None:
        spec["headers"] = {"retry-after": str(retry_after)}
    return spec


class Setup:
    def __init__(self, tmp_path, mock, fallback_format: str, primary_fails_with: dict | None, **gateway):
        self.fake, self.model, self.key = FALLBACKS[fallback_format]
        self.format = fallback_format
        self.name = f"{fallback_format}-fallback"
        self.primary = mock("claude-primary")
        self.fallback = mock(self.name)
        self.primary.set_default(primary_fails_with or fake_anthropic.responder("claude-primary", PRIMARY_KEY))
        self.fallback.set_default(self.fake.responder(self.name, self.key))
        fallback = Provider(self.name, self.fallback.port, format=fallback_format,
                            models={"*": self.model, "claude-alias": self.model})
        if self.key:
            fallback.key_env, fallback.key = "FALLBACK_KEY", self.key
        self.envoy = start_gateway(tmp_path, [
            Provider("claude-primary", self.primary.port, format="anthropic", key_env="PRIMARY_KEY", key=PRIMARY_KEY,
                     models={"*": "claude-primary-model"}),
            fallback,
        ], **gateway)
        self.base_url = f"http://127.0.0.1:{self.envoy.listener_ports[0]}"
        self.client = anthropic.Anthropic(api_key=CLIENT_KEY, base_url=self.base_url, max_retries=0, timeout=15)

    def received_without_problems(self) -> list:
        received = self.fallback.requests
        assert received, "the fallback got no request"
        for request in received:
            assert self.fake.problems(request, self.key) == [], (request.path, request.json)
            assert CLIENT_KEY not in json.dumps(request.headers) and PRIMARY_KEY not in json.dumps(request.headers)
        return received

    def counter(self, name: str) -> int:
        return self.envoy.stats().get(f"wasmcustom.llm_failover.{name}", 0)


@pytest.fixture(params=sorted(FALLBACKS))
def fallback_format(request) -> str:
    return request.param


@pytest.mark.core
def test_messages_create_after_a_rate_limited_primary(tmp_path, mock, fallback_format):
    s = Setup(tmp_path, mock, fallback_format, anthropic_error(429, "rate_limit_error", retry_after=30))
    raw = s.client.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=50, temperature=0.3, stop_sequences=["\n\nHuman:"],
        system="Be brief.", messages=[{"role": "user", "content": "hello"}],
        extra_headers={"anthropic-version": "2024-10-22", "anthropic-beta": "fine-grained-tool-streaming-2025-05-14"})
    message = raw.parse()
    assert raw.headers["x-llm-provider"] == s.name
    assert raw.headers["x-llm-model"] == s.model
    assert raw.headers["x-llm-attempts"] == "2"
    assert message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == f"hello from {s.name}"
    assert message.stop_reason == "end_turn"
    assert message.id.startswith("msg_")
    assert (message.usage.input_tokens, message.usage.output_tokens) == USAGE[fallback_format]
    (request,) = s.received_without_problems()
    (primary_request,) = s.primary.requests
    assert fake_anthropic.credential_problems(primary_request, PRIMARY_KEY) == []
    if fallback_format == "anthropic":
        # Natively served: only the model name differs from what the primary got.
        assert request.body.replace(s.model.encode(), b"claude-primary-model") == primary_request.body
        assert request.header("anthropic-beta") == "fine-grained-tool-streaming-2025-05-14"
        # The provider's version (anthropicVersion), not the client's.
        assert request.header("anthropic-version") == "2023-06-01"
        assert request.json["system"] == "Be brief."
    elif fallback_format == "openai":
        body = request.json
        assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
        assert (body["max_tokens"], body["temperature"], body["stop"]) == (50, 0.3, ["\n\nHuman:"])
        assert body["model"] == s.model
    assert s.counter("provider.claude-primary.failover.rate_limited") == 1
    assert s.counter(f"provider.{s.name}.served") == 1
    assert s.counter("api.anthropic_messages.requests") == 1
    # The primary cools down (Retry-After: 30): the next Messages request skips it.
    again = s.client.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "again"}])
    assert again.parse().content[0].text == f"hello from {s.name}"
    assert (again.headers["x-llm-attempts"], again.headers["x-llm-skipped"]) == ("1", "claude-primary")
    assert len(s.primary.requests) == 1


@pytest.mark.core
def test_messages_stream_after_an_unavailable_primary(tmp_path, mock, fallback_format):
    s = Setup(tmp_path, mock, fallback_format, anthropic_error(503, "overloaded_error"))
    with s.client.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                  messages=[{"role": "user", "content": "hello"}]) as stream:
        events = [event.type for event in stream]
        message = stream.get_final_message()
    assert message.content[0].text == f"hello from {s.name}"
    assert message.stop_reason == "end_turn"
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_start" in events and "content_block_stop" in events and "message_delta" in events
    assert message.usage.output_tokens == USAGE[fallback_format][1]
    (request,) = s.received_without_problems()
    if fallback_format == "gemini":
        assert request.path.endswith(":streamGenerateContent?alt=sse") or "streamGenerateContent" in request.path
    else:
        assert request.json["stream"] is True
    assert s.counter("provider.claude-primary.failover.server_error") == 1


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_messages_tool_use_and_its_second_turn(tmp_path, mock, fallback_format, streamed):
    s = Setup(tmp_path, mock, fallback_format, anthropic_error(429, "rate_limit_error"))
    question = {"role": "user", "content": "What is the weather in Paris? Please use the tool."}
    if streamed:
        with s.client.messages.stream(model="claude-sonnet-4-5", max_tokens=200, messages=[question],
                                      tools=[WEATHER_TOOL]) as stream:
            first = stream.get_final_message()
    else:
        first = s.client.messages.create(model="claude-sonnet-4-5", max_tokens=200, messages=[question],
                                         tools=[WEATHER_TOOL], tool_choice={"type": "auto"})
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    second = s.client.messages.create(
        model="claude-sonnet-4-5", max_tokens=200, tools=[WEATHER_TOOL],
        messages=[question, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C, sunny"}]}])
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == f"hello from {s.name}"
    received = s.received_without_problems()
    assert len(received) == 2
    if fallback_format == "openai":
        turn = received[1].json["messages"]
        assert turn[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
        assert turn[2] == {"role": "tool", "tool_call_id": use.id, "content": "18C, sunny"}
        assert received[0].json["tool_choice" if not streamed else "tools"]


@pytest.mark.skipif(not reads_error_answers(), reason="errorAnswers: pass (Envoy 1.36) does not read error bodies")
def test_an_account_out_of_credit_fails_over(tmp_path, mock):
    """Error-aware failover reads a native Anthropic error as it does for chat: a billing error
    is the account's, not the request's, so the next provider is tried."""
    s = Setup(tmp_path, mock, "openai", fake_anthropic.error_spec(
        400, "billing_error", "Your credit balance is too low to access the Anthropic API.", 1))
    message = s.client.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == f"hello from {s.name}"
    assert s.counter("provider.claude-primary.failover.quota_exhausted") == 1


REFUSALS = {
    # A provider's own 400 for a request it will not take, in its own shape.
    "openai": fake_openai.error_spec(400, "invalid_request_error", "the tool schema is invalid", None),
    "gemini": fake_gemini.error_spec(400, "the tool schema is invalid"),
    "ollama": {"status": 400, "body": {"error": "the tool schema is invalid"}},
}


@pytest.mark.core
@pytest.mark.parametrize("fmt", sorted(REFUSALS))
def test_a_translated_providers_refusal_reaches_the_client_in_anthropics_shape(tmp_path, mock, fmt):
    """The fallback refuses the request (not its provider's fault: no failover after it); its
    error goes back as an Anthropic error. With `errorAnswers: pass` (Envoy 1.36) no attempt
    reads it, and the router role reshapes it once Envoy has decided not to retry."""
    s = Setup(tmp_path, mock, fmt, anthropic_error(503, "overloaded_error"))
    s.fallback.script(REFUSALS[fmt])
    with pytest.raises(anthropic.BadRequestError) as raised:
        s.client.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.body["type"] == "error", raised.value.body
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert "the tool schema is invalid" in raised.value.body["error"]["message"]
    assert raised.value.response.headers["x-llm-provider"] == s.name
    assert len(s.primary.requests) == 1 and len(s.fallback.requests) == 1


def test_a_request_anthropic_refuses_goes_back_as_it_is_and_is_not_failed_over(tmp_path, mock):
    error = fake_anthropic.error_spec(400, "invalid_request_error", "messages.0.content: bad block", 1)
    s = Setup(tmp_path, mock, "openai", error)
    with pytest.raises(anthropic.BadRequestError) as raised:
        s.client.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.body == error["body"]
    assert s.fallback.requests == []


def test_an_openai_primary_then_a_native_anthropic_fallback_gets_the_clients_beta_header(tmp_path, mock):
    """Envoy shares request headers between attempts: the OpenAI attempt removes the client's
    anthropic-beta, and the native Anthropic attempt after it puts it back."""
    primary, fallback = mock("gpt-primary"), mock("claude-fallback")
    primary.set_default(fake_openai.error_spec(429, "requests", "Rate limit reached", "rate_limit_exceeded"))
    fallback.set_default(fake_anthropic.responder("claude-fallback", "sk-ant-fallback"))
    envoy = start_gateway(tmp_path, [
        Provider("gpt-primary", primary.port, key_env="PRIMARY_KEY", key="sk-openai-primary", models={"*": "gpt-4o"}),
        Provider("claude-fallback", fallback.port, format="anthropic", key_env="FALLBACK_KEY", key="sk-ant-fallback"),
    ])
    client = anthropic.Anthropic(api_key=CLIENT_KEY, base_url=f"http://127.0.0.1:{envoy.listener_ports[0]}",
                                 max_retries=0, timeout=15)
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}],
                                     extra_headers={"anthropic-beta": "context-1m-2025-08-07"})
    assert message.content[0].text == "hello from claude-fallback"
    (tried,) = primary.requests
    assert fake_openai.problems(tried, "sk-openai-primary") == []
    (served,) = fallback.requests
    assert fake_anthropic.problems(served, "sk-ant-fallback") == []
    assert served.header("anthropic-beta") == "context-1m-2025-08-07"
    assert served.json["model"] == "claude-sonnet-4-5"


def test_system_blocks_and_images_translate_for_an_openai_provider(tmp_path, mock):
    s = Setup(tmp_path, mock, "openai", anthropic_error(503, "overloaded_error"))
    s.client.messages.create(
        model="claude-sonnet-4-5", max_tokens=20,
        system=[{"type": "text", "text": "You see images."}, {"type": "text", "text": "Answer briefly."}],
        messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "text", "text": "What is this?"}]}])
    (request,) = s.received_without_problems()
    assert request.json["messages"] == [
        {"role": "system", "content": "You see images.\n\nAnswer briefly."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                                     {"type": "text", "text": "What is this?"}]}]


@pytest.mark.core
def test_every_provider_down_is_an_anthropic_overloaded_error(tmp_path, mock):
    s = Setup(tmp_path, mock, "openai", anthropic_error(429, "rate_limit_error", retry_after=30))
    s.fallback.set_default(fake_openai.error_spec(503, "server_error", "down", None))
    with pytest.raises(anthropic.APIStatusError) as raised:
        s.client.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    error = raised.value
    assert error.status_code == 529
    assert error.body == {"type": "error", "error": {"type": "overloaded_error", "message": error.body["error"]["message"]}}
    assert "No provider could serve model `claude-sonnet-4-5`" in error.body["error"]["message"]
    assert error.response.headers.get("retry-after")


@pytest.mark.core
def test_a_request_the_gateway_refuses_is_answered_in_anthropics_shape(tmp_path, mock):
    s = Setup(tmp_path, mock, "anthropic", None)
    with pytest.raises(anthropic.BadRequestError) as raised:
        s.client.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=[])
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "invalid_request_error"
    assert s.primary.requests == [] and s.fallback.requests == []


@pytest.mark.core
def test_models_list_from_both_sdks_without_asking_a_provider(tmp_path, mock):
    s = Setup(tmp_path, mock, "openai", None, models={"claude-sonnet-4-5": "default"})
    expected = sorted(["claude-sonnet-4-5", "claude-alias"])
    page = s.client.models.list()
    assert [m.id for m in page.data] == expected
    assert all(m.type == "model" and m.display_name == m.id for m in page.data)
    assert (page.has_more, page.first_id, page.last_id) == (False, expected[0], expected[-1])
    assert s.client.models.retrieve("claude-alias").id == "claude-alias"
    with pytest.raises(anthropic.NotFoundError) as raised:
        s.client.models.retrieve("nope")
    assert raised.value.body["error"]["type"] == "not_found_error"

    openai_client = openai.OpenAI(api_key="sk-client", base_url=f"{s.base_url}/v1", max_retries=0, timeout=15)
    listed = openai_client.models.list()
    assert [m.id for m in listed.data] == expected
    assert all(m.object == "model" for m in listed.data)
    assert openai_client.models.retrieve("claude-sonnet-4-5").id == "claude-sonnet-4-5"
    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.models.retrieve("nope")
    assert raised.value.body["code"] == "model_not_found"
    assert s.counter("api.models_list.requests") == 6
    assert s.primary.requests == [] and s.fallback.requests == []


@pytest.mark.core
@pytest.mark.parametrize("method,path", [
    ("POST", "/v2/responses"), ("GET", "/v1/responses"), ("POST", "/v1/embeddings"), ("GET", "/v1/messages"), ("POST", "/v1/models"),
    ("POST", "/v2/messages"), ("GET", "/v1/chat/completions"),
])
def test_an_unknown_path_reaches_no_provider(tmp_path, mock, method, path):
    s = Setup(tmp_path, mock, "openai", None)
    request = urllib.request.Request(f"{s.base_url}{path}", method=method, data=b'{"model":"m","input":"hi"}' if method == "POST" else None,
                                     headers={"content-type": "application/json", "x-api-key": CLIENT_KEY})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 404
    body = json.loads(raised.value.read())
    assert body["error"]["code"] == "unsupported_path"
    assert "POST /v1/messages" in body["error"]["message"] and "POST /v1/responses" in body["error"]["message"]
    assert s.primary.requests == [] and s.fallback.requests == []


COUNTED = [{"role": "user", "content": "How many tokens is this?"}]


@pytest.mark.core
def test_count_tokens_fails_over_to_the_next_anthropic_provider(tmp_path, mock):
    """Claude Code asks `count_tokens` before long requests: it fails over like Messages, and the
    count is the provider's own."""
    s = Setup(tmp_path, mock, "anthropic", anthropic_error(503, "overloaded_error"))
    raw = s.client.messages.with_raw_response.count_tokens(model="claude-sonnet-4-5", system="Be brief.", messages=COUNTED)
    assert raw.parse().input_tokens == len("Be brief.") + len(COUNTED[0]["content"])
    assert raw.headers["x-llm-provider"] == s.name and "x-llm-token-count" not in raw.headers
    (asked,) = s.fallback.requests
    assert fake_anthropic.problems(asked, s.key, fake_anthropic.COUNT_PATH) == [], asked.json
    assert CLIENT_KEY not in json.dumps(asked.headers) and PRIMARY_KEY not in json.dumps(asked.headers)
    assert asked.json["model"] == s.model
    assert [r.path for r in s.primary.requests] == [fake_anthropic.COUNT_PATH]
    assert s.counter("api.anthropic_count_tokens.requests") == 1
    assert s.counter("api.anthropic_count_tokens.estimated") == 0


@pytest.mark.core
@pytest.mark.parametrize("primary_down", [False, True], ids=["no-anthropic-provider", "anthropic-provider-down"])
def test_count_tokens_without_an_anthropic_provider_is_the_gateways_estimate(tmp_path, mock, primary_down):
    """Only Anthropic counts Anthropic tokens: another format's provider is never asked. With no
    Anthropic-format provider left to ask, the gateway answers its estimate, and says so."""
    if primary_down:
        s = Setup(tmp_path, mock, "openai", anthropic_error(503, "overloaded_error"))
    else:
        s = Setup(tmp_path, mock, "openai", None, chains={"default": ["openai-fallback"]})
    text = "x" * 400
    raw = s.client.messages.with_raw_response.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": text}])
    assert raw.headers["x-llm-token-count"] == "estimate"
    assert raw.parse().input_tokens == 100 + 3, "a token per 4 bytes of text, 3 per message"
    assert s.fallback.requests == [], "an OpenAI-format provider cannot count Anthropic tokens"
    assert len(s.primary.requests) == (1 if primary_down else 0)
    assert s.counter("api.anthropic_count_tokens.estimated") == 1
