"""Config changes under load, made the way a control plane makes them: Envoy reads its listeners
and clusters from files (file-based xDS: LDS and CDS), and each update renames a new file over
the old one while 16 clients send chat requests. What a reload keeps and what it resets is
docs/operations.md, "What a config reload keeps and resets"."""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

import harness
from envoy_config import Provider, envoy_version, render, walk
from mock_provider import Received, openai_error

CHAT_PATH = "/v1/chat/completions"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}
HEALTH = "/llm-failover/health"
SECRET = "s3cret-admin-token-for-reload-tests"
ADMIN_HEADERS = {"x-llm-failover-admin-secret": SECRET}
CLIENTS = 16
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization")
KEYS = {"a": ("sk-a-old", "sk-a-new"), "b": ("sk-b",), "c": ("sk-c",)}


class FileXds:
    """Envoy's listeners and clusters in two files, each in a directory Envoy watches
    (`watched_directory`): a new version is written beside the file and renamed over it, so
    Envoy never reads half a file."""

    def __init__(self, directory: Path, admin_port: int, listener_port: int):
        self.dir = directory
        self.admin_port, self.listener_port = admin_port, listener_port
        self.staged = itertools.count(1)

    def source(self, kind: str) -> dict:
        return {"resource_api_version": "V3", "path_config_source": {
            "path": str(self.dir / kind / f"{kind}.json"), "watched_directory": {"path": str(self.dir / kind)}}}

    def start(self, rendered: str) -> harness.Envoy:
        """Envoy on the rendered bootstrap, its static listeners and clusters moved to LDS and CDS."""
        bootstrap = json.loads(rendered)
        resources = bootstrap.pop("static_resources")
        for kind in ("lds", "cds"):
            (self.dir / kind).mkdir(parents=True)
        self.write("lds", resources["listeners"])
        self.write("cds", resources["clusters"])
        bootstrap["node"] = {"id": "llm-failover-reload-test", "cluster": "llm-failover"}
        bootstrap["dynamic_resources"] = {"lds_config": self.source("lds"), "cds_config": self.source("cds")}
        envoy = harness.Envoy(json.dumps(bootstrap, indent=1), self.dir, admin_port=self.admin_port,
                              listener_ports=[self.listener_port])
        return envoy.start(timeout=40)

    def write(self, kind: str, resources: list[dict]) -> None:
        type_url = LISTENER if kind == "lds" else CLUSTER
        target = self.dir / kind / f"{kind}.json"
        staged = target.with_name(f".{kind}-{next(self.staged)}.json")
        staged.write_text(json.dumps({"resources": [{"@type": type_url, **r} for r in resources]}))
        os.rename(staged, target)

    def update(self, envoy: harness.Envoy, rendered: str, order: tuple[str, str], timeout: float = 20) -> None:
        """Replaces both files, one after the other in `order`, each once Envoy has applied the
        one before."""
        resources = json.loads(rendered)["static_resources"]
        for kind in order:
            counter = {"lds": "listener_manager.lds.update_success", "cds": "cluster_manager.cds.update_success"}[kind]
            before = envoy.stats()[counter]
            self.write(kind, resources["listeners" if kind == "lds" else "clusters"])
            envoy.wait_for_stat(counter, at_least=before + 1, timeout=timeout)
            wait_until(lambda: warmed(envoy), timeout, f"{kind}: still warming after {timeout}s")
        stats = envoy.stats()
        assert (stats["cluster_manager.cds.update_rejected"], stats["listener_manager.lds.update_rejected"]) == (0, 0)


def warmed(envoy: harness.Envoy) -> bool:
    stats = envoy.stats()
    return stats.get("cluster_manager.warming_clusters", 0) == 0 and stats.get("listener_manager.total_listeners_warming", 0) == 0


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


