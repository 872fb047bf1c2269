"""Failover to providers with other APIs, end to end: the official OpenAI Python SDK is the client,
a real Envoy (2 workers) runs the filter, and the fallback is a fake of Anthropic, Gemini or
Ollama that checks every request the way the real API would and answers in its own format."""

from __future__ import annotations

import json

import openai
import pytest

from envoy_config import Provider, reads_error_answers, start_gateway
from fake_api import anthropic, gemini, ollama
from mock_provider import openai_error

FORMATS = {
    # format: (fake API module, model the provider is asked for, its key or None)
    "anthropic": (anthropic, "claude-sonnet-4-5", "sk-ant-fallback"),
    "gemini": (gemini, "gemini-2.5-flash", "gm-fallback-key"),
    "ollama": (ollama, "qwen2.5-coder:32b", None),
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# A 1x1 PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


class Setup:
    def __init__(self, tmp_path, mock, fmt: str, primary_fails_with: dict | None):
        self.fake, self.model, self.key = FORMATS[fmt]
        self.name = f"{fmt}-fallback"
        self.primary = mock("primary")
        self.fallback = mock(self.name)
        self.fallback.set_default(self.fake.responder(self.name, self.key))
        if primary_fails_with:
            self.primary.set_default(primary_fails_with)
        fallback = Provider(self.name, self.fallback.port, format=fmt, models={"*": self.model})
        if self.key:
            fallback.key_env, fallback.key = "FALLBACK_KEY", self.key
        self.envoy = start_gateway(tmp_path, [
            Provider("primary", self.primary.port, key_env="PRIMARY_KEY", key="sk-primary"),
            fallback,
        ])
        self.client = openai.OpenAI(
            api_key="sk-client", base_url=f"http://127.0.0.1:{self.envoy.listener_ports[0]}/v1",
            max_retries=0, timeout=15)

    def received_without_problems(self) -> list:
        received = self.fallback.requests
        assert received, "the fallback got no request"
        for request in received:
            assert self.fake.problems(request, self.key) == [], (request.path, request.json)
        return received

    def counter(self, name: str) -> int:
        return self.envoy.stats().get(f"wasmcustom.llm_failover.{name}", 0)


@pytest.fixture(params=sorted(FORMATS))
def fmt(request) -> str:
    return request.param


@pytest.mark.core
def test_sdk_answer_after_a_rate_limited_primary(tmp_path, mock, fmt):
    s = Setup(tmp_path, mock, fmt, openai_error(429, retry_after=30))
    raw = s.client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
        temperature=0.3, max_tokens=50)
    answer = raw.parse()
    assert raw.headers["x-llm-provider"] == s.name
    assert raw.headers["x-llm-model"] == s.model
    assert raw.headers["x-llm-attempts"] == "2"
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == f"hello from {s.name}"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == s.model
    assert answer.id.startswith("chatcmpl-")
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (11, 7, 18)
    (request,) = s.received_without_problems()
    assert "sk-primary" not in json.dumps(request.headers) and "sk-client" not in json.dumps(request.headers)
    assert s.counter("provider.primary.failover.rate_limited") == 1
    assert s.counter(f"provider.{s.name}.served") == 1


@pytest.mark.core
def test_sdk_stream_after_an_unavailable_primary(tmp_path, mock, fmt):
    s = Setup(tmp_path, mock, fmt, openai_error(503))
    stream = s.client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"hello from {s.name}"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 11
    assert chunks[-1].usage.completion_tokens == 7
    (request,) = s.received_without_problems()
    assert s.counter("provider.primary.failover.server_error") == 1


def test_sdk_tool_call_round_trip(tmp_path, mock, fmt):
    s = Setup(tmp_path, mock, fmt, openai_error(429))
    question = {"role": "user", "content": "What is the weather in Paris? Please use the tool."}
    first = s.client.chat.completions.create(model="gpt-4o", messages=[question], tools=[WEATHER_TOOL])
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    # The second turn carries the call and its result back: the fake checks they pair up.
    second = s.client.chat.completions.create(
        model="gpt-4o", tools=[WEATHER_TOOL],
        messages=[question, message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'}])
    assert second.choices[0].message.content == f"hello from {s.name}"
    assert len(s.received_without_problems()) == 2


def test_sdk_streamed_tool_call(tmp_path, mock, fmt):
    s = Setup(tmp_path, mock, fmt, openai_error(503))
    stream = s.client.chat.completions.create(
        model="gpt-4o", stream=True, tools=[WEATHER_TOOL], tool_choice="required",
        messages=[{"role": "user", "content": "Weather in Paris? use the tool"}])
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = call["id"] or delta.id
            call["name"] += delta.function.name or ""
            call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    s.received_without_problems()


def test_images_reach_the_fallback_in_its_format(tmp_path, mock, fmt):
    s = Setup(tmp_path, mock, fmt, openai_error(429))
    answer = s.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]}])
    assert answer.choices[0].message.content == f"hello from {s.name}"
    (request,) = s.received_without_problems()
    assert PNG in request.body.decode()


@pytest.mark.core
def test_provider_error_reaches_the_client_in_openai_form(tmp_path, mock, fmt):
    native_400 = {
        "anthropic": {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}},
        "gemini": {"error": {"code": 400, "message": "prompt is too long", "status": "INVALID_ARGUMENT"}},
        "ollama": {"error": "prompt is too long"},
    }[fmt]
    s = Setup(tmp_path, mock, fmt, openai_error(503))
    s.fallback.script({"status": 400, "body": native_400})
    with pytest.raises(openai.BadRequestError) as raised:
        s.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
    assert raised.value.status_code == 400
    error = raised.value.body
    assert "prompt is too long" in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.core
