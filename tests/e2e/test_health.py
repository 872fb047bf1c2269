"""Provider health end to end, in a real Envoy with 2 workers: the breaker's single probe, SLOW
demotion, budgets, the health endpoint and its reset, and metrics that match what the mocks saw."""

from __future__ import annotations

import pytest

import json
import re
import time

import harness
from envoy_config import Provider, start_gateway
from mock_provider import openai_error

CHAT_PATH = "/v1/chat/completions"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
HEALTH = "/llm-failover/health"
SECRET = "s3cret-admin-token-for-tests"
ADMIN = {"admin": {"path": HEALTH, "secretEnv": "LLM_ADMIN_SECRET"}}


def gateway(tmp_path, providers, **kwargs):
    return start_gateway(tmp_path, providers, extra_env={"LLM_ADMIN_SECRET": SECRET},
                         router_extra={**ADMIN, **kwargs.pop("router_extra", {})}, **kwargs)


def chat(envoy, body=CHAT, timeout=10) -> harness.Response:
    return envoy.post_json(CHAT_PATH, body, timeout=timeout)


def report(envoy) -> dict:
    response = envoy.get(HEALTH, headers={"x-llm-failover-admin-secret": SECRET})
    assert response.status == 200, response.text()
    return {p["name"]: p for p in response.json()["providers"]}


def counter(envoy, name: str) -> int:
    return envoy.stats().get(f"wasmcustom.llm_failover.{name}", 0)


def test_a_recovering_provider_gets_exactly_one_probe_under_32_clients(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port, cooldowns={"failureBase": "1s"}), Provider("b", b.port)],
                    per_try_timeout="8s")
    a.script(openai_error(503))
    assert chat(envoy).headers["x-llm-provider"] == "b"
    time.sleep(1.3)   # the cooldown is over: `a` is half-open
    a.set_default({"delay": 1.0})   # the probe is slow, so every client arrives while it runs
    responses = harness.concurrently(32, lambda _: chat(envoy, timeout=15))
    assert [r.status for r in responses] == [200] * 32
    served_by = [r.headers["x-llm-provider"] for r in responses]
    assert served_by.count("a") == 1, served_by
    assert len(a.requests) == 2, "one failure, then exactly one probe"
    assert len(b.requests) == 1 + 31
    # A 503 is the model's at `a`: it is the model's breaker that was half-open.
    envoy.wait_for_log(r"`a/gpt-4o` is half-open; this request probes it")
    # The probe succeeded: the breaker is closed and `a` is first again.
    a.set_default({"echo": True})
    assert chat(envoy).headers["x-llm-provider"] == "a"
    assert report(envoy)["a"]["models"][0]["state"] == "closed"


def test_a_failed_probe_reopens_with_a_longer_cooldown(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port, cooldowns={"failureBase": "1s"}), Provider("b", b.port)])
    a.set_default(openai_error(503))
    chat(envoy)
    time.sleep(1.2)
    assert chat(envoy).headers["x-llm-attempts"] == "2", "the probe went to `a` and failed over"
    health = report(envoy)["a"]
    assert health["models"][0]["state"] == "open"
    assert health["models"][0]["cooldownRemainingS"] == 2
    assert len(a.requests) == 2


def test_a_slow_provider_is_demoted_then_restored(tmp_path, mock):
    a, b = mock("a"), mock("b")
    slow = {"latency": {"slowTtfb": "300ms", "memory": "2s"}}
    envoy = gateway(tmp_path, [Provider("a", a.port, attempt_extra=slow), Provider("b", b.port)])
    a.set_default({"delay": 0.6})
    assert chat(envoy).headers["x-llm-provider"] == "a"   # slow, but it answered
    for _ in range(3):
        response = chat(envoy)
        assert response.headers["x-llm-provider"] == "b", "a slow provider goes behind healthy ones"
        assert "x-llm-skipped" not in response.headers, "demoted, not left out"
    health = report(envoy)["a"]
    assert health["slow"] is True and health["ttfbMs"] >= 600
    a.set_default({"echo": True})
    time.sleep(2.1)   # the measurement is old: `a` is tried first again, and is fast now
    for _ in range(3):
        assert chat(envoy).headers["x-llm-provider"] == "a"
    assert report(envoy)["a"]["slow"] is False


