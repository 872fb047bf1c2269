"""The mixed-fault run: mock providers failing in each way the filter fails over on, the traffic
16 clients send through Envoy, and what must hold afterwards.

One definition for two runs: tests/e2e/test_chaos.py (2,000 requests, part of `make test`) and
scripts/soak.py (`make soak`, 20 minutes). Both start a `ChaosRun`, send traffic, and fail on
any of its `problems()`.
"""

from __future__ import annotations

import collections
import http.client
import itertools
import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import harness
from envoy_config import Provider, start_gateway
from fake_api import anthropic, gemini
from mock_provider import MockProvider, Received, openai_error

CHAT_PATH = "/v1/chat/completions"
PER_TRY_TIMEOUT_S = 1
ROUTE_TIMEOUT_S = 10
CLIENT_TIMEOUT_S = 15
# A slow answer comes after twice the per-try timeout: Envoy has given up on it and moved on.
SLOW_ANSWER_S = 2 * PER_TRY_TIMEOUT_S
RETRY_AFTER_S = 1
STREAMED_SHARE = 0.2
# Models no chain names: each leaves a model record in the health table when it fails, so a long
# run keeps the table at its bound.
MADE_UP_MODEL_SHARE = 0.1
MODELS = ("gpt-4o", "gpt-4o-mini", "o3")
# Every credential a client may send; none may reach a provider.
CLIENT_CREDENTIALS = {"authorization": "Bearer sk-chaos-client", "x-api-key": "sk-chaos-client-x",
                      "api-key": "sk-chaos-client-azure", "x-goog-api-key": "sk-chaos-client-goog",
                      "cookie": "session=sk-chaos-client-cookie"}
# The filter's failover reason (`provider.<p>.failover.<reason>`) for each kind of fault.
REASONS = {"unauthorized": "unauthorized", "server_error": "server_error", "rate_limited": "rate_limited",
           "reset": "no_response", "slow": "no_response"}
STATUS = {"unauthorized": 401, "server_error": 503, "rate_limited": 429}
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class FaultyProvider:
    """A mock provider: the API it speaks, the key it takes (and in which header), and the
    share of the attempts it gets that it fails, by kind of fault."""
    name: str
    format: str
    key: str
    key_header: tuple[str, str]
    faults: tuple[tuple[str, float], ...] = ()
    model: str | None = None

    def fault_for(self, roll: float) -> str | None:
        for kind, share in self.faults:
            if roll < share:
                return kind
            roll -= share
        return None


# The chain, in order. `c` never fails, so every request has a healthy provider to end on.
PROVIDERS = (
    # A revoked key: its first attempts get 401, then it stays out until an operator resets it.
    FaultyProvider("revoked", "openai", "sk-chaos-revoked", ("authorization", "Bearer sk-chaos-revoked"),
                   (("unauthorized", 1.0),)),
    FaultyProvider("a", "openai", "sk-chaos-a", ("authorization", "Bearer sk-chaos-a"),
                   (("server_error", 0.18), ("rate_limited", 0.10), ("reset", 0.06), ("slow", 0.06))),
    # Anthropic's own errors (529 overloaded, 429 with retry-after), answers translated to OpenAI's.
    FaultyProvider("b", "anthropic", "sk-chaos-b", ("x-api-key", "sk-chaos-b"),
                   (("server_error", 0.15), ("rate_limited", 0.10)), model="claude-sonnet-4-5"),
    FaultyProvider("c", "gemini", "sk-chaos-c", ("x-goog-api-key", "sk-chaos-c"), model="gemini-2.5-flash"),
)
# Few consecutive failures open a provider's breaker, and cooldowns are short, so the faulty
# providers keep getting attempts (and failing them) instead of sitting out the run.
BREAKER = {"consecutiveFailures": 4}
COOLDOWNS = {"failureBase": "250ms", "failureMax": "2s"}


