"""Embeddings get failover too, end to end: the official OpenAI Python SDK is the client
(`client.embeddings.create`), a real Envoy runs the filter, the primary (OpenAI-compatible)
answers 429 or 503, and the fallback is an OpenAI-compatible, Azure, Gemini or Ollama provider
serving the same alias with its own model. Providers without a model for the alias (an
OpenAI-compatible chat provider, an Anthropic one) are in the chat chain but never see an
embeddings request. The fakes check every request the way the real APIs do."""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest

from envoy_config import Provider, start_gateway
from fake_api import embeddings as fake
from fake_api import gemini as fake_gemini
from fake_api import openai as fake_openai

ALIAS = "text-embed"
PRIMARY_MODEL = "text-embedding-3-small"
PRIMARY_KEY = "sk-primary-embed"
CLIENT_KEY = "sk-client-embed"
FALLBACKS = {
    # format: (the fallback's model for the alias, its key)
    "openai": ("text-embedding-3-large", "sk-openai-fallback"),
    "azure-openai": ("embed-deployment", "az-fallback-key"),
    "gemini": ("gemini-embedding-001", "gm-fallback-key"),
    "ollama": ("nomic-embed-text", None),
}


def primary_error(status: int) -> dict:
    kind, code = {429: ("rate_limit_error", "rate_limit_exceeded"), 503: ("server_error", None)}[status]
    spec = fake_openai.error_spec(status, kind, f"primary says {status}", code)
    if status == 429:
        spec["headers"] = {"retry-after": "30"}
    return spec


class Setup:
    def __init__(self, tmp_path, mock, fallback_format: str, primary_fails_with: int | None = None, **gateway):
        self.format = fallback_format
        self.model, self.key = FALLBACKS[fallback_format]
        self.name = f"{fallback_format}-fallback"
        self.primary = mock("embed-primary")
        self.fallback = mock(self.name)
        self.chat_only = mock("chat-only")
        self.claude = mock("claude")
        self.primary.set_default(fake.responder("openai", "embed-primary", PRIMARY_KEY))
        if primary_fails_with:
            self.primary.script(primary_error(primary_fails_with))
        self.fallback.set_default(fake.responder(fallback_format, self.name, self.key))
        self.chat_only.set_default(fake_openai.responder("chat-only", "sk-chat-only"))
        fallback = Provider(self.name, self.fallback.port, format=fallback_format)
        if self.key:
            fallback.key_env, fallback.key = "FALLBACK_KEY", self.key
        if fallback_format == "azure-openai":
            fallback.api_version = fake.AZURE_API_VERSION
        providers = [
            Provider("embed-primary", self.primary.port, key_env="PRIMARY_KEY", key=PRIMARY_KEY),
            Provider("chat-only", self.chat_only.port, key_env="CHAT_ONLY_KEY", key="sk-chat-only"),
            Provider("claude", self.claude.port, format="anthropic", key_env="CLAUDE_KEY", key="sk-ant-claude"),
            fallback,
        ]
        embeddings = {ALIAS: {"embed-primary": PRIMARY_MODEL, self.name: self.model}}
        self.envoy = start_gateway(tmp_path, providers, chains={"default": ["chat-only", "claude", "embed-primary", self.name]},
                                   router_extra={"embeddings": embeddings}, **gateway)
        self.base_url = f"http://127.0.0.1:{self.envoy.listener_ports[0]}/v1"
        self.client = openai.OpenAI(api_key=CLIENT_KEY, base_url=self.base_url, max_retries=0, timeout=15)

    def received_without_problems(self) -> list:
        received = self.fallback.requests
        assert received, "the fallback got no request"
        for request in received:
            assert fake.problems(self.format, request, self.key) == [], (request.path, request.json)
            assert CLIENT_KEY not in json.dumps(request.headers) and PRIMARY_KEY not in json.dumps(request.headers)
        return received

    def never_asked_the_providers_without_a_model(self) -> None:
        assert self.chat_only.requests == [], "chat-only has no model for the alias"
        assert self.claude.requests == [], "Anthropic has no embeddings API"

    def counter(self, name: str) -> int:
        return self.envoy.stats().get(f"wasmcustom.llm_failover.{name}", 0)