def test_rate_limit_headers_demote_before_a_429(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)])
    a.script({"echo": True, "headers": {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}})
    assert chat(envoy).headers["x-llm-provider"] == "a"
    assert chat(envoy).headers["x-llm-provider"] == "b"
    assert report(envoy)["a"]["nearRateLimit"] is True
    time.sleep(2.1)
    assert chat(envoy).headers["x-llm-provider"] == "a"


def test_a_spent_request_budget_takes_the_provider_out_until_reset(tmp_path, mock):
    a, b = mock("a"), mock("b")
    budget = {"budget": {"requestsPerDay": 3, "resetUtcOffset": "+09:00"}}
    envoy = gateway(tmp_path, [Provider("a", a.port, attempt_extra=budget), Provider("b", b.port)])
    served = [chat(envoy).headers["x-llm-provider"] for _ in range(5)]
    assert served == ["a", "a", "a", "b", "b"]
    assert len(a.requests) == 3
    envoy.wait_for_log(r"daily budget of `a` is spent; it leaves its chains until the budget resets in \d+s")
    health = report(envoy)["a"]
    assert health["budget"]["spent"] is True and 0 < health["budget"]["resetsInS"] <= 86400
    assert health["budget"]["lastRecorded"]["requests"] == 3
    assert counter(envoy, "provider.a.budget_spent") == 1
    # An operator gives the budget back.
    reset = envoy.post_raw(f"{HEALTH}/reset?provider=a&budget=true", b"",
                           headers={"x-llm-failover-admin-secret": SECRET})
    assert reset.status == 200, reset.text()
    assert chat(envoy).headers["x-llm-provider"] == "a"


def test_a_spent_token_budget_counts_streamed_usage(tmp_path, mock):
    a, b = mock("a"), mock("b")
    budget = {"budget": {"tokensPerDay": 20}}
    envoy = gateway(tmp_path, [Provider("a", a.port, attempt_extra=budget), Provider("b", b.port)])
    a.set_default({"sse": [
        {"data": {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                  "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}},
        {"data": {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                  "usage": {"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11}}},
        {"data": "[DONE]"}]})
    stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    served = []
    for _ in range(3):
        status, headers, _ = harness.http_stream(envoy.listener_ports[0], CHAT_PATH, json.dumps(stream).encode(),
                                                 {"content-type": "application/json"})
        served.append(headers["x-llm-provider"])
        time.sleep(0.2)   # the usage is counted when the stream ends
    assert served == ["a", "a", "b"], "22 tokens after two streams: over the budget of 20"


@pytest.mark.core
def test_health_endpoint_reports_refuses_strangers_and_resets(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)])
    a.script(openai_error(429, retry_after=60))
    chat(envoy)
    for headers in ({}, {"x-llm-failover-admin-secret": "wrong"}):
        refused = envoy.get(HEALTH, headers=headers)
        assert refused.status == 401
        assert refused.json()["error"]["code"] == "admin_secret_required"
        assert SECRET not in refused.text()
    envoy.wait_for_log(r"health endpoint refused: no valid x-llm-failover-admin-secret")
    assert SECRET not in envoy.log()

    providers = report(envoy)
    model = providers["a"]["models"][0]
    assert (model["model"], model["state"], model["lastStatus"], model["lastFailure"]) == ("gpt-4o", "open", 429, "rate_limited")
    assert 55 <= model["cooldownRemainingS"] <= 60
    assert providers["a"]["state"] == "closed", "a 429 is the model's, not the whole provider's"
    assert providers["b"]["state"] == "closed"
    assert chat(envoy).headers["x-llm-skipped"] == "a"

    reset = envoy.post_raw(f"{HEALTH}/reset?provider=a", b"", headers={"x-llm-failover-admin-secret": SECRET})
    assert reset.status == 200 and reset.json()["records"] >= 1
    envoy.wait_for_log(r"health of a reset by an operator")
    assert report(envoy)["a"]["models"] == []
    assert chat(envoy).headers["x-llm-provider"] == "a"
    assert envoy.post_raw(f"{HEALTH}/reset?provider=ghost", b"",
                          headers={"x-llm-failover-admin-secret": SECRET}).status == 404
    assert envoy.get(f"{HEALTH}/reset", headers={"x-llm-failover-admin-secret": SECRET}).status == 405


def test_an_expired_key_stays_out_until_an_operator_resets_it(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port, key_env="A_KEY", key="sk-expired"), Provider("b", b.port)])
    a.script(openai_error(401))
    chat(envoy)
    assert report(envoy)["a"]["cooldownRemainingS"] == "until-reset"
    assert chat(envoy).headers["x-llm-skipped"] == "a"
    gauge = lambda: envoy.stats().get("wasmcustom.llm_failover.provider.a.breaker")  # noqa: E731
    assert gauge() == 1, "the breaker gauge shows a's open breaker"
    everyone = envoy.post_raw(f"{HEALTH}/reset", b"", headers={"x-llm-failover-admin-secret": SECRET})
    assert everyone.status == 200 and everyone.json()["reset"] == "every provider"
    assert chat(envoy).headers["x-llm-provider"] == "a"
    assert gauge() == 0, "and follows the reset"


def test_when_every_key_is_rejected_the_client_is_not_told_to_retry(tmp_path, mock):
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port, key_env="A_KEY", key="sk-a"), Provider("b", b.port, key_env="B_KEY", key="sk-b")])
    a.set_default(openai_error(401))
    b.set_default(openai_error(403))
    first = chat(envoy)
    assert first.status == 503
    assert "retry-after" not in first.headers, "waiting will not bring a rejected key back"
    assert "until an operator resets it" in first.json()["error"]["message"]
    envoy.wait_for_log(r"answering 503, every provider waits for an operator's reset")