class Load:
    """16 clients, each sending one chat request after another (new connection, 10 s timeout)
    until stopped, for at most `limit_s`."""

    def __init__(self, port: int, limit_s: float = 45):
        self.port, self.limit_s = port, limit_s
        self.answers: list[tuple[int, str]] = []   # (status, x-llm-provider or the body)
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        deadline = time.monotonic() + self.limit_s
        body = json.dumps(CHAT).encode()
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                response = harness.http_request(self.port, "POST", CHAT_PATH, body,
                                                {"content-type": "application/json"}, timeout=10)
                answer, error = (response.status, response.headers.get("x-llm-provider") or response.text()[:300]), None
            except OSError as failure:
                answer, error = None, repr(failure)
            with self.lock:
                if error:
                    self.errors.append(error)
                else:
                    self.answers.append(answer)

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def done(self) -> int:
        with self.lock:
            return len(self.answers) + len(self.errors)

    def wait_for(self, more: int, timeout: float = 30) -> None:
        """Until the clients have had `more` answers (or errors) from now."""
        target = self.done() + more
        wait_until(lambda: self.done() >= target, timeout, f"the clients had fewer than {more} answers in {timeout}s")


def vm_configs(bootstrap):
    """Every `vm_config` of the filter in a bootstrap."""
    return (node for node in walk(bootstrap) if node.get("vm_id") == "llm_failover")


def new_vm_for_a_new_environment() -> bool:
    """Envoy 1.36-1.38 keep a VM whose vm_config changed only in its environment, with the old
    environment (envoyproxy/envoy#40881; 1.39 makes a new VM, #44563): there a key pushed in the
    config reaches the filter only with a new VM, which a new `vm_config.configuration` makes."""
    return envoy_version() >= (1, 39)


def report(envoy) -> dict:
    response = envoy.get(HEALTH, headers=ADMIN_HEADERS)
    assert response.status == 200, response.text()
    return {p["name"]: p for p in response.json()["providers"]}


def cooldown_of_model(entry: dict, name: str = "gpt-4o"):
    return next((m["cooldownRemainingS"] for m in entry["models"] if m["model"] == name), None)


def accepts_only(key: str):
    """A provider that has revoked every key but `key`."""
    def answer(request: Received) -> dict:
        return {"echo": True} if request.header("authorization") == f"Bearer {key}" else openai_error(401)
    return answer