def error_answer(fmt: str, kind: str, number: int) -> dict:
    """A fault as a status answer in the provider's own format."""
    status = STATUS[kind]
    retry_after = RETRY_AFTER_S if kind == "rate_limited" else None
    if fmt == "anthropic":
        status, error_type = {401: (401, "authentication_error"), 429: (429, "rate_limit_error"),
                              503: (529, "overloaded_error")}[status]
        spec = anthropic.error_spec(status, error_type, f"chaos {kind}", number)
        if retry_after is not None:
            spec["headers"] = {"retry-after": str(retry_after)}
        return spec
    if fmt == "gemini":
        return gemini.error_spec(status, retry_after=retry_after)
    return openai_error(status, f"chaos {kind}", retry_after=retry_after)


class FaultyMock:
    """A started mock of a FaultyProvider; `answers` counts what it did, by kind
    (`answered` for a good answer)."""

    def __init__(self, plan: FaultyProvider, seed: int):
        self.plan = plan
        self.answers: collections.Counter[str] = collections.Counter()
        self._rng = random.Random(f"{seed}:{plan.name}")
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._answer = {"openai": lambda _request: {"echo": True},
                        "anthropic": anthropic.responder(plan.name, plan.key),
                        "gemini": gemini.responder(plan.name, plan.key)}[plan.format]
        self.mock = MockProvider(plan.name).start()
        self.mock.set_default(self._respond)

    def _respond(self, request: Received) -> dict:
        with self._lock:
            kind = self.plan.fault_for(self._rng.random()) or "answered"
            self.answers[kind] += 1
            number = next(self._numbers)
        if kind == "reset":
            return {"close": True}
        if kind in ("answered", "slow"):
            answer = self._answer(request)
            return {**answer, "delay": SLOW_ANSWER_S} if kind == "slow" else answer
        return error_answer(self.plan.format, kind, number)

    def provider(self) -> Provider:
        return Provider(self.plan.name, self.mock.port, format=self.plan.format, key_env=f"CHAOS_KEY_{self.plan.name.upper()}",
                        key=self.plan.key, models={"*": self.plan.model} if self.plan.model else {},
                        cooldowns=COOLDOWNS, attempt_extra={"breaker": BREAKER})


# ---------------------------------------------------------------- traffic

@dataclass(frozen=True)
class ChatRequest:
    index: int
    body: dict
    streamed: bool


def chat_request(index: int) -> ChatRequest:
    """The index-th request of a run: the same for every run, whichever client sends it."""
    rng = random.Random(index)
    model = rng.choice(MODELS) if rng.random() >= MADE_UP_MODEL_SHARE else f"made-up-{rng.randrange(10**6)}"
    streamed = rng.random() < STREAMED_SHARE
    body = {"model": model, "messages": [{"role": "user", "content": "chaos " * rng.randrange(1, 200)}]}
    return ChatRequest(index, {**body, "stream": True} if streamed else body, streamed)


@dataclass(frozen=True)
class Answer:
    request: ChatRequest
    provider: str | None
    attempts: int
    problem: str | None  # why this is not a complete answer; None when it is


def send(port: int, request: ChatRequest) -> Answer:
    body = json.dumps(request.body).encode()
    headers = {"content-type": "application/json", **CLIENT_CREDENTIALS}
    try:
        if request.streamed:
            status, answer_headers, chunks = harness.http_stream(port, CHAT_PATH, body, headers, timeout=CLIENT_TIMEOUT_S)
            answer = b"".join(data for _, data in chunks)
        else:
            response = harness.http_request(port, "POST", CHAT_PATH, body, headers, timeout=CLIENT_TIMEOUT_S)
            status, answer_headers, answer = response.status, response.headers, response.body
    except (OSError, http.client.HTTPException) as error:
        return Answer(request, None, 0, f"no answer: {error!r}")
    provider = answer_headers.get("x-llm-provider")
    attempts = answer_headers.get("x-llm-attempts", "")
    attempts = int(attempts) if attempts.isdigit() else 0
    if status != 200:
        problem = f"{status}: {answer[:300]!r}"
    else:
        expected = f"hello from {provider}"
        problem = stream_problem(answer, expected) if request.streamed else completion_problem(answer, expected)
    return Answer(request, provider, attempts, problem)


