"""A fake Ollama native chat API (`POST /api/chat`) for end-to-end tests.

It checks a request the way Ollama reads it (field names and types from `api/types.go` and the
published API reference) and answers in Ollama's own forms: one JSON object, or NDJSON lines
ending with a `done: true` line that carries the token counts.

    from fake_api import ollama
    provider.set_default(ollama.responder("ollama", api_key=None))
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from mock_provider import Received

CHAT_PATH = "/api/chat"
NDJSON = "application/x-ndjson"
LINE_GAP_S = 0.02
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
TOOL_ARGUMENTS = {"city": "Paris"}

# Every header some provider reads a credential from: a keyless Ollama must see none of them.
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "api-key", "x-api-key",
                      "x-goog-api-key", "cookie")

REQUEST_FIELDS = {"model", "messages", "stream", "format", "keep_alive", "tools", "options",
                  "think", "truncate", "shift", "logprobs", "top_logprobs"}
MESSAGE_FIELDS = {"role", "content", "thinking", "images", "tool_calls", "tool_name",
                  "tool_call_id"}
ROLES = {"system", "user", "assistant", "tool"}

# `api.Options` and `api.Runner`, by the JSON type Ollama's `Options.FromMap` insists on.
INTEGER_OPTIONS = {"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx",
                   "num_batch", "num_gpu", "main_gpu", "num_thread", "draft_num_predict"}
NUMBER_OPTIONS = {"top_p", "min_p", "typical_p", "temperature", "repeat_penalty",
                  "presence_penalty", "frequency_penalty"}
BOOLEAN_OPTIONS = {"use_mmap"}
LIST_OPTIONS = {"stop"}


def problems(request: Received, api_key: str | None) -> list[str]:
    """What Ollama would refuse, or silently misread, in this request. Empty when it is good."""
    found = _auth_problems(request, api_key)
    if request.method != "POST":
        found.append(f"method {request.method}: {CHAT_PATH} takes POST")
    if request.path != CHAT_PATH:
        found.append(f"path {request.path}: the chat API is {CHAT_PATH}")
    body = request.json
    if not isinstance(body, dict):
        return found + ["the body is not a JSON object"]
    for key in sorted(body.keys() - REQUEST_FIELDS):
        found.append(f"{key}: not a field of Ollama's chat request (it would be silently ignored)")
    if not isinstance(body.get("model"), str) or not body["model"]:
        found.append("model is required")
    if "stream" not in body:
        found.append("stream: missing, so Ollama would stream NDJSON whatever the client asked")
    elif not isinstance(body["stream"], bool):
        found.append("stream must be a boolean")
    messages = body.get("messages")
    if not isinstance(messages, list):
        found.append("messages must be an array")
    else:
        for index, message in enumerate(messages):
            found += _message_problems(f"messages[{index}]", message)
    if "tools" in body:
        found += _tools_problems(body["tools"])
    if "format" in body and body["format"] != "json" and not isinstance(body["format"], dict):
        found.append('format must be "json" or a JSON schema object')
    if "options" in body:
        found += _options_problems(body["options"])
    return found


def _auth_problems(request: Received, api_key: str | None) -> list[str]:
    if api_key is None:
        sent = [name for name in CREDENTIAL_HEADERS if request.header(name) is not None]
        return [f"{name}: a credential header sent to a keyless Ollama" for name in sent]
    found = []
    if request.header_values("authorization") != [f"Bearer {api_key}"]:
        found.append("authorization: expected exactly `Bearer <the key>`")
    found += [f"{name}: a credential header Ollama does not read" for name in CREDENTIAL_HEADERS
              if name != "authorization" and request.header(name) is not None]
    return found


def _message_problems(where: str, message: Any) -> list[str]:
    if not isinstance(message, dict):
        return [f"{where} must be an object"]
    found = [f"{where}.{key}: not a field of Ollama's messages (it would be silently ignored)"
             for key in sorted(message.keys() - MESSAGE_FIELDS)]
    role = message.get("role")
    if role not in ROLES:
        found.append(f"{where}.role {role!r}: must be one of {sorted(ROLES)}")
    if not isinstance(message.get("content"), str):
        found.append(f"{where}.content must be a string")
    images = message.get("images", [])
    if not isinstance(images, list):
        found.append(f"{where}.images must be an array of base64 strings")
    else:
        for number, image in enumerate(images):
            if not _is_base64(image):
                found.append(f"{where}.images[{number}] is not standard base64")
    if "tool_calls" in message:
        if role != "assistant":
            found.append(f"{where}.tool_calls: only assistant messages call tools")
        found += _tool_calls_problems(f"{where}.tool_calls", message["tool_calls"])
    if "tool_name" in message:
        if role != "tool":
            found.append(f"{where}.tool_name: only tool messages name a tool")
        if not isinstance(message["tool_name"], str) or not message["tool_name"]:
            found.append(f"{where}.tool_name must be a non-empty string")
    return found


def _is_base64(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _tool_calls_problems(where: str, calls: Any) -> list[str]:
    if not isinstance(calls, list):
        return [f"{where} must be an array"]
    found = []
    for number, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            found.append(f"{where}[{number}].function must be an object")
            continue
        if not isinstance(function.get("name"), str) or not function["name"]:
            found.append(f"{where}[{number}].function.name must be a non-empty string")
        if not isinstance(function.get("arguments"), dict):
            found.append(f"{where}[{number}].function.arguments must be a JSON object, not text")
    return found


def _tools_problems(tools: Any) -> list[str]:
    if not isinstance(tools, list):
        return ["tools must be an array"]
    found = []
    for number, tool in enumerate(tools):
        where = f"tools[{number}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            found.append(f'{where}.type must be "function"')
            continue
        function = tool.get("function")
        if not isinstance(function, dict):
            found.append(f"{where}.function must be an object")
            continue
        for key in sorted(function.keys() - {"name", "description", "parameters"}):
            found.append(f"{where}.function.{key}: not a field of Ollama's tools")
        if not isinstance(function.get("name"), str) or not function["name"]:
            found.append(f"{where}.function.name must be a non-empty string")
        if "description" in function and not isinstance(function["description"], str):
            found.append(f"{where}.function.description must be a string")
        parameters = function.get("parameters")
        if not isinstance(parameters, dict) or parameters.get("type") != "object":
            found.append(f'{where}.function.parameters must be a JSON schema of type "object"')
        elif not isinstance(parameters.get("properties", {}), dict):
            found.append(f"{where}.function.parameters.properties must be an object")
    return found


def _options_problems(options: Any) -> list[str]:
    if not isinstance(options, dict):
        return ["options must be an object"]
    found = []
    for key, value in sorted(options.items()):
        is_integer = isinstance(value, int) and not isinstance(value, bool)
        if key in INTEGER_OPTIONS:
            ok = is_integer
        elif key in NUMBER_OPTIONS:
            ok = is_integer or isinstance(value, float)
        elif key in BOOLEAN_OPTIONS:
            ok = isinstance(value, bool)
        elif key in LIST_OPTIONS:
            ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
        else:
            found.append(f"options.{key}: not an option Ollama knows")
            continue
        if not ok:
            found.append(f"options.{key}: wrong type {type(value).__name__}")
    return found


# ---------------------------------------------------------------- answers

def responder(name: str, api_key: str | None, text: str | None = None) -> Callable[[Received], dict]:
    """A MockProvider spec function answering like Ollama: its error for a bad request, else a
    tool call when the client asks for one, else `text` (default `hello from <name>`)."""
    answer_text = text or f"hello from {name}"

    def respond(request: Received) -> dict:
        refused = _auth_problems(request, api_key) if api_key is not None else []
        if refused:
            return {"status": 401, "body": {"error": "unauthorized: " + "; ".join(refused)}}
        found = problems(request, api_key)
        if found:
            return {"status": 400, "body": {"error": "; ".join(found)}}
        body = request.json
        model = body["model"]
        message = _tool_call_message(body) or {"role": "assistant", "content": answer_text}
        if body["stream"]:
            lines = [json.dumps(line, ensure_ascii=False) + "\n" for line in _stream_lines(model, message)]
            return {"status": 200, "headers": {"content-type": NDJSON},
                    "sse_raw": [{"bytes": line, "delay": LINE_GAP_S} for line in lines]}
        return {"status": 200, "body": _final(model, message)}

    return respond


def _tool_call_message(body: dict) -> dict | None:
    tools = body.get("tools") or []
    last = body["messages"][-1]
    # A conversation that ends with a tool result gets its answer in text.
    if not tools or last.get("role") != "user" or "use the tool" not in last.get("content", "").lower():
        return None
    call = {"function": {"name": tools[0]["function"]["name"], "arguments": TOOL_ARGUMENTS}}
    return {"role": "assistant", "content": "", "tool_calls": [call]}


def _stream_lines(model: str, message: dict) -> list[dict]:
    if message.get("tool_calls"):
        pieces = [message]
    else:
        pieces = [{"role": "assistant", "content": piece} for piece in _pieces(message["content"])]
    lines = [{"model": model, "created_at": _now(), "message": piece, "done": False} for piece in pieces]
    return lines + [_final(model, {"role": "assistant", "content": ""})]


def _pieces(text: str) -> list[str]:
    """Word by word, as a model streams; at least two pieces."""
    words = re.findall(r"\S+\s*|\s+", text)
    if len(words) >= 2:
        return words
    middle = max(1, len(text) // 2)
    return [text[:middle], text[middle:]]


def _final(model: str, message: dict) -> dict:
    return {
        "model": model, "created_at": _now(), "message": message,
        "done": True, "done_reason": "stop",
        "total_duration": 182_242_375, "load_duration": 41_295_167,
        "prompt_eval_count": PROMPT_TOKENS, "prompt_eval_duration": 24_573_166,
        "eval_count": COMPLETION_TOKENS, "eval_duration": 115_959_084,
    }


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------- self-check

def _self_check() -> None:
    import sys
    import urllib.request
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mock_provider import MockProvider, Received

    def received(body: dict, headers: dict[str, str] | None = None,
                 path: str = CHAT_PATH) -> Received:
        headers = headers or {}
        return Received(method="POST", path=path, query="", headers=headers,
                        body=json.dumps(body).encode(), json=body, at=time.monotonic(),
                        header_list=list(headers.items()))

    weather = {"name": "get_weather", "arguments": {"city": "Paris"}}
    tool = {"type": "function", "function": {
        "name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    good = {"model": "llama3.3", "stream": False, "format": "json", "tools": [tool],
            "options": {"temperature": 0.2, "num_predict": 64, "stop": ["\n"]},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]},
                {"role": "assistant", "content": "", "tool_calls": [{"function": weather}]},
                {"role": "tool", "content": "18C", "tool_name": "get_weather"},
                {"role": "user", "content": "Use the tool again"}]}
    assert problems(received(good), None) == [], problems(received(good), None)
    assert problems(received(good, {"authorization": "Bearer k"}), "k") == []
    assert problems(received(good, {"authorization": "Bearer k"}), None)
    assert responder("o", "k")(received(good))["status"] == 401
    assert responder("o", "k")(received(good, {"authorization": "Bearer no"}))["status"] == 401
    assert responder("o", None)(received(good, {"x-api-key": "k"}))["status"] == 400

    bad = {"model": "", "stream": "yes", "max_tokens": 5,
           "tools": [{"type": "function", "function": {"name": "f", "strict": True}}],
           "options": {"num_predict": "5", "stop": "END", "max_tokens": 5},
           "messages": [
               {"role": "developer", "content": [{"type": "text", "text": "hi"}], "name": "x",
                "images": ["not base64!"]},
               {"role": "assistant", "content": "",
                "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]}
    found = problems(received(bad, path="/v1/chat/completions"), None)
    for expected in ("path", "max_tokens", "model is required", "stream must be",
                     "messages[0].role", "messages[0].content", "messages[0].name", "images[0]",
                     "arguments must be a JSON object", "strict", "parameters",
                     "options.num_predict", "options.stop", "options.max_tokens"):
        assert any(expected in p for p in found), (expected, found)
    without_stream = {key: value for key, value in good.items() if key != "stream"}
    assert any(p.startswith("stream: missing") for p in problems(received(without_stream), None))
    refused = responder("o", None)(received(bad))
    assert refused["status"] == 400 and isinstance(refused["body"]["error"], str)

    with MockProvider("ollama") as provider:
        provider.set_default(responder("ollama", None))

        def post(body: dict) -> tuple[str, list[dict]]:
            request = urllib.request.Request(provider.url + CHAT_PATH, data=json.dumps(body).encode(),
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as response:
                lines = response.read().decode().splitlines()
                return response.headers["content-type"], [json.loads(line) for line in lines]

        kind, [answer] = post(good)
        assert kind == "application/json" and answer["done"] is True
        assert answer["message"]["tool_calls"] == [{"function": {**weather, "arguments": TOOL_ARGUMENTS}}]
        assert (answer["prompt_eval_count"], answer["eval_count"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)

        plain = {"model": "llama3.3", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        kind, lines = post(plain)
        assert kind == NDJSON and len(lines) >= 3, lines
        assert "".join(line["message"]["content"] for line in lines) == "hello from ollama"
        assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
        assert lines[-1]["eval_count"] == COMPLETION_TOKENS

        kind, lines = post({**good, "stream": True})
        assert kind == NDJSON and lines[0]["message"]["tool_calls"] and lines[-1]["done"]
    print("fake_api.ollama: self-check passed")


if __name__ == "__main__":
    _self_check()
