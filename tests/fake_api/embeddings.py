"""Fake embeddings APIs for the end-to-end tests, one per provider format, each checking requests
the way the real API does and answering in its own shape:

- OpenAI `POST /v1/embeddings` (Azure: `/openai/deployments/{deployment}/embeddings?api-version=`,
  `api-key` header): `model` and `input` required, `encoding_format` float or base64, `dimensions`;
  `data[].embedding`, `usage`.
- Gemini `POST /v1beta/models/{model}:batchEmbedContents`: `requests[]`, each naming the URL's
  model (`models/{model}`), `content.parts[].text`, `outputDimensionality`; `embeddings[].values`.
- Ollama `POST /api/embed`: `model`, `input` a string or an array of strings, `dimensions`;
  `embeddings` and `prompt_eval_count`.

Every vector is `vector(model, text, dimensions)`: what model made it shows in its values, and
each value is exact in float32, so a base64 round trip gives the same numbers.

    from fake_api import embeddings
    provider.set_default(embeddings.responder("gemini", "gemini", api_key="k"))

Run this file to self-check: `python3 tests/fake_api/embeddings.py`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import sys
from pathlib import Path
from typing import Any, Callable

try:
    from fake_api import gemini as _gemini
    from fake_api import ollama as _ollama
    from fake_api import openai as _openai
    from mock_provider import Received
except ImportError:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fake_api import gemini as _gemini
    from fake_api import ollama as _ollama
    from fake_api import openai as _openai
    from mock_provider import Received

DEFAULT_DIMENSIONS = 8
MAX_INPUTS = 2048
AZURE_API_VERSION = "2024-10-21"

OPENAI_PATH = "/v1/embeddings"
OPENAI_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}
_AZURE_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/?#]+)/embeddings$")

GEMINI_PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:?#]+):batchEmbedContents$")
GEMINI_FIELDS = {"model", "content", "taskType", "title", "outputDimensionality"}
GEMINI_TASK_TYPES = {"TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
                     "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY"}

OLLAMA_PATH = "/api/embed"
OLLAMA_FIELDS = {"model", "input", "truncate", "options", "keep_alive", "dimensions"}


def vector(model: str, text: str, dimensions: int | None = None) -> list[float]:
    """The fake's embedding of `text` by `model`: multiples of 1/1024, exact in float32."""
    digest = hashlib.sha256(f"{model}\0{text}".encode()).digest() * 8
    return [(digest[i] - 128) / 1024 for i in range(dimensions or DEFAULT_DIMENSIONS)]


def tokens(text: str) -> int:
    return len(text.split())


