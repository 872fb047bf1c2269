"""A fake Anthropic Messages API (`POST /v1/messages`, and `POST /v1/messages/count_tokens`) for
end-to-end tests.

It checks each request the way the real API does (credential, `anthropic-version`, required
fields, alternating turns, well-formed content blocks and tools, no OpenAI-only fields) and
answers in Anthropic's own format: a 400/401 error listing what is wrong, or a message, streamed
as Anthropic's server-sent events when the request says `"stream": true`.

    from fake_api import anthropic
    provider = MockProvider("claude").start()
    provider.set_default(anthropic.responder("claude", api_key="sk-ant-test"))

Run this file to check the fake itself: `python3 tests/fake_api/anthropic.py`.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import threading
from pathlib import Path
from typing import Any, Callable

try:
    from mock_provider import CREDENTIAL_HEADERS, Received
except ImportError:  # run as a script: tests/ is not on the path yet
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mock_provider import CREDENTIAL_HEADERS, Received

PATH = "/v1/messages"
COUNT_PATH = "/v1/messages/count_tokens"
# The fields `count_tokens` takes: a Messages request without the sampling and output fields.
COUNT_FIELDS = {
    "model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers",
    "context_management", "output_config", "cache_control",
}
USAGE_INPUT_TOKENS = 11
USAGE_OUTPUT_TOKENS = 7
EVENT_GAP_S = 0.02
TOOL_TRIGGER = "use the tool"
TOOL_INPUT = {"city": "Paris"}


# Top-level fields of the Messages API; anything else is refused as the real API does
# ("Extra inputs are not permitted").
REQUEST_FIELDS = {
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
    "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
    "output_config", "container", "mcp_servers", "context_management", "inference_geo",
    "cache_control",
}
IMAGE_MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# ---------------------------------------------------------------- checking requests

def problems(request: Received, api_key: str | None, path: str = PATH) -> list[str]:
    """What the real API would refuse in `request`; empty when it would answer it."""
    found = credential_problems(request, api_key)
    if request.method != "POST":
        found.append(f"method {request.method}: the Messages API takes POST")
    if request.path != path:
        found.append(f"path {request.path}: not {path}")
    version = request.header("anthropic-version")
    if version is None:
        found.append("anthropic-version: header is required")
    elif not VERSION.match(version):
        found.append(f"anthropic-version: {version!r} is not a version date")
    content_type = request.header("content-type") or ""
    if not content_type.startswith("application/json"):
        found.append(f"content-type: {content_type!r}, expected application/json")
    body = request.json
    if not isinstance(body, dict):
        found.append("body: not a JSON object")
        return found
    found += count_problems(body) if path == COUNT_PATH else body_problems(body)
    return found


def count_problems(body: dict) -> list[str]:
    """A `count_tokens` body: the Messages checks of what it may carry, no `max_tokens`."""
    found = [f"{name}: Extra inputs are not permitted" for name in sorted(body) if name not in COUNT_FIELDS]
    if not isinstance(body.get("model"), str) or not body["model"]:
        found.append("model: Field required (a non-empty string)")
    found += system_problems(body.get("system"))
    found += message_problems(body.get("messages"))
    found += tool_problems(body)
    return found


def fake_token_count(body: dict) -> int:
    """The fake's tokenizer: a token per character of text, so a test tells it from an estimate."""
    system = body.get("system")
    count = len(system if isinstance(system, str) else text_of(system))
    return count + sum(len(text_of(m.get("content"))) for m in body["messages"])


def credential_problems(request: Received, api_key: str | None) -> list[str]:
    present = [name for name in CREDENTIAL_HEADERS if request.header(name) is not None]
    if api_key is None:
        return [f"{name}: no credential expected" for name in present]
    found = []
    key = request.header("x-api-key")
    if key is None:
        found.append("x-api-key: header is required")
    elif key != api_key:
        found.append("x-api-key: invalid x-api-key")
    found += [f"{name}: a credential for another provider" for name in present if name != "x-api-key"]
    return found