@pytest.mark.core
def test_metrics_match_what_the_mocks_saw(tmp_path, mock):
    a, b = mock("a"), mock("b")
    prices = {"prices": {"gpt-4o": {"inputPerMTok": 2.5, "outputPerMTok": 10}}}
    envoy = gateway(tmp_path, [Provider("a", a.port, attempt_extra=prices), Provider("b", b.port, attempt_extra=prices)])
    a.script(openai_error(503), openai_error(429))
    for _ in range(6):
        assert chat(envoy).status == 200
    time.sleep(1.5)   # a stats flush merges the histograms
    stats = envoy.stats()
    metric = lambda name: stats.get(f"wasmcustom.llm_failover.{name}", 0)  # noqa: E731
    assert metric("provider.a.attempts") == len(a.requests)
    assert metric("provider.b.attempts") == len(b.requests)
    served_a, served_b = metric("provider.a.served"), metric("provider.b.served")
    assert served_a + served_b == 6
    assert metric("provider.a.failover.server_error") == 1
    assert metric("provider.a.failover.rate_limited") == 0 or metric("provider.a.skipped") > 0
    # The mock's echo answers report 5 prompt and 3 completion tokens.
    assert metric("provider.b.model.gpt-4o.prompt_tokens") == 5 * served_b
    assert metric("provider.b.model.gpt-4o.completion_tokens") == 3 * served_b
    # 5 * $2.50/M + 3 * $10/M = 42.5 micro-dollars, rounded per answer.
    assert metric("provider.b.model.gpt-4o.cost_micro_usd") == 43 * served_b
    prometheus = envoy.admin_get("/stats/prometheus").text()
    # Envoy 1.36-1.38 add the labels llm_failover_vm and envoy_cluster_name (docs/compatibility.md).
    assert re.search(r'llm_failover_provider_ttfb_ms_bucket\{(llm_failover_vm="[^"]+",)?llm_provider="b",(envoy_cluster_name="[^"]+",)?le="[^"]+"\} \d+', prometheus), \
        "the ttfb histogram should be tagged by provider"
    assert re.search(r'llm_failover_provider_total_ms_count\{(llm_failover_vm="[^"]+",)?llm_provider="b"(,envoy_cluster_name="[^"]+")?\} ' + str(served_b), prometheus)
    tokens = [line for line in prometheus.splitlines() if line.startswith("llm_failover_provider_model_prompt_tokens{")
              and 'llm_provider="b"' in line and 'llm_model="gpt-4o"' in line]
    assert tokens and tokens[0].endswith(f"}} {5 * served_b}"), tokens
    assert re.search(r'llm_failover_provider_breaker\{(llm_failover_vm="[^"]+",)?llm_provider="a"(,envoy_cluster_name="[^"]+")?\} 0', prometheus), \
        "a's own breaker is closed: its 503 and 429 opened the breaker of its model (see the report)"


