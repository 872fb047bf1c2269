"""A fake of AWS Bedrock's Converse API (`POST /model/{modelId}/converse` and `converse-stream`)
for the end-to-end tests: it checks requests the way the real service does, SigV4 signature
included (recomputed with botocore's own signer from the request as received), and answers in
its format: JSON, or `application/vnd.amazon.eventstream` frames with their CRCs.

    from fake_api import bedrock
    provider = MockProvider("bedrock").start()
    provider.set_default(bedrock.responder("bedrock", bedrock.CREDENTIALS))
    provider.script(bedrock.error_spec("ThrottlingException"))   # once

Run this file to self-check (no network).
"""

from __future__ import annotations

import binascii
import datetime
import hashlib
import itertools
import json
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

if TYPE_CHECKING:
    from mock_provider import Received

REGION = "us-east-1"
HOST = f"bedrock-runtime.{REGION}.amazonaws.com"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
TOOL_TRIGGER = "use the tool"
TOOL_ARGS = {"city": "Paris"}
EVENT_GAP_S = 0.02


@dataclass(frozen=True)
class AwsCredentials:
    access_key: str
    secret_key: str
    session_token: str | None = None

    def environment(self) -> dict[str, str]:
        """What Envoy's environment holds for its credential provider chain."""
        env = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
               # No instance metadata: the tests stay on loopback.
               "AWS_EC2_METADATA_DISABLED": "true"}
        if self.session_token:
            env["AWS_SESSION_TOKEN"] = self.session_token
        return env


CREDENTIALS = AwsCredentials("AKIAFAKEBEDROCK00001", "fake/secret/key/for/the/bedrock/tests0",
                             "FwoGZXIvYXdzEFAKESESSIONTOKEN//bedrock-tests")

# Other providers' credential headers: a Bedrock request carries SigV4's only.
FOREIGN_CREDENTIAL_HEADERS = ("x-api-key", "api-key", "x-goog-api-key", "proxy-authorization", "cookie")
SIGV4_HEADERS = ("authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256")

_PATH = re.compile(r"^/model/(?P<model>[^/]+)/(?P<method>converse|converse-stream)$")
_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$")
_FIELDS = {
    "request": {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
                "additionalModelRequestFields", "additionalModelResponseFieldPaths", "promptVariables",
                "requestMetadata", "performanceConfig"},
    "inferenceConfig": {"maxTokens", "temperature", "topP", "stopSequences"},
    "block": {"text", "image", "document", "video", "toolUse", "toolResult", "guardContent",
              "cachePoint", "reasoningContent"},
}
_ERRORS = {
    "ThrottlingException": (429, "Too many requests, please wait before trying again."),
    "ServiceUnavailableException": (503, "Bedrock is unable to process your request."),
    "ModelNotReadyException": (429, "Model is not ready to serve inference requests."),
    "AccessDeniedException": (403, "You don't have access to the model with the specified model ID."),
    "UnrecognizedClientException": (403, "The security token included in the request is invalid."),
    "InvalidSignatureException": (403, "The request signature we calculated does not match the signature you provided."),
    "ValidationException": (400, "Malformed input request, please reformat your input and try again."),
    "ModelTimeoutException": (408, "Model has timed out in processing the request."),
    "ModelErrorException": (424, "The model failed to process the request."),
}


def error_spec(error_type: str, message: str | None = None) -> dict:
    status, default = _ERRORS[error_type]
    return {"status": status,
            "headers": {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                        "content-type": "application/json"},
            "body": {"message": message or default}}


# ---------------------------------------------------------------- SigV4

