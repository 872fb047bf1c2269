"""A fake of Google's Gemini API (`models/{model}:generateContent` and `:streamGenerateContent`)
for the end-to-end tests: it checks requests the way the real API does and answers in its format.

Plugged into tests/mock_provider.py:

    from fake_api import gemini
    provider = MockProvider("gemini").start()
    provider.set_default(gemini.responder("gemini", api_key="test-key"))
    provider.script(gemini.error_spec(429))   # a scripted Gemini error, once

What the real API is known to refuse, `problems` reports. Authentication is answered as Gemini
does: no key is 403 PERMISSION_DENIED, a wrong key is 400 INVALID_ARGUMENT (reason
API_KEY_INVALID), not a 401. Run this file to self-check (no network).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from mock_provider import Received

BASE_PATH = "/v1beta"
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
EVENT_GAP_S = 0.02
TOOL_TRIGGER = "use the tool"
TOOL_ARGS = {"city": "Paris"}
# A thought signature as Gemini 3 attaches it to a function call (opaque base64).
THOUGHT_SIGNATURE = "CiQBjz1rX6Qw8jvBn1Yb0zAvyWTEVZ4oKAXlV9+PfPfg3mBHLp0="

# Every header a credential could travel in; a Gemini request carries x-goog-api-key only.
CREDENTIAL_HEADERS = ("x-goog-api-key", "authorization", "proxy-authorization", "api-key", "x-api-key")

_PATH = re.compile(
    r"^" + re.escape(BASE_PATH) + r"/models/(?P<model>[^/:?#]+):(?P<method>generateContent|streamGenerateContent)$")
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")

# The fields each message of the API has (its JSON names; the API also takes snake_case).
_FIELDS = {
    "request": {"contents", "tools", "toolConfig", "safetySettings", "systemInstruction",
                "generationConfig", "cachedContent"},
    "content": {"role", "parts"},
    "part": {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
             "codeExecutionResult", "thought", "thoughtSignature", "videoMetadata", "partMetadata",
             "mediaResolution"},
    "blob": {"mimeType", "data"},
    "fileData": {"mimeType", "fileUri"},
    "functionCall": {"id", "name", "args"},
    "functionResponse": {"id", "name", "response", "willContinue", "scheduling", "parts"},
    "tool": {"functionDeclarations", "googleSearchRetrieval", "codeExecution", "googleSearch",
             "urlContext", "computerUse", "fileSearch", "googleMaps"},
    "functionDeclaration": {"name", "description", "behavior", "parameters", "parametersJsonSchema",
                            "response", "responseJsonSchema"},
    "toolConfig": {"functionCallingConfig", "retrievalConfig"},
    "functionCallingConfig": {"mode", "allowedFunctionNames"},
    "generationConfig": {"stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
                         "responseModalities", "candidateCount", "maxOutputTokens", "temperature",
                         "topP", "topK", "seed", "presencePenalty", "frequencyPenalty",
                         "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
                         "thinkingConfig", "imageConfig", "mediaResolution"},
}
_PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
              "codeExecutionResult")
# The JSON Schema keywords Gemini documents for responseJsonSchema.
_SCHEMA_KEYWORDS = {"$id", "$defs", "$ref", "$anchor", "type", "format", "title", "description", "enum",
                    "items", "prefixItems", "minItems", "maxItems", "minimum", "maximum", "anyOf",
                    "oneOf", "properties", "additionalProperties", "required", "propertyOrdering"}
_INT32 = (-2**31, 2**31 - 1)

_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED"}
_STATUS_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}


# ---------------------------------------------------------------- errors

def error_body(code: int, message: str, status: str | None = None,
               details: list[dict] | None = None) -> dict:
    """Google's error body: {"error": {code, message, status[, details]}}."""
    error: dict[str, Any] = {"code": code, "message": message,
                             "status": status or _STATUS_NAMES.get(code, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


def error_spec(status: int, message: str | None = None,
               retry_after: float | int | str | None = None) -> dict:
    """A MockProvider response spec for a Gemini error (e.g. 429 RESOURCE_EXHAUSTED)."""
    spec: dict = {"status": status,
                  "body": error_body(status, message or _STATUS_MESSAGES.get(status, f"error {status}"))}
    if retry_after is not None:
        spec["headers"] = {"retry-after": str(retry_after)}
    return spec


def _auth_failure(request: "Received", api_key: str | None) -> dict | None:
    """The response spec Gemini answers a request's credentials with, if it refuses them."""
    sent = {name: request.header(name) for name in CREDENTIAL_HEADERS if request.header(name) is not None}
    if api_key is None:
        if sent:
            return {"status": 401, "body": error_body(
                401, f"credential header(s) {sorted(sent)} sent to a provider that takes none",
                "UNAUTHENTICATED")}
        return None
    others = sorted(set(sent) - {"x-goog-api-key"})
    if others:
        # Google reads an Authorization header as an OAuth token and refuses anything else.
        return {"status": 401, "body": error_body(
            401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                 f"login cookie or other valid authentication credential. (stray: {others})",
            "UNAUTHENTICATED")}
    if "x-goog-api-key" not in sent:
        return {"status": 403, "body": error_body(
            403, "Method doesn't allow unregistered callers (callers without established identity). "
                 "Please use API Key or other form of API consumer identity to call this API.",
            "PERMISSION_DENIED")}
    if sent["x-goog-api-key"] != api_key:
        return {"status": 400, "body": error_body(
            400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT",
            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
              "domain": "googleapis.com",
              "metadata": {"service": "generativelanguage.googleapis.com"}}])}
    return None


