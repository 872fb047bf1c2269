"""Routing policies end to end, in a real Envoy with 2 workers: profiles by route, header, model
and classifier; tiers; context windows (before and after a provider says the context is too
long); error-aware failover; hedging; the overall deadline."""

from __future__ import annotations

import pytest

import json
import time

import harness
from envoy_config import Provider, start_gateway
from mock_provider import openai_error

CHAT_PATH = "/v1/chat/completions"
NAMES = ["qwen", "r1", "llama", "big"]
ROUTER = {
    "chatPaths": ["/v1/chat/completions", "/team-coder/v1/chat/completions", "/team-reasoner/v1/chat/completions"],
    "profiles": {
        "coder": {"normal": ["qwen", "r1"], "fast": ["llama"], "high": ["big", "qwen"]},
        "reasoner": {"normal": ["r1", "qwen"]},
        "general": {"normal": ["llama", "qwen"]},
    },
    "models": {"my-coder": "coder"},
    "defaultChain": "general",
    "classifier": {"default": "general", "rules": [
        {"profile": "coder", "keywords": ["코드", "함수", "버그", "function", "bug", "compile"]},
        {"profile": "reasoner", "keywords": ["증명", "왜", "prove", "step by step"]},
    ]},
    "trustedHeaders": {"sources": ["127.0.0.0/8"]},
}


def gateway(tmp_path, mock, router=None, windows=None, **kwargs):
    """`windows`: provider -> its context window."""
    mocks = {name: mock(name) for name in NAMES}
    providers = [Provider(n, m.port, attempt_extra={"contextWindow": windows[n]} if n in (windows or {}) else {})
                 for n, m in mocks.items()]
    envoy = start_gateway(tmp_path, providers, chains={},
                          default_chain=None, router_extra={**ROUTER, **(router or {})}, **kwargs)
    return envoy, mocks