def test_active_probes_bring_back_a_recovered_provider_without_a_chat_request(tmp_path, mock):
    """Two probers run (as two Envoys would); one lease means one of them probes."""
    b = mock("b")
    a_port = harness.free_port()   # nobody listens yet: `a` is down
    prober = {"role": "prober", "interval": "500ms", "lease": "2s",
              "probes": [{"provider": "a", "cluster": "llm_failover~a", "path": "/v1/models", "timeout": "1s"}]}
    envoy = gateway(tmp_path, [Provider("a", a_port, key_env="A_KEY", key="sk-a", cooldowns={"failureBase": "1h", "failureMax": "1h"}),
                               Provider("b", b.port)], probers=[prober, prober])
    started = time.monotonic()
    assert chat(envoy).headers["x-llm-provider"] == "b"
    assert report(envoy)["a"]["state"] == "open"
    envoy.wait_for_log(r"prober [0-9a-f]+: holds the probe lease")
    a = mock("a", port=a_port)   # `a` recovers
    deadline = time.monotonic() + 5
    while report(envoy)["a"]["state"] != "closed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert report(envoy)["a"]["state"] == "closed", "a probe should have closed the breaker"
    assert a.requests[0].method == "GET" and a.requests[0].path == "/v1/models"
    assert a.requests[0].header("authorization") == "Bearer sk-a", "the attempt role adds the key"
    assert chat(envoy).headers["x-llm-provider"] == "a"
    assert all(r.path == "/v1/models" for r in a.requests[:-1]) and a.requests[-1].path == CHAT_PATH
    holders = set(re.findall(r"prober ([0-9a-f]+): holds the probe lease", envoy.log()))
    assert len(holders) == 1, f"one lease holder, not {holders}"
    # One probe per interval at most: two probers both probing would send about twice that.
    probes = len(re.findall(r"prober: probing `a` with GET /v1/models", envoy.log()))
    assert 1 <= probes <= (time.monotonic() - started) / 0.5 + 1


@pytest.mark.core
def test_client_made_model_names_cannot_grow_the_health_table(tmp_path, mock):
    """Each distinct model a provider rate-limits gets a record of its own; a client inventing
    model names gets at most MAX_MODEL_RECORDS (128) of them, the newest, in the health report
    (which is the shared table read back), and every request is still served."""
    a, b = mock("a"), mock("b")
    envoy = gateway(tmp_path, [Provider("a", a.port), Provider("b", b.port)])
    a.set_default(openai_error(429, retry_after=60))
    names = [f"invented-{i}-" + "m" * 200 for i in range(300)]
    for name in names:
        answer = chat(envoy, {**CHAT, "model": name})
        assert answer.status == 200 and answer.headers["x-llm-provider"] == "b", answer.text()
    assert len(a.requests) == 300, "each new model was tried at `a` once"
    models = [m["model"] for m in report(envoy)["a"]["models"]]
    assert len(models) == 128, len(models)
    assert max(len(m.encode()) for m in models) == 128, "model keys are cut to 128 bytes"
    assert names[-1][:128] in models and names[0][:128] not in models, "the oldest records went"
    # The newest model is still known to be rate-limited at `a`: it goes straight to `b`.
    again = chat(envoy, {**CHAT, "model": names[-1]})
    assert again.headers["x-llm-provider"] == "b" and again.headers.get("x-llm-skipped") == "a"
    assert len(a.requests) == 300
