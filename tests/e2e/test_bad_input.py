"""Every bad input answered: malformed requests from clients and broken answers from providers,
each given a clear OpenAI-style error with the right status or served correctly, never an
ambiguous forward, never a VM panic (docs/reliability.md has the table)."""

from __future__ import annotations

import gzip
import json
import socket
import time
from dataclasses import dataclass, field

import httpx
import pytest

import harness
from envoy_config import Provider, start_gateway

CHAT_PATH = "/v1/chat/completions"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
BODY = json.dumps(CHAT).encode()
JSON = {"content-type": "application/json"}


def nested(levels: int) -> bytes:
    """A chat request whose deepest value sits `levels` deep (the body's object is level 1)."""
    deep = "[" * (levels - 3) + "]" * (levels - 3)
    return b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi","x":%s}]}' % deep.encode()


@dataclass
class ClientCase:
    name: str
    body: bytes = BODY
    headers: dict = field(default_factory=lambda: dict(JSON))
    status: int = 200
    code: str | None = None          # error.code of the answer
    message: str | None = None       # a part of error.message
    param: str | None = None


CLIENT_CASES = [
    ClientCase("text/plain is read as JSON", headers={"content-type": "text/plain"}),
    ClientCase("no content-type is read as JSON", headers={}),
    ClientCase("form content-type is read as JSON", headers={"content-type": "application/x-www-form-urlencoded"}),
    ClientCase("gzip body is decompressed by Envoy", body=gzip.compress(BODY),
               headers={**JSON, "content-encoding": "gzip"}),
    ClientCase("an encoding Envoy cannot undo", body=BODY, headers={**JSON, "content-encoding": "compress"},
               status=415, code="unsupported_content_encoding", message="encoded with `compress`"),
    ClientCase("gzip label on a plain body", headers={**JSON, "content-encoding": "gzip"},
               status=400, code="bad_request", message="not valid JSON"),
    ClientCase("nesting at the limit", body=nested(127)),
    ClientCase("nesting past the limit", body=nested(128), status=400, code="bad_request",
               message="nests deeper than 127 levels"),
    ClientCase("absurd nesting", body=nested(100_000), status=400, code="bad_request",
               message="nests deeper than 127 levels"),
    ClientCase("duplicate model", body=b'{"model":"gpt-4o","model":"o3","messages":[{"role":"user","content":"hi"}]}',
               status=400, code="bad_request", message="duplicate field `model`"),
    ClientCase("duplicate messages", body=b'{"model":"gpt-4o","messages":[],"messages":[{"role":"user","content":"hi"}]}',
               status=400, code="bad_request", message="duplicate field `messages`"),
    ClientCase("invalid UTF-8 in a string", body=b'{"model":"gpt-4o","messages":[{"role":"user","content":"h\xff\xfei"}]}',
               status=400, code="bad_request", message="invalid unicode code point"),
    ClientCase("empty model", body=b'{"model":"","messages":[{"role":"user","content":"hi"}]}',
               status=400, code="bad_request", param="model"),
    ClientCase("model not a string", body=b'{"model":["gpt-4o"],"messages":[{"role":"user","content":"hi"}]}',
               status=400, code="bad_request", param="model"),
    ClientCase("no body", body=b"", status=400, code="bad_request", message="no body"),
    ClientCase("huge header", headers={**JSON, "x-big": "a" * 70_000}, status=431, code="bad_http_request",
               message="http1.headers_too_large"),
    ClientCase("too many headers", headers={**JSON, **{f"x-h{i}": "v" for i in range(120)}}, status=431,
               code="bad_http_request", message="Request Header Fields Too Large"),
]


@pytest.fixture(scope="module")
def client_gateway(tmp_path_factory):
    from mock_provider import MockProvider  # noqa: PLC0415
    a = MockProvider("a").start()
    envoy = start_gateway(tmp_path_factory.mktemp("bad-input"), [Provider("a", a.port, key_env="A_KEY", key="sk-a")])
    yield envoy, a
    envoy.stop()
    a.stop()


def error_of(response: harness.Response) -> dict:
    assert response.headers.get("content-type") == "application/json", (response.status, response.text())
    return response.json()["error"]


@pytest.mark.core
@pytest.mark.parametrize("case", CLIENT_CASES, ids=lambda c: c.name)
def test_a_malformed_request_gets_a_clear_answer(client_gateway, case: ClientCase):
    envoy, a = client_gateway
    a.reset()
    response = envoy.post_raw(CHAT_PATH, case.body, headers=case.headers)
    assert response.status == case.status, response.text()
    if case.status == 200:
        assert response.json()["choices"][0]["message"]["content"] == "hello from a"
        (received,) = a.requests
        assert received.header("content-type") == "application/json", "every provider is told it is JSON"
        assert received.header("content-encoding") is None
        assert json.loads(received.body)["model"] == "gpt-4o"
        return
    error = error_of(response)
    assert error["code"] == case.code and error["type"] == "invalid_request_error", error
    if case.message:
        assert case.message in error["message"], error
    if case.param:
        assert error["param"] == case.param, error
    assert a.requests == [], "a refused request reaches no provider"


