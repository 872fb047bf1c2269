#!/usr/bin/env python3
"""A scriptable fake LLM provider (OpenAI-style) for tests and demos.

In-process:
    p = MockProvider("openai").start()
    p.script({"status": 429, "headers": {"retry-after": "3"}}, {"echo": True})
    ... send traffic ...
    p.wait_for_requests(2)
    p.stop()

CLI:
    python3 tests/mock_provider.py --name openai --port 18081 --schedule 429,200 --retry-after 5
"""

from __future__ import annotations

import argparse
import collections
import importlib
import itertools
import json
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union

LOOPBACK = "127.0.0.1"
# Every header some provider reads a credential from, and the client's cookie (the filter's
# CREDENTIAL_HEADERS): a provider's fake accepts its own and no other.
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "api-key", "x-api-key",
                      "x-goog-api-key", "cookie")
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024
MAX_CHUNKS = 1_000_000
MAX_TRAILER_LINES = 100
# Closes keep-alive connections nobody uses; long enough that Envoy never
# races a request against our close during a test.
IDLE_TIMEOUT_S = 300.0
STREAM_EVENT_GAP_S = 0.05

Spec = Union[dict, Callable[["Received"], dict]]
DEFAULT_SPEC: dict = {"echo": True}
RESPONSE_KEYS = {"status", "body", "sse", "sse_raw", "close", "truncate_at"}


class BadRequest(Exception):
    """The request could not be framed; answer 400 and drop the connection."""


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: Any
    at: float
    # Every header line as received, in order: [(lower-cased name, value), ...]
    header_list: list[tuple[str, str]] = field(default_factory=list)
    # With TLS: the server name the client asked for in its handshake (SNI).
    sni: str | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.header_list if key == wanted]


# ---------------------------------------------------------------- responses

def openai_error(status: int, message: str | None = None,
                 retry_after: float | int | str | None = None) -> dict:
    """A response spec for an OpenAI-style error body."""
    kind, code = _ERROR_KINDS.get(status, ("api_error", None))
    spec: dict = {
        "status": status,
        "body": {"error": {
            "message": message or f"mock error {status}",
            "type": kind,
            "code": code,
        }},
    }
    if retry_after is not None:
        spec["headers"] = {"retry-after": str(retry_after)}
    return spec


_ERROR_KINDS = {
    400: ("invalid_request_error", "bad_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", "request_timeout"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "overloaded"),
    504: ("server_error", "gateway_timeout"),
}