def test_anthropic_overloaded_counts_as_unavailable(tmp_path, mock):
    """Anthropic's 529 is its 503: Envoy fails over on it and health cools the provider."""
    claude, backup = mock("claude"), mock("backup")
    claude.script({"status": 529, "body": {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}})
    envoy = start_gateway(tmp_path, [
        Provider("claude", claude.port, format="anthropic", key_env="ANTHROPIC_KEY", key="sk-ant",
                 models={"*": "claude-sonnet-4-5"}),
        Provider("backup", backup.port),
    ])
    first = envoy.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert first.status == 200, first.text()
    assert first.headers["x-llm-provider"] == "backup"
    envoy.wait_for_log(r"provider `claude` failed \(503 server_error\) for model `gpt-4o` on attempt 1")
    again = envoy.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert again.headers["x-llm-skipped"] == "claude"
    assert len(claude.requests) == 1


def test_unanswerable_request_is_refused_not_corrupted(tmp_path, mock):
    """Ollama takes inline images only: an image URL gets a 400 that says so, and the provider
    is not blamed."""
    s = Setup(tmp_path, mock, "ollama", openai_error(503))
    with pytest.raises(openai.BadRequestError) as raised:
        s.client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}}]}])
    assert "ollama-fallback" in raised.value.body["message"]
    assert raised.value.body["code"] == "unsupported_by_provider"
    assert s.fallback.requests == []
    assert s.counter("provider.ollama-fallback.failover.server_error") == 0


def test_next_attempt_after_a_translated_one_is_clean(tmp_path, mock):
    """Envoy shares request headers between attempts: after an Anthropic attempt moved the path
    and added its headers, an OpenAI attempt must still get /v1/chat/completions, its own key,
    no `anthropic-version`, and the client's original body."""
    claude, backup = mock("claude"), mock("backup")
    claude.script({"status": 503, "body": {"type": "error", "error": {"type": "api_error", "message": "down"}}})
    envoy = start_gateway(tmp_path, [
        Provider("claude", claude.port, format="anthropic", key_env="ANTHROPIC_KEY", key="sk-ant",
                 models={"*": "claude-sonnet-4-5"}),
        Provider("backup", backup.port, key_env="BACKUP_KEY", key="sk-backup"),
    ])
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"50256": -100}}
    response = envoy.post_json("/v1/chat/completions", body)
    assert response.status == 200, response.text()
    (to_claude,) = claude.requests
    assert to_claude.path == "/v1/messages" and to_claude.header("x-api-key") == "sk-ant"
    (to_backup,) = backup.requests
    assert to_backup.path == "/v1/chat/completions"
    assert to_backup.header("authorization") == "Bearer sk-backup"
    assert to_backup.header("x-api-key") is None and to_backup.header("anthropic-version") is None
    assert to_backup.json == body


@pytest.mark.reads_error_answers
def test_gemini_wrong_key_fails_over_as_unauthorized(tmp_path, mock):
    """Gemini answers a wrong key with 400 API_KEY_INVALID; it must count as the 401 it is."""
    google, backup = mock("google"), mock("backup")
    google.set_default(gemini.responder("google", "the-right-key"))
    envoy = start_gateway(tmp_path, [
        Provider("google", google.port, format="gemini", key_env="GEMINI_KEY", key="a-revoked-key",
                 models={"*": "gemini-2.5-flash"}),
        Provider("backup", backup.port),
    ])
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    first = envoy.post_json("/v1/chat/completions", body)
    assert first.status == 200, first.text()
    assert first.headers["x-llm-provider"] == "backup"
    assert google.requests[0].header("x-goog-api-key") == "a-revoked-key"
    envoy.wait_for_log(r"provider `google` failed \(401 unauthorized\) on attempt 1; cooling down until an operator resets it")
    assert envoy.post_json("/v1/chat/completions", body).headers["x-llm-skipped"] == "google"
    assert len(google.requests) == 1


@pytest.mark.core
def test_an_unreadable_translated_answer_never_crashes_envoy(tmp_path, mock):
    """An Anthropic-format provider answers 200 with a body that is not its API's. With
    `errorAnswers: read` it becomes a 502 and the next provider serves. With `pass` (Envoy 1.36,
    which crashed here when the held 200 became a retried 502) the 200 has already gone on:
    its body is an OpenAI-style error, the provider is blamed, and Envoy keeps running."""
    claude, b = mock("claude"), mock("b")
    envoy = start_gateway(tmp_path, [Provider("claude", claude.port, format="anthropic", models={"*": "claude-sonnet-4-5"}),
                                     Provider("b", b.port)])
    claude.script({"status": 200, "body": "this is not an Anthropic message"})
    response = envoy.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    if reads_error_answers():
        assert (response.status, response.headers["x-llm-provider"]) == (200, "b"), response.text()
    else:
        assert response.status == 200
        assert response.json()["error"]["code"] == "bad_provider_answer", response.text()
        assert b.requests == []
    assert envoy.stats()["wasmcustom.llm_failover.provider.claude.failover.server_error"] == 1
    assert envoy.running
    again = envoy.post_json("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert (again.status, again.headers["x-llm-provider"]) == (200, "b"), "claude cools down; b serves"
