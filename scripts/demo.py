"""`make run`: Envoy with the filter (envoy/demo.yaml) in front of three mock providers.

The primary (`openai`) fails on a schedule, so a failover happens within the first requests.
`--smoke` sends the printed requests itself, checks the answers and exits (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "envoy/demo.yaml"
WASM = ROOT / "target/wasm32-unknown-unknown/release/llm_failover.wasm"
LISTENER, ADMIN = 10000, 9901
MOCKS = [
    # name, port, status schedule (repeats), Retry-After on 429, API it speaks
    ("openai", 18081, "429,200,200,503,200,200", "5", "openai"),
    ("openrouter", 18082, "200", None, "openai"),
    ("ollama", 18083, "200", None, "ollama"),
]
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello"}]}
LOCAL_CHAT = {"model": "llama3.3", "messages": [{"role": "user", "content": "Say hello"}]}
HEDGED_CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}

CURL_FAILOVER = (f"curl -si http://127.0.0.1:{LISTENER}/v1/chat/completions "
                 "-H 'content-type: application/json' "
                 f"-d '{json.dumps(CHAT)}'")
CURL_STATS = f"curl -s http://127.0.0.1:{ADMIN}/stats | grep llm_failover"
ADMIN_SECRET = "demo-admin-secret-change-me"   # envoy/demo.yaml's LLM_FAILOVER_ADMIN_SECRET
CURL_HEALTH = (f"curl -s -H 'x-llm-failover-admin-secret: {ADMIN_SECRET}' "
               f"http://127.0.0.1:{LISTENER}/llm-failover/health")
STATUS_PAGE = f"http://127.0.0.1:{LISTENER}/llm-failover/health/status"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {what} did not come up within {timeout:.0f}s")
        time.sleep(0.1)


def envoy_ready() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def post_chat(chat: dict = CHAT) -> tuple[int, dict[str, str], dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{LISTENER}/v1/chat/completions",
                                     data=json.dumps(chat).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(r.read())


def smoke() -> None:
    """The first request meets the primary's 429, the second finds it cooling down."""
    status, headers, body = post_chat()
    assert status == 200, status
    assert headers["x-llm-provider"] == "openrouter" and headers["x-llm-attempts"] == "2", headers
    assert body["model"] == "openai/gpt-4o", body
    status, headers, _ = post_chat()
    assert headers["x-llm-provider"] == "openrouter" and headers["x-llm-skipped"] == "openai", headers
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/stats/prometheus", timeout=5) as r:
        prometheus = r.read().decode()
    tagged = 'llm_failover_provider_failover{llm_reason="rate_limited",llm_provider="openai"} 1'
    assert tagged in prometheus, "stats_tags did not give the provider and reason labels"
    health = urllib.request.Request(f"http://127.0.0.1:{LISTENER}/llm-failover/health",
                                    headers={"x-llm-failover-admin-secret": ADMIN_SECRET})
    with urllib.request.urlopen(health, timeout=5) as r:
        report = {p["name"]: p for p in json.loads(r.read())["providers"]}
    assert report["openai"]["models"][0]["lastStatus"] == 429, report["openai"]
    with urllib.request.urlopen(STATUS_PAGE, timeout=5) as r:
        assert r.status == 200 and b"Admin secret" in r.read(), "the status page"
    status, headers, body = post_chat(LOCAL_CHAT)
    assert status == 200 and headers["x-llm-provider"] == "ollama", (status, headers)
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "hello from ollama", body
    # The hedged profile, through its order cluster. The 429 cooled openai's gpt-4o only, so
    # openai serves gpt-4o-mini.
    status, headers, _ = post_chat(HEDGED_CHAT)
    assert status == 200 and headers["x-llm-profile"] == "interactive; by=model", (status, headers)
    assert headers["x-llm-provider"] == "openai", headers
    print("demo smoke check: failover, skip, tagged metrics, the health report and the Ollama translation seen", flush=True)


def mock_command(name: str, port: int, schedule: str, retry_after: str | None, api: str) -> list[str]:
    command = [sys.executable, str(ROOT / "tests/mock_provider.py"), "--name", name,
               "--port", str(port), "--schedule", schedule, "--format", api]
    return command + (["--retry-after", retry_after] if retry_after else [])


def run_mocks() -> int:
    mocks = [subprocess.Popen(mock_command(*m), cwd=ROOT) for m in MOCKS]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for mock in mocks:
            mock.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for mock in mocks:
            mock.terminate()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="check the demo answers, then exit")
    parser.add_argument("--mocks-only", action="store_true",
                        help="run only the mock providers (docker-compose runs Envoy apart)")
    args = parser.parse_args()
    if args.mocks_only:
        return run_mocks()
    if not WASM.exists():
        raise SystemExit(f"demo: {WASM} is missing; run `make run` (it builds it)")
    busy = [p for p in [LISTENER, ADMIN] + [m[1] for m in MOCKS] if not port_free(p)]
    if busy:
        raise SystemExit(f"demo: ports already in use on 127.0.0.1: {busy}")

    processes: list[subprocess.Popen] = []
    try:
        for mock in MOCKS:
            processes.append(subprocess.Popen(mock_command(*mock), cwd=ROOT))
        for _, port, _, _, _ in MOCKS:
            wait_until(lambda: not port_free(port), 10, f"mock on port {port}")
        envoy = subprocess.Popen(["envoy", "-c", str(CONFIG), "--concurrency", "2", "--log-level", "warn",
                                  "--base-id", "40100"], cwd=ROOT)
        processes.append(envoy)
        wait_until(envoy_ready, 30, "Envoy")

        if args.smoke:
            smoke()
            return 0
        print(f"""
llm-failover demo is up: Envoy on 127.0.0.1:{LISTENER}, admin on 127.0.0.1:{ADMIN}.
Mock providers: openai :18081 (fails on a schedule: 429, 200, 200, 503, ...), openrouter :18082,
ollama :18083 (speaks Ollama's native /api/chat: the filter translates). Try:

  {CURL_FAILOVER}

      The first answer comes from openrouter (x-llm-provider), after 2 attempts (x-llm-attempts):
      openai answered 429. Run it again: openai is cooling down and skipped (x-llm-skipped).

  {CURL_STATS}

      What the filter counted: requests, failovers by provider and reason, skips.

  {CURL_HEALTH}

      Every provider's breaker, cooldown, latency and budget (docs/operations.md, docs/runbook.md).

  Status page: {STATUS_PAGE}

      The same in a browser, with reset buttons; it asks for the admin secret ({ADMIN_SECRET}).

Ctrl-C stops everything.
""", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        envoy.wait()
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    sys.exit(main())