def expected(model: str, texts: list[str], dimensions: int | None = None) -> list[list[float]]:
    return [fake.vector(model, text, dimensions) for text in texts]


@pytest.mark.core
@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("fallback_format", ["openai", "gemini", "ollama"])
def test_embeddings_fail_over_to_the_same_alias_at_another_format(tmp_path, mock, fallback_format, status):
    s = Setup(tmp_path, mock, fallback_format, primary_fails_with=status)
    # The SDK asks for base64 unless told otherwise, and decodes it.
    raw = s.client.embeddings.with_raw_response.create(model=ALIAS, input="The food was delicious")
    answer = raw.parse()
    assert raw.headers["x-llm-provider"] == s.name
    assert raw.headers["x-llm-model"] == s.model
    assert raw.headers["x-llm-attempts"] == "2"
    assert [d.embedding for d in answer.data] == expected(s.model, ["The food was delicious"])
    assert answer.model == s.model and answer.object == "list"
    (primary_request,) = s.primary.requests
    assert fake.openai_problems(primary_request, PRIMARY_KEY) == []
    assert primary_request.json == {"model": PRIMARY_MODEL, "input": "The food was delicious", "encoding_format": "base64"}
    (request,) = s.received_without_problems()
    if fallback_format == "openai":
        # Native: only the model differs.
        assert request.json == {**primary_request.json, "model": s.model}
    failure = {429: "rate_limited", 503: "server_error"}[status]
    assert s.counter(f"provider.embed-primary.failover.{failure}") == 1
    assert s.counter(f"provider.{s.name}.served") == 1
    assert s.counter("api.embeddings.requests") == 1 and s.counter("requests") == 1
    s.never_asked_the_providers_without_a_model()


@pytest.mark.core
@pytest.mark.parametrize("fallback_format", sorted(FALLBACKS))
def test_list_input_floats_base64_and_dimensions_at_each_format(tmp_path, mock, fallback_format):
    s = Setup(tmp_path, mock, fallback_format, primary_fails_with=503)
    texts = ["first text", "the second one", "third"]
    floats = s.client.embeddings.create(model=ALIAS, input=texts, encoding_format="float", dimensions=4)
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert [d.embedding for d in floats.data] == expected(s.model, texts, 4)
    # Explicitly asked, base64 comes back undecoded: little-endian float32, as OpenAI sends it.
    encoded = s.client.embeddings.create(model=ALIAS, input=texts[:2], encoding_format="base64")
    for item, want in zip(encoded.data, expected(s.model, texts[:2]), strict=True):
        raw = base64.b64decode(item.embedding)
        assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == want
    # Decoded by the SDK (its default), with dimensions.
    decoded = s.client.embeddings.create(model=ALIAS, input=texts, dimensions=3)
    assert [d.embedding for d in decoded.data] == expected(s.model, texts, 3)
    first, second, third = s.received_without_problems()
    if fallback_format == "gemini":
        assert [r["outputDimensionality"] for r in first.json["requests"]] == [4, 4, 4]
        assert "outputDimensionality" not in second.json["requests"][0]
        assert first.path == f"/v1beta/models/{s.model}:batchEmbedContents"
    elif fallback_format == "ollama":
        assert first.json == {"model": s.model, "input": texts, "dimensions": 4}
        assert first.path == "/api/embed"
    elif fallback_format == "azure-openai":
        assert first.path == f"/openai/deployments/{s.model}/embeddings"
        assert first.json["dimensions"] == 4 and first.json["encoding_format"] == "float"
    # Tokens as each provider reports them (Gemini's batch endpoint reports none).
    used = sum(fake.tokens(t) for t in texts)
    assert floats.usage.prompt_tokens == (0 if fallback_format == "gemini" else used)
    assert floats.usage.total_tokens == floats.usage.prompt_tokens
    # The primary is cooling down: the later requests went to the fallback only.
    assert len(s.primary.requests) == 1
    s.never_asked_the_providers_without_a_model()


