"""Alert rules, Alertmanager config and dashboard: the shipped files agree with each other and
with the docs. The Prometheus tools check them too (make rules-test); the end-to-end test with a
real Prometheus is in test_prometheus.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "observability"
RULES = OBS / "prometheus/llm-failover.rules.yml"
RULE_TESTS = OBS / "prometheus/llm-failover.rules.test.yml"
PROMETHEUS_RULE = OBS / "prometheus/prometheusrule.yaml"
ALERTMANAGER = OBS / "alertmanager/alertmanager.yml"
RUNBOOK = ROOT / "docs/runbook.md"


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        found.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return found


def test_the_prometheus_rule_holds_the_same_rules():
    plain = yaml.safe_load(RULES.read_text())
    operator = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert operator["kind"] == "PrometheusRule" and operator["apiVersion"] == "monitoring.coreos.com/v1"
    assert operator["spec"] == plain


def test_every_alert_says_what_and_where_to_look_in_the_runbook():
    sections = anchors(RUNBOOK.read_text())
    names = set()
    for rule in rules():
        names.add(rule["alert"])
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/runbook.md" and anchor in sections, f"{rule['alert']}: no section #{anchor} in docs/runbook.md"
        assert rule["labels"]["severity"] in ("warning", "critical")
    assert names == {"LLMFailoverProviderOut", "LLMFailoverAllProvidersUnavailable", "LLMFailoverFailoverRateHigh",
                     "LLMFailoverKeyRejected", "LLMFailoverBudgetSpent", "LLMFailoverSlowFirstByte",
                     "LLMFailoverVmReloading", "LLMFailoverCredentialRenewalFailing"}


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    checks = [check for test in tests for check in test.get("alert_rule_test", [])]
    for rule in rules():
        mine = [c for c in checks if c["alertname"] == rule["alert"]]
        assert any(c.get("exp_alerts") for c in mine), f"{rule['alert']} is never shown firing"
        assert any(not c.get("exp_alerts") for c in mine), f"{rule['alert']} is never shown quiet"


def test_alertmanager_sends_to_telegram_and_repeats_once_a_day():
    config = yaml.safe_load(ALERTMANAGER.read_text())
    assert config["route"]["repeat_interval"] == "24h"
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers[config["route"]["receiver"]]["telegram_configs"]
    for alert in ("LLMFailoverKeyRejected", "LLMFailoverProviderOut"):
        routed = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                                 f"alertname={alert}", "llm_provider=openai", "severity=critical"],
                                capture_output=True, text=True, check=True).stdout.split()
        assert routed == ["llm-failover-telegram"], routed