def signature_problems(request: "Received", credentials: AwsCredentials, region: str = REGION,
                       service: str = "bedrock", now: datetime.datetime | None = None) -> list[str]:
    """What AWS would refuse in the request's signature; the signature itself is recomputed with
    botocore's SigV4 signer over the headers the request says it signed."""
    authorization = request.header("authorization")
    if not authorization:
        return ["no authorization header (MissingAuthenticationTokenException)"]
    found = _AUTHORIZATION.match(authorization)
    if not found:
        return [f"authorization is not a SigV4 header: {authorization[:60]!r}"]
    problems = []
    if found["key"] != credentials.access_key:
        problems.append(f"signed with access key {found['key']!r}, not the Envoy environment's")
    if (found["region"], found["service"]) != (region, service):
        problems.append(f"signed for {found['region']}/{found['service']}, not {region}/{service}")
    amz_date = request.header("x-amz-date") or ""
    try:
        signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return problems + [f"x-amz-date {amz_date!r} is not a SigV4 timestamp"]
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if abs((now - signed_at).total_seconds()) > 300:
        problems.append(f"x-amz-date {amz_date} is more than 5 minutes off")
    if found["date"] != amz_date[:8]:
        problems.append("the credential scope's date is not x-amz-date's")
    if request.header("x-amz-security-token") != credentials.session_token:
        problems.append("x-amz-security-token is not the Envoy environment's session token")
    content_sha = request.header("x-amz-content-sha256")
    if content_sha is not None and content_sha != hashlib.sha256(request.body).hexdigest():
        problems.append(f"x-amz-content-sha256 {content_sha!r} is not the body's hash (unsigned payload?)")
    signed = found["signed"].split(";")
    for needed in ("host", "x-amz-date"):
        if needed not in signed:
            problems.append(f"`{needed}` is not signed")
    if credentials.session_token and "x-amz-security-token" not in signed:
        problems.append("x-amz-security-token is not signed")
    missing = [h for h in signed if request.header(h) is None]
    if missing:
        return problems + [f"signed headers missing from the request: {missing}"]
    url = f"http://{request.header('host')}{request.path}" + (f"?{request.query}" if request.query else "")
    aws_request = AWSRequest(method=request.method, url=url, data=request.body,
                             headers={h: request.header(h) for h in signed})
    aws_request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(credentials.access_key, credentials.secret_key, credentials.session_token),
                       service, region)
    if signer.signed_headers(signer.headers_to_sign(aws_request)) != found["signed"]:
        problems.append(f"botocore would sign other headers than {found['signed']}")
    canonical = signer.canonical_request(aws_request)
    expected = signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
    if expected != found["signature"]:
        problems.append("The request signature we calculated does not match the signature you provided. "
                        f"Canonical request:\n{canonical}")
    return problems


# ---------------------------------------------------------------- the request

def _route(request: "Received") -> tuple[str, str] | None:
    found = _PATH.match(request.path)
    return (unquote(found["model"]), found["method"]) if found else None


