"""Gemini and Claude on Google Vertex AI, end to end: the official OpenAI SDK is the client, a
real Envoy runs the filter, and the Vertex fake accepts only access tokens its Google token
endpoint fake issued for an RS256 assertion signed with the test service account's key. Here the
token reaches the filter as a static bearer key (`auth.apiKeyEnv`); the filter's own renewed
Google token (`google-service-account`) is tested in test_google_renewal.py."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import openai
import pytest

from envoy_config import Provider, start_gateway
from fake_api import vertex
from mock_provider import openai_error

PROJECT, LOCATION = "llm-failover-test", "us-central1"
MODELS = {"gemini": "gemini-2.5-flash", "anthropic": "claude-sonnet-4-5@20250929"}
RESPONDERS = {"gemini": vertex.gemini_responder, "anthropic": vertex.anthropic_responder}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_fakes_self_check():
    vertex._self_check()


ROOT = Path(__file__).resolve().parents[2]
TOKEN_REQUEST = ROOT / "target" / "release" / "examples" / "google_token_request"


@pytest.fixture(scope="session", autouse=True)
def _token_request_tool():
    """src/google_auth.rs behind a command (examples/google_token_request.rs): the tokens these
    tests use come from assertions the filter's own code signed."""
    subprocess.run(["cargo", "build", "--release", "--locked", "--example", "google_token_request"],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)


def fetch_token(key_file: dict) -> str:
    """An access token from the token endpoint fake, asked for with the request google_auth builds."""
    made = subprocess.run([str(TOKEN_REQUEST)], input=json.dumps(key_file), capture_output=True, text=True,
                          check=True, timeout=30)
    sent = json.loads(made.stdout)
    request = urllib.request.Request(f"http://{sent['authority']}{sent['path']}", method=sent["method"],
                                     data=sent["body"].encode(), headers=sent["headers"])
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())["access_token"]


def test_the_token_endpoint_fake_refuses_a_tampered_google_auth_assertion(mock):
    """The fake's check is the one that lets the tests' tokens through: it must be able to fail."""
    server = mock("google-token")
    key_file = vertex.load_key_file(token_uri=f"http://127.0.0.1:{server.port}/token")
    tokens = vertex.TokenEndpoint(key_file)
    server.set_default(tokens.responder())
    made = json.loads(subprocess.run([str(TOKEN_REQUEST)], input=json.dumps(key_file), capture_output=True,
                                     text=True, check=True, timeout=30).stdout)
    form = urllib.parse.parse_qs(made["body"])
    assert form["grant_type"] == [vertex.JWT_BEARER]
    assert tokens.assertion_problem(form["assertion"][0]) is None
    head, claims, signature = form["assertion"][0].split(".")
    other_claims = json.loads(vertex._b64decode(claims))
    other_claims["scope"] = "https://www.googleapis.com/auth/drive"
    forged = f"{head}.{vertex._b64encode(json.dumps(other_claims).encode())}.{signature}"
    assert tokens.assertion_problem(forged) == "Invalid JWT Signature."
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(
            f"http://{made['authority']}{made['path']}", method="POST", headers=made["headers"],
            data=urllib.parse.urlencode({"grant_type": vertex.JWT_BEARER, "assertion": forged}).encode()), timeout=5)
    assert refused.value.code == 400 and json.loads(refused.value.read())["error"] == "invalid_grant"
    no_key = subprocess.run([str(TOKEN_REQUEST)], input=json.dumps({**key_file, "private_key": "x"}),
                            capture_output=True, text=True, timeout=30)
    assert no_key.returncode != 0 and "`private_key`: no PEM PRIVATE KEY block" in no_key.stderr


class Setup:
    """The Vertex provider `vertex`, and an OpenAI-compatible `other`, in the order asked."""

    def __init__(self, tmp_path, mock, fmt: str, vertex_first: bool, token_lifetime_s: float = 3599,
                 other_fails_with: dict | None = None):
        self.token_server = mock("google-token")
        key_file = vertex.load_key_file(token_uri=f"http://127.0.0.1:{self.token_server.port}/token")
        self.tokens = vertex.TokenEndpoint(key_file, lifetime_s=token_lifetime_s)
        self.token_server.set_default(self.tokens.responder())
        self.token = fetch_token(key_file)

        self.vertex = mock("vertex")
        self.vertex.set_default(RESPONDERS[fmt]("vertex", self.tokens, PROJECT, LOCATION))
        self.other = mock("other")
        if other_fails_with:
            self.other.set_default(other_fails_with)
        self.model = MODELS[fmt]
        on_vertex = Provider("vertex", self.vertex.port, format=fmt, key_env="VERTEX_TOKEN", key=self.token,
                             models={"*": self.model}, extra={"vertex": {"project": PROJECT, "location": LOCATION}})
        other = Provider("other", self.other.port, key_env="OTHER_KEY", key="sk-other")
        self.envoy = start_gateway(tmp_path, [on_vertex, other] if vertex_first else [other, on_vertex])
        self.client = openai.OpenAI(
            api_key="sk-client", base_url=f"http://127.0.0.1:{self.envoy.listener_ports[0]}/v1",
            max_retries=0, timeout=15)

    def received_without_problems(self) -> list:
        received = self.vertex.requests
        assert received, "Vertex got no request"
        for request in received:
            assert vertex.problems(request, self.tokens, PROJECT, LOCATION) == [], (request.path, request.json)
            assert "sk-other" not in json.dumps(request.headers) and "sk-client" not in json.dumps(request.headers)
        return received


