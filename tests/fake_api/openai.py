"""A fake OpenAI chat completions API (`POST /v1/chat/completions`), and with `responses=True`
its Responses API (`POST /v1/responses`), for end-to-end tests.

It checks each request the way the real API does (its bearer key and no other credential,
known top-level fields, roles, content parts, tool calls each answered by a tool message,
`stream_options` only with `stream`) and answers in OpenAI's format: a 400/401 error saying what
is wrong, or a completion, streamed as `chat.completion.chunk`s when `"stream": true`.

    from fake_api import openai
    provider = MockProvider("gpt").start()
    provider.set_default(openai.responder("gpt", api_key="sk-openai-test"))

Run this file to check the fake itself: `python3 tests/fake_api/openai.py`.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from pathlib import Path
from typing import Any, Callable

try:
    from mock_provider import CREDENTIAL_HEADERS, Received
except ImportError:  # run as a script: tests/ is not on the path yet
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mock_provider import CREDENTIAL_HEADERS, Received

PATH = "/v1/chat/completions"
USAGE_PROMPT_TOKENS = 13
USAGE_COMPLETION_TOKENS = 5
EVENT_GAP_S = 0.02
TOOL_TRIGGER = "use the tool"
TOOL_ARGUMENTS = {"city": "Paris"}
REQUEST_FIELDS = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
    "stream", "stream_options", "stop", "presence_penalty", "frequency_penalty", "logit_bias",
    "logprobs", "top_logprobs", "user", "seed", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "modalities", "audio", "metadata", "store", "reasoning_effort",
    "service_tier", "prediction", "web_search_options", "verbosity", "prompt_cache_key",
    "safety_identifier",
}
ROLES = {"system", "developer", "user", "assistant", "tool"}


# ---------------------------------------------------------------- checking requests

def problems(request: Received, api_key: str | None) -> list[str]:
    """What the real API would refuse in `request`; empty when it would answer it."""
    if request.path == RESPONSES_PATH:
        return responses_problems(request, api_key)
    found = credential_problems(request, api_key)
    if request.method != "POST":
        found.append(f"method {request.method}: chat completions take POST")
    if request.path != PATH:
        found.append(f"path {request.path}: not {PATH}")
    for header in ("anthropic-version", "anthropic-beta"):
        if request.header(header) is not None:
            found.append(f"{header}: another API's header reached OpenAI")
    if not (request.header("content-type") or "").startswith("application/json"):
        found.append("content-type: expected application/json")
    body = request.json
    if not isinstance(body, dict):
        return found + ["body: not a JSON object"]
    return found + body_problems(body)


def credential_problems(request: Received, api_key: str | None) -> list[str]:
    present = [name for name in CREDENTIAL_HEADERS if request.header(name) is not None]
    if api_key is None:
        return [f"{name}: no credential expected" for name in present]
    found = []
    if request.header("authorization") != f"Bearer {api_key}":
        found.append("authorization: Incorrect API key provided")
    return found + [f"{name}: a credential for another provider" for name in present if name != "authorization"]


def body_problems(body: dict) -> list[str]:
    found = [f"Unrecognized request argument supplied: {name}" for name in sorted(body) if name not in REQUEST_FIELDS]
    if not isinstance(body.get("model"), str) or not body["model"]:
        found.append("model: you must provide a model parameter")
    for name in ("max_tokens", "max_completion_tokens"):
        if name in body and (not isinstance(body[name], int) or isinstance(body[name], bool) or body[name] < 1):
            found.append(f"{name}: not a positive integer")
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 2):
        found.append("temperature: not between 0 and 2")
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4
                                                           and all(isinstance(s, str) for s in stop))):
        found.append("stop: a string or up to 4 strings")
    if "stream" in body and not isinstance(body["stream"], bool):
        found.append("stream: not a boolean")
    if "stream_options" in body and body.get("stream") is not True:
        found.append("stream_options: only allowed when stream is true")
    found += tool_problems(body)
    found += message_problems(body.get("messages"))
    return found


def tool_problems(body: dict) -> list[str]:
    found = []
    tools = body.get("tools")
    if tools is None:
        if "tool_choice" in body:
            found.append("tool_choice: only allowed when tools are specified")
        return found
    if not isinstance(tools, list) or not tools:
        return ["tools: a non-empty array"]
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            found.append(f"tools[{i}]: not a function tool")
            continue
        if not isinstance(function.get("name"), str) or not function["name"]:
            found.append(f"tools[{i}].function.name: required")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            found.append(f"tools[{i}].function.parameters: not an object")
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("none", "auto", "required") and not (
            isinstance(choice, dict) and choice.get("type") == "function"
            and isinstance(choice.get("function"), dict) and isinstance(choice["function"].get("name"), str)):
        found.append("tool_choice: not none, auto, required or a function")
    return found


def part_problems(where: str, part: Any) -> list[str]:
    if not isinstance(part, dict):
        return [f"{where}: not an object"]
    kind = part.get("type")
    if kind == "text":
        return [] if isinstance(part.get("text"), str) else [f"{where}.text: required"]
    if kind == "image_url":
        url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
        return [] if isinstance(url, str) and url else [f"{where}.image_url.url: required"]
    if kind == "file":
        file = part.get("file")
        ok = isinstance(file, dict) and (isinstance(file.get("file_data"), str) or isinstance(file.get("file_id"), str))
        return [] if ok else [f"{where}.file: file_data or file_id is required"]
    return [f"{where}.type: {kind!r} is not text, image_url or file"]


def message_problems(messages: Any) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ["messages: a non-empty array is required"]
    found: list[str] = []
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            found.append(f"{where}.role: not one of {sorted(ROLES)}")
            continue
        role = message["role"]
        if open_calls and role != "tool":
            found.append(f"{where}: an assistant message with 'tool_calls' must be followed by tool messages "
                         f"responding to each 'tool_call_id' ({sorted(open_calls)} unanswered)")
            open_calls = set()
        content = message.get("content")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_calls:
                found.append(f"{where}: messages with role 'tool' must be a response to a preceding message with 'tool_calls'")
            open_calls.discard(call_id)
            if not isinstance(content, str):
                found.append(f"{where}.content: a string")
        elif role == "assistant":
            calls = message.get("tool_calls")
            if content is None and not calls:
                found.append(f"{where}: content or tool_calls is required")
            if content is not None and not isinstance(content, str):
                found.append(f"{where}.content: a string or null")
            for j, call in enumerate(calls or []):
                function = call.get("function") if isinstance(call, dict) else None
                if (not isinstance(call, dict) or not isinstance(call.get("id"), str) or call.get("type") != "function"
                        or not isinstance(function, dict) or not isinstance(function.get("arguments"), str)):
                    found.append(f"{where}.tool_calls[{j}]: not a function call with id and arguments text")
                    continue
                open_calls.add(call["id"])
        elif isinstance(content, list):
            for j, part in enumerate(content):
                found += part_problems(f"{where}.content[{j}]", part)
        elif not isinstance(content, str):
            found.append(f"{where}.content: a string or an array of parts")
    if open_calls:
        found.append(f"messages: tool calls {sorted(open_calls)} have no tool message")
    return found


# ---------------------------------------------------------------- the Responses API

RESPONSES_PATH = "/v1/responses"
RESPONSES_FIELDS = {
    "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "stream", "stream_options",
    "tools", "tool_choice", "parallel_tool_calls", "store", "metadata", "previous_response_id", "conversation",
    "background", "include", "reasoning", "text", "truncation", "user", "safety_identifier", "prompt",
    "prompt_cache_key", "service_tier", "top_logprobs", "max_tool_calls",
}
INPUT_ROLES = {"user", "assistant", "system", "developer"}


def responses_problems(request: Received, api_key: str | None) -> list[str]:
    """What OpenAI's Responses API would refuse in `request`."""
    found = credential_problems(request, api_key)
    if request.method != "POST":
        found.append(f"method {request.method}: responses take POST")
    for header in ("anthropic-version", "anthropic-beta"):
        if request.header(header) is not None:
            found.append(f"{header}: another API's header reached OpenAI")
    body = request.json
    if not isinstance(body, dict):
        return found + ["body: not a JSON object"]
    found += [f"Unknown parameter: '{name}'." for name in sorted(body) if name not in RESPONSES_FIELDS]
    if not isinstance(body.get("model"), str) or not body["model"]:
        found.append("model: Missing required parameter: 'model'.")
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 16):
        found.append("max_output_tokens: Integer below minimum value. Expected a value >= 16")
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 2):
        found.append("temperature: not between 0 and 2")
    if "stream_options" in body and body.get("stream") is not True:
        found.append("stream_options: only allowed when stream is true")
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or tool.get("type") not in ("function", "web_search", "file_search", "code_interpreter"):
            found.append(f"tools[{i}]: not a tool")
        elif tool["type"] == "function" and not (isinstance(tool.get("name"), str) and tool["name"]):
            found.append(f"tools[{i}].name: Missing required parameter")
    stored = body.get("previous_response_id") or body.get("conversation") or body.get("prompt")
    return found + input_problems(body.get("input"), stored)