@pytest.mark.core
@pytest.mark.parametrize("order", [("cds", "lds"), ("lds", "cds")], ids=["cds-then-lds", "lds-then-cds"])
def test_reloads_under_load_keep_health_unless_the_provider_changed(tmp_path, mock, order):
    """CDS then LDS is the order an xDS server keeps; with two files replaced one by one, LDS
    may come first. Either way: no request fails, a provider whose config did not change keeps
    its health, and `a`, whose key changes, starts clean and gets only its new key."""
    a, b, c = mock("a"), mock("b"), mock("c")
    listener, admin = harness.free_port(), harness.free_port()
    a.set_default(accepts_only("sk-a-new"))   # the old key is revoked: `a` waits for the new one
    c.script(openai_error(429, retry_after=600))

    def config(a_key="sk-a-old", b_cooldowns=None, chains=None, connect_timeout=None, vm_configuration=None) -> str:
        providers = [Provider("a", a.port, key_env="A_KEY", key=a_key),
                     Provider("c", c.port, key_env="C_KEY", key="sk-c"),
                     Provider("b", b.port, key_env="B_KEY", key="sk-b", cooldowns=b_cooldowns or {})]
        rendered = render(listener_port=listener, admin_port=admin, providers=providers,
                          chains={"default": ["a", "c", "b"], **(chains or {})},
                          extra_env={"LLM_ADMIN_SECRET": SECRET},
                          router_extra={"admin": {"path": HEALTH, "secretEnv": "LLM_ADMIN_SECRET"}})
        bootstrap = json.loads(rendered)
        for cluster in bootstrap["static_resources"]["clusters"]:
            cluster["connect_timeout"] = connect_timeout or cluster["connect_timeout"]
        for vm in vm_configs(bootstrap) if vm_configuration else ():
            vm["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": vm_configuration}
        return json.dumps(bootstrap)

    xds = FileXds(tmp_path / "xds", admin, listener)
    envoy = xds.start(config())
    first = envoy.post_json(CHAT_PATH, CHAT)
    assert (first.status, first.headers["x-llm-provider"]) == (200, "b"), first.text()
    # An operator's reset in between: what is learned after it must survive a reload too.
    assert envoy.post_raw(f"{HEALTH}/reset?provider=c", b"", headers=ADMIN_HEADERS).status == 200
    c.script(openai_error(429, retry_after=600))
    again = envoy.post_json(CHAT_PATH, CHAT)
    assert (again.headers["x-llm-provider"], again.headers["x-llm-skipped"]) == ("b", "a"), again.headers
    before = report(envoy)
    assert before["a"]["cooldownRemainingS"] == "until-reset"
    assert 595 <= cooldown_of_model(before["c"]) <= 600
    log_from = len(envoy.log())
    started = time.monotonic()

    with Load(listener) as load:
        load.wait_for(200)
        # (1) The router role's config changes (`b`'s cooldowns, a new chain): LDS. Every
        # cluster's connect timeout changes: CDS. No provider's fingerprint changes.
        xds.update(envoy, config(b_cooldowns={"rateLimited": "7s"}, chains={"spare": ["c", "b"]},
                                 connect_timeout="0.75s"), order)
        load.wait_for(200)
        after_first = report(envoy)
        # (2) Another such change: the chain goes, the timeout comes back.
        xds.update(envoy, config(b_cooldowns={"rateLimited": "9s"}), order)
        load.wait_for(200)
        after_second = report(envoy)
        # (3) `a` gets a new key, in the VM's environment: every wasm filter's vm_config changes,
        # in the listener and in the order clusters.
        xds.update(envoy, config(a_key="sk-a-new", b_cooldowns={"rateLimited": "9s"}), order)
        if not new_vm_for_a_new_environment():
            load.wait_for(200)
            unseen = report(envoy)["a"]
            assert unseen["cooldownRemainingS"] == "until-reset", "the old VM still has the old key"
            assert not any(r.header("authorization") == "Bearer sk-a-new" for r in a.requests)
            xds.update(envoy, config(a_key="sk-a-new", b_cooldowns={"rateLimited": "9s"}, vm_configuration="keys-2"), order)
        time.sleep(1)   # attempts that started on the old clusters have ended
        a_from = len(a.requests)
        load.wait_for(200)
        after_new_key = report(envoy)
        load.wait_for(200)
    elapsed = time.monotonic() - started

    served = {name: sum(1 for _, by in load.answers if by == name) for name in "abc"}
    print(f"{'-then-'.join(order)}: {len(load.answers)} answers, {len(load.errors)} errors in {elapsed:.1f}s; served {served}")
    assert load.errors == [], load.errors[:5]
    assert [answer for answer in load.answers if answer[0] != 200] == []
    assert served["b"] > 0 and served["c"] == 0

    def still_cooling(entry: dict) -> bool:
        """The 600 s cooldown from before the reloads, counting down, not started again."""
        left = cooldown_of_model(entry)
        return isinstance(left, int) and 600 - elapsed - 5 <= left <= cooldown_of_model(before["c"])

    for kept in (after_first, after_second):
        assert kept["a"]["cooldownRemainingS"] == "until-reset", kept["a"]
        assert still_cooling(kept["c"]), kept["c"]
    assert (after_new_key["a"]["state"], after_new_key["a"]["models"]) == ("closed", []), after_new_key["a"]
    assert after_new_key["a"]["lastFailure"] is None
    assert still_cooling(after_new_key["c"]), "c's config did not change"
    assert served["a"] > 0
    new_key_requests = a.requests[a_from:]
    assert new_key_requests and all(r.header("authorization") == "Bearer sk-a-new" for r in new_key_requests)
    if order == ("cds", "lds"):
        # The new clusters carry the new key before the router role sends anything to `a`.
        old_key = [r for r in a.requests if r.header("authorization") == "Bearer sk-a-old"]
        assert len(old_key) == 1, "the 401 before the reloads, and no more"

    for provider in (a, b, c):
        own = [f"Bearer {key}" for key in KEYS[provider.name]]
        foreign = [key for name, keys in KEYS.items() if name != provider.name for key in keys] + [SECRET]
        for request in provider.requests:
            assert request.header("authorization") in own, provider.name
            assert all(request.header(name) is None for name in CREDENTIAL_HEADERS[1:]), provider.name
            assert not any(key in value for _, value in request.header_list for key in foreign), provider.name

    log = envoy.log()[log_from:]
    assert re.findall(r"provider `(\w+)` has a new config: its health starts clean", log) == ["a"]
    assert not re.search(r"panick|\]\[critical\]|Uncaught|VM failed|wasm.*(?:crash|abort)", log, re.IGNORECASE), log[-3000:]