def body_problems(body: dict) -> list[str]:
    found = [f"{name}: Extra inputs are not permitted" for name in sorted(body) if name not in REQUEST_FIELDS]
    if not isinstance(body.get("model"), str) or not body["model"]:
        found.append("model: Field required (a non-empty string)")
    max_tokens = body.get("max_tokens")
    if not is_int(max_tokens) or max_tokens < 0:
        found.append("max_tokens: Field required (a non-negative integer)")
    found += system_problems(body.get("system"))
    found += message_problems(body.get("messages"))
    found += sampling_problems(body)
    found += tool_problems(body)
    if "metadata" in body:
        metadata = body["metadata"]
        if not isinstance(metadata, dict) or set(metadata) - {"user_id"}:
            found.append("metadata: only `user_id` is accepted")
        elif not isinstance(metadata.get("user_id"), (str, type(None))):
            found.append("metadata.user_id: not a string")
    if "stream" in body and not isinstance(body["stream"], bool):
        found.append("stream: not a boolean")
    if "output_config" in body:
        found += output_config_problems(body["output_config"])
    return found


def system_problems(system: Any) -> list[str]:
    if system is None or isinstance(system, str):
        return []
    if isinstance(system, list):
        found = []
        for i, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                found.append(f"system.{i}: only text blocks")
            else:
                found += block_problems(f"system.{i}", block, "user")
        return found
    return ["system: a string or a list of text blocks"]


def message_problems(messages: Any) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ["messages: Field required (a non-empty list)"]
    found = []
    expected = "user"
    tool_uses: set[str] = set()  # the ids the previous assistant turn called
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            found.append(f"{where}: not an object")
            continue
        found += [f"{where}.{key}: Extra inputs are not permitted" for key in message if key not in ("role", "content")]
        role = message.get("role")
        if role == "system":
            found.append(f"{where}.role: there is no `system` role; use the top-level `system` parameter")
        elif role not in ("user", "assistant"):
            found.append(f"{where}.role: {role!r} is not user or assistant")
        elif role != expected:
            found.append(f"{where}.role: roles must alternate between user and assistant, starting with user "
                         f"(expected {expected})")
        expected = "assistant" if role == "user" else "user"
        final_assistant = role == "assistant" and i == len(messages) - 1
        blocks = content_blocks(where, message.get("content"), found, final_assistant)
        if role == "user":
            found += tool_result_problems(where, blocks, tool_uses)
        tool_uses = {b.get("id") for b in blocks if b.get("type") == "tool_use"} if role == "assistant" else set()
        for j, block in enumerate(blocks):
            found += block_problems(f"{where}.content.{j}", block, role)
    return found


def tool_result_problems(where: str, blocks: list[dict], tool_uses: set[str]) -> list[str]:
    """A user turn after tool calls answers each of them, results first."""
    found = []
    results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
    for tool_use_id in results:
        if tool_use_id not in tool_uses:
            found.append(f"{where}: tool_result for {tool_use_id!r} has no tool_use in the previous assistant turn")
    missing = tool_uses - set(results)
    if missing:
        found.append(f"{where}: tool_use ids without tool_result blocks right after them: {sorted(missing)}")
    is_result = [b.get("type") == "tool_result" for b in blocks]
    if is_result != sorted(is_result, reverse=True):
        found.append(f"{where}: tool_result blocks must come first in the user turn")
    return found


def content_blocks(where: str, content: Any, found: list[str], final_assistant: bool) -> list[dict]:
    """The message's blocks (a string is one text block); records what is malformed."""
    empty = f"{where}.content: all messages must have non-empty content"
    trailing = f"{where}.content: final assistant content cannot end with trailing whitespace"
    if isinstance(content, str):
        if not content.strip() and not final_assistant:
            found.append(empty)
        elif final_assistant and content != content.rstrip():
            found.append(trailing)
        return [{"type": "text", "text": content}] if content.strip() else []
    if not isinstance(content, list) or (not content and not final_assistant):
        found.append(empty)
        return []
    blocks = [b for b in content if isinstance(b, dict)]
    if len(blocks) != len(content):
        found.append(f"{where}.content: every block must be an object")
    last_text = blocks[-1].get("text") if blocks and blocks[-1].get("type") == "text" else None
    if final_assistant and isinstance(last_text, str) and last_text != last_text.rstrip():
        found.append(trailing)
    return blocks


