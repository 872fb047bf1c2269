"""A real Prometheus (Debian's) scraping a real Envoy's /stats/prometheus, with the shipped
alert rules: a scripted outage at the mock providers makes the alerts fire, recovery resolves
them, and every panel of the shipped Grafana dashboard returns data during the outage.

The rules run time-scaled: `for`, `keep_firing_for` and range windows shrink to seconds so the
test is bounded; expressions, thresholds and labels are the shipped ones."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

import harness
from test_renewal import Renewed, ask, backup_provider
from test_renewal import client as renewal_client
from test_renewal import gateway as renewal_gateway
from envoy_config import Provider, start_gateway
from mock_provider import openai_error

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "observability/prometheus/llm-failover.rules.yml"
GEN_AI_RULES = ROOT / "observability/prometheus/gen-ai.rules.yml"
DASHBOARD = ROOT / "observability/grafana/llm-failover.json"
CHAT_PATH = "/v1/chat/completions"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
HEALTH = "/llm-failover/health"
SECRET = "prometheus-test-admin-secret"
WINDOW = "10s"   # every range window of the rules and the dashboard, scaled down


def scaled_rules(text: str) -> str:
    rules = yaml.safe_load(text)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = re.sub(r"\[\d+[smhd]\]", f"[{WINDOW}]", rule["expr"])
            if "for" in rule:
                rule["for"] = "2s"
            if "keep_firing_for" in rule:
                rule["keep_firing_for"] = "3s"
    return yaml.safe_dump(rules)


class Prometheus:
    def __init__(self, tmp_path: Path, envoy_admin_port: int):
        self.port = harness.free_port()
        self.dir = tmp_path / "prometheus"
        self.dir.mkdir()
        (self.dir / "rules.yml").write_text(scaled_rules(RULES.read_text()))
        (self.dir / "gen-ai.rules.yml").write_text(GEN_AI_RULES.read_text())
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(self.dir / "rules.yml"), str(self.dir / "gen-ai.rules.yml")],
            "scrape_configs": [{"job_name": "envoy", "metrics_path": "/stats/prometheus",
                                "static_configs": [{"targets": [f"127.0.0.1:{envoy_admin_port}"]}]}],
        }))
        self.log = open(self.dir / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait(lambda: self.get("/-/ready", raw=True) == "ready", "Prometheus ready", timeout=30)

    def get(self, path: str, raw: bool = False, **params):
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode()
        except OSError:
            return None
        if raw:
            return "ready" if "Ready" in body else body
        return json.loads(body)

    def query(self, expr: str) -> list:
        answer = self.get("/api/v1/query", query=expr)
        assert answer and answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def alerts(self) -> dict[tuple[str, str | None], str]:
        """(alertname, llm_provider) -> state, for every pending or firing alert."""
        answer = self.get("/api/v1/alerts") or {"data": {"alerts": []}}
        return {(a["labels"]["alertname"], a["labels"].get("llm_provider")): a["state"] for a in answer["data"]["alerts"]}

    def wait(self, done, what: str, timeout: float = 40, step=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if step:
                step()
            if done():
                return
            time.sleep(0.3)
        raise AssertionError(f"{what}: not within {timeout}s; alerts {self.alerts()}\n"
                             + (self.dir / "prometheus.log").read_text()[-3000:])

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture
def prometheus_for():
    started = []

    def start(tmp_path, envoy):
        started.append(Prometheus(tmp_path, envoy.admin_port))
        return started[-1]

    yield start
    for prometheus in started:
        prometheus.stop()


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_an_outage_fires_the_alerts_and_recovery_resolves_them(tmp_path, mock, prometheus_for):
    a, b = mock("a"), mock("b")
    prices = {"prices": {"gpt-4o": {"inputPerMTok": 2.5, "outputPerMTok": 10}}}
    envoy = start_gateway(
        tmp_path, [Provider("a", a.port, key_env="A_KEY", key="sk-a", attempt_extra={"budget": {"requestsPerDay": 3}}),
                   Provider("b", b.port, attempt_extra=prices)],
        extra_env={"LLM_ADMIN_SECRET": SECRET},
        router_extra={"admin": {"path": HEALTH, "secretEnv": "LLM_ADMIN_SECRET"}})
    prometheus = prometheus_for(tmp_path, envoy)
    chat = lambda: envoy.post_json(CHAT_PATH, CHAT)  # noqa: E731
    # A counter's first rise shows only against a sample from before it.
    prometheus.wait(lambda: prometheus.query("llm_failover_provider_budget_spent"), "first scrape")

    # Normal traffic first: a serves, spends its budget of 3 requests, b takes over.
    for _ in range(4):
        assert chat().status == 200
    prometheus.wait(lambda: prometheus.alerts().get(("LLMFailoverBudgetSpent", "a")) == "firing", "budget alert")
    assert ("LLMFailoverAllProvidersUnavailable", None) not in prometheus.alerts()

    # The outage: a's key is rejected, b answers 503 to everything.
    assert envoy.post_raw(f"{HEALTH}/reset?provider=a&budget=true", b"",
                          headers={"x-llm-failover-admin-secret": SECRET}).status == 200
    a.set_default(openai_error(401))
    b.set_default(openai_error(503))
    expected = {("LLMFailoverKeyRejected", "a"), ("LLMFailoverProviderOut", "a"),
                ("LLMFailoverAllProvidersUnavailable", None), ("LLMFailoverFailoverRateHigh", "b")}
    seen_pending = set()

    def outage_step():
        chat()
        seen_pending.update(k for k, state in prometheus.alerts().items() if state == "pending")

    prometheus.wait(lambda: all(prometheus.alerts().get(k) == "firing" for k in expected),
                    "outage alerts firing", timeout=60, step=outage_step)
    assert {("LLMFailoverProviderOut", "a"), ("LLMFailoverAllProvidersUnavailable", None)} <= seen_pending, \
        "alerts with a `for` are pending first"
    assert ("LLMFailoverVmReloading", None) not in prometheus.alerts()

    # Every panel of the dashboard has data now.
    # The whole test fits in 5 minutes: each panel sees the outage and the traffic before it.
    window = {"$__rate_interval": "5m", "$__range": "5m"}
    for title, expr in dashboard_queries():
        for macro, value in window.items():
            expr = expr.replace(macro, value)
        assert prometheus.query(expr), f"panel `{title}`: no data for {expr}"

    # The OpenTelemetry GenAI names, recorded from the filter's.
    input_tokens = prometheus.query('gen_ai_client_token_usage_total{gen_ai_token_type="input",gen_ai_provider_name="a"}')
    assert input_tokens and float(input_tokens[0]["value"][1]) == 5 * 3, input_tokens   # a served 3 echoes of 5
    assert prometheus.query('gen_ai_server_time_to_first_token_milliseconds_count{gen_ai_provider_name="b"}')

    # Recovery: both answer again, an operator resets a (its key was fixed).
    a.set_default({"echo": True})
    b.set_default({"echo": True})
    assert envoy.post_raw(f"{HEALTH}/reset", b"", headers={"x-llm-failover-admin-secret": SECRET}).status == 200

    def recovery_step():
        assert chat().status == 200

    prometheus.wait(lambda: not (set(prometheus.alerts()) & expected), "outage alerts resolved",
                    timeout=60, step=recovery_step)


def test_a_token_that_cannot_be_renewed_fires_its_alert_and_never_the_key_alert(tmp_path, mock, prometheus_for):
    """A renewed provider's 401 heals by itself, so LLMFailoverKeyRejected stays quiet for it;
    renewals that keep failing fire LLMFailoverCredentialRenewalFailing instead."""
    renewed = Renewed(mock, "copilot", lifetime=60)
    _, backup_entry = backup_provider(mock)
    envoy = renewal_gateway(tmp_path, [renewed.provider, backup_entry], renewed.env)
    prometheus = prometheus_for(tmp_path, envoy)
    prometheus.wait(lambda: prometheus.query('llm_failover_provider_credential_renewed{llm_provider="copilot"}'),
                    "the renewal counters scraped")
    sdk = renewal_client(envoy)
    assert ask(sdk, False)[1] == "copilot"

    # The token endpoint goes away and the token in use is revoked: the 401 fails over, and
    # every renewal after it fails.
    renewed.endpoint.stop()
    renewed.issuer.revoke_all()
    seen = set()

    def step():
        assert ask(sdk, False)[1] == "backup"
        seen.update(prometheus.alerts())

    prometheus.wait(lambda: prometheus.alerts().get(("LLMFailoverCredentialRenewalFailing", "copilot")) == "firing",
                    "renewal alert firing", timeout=60, step=step)
    assert prometheus.query('sum(llm_failover_provider_failover{llm_provider="copilot",llm_reason="unauthorized"})'), \
        "the 401 was counted as a failover"
    assert ("LLMFailoverKeyRejected", "copilot") not in seen | set(prometheus.alerts())
