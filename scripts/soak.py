#!/usr/bin/env python3
"""`make soak`: a long run with mixed provider faults, and whether memory stays flat.

Envoy 1.40 (2 workers) runs the filter in front of three mock providers on 127.0.0.1:
  a  fails often (503, 429 with Retry-After, reset connections, a slow answer now and then),
  b  fails sometimes (503),
  c  always answers.
16 client threads send chat requests for `--minutes` (bounded), some streamed, some for models
no chain names (so the health table gets model records). Every `--sample` seconds the script
records Envoy's resident memory, tcmalloc's allocated and heap bytes (admin /memory), the number
of health records (the health endpoint) and the requests so far.

Checked at the end, exit 1 otherwise: every request got 200 (c was always there), no VM
panic or reload in Envoy's log, no provider key at another provider, and resident memory after
warm-up grew less than --max-growth-mb. The samples go to --output (JSON) and are printed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import harness  # noqa: E402
from envoy_config import Provider, start_gateway  # noqa: E402
from mock_provider import MockProvider, openai_error  # noqa: E402

SECRET = "soak-admin-secret"
HEALTH = "/llm-failover/health"
KEYS = {"a": "sk-soak-a", "b": "sk-soak-b", "c": "sk-soak-c"}


def faults(kind: str):
    rng = random.Random(kind)
    lock = threading.Lock()

    def spec(_request) -> dict:
        with lock:
            roll = rng.random()
        if kind == "a":
            if roll < 0.15:
                return openai_error(503)
            if roll < 0.22:
                return openai_error(429, retry_after=1)
            if roll < 0.25:
                return {"close": True}
            if roll < 0.27:
                return {"echo": True, "delay": 0.3}
        if kind == "b" and roll < 0.10:
            return openai_error(503)
        return {"echo": True}
    return spec


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample(envoy, started: float, counts: dict) -> dict:
    memory = envoy.admin_get("/memory").json()
    report = envoy.get(HEALTH, headers={"x-llm-failover-admin-secret": SECRET}).json()
    records = sum(1 + len(p.get("models", [])) for p in report["providers"])
    return {"minute": round((time.monotonic() - started) / 60, 2), "rss_mb": round(resident_mb(envoy.process.pid), 1),
            "allocated_mb": round(int(memory["allocated"]) / 2**20, 1), "heap_mb": round(int(memory["heap_size"]) / 2**20, 1),
            "health_records": records, "requests": counts["total"], "not_200": counts["bad"]}


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
    mocks = {name: MockProvider(name).start() for name in KEYS}
    for name, mock in mocks.items():
        mock.set_default(faults(name))
    providers = [Provider(n, m.port, key_env=f"KEY_{n.upper()}", key=KEYS[n], cooldowns={"failureBase": "1s", "failureMax": "5s"})
                 for n, m in mocks.items()]
    envoy = start_gateway(work, providers, extra_env={"SOAK_SECRET": SECRET},
                          router_extra={"admin": {"path": HEALTH, "secretEnv": "SOAK_SECRET"}},
                          per_try_timeout="2s", route_timeout="20s")
    counts = {"total": 0, "bad": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + args.minutes * 60
    problems: list[str] = []

    def client(index: int) -> None:
        rng = random.Random(index)
        while time.monotonic() < deadline and len(problems) < 20:
            model = rng.choice(["gpt-4o", "gpt-4o-mini", "o3"]) if rng.random() < 0.9 else f"made-up-{rng.randrange(10**6)}"
            body = {"model": model, "messages": [{"role": "user", "content": "soak " * rng.randrange(1, 200)}]}
            try:
                if rng.random() < 0.2:
                    status, _, _ = envoy.stream("/v1/chat/completions", {**body, "stream": True}, timeout=30)
                else:
                    status = envoy.post_json("/v1/chat/completions", body, timeout=30).status
            except OSError as error:
                status = f"error {error!r}"
            with lock:
                counts["total"] += 1
                if status != 200:
                    counts["bad"] += 1
                    problems.append(f"{model}: {status}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    samples = []
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(min(args.sample, max(0.0, deadline - time.monotonic()) + 0.5))
            samples.append(sample(envoy, started, counts))
            print(json.dumps(samples[-1]), flush=True)
        for thread in threads:
            thread.join(timeout=40)
        log = envoy.log()
    finally:
        envoy.stop()
        for mock in mocks.values():
            mock.stop()

    leaks = [f"{name} got {other}'s key" for name, mock in mocks.items() for request in mock.requests
             for other, key in KEYS.items() if other != name and key in json.dumps(request.headers)]
    after_warmup = [s for s in samples if s["minute"] >= args.warmup_minutes]
    growth = (after_warmup[-1]["rss_mb"] - after_warmup[0]["rss_mb"]) if len(after_warmup) > 1 else 0.0
    panics = [line for line in log.splitlines() if "panicked" in line or "VM failed" in line or "reload" in line.lower()]
    result = {"minutes": args.minutes, "clients": args.clients, "samples": samples, "requests": counts["total"],
              "not_200": counts["bad"], "first_problems": problems[:5], "key_leaks": leaks[:5], "vm_problems": panics[:5],
              "rss_growth_after_warmup_mb": round(growth, 1),
              "served": {name: len(mock.requests) for name, mock in mocks.items()}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    failed = counts["bad"] or leaks or panics or growth > args.max_growth_mb or not after_warmup
    print("soak " + ("FAILED" if failed else "passed") + f": written to {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