def chat(envoy, text, path=CHAT_PATH, model="gpt-4o", headers=None, timeout=10, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return envoy.post_json(path, body, headers=headers, timeout=timeout)


def test_two_routes_with_different_profiles_share_one_filter_config(tmp_path, mock):
    envoy, mocks = gateway(tmp_path, mock, route_profiles={"/team-coder/": "coder", "/team-reasoner/": "reasoner"})
    coder = chat(envoy, "hello", path="/team-coder/v1/chat/completions")
    reasoner = chat(envoy, "hello", path="/team-reasoner/v1/chat/completions")
    assert (coder.status, reasoner.status) == (200, 200), coder.text()
    assert coder.headers["x-llm-provider"] == "qwen" and coder.headers["x-llm-profile"] == "coder; by=route"
    assert reasoner.headers["x-llm-provider"] == "r1" and reasoner.headers["x-llm-profile"] == "reasoner; by=route"


def test_coding_and_reasoning_prompts_take_different_first_providers(tmp_path, mock):
    envoy, mocks = gateway(tmp_path, mock)
    cases = [
        ("이 함수의 버그를 고쳐줘", "qwen", "coder; by=classifier"),
        ("Why does this compile error happen in my function?", "qwen", "coder; by=classifier"),
        ("이 정리를 단계별로 증명해줘", "r1", "reasoner; by=classifier"),
        ("Prove it step by step", "r1", "reasoner; by=classifier"),
        ("What is a good name for a cat?", "llama", "general; by=classifier"),
    ]
    for text, provider, profile in cases:
        response = chat(envoy, text)
        assert response.status == 200, response.text()
        assert (response.headers["x-llm-provider"], response.headers["x-llm-profile"]) == (provider, profile), text
    alias = chat(envoy, "What is a good name for a cat?", model="my-coder")
    assert alias.headers["x-llm-profile"] == "coder; by=model"


def test_a_trusted_caller_chooses_profile_and_tier_others_cannot(tmp_path, mock):
    envoy, mocks = gateway(tmp_path, mock)
    trusted = chat(envoy, "hello", headers={"x-llm-profile": "coder", "x-llm-tier": "high"})
    assert trusted.headers["x-llm-profile"] == "coder/high; by=header"
    assert trusted.headers["x-llm-provider"] == "big"
    fast = chat(envoy, "hello", headers={"x-llm-profile": "coder", "x-llm-tier": "fast"})
    assert fast.headers["x-llm-provider"] == "llama"
    assert all(r.header("x-llm-profile") is None and r.header("x-llm-tier") is None
               for m in mocks.values() for r in m.requests), "the headers are not passed on"
    unknown = chat(envoy, "hello", headers={"x-llm-profile": "ghost"})
    assert unknown.status == 400 and unknown.json()["error"]["code"] == "unknown_profile"

    # The same headers from a network that is not trusted are removed unread.
    untrusted, mocks2 = gateway(tmp_path / "untrusted", mock, router={"trustedHeaders": {"sources": ["10.0.0.0/8"]}})
    ignored = chat(untrusted, "hello", headers={"x-llm-profile": "coder", "x-llm-tier": "high"})
    assert ignored.headers["x-llm-profile"] == "general; by=classifier"
    assert all(r.header("x-llm-profile") is None for m in mocks2.values() for r in m.requests)


def test_a_request_too_long_for_a_window_skips_that_provider_before_trying(tmp_path, mock):
    envoy, mocks = gateway(tmp_path, mock, windows={"qwen": 4096, "r1": 131072})
    long_code = "Fix the bug in this function: " + "x = compute(x) + 1\n" * 2000   # about 10k tokens
    response = chat(envoy, long_code)
    assert response.status == 200, response.text()
    assert response.headers["x-llm-provider"] == "r1"
    assert response.headers["x-llm-skipped"] == "qwen"
    assert mocks["qwen"].requests == []


@pytest.mark.reads_error_answers
def test_a_context_length_error_skips_the_small_context_fallback(tmp_path, mock):
    """The primary says the context is too long: the request goes on only to a provider with a
    larger window, never to the smaller fallback next in the chain."""
    router = {"profiles": {**ROUTER["profiles"], "coder": {"normal": ["qwen", "llama", "big"]}}}
    envoy, mocks = gateway(tmp_path, mock, router=router, windows={"qwen": 32768, "llama": 8192, "big": 200000})
    mocks["qwen"].script({"status": 400, "body": {"error": {
        "message": "This model's maximum context length is 32768 tokens. However, your messages resulted in 40211 tokens.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}})
    response = chat(envoy, "fix this bug")
    assert response.status == 200, response.text()
    assert response.headers["x-llm-provider"] == "big"
    assert mocks["llama"].requests == [], "the smaller fallback is not tried"
    assert len(mocks["qwen"].requests) == 1
    assert mocks["big"].requests[0].json["messages"][0]["content"] == "fix this bug"
    assert response.headers["x-llm-skipped"] == "qwen,llama"
    stats = envoy.stats()
    assert stats.get("wasmcustom.llm_failover.provider.qwen.failover.server_error", 0) == 0, "not qwen's fault"

    # Nobody larger left: the client gets the context error.
    mocks["big"].script({"status": 400, "body": {"error": {"message": "maximum context length exceeded",
                                                           "type": "invalid_request_error", "code": "context_length_exceeded"}}})
    mocks["qwen"].script({"status": 400, "body": {"error": {"message": "maximum context length is 32768 tokens",
                                                            "type": "invalid_request_error", "code": "context_length_exceeded"}}})
    refused = chat(envoy, "fix this bug")
    assert refused.status == 400, refused.text()
    assert refused.json()["error"]["code"] == "context_length_exceeded"


def test_a_content_policy_refusal_is_returned_without_failover(tmp_path, mock):
    envoy, mocks = gateway(tmp_path, mock)
    refusal = {"error": {"message": "Your request was rejected as a result of our safety system.",
                         "type": "invalid_request_error", "param": None, "code": "content_policy_violation"}}
    mocks["llama"].script({"status": 400, "body": refusal})
    response = chat(envoy, "hello")
    assert response.status == 400
    assert response.json()["error"]["code"] == "content_policy_violation"
    assert mocks["qwen"].requests == [], "no other provider is asked"
    assert chat(envoy, "hello").headers["x-llm-provider"] == "llama", "and llama is not blamed"


@pytest.mark.reads_error_answers
def test_insufficient_quota_cools_long_unlike_a_rate_limit(tmp_path, mock):
    envoy, mocks = gateway(tmp_path, mock)
    mocks["llama"].script({"status": 429, "body": {"error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}})
    assert chat(envoy, "hello").headers["x-llm-provider"] == "qwen"
    envoy.wait_for_log(r"provider `llama` failed \(429 quota_exhausted\) on attempt 1; cooling down 3600s")
    assert chat(envoy, "hello").headers["x-llm-skipped"] == "llama"


@pytest.mark.reads_error_answers
def test_an_error_event_before_any_content_fails_over(tmp_path, mock):
    envoy, mocks = gateway(tmp_path, mock)
    mocks["llama"].script({"sse": [{"data": {"error": {"message": "The server had an error while processing your request.",
                                                        "type": "server_error"}}}]})
    status, headers, chunks = harness.http_stream(envoy.listener_ports[0], CHAT_PATH, json.dumps(
        {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hello"}]}).encode(),
        {"content-type": "application/json"})
    body = b"".join(c for _, c in chunks)
    assert status == 200
    assert headers["x-llm-provider"] == "qwen", headers
    assert b"hello from qwen" in body and b"server had an error" not in body
    envoy.wait_for_log(r"`llama` sent an error event \(server_error\) before any content; answering 503")


HEDGED = {"profiles": {**ROUTER["profiles"],
                      "general": {"normal": ["llama", "qwen"], "hedgeAfter": "300ms"},
                      "coder": {"normal": ["qwen", "llama"], "hedgeAfter": "300ms"}}}


def hedged_gateway(tmp_path, mock, profiles=None, attempt_vm=None, **provider_fields):
    """Each provider with a key of its own, so a hedge that reached the wrong provider's
    attempt role shows in the key the mock received."""
    mocks = {name: mock(name) for name in NAMES}
    providers = [Provider(n, m.port, key_env=f"{n.upper()}_KEY", key=f"sk-{n}", **provider_fields.get(n, {}))
                 for n, m in mocks.items()]
    router = {**ROUTER, "profiles": {**HEDGED["profiles"], **(profiles or {})}}
    envoy = start_gateway(tmp_path, providers, chains={}, default_chain=None, per_try_timeout="10s",
                          router_extra=router, attempt_vm=attempt_vm)
    return envoy, mocks


@pytest.mark.core
def test_a_hedged_slow_primary_loses_to_a_fast_fallback(tmp_path, mock):
    """Envoy sends a hedge to the cluster of the attempt it hedges: the order cluster, where
    `previous_priorities` moves the hedge to the next provider. Which cluster depends on each
    request's own order."""
    envoy, mocks = hedged_gateway(tmp_path, mock)
    for model, slow, fast in [("gpt-4o", "llama", "qwen"), ("my-coder", "qwen", "llama")]:
        mocks[slow].script({"delay": 3.0}, {"echo": True})
        before = {name: len(m.requests) for name, m in mocks.items()}
        response = chat(envoy, "hello", model=model)
        assert response.status == 200, response.text()
        assert response.headers["x-llm-provider"] == fast, f"{model}: the hedge went to {fast}"
        assert response.headers["x-llm-attempts"] == "2"
        assert response.json()["choices"][0]["message"]["content"] == f"hello from {fast}"
        mocks[slow].wait_for_requests(before[slow] + 1)
        assert [len(mocks[n].requests) - before[n] for n in (slow, fast)] == [1, 1]
        for name in (slow, fast):
            received = mocks[name].requests[-1]
            assert received.header("authorization") == f"Bearer sk-{name}", "each attempt carries its own key only"
            assert received.header("host") == f"{name}.provider.test"
    time.sleep(3.2)   # the slow attempts are cancelled when their answers would have come
    stats = envoy.stats()
    for name in ("llama", "qwen"):
        assert stats.get(f"wasmcustom.llm_failover.provider.{name}.failover.no_response", 0) == 0, "the loser is not blamed"
        assert stats[f"wasmcustom.llm_failover.provider.{name}.served"] == 1
    assert chat(envoy, "hello").headers["x-llm-provider"] == "llama", "the slow primary is still first"


def test_many_concurrent_hedged_requests_all_reach_the_fast_provider(tmp_path, mock):
    """Every hedge is a retry on the order cluster: with its retry circuit breaker raised as the
    render writes it, 32 requests at once are all hedged, none cut short."""
    envoy, mocks = hedged_gateway(tmp_path, mock)
    mocks["llama"].set_default({"delay": 1.5})
    responses = harness.concurrently(32, lambda _: chat(envoy, "hello", timeout=15))
    assert [(r.status, r.headers["x-llm-provider"], r.headers["x-llm-attempts"]) for r in responses] == [(200, "qwen", "2")] * 32
    assert len(mocks["qwen"].requests) == 32
    assert envoy.stats().get("cluster.llm_failover~llama~qwen.upstream_rq_retry_overflow", 0) == 0


def test_a_hedged_request_fails_over_through_its_whole_order(tmp_path, mock):
    """Hedges and retries alike go through the order cluster, whose priorities are the order.
    Hedges count as attempts."""
    profiles = {"general": {"normal": ["llama", "qwen", "r1"], "hedgeAfter": "300ms"}}
    envoy, mocks = hedged_gateway(tmp_path, mock, profiles=profiles)
    mocks["llama"].script(openai_error(429))
    mocks["qwen"].script(openai_error(503))
    response = chat(envoy, "hello")
    assert response.status == 200, response.text()
    assert (response.headers["x-llm-provider"], response.headers["x-llm-attempts"]) == ("r1", "3")


def test_after_a_failover_a_slow_provider_is_hedged_with_the_next(tmp_path, mock):
    profiles = {"general": {"normal": ["llama", "qwen", "r1"], "hedgeAfter": "300ms"}}
    envoy, mocks = hedged_gateway(tmp_path, mock, profiles=profiles)
    mocks["llama"].script(openai_error(429))
    mocks["qwen"].script({"delay": 3.0}, {"echo": True})
    response = chat(envoy, "hello")
    assert response.status == 200, response.text()
    assert (response.headers["x-llm-provider"], response.headers["x-llm-attempts"]) == ("r1", "3"), "qwen's hedge"
    mocks["qwen"].wait_for_requests(1)
    assert [len(mocks[n].requests) for n in ("llama", "qwen", "r1")] == [1, 1, 1]
    assert mocks["r1"].requests[0].header("authorization") == "Bearer sk-r1"


def test_attempt_filters_in_a_vm_where_no_router_role_ran_take_its_shared_config(tmp_path, mock):
    """As in a VM reloaded after a crash, which holds only the plugins that ran since: the
    attempt filter finds the router role's config in shared data (env var names, never keys)
    and reads the keys from its own VM's environment."""
    envoy, mocks = hedged_gateway(tmp_path, mock, attempt_vm="attempt-vm")
    mocks["llama"].script({"delay": 3.0}, {"echo": True})
    response = chat(envoy, "hello")
    assert response.status == 200, response.text()
    assert (response.headers["x-llm-provider"], response.headers["x-llm-attempts"]) == ("qwen", "2")
    mocks["llama"].wait_for_requests(1)
    assert mocks["llama"].requests[0].header("authorization") == "Bearer sk-llama"
    assert mocks["qwen"].requests[0].header("authorization") == "Bearer sk-qwen"
    envoy.wait_for_log(r"this VM takes the provider configs from the router role's shared config")


def test_an_endpoint_naming_no_provider_is_refused_clearly(tmp_path, mock):
    """An endpoint whose metadata names a provider the router role does not have: the attempt
    is not sent (no key to send it with), and the answer says what is misconfigured."""
    envoy, mocks = hedged_gateway(tmp_path, mock, llama={"endpoint_provider": "ghost"})
    response = chat(envoy, "hello")
    assert response.status == 500, response.text()
    error = response.json()["error"]
    assert error["code"] == "gateway_misconfigured" and "`ghost`" in error["message"]
    assert len(mocks["llama"].requests) == 0
    envoy.wait_for_log(r"attempt not sent: provider `ghost` is not in the router role's `providers`")


def test_the_overall_deadline_holds_across_failovers(tmp_path, mock):
    router = {"profiles": {**ROUTER["profiles"], "general": {"normal": ["llama", "qwen"], "deadline": "1s", "firstByteTimeout": "700ms"}}}
    envoy, mocks = gateway(tmp_path, mock, router=router, per_try_timeout="10s", route_timeout="30s")
    mocks["llama"].set_default({"delay": 5.0})
    mocks["qwen"].set_default({"delay": 5.0})
    started = time.monotonic()
    response = chat(envoy, "hello", timeout=10)
    elapsed = time.monotonic() - started
    assert response.status in (503, 504), response.text()
    assert response.json()["error"]["code"] in ("all_providers_unavailable", "deadline_exceeded")
    assert elapsed < 3.0, f"the 1 s deadline held ({elapsed:.1f}s), not two 5 s providers"