def problems(request: "Received", credentials: AwsCredentials | None = CREDENTIALS) -> list[str]:
    """What Bedrock would refuse in this request, signature first."""
    found: list[str] = []
    if credentials is not None:
        found += signature_problems(request, credentials)
    for name in FOREIGN_CREDENTIAL_HEADERS:
        if request.header(name) is not None:
            found.append(f"carries another provider's credential header {name}")
    if request.method != "POST":
        found.append(f"method {request.method}")
    route = _route(request)
    if route is None:
        return found + [f"unknown path {request.path!r}"]
    model, _ = route
    if ":" in request.path:
        found.append("the model id's `:` is not escaped in the path, as AWS's SDKs escape it")
    if not (request.header("content-type") or "").startswith("application/json"):
        found.append(f"content-type {request.header('content-type')!r}")
    body = request.json
    if not isinstance(body, dict):
        return found + ["the body is not a JSON object"]
    found += [f"unknown field {k}" for k in body if k not in _FIELDS["request"]]
    found += [f"unknown inferenceConfig field {k}" for k in body.get("inferenceConfig", {})
              if k not in _FIELDS["inferenceConfig"]]
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return found + ["messages must be a non-empty list"]
    if messages[0].get("role") != "user":
        found.append("A conversation must start with a user message.")
    tool_blocks = False
    for i, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant"):
            found.append(f"messages[{i}].role {message.get('role')!r}")
        if i and message.get("role") == messages[i - 1].get("role"):
            found.append("A conversation must alternate between user and assistant roles.")
        content = message.get("content")
        if not isinstance(content, list) or not content:
            found.append(f"messages[{i}].content must be a non-empty list")
            continue
        for j, block in enumerate(content):
            keys = [k for k in block if k in _FIELDS["block"]]
            if len(keys) != 1 or len(block) != 1:
                found.append(f"messages[{i}].content[{j}] must be exactly one block member: {sorted(block)}")
                continue
            kind, value = keys[0], block[keys[0]]
            if kind == "text" and (not isinstance(value, str) or not value):
                found.append(f"messages[{i}].content[{j}].text is empty")
            if kind == "image":
                if value.get("format") not in ("png", "jpeg", "gif", "webp"):
                    found.append(f"image format {value.get('format')!r}")
                try:
                    binascii.a2b_base64(value["source"]["bytes"])
                except (KeyError, TypeError, binascii.Error):
                    found.append("image source is not base64 bytes")
            if kind == "toolUse":
                tool_blocks = True
                if message.get("role") != "assistant" or not isinstance(value.get("input"), dict) \
                        or not value.get("toolUseId") or not value.get("name"):
                    found.append(f"bad toolUse {value}")
            if kind == "toolResult":
                tool_blocks = True
                if message.get("role") != "user" or not value.get("toolUseId") or not isinstance(value.get("content"), list):
                    found.append(f"bad toolResult {value}")
    for k, block in enumerate(body.get("system", [])):
        if not isinstance(block.get("text"), str) or not block["text"]:
            found.append(f"system[{k}] is not a text block")
    tool_config = body.get("toolConfig")
    if tool_blocks and not tool_config:
        found.append("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    if tool_config:
        for tool in tool_config.get("tools", []):
            spec = tool.get("toolSpec", {})
            if not spec.get("name") or not isinstance(spec.get("inputSchema", {}).get("json"), dict):
                found.append(f"bad toolSpec {spec}")
        choice = tool_config.get("toolChoice")
        if choice is not None and (len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool")):
            found.append(f"bad toolChoice {choice}")
    return found


# ---------------------------------------------------------------- answers

def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude with its CRC, string headers, payload, message CRC."""
    encoded = b"".join(struct.pack("B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
                       for k, v in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event(kind: str, payload: dict) -> bytes:
    return frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                 json.dumps(payload).encode())


def exception(kind: str, message: str) -> bytes:
    return frame({":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
                 json.dumps({"message": message}).encode())


def _wants_tool(body: dict) -> str | None:
    tools = (body.get("toolConfig") or {}).get("tools") or []
    last = body["messages"][-1]
    asks = any(TOOL_TRIGGER in b.get("text", "") for b in last.get("content", []))
    return tools[0]["toolSpec"]["name"] if tools and asks and last.get("role") == "user" else None


def stream_events(text: str, tool: str | None, tool_use_id: str) -> list[bytes]:
    usage = {"inputTokens": PROMPT_TOKENS, "outputTokens": COMPLETION_TOKENS,
             "totalTokens": PROMPT_TOKENS + COMPLETION_TOKENS}
    frames = [event("messageStart", {"role": "assistant"})]
    if tool:
        arguments = json.dumps(TOOL_ARGS)
        frames += [event("contentBlockStart", {"contentBlockIndex": 0,
                                               "start": {"toolUse": {"toolUseId": tool_use_id, "name": tool}}})]
        frames += [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}})
                   for piece in (arguments[:5], arguments[5:])]
        reason = "tool_use"
    else:
        words = text.split(" ")
        frames += [event("contentBlockDelta", {"contentBlockIndex": 0,
                                               "delta": {"text": w if i == 0 else " " + w}, "p": "abcdef"[:i + 1]})
                   for i, w in enumerate(words)]
        reason = "end_turn"
    frames += [event("contentBlockStop", {"contentBlockIndex": 0}),
               event("messageStop", {"stopReason": reason}),
               event("metadata", {"usage": usage, "metrics": {"latencyMs": 42}})]
    return frames


def split_oddly(frames: list[bytes]) -> list[bytes]:
    """The frames as body chunks that cut frames (and their preludes) at odd places."""
    data = b"".join(frames)
    cuts = [0]
    for size in itertools.cycle((7, 3, 61, 1, 29)):
        if cuts[-1] + size >= len(data):
            break
        cuts.append(cuts[-1] + size)
    return [data[a:b] for a, b in zip(cuts, cuts[1:] + [len(data)])]


def responder(name: str, credentials: AwsCredentials | None = CREDENTIALS,
              text: str | None = None) -> Callable[["Received"], dict]:
    """A MockProvider spec callable answering as Bedrock: a signature AWS would refuse is a 403
    InvalidSignatureException, another problem a 400 ValidationException; else a tool use (tools
    declared and the last user turn says "use the tool") or `text`, as JSON or event-stream frames."""
    answer_text = text or f"hello from {name}"
    counter = itertools.count(1)

    def respond(request: "Received") -> dict:
        if credentials is not None:
            bad_signature = signature_problems(request, credentials)
            if bad_signature:
                return error_spec("InvalidSignatureException", "; ".join(bad_signature))
        found = problems(request, None)
        if found:
            return error_spec("ValidationException", "; ".join(found))
        _, method = _route(request) or ("", "")
        tool = _wants_tool(request.json)
        tool_use_id = f"tooluse_{name.replace('-', '')}{next(counter):06d}"
        if method == "converse":
            block = ({"toolUse": {"toolUseId": tool_use_id, "name": tool, "input": TOOL_ARGS}}
                     if tool else {"text": answer_text})
            return {"status": 200, "body": {
                "output": {"message": {"role": "assistant", "content": [block]}},
                "stopReason": "tool_use" if tool else "end_turn",
                "usage": {"inputTokens": PROMPT_TOKENS, "outputTokens": COMPLETION_TOKENS,
                          "totalTokens": PROMPT_TOKENS + COMPLETION_TOKENS},
                "metrics": {"latencyMs": 42}}}
        chunks = split_oddly(stream_events(answer_text, tool, tool_use_id))
        return {"status": 200, "headers": {"content-type": "application/vnd.amazon.eventstream"},
                "sse_raw": [{"bytes": c, "delay": EVENT_GAP_S if i % 4 == 3 else 0} for i, c in enumerate(chunks)]}

    return respond


# ---------------------------------------------------------------- self-check

def _self_check() -> None:
    from types import SimpleNamespace

    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()
    path = "/model/" + MODEL.replace(":", "%3A") + "/converse"
    request = AWSRequest(method="POST", url=f"http://{HOST}{path}", data=body,
                         headers={"content-type": "application/json"})
    SigV4Auth(Credentials(CREDENTIALS.access_key, CREDENTIALS.secret_key, CREDENTIALS.session_token),
              "bedrock", REGION).add_auth(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers["host"] = HOST

    def received(body: bytes) -> Any:
        return SimpleNamespace(method="POST", path=path, query="", body=body, json=json.loads(body),
                               headers=headers, header=lambda n: headers.get(n.lower()))

    assert problems(received(body)) == [], problems(received(body))
    tampered = body.replace(b"hi", b"ho")
    assert any("does not match" in p for p in problems(received(tampered)))
    assert binascii.crc32(b"123456789") == 0xCBF43926
    print("bedrock fake: self-check passed")


if __name__ == "__main__":
    _self_check()