BLOCK_FIELDS = {
    "text": {"text", "cache_control", "citations"},
    "image": {"source", "cache_control"},
    "document": {"source", "cache_control", "citations", "context", "title"},
    "tool_use": {"id", "name", "input", "cache_control"},
    "tool_result": {"tool_use_id", "content", "is_error", "cache_control"},
    "thinking": {"thinking", "signature"},
    "redacted_thinking": {"data"},
}
BLOCKS_BY_ROLE = {
    "user": {"text", "image", "document", "tool_result"},
    "assistant": {"text", "tool_use", "thinking", "redacted_thinking"},
}


def block_problems(where: str, block: dict, role: Any) -> list[str]:
    kind = block.get("type")
    if kind not in BLOCK_FIELDS:
        return [f"{where}.type: unknown content block type {kind!r}"]
    found = [f"{where}.{key}: Extra inputs are not permitted" for key in block
             if key != "type" and key not in BLOCK_FIELDS[kind]]
    if role in BLOCKS_BY_ROLE and kind not in BLOCKS_BY_ROLE[role]:
        found.append(f"{where}: a {kind} block cannot be in a {role} turn")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str) or not text.strip():
            found.append(f"{where}.text: text content blocks must contain non-whitespace text")
    elif kind in ("image", "document"):
        found += source_problems(f"{where}.source", block.get("source"), kind)
    elif kind == "tool_use":
        if not isinstance(block.get("id"), str) or not TOOL_USE_ID.match(block["id"]):
            found.append(f"{where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        if not isinstance(block.get("name"), str) or not block["name"]:
            found.append(f"{where}.name: Field required")
        if not isinstance(block.get("input"), dict):
            found.append(f"{where}.input: Input should be a valid dictionary")
    elif kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str) or not TOOL_USE_ID.match(block["tool_use_id"]):
            found.append(f"{where}.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        content = block.get("content")
        if isinstance(content, list):
            for i, inner in enumerate(content):
                if not isinstance(inner, dict) or inner.get("type") not in ("text", "image", "document"):
                    found.append(f"{where}.content.{i}: tool results hold text, image or document blocks")
                else:
                    found += block_problems(f"{where}.content.{i}", inner, None)
        elif content is not None and not isinstance(content, str):
            found.append(f"{where}.content: a string or a list of blocks")
        if "is_error" in block and not isinstance(block["is_error"], bool):
            found.append(f"{where}.is_error: not a boolean")
    return found


def source_problems(where: str, source: Any, kind: str) -> list[str]:
    if not isinstance(source, dict):
        return [f"{where}: Field required"]
    source_type = source.get("type")
    if source_type == "url":
        ok = isinstance(source.get("url"), str) and set(source) == {"type", "url"}
        return [] if ok else [f"{where}: a url source has exactly `type` and `url`"]
    if source_type == "base64":
        allowed = IMAGE_MEDIA_TYPES if kind == "image" else {"application/pdf"}
        found = []
        if source.get("media_type") not in allowed:
            found.append(f"{where}.media_type: {source.get('media_type')!r} is not one of {sorted(allowed)}")
        if not isinstance(source.get("data"), str) or not source["data"]:
            found.append(f"{where}.data: Field required")
        if set(source) - {"type", "media_type", "data"}:
            found.append(f"{where}: Extra inputs are not permitted")
        return found
    if kind == "document" and source_type == "text":
        return []
    return [f"{where}.type: {source_type!r} is not a source type for {kind}"]


def sampling_problems(body: dict) -> list[str]:
    found = []
    for name in ("temperature", "top_p"):
        if name in body and (not is_number(body[name]) or not 0 <= body[name] <= 1):
            found.append(f"{name}: a number from 0 to 1")
    if "temperature" in body and "top_p" in body:
        found.append("`temperature` and `top_p` cannot both be specified for this model. Please use only one.")
    if "top_k" in body and (not is_int(body["top_k"]) or body["top_k"] < 0):
        found.append("top_k: a non-negative integer")
    if "stop_sequences" in body:
        stops = body["stop_sequences"]
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            found.append("stop_sequences: a list of strings")
        elif any(not s.strip() for s in stops):
            found.append("stop_sequences: each stop sequence must contain non-whitespace")
    return found


def tool_problems(body: dict) -> list[str]:
    found = []
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return ["tools: a list"]
        names = []
        for i, tool in enumerate(tools):
            where = f"tools.{i}"
            if not isinstance(tool, dict):
                found.append(f"{where}: not an object")
                continue
            extra = set(tool) - {"name", "description", "input_schema", "cache_control", "strict", "type"}
            found += [f"{where}.{key}: Extra inputs are not permitted" for key in sorted(extra)]
            name = tool.get("name")
            if not isinstance(name, str) or not TOOL_NAME.match(name):
                found.append(f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
            names.append(name)
            if "description" in tool and not isinstance(tool["description"], str):
                found.append(f"{where}.description: not a string")
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                found.append(f"{where}.input_schema: a JSON schema of type object")
        if len(set(map(str, names))) != len(names):
            found.append("tools: tool names must be unique")
    choice = body.get("tool_choice")
    if choice is not None:
        if not tools:
            found.append("tool_choice: may only be specified while providing tools")
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            found.append("tool_choice.type: one of auto, any, tool, none")
        else:
            allowed = {"type", "disable_parallel_tool_use"} | ({"name"} if choice["type"] == "tool" else set())
            if choice["type"] == "none":
                allowed = {"type"}
            found += [f"tool_choice.{key}: Extra inputs are not permitted" for key in sorted(set(choice) - allowed)]
            if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
                found.append("tool_choice.name: Field required")
            if "disable_parallel_tool_use" in choice and not isinstance(choice["disable_parallel_tool_use"], bool):
                found.append("tool_choice.disable_parallel_tool_use: not a boolean")
    return found


def output_config_problems(config: Any) -> list[str]:
    if not isinstance(config, dict) or set(config) - {"format", "effort"}:
        return ["output_config: only `format` and `effort`"]
    fmt = config.get("format")
    if fmt is None:
        return []
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict) \
            or set(fmt) != {"type", "schema"}:
        return ["output_config.format: {\"type\": \"json_schema\", \"schema\": {...}}"]
    return []


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------- answering

def responder(name: str, api_key: str | None, text: str | None = None) -> Callable[[Received], dict]:
    """A MockProvider spec function answering as Anthropic would."""
    answer_text = text if text is not None else f"hello from {name}"
    numbers = itertools.count(1)
    lock = threading.Lock()

    def respond(request: Received) -> dict:
        with lock:
            number = next(numbers)
        # The real API checks the key before it reads the request.
        auth = credential_problems(request, api_key)
        if auth:
            return error_spec(401, "authentication_error", "; ".join(auth), number)
        counting = request.path == COUNT_PATH
        found = problems(request, api_key, COUNT_PATH if counting else PATH)
        if found:
            return error_spec(400, "invalid_request_error", "; ".join(found), number)
        body = request.json
        if counting:
            return {"status": 200, "body": {"input_tokens": fake_token_count(body)}}
        message_id = f"msg_fake{name.replace('-', '_')}{number:04d}"
        tool = called_tool(body, number)
        if body.get("stream") is True:
            return {"status": 200, "headers": {"request-id": f"req_fake{number:04d}"},
                    "sse": stream_events(message_id, body["model"], answer_text, tool)}
        return {"status": 200, "headers": {"request-id": f"req_fake{number:04d}"},
                "body": message(message_id, body["model"], answer_text, tool)}

    return respond


def error_spec(status: int, kind: str, text: str, number: int) -> dict:
    return {"status": status, "body": {
        "type": "error",
        "error": {"type": kind, "message": text},
        "request_id": f"req_fake{number:04d}",
    }}


def called_tool(body: dict, number: int) -> dict | None:
    """The first declared tool, when the last user message asks for it."""
    tools = body.get("tools") or []
    if not tools:
        return None
    users = [m for m in body["messages"] if m.get("role") == "user"]
    if not users or TOOL_TRIGGER not in text_of(users[-1].get("content")).lower():
        return None
    return {"type": "tool_use", "id": f"toolu_fake{number:04d}", "name": tools[0]["name"], "input": dict(TOOL_INPUT)}


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def message(message_id: str, model: str, text: str, tool: dict | None) -> dict:
    content = [tool] if tool else [{"type": "text", "text": text}]
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": USAGE_INPUT_TOKENS, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": USAGE_OUTPUT_TOKENS},
    }