@pytest.fixture(params=sorted(MODELS))
def fmt(request) -> str:
    return request.param


@pytest.mark.core
def test_vertex_as_fallback_plain_and_streamed(tmp_path, mock, fmt):
    s = Setup(tmp_path, mock, fmt, vertex_first=False, other_fails_with=openai_error(429, retry_after=30))
    raw = s.client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
        max_tokens=50)
    answer = raw.parse()
    assert raw.headers["x-llm-provider"] == "vertex" and raw.headers["x-llm-attempts"] == "2"
    assert answer.choices[0].message.content == "hello from vertex"
    assert answer.model == s.model
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 7)

    stream = s.client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "hello from vertex"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    plain, streamed = s.received_without_problems()
    assert plain.path.endswith(":generateContent" if fmt == "gemini" else ":rawPredict")
    assert streamed.path.endswith(":streamGenerateContent" if fmt == "gemini" else ":streamRawPredict")
    assert plain.header("host") == f"{LOCATION}-aiplatform.googleapis.com"
    assert plain.header("authorization") == f"Bearer {s.token}"


@pytest.mark.core
def test_vertex_as_primary_with_a_tool_call_plain_and_streamed(tmp_path, mock, fmt):
    s = Setup(tmp_path, mock, fmt, vertex_first=True)
    question = {"role": "user", "content": "What is the weather in Paris? Please use the tool."}
    first = s.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[question], tools=[WEATHER_TOOL])
    assert first.headers["x-llm-provider"] == "vertex" and first.headers["x-llm-attempts"] == "1"
    message = first.parse().choices[0].message
    (call,) = message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    second = s.client.chat.completions.create(
        model="gpt-4o", tools=[WEATHER_TOOL],
        messages=[question, message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'}])
    assert second.choices[0].message.content == "hello from vertex"

    stream = s.client.chat.completions.create(
        model="gpt-4o", stream=True, tools=[WEATHER_TOOL], tool_choice="required",
        messages=[{"role": "user", "content": "Weather in Paris? use the tool"}])
    arguments, finish = "", None
    for chunk in stream:
        finish = chunk.choices[0].finish_reason or finish
        for delta in chunk.choices[0].delta.tool_calls or []:
            arguments += delta.function.arguments or ""
    assert finish == "tool_calls" and json.loads(arguments) == {"city": "Paris"}
    assert len(s.received_without_problems()) == 3
    assert len(s.other.requests) == 0


@pytest.mark.core
def test_an_expired_token_fails_over_to_the_next_provider(tmp_path, mock):
    """Vertex refuses a token once it expires (401): the request goes on to the next provider."""
    # Long enough for Envoy to start (Vertex's cluster can take seconds to load) and serve once.
    s = Setup(tmp_path, mock, "gemini", vertex_first=True, token_lifetime_s=10)
    hello = [{"role": "user", "content": "hello"}]
    served = s.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=hello)
    assert served.headers["x-llm-provider"] == "vertex"
    time.sleep(max(0.0, s.tokens.expires_at(s.token) - time.monotonic() + 0.1))
    assert not s.tokens.valid(s.token)
    after = s.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=hello)
    assert after.headers["x-llm-provider"] == "other" and after.headers["x-llm-attempts"] == "2"
    assert s.vertex.requests[-1].header("authorization") == f"Bearer {s.token}"
    assert s.envoy.stats().get("wasmcustom.llm_failover.provider.vertex.failover.unauthorized", 0) == 1


@pytest.mark.core
def test_anthropic_messages_client_reaches_claude_on_vertex_as_it_is(tmp_path, mock):
    """An Anthropic SDK client's Messages request goes to Claude on Vertex untranslated: the
    model moves to the path, Vertex's `anthropic_version` into the body, the client's key away."""
    import anthropic  # noqa: PLC0415

    s = Setup(tmp_path, mock, "anthropic", vertex_first=False, other_fails_with=openai_error(503))
    client = anthropic.Anthropic(api_key="sk-ant-client", base_url=f"http://127.0.0.1:{s.envoy.listener_ports[0]}",
                                 max_retries=0, timeout=15)
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "hello from vertex"
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}]) as stream:
        assert "".join(stream.text_stream) == "hello from vertex"
    plain, streamed = s.received_without_problems()
    assert plain.path.endswith(f"/publishers/anthropic/models/{s.model}:rawPredict")
    assert streamed.path.endswith(f"/publishers/anthropic/models/{s.model}:streamRawPredict")
    assert "sk-ant-client" not in json.dumps(plain.headers) and plain.header("anthropic-version") is None
    assert plain.json["anthropic_version"] == vertex.ANTHROPIC_VERSION and "model" not in plain.json


def test_count_tokens_never_asks_claude_on_vertex(tmp_path, mock):
    """Vertex counts Claude's tokens at another path: with only Vertex to ask, the gateway
    answers its estimate, and Vertex gets no request."""
    import anthropic  # noqa: PLC0415

    s = Setup(tmp_path, mock, "anthropic", vertex_first=True)
    client = anthropic.Anthropic(api_key="sk-ant-client", base_url=f"http://127.0.0.1:{s.envoy.listener_ports[0]}",
                                 max_retries=0, timeout=15)
    raw = client.messages.with_raw_response.count_tokens(model="claude-sonnet-4-5",
                                                         messages=[{"role": "user", "content": "x" * 400}])
    assert raw.headers["x-llm-token-count"] == "estimate"
    assert raw.parse().input_tokens == 100 + 3
    assert s.vertex.requests == [] and s.other.requests == []
