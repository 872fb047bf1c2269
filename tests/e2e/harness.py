"""Envoy processes and HTTP helpers for the end-to-end tests.

Every Envoy started here is recorded in `started_envoys` so conftest.py can
print its log when a test fails and make sure it is stopped.
"""

from __future__ import annotations

import atexit
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

LOOPBACK = "127.0.0.1"
ENVOY_BINARY = os.environ.get("ENVOY_BIN", "envoy")
STOP_GRACE_S = 5.0
POLL_INTERVAL_S = 0.05
LOG_TAIL_LINES = 200

started_envoys: list["Envoy"] = []
WASM_SCOPE = re.compile(r"^cluster\.[^.]+\.(?=wasmcustom\.)")

# Distinct per process and per instance so concurrent Envoys (other test
# runs, a demo in another shell) never share hot-restart shared memory.
_base_ids = itertools.count((os.getpid() % 40_000) * 100 + 1)


def stop_all_envoys() -> None:
    for envoy in started_envoys:
        envoy.stop()


# A last resort for scripts and crashed sessions: never leave Envoys behind.
atexit.register(stop_all_envoys)


def concurrently(count: int, call, timeout: float = 10) -> list:
    """`call(i)` for i in range(count), all released at once (a barrier), results in order."""
    start = threading.Barrier(count)

    def one(i):
        start.wait(timeout=timeout)
        return call(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_accepts(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


# ---------------------------------------------------------------- HTTP

@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode(errors="replace")


def _lower_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in pairs:
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 10) -> Response:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, _lower_headers(resp.getheaders()), resp.read())
    finally:
        conn.close()


def http_stream(port: int, path: str, body: bytes, headers: dict[str, str] | None = None,
                timeout: float = 15) -> tuple[int, dict[str, str], list[tuple[float, bytes]]]:
    """POSTs and reads the response body piece by piece as it arrives.

    Returns (status, headers, [(monotonic arrival time, bytes), ...]).
    Raises TimeoutError if the body is not complete within `timeout`.
    """
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        sock = conn.sock  # getresponse() may hand the socket over to the response
        resp = conn.getresponse()
        chunks: list[tuple[float, bytes]] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"stream not finished after {timeout}s; got {len(chunks)} chunks")
            sock.settimeout(remaining)
            data = resp.read1(65536)
            if not data:
                break
            chunks.append((time.monotonic(), data))
        return resp.status, _lower_headers(resp.getheaders()), chunks
    finally:
        conn.close()


# ---------------------------------------------------------------- Envoy