def input_problems(items: Any, stored: Any) -> list[str]:
    if isinstance(items, str):
        return []
    if items is None and stored:
        return []
    if not isinstance(items, list):
        return ["input: a string or an array of input items"]
    found: list[str] = []
    calls: set[str] = set()
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            found.append(f"{where}: not an object")
            continue
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            if item.get("role") not in INPUT_ROLES:
                found.append(f"{where}.role: not one of {sorted(INPUT_ROLES)}")
            content = item.get("content")
            parts = [content] if isinstance(content, str) else content if isinstance(content, list) else None
            if parts is None:
                found.append(f"{where}.content: a string or an array of parts")
                continue
            allowed = {"output_text", "refusal"} if item["role"] == "assistant" else {"input_text", "input_image", "input_file"}
            for j, part in enumerate(p for p in parts if not isinstance(p, str)):
                if not isinstance(part, dict) or part.get("type") not in allowed:
                    found.append(f"{where}.content[{j}].type: not one of {sorted(allowed)}")
        elif kind == "function_call":
            if not all(isinstance(item.get(f), str) for f in ("call_id", "name", "arguments")):
                found.append(f"{where}: a function_call needs call_id, name and arguments")
            else:
                calls.add(item["call_id"])
        elif kind == "function_call_output":
            if item.get("call_id") not in calls:
                found.append(f"{where}: No tool call found for function call output with call_id {item.get('call_id')}.")
            if not isinstance(item.get("output"), (str, list)):
                found.append(f"{where}.output: a string or an array")
        elif kind != "reasoning":
            found.append(f"{where}.type: {kind!r} is not an input item this fake knows")
    return found