def completion_problem(body: bytes, expected_text: str) -> str | None:
    try:
        choice = json.loads(body)["choices"][0]
        text, finish = choice["message"]["content"], choice["finish_reason"]
    except (ValueError, KeyError, IndexError, TypeError):
        return f"not a whole chat completion: {body[:300]!r}"
    if (text, finish) != (expected_text, "stop"):
        return f"answer {text!r} ({finish}), expected {expected_text!r} (stop)"
    return None


def stream_problem(body: bytes, expected_text: str) -> str | None:
    """An OpenAI-style stream is whole when its chunks parse, say the expected text, finish with
    `stop` and end with `data: [DONE]`."""
    data = [line[len("data:"):].strip() for line in body.decode(errors="replace").splitlines() if line.startswith("data:")]
    if not data or data[-1] != "[DONE]":
        return f"stream does not end with data: [DONE]: {body[-300:]!r}"
    text, finishes = "", []
    for event in data[:-1]:
        try:
            choices = json.loads(event)["choices"]
        except (ValueError, KeyError, TypeError):
            return f"stream event not a chunk: {event[:300]!r}"
        for choice in choices:
            text += choice.get("delta", {}).get("content") or ""
            if choice.get("finish_reason"):
                finishes.append(choice["finish_reason"])
    if (text, finishes) != (expected_text, ["stop"]):
        return f"stream said {text!r} {finishes}, expected {expected_text!r} ['stop']"
    return None