# ---------------------------------------------------------------- request checks

def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _get(obj: dict, name: str) -> Any:
    """A field by its JSON name or its proto (snake_case) name, as the API reads both."""
    return obj[name] if name in obj else obj.get(_snake(name))


def _is_base64(text: str) -> bool:
    """Whether `text` is base64, standard or URL-safe, as proto3 JSON reads bytes."""
    if not re.fullmatch(r"[A-Za-z0-9+/_-]+={0,2}", text):
        return False
    standard = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}" if where else what)

    def known_fields(self, obj: dict, message: str, where: str) -> None:
        allowed = _FIELDS[message]
        for key in obj:
            if key not in allowed and key not in {_snake(a) for a in allowed}:
                at = f" at '{where}'" if where else ""
                self.problems.append(f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.')

    def request(self, path: str, body: Any) -> None:
        if not isinstance(body, dict):
            self.add("", "Invalid JSON payload received: the body is not a JSON object")
            return
        self.known_fields(body, "request", "")
        declared = self.tools(_get(body, "tools"))
        self.tool_config(_get(body, "toolConfig"), declared)
        self.system_instruction(_get(body, "systemInstruction"))
        self.contents(_get(body, "contents"))
        self.generation_config(_get(body, "generationConfig"))

    def contents(self, contents: Any) -> None:
        if not isinstance(contents, list) or not contents:
            self.add("contents", "* GenerateContentRequest.contents: contents is not specified")
            return
        previous: dict | None = None
        for i, content in enumerate(contents):
            where = f"contents[{i}]"
            if not isinstance(content, dict):
                self.add(where, "must be an object")
                previous = None
                continue
            self.known_fields(content, "content", where)
            role = content.get("role")
            if role is None and len(contents) > 1:
                self.add(where, "Please use a valid role: user, model.")
            elif role is not None and role not in ("user", "model"):
                self.add(where, f"Please use a valid role: user, model. (got {role!r})")
            parts = content.get("parts")
            if not isinstance(parts, list) or not parts:
                self.add(where, "contents.parts must not be empty.")
                previous = content
                continue
            for j, part in enumerate(parts):
                self.part(part, f"{where}.parts[{j}]", role or "user")
            self.turn_order(content, previous, where)
            previous = content

    def turn_order(self, content: dict, previous: dict | None, where: str) -> None:
        calls = _function_calls(content)
        responses = _function_responses(content)
        if calls and (previous is None or previous.get("role", "user") != "user"):
            self.add(where, "Please ensure that function call turn comes immediately after a user turn "
                            "or after a function response turn.")
        if not responses:
            return
        called = _function_calls(previous) if previous is not None else []
        if not called or previous is None or previous.get("role") != "model":
            self.add(where, "Please ensure that function response turn comes immediately after a "
                            "function call turn.")
            return
        if len(responses) != len(called):
            self.add(where, "Please ensure that the number of function response parts is equal to the "
                            "number of function call parts of the function call turn.")
        called_names = {call.get("name") for call in called}
        for response in responses:
            if response.get("name") not in called_names:
                self.add(where, f"function response {response.get('name')!r} answers no function call "
                                f"of the previous turn ({sorted(map(str, called_names))})")

    def part(self, part: Any, where: str, role: str) -> None:
        if not isinstance(part, dict):
            self.add(where, "must be an object")
            return
        self.known_fields(part, "part", where)
        data = [key for key in _PART_DATA if _get(part, key) is not None]
        if len(data) != 1:
            self.add(where, f"a part holds exactly one of {', '.join(_PART_DATA)} (got {data or 'none'})")
            return
        kind = data[0]
        value = _get(part, kind)
        signature = _get(part, "thoughtSignature")
        if signature is not None and (not isinstance(signature, str) or not _is_base64(signature)):
            self.add(where, "Invalid value at 'thought_signature' (TYPE_BYTES), Base64 decoding failed")
        if kind == "text":
            if not isinstance(value, str):
                self.add(where, "text must be a string")
            elif not value:
                self.add(where, "Unable to submit request because it has an empty text parameter. "
                                "Add a value to the parameter and try again.")
        elif kind == "inlineData":
            self.blob(value, f"{where}.inlineData")
        elif kind == "fileData":
            if not isinstance(value, dict):
                self.add(f"{where}.fileData", "must be an object")
                return
            self.known_fields(value, "fileData", f"{where}.fileData")
            uri, mime = _get(value, "fileUri"), _get(value, "mimeType")
            if not isinstance(uri, str) or not uri:
                self.add(f"{where}.fileData", "fileUri is required")
            if mime is not None and (not isinstance(mime, str) or "/" not in mime):
                self.add(f"{where}.fileData", f"mimeType {mime!r} is not a MIME type")
        elif kind == "functionCall":
            if role != "model":
                self.add(where, "functionCall parts belong in model turns")
            self.function_call(value, f"{where}.functionCall")
        elif kind == "functionResponse":
            if role != "user":
                self.add(where, "functionResponse parts belong in user turns")
            self.function_response(value, f"{where}.functionResponse")

    def blob(self, blob: Any, where: str) -> None:
        if not isinstance(blob, dict):
            self.add(where, "must be an object")
            return
        self.known_fields(blob, "blob", where)
        mime, data = _get(blob, "mimeType"), blob.get("data")
        if not isinstance(mime, str) or "/" not in mime:
            self.add(where, f"mimeType {mime!r} is not a MIME type")
        if not isinstance(data, str) or not data:
            self.add(where, "data must be a non-empty base64 string")
            return
        if not _is_base64(data):
            self.add(where, f"Invalid value at 'data' (TYPE_BYTES), Base64 decoding failed for {data[:20]!r}")

    def function_call(self, call: Any, where: str) -> None:
        if not isinstance(call, dict):
            self.add(where, "must be an object")
            return
        self.known_fields(call, "functionCall", where)
        if not isinstance(call.get("name"), str) or not call.get("name"):
            self.add(where, "name is required")
        if "args" in call and not isinstance(call["args"], dict):
            self.add(where, "args must be an object (google.protobuf.Struct)")

    def function_response(self, response: Any, where: str) -> None:
        if not isinstance(response, dict):
            self.add(where, "must be an object")
            return
        self.known_fields(response, "functionResponse", where)
        if not isinstance(response.get("name"), str) or not response.get("name"):
            self.add(where, "name is required")
        if not isinstance(response.get("response"), dict):
            self.add(where, "response must be an object (google.protobuf.Struct)")

    def system_instruction(self, instruction: Any) -> None:
        if instruction is None:
            return
        where = "systemInstruction"
        if not isinstance(instruction, dict):
            self.add(where, "must be a Content object")
            return
        self.known_fields(instruction, "content", where)
        parts = instruction.get("parts")
        if not isinstance(parts, list) or not parts:
            self.add(where, "parts must not be empty")
            return
        for j, part in enumerate(parts):
            if not isinstance(part, dict) or set(part) - {"text"} or not isinstance(part.get("text"), str) \
                    or not part["text"]:
                self.add(f"{where}.parts[{j}]", "system instructions take non-empty text parts only")

    def tools(self, tools: Any) -> list[str]:
        declared: list[str] = []
        if tools is None:
            return declared
        if not isinstance(tools, list):
            self.add("tools", "must be a list of Tool")
            return declared
        for i, tool in enumerate(tools):
            where = f"tools[{i}]"
            if not isinstance(tool, dict):
                self.add(where, "must be an object")
                continue
            self.known_fields(tool, "tool", where)
            declarations = _get(tool, "functionDeclarations")
            if declarations is None:
                continue
            if not isinstance(declarations, list):
                self.add(where, "functionDeclarations must be a list")
                continue
            for j, declaration in enumerate(declarations):
                name = self.declaration(declaration, f"{where}.functionDeclarations[{j}]")
                if name in declared:
                    self.add(f"{where}.functionDeclarations[{j}]", f"Duplicate function declaration found: {name}")
                if name:
                    declared.append(name)
        return declared

    def declaration(self, declaration: Any, where: str) -> str | None:
        if not isinstance(declaration, dict):
            self.add(where, "must be an object")
            return None
        self.known_fields(declaration, "functionDeclaration", where)
        name = declaration.get("name")
        if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
            self.add(where, f"Invalid function name {name!r}: must start with a letter or an underscore and "
                            "contain only a-z, A-Z, 0-9, underscores, dots, colons and dashes, at most 64")
            name = None
        description = declaration.get("description")
        if description is not None and not isinstance(description, str):
            self.add(where, "description must be a string")
        legacy, schema = _get(declaration, "parameters"), _get(declaration, "parametersJsonSchema")
        if legacy is not None and schema is not None:
            self.add(where, "parameters and parametersJsonSchema are mutually exclusive")
        if schema is not None:
            if not isinstance(schema, dict) or schema.get("type") != "object":
                self.add(f"{where}.parametersJsonSchema", "must describe an object (type: object)")
            self.schema(schema, f"{where}.parametersJsonSchema")
        return name

    def schema(self, schema: Any, where: str) -> None:
        if isinstance(schema, bool):
            return
        if not isinstance(schema, dict):
            self.add(where, "a schema must be an object or a boolean")
            return
        for key in schema:
            if key not in _SCHEMA_KEYWORDS:
                self.add(where, f"JSON Schema keyword {key!r} is not in Gemini's supported subset")
        if "$ref" in schema and any(not key.startswith("$") for key in schema):
            self.add(where, "If $ref is set on a sub-schema, no other properties, except for those "
                            "starting as a $, may be set.")
        for key in ("properties", "$defs"):
            for name, sub in (schema.get(key) or {}).items() if isinstance(schema.get(key), dict) else ():
                self.schema(sub, f"{where}.{key}.{name}")
        for key in ("items", "additionalProperties"):
            if key in schema:
                self.schema(schema[key], f"{where}.{key}")
        for key in ("anyOf", "oneOf", "prefixItems"):
            for k, sub in enumerate(schema.get(key) or []):
                self.schema(sub, f"{where}.{key}[{k}]")

    def tool_config(self, config: Any, declared: list[str]) -> None:
        if config is None:
            return
        where = "toolConfig"
        if not isinstance(config, dict):
            self.add(where, "must be an object")
            return
        self.known_fields(config, "toolConfig", where)
        calling = _get(config, "functionCallingConfig")
        if calling is None:
            return
        where = f"{where}.functionCallingConfig"
        if not isinstance(calling, dict):
            self.add(where, "must be an object")
            return
        self.known_fields(calling, "functionCallingConfig", where)
        mode = calling.get("mode", "AUTO")
        if mode not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
            self.add(where, f"Invalid value at 'mode': {mode!r}")
        allowed = _get(calling, "allowedFunctionNames")
        if allowed is not None:
            if mode not in ("ANY", "VALIDATED"):
                self.add(where, "allowed_function_names should only be set when the Function Calling Mode is ANY.")
            if not isinstance(allowed, list) or not all(isinstance(n, str) for n in allowed):
                self.add(where, "allowedFunctionNames must be a list of names")
            else:
                for name in allowed:
                    if name not in declared:
                        self.add(where, f"allowed function {name!r} is not declared in tools")

    def generation_config(self, config: Any) -> None:
        if config is None:
            return
        where = "generationConfig"
        if not isinstance(config, dict):
            self.add(where, "must be an object")
            return
        self.known_fields(config, "generationConfig", where)
        for name, low, high in (("temperature", 0.0, 2.0), ("topP", 0.0, 1.0)):
            value = _get(config, name)
            if value is not None and (not _is_number(value) or not low <= value <= high):
                self.add(where, f"{name} must be a number in [{low}, {high}] (got {value!r})")
        for name in ("presencePenalty", "frequencyPenalty"):
            value = _get(config, name)
            if value is not None and not _is_number(value):
                self.add(where, f"{name} must be a number")
        for name in ("maxOutputTokens", "seed", "candidateCount", "topK"):
            value = _get(config, name)
            if value is not None and (not _is_int(value) or not _INT32[0] <= value <= _INT32[1]):
                self.add(where, f"Invalid value at '{_snake(name)}' (TYPE_INT32), {value!r}")
        if (_get(config, "candidateCount") or 1) != 1:
            self.add(where, "candidateCount: this fake answers one candidate")
        stops = _get(config, "stopSequences")
        if stops is not None:
            if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
                self.add(where, "stopSequences must be a list of strings")
            elif len(stops) > 5:
                self.add(where, "stopSequences takes at most 5 sequences")
        mime = _get(config, "responseMimeType")
        if mime is not None and mime not in ("text/plain", "application/json", "text/x.enum"):
            self.add(where, f"responseMimeType {mime!r} is not supported")
        if _get(config, "responseJsonSchema") is not None:
            if _get(config, "responseSchema") is not None:
                self.add(where, "responseJsonSchema and responseSchema are mutually exclusive")
            if mime != "application/json":
                self.add(where, "responseJsonSchema needs responseMimeType application/json")
            self.schema(_get(config, "responseJsonSchema"), f"{where}.responseJsonSchema")


def _parts(content: dict | None) -> list[dict]:
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        return []
    return [part for part in content["parts"] if isinstance(part, dict)]


def _function_calls(content: dict | None) -> list[dict]:
    return [call for part in _parts(content)
            if isinstance(call := _get(part, "functionCall"), dict)]


def _function_responses(content: dict | None) -> list[dict]:
    return [response for part in _parts(content)
            if isinstance(response := _get(part, "functionResponse"), dict)]


def _route(request: "Received") -> tuple[str | None, str | None, list[str]]:
    """(model, method, problems) of the request line."""
    problems = []
    if request.method != "POST":
        problems.append(f"method {request.method} is not allowed: generateContent takes POST")
    match = _PATH.match(request.path)
    if not match:
        problems.append(f"path {request.path!r} is not {BASE_PATH}/models/<model>:generateContent "
                        "or :streamGenerateContent")
        return None, None, problems
    return match["model"], match["method"], problems


def problems(request: "Received", api_key: str | None) -> list[str]:
    """Everything the real Gemini API would refuse in `request`, credentials first."""
    found = []
    auth = _auth_failure(request, api_key)
    if auth is not None:
        found.append(f"auth: {auth['body']['error']['message']}")
    _model, _method, route_problems = _route(request)
    found.extend(route_problems)
    if request.json is None:
        found.append("Invalid JSON payload received: the body is not JSON")
        return found
    checker = _Checker()
    checker.request(request.path, request.json)
    return found + checker.problems


# ---------------------------------------------------------------- answers

def _wants_tool_call(body: dict) -> str | None:
    """The first declared function, when the last user turn asks for the tool."""
    declared = [declaration.get("name")
                for tool in (_get(body, "tools") or [])
                for declaration in (_get(tool, "functionDeclarations") or [])]
    if not declared:
        return None
    users = [content for content in body.get("contents") or [] if content.get("role", "user") == "user"]
    if not users:
        return None
    text = " ".join(part["text"] for part in _parts(users[-1]) if isinstance(part.get("text"), str))
    return declared[0] if TOOL_TRIGGER in text.lower() else None


def _usage(candidates: int) -> dict:
    return {"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": candidates,
            "totalTokenCount": PROMPT_TOKENS + candidates,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}]}