def responses_called_tool(body: dict, number: int) -> dict | None:
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
    items = body["input"] if isinstance(body.get("input"), list) else [{"role": "user", "content": body.get("input") or ""}]
    last = items[-1] if items else {}
    if not tools or last.get("type", "message") != "message" or last.get("role") != "user":
        return None
    content = last.get("content")
    text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    if TOOL_TRIGGER not in text.lower():
        return None
    return {"type": "function_call", "id": f"fc_fake{number:04d}", "call_id": f"call_fake{number:04d}",
            "name": tools[0]["name"], "arguments": json.dumps(TOOL_ARGUMENTS), "status": "completed"}


def response_object(response_id: str, body: dict, text: str, tool: dict | None, status: str) -> dict:
    output = [tool] if tool else [{"type": "message", "id": f"msg_{response_id}", "status": "completed", "role": "assistant",
                                   "content": [{"type": "output_text", "text": text, "annotations": []}]}]
    done = status == "completed"
    return {"id": f"resp_{response_id}", "object": "response", "created_at": 1_700_000_000, "status": status,
            "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"), "model": body["model"], "output": output if done else [],
            "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
            "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
            "text": {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools", []), "top_p": body.get("top_p", 1.0), "metadata": {},
            "usage": {"input_tokens": USAGE_PROMPT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": USAGE_COMPLETION_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": USAGE_PROMPT_TOKENS + USAGE_COMPLETION_TOKENS} if done else None}