class Tally:
    """What the clients got: counts, and the first problems."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.streamed = 0
        self.attempts = 0
        self.served: collections.Counter[str] = collections.Counter()
        self.lost = 0
        self.first_lost: list[str] = []

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.requests += 1
            self.streamed += answer.request.streamed
            self.attempts += answer.attempts
            if answer.problem is None:
                self.served[answer.provider] += 1
            else:
                self.lost += 1
                if len(self.first_lost) < MAX_PROBLEMS:
                    kind = "stream" if answer.request.streamed else "request"
                    self.first_lost.append(f"{kind} {answer.request.index} ({answer.request.body['model']}, "
                                           f"from {answer.provider}): {answer.problem}")


# ---------------------------------------------------------------- the run

class ChaosRun:
    """The faulty mocks and an Envoy (2 workers) with the filter in front of them, on 127.0.0.1."""

    def __init__(self, work_dir: Path, seed: int = 0, **gateway_options):
        self.mocks: list[FaultyMock] = []
        self.envoy: harness.Envoy | None = None
        self.tally = Tally()
        self.clients = 0
        try:
            self.mocks = [FaultyMock(plan, seed) for plan in PROVIDERS]
            self.envoy = start_gateway(work_dir, [m.provider() for m in self.mocks],
                                       per_try_timeout=f"{PER_TRY_TIMEOUT_S}s", route_timeout=f"{ROUTE_TIMEOUT_S}s",
                                       **gateway_options)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        for mock in self.mocks:
            mock.mock.stop()

    def start_clients(self, clients: int, count: int | None = None, until: float | None = None) -> list[threading.Thread]:
        """`clients` threads sending requests 0, 1, 2... until `count` are sent or the monotonic
        time `until`; they stop early once MAX_PROBLEMS requests were lost."""
        indexes = itertools.count()
        lock = threading.Lock()
        port = self.envoy.listener_ports[0]
        self.clients = clients

        def client() -> None:
            while self.tally.lost < MAX_PROBLEMS and (until is None or time.monotonic() < until):
                with lock:
                    index = next(indexes)
                if count is not None and index >= count:
                    return
                self.tally.add(send(port, chat_request(index)))

        threads = [threading.Thread(target=client, name=f"chaos-client-{i}", daemon=True) for i in range(clients)]
        for thread in threads:
            thread.start()
        return threads

    def counters(self) -> dict[str, int]:
        """The filter's counters, once every answer the clients got is counted (a stream is
        counted when it ends, which may be just after the client read its last bytes)."""
        deadline = time.monotonic() + 5
        while True:
            stats = self.envoy.stats()
            served = sum(stats.get(f"wasmcustom.llm_failover.provider.{m.plan.name}.served", 0) for m in self.mocks)
            if served >= sum(self.tally.served.values()) or time.monotonic() > deadline:
                return stats
            time.sleep(0.1)

    def report(self, stats: dict[str, int]) -> dict:
        """Counts of the run: at each provider, what the mock did and what the filter counted."""
        def counted(name: str) -> int:
            return stats.get(f"wasmcustom.llm_failover.{name}", 0)

        providers = {}
        for m in self.mocks:
            p = m.plan.name
            providers[p] = {
                "mock": dict(sorted(m.answers.items())),
                "attempts": counted(f"provider.{p}.attempts"),
                "served": counted(f"provider.{p}.served"),
                "skipped": counted(f"provider.{p}.skipped"),
                "failover": {reason: counted(f"provider.{p}.failover.{reason}")
                             for reason in ("unauthorized", "server_error", "rate_limited", "connect_failure", "no_response")
                             if counted(f"provider.{p}.failover.{reason}")},
            }
        attempts = sum(len(m.mock.requests) for m in self.mocks)
        faults = sum(n for m in self.mocks for kind, n in m.answers.items() if kind != "answered")
        return {"requests": self.tally.requests, "streamed": self.tally.streamed, "lost": self.tally.lost,
                "served_by": dict(sorted(self.tally.served.items())), "attempts": attempts, "faults": faults,
                "fault_share": round(faults / attempts, 3) if attempts else 0.0,
                "failovers": sum(sum(p["failover"].values()) for p in providers.values()),
                "filter_requests": counted("requests"), "exhausted": counted("exhausted"),
                "last_resort": counted("last_resort"), "retries_cut_short": counted("retries_cut_short"),
                "providers": providers}

    def problems(self, stats: dict[str, int], log: str) -> list[str]:
        """Everything that must hold after a run; empty when it all does."""
        report = self.report(stats)
        return (lost_requests(self.tally) + key_leaks(self.mocks, log) + vm_problems(log, stats)
                + accounting_problems(report, self.tally) + revoked_problems(report, self.clients))


# ---------------------------------------------------------------- checks

def lost_requests(tally: Tally) -> list[str]:
    """`c` never fails: every request must get a whole answer."""
    if not tally.lost:
        return []
    return [f"{tally.lost} of {tally.requests} requests lost while `c` was healthy"] + tally.first_lost


def key_leaks(mocks: list[FaultyMock], log: str) -> list[str]:
    """Each provider saw its own key, in its own header, on every attempt, and no other secret
    (another provider's key or a client's credential) anywhere in the request; Envoy's log has none."""
    secrets = {m.plan.name: m.plan.key for m in mocks}
    client = [value.split()[-1].split("=")[-1] for value in CLIENT_CREDENTIALS.values()]
    found = [f"Envoy's log holds {secret!r}" for secret in [*secrets.values(), *client] if secret in log]
    for m in mocks:
        foreign = [s for name, s in secrets.items() if name != m.plan.name] + client
        header, value = m.plan.key_header
        for request in m.mock.requests:
            if request.header_values(header) != [value]:
                found.append(f"{m.plan.name} got {header}: {request.header_values(header)}, not its key")
            for secret in foreign:
                if secret.encode() in request.body or any(secret in v for _, v in request.header_list):
                    found.append(f"{m.plan.name} got another's secret {secret!r}")
            if len(found) >= MAX_PROBLEMS:
                return found
    return found