def as_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def from_base64(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# ---------------------------------------------------------------- OpenAI and Azure

def openai_problems(request: Received, api_key: str | None, azure: bool = False) -> list[str]:
    """What OpenAI's (or Azure OpenAI's) embeddings endpoint would refuse in `request`."""
    if azure:
        found = []
        if request.header("api-key") != api_key:
            found.append("api-key: Access denied due to invalid subscription key")
        found += [f"{name}: a credential for another provider" for name in _openai.CREDENTIAL_HEADERS
                  if name != "api-key" and request.header(name) is not None]
        if not _AZURE_PATH.match(request.path):
            found.append(f"path {request.path}: not /openai/deployments/<deployment>/embeddings")
        if f"api-version={AZURE_API_VERSION}" not in request.query.split("&"):
            found.append(f"query {request.query!r}: api-version is required")
    else:
        found = _openai.credential_problems(request, api_key)
        if request.path != OPENAI_PATH:
            found.append(f"path {request.path}: not {OPENAI_PATH}")
    if request.method != "POST":
        found.append(f"method {request.method}: embeddings take POST")
    for header in ("anthropic-version", "anthropic-beta"):
        if request.header(header) is not None:
            found.append(f"{header}: another API's header reached OpenAI")
    body = request.json
    if not isinstance(body, dict):
        return found + ["body: not a JSON object"]
    found += [f"Unrecognized request argument supplied: {name}" for name in sorted(body.keys() - OPENAI_FIELDS)]
    if not azure and (not isinstance(body.get("model"), str) or not body["model"]):
        found.append("model: you must provide a model parameter")
    found += _input_problems(body.get("input"), tokens_allowed=True)
    if body.get("encoding_format", "float") not in ("float", "base64"):
        found.append("encoding_format: must be float or base64")
    if "dimensions" in body and not _positive_int(body["dimensions"]):
        found.append("dimensions: must be a positive integer")
    return found


def _input_problems(value: Any, tokens_allowed: bool) -> list[str]:
    if value is None:
        return ["input: required"]
    if isinstance(value, str):
        return [] if value else ["input: must not be empty"]
    if not isinstance(value, list) or not value:
        return ["input: must be a string or a non-empty array"]
    if len(value) > MAX_INPUTS:
        return [f"input: at most {MAX_INPUTS} entries"]
    if all(isinstance(v, str) and v for v in value):
        return []
    if tokens_allowed and all(isinstance(v, int) for v in value):
        return []
    if tokens_allowed and all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
        return []
    return ["input: each entry must be a non-empty string" + (" (or token ids)" if tokens_allowed else "")]


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [v if isinstance(v, str) else " ".join(map(str, v if isinstance(v, list) else [v])) for v in value]


def _openai_answer(request: Received, model: str) -> dict:
    body = request.json
    raw = body["input"]
    texts = [" ".join(map(str, raw))] if isinstance(raw, list) and raw and isinstance(raw[0], int) else _texts(raw)
    vectors = [vector(model, text, body.get("dimensions")) for text in texts]
    base64_wanted = body.get("encoding_format") == "base64"
    used = sum(tokens(t) for t in texts)
    return {"object": "list", "model": model, "usage": {"prompt_tokens": used, "total_tokens": used},
            "data": [{"object": "embedding", "index": i, "embedding": as_base64(v) if base64_wanted else v}
                     for i, v in enumerate(vectors)]}


# ---------------------------------------------------------------- Gemini

def gemini_problems(request: Received, api_key: str | None) -> list[str]:
    """What Gemini's batchEmbedContents would refuse in `request`, credentials first."""
    found = []
    auth = _gemini._auth_failure(request, api_key)
    if auth is not None:
        found.append(f"auth: {auth['body']['error']['message']}")
    if request.method != "POST":
        found.append(f"method {request.method}: batchEmbedContents takes POST")
    match = GEMINI_PATH.match(request.path)
    if not match:
        return found + [f"path {request.path!r} is not /v1beta/models/<model>:batchEmbedContents"]
    body = request.json
    if not isinstance(body, dict):
        return found + ["Invalid JSON payload received: not an object"]
    found += [f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.' for key in sorted(body.keys() - {"requests"})]
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return found + ["* BatchEmbedContentsRequest.requests: at least one request is required"]
    for i, one in enumerate(requests):
        where = f"requests[{i}]"
        if not isinstance(one, dict):
            found.append(f"{where}: not an object")
            continue
        found += [f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': Cannot find field.'
                  for key in sorted(one.keys() - GEMINI_FIELDS)]
        if one.get("model") != f"models/{match['model']}":
            found.append(f"* BatchEmbedContentsRequest.{where}.model: the model in the request must match "
                         f"the model in the URL (models/{match['model']}), got {one.get('model')!r}")
        parts = (one.get("content") or {}).get("parts") if isinstance(one.get("content"), dict) else None
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) and isinstance(p.get("text"), str) and p["text"] for p in parts):
            found.append(f"* BatchEmbedContentsRequest.{where}.content: must have parts with text")
        if "outputDimensionality" in one and not _positive_int(one["outputDimensionality"]):
            found.append(f"{where}.outputDimensionality: must be a positive integer")
        if "taskType" in one and one["taskType"] not in GEMINI_TASK_TYPES:
            found.append(f"{where}.taskType: unknown task type")
    return found


def _gemini_answer(request: Received) -> dict:
    model = GEMINI_PATH.match(request.path)["model"]
    return {"embeddings": [{"values": vector(model, "".join(p["text"] for p in one["content"]["parts"]),
                                             one.get("outputDimensionality"))}
                           for one in request.json["requests"]]}


# ---------------------------------------------------------------- Ollama

def ollama_problems(request: Received, api_key: str | None) -> list[str]:
    """What Ollama's /api/embed would refuse in `request`."""
    found = _ollama._auth_problems(request, api_key)
    if request.method != "POST":
        found.append(f"method {request.method}: {OLLAMA_PATH} takes POST")
    if request.path != OLLAMA_PATH:
        found.append(f"path {request.path}: the embed API is {OLLAMA_PATH}")
    body = request.json
    if not isinstance(body, dict):
        return found + ["the body is not a JSON object"]
    found += [f"{key}: not a field of Ollama's embed request (it would be silently ignored)"
              for key in sorted(body.keys() - OLLAMA_FIELDS)]
    if not isinstance(body.get("model"), str) or not body["model"]:
        found.append("model is required")
    found += _input_problems(body.get("input"), tokens_allowed=False)
    if "dimensions" in body and not _positive_int(body["dimensions"]):
        found.append("dimensions must be a positive integer")
    return found


def _ollama_answer(request: Received) -> dict:
    body = request.json
    texts = _texts(body["input"])
    return {"model": body["model"], "embeddings": [vector(body["model"], t, body.get("dimensions")) for t in texts],
            "total_duration": 14143917, "load_duration": 1019500, "prompt_eval_count": sum(tokens(t) for t in texts)}


# ---------------------------------------------------------------- answering

def problems(fmt: str, request: Received, api_key: str | None) -> list[str]:
    if fmt == "gemini":
        return gemini_problems(request, api_key)
    if fmt == "ollama":
        return ollama_problems(request, api_key)
    return openai_problems(request, api_key, azure=fmt == "azure-openai")