def raw_exchange(port: int, request: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection((harness.LOOPBACK, port), timeout=timeout) as conn:
        conn.sendall(request)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = conn.recv(65536)
            if not data:
                break
            received += data
            head, _, body = received.partition(b"\r\n\r\n")
            length = [int(l.split(b":")[1]) for l in head.lower().split(b"\r\n") if l.startswith(b"content-length:")]
            if length and len(body) >= length[0]:
                break
        return received


@pytest.mark.core
def test_a_chunked_body_one_byte_a_chunk_is_read_whole(client_gateway):
    envoy, a = client_gateway
    a.reset()
    chunks = b"".join(b"%x\r\n%s\r\n" % (1, BODY[i:i + 1]) for i in range(len(BODY)))
    request = (b"POST " + CHAT_PATH.encode() + b" HTTP/1.1\r\nhost: llm\r\ncontent-type: application/json\r\n"
               b"transfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    answer = raw_exchange(envoy.listener_ports[0], request)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert json.loads(a.requests[0].body) == CHAT


@pytest.mark.core
@pytest.mark.parametrize("request_bytes, details", [
    (b"GARBAGE\r\n\r\n", "http1.codec_error"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
     "http1.content_length_and_chunked_not_allowed"),
], ids=["bad request line", "content-length and chunked"])
def test_what_envoy_cannot_parse_is_answered_in_the_same_shape(client_gateway, request_bytes, details):
    envoy, a = client_gateway
    a.reset()
    answer = raw_exchange(envoy.listener_ports[0], request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "bad_http_request" and error["type"] == "invalid_request_error"
    assert details in error["message"], error
    assert a.requests == []


@pytest.mark.core
def test_an_h2c_client_is_served(client_gateway):
    envoy, a = client_gateway
    a.reset()
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        response = client.post(f"http://{harness.LOOPBACK}:{envoy.listener_ports[0]}{CHAT_PATH}", content=BODY,
                               headers={"content-type": "text/plain"})
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "hello from a"
    assert a.requests[0].header("content-type") == "application/json"


# ------------------------------------------------------------------ from providers

def anthropic_message(text: str) -> bytes:
    return json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                       "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                       "usage": {"input_tokens": 3, "output_tokens": 2}}).encode()


def openai_completion(text: str) -> bytes:
    return json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}]}).encode()


@dataclass
class ProviderCase:
    name: str
    format: str                      # the faulty provider's format
    spec: dict                       # what it answers
    served_by: str                   # "fallback": failed over; "faulty": its answer reached the client
    log: str | None = None           # what the filter says about it


BIG = 10 * 1024 * 1024    # over the default maxAnswerBytes (8 MiB)
PROVIDER_CASES = [
    ProviderCase("malformed JSON, translated", "anthropic",
                 {"status": 200, "body": b"this is not json {", "headers": JSON}, "fallback",
                 r"answer of `\w+` not understood: not an Anthropic message"),
    ProviderCase("truncated answer, translated", "anthropic",
                 {"status": 200, "body": anthropic_message("cut short"), "truncate_at": 40}, "fallback"),
    ProviderCase("gzip despite identity, translated", "anthropic",
                 {"status": 200, "body": gzip.compress(anthropic_message("zipped")),
                  "headers": {**JSON, "content-encoding": "gzip"}}, "fallback",
                 r"it came encoded with `gzip` although asked for `identity`"),
    ProviderCase("answer larger than maxAnswerBytes, translated", "anthropic",
                 {"status": 200, "body": anthropic_message("x" * BIG)}, "fallback",
                 r"answer of `\w+` is larger than maxAnswerBytes \(8388608\); dropped"),
    ProviderCase("answer of 2 MB, translated", "anthropic",
                 {"status": 200, "body": anthropic_message("y" * 2_000_000)}, "faulty"),
    ProviderCase("an HTML page with 200, OpenAI format", "openai",
                 {"status": 200, "body": b"<html><body>502 Bad Gateway</body></html>",
                  "headers": {"content-type": "text/html"}}, "fallback",
                 r"answer of `\w+` not understood: not JSON: expected value"),
    ProviderCase("truncated answer, OpenAI format", "openai",
                 {"status": 200, "body": openai_completion("cut short"), "truncate_at": 40}, "fallback"),
    ProviderCase("answer larger than maxAnswerBytes, OpenAI format", "openai",
                 {"status": 200, "body": openai_completion("z" * BIG)}, "fallback",
                 r"answer of `\w+` is larger than maxAnswerBytes \(8388608\); dropped"),
    ProviderCase("gzip the client asked for, OpenAI format: passed with its encoding", "openai",
                 {"status": 200, "body": gzip.compress(openai_completion("zipped")),
                  "headers": {**JSON, "content-encoding": "gzip"}}, "faulty"),
]


