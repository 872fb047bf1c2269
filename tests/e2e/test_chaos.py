"""Chaos, bounded: 2,000 requests from 16 clients through a real Envoy (2 workers) while the
providers fail about 30% of the attempts in every way the filter fails over on. The run and its
checks are tests/e2e/chaos.py, the same that `make soak` keeps up for 20 minutes."""

from __future__ import annotations

import json
import time

import pytest

import chaos

REQUESTS = 2_000
CLIENTS = 16
# The run takes about 15 s on 2 cores; clients still running after this fail the test.
DEADLINE_S = 50


@pytest.mark.core
def test_mixed_faults_lose_no_request_leak_no_key_and_crash_no_vm(tmp_path):
    run = chaos.ChaosRun(tmp_path)
    try:
        started = time.monotonic()
        clients = run.start_clients(CLIENTS, count=REQUESTS)
        for client in clients:
            client.join(timeout=max(0.1, started + DEADLINE_S - time.monotonic()))
        assert not any(c.is_alive() for c in clients), f"{run.tally.requests} requests answered in {DEADLINE_S}s"
        stats = run.counters()
        report = run.report(stats)
        print(json.dumps(report, indent=1))
        problems = run.problems(stats, run.envoy.log()) + chaos.fault_problems(report, at_least=10)
        assert not problems, "\n".join(problems)
        assert run.tally.requests == REQUESTS
        # Not vacuous: the faulty providers were tried, and failed, a good share of the attempts.
        assert report["fault_share"] >= 0.2, report
    finally:
        run.stop()