@pytest.mark.core
def test_a_healthy_primary_serves_and_its_usage_is_counted(tmp_path, mock):
    s = Setup(tmp_path, mock, "gemini")
    raw = s.client.embeddings.with_raw_response.create(model=ALIAS, input=["one two", "three"])
    assert raw.headers["x-llm-provider"] == "embed-primary" and raw.headers["x-llm-model"] == PRIMARY_MODEL
    assert [d.embedding for d in raw.parse().data] == expected(PRIMARY_MODEL, ["one two", "three"])
    assert raw.parse().usage.prompt_tokens == 3
    assert s.fallback.requests == []
    s.envoy.wait_for_stat(f"wasmcustom.llm_failover.provider.embed-primary.model.{PRIMARY_MODEL.replace('.', '_')}.prompt_tokens", 3)
    s.never_asked_the_providers_without_a_model()


@pytest.mark.core
def test_unknown_alias_and_bad_requests_are_answered_in_openai_shape_by_the_gateway(tmp_path, mock):
    s = Setup(tmp_path, mock, "ollama")
    with pytest.raises(openai.NotFoundError) as raised:
        s.client.embeddings.create(model="gpt-4o", input="hi")
    assert raised.value.body["code"] == "unknown_model" and raised.value.body["param"] == "model"
    for bad, param in [({"dimensions": 0}, "dimensions"), ({"input": ""}, "input"), ({"encoding_format": "int8"}, "encoding_format")]:
        with pytest.raises(openai.BadRequestError) as raised:
            s.client.embeddings.create(**{"model": ALIAS, "input": "hi", **bad})
        assert raised.value.body["param"] == param, bad
    assert s.primary.requests == [] and s.fallback.requests == []
    s.never_asked_the_providers_without_a_model()


@pytest.mark.core
def test_every_provider_of_the_alias_down_is_one_openai_503(tmp_path, mock):
    s = Setup(tmp_path, mock, "gemini")
    s.primary.script(primary_error(503))
    s.fallback.script(fake_gemini.error_spec(503))
    with pytest.raises(openai.InternalServerError) as raised:
        s.client.embeddings.create(model=ALIAS, input="hi")
    assert raised.value.status_code == 503
    assert raised.value.body["code"] == "all_providers_unavailable"
    assert "embed-primary" in raised.value.body["message"] and "chat-only" not in raised.value.body["message"]
    assert len(s.primary.requests) == 1 and len(s.fallback.requests) == 1
    s.never_asked_the_providers_without_a_model()


@pytest.mark.core
def test_token_ids_are_refused_before_gemini_is_asked_and_it_stays_healthy(tmp_path, mock):
    """Gemini takes text only: token ids get a 400 naming why, before Gemini is asked, and the
    refusal is not held against Gemini."""
    s = Setup(tmp_path, mock, "gemini", primary_fails_with=503)
    with pytest.raises(openai.BadRequestError) as raised:
        s.client.embeddings.create(model=ALIAS, input=[[1, 2, 3]])
    assert "token ids" in raised.value.body["message"]
    assert raised.value.body["code"] == "unsupported_by_provider"
    assert s.fallback.requests == []
    # The primary cools down; Gemini, not at fault, serves the next request at once.
    raw = s.client.embeddings.with_raw_response.create(model=ALIAS, input="hi")
    assert (raw.headers["x-llm-provider"], raw.headers["x-llm-attempts"]) == (s.name, "1")
    assert s.counter("provider.gemini-fallback.failover.no_response") == 0


@pytest.mark.core
def test_a_gemini_error_reaches_the_client_in_openai_shape(tmp_path, mock):
    """A Gemini 400 about the request is the client's error: translated, not failed over."""
    s = Setup(tmp_path, mock, "gemini", primary_fails_with=503)
    s.fallback.script(fake_gemini.error_spec(400, "text too long"))
    with pytest.raises(openai.BadRequestError) as raised:
        s.client.embeddings.create(model=ALIAS, input="hi")
    assert "text too long" in raised.value.body["message"]
    assert raised.value.body["type"] == "invalid_request_error"
    assert len(s.primary.requests) == 1 and len(s.fallback.requests) == 1
