"""The audit line: one access-log JSON line per chat request, written by Envoy's file access log
from the filter state the filter leaves (docs/operations.md#the-audit-log)."""

from __future__ import annotations

import json
import time

import pytest

import harness
from envoy_config import Provider, render
from mock_provider import openai_error

CHAT_PATH = "/v1/chat/completions"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
SECRET = "audit-test-admin-secret-0123"

# What the listener's HttpConnectionManager needs (the render does not write it yet).
AUDIT_FORMAT = "%FILTER_STATE(wasm.llm_failover.audit:PLAIN)%\n"
AUDIT_FILTER = "filter_state['wasm.llm_failover.audit'] != b''"


def audit_access_log(path) -> dict:
    return {
        "name": "envoy.access_loggers.file",
        "filter": {"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                             "expression": AUDIT_FILTER}}},
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                         "path": str(path),
                         "log_format": {"text_format_source": {"inline_string": AUDIT_FORMAT}}},
    }


def gateway_with_audit(tmp_path, providers, **kwargs):
    listener, admin = harness.free_port(), harness.free_port()
    config = json.loads(render(listener_port=listener, admin_port=admin, providers=providers,
                               chains={"default": [p.name for p in providers]}, **kwargs))
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    log_path = tmp_path / "audit.log"
    hcm["access_log"] = [audit_access_log(log_path)]
    envoy = harness.Envoy(json.dumps(config), tmp_path, admin_port=admin, listener_ports=[listener]).start()
    return envoy, log_path


def audit_lines(path, count: int, timeout: float = 5) -> list[dict]:
    """The first `count` lines, once Envoy has written them (it flushes its file on a timer)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [line for line in text.splitlines() if line]
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.1)


@pytest.mark.core
def test_a_failover_is_one_line_with_each_attempt_in_order(tmp_path, mock):
    a, b, c = mock("a"), mock("b"), mock("c")
    prices = {"prices": {"gpt-4o": {"inputPerMTok": 2.5, "outputPerMTok": 10}}}
    envoy, log_path = gateway_with_audit(
        tmp_path, [Provider("a", a.port, key_env="A_KEY", key="sk-a-secret-value"),
                   Provider("b", b.port, key_env="B_KEY", key="sk-b-secret-value"),
                   Provider("c", c.port, attempt_extra=prices)])
    a.script(openai_error(429, retry_after=30))
    b.script(openai_error(503))

    assert envoy.get("/v1/files").status == 404  # not a chat request: no line
    assert envoy.get("/v1/models").status == 200  # the router role's own answer: no line either
    first = envoy.post_json(CHAT_PATH, CHAT)
    assert first.status == 200 and first.headers["x-llm-provider"] == "c"
    second = envoy.post_json(CHAT_PATH, CHAT)     # a and b (its model) cool down: skipped
    assert second.status == 200 and second.headers["x-llm-skipped"] == "a,b"

    lines = audit_lines(log_path, 2)
    assert len(lines) == 2, lines
    failover, skipped = lines
    assert failover["requestId"] and failover["requestId"] != skipped["requestId"]
    assert failover["model"] == "gpt-4o" and failover["chain"] == "default"
    assert failover["profile"] == "default; by=default"
    assert failover["planned"] == ["a", "b", "c"] and failover["skipped"] == []
    assert [(t["attempt"], t["provider"], t["status"], t["outcome"], t.get("reason")) for t in failover["attempts"]] == [
        (1, "a", 429, "failed", "rate_limited"),
        (2, "b", 503, "failed", "server_error"),
        (3, "c", 200, "served", None),
    ]
    assert failover["servedBy"] == "c" and failover["status"] == 200 and failover["outcome"] == "answered"
    # The mock's echo answer reports 5 prompt and 3 completion tokens: 42.5 micro-dollars.
    assert failover["usage"] == {"promptTokens": 5, "completionTokens": 3, "costMicroUsd": 43}

    assert failover["api"] == "chat-completions"
    assert skipped["skipped"] == ["a", "b"] and skipped["planned"] == ["c"]
    assert [(t["attempt"], t["provider"], t["outcome"]) for t in skipped["attempts"]] == [(1, "c", "served")]
    assert skipped["servedBy"] == "c"

    text = log_path.read_text()
    assert "sk-a-secret-value" not in text and "sk-b-secret-value" not in text
    assert "authorization" not in text.lower()


@pytest.mark.core
def test_an_all_down_request_is_one_line_with_every_failure(tmp_path, mock):
    a = mock("a")
    refused = harness.free_port()    # nobody listens: b refuses the connection
    envoy, log_path = gateway_with_audit(tmp_path, [Provider("b", refused), Provider("a", a.port)])
    a.script(openai_error(503))
    answer = envoy.post_json(CHAT_PATH, CHAT)
    assert answer.status == 503
    bad = envoy.post_raw(CHAT_PATH, b"{not json", headers={"content-type": "application/json"})
    assert bad.status == 400

    down, rejected = audit_lines(log_path, 2)
    assert down["outcome"] == "all_providers_unavailable" and down["status"] == 503
    assert down["servedBy"] is None
    assert [(t["provider"], t["status"], t.get("reason")) for t in down["attempts"]] == [
        ("b", None, "connect_failure"), ("a", 503, "server_error")]
    assert rejected["outcome"] == "rejected" and rejected["reason"] == "bad_request" and rejected["status"] == 400
    assert rejected["attempts"] == []


def test_an_anthropic_messages_request_is_a_line_too(tmp_path, mock):
    from fake_api import anthropic

    a, b = mock("a"), mock("b")
    b.set_default(anthropic.responder("b", "sk-ant-b"))
    envoy, log_path = gateway_with_audit(
        tmp_path, [Provider("a", a.port, key_env="A_KEY", key="sk-a-secret-value"),
                   Provider("b", b.port, format="anthropic", key_env="B_KEY", key="sk-ant-b")])
    a.script(openai_error(429, retry_after=30))
    answer = envoy.post_json("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 20,
                                              "messages": [{"role": "user", "content": "hello"}]},
                             {"x-api-key": "sk-ant-client", "anthropic-version": "2023-06-01"})
    assert answer.status == 200 and answer.json()["type"] == "message"
    assert envoy.get("/v1/models").status == 200
    (line,) = audit_lines(log_path, 1)
    assert line["api"] == "anthropic-messages" and line["model"] == "claude-sonnet-4-5"
    assert [(t["provider"], t["outcome"]) for t in line["attempts"]] == [("a", "failed"), ("b", "served")]
    assert line["servedBy"] == "b" and line["usage"]["promptTokens"] == 11