def vm_problems(log: str, stats: dict[str, int]) -> list[str]:
    """No panic, no VM failure or reload, in the log or in Envoy's wasm stats."""
    lines = [f"log: {line}" for line in log.splitlines()
             if any(word in line.lower() for word in ("panicked", "vm failed", "reload", "runtimeerror"))]
    counted = [f"stat {name} = {value}" for name, value in stats.items()
               if name.startswith("wasm.") and ("reload" in name or "fail" in name) and value]
    if "wasm.llm_failover.vm_reload" not in stats:
        counted.append("no stat wasm.llm_failover.vm_reload: reloads cannot be told")
    return (lines + counted)[:MAX_PROBLEMS]


def accounting_problems(report: dict, tally: Tally) -> list[str]:
    """The filter's counters against what the mocks did and what the clients got: every fault
    was counted as a failover under its reason, every answer as served by the provider whose
    name the client got, and every attempt reached a mock."""
    found = []
    if report["filter_requests"] != tally.requests:
        found.append(f"filter counted {report['filter_requests']} requests, clients sent {tally.requests}")
    if report["attempts"] != tally.attempts:
        found.append(f"mocks got {report['attempts']} attempts, x-llm-attempts add up to {tally.attempts}")
    for name, p in report["providers"].items():
        mock, failover = p["mock"], p["failover"]
        requests = sum(mock.values())
        if p["attempts"] != requests:
            found.append(f"{name}: filter counted {p['attempts']} attempts, the mock got {requests}")
        # An answer can come after Envoy's per-try timeout ended its attempt (a loaded machine):
        # the mock answered, the filter counted no_response. Those are the only extra ones.
        dropped = mock.get("reset", 0) + mock.get("slow", 0)
        unanswered = failover.get("no_response", 0) + failover.get("connect_failure", 0)
        late = unanswered - dropped
        answered = mock.get("answered", 0)
        if late < 0:
            found.append(f"{name}: the mock reset or was slow {dropped} times, the filter counted "
                         f"{failover.get('no_response', 0)} no_response and {failover.get('connect_failure', 0)} "
                         f"connect_failure")
        if not p["served"] == tally.served.get(name, 0) == answered - max(late, 0):
            found.append(f"{name}: filter counted {p['served']} served, the mock answered {answered} "
                         f"({max(late, 0)} after Envoy gave up), clients got {tally.served.get(name, 0)} answers from it")
        if late > max(2, answered // 100):
            found.append(f"{name}: {late} answers came after the per-try timeout: the machine is too loaded to tell")
        for kind in STATUS:
            if failover.get(REASONS[kind], 0) != mock.get(kind, 0):
                found.append(f"{name}: filter counted {failover.get(REASONS[kind], 0)} {REASONS[kind]}, "
                             f"the mock answered {mock.get(kind, 0)} {kind}")
    if report["exhausted"] or report["retries_cut_short"]:
        found.append(f"exhausted {report['exhausted']}, retries cut short {report['retries_cut_short']}")
    return found


def revoked_problems(report: dict, clients: int) -> list[str]:
    """`revoked` was tried, and after its first 401 left out of every request: only those
    already routed (one per client at most) reached it."""
    revoked = report["providers"]["revoked"]
    if 1 <= revoked["attempts"] <= clients and revoked["attempts"] + revoked["skipped"] == report["requests"]:
        return []
    return [f"revoked: {revoked['attempts']} attempts and {revoked['skipped']} skips in {report['requests']} requests "
            f"from {clients} clients: it did not stay out after its 401"]


def fault_problems(report: dict, at_least: int) -> list[str]:
    """The run was not vacuous: each fault of the mix happened at least `at_least` times."""
    return [f"{plan.name}: {kind} happened {report['providers'][plan.name]['mock'].get(kind, 0)} times, "
            f"fewer than {at_least}"
            for plan in PROVIDERS for kind, _ in plan.faults
            if report["providers"][plan.name]["mock"].get(kind, 0) < at_least and plan.name != "revoked"]