def _response(model: str, response_id: str, parts: list[dict], finish: str | None,
              candidates_tokens: int) -> dict:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": _usage(candidates_tokens),
            "modelVersion": model, "responseId": response_id}


def _pieces(text: str, count: int = 3) -> list[str]:
    """`text` cut at spaces into about `count` pieces that join back to it."""
    words = text.split(" ")
    size = max(1, -(-len(words) // count))
    groups = [" ".join(words[i:i + size]) for i in range(0, len(words), size)]
    return [group if i == 0 else " " + group for i, group in enumerate(groups)]


def _stream_responses(model: str, response_id: str, tool: str | None, text: str) -> list[dict]:
    if tool is not None:
        call = {"functionCall": {"name": tool, "args": TOOL_ARGS}, "thoughtSignature": THOUGHT_SIGNATURE}
        return [_response(model, response_id, [call], None, COMPLETION_TOKENS - 1),
                _response(model, response_id, [{"text": ""}], "STOP", COMPLETION_TOKENS)]
    pieces = _pieces(text)
    responses = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        tokens = COMPLETION_TOKENS if last else min(COMPLETION_TOKENS - 1, i + 1)
        responses.append(_response(model, response_id, [{"text": piece}], "STOP" if last else None, tokens))
    return responses


def responder(name: str, api_key: str | None, text: str | None = None) -> Callable[["Received"], dict]:
    """A MockProvider spec callable answering as Gemini: its errors for what it would refuse, else
    a function call (tools declared and the last user turn says "use the tool") or `text`,
    streamed as `alt=sse` events when the request is a streamGenerateContent."""
    answer_text = text or f"hello from {name}"
    counter = itertools.count(1)

    def respond(request: "Received") -> dict:
        auth = _auth_failure(request, api_key)
        if auth is not None:
            return auth
        found = problems(request, api_key)
        if found:
            return {"status": 400, "body": error_body(400, "\n".join(found), "INVALID_ARGUMENT")}
        model, method, _ = _route(request)
        response_id = f"fake{name.replace('-', '')}{next(counter):06d}"
        tool = _wants_tool_call(request.json)
        if method == "generateContent":
            part = ({"functionCall": {"name": tool, "args": TOOL_ARGS}, "thoughtSignature": THOUGHT_SIGNATURE}
                    if tool is not None else {"text": answer_text})
            return {"status": 200, "body": _response(model, response_id, [part], "STOP", COMPLETION_TOKENS)}
        responses = _stream_responses(model, response_id, tool, answer_text)
        if "alt=sse" in request.query.split("&"):
            return {"status": 200, "headers": {"content-type": "text/event-stream"},
                    "sse_raw": [{"bytes": f"data: {json.dumps(r, ensure_ascii=False)}\r\n\r\n".encode(),
                                 "delay": EVENT_GAP_S if i else 0} for i, r in enumerate(responses)]}
        # Without alt=sse, Gemini streams one JSON array, element by element.
        pieces = [("[" if i == 0 else ",\r\n") + json.dumps(r, ensure_ascii=False)
                  for i, r in enumerate(responses)]
        pieces[-1] += "]"
        return {"status": 200, "headers": {"content-type": "application/json; charset=UTF-8"},
                "sse_raw": [{"bytes": piece.encode(), "delay": EVENT_GAP_S if i else 0}
                            for i, piece in enumerate(pieces)]}

    return respond


# ---------------------------------------------------------------- self-check

def _self_check() -> None:
    import sys
    import time
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(tests))
    from mock_provider import Received

    def received(body: Any, path: str = f"{BASE_PATH}/models/gemini-2.5-flash:generateContent",
                 query: str = "", headers: dict | None = None, method: str = "POST") -> Received:
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        heads = {"x-goog-api-key": "k", "content-type": "application/json"} if headers is None else headers
        return Received(method=method, path=path, query=query, headers=heads, body=raw,
                        json=body if not isinstance(body, bytes) else None, at=time.monotonic())

    # The Rust translator's golden outputs are requests the API takes.
    fixtures = tests.parent / "src" / "provider" / "fixtures" / "gemini"
    for fixture in sorted(fixtures.glob("*.gemini.json")):
        body = json.loads(fixture.read_text())
        if "contents" in body:
            assert problems(received(body), "k") == [], (fixture.name, problems(received(body), "k"))

    simple = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    respond = responder("gemini", "k")
    answer = respond(received(simple))
    assert answer["status"] == 200, answer
    assert answer["body"]["candidates"][0]["content"]["parts"] == [{"text": "hello from gemini"}]
    assert answer["body"]["usageMetadata"]["totalTokenCount"] == PROMPT_TOKENS + COMPLETION_TOKENS

    # Credentials, as Gemini answers them.
    assert respond(received(simple, headers={}))["status"] == 403
    wrong = respond(received(simple, headers={"x-goog-api-key": "other"}))
    assert wrong["status"] == 400
    assert wrong["body"]["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert respond(received(simple, headers={"x-goog-api-key": "k", "authorization": "Bearer k"}))["status"] == 401
    assert responder("local", None)(received(simple, headers={}))["status"] == 200
    assert responder("local", None)(received(simple))["status"] == 401

    # An OpenAI body sent as is.
    openai_body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    refused = respond(received(openai_body))
    assert refused["status"] == 400 and refused["body"]["error"]["status"] == "INVALID_ARGUMENT"
    message = refused["body"]["error"]["message"]
    assert 'Unknown name "model"' in message and 'Unknown name "messages"' in message, message
    assert problems(received(simple, path="/v1/chat/completions"), "k")
    assert problems(received(simple, method="GET"), "k")
    assert problems(received({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}), "k")
    assert problems(received({"contents": [{"role": "user", "parts": [{"text": ""}]}]}), "k")
    assert problems(received({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "%%%"}}]}]}), "k")

    tools = [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}]
    ask = {"contents": [{"role": "user", "parts": [{"text": "Please use the tool for Paris"}]}], "tools": tools}
    call = respond(received(ask))["body"]["candidates"][0]["content"]["parts"][0]
    assert call["functionCall"] == {"name": "get_weather", "args": TOOL_ARGS}, call

    # A function response must answer the previous turn's calls, by name.
    history = ask["contents"] + [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": TOOL_ARGS}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_time", "response": {"output": "1"}}}]}]
    assert any("answers no function call" in p for p in problems(received({**ask, "contents": history}), "k"))
    history[-1] = {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}}]}
    followed = respond(received({**ask, "contents": history}))
    assert followed["body"]["candidates"][0]["content"]["parts"] == [{"text": "hello from gemini"}], followed
    bad_schema = [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}}}]}]
    assert any("pattern" in p for p in problems(received({**simple, "tools": bad_schema}), "k"))

    # Streams: alt=sse events with CRLF framing, usage 11/7 on the last.
    stream_path = f"{BASE_PATH}/models/gemini-2.5-flash:streamGenerateContent"
    streamed = respond(received(simple, path=stream_path, query="alt=sse"))
    events = [json.loads(chunk["bytes"].decode().removeprefix("data: ")) for chunk in streamed["sse_raw"]]
    assert len(events) == 3 and all(chunk["bytes"].endswith(b"\r\n\r\n") for chunk in streamed["sse_raw"])
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events) == "hello from gemini"
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == COMPLETION_TOKENS
    assert [c["delay"] for c in streamed["sse_raw"]] == [0, EVENT_GAP_S, EVENT_GAP_S]
    tool_stream = respond(received(ask, path=stream_path, query="alt=sse"))
    first = json.loads(tool_stream["sse_raw"][0]["bytes"].decode().removeprefix("data: "))
    assert first["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "get_weather"
    array = respond(received(simple, path=stream_path))
    assert json.loads(b"".join(c["bytes"] for c in array["sse_raw"]))[-1]["usageMetadata"]["totalTokenCount"] == 18
    assert error_spec(429)["body"]["error"]["status"] == "RESOURCE_EXHAUSTED"
    print("fake_api.gemini: self-check passed")


if __name__ == "__main__":
    _self_check()