def responses_events(response_id: str, body: dict, text: str, tool: dict | None) -> list[dict]:
    """OpenAI's event sequence for one message or one function call."""
    events: list[dict] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append({"event": kind, "data": {"type": kind, "sequence_number": len(events), **fields},
                       "delay": EVENT_GAP_S if events else 0})

    emit("response.created", response=response_object(response_id, body, text, tool, "in_progress"))
    emit("response.in_progress", response=response_object(response_id, body, text, tool, "in_progress"))
    if tool:
        emit("response.output_item.added", output_index=0, item={**tool, "arguments": "", "status": "in_progress"})
        for piece in pieces(tool["arguments"], 3):
            emit("response.function_call_arguments.delta", item_id=tool["id"], output_index=0, delta=piece)
        emit("response.function_call_arguments.done", item_id=tool["id"], output_index=0, arguments=tool["arguments"])
        emit("response.output_item.done", output_index=0, item=tool)
    else:
        item_id = f"msg_{response_id}"
        emit("response.output_item.added", output_index=0,
             item={"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []})
        part = {"type": "output_text", "text": "", "annotations": []}
        emit("response.content_part.added", item_id=item_id, output_index=0, content_index=0, part=part)
        for piece in pieces(text, 3):
            emit("response.output_text.delta", item_id=item_id, output_index=0, content_index=0, delta=piece, logprobs=[])
        emit("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=text, logprobs=[])
        emit("response.content_part.done", item_id=item_id, output_index=0, content_index=0, part={**part, "text": text})
        emit("response.output_item.done", output_index=0, item=response_object(response_id, body, text, None, "completed")["output"][0])
    emit("response.completed", response=response_object(response_id, body, text, tool, "completed"))
    return events


# ---------------------------------------------------------------- answering

def responder(name: str, api_key: str | None, text: str | None = None, responses: bool = False) -> Callable[[Received], dict]:
    """A MockProvider spec function answering as OpenAI would; `/v1/responses` only with `responses`,
    as many OpenAI-compatible servers have only chat completions."""
    answer_text = text if text is not None else f"hello from {name}"
    numbers = itertools.count(1)
    lock = threading.Lock()

    def respond(request: Received) -> dict:
        with lock:
            number = next(numbers)
        auth = credential_problems(request, api_key)
        if auth:
            return error_spec(401, "invalid_request_error", "; ".join(auth), "invalid_api_key")
        if request.path == RESPONSES_PATH:
            if not responses:
                return error_spec(404, "invalid_request_error", f"Invalid URL (POST {RESPONSES_PATH})", None)
            found = responses_problems(request, api_key)
            if found:
                return error_spec(400, "invalid_request_error", "; ".join(found), None)
            body = request.json
            tool = responses_called_tool(body, number)
            if body.get("stream") is True:
                return {"status": 200, "sse": responses_events(f"fake{number:04d}", body, answer_text, tool)}
            return {"status": 200, "body": response_object(f"fake{number:04d}", body, answer_text, tool, "completed")}
        found = problems(request, api_key)
        if found:
            return error_spec(400, "invalid_request_error", "; ".join(found), None)
        body = request.json
        tool = called_tool(body, number)
        completion_id = f"chatcmpl-fake{number:04d}"
        if body.get("stream") is True:
            usage = (body.get("stream_options") or {}).get("include_usage") is True
            return {"status": 200, "sse": stream_events(completion_id, body["model"], answer_text, tool, usage)}
        return {"status": 200, "body": completion(completion_id, body["model"], answer_text, tool)}

    return respond


def error_spec(status: int, kind: str, text: str, code: str | None) -> dict:
    return {"status": status, "body": {"error": {"message": text, "type": kind, "param": None, "code": code}}}


def called_tool(body: dict, number: int) -> dict | None:
    """The first declared tool, when the last message is the user's and asks for it."""
    tools = body.get("tools") or []
    last = body["messages"][-1]
    if not tools or last.get("role") != "user":
        return None
    content = last.get("content")
    text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    if TOOL_TRIGGER not in text.lower():
        return None
    return {"id": f"call_fake{number:04d}", "type": "function",
            "function": {"name": tools[0]["function"]["name"], "arguments": json.dumps(TOOL_ARGUMENTS)}}


def usage() -> dict:
    return {"prompt_tokens": USAGE_PROMPT_TOKENS, "completion_tokens": USAGE_COMPLETION_TOKENS,
            "total_tokens": USAGE_PROMPT_TOKENS + USAGE_COMPLETION_TOKENS}


def completion(completion_id: str, model: str, text: str, tool: dict | None) -> dict:
    message = {"role": "assistant", "content": None if tool else text, "refusal": None}
    if tool:
        message["tool_calls"] = [tool]
    return {"id": completion_id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if tool else "stop"}],
            "usage": usage()}


def stream_events(completion_id: str, model: str, text: str, tool: dict | None, with_usage: bool) -> list[dict]:
    def chunk(delta: dict, finish: str | None) -> dict:
        return {"id": completion_id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": "" if not tool else None}, None)]
    if tool:
        chunks.append(chunk({"tool_calls": [{"index": 0, "id": tool["id"], "type": "function",
                                             "function": {"name": tool["function"]["name"], "arguments": ""}}]}, None))
        chunks += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None)
                   for piece in pieces(tool["function"]["arguments"], 3)]
    else:
        chunks += [chunk({"content": piece}, None) for piece in pieces(text, 3)]
    chunks.append(chunk({}, "tool_calls" if tool else "stop"))
    if with_usage:
        chunks.append({**chunk({}, None), "choices": [], "usage": usage()})
    events = [{"data": c, "delay": 0 if i == 0 else EVENT_GAP_S} for i, c in enumerate(chunks)]
    return events + [{"data": "[DONE]", "delay": 0}]


