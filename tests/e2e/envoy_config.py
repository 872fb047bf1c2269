"""Envoy configs for the end-to-end tests: the render command (`llm-failover-render`) writes
the bootstrap from a deployment's one plugin configuration, as docs/configuration.md shows;
tests then change what they exercise (timeouts, extra routes, a prober, a VM of its own).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WASM = Path(os.environ.get("LLM_FAILOVER_WASM", ROOT / "target/wasm32-unknown-unknown/release/llm_failover.wasm"))
RENDER = Path(os.environ.get("LLM_FAILOVER_RENDER", ROOT / "target/release/llm-failover-render"))
ORDER_HEADER = "x-llm-failover-order"
METADATA_NAMESPACE = "llm_failover"


@functools.cache
def envoy_version() -> tuple[int, int]:
    """The (major, minor) of the Envoy the tests run (ENVOY_BIN, else `envoy` on PATH)."""
    out = subprocess.run([os.environ.get("ENVOY_BIN", "envoy"), "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"/(\d+)\.(\d+)\.\d+/", out)
    assert found, f"no version in {out!r}"
    return int(found.group(1)), int(found.group(2))


def reads_error_answers() -> bool:
    """Envoy 1.36 crashes retrying after a held error answer: there the tests run with
    `errorAnswers: pass`, as docs/compatibility.md tells operators to."""
    return envoy_version() >= (1, 37)


def provider_cluster(name: str) -> str:
    return f"llm_provider~{name}"


def order_cluster(order: list[str]) -> str:
    return "~".join(["llm_failover", *order])


@dataclass
class Provider:
    name: str
    port: int
    format: str = "openai"
    key_env: str | None = None      # env var the provider's entry reads its key from
    key: str | None = None          # its value, set in the VM's environment
    auth_style: str | None = None
    models: dict = field(default_factory=dict)
    cooldowns: dict = field(default_factory=dict)
    base_path: str | None = None
    api_version: str | None = None
    host: str | None = None
    tls_ca: str | None = None       # CA file: talk TLS, with SNI and SAN check for `host`
    extra: dict = field(default_factory=dict)   # more provider fields (defaultMaxTokens...)
    attempt_extra: dict = field(default_factory=dict)   # more provider fields (breaker, budget...)
    # The provider its endpoint's metadata names (`llm_failover.provider`), which the order
    # clusters' attempt filter goes by: the provider's own name unless a test says otherwise.
    endpoint_provider: str | None = None

    def entry(self) -> dict:
        """The provider's entry in the plugin configuration's `providers`."""
        provider: dict = {"name": self.name, "format": self.format}
        # A Vertex AI provider's host defaults to its location's endpoint.
        if self.host or "vertex" not in self.extra:
            provider["host"] = self.host or f"{self.name}.provider.test"
        if self.key_env:
            provider["auth"] = {"apiKeyEnv": self.key_env}
            if self.auth_style:
                provider["auth"]["style"] = self.auth_style
        if self.models:
            provider["models"] = self.models
        if self.base_path:
            provider["basePath"] = self.base_path
        if self.api_version:
            provider["apiVersion"] = self.api_version
        if self.cooldowns:
            provider["cooldowns"] = self.cooldowns
        provider.update(self.extra)
        provider.update(self.attempt_extra)
        return provider

    def upstream(self) -> dict:
        upstream = {"address": f"127.0.0.1:{self.port}", "tls": bool(self.tls_ca)}
        if self.tls_ca:
            upstream["caFile"] = self.tls_ca
        return upstream


def render_bootstrap(render_input: dict) -> str:
    """What `llm-failover-render` writes for this input; raises with its message if it refuses."""
    done = subprocess.run([str(RENDER), "-"], input=json.dumps(render_input), capture_output=True, text=True)
    if done.returncode != 0:
        raise RenderRefused(done.stderr.strip())
    return done.stdout


class RenderRefused(Exception):
    pass


def prober_service(plugin_config: dict, name: str = "llm_failover_prober", wasm: Path = WASM) -> dict:
    """The prober role as a bootstrap wasm service (one per Envoy, on the main thread). Its VM
    has its own vm configuration, so its probes never re-enter the VM of the attempt filter they
    pass through; the same vm_id shares provider health with every other role."""
    return {
        "name": "envoy.bootstrap.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.wasm.v3.WasmService",
            "singleton": True,
            "config": {
                "name": name,
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": json.dumps(plugin_config)},
                "vm_config": {
                    "vm_id": "llm_failover",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm)}},
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                      "value": name},
                },
            },
        },
    }


def walk(node):
    """Every mapping in a config, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def _duration(text: str) -> str:
    """The filter's durations have no fractions: `0.4s` is written `400ms`."""
    if text.endswith("s") and not text.endswith("ms") and "." in text:
        return f"{round(float(text[:-1]) * 1000)}ms"
    return text