def echo_completion(provider_name: str, request: Received, number: int) -> dict:
    model = _requested_model(request)
    return {
        "id": f"chatcmpl-mock-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": f"hello from {provider_name}"},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def echo_stream_events(provider_name: str, request: Received, number: int) -> list[dict]:
    model = _requested_model(request)
    created = int(time.time())

    def chunk(delta: dict, finish_reason: str | None) -> dict:
        return {
            "id": f"chatcmpl-mock-{number}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }

    return [
        {"data": chunk({"role": "assistant", "content": ""}, None), "delay": 0},
        {"data": chunk({"content": f"hello from {provider_name}"}, None),
         "delay": STREAM_EVENT_GAP_S},
        {"data": chunk({}, "stop"), "delay": STREAM_EVENT_GAP_S},
        {"data": "[DONE]", "delay": 0},
    ]


def _requested_model(request: Received) -> str:
    if isinstance(request.json, dict) and isinstance(request.json.get("model"), str):
        return request.json["model"]
    return "mock-model"


def _wants_stream(request: Received) -> bool:
    return isinstance(request.json, dict) and request.json.get("stream") is True


def _is_echo(spec: dict) -> bool:
    """Echo when asked, or when the spec says nothing about the response (e.g. only a delay)."""
    return bool(spec.get("echo")) or not (RESPONSE_KEYS & spec.keys())


def _encode_body(body: Any) -> tuple[bytes, str | None]:
    """Returns (bytes, default content-type)."""
    if body is None:
        return b"", None
    if isinstance(body, bytes):
        return body, None
    if isinstance(body, str):
        return body.encode(), "text/plain; charset=utf-8"
    return json.dumps(body).encode(), "application/json"


def _format_event(event: dict) -> bytes:
    data = event.get("data", "")
    if not isinstance(data, str):
        data = json.dumps(data)
    text = ""
    if event.get("event"):
        text += f"event: {event['event']}\n"
    text += f"data: {data}\n\n"
    return text.encode()


def _lower_keys(headers: dict | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (headers or {}).items()}


# ---------------------------------------------------------------- HTTP side

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-provider"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S

    @property
    def provider(self) -> "MockProvider":
        return self.server.provider  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the standard log line is noise; see MockProvider.log_requests

    def setup(self) -> None:
        super().setup()
        self.provider._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.provider._untrack(self.connection)

    def handle_request(self) -> None:
        arrived = time.monotonic()
        try:
            body = self._read_body()
        except (BadRequest, ValueError):
            self._reject_bad_request()
            return
        except OSError:
            self.close_connection = True
            return
        request = self._received(body, arrived)
        try:
            self.provider._serve(self, request)
        except OSError:
            # The client (Envoy) gave up first, e.g. a per-try timeout.
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = handle_request

    # -- request parsing

    def _received(self, body: bytes, arrived: float) -> Received:
        path, _, query = self.path.partition("?")
        header_list = [(k.lower(), v) for k, v in self.headers.items()]
        headers: dict[str, str] = {}
        for name, value in header_list:
            # Repeats are joined as HTTP allows, so a duplicated header is visible.
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return Received(
            method=self.command, path=path, query=query, headers=headers,
            body=body, json=_parse_json(body), at=arrived, header_list=header_list,
            sni=self.provider._sni_of(self.connection),
        )

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked_body()
        length = self.headers.get("content-length")
        if length is None:
            return b""
        size = int(length.strip())
        if size < 0 or size > MAX_BODY_BYTES:
            raise BadRequest("bad content-length")
        return self._read_exact(size)

    def _read_exact(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) != size:
            raise BadRequest("body truncated")
        return data

    def _read_line(self) -> bytes:
        line = self.rfile.readline(MAX_LINE_BYTES)
        if not line.endswith(b"\n"):
            raise BadRequest("unterminated line")
        return line

    def _read_chunked_body(self) -> bytes:
        body = bytearray()
        for _ in range(MAX_CHUNKS):
            size = int(self._read_line().split(b";")[0].strip(), 16)
            if size < 0 or len(body) + size > MAX_BODY_BYTES:
                raise BadRequest("bad chunk size")
            if size == 0:
                self._skip_trailers()
                return bytes(body)
            body += self._read_exact(size)
            if self._read_line().strip():
                raise BadRequest("chunk not followed by CRLF")
        raise BadRequest("too many chunks")

    def _skip_trailers(self) -> None:
        for _ in range(MAX_TRAILER_LINES):
            if not self._read_line().strip():
                return
        raise BadRequest("too many trailers")

    def _reject_bad_request(self) -> None:
        self.close_connection = True
        try:
            self.send_response(400)
            self.send_header("content-length", "0")
            self.send_header("connection", "close")
            self.end_headers()
        except OSError:
            pass

    # -- response writing

    def write_plain(self, status: int, headers: dict[str, str], body: bytes) -> None:
        no_body = status in (204, 304) or 100 <= status < 200
        self.send_response(status)
        for name, value in headers.items():
            if name not in ("content-length", "transfer-encoding"):
                self.send_header(name, value)
        if not no_body:
            self.send_header("content-length", str(len(body)))
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(body)

    def start_chunked(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name not in ("content-length", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        if data:  # an empty chunk would end the stream early
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def reset_connection(self) -> None:
        # Linger 0 makes the close an RST instead of a graceful FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


def _parse_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections when Envoy opens many at once.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return  # peers vanishing is normal for a fake upstream
        super().handle_error(request, client_address)


# ---------------------------------------------------------------- the provider

class MockProvider:
    def __init__(self, name: str, port: int = 0, tls: tuple[str, str] | None = None):
        """`tls`: (certificate file, key file) to serve HTTPS instead of plain HTTP."""
        self.name = name
        self.port = port
        self.tls = tls
        self._sni: dict[int, str | None] = {}
        self.requests: list[Received] = []
        self.log_requests = False
        self._queue: collections.deque[Spec] = collections.deque()
        self._default: Spec = DEFAULT_SPEC
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._counter = itertools.count(1)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __repr__(self) -> str:
        return f"MockProvider({self.name!r}, port={self.port})"

    def __enter__(self) -> "MockProvider":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- lifecycle

    def start(self) -> "MockProvider":
        self._stopping.clear()
        self._server = _Server((LOOPBACK, self.port), _Handler)
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            context.sni_callback = lambda sock, name, _ctx: self._sni.__setitem__(id(sock), name)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.provider = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"mock-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    # -- scripting

    def script(self, *responses: Spec) -> None:
        with self._lock:
            self._queue.extend(responses)

    def set_default(self, spec: Spec) -> None:
        with self._lock:
            self._default = spec

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self._default = DEFAULT_SPEC

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.requests) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{self.name}: expected {n} requests within {timeout}s, "
                        f"got {len(self.requests)}")
                self._arrived.wait(remaining)
            return list(self.requests)

    # -- called from handler threads

    def _sni_of(self, conn: socket.socket) -> str | None:
        with self._lock:
            return self._sni.get(id(conn))

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _record(self, request: Received) -> tuple[Spec, int]:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()
            spec = self._queue.popleft() if self._queue else self._default
            return spec, next(self._counter)

    def _pause(self, seconds: float) -> bool:
        """Sleeps; False if the provider is stopping meanwhile."""
        if seconds and seconds > 0:
            return not self._stopping.wait(seconds)
        return not self._stopping.is_set()

    def _log(self, request: Received, outcome: Any) -> None:
        if self.log_requests:
            print(f"[{self.name}] {request.method} {request.path} -> {outcome}", flush=True)

    def _serve(self, handler: _Handler, request: Received) -> None:
        spec, number = self._record(request)
        if callable(spec):
            spec = spec(request)
        if not self._pause(spec.get("delay", 0)):
            handler.reset_connection()
            return
        if spec.get("close"):
            self._log(request, "closed")
            handler.reset_connection()
            return
        headers = {"x-mock-provider": self.name, **_lower_keys(spec.get("headers"))}
        status = int(spec.get("status", 200))
        if _is_echo(spec):
            if _wants_stream(request):
                events = echo_stream_events(self.name, request, number)
                self._send_sse(handler, request, 200, headers, events)
            else:
                body = echo_completion(self.name, request, number)
                self._send_plain(handler, request, 200, headers, body)
        elif "sse_raw" in spec:
            raw = [(str_or_bytes(c.get("bytes", b"")), c.get("delay", 0)) for c in spec["sse_raw"]]
            self._send_chunks(handler, request, status, headers, raw)
        elif "sse" in spec:
            self._send_sse(handler, request, status, headers, spec["sse"])
        elif "truncate_at" in spec:
            # Announces the whole body's length, sends its first bytes, and resets.
            payload, content_type = _encode_body(spec.get("body", b""))
            headers.setdefault("content-type", content_type or "application/json")
            self._log(request, f"{status}, cut at {spec['truncate_at']} bytes")
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("content-length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload[:spec["truncate_at"]])
            handler.wfile.flush()
            handler.reset_connection()
        else:
            self._send_plain(handler, request, status, headers, spec.get("body", b""))

    def _send_plain(self, handler: _Handler, request: Received, status: int,
                    headers: dict[str, str], body: Any) -> None:
        payload, content_type = _encode_body(body)
        if content_type:
            headers.setdefault("content-type", content_type)
        self._log(request, status)
        handler.write_plain(status, headers, payload)

    def _send_sse(self, handler: _Handler, request: Received, status: int,
                  headers: dict[str, str], events: list[dict]) -> None:
        chunks = [(_format_event(e), e.get("delay", 0)) for e in events]
        headers.setdefault("content-type", "text/event-stream")
        headers.setdefault("cache-control", "no-cache")
        self._send_chunks(handler, request, status, headers, chunks)

    def _send_chunks(self, handler: _Handler, request: Received, status: int,
                     headers: dict[str, str], chunks: list[tuple[bytes, float]]) -> None:
        headers.setdefault("content-type", "text/event-stream")
        self._log(request, status)
        handler.start_chunked(status, headers)
        for data, delay in chunks:
            if not self._pause(delay):
                handler.reset_connection()
                return
            handler.write_chunk(data)
        handler.end_chunked()


def str_or_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


# ---------------------------------------------------------------- CLI

def schedule_spec(statuses: list[int], retry_after: str | None,
                  answer: Callable[[Received], dict] | None = None) -> Callable[[Received], dict]:
    """A default spec that cycles through statuses; 200 means echo (or `answer`)."""
    cycle = itertools.cycle(statuses)
    lock = threading.Lock()

    def next_spec(request: Received) -> dict:
        with lock:
            status = next(cycle)
        if status == 200:
            return answer(request) if answer else {"echo": True}
        return openai_error(status, retry_after=retry_after if status == 429 else None)

    return next_spec


def parse_schedule(text: str) -> list[int]:
    statuses = [int(s) for s in text.split(",") if s.strip()]
    if not statuses or any(not 100 <= s <= 599 for s in statuses):
        raise argparse.ArgumentTypeError(f"bad schedule: {text!r}")
    return statuses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake OpenAI-style LLM provider")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--schedule", type=parse_schedule, default=None,
                        help="comma list of statuses, repeated cyclically (200 = echo)")
    parser.add_argument("--retry-after", default=None,
                        help="retry-after header value for scheduled 429s")
    parser.add_argument("--format", choices=["openai", "anthropic", "gemini", "ollama"], default="openai",
                        help="the API the fake speaks (tests/fake_api); openai echoes")
    parser.add_argument("--api-key", default=None, help="the key a non-openai fake expects")
    args = parser.parse_args(argv)

    provider = MockProvider(args.name, args.port)
    provider.log_requests = True
    answer = None
    if args.format != "openai":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        fake = importlib.import_module(f"fake_api.{args.format}")
        answer = fake.responder(args.name, args.api_key)
        provider.set_default(answer)
    if args.schedule:
        provider.set_default(schedule_spec(args.schedule, args.retry_after, answer))

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())

    provider.start()
    print(f"[{args.name}] listening on {provider.url}", flush=True)
    while not done.wait(0.5):
        pass
    provider.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