def pieces(text: str, count: int) -> list[str]:
    size = max(1, -(-len(text) // count))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


# ---------------------------------------------------------------- self-check

def _received(body: Any, headers: dict[str, str] | None = None) -> Received:
    base = {"content-type": "application/json", "authorization": "Bearer sk-test"}
    merged = {k: v for k, v in {**base, **(headers or {})}.items() if v is not None}
    return Received(method="POST", path=PATH, query="", headers=merged, body=json.dumps(body).encode(), json=body,
                    at=0.0, header_list=list(merged.items()))


def _self_check() -> None:
    good = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    assert problems(_received(good), "sk-test") == []
    assert problems(_received(good, {"x-api-key": "k"}), "sk-test") == ["x-api-key: a credential for another provider"]
    assert problems(_received(good, {"authorization": "Bearer other"}), "sk-test") == ["authorization: Incorrect API key provided"]
    assert problems(_received(good, {"anthropic-version": "2023-06-01"}), "sk-test")
    assert problems(_received({**good, "system": "x"}), "sk-test") == ["Unrecognized request argument supplied: system"]
    assert problems(_received({**good, "stream_options": {"include_usage": True}}), "sk-test")
    unanswered = {**good, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "user", "content": "x"}]}
    assert any("must be followed by tool messages" in p for p in problems(_received(unanswered), "sk-test"))
    stray = {**good, "messages": [{"role": "tool", "tool_call_id": "c9", "content": "x"}]}
    assert any("preceding message with 'tool_calls'" in p for p in problems(_received(stray), "sk-test"))
    def responses_request(body: Any) -> Received:
        r = _received(body)
        return Received(**{**r.__dict__, "path": RESPONSES_PATH})

    good_turn = {"model": "gpt-4.1", "input": [{"role": "user", "content": "hi"},
                                               {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                                               {"type": "function_call_output", "call_id": "c1", "output": "ok"}]}
    assert problems(responses_request(good_turn), "sk-test") == []
    assert problems(responses_request({"model": "m", "input": "hi", "max_output_tokens": 5}), "sk-test")
    assert problems(responses_request({"model": "m", "input": "hi", "messages": []}), "sk-test") == ["Unknown parameter: 'messages'."]
    orphan = {"model": "m", "input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]}
    assert any("No tool call found" in p for p in problems(responses_request(orphan), "sk-test"))
    print("fake OpenAI API: self-check passed")


if __name__ == "__main__":
    _self_check()