def render(*, listener_port: int, admin_port: int, providers: list[Provider],
           chains: dict[str, list[str]], models: dict[str, str] | None = None,
           default_chain: str | None = "default", router_extra: dict | None = None,
           per_try_timeout: str = "2s", route_timeout: str = "20s",
           body_buffer_limit: int | None = None, router_config: dict | str | None = None,
           extra_env: dict[str, str] | None = None, probers: list[dict] | None = None,
           route_profiles: dict[str, str] | None = None, attempt_vm: str | None = None) -> str:
    """`router_config`: the plugin configuration as given (a string is taken as it is, and the
    bootstrap is then written without the render's checks, for configs the filter must refuse).
    `route_profiles`: path prefix -> profile, each a route of its own carrying the profile in
    its metadata (`llm_failover.profile`), before the chat route.
    `attempt_vm`: the attempt filters in a VM of their own, where no router role ran."""
    env = {p.key_env: p.key for p in providers if p.key_env and p.key}
    env.update(extra_env or {})
    plugin = {"providers": [p.entry() for p in providers], "chains": chains}
    if models:
        plugin["models"] = models
    if default_chain:
        plugin["defaultChain"] = default_chain
    plugin.update(router_extra or {})
    if not reads_error_answers():
        plugin.setdefault("errorAnswers", "pass")
    raw_router = None
    if router_config is not None:
        raw_router = router_config if isinstance(router_config, str) else json.dumps(router_config)
        # Rendered from a config the render accepts; the filter's own is put in after.
        plugin = {"providers": [p.entry() for p in providers], "chains": chains,
                  **({} if reads_error_answers() else {"errorAnswers": "pass"})}
    render_input = {
        "envoy": {
            "version": "%d.%d" % envoy_version(),
            "listener": f"127.0.0.1:{listener_port}",
            "admin": f"127.0.0.1:{admin_port}",
            "wasm": str(WASM),
            "environment": env,
            "timeout": _duration(route_timeout),
            "perTryTimeout": _duration(per_try_timeout),
            "connectTimeout": "500ms",
            "upstreams": {p.name: p.upstream() for p in providers},
        },
        "filter": plugin,
    }
    config = yaml.safe_load(render_bootstrap(render_input))
    # Histograms reach /stats only when merged at a flush.
    config["stats_flush_interval"] = "1s"
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    router_filter = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")["typed_config"]["config"]
    if raw_router is not None:
        router_filter["configuration"]["value"] = raw_router
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    chat_routes = [r for r in routes if "route" in r]
    if body_buffer_limit:
        for route in chat_routes:
            field = "request_body_buffer_limit" if "request_body_buffer_limit" in route else "per_request_buffer_limit_bytes"
            route[field] = body_buffer_limit
    extra_routes = [{**chat_routes[0], "match": {"prefix": prefix},
                     "metadata": {"filter_metadata": {"llm_failover": {"profile": profile}}}}
                    for prefix, profile in (route_profiles or {}).items()]
    routes[:0] = extra_routes
    for p in providers:
        if p.endpoint_provider is not None:
            for cluster in config["static_resources"]["clusters"]:
                if cluster["name"] == provider_cluster(p.name):
                    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
                    if p.endpoint_provider:
                        endpoint["metadata"]["filter_metadata"]["llm_failover"]["provider"] = p.endpoint_provider
                    else:
                        endpoint.pop("metadata")
    if attempt_vm:
        for cluster in config["static_resources"]["clusters"]:
            options = cluster.get("typed_extension_protocol_options")
            if options:
                # A copy: YAML aliases would otherwise give the router's VM this config too.
                options = json.loads(json.dumps(options))
                cluster["typed_extension_protocol_options"] = options
                for node in walk(options):
                    if "vm_id" in node:
                        node["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                                 "value": attempt_vm}
    if probers:
        config["bootstrap_extensions"] = [prober_service(p, name=f"llm_failover_prober_{i}")
                                          for i, p in enumerate(probers)]
    return json.dumps(config, indent=1)


def start_gateway(tmp_path, providers: list[Provider], chains: dict[str, list[str]] | None = None,
                  **kwargs):
    """Envoy with the filter in front of `providers` (one chain through all of them unless
    `chains` says otherwise), started and ready."""
    import harness  # noqa: PLC0415 (harness is only needed by tests, not by config builders)

    listener, admin = harness.free_port(), harness.free_port()
    text = render(listener_port=listener, admin_port=admin, providers=providers,
                  chains=chains or {"default": [p.name for p in providers]}, **kwargs)
    return harness.Envoy(text, tmp_path, admin_port=admin, listener_ports=[listener]).start()
