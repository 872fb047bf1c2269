"""Checks the mock provider and the Envoy harness on their own (no wasm filter)."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import harness
from harness import Envoy, free_port, run_envoy_expect_failure
from mock_provider import openai_error

MOCK_SCRIPT = Path(__file__).resolve().parents[1] / "mock_provider.py"

pytestmark = pytest.mark.skipif(not harness.envoy_available(), reason="envoy not on PATH")


def plain_proxy_yaml(admin_port: int, listener_port: int, upstream_port: int) -> str:
    return f"""
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {listener_port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/slow/" }}
                route: {{ cluster: mock, timeout: 0.5s }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: mock, timeout: 10s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: mock
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: mock
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {upstream_port} }}
"""


@pytest.fixture
def proxy(mock, tmp_path):
    """A plain Envoy router in front of one mock provider."""
    provider = mock("openai")
    admin_port, listener_port = free_port(), free_port()
    envoy = Envoy(plain_proxy_yaml(admin_port, listener_port, provider.port), tmp_path,
                  admin_port=admin_port, listener_ports=[listener_port]).start()
    return envoy, provider


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


# ---------------------------------------------------------------- through Envoy

def test_echo_through_envoy(proxy):
    envoy, provider = proxy
    resp = envoy.post_json("/v1/chat/completions", CHAT, headers={"authorization": "Bearer sk-test"})
    assert resp.status == 200
    assert resp.headers["x-mock-provider"] == "openai"
    body = resp.json()
    assert body["model"] == "gpt-4o-mini"
    assert body["choices"][0]["message"]["content"] == "hello from openai"
    received = provider.wait_for_requests(1)[0]
    assert received.method == "POST"
    assert received.path == "/v1/chat/completions"
    assert received.header("Authorization") == "Bearer sk-test"
    assert received.json == CHAT


def test_scripted_429_with_retry_after(proxy):
    envoy, provider = proxy
    provider.script(openai_error(429, "slow down", retry_after=7))
    first = envoy.post_json("/v1/chat/completions", CHAT)
    assert first.status == 429
    assert first.headers["retry-after"] == "7"
    assert first.json()["error"]["code"] == "rate_limit_exceeded"
    # The queue is empty again, so the default echo answers.
    assert envoy.post_json("/v1/chat/completions", CHAT).status == 200


def test_closed_connection_gives_503(proxy):
    envoy, provider = proxy
    provider.script({"close": True})
    resp = envoy.post_json("/v1/chat/completions", CHAT)
    assert resp.status == 503
    assert envoy.stats()["cluster.mock.upstream_rq_total"] >= 1


def test_sse_chunks_arrive_spaced(proxy):
    envoy, provider = proxy
    provider.script({"sse": [{"data": {"n": i}, "delay": 0.15} for i in range(3)]
                            + [{"data": "[DONE]", "delay": 0.15}]})
    status, headers, chunks = envoy.stream("/v1/chat/completions", {**CHAT, "stream": True})
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert b"".join(c for _, c in chunks) == (
        b'data: {"n": 0}\n\ndata: {"n": 1}\n\ndata: {"n": 2}\n\ndata: [DONE]\n\n')
    times = [t for t, _ in chunks]
    assert len(times) >= 4
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.04, gaps


def test_echo_stream_through_envoy(proxy):
    envoy, _ = proxy
    status, headers, chunks = envoy.stream("/v1/chat/completions", {**CHAT, "stream": True})
    text = b"".join(c for _, c in chunks).decode()
    events = [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]
    assert status == 200
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert [p["object"] for p in parsed] == ["chat.completion.chunk"] * 3
    assert parsed[1]["choices"][0]["delta"]["content"] == "hello from openai"
    assert parsed[2]["choices"][0]["finish_reason"] == "stop"


def test_request_body_byte_identical(proxy):
    envoy, provider = proxy
    body = b'{ "model" : "m",\n  "messages":[{"role":"user","content":"caf\xc3\xa9 \\u00e9 \\"q\\""}] ,"x":1.50}  '
    resp = envoy.post_raw("/v1/chat/completions", body, {"content-type": "application/json"})
    assert resp.status == 200
    assert provider.wait_for_requests(1)[0].body == body


def test_many_requests_reuse_upstream_connections(proxy):
    envoy, provider = proxy
    for _ in range(20):
        assert envoy.post_json("/v1/chat/completions", CHAT).status == 200
    stats = envoy.stats()
    assert stats["cluster.mock.upstream_rq_total"] == 20
    assert stats["cluster.mock.upstream_cx_total"] <= 2 * envoy.concurrency


def test_delay_exceeding_upstream_timeout_gives_504(proxy):
    envoy, provider = proxy
    provider.script({"delay": 3})
    started = time.monotonic()
    resp = envoy.post_json("/slow/v1/chat/completions", CHAT)
    assert resp.status == 504
    assert 0.4 < time.monotonic() - started < 2.5
    # The mock is still healthy, and a bare delay still answers with the echo.
    provider.script({"delay": 0.2})
    assert envoy.post_json("/v1/chat/completions", CHAT).json()["model"] == "gpt-4o-mini"


# ---------------------------------------------------------------- harness itself

def test_validate_and_refused_config(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(plain_proxy_yaml(free_port(), free_port(), free_port()))
    ok, output = Envoy.validate(good)
    assert ok, output

    bad_yaml = plain_proxy_yaml(free_port(), free_port(), free_port()).replace(
        "cluster: mock,", "cluster: nowhere,")
    bad = tmp_path / "bad.yaml"
    bad.write_text(bad_yaml)
    assert not Envoy.validate(bad)[0]

    output = run_envoy_expect_failure(bad_yaml, tmp_path / "refused", timeout=20)
    assert output.refused, output
    assert "nowhere" in output


def test_admin_port_parsed_from_yaml():
    assert harness.admin_port_from_yaml(plain_proxy_yaml(1234, 5678, 9012)) == 1234
    assert harness.admin_port_from_yaml("static_resources: {}\n") is None


# ---------------------------------------------------------------- mock alone

def raw_exchange(port: int, data: bytes, timeout: float = 3) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = sock.recv(65536)
            except socket.timeout:
                break
            if not part:
                break
            received += part
        return received


def test_mock_keep_alive_and_chunked_upload(mock):
    provider = mock("anthropic")
    conn = http.client.HTTPConnection("127.0.0.1", provider.port, timeout=5)
    try:
        for i in range(5):
            conn.request("POST", "/v1/chat/completions?i=%d" % i, body=json.dumps(CHAT))
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read())["id"] == f"chatcmpl-mock-{i + 1}"
        pieces = iter([b'{"model":', b'"chunked"}'])
        conn.request("POST", "/up", body=pieces, encode_chunked=True)
        resp = conn.getresponse()
        assert json.loads(resp.read())["model"] == "chunked"
    finally:
        conn.close()
    received = provider.wait_for_requests(6)
    assert [r.query for r in received[:2]] == ["i=0", "i=1"]
    assert received[5].body == b'{"model":"chunked"}'


def test_mock_survives_garbage(mock):
    provider = mock("garbage")
    raw_exchange(provider.port, b"\x00\xff\xfe not http at all\r\n\r\n")
    reply = raw_exchange(provider.port, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert reply.startswith(b"HTTP/1.1 400")
    reply = raw_exchange(provider.port, b"POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400")
    raw_exchange(provider.port, b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nshort", timeout=0.5)
    reply = raw_exchange(provider.port, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200")


def test_mock_repeated_headers_and_reset(mock):
    provider = mock("dup")
    raw_exchange(provider.port, b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\nConnection: close\r\n\r\n")
    received = provider.wait_for_requests(1)[0]
    assert received.header("x-a") == "1, 2"
    assert received.header_values("X-A") == ["1", "2"]
    provider.script({"status": 418, "body": "teapot"})
    provider.reset()
    assert provider.requests == []
    reply = raw_exchange(provider.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200")


def test_mock_cli_schedule(tmp_path):
    port = free_port()
    cli = subprocess.Popen(
        [sys.executable, str(MOCK_SCRIPT), "--name", "openai", "--port", str(port),
         "--schedule", "429,200", "--retry-after", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 10
        while not harness.port_accepts(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        results = [harness.http_request(port, "POST", "/v1/chat/completions",
                                        json.dumps(CHAT).encode(),
                                        {"authorization": "Bearer sk-secret"}, timeout=5)
                   for _ in range(3)]
    finally:
        cli.terminate()
        output, _ = cli.communicate(timeout=10)
    assert [r.status for r in results] == [429, 200, 429]
    assert results[0].headers["retry-after"] == "5"
    assert results[0].json()["error"]["type"] == "rate_limit_error"
    assert "[openai] POST /v1/chat/completions -> 429" in output
    assert "[openai] POST /v1/chat/completions -> 200" in output
    assert "sk-secret" not in output
    assert cli.returncode == 0