def stream_events(message_id: str, model: str, text: str, tool: dict | None) -> list[dict]:
    start = message(message_id, model, text, None)
    start.update(content=[], stop_reason=None)
    start["usage"] = {"input_tokens": USAGE_INPUT_TOKENS, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 1}
    events = [("message_start", {"type": "message_start", "message": start})]
    if tool:
        block = dict(tool, input={})
        arguments = json.dumps(tool["input"])
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in ["", *pieces(arguments, 3)]]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in pieces(text, 3)]
    events.append(("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}))
    events.append(("ping", {"type": "ping"}))
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    stop_reason = "tool_use" if tool else "end_turn"
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                     "usage": {"output_tokens": USAGE_OUTPUT_TOKENS}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return [{"event": name, "data": data, "delay": 0 if i == 0 else EVENT_GAP_S}
            for i, (name, data) in enumerate(events)]


def pieces(text: str, count: int) -> list[str]:
    """`text` cut into about `count` non-empty pieces (fewer when it is short)."""
    size = max(1, -(-len(text) // count))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


# ---------------------------------------------------------------- self-check

def _received(body: Any, headers: dict[str, str] | None = None, method: str = "POST", path: str = PATH) -> Received:
    raw = json.dumps(body).encode()
    base = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "sk-ant-test"}
    merged = {k: v for k, v in {**base, **(headers or {})}.items() if v is not None}
    return Received(method=method, path=path, query="", headers=merged, body=raw, json=body, at=0.0,
                    header_list=list(merged.items()))


def _self_check() -> None:
    good = {"model": "claude-sonnet-4-5", "max_tokens": 64, "system": "Be brief.",
            "messages": [{"role": "user", "content": "hi"}]}
    respond = responder("claude", "sk-ant-test")
    assert problems(_received(good), "sk-ant-test") == []
    spec = respond(_received(good))
    assert spec["status"] == 200 and spec["body"]["content"] == [{"type": "text", "text": "hello from claude"}]
    assert spec["body"]["usage"]["input_tokens"] == 11 and spec["body"]["usage"]["output_tokens"] == 7

    assert respond(_received(good, {"x-api-key": "wrong"}))["status"] == 401
    assert respond(_received(good, {"authorization": "Bearer sk-openai"}))["status"] == 401
    assert problems(_received(good, {"x-api-key": None}), None) == []
    assert problems(_received(good), None) == ["x-api-key: no credential expected"]

    def refused(body: Any, headers: dict | None = None, method: str = "POST", path: str = PATH) -> str:
        found = problems(_received(body, headers, method, path), "sk-ant-test", COUNT_PATH if path == COUNT_PATH else PATH)
        assert found, body
        spec = respond(_received(body, headers, method, path))
        assert spec["status"] == 400 and spec["body"]["error"]["type"] == "invalid_request_error", spec
        return "; ".join(found)

    assert "anthropic-version" in refused(good, {"anthropic-version": None})
    count = {k: v for k, v in good.items() if k != "max_tokens"}
    assert respond(_received(count, path=COUNT_PATH)) == {"status": 200, "body": {"input_tokens": len("Be brief.hi")}}
    assert "max_tokens: Extra inputs" in refused(good, path=COUNT_PATH)
    assert "model" in refused({"messages": good["messages"]}, path=COUNT_PATH)
    assert "path" in refused(good, path="/v1/chat/completions")
    assert "method" in refused(good, method="PUT")
    assert "max_tokens" in refused({k: v for k, v in good.items() if k != "max_tokens"})
    assert "Extra inputs" in refused(dict(good, frequency_penalty=0.5))
    assert "no `system` role" in refused(dict(good, messages=[{"role": "system", "content": "x"}, *good["messages"]]))
    two_users = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert "alternate" in refused(dict(good, messages=two_users))
    assert "alternate" in refused(dict(good, messages=[{"role": "assistant", "content": "a"}]))
    blank = [{"role": "user", "content": [{"type": "text", "text": " "}]}]
    assert "non-whitespace" in refused(dict(good, messages=blank))
    assert "media_type" in refused(dict(good, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AA=="}}]}]))
    assert "cannot both" in refused(dict(good, temperature=0.5, top_p=0.5))
    assert "input_schema" in refused(dict(good, tools=[{"name": "f", "parameters": {"type": "object"}}]))
    assert "may only be specified" in refused(dict(good, tool_choice={"type": "auto"}))

    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    ask = dict(good, tools=[tool], messages=[{"role": "user", "content": "Please use the tool."}])
    spec = respond(_received(ask))
    call = spec["body"]["content"][0]
    assert spec["body"]["stop_reason"] == "tool_use" and call["name"] == "get_weather" and call["input"] == TOOL_INPUT
    result = {"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}
    follow_up = dict(ask, messages=[*ask["messages"], {"role": "assistant", "content": [call]},
                                    {"role": "user", "content": [result]}])
    assert respond(_received(follow_up))["body"]["content"][0]["type"] == "text"
    unanswered = dict(follow_up, messages=[*follow_up["messages"][:2], {"role": "user", "content": "and?"}])
    assert "without tool_result" in refused(unanswered)
    orphan = dict(follow_up, messages=[follow_up["messages"][0], {"role": "assistant", "content": "ok"},
                                       follow_up["messages"][2]])
    assert "has no tool_use" in refused(orphan)

    streamed = respond(_received(dict(ask, stream=True)))
    names = [e["event"] for e in streamed["sse"]]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"], names
    deltas = [e["data"]["delta"] for e in streamed["sse"] if e["event"] == "content_block_delta"]
    partial = "".join(delta["partial_json"] for delta in deltas)
    assert json.loads(partial) == TOOL_INPUT
    text_stream = respond(_received(dict(good, stream=True)))["sse"]
    text = "".join(e["data"]["delta"].get("text", "") for e in text_stream if e["event"] == "content_block_delta")
    assert text == "hello from claude" and len([e for e in text_stream if e["event"] == "content_block_delta"]) > 1
    assert all(e["delay"] == EVENT_GAP_S for e in text_stream[1:])
    assert text_stream[-2]["data"]["usage"]["output_tokens"] == 7

    # What the filter's translation produces (its golden fixtures) is what this fake accepts.
    fixtures = Path(__file__).resolve().parents[2] / "src" / "provider" / "fixtures" / "anthropic"
    translated = sorted(fixtures.glob("request_*.anthropic.json"))
    assert translated, fixtures
    for fixture in translated:
        assert problems(_received(json.loads(fixture.read_text())), "sk-ant-test") == [], fixture.name

    _serve_once(respond)
    print("fake_api.anthropic: self-check passed")


def _serve_once(respond: Callable[[Received], dict]) -> None:
    """One real exchange over loopback through MockProvider."""
    import http.client

    from mock_provider import MockProvider

    with MockProvider("claude") as provider:
        provider.set_default(respond)
        conn = http.client.HTTPConnection("127.0.0.1", provider.port, timeout=5)
        body = {"model": "claude-haiku-4-5", "max_tokens": 16, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}
        conn.request("POST", PATH, body=json.dumps(body), headers={
            "content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "sk-ant-test"})
        response = conn.getresponse()
        events = response.read().decode()
        conn.close()
        assert response.status == 200 and response.getheader("content-type") == "text/event-stream", response.status
        assert events.startswith("event: message_start\ndata: {"), events
        assert events.endswith('event: message_stop\ndata: {"type": "message_stop"}\n\n'), events


if __name__ == "__main__":
    _self_check()
