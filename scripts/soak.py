#!/usr/bin/env python3
"""`make soak`: a long run with mixed provider faults, and whether memory stays flat.

The run is tests/e2e/chaos.py's, the same as the chaos test in `make test` (2,000 requests):
Envoy 1.40 (2 workers) in front of four mock providers on 127.0.0.1 that fail about 30% of the
attempts (401 from a revoked key, 503 or Anthropic's 529, 429 with Retry-After, reset
connections, answers slower than the per-try timeout), one of them, `c`, never. 16 client
threads send chat requests for `--minutes` (bounded), 20% streamed, 10% for models no chain names
(so the health table gets model records). Every `--sample` seconds the script records Envoy's
resident memory, tcmalloc's allocated and heap bytes (admin /memory), the number of health
records (the health endpoint) and the requests so far.

Checked at the end, exit 1 otherwise: chaos.py's checks (every request answered whole, no key
at another provider, no VM panic or reload, the filter's counters against what the mocks did),
and resident memory after warm-up grew less than --max-growth-mb. The samples go to --output
(JSON) and are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import chaos  # noqa: E402

SECRET = "soak-admin-secret"
HEALTH = "/llm-failover/health"


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample(envoy, started: float, tally: chaos.Tally) -> dict:
    memory = envoy.admin_get("/memory").json()
    report = envoy.get(HEALTH, headers={"x-llm-failover-admin-secret": SECRET}).json()
    records = sum(1 + len(p.get("models", [])) for p in report["providers"])
    return {"minute": round((time.monotonic() - started) / 60, 2), "rss_mb": round(resident_mb(envoy.process.pid), 1),
            "allocated_mb": round(int(memory["allocated"]) / 2**20, 1), "heap_mb": round(int(memory["heap_size"]) / 2**20, 1),
            "health_records": records, "requests": tally.requests, "lost": tally.lost}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--sample", type=float, default=30, help="seconds between samples")
    parser.add_argument("--warmup-minutes", type=float, default=2)
    parser.add_argument("--max-growth-mb", type=float, default=8)
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/soak.json")
    args = parser.parse_args()

    work = ROOT / "bench/results/work/soak"
    work.mkdir(parents=True, exist_ok=True)
    run = chaos.ChaosRun(work, extra_env={"SOAK_SECRET": SECRET},
                         router_extra={"admin": {"path": HEALTH, "secretEnv": "SOAK_SECRET"}})
    samples = []
    try:
        started = time.monotonic()
        clients = run.start_clients(args.clients, until=started + args.minutes * 60)
        while any(c.is_alive() for c in clients):
            time.sleep(min(args.sample, max(0.0, started + args.minutes * 60 - time.monotonic()) + 0.5))
            samples.append(sample(run.envoy, started, run.tally))
            print(json.dumps(samples[-1]), flush=True)
        for client in clients:
            client.join(timeout=chaos.CLIENT_TIMEOUT_S + 5)
        stats = run.counters()
        problems = run.problems(stats, run.envoy.log())
        report = run.report(stats)
    finally:
        run.stop()

    # A short run (make soak SOAK_MINUTES=1) warms up for half its length.
    warmup = min(args.warmup_minutes, args.minutes / 2)
    after_warmup = [s for s in samples if s["minute"] >= warmup]
    growth = (after_warmup[-1]["rss_mb"] - after_warmup[0]["rss_mb"]) if len(after_warmup) > 1 else 0.0
    result = {"minutes": args.minutes, "clients": args.clients, "samples": samples, **report,
              "rss_growth_after_warmup_mb": round(growth, 1), "problems": problems}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    failed = problems or growth > args.max_growth_mb or not after_warmup
    print("soak " + ("FAILED" if failed else "passed") + f": written to {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