def responder(fmt: str, name: str, api_key: str | None) -> Callable[[Received], dict]:
    """A MockProvider spec function answering embeddings requests as the `fmt` API does: its own
    errors for what it would refuse (credentials first), else the vectors."""

    def respond(request: Received) -> dict:
        if fmt == "gemini":
            auth = _gemini._auth_failure(request, api_key)
            if auth is not None:
                return auth
            found = gemini_problems(request, api_key)
            if found:
                return {"status": 400, "body": _gemini.error_body(400, "\n".join(found), "INVALID_ARGUMENT")}
            return {"status": 200, "body": _gemini_answer(request)}
        if fmt == "ollama":
            found = ollama_problems(request, api_key)
            if found:
                return {"status": 400, "body": {"error": "; ".join(found)}}
            return {"status": 200, "body": _ollama_answer(request)}
        found = openai_problems(request, api_key, azure=fmt == "azure-openai")
        if found:
            status = 401 if any("credential" in p or "key" in p for p in found) else 400
            return _openai.error_spec(status, "invalid_request_error", "; ".join(found), None)
        model = request.json.get("model") if fmt == "openai" else _AZURE_PATH.match(request.path)["deployment"]
        return {"status": 200, "body": _openai_answer(request, model)}

    return respond


# ---------------------------------------------------------------- self-check

def _self_check() -> None:
    import json
    import time

    def received(body: Any, path: str, headers: dict[str, str], query: str = "") -> Received:
        return Received(method="POST", path=path, query=query, headers=headers, body=json.dumps(body).encode(),
                        json=body, at=time.monotonic(), header_list=list(headers.items()))

    assert from_base64(as_base64(vector("m", "x"))) == vector("m", "x"), "exact in float32"
    assert vector("a", "x") != vector("b", "x") and len(vector("a", "x", 3)) == 3

    good = {"model": "text-embedding-3-small", "input": ["a b", "c"], "dimensions": 4, "encoding_format": "base64"}
    answer = responder("openai", "o", "k")(received(good, OPENAI_PATH, {"authorization": "Bearer k"}))
    assert answer["status"] == 200 and from_base64(answer["body"]["data"][1]["embedding"]) == vector(good["model"], "c", 4)
    assert answer["body"]["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert responder("openai", "o", "k")(received(good, OPENAI_PATH, {"authorization": "Bearer x"}))["status"] == 401
    bad = openai_problems(received({"input": "", "encoding_format": "int8", "x": 1}, OPENAI_PATH, {}), None)
    for expected in ("model", "input", "encoding_format", "argument supplied: x"):
        assert any(expected in p for p in bad), (expected, bad)
    azure = responder("azure-openai", "az", "k")(received({"input": "hi"}, "/openai/deployments/emb/embeddings", {"api-key": "k"},
                                                          f"api-version={AZURE_API_VERSION}"))
    assert azure["status"] == 200 and azure["body"]["data"][0]["embedding"] == vector("emb", "hi")

    path = "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    one = {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 3}
    answer = responder("gemini", "g", "k")(received({"requests": [one]}, path, {"x-goog-api-key": "k"}))
    assert answer == {"status": 200, "body": {"embeddings": [{"values": vector("gemini-embedding-001", "hi", 3)}]}}, answer
    other = {**one, "model": "models/text-embedding-004"}
    assert any("must match" in p for p in gemini_problems(received({"requests": [other]}, path, {"x-goog-api-key": "k"}), "k"))
    assert responder("gemini", "g", "k")(received({"requests": [one]}, path, {"authorization": "Bearer k"}))["status"] == 401
    # The Rust translation's golden request is one the API takes.
    fixture = Path(__file__).resolve().parents[2] / "src/inbound/fixtures/embeddings/request_texts.gemini.json"
    assert gemini_problems(received(json.loads(fixture.read_text()), path, {"x-goog-api-key": "k"}), "k") == []

    answer = responder("ollama", "o", None)(received({"model": "nomic-embed-text", "input": ["a b", "c"]}, OLLAMA_PATH, {}))
    assert answer["body"]["embeddings"][1] == vector("nomic-embed-text", "c") and answer["body"]["prompt_eval_count"] == 3
    assert responder("ollama", "o", None)(received({"model": "m", "input": "x"}, OLLAMA_PATH, {"authorization": "Bearer k"}))["status"] == 400
    fixture = fixture.with_name("request_texts.ollama.json")
    assert ollama_problems(received(json.loads(fixture.read_text()), OLLAMA_PATH, {}), None) == []
    assert ollama_problems(received({"model": "m", "input": [1, 2]}, OLLAMA_PATH, {}), None), "token ids are not text"
    print("fake_api.embeddings: self-check passed")


if __name__ == "__main__":
    _self_check()