@pytest.fixture(scope="module")
def provider_gateway(tmp_path_factory):
    """A chain per case (model `case-<i>`): the case's provider, then a healthy fallback."""
    from mock_provider import MockProvider  # noqa: PLC0415
    mocks = {f"p{i}": MockProvider(f"p{i}").start() for i in range(len(PROVIDER_CASES))}
    fallback = MockProvider("fallback").start()
    providers = [Provider(name, m.port, format=case.format, key_env=f"{name.upper()}_KEY", key=f"sk-{name}")
                 for (name, m), case in zip(mocks.items(), PROVIDER_CASES)]
    providers.append(Provider("fallback", fallback.port, key_env="FALLBACK_KEY", key="sk-fallback"))
    chains = {f"chain-{i}": [f"p{i}", "fallback"] for i in range(len(PROVIDER_CASES))}
    models = {f"case-{i}": f"chain-{i}" for i in range(len(PROVIDER_CASES))}
    envoy = start_gateway(tmp_path_factory.mktemp("bad-answers"), providers, chains=chains, models=models,
                          default_chain=None, per_try_timeout="5s", route_timeout="15s")
    yield envoy, mocks, fallback
    envoy.stop()
    for mock in [*mocks.values(), fallback]:
        mock.stop()


@pytest.mark.parametrize("index", range(len(PROVIDER_CASES)), ids=[c.name for c in PROVIDER_CASES])
def test_a_broken_answer_is_handled_and_the_client_told(provider_gateway, index):
    envoy, mocks, fallback = provider_gateway
    case = PROVIDER_CASES[index]
    faulty = mocks[f"p{index}"]
    faulty.script(case.spec)
    fallback.reset()
    response = envoy.post_json(CHAT_PATH, {**CHAT, "model": f"case-{index}"}, timeout=20)
    assert response.status == 200, response.text()[:300]
    assert len(faulty.requests) == 1
    if case.served_by == "fallback":
        assert response.headers["x-llm-provider"] == "fallback"
        assert response.json()["choices"][0]["message"]["content"] == "hello from fallback"
        assert len(fallback.requests) == 1
    else:
        assert response.headers["x-llm-provider"] == f"p{index}"
        assert fallback.requests == []
        body = response.body
        if response.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)   # passed as the provider sent it, its encoding named
        text = json.loads(body)["choices"][0]["message"]["content"]
        assert len(text) in (6, 2_000_000, BIG), len(text)
    if case.log:
        envoy.wait_for_log(case.log)
    assert "panicked" not in envoy.log()


def test_every_provider_broken_gives_one_clear_error(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = start_gateway(tmp_path, [Provider("a", a.port, format="anthropic"), Provider("b", b.port, format="anthropic")])
    a.script({"status": 200, "body": b"not json", "headers": JSON})
    b.script({"status": 200, "body": anthropic_message("x" * BIG)})
    response = envoy.post_json(CHAT_PATH, CHAT, timeout=20)
    assert response.status == 503, response.text()
    error = error_of(response)
    assert error["code"] == "all_providers_unavailable", error
    assert len(a.requests) == 1 and len(b.requests) == 1


@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
def test_a_stream_that_never_ends_is_cut_at_the_deadline_and_counted_against_the_provider(tmp_path, mock, fmt):
    a = mock("a")
    envoy = start_gateway(tmp_path, [Provider("a", a.port, format=fmt)], route_timeout="3s", per_try_timeout="3s")
    first = (b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
             b'"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n') if fmt == "openai" else (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant",'
        b'"model":"claude-x","content":[],"usage":{"input_tokens":1,"output_tokens":0}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}\n\n')
    a.script({"status": 200, "sse_raw": [{"bytes": first}, {"bytes": b"", "delay": 30}]})
    started = time.monotonic()
    with pytest.raises(harness_stream_errors()):
        harness.http_stream(envoy.listener_ports[0], CHAT_PATH, json.dumps({**CHAT, "stream": True}).encode(),
                            headers=JSON, timeout=10)
    assert time.monotonic() - started < 8, "cut at the route's 3 s deadline"
    envoy.wait_for_log(r"the answer of `a` was cut off after it began")
    envoy.wait_for_log(r"provider `a` failed \(200 no_response\)")
    assert "panicked" not in envoy.log()


def harness_stream_errors():
    import http.client  # noqa: PLC0415
    return (http.client.IncompleteRead, http.client.HTTPException, ConnectionError)