class Envoy:
    """One Envoy process running a given YAML config.

    admin_port: if omitted, taken from the `admin:` section of the YAML.
    listener_ports: ports that must accept TCP before start() returns; the
    first is the default target of the HTTP helpers.
    """

    def __init__(self, yaml_text: str, tmp_path: Path | str, concurrency: int = 2,
                 admin_port: int | None = None, listener_ports: Iterable[int] = ()):
        self.yaml_text = yaml_text
        self.concurrency = concurrency
        self.admin_port = admin_port if admin_port is not None else admin_port_from_yaml(yaml_text)
        self.listener_ports = list(listener_ports)
        self.base_id = next(_base_ids)
        self.dir = Path(tmp_path)
        self.dir.mkdir(parents=True, exist_ok=True)
        stem = _unused_stem(self.dir)
        self.config_path = self.dir / f"{stem}.yaml"
        self.log_path = self.dir / f"{stem}.log"
        self.stdout_path = self.dir / f"{stem}.stdout"
        self.stderr_path = self.dir / f"{stem}.stderr"
        self.config_path.write_text(yaml_text)
        self.process: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"Envoy(base_id={self.base_id}, admin={self.admin_port}, listeners={self.listener_ports})"

    def __enter__(self) -> "Envoy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- lifecycle

    def command(self) -> list[str]:
        return [
            ENVOY_BINARY, "-c", str(self.config_path),
            "--concurrency", str(self.concurrency),
            "--base-id", str(self.base_id),
            "--log-level", "info",
            "--log-path", str(self.log_path),
            # Envoy flushes its log file every 10 s by default; tests read it right away.
            "--file-flush-interval-msec", "50",
        ]

    def launch(self) -> "Envoy":
        """Starts the process without waiting for it to become ready."""
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True)
        started_envoys.append(self)
        return self

    def start(self, timeout: float = 20) -> "Envoy":
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                self.stop()
                raise RuntimeError(
                    f"envoy exited with {self.process.returncode} during startup:\n"
                    f"{tail(self.output())}")
            if self._ready():
                return self
            time.sleep(POLL_INTERVAL_S)
        self.stop()
        raise TimeoutError(f"envoy not ready after {timeout}s:\n{tail(self.output())}")

    def _ready(self) -> bool:
        if self.admin_port is not None:
            try:
                if self.admin_get("/ready", timeout=1).status != 200:
                    return False
            except OSError:
                return False
        return all(port_accepts(port) for port in self.listener_ports)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_GRACE_S)
        if self.process is not None and not self.running:
            self._remove_shared_memory()

    def _remove_shared_memory(self) -> None:
        # Envoy leaves its hot-restart segment behind even on a clean exit.
        try:
            os.unlink(f"/dev/shm/envoy_shared_memory_{self.base_id * 10}")
        except OSError:
            pass

    def wait_exit(self, timeout: float) -> int | None:
        """Waits for the process to exit by itself; its return code, or None if still running."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    # -- output

    def log(self) -> str:
        return read_text(self.log_path)

    def output(self) -> str:
        """Log file, stdout and stderr together."""
        parts = [("log", self.log()), ("stdout", read_text(self.stdout_path)),
                 ("stderr", read_text(self.stderr_path))]
        return "\n".join(f"--- envoy {name} ---\n{text}" for name, text in parts if text.strip())

    def wait_for_log(self, pattern: str, timeout: float = 5) -> re.Match:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log())
            if match:
                return match
            if time.monotonic() >= deadline:
                raise TimeoutError(f"log never matched {pattern!r} within {timeout}s")
            time.sleep(POLL_INTERVAL_S)

    # -- admin

    def admin_get(self, path: str, timeout: float = 5) -> Response:
        if self.admin_port is None:
            raise ValueError("this Envoy has no admin port")
        return http_request(self.admin_port, "GET", path, timeout=timeout)

    def admin_post(self, path: str, timeout: float = 5) -> Response:
        if self.admin_port is None:
            raise ValueError("this Envoy has no admin port")
        return http_request(self.admin_port, "POST", path, body=b"", timeout=timeout)

    def stats(self) -> dict[str, int]:
        """Counters and gauges, name -> value (histograms are left out). Envoy 1.36-1.38 put the
        filter's metrics under the cluster whose filter made the VM
        (`cluster.llm_failover~a.wasmcustom.…`): they are named here as 1.39 and later name them."""
        doc = self.admin_get("/stats?format=json").json()
        return {WASM_SCOPE.sub("", entry["name"]): entry["value"] for entry in doc.get("stats", [])
                if "name" in entry and isinstance(entry.get("value"), int)}

    def wait_for_stat(self, name: str, at_least: int = 1, timeout: float = 5) -> int:
        deadline = time.monotonic() + timeout
        while True:
            value = self.stats().get(name, 0)
            if value >= at_least:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"stat {name} = {value}, wanted >= {at_least} within {timeout}s")
            time.sleep(POLL_INTERVAL_S)

    # -- traffic through the first (or a given) listener

    def _listener(self, port: int | None) -> int:
        if port is not None:
            return port
        if not self.listener_ports:
            raise ValueError("no listener_ports given to Envoy()")
        return self.listener_ports[0]

    def post_json(self, path: str, obj: Any, headers: dict[str, str] | None = None,
                  timeout: float = 10, port: int | None = None) -> Response:
        all_headers = {"content-type": "application/json", **(headers or {})}
        return self.post_raw(path, json.dumps(obj).encode(), all_headers, timeout, port=port)

    def post_raw(self, path: str, body_bytes: bytes, headers: dict[str, str] | None = None,
                 timeout: float = 10, port: int | None = None) -> Response:
        return http_request(self._listener(port), "POST", path, body_bytes, headers, timeout)

    def get(self, path: str, headers: dict[str, str] | None = None, timeout: float = 10,
            port: int | None = None) -> Response:
        return http_request(self._listener(port), "GET", path, None, headers, timeout)

    def stream(self, path: str, obj: Any, headers: dict[str, str] | None = None,
               timeout: float = 15, port: int | None = None
               ) -> tuple[int, dict[str, str], list[tuple[float, bytes]]]:
        all_headers = {"content-type": "application/json", **(headers or {})}
        return http_stream(self._listener(port), path, json.dumps(obj).encode(),
                           all_headers, timeout)

    # -- config checks

    @staticmethod
    def validate(yaml_path: Path | str, timeout: float = 30) -> tuple[bool, str]:
        result = subprocess.run(
            [ENVOY_BINARY, "--mode", "validate", "-c", str(yaml_path),
             "--base-id", str(next(_base_ids))],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        return result.returncode == 0, result.stdout + result.stderr


class EnvoyOutput(str):
    """Text of a run; .returncode is None if Envoy had to be killed."""
    returncode: int | None

    @property
    def refused(self) -> bool:
        return self.returncode is not None and self.returncode != 0


def run_envoy_expect_failure(yaml_text: str, tmp_path: Path | str, timeout: float = 20) -> EnvoyOutput:
    """Starts Envoy on a config it should refuse; returns everything it printed.

    If Envoy is still running after `timeout` it is killed, a marker line is
    appended and .returncode is None: the config was not refused.
    """
    envoy = Envoy(yaml_text, tmp_path, admin_port=None).launch()
    returncode = envoy.wait_exit(timeout)
    envoy.stop()
    text = envoy.output()
    if returncode is None:
        text += f"\n[harness] envoy still running after {timeout}s; killed\n"
    result = EnvoyOutput(text)
    result.returncode = returncode
    return result


# ---------------------------------------------------------------- helpers

def admin_port_from_yaml(yaml_text: str) -> int | None:
    """The first port_value inside the top-level `admin:` block, if any."""
    match = re.search(r"^admin:\s*\n((?:[ \t]+.*\n?|\s*\n)*)", yaml_text, re.MULTILINE)
    if not match:
        return None
    port = re.search(r"port_value:\s*(\d+)", match.group(1))
    return int(port.group(1)) if port else None


def _unused_stem(directory: Path) -> str:
    for n in range(1, 10_000):
        stem = "envoy" if n == 1 else f"envoy-{n}"
        if not (directory / f"{stem}.yaml").exists():
            return stem
    raise RuntimeError(f"too many envoy configs in {directory}")


def envoy_available() -> bool:
    return shutil.which(ENVOY_BINARY) is not None
