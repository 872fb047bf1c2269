"""Envoy configs for the end-to-end tests, built as dicts (JSON is YAML to Envoy).

The shape is the one envoy/demo.yaml documents: router role -> header_to_metadata ->
route-refresh role -> router, and one provider cluster per provider with the attempt role as
its upstream filter.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WASM = Path(os.environ.get("LLM_FAILOVER_WASM", ROOT / "target/wasm32-unknown-unknown/release/llm_failover.wasm"))
ORDER_HEADER = "x-llm-failover-order"
# The Prometheus labels envoy/demo.yaml documents.
STATS_TAGS = [
    {"tag_name": "llm_reason", "regex": r"^wasmcustom\.llm_failover\.provider\.[^.]+\.failover(\.([^.]+))$"},
    {"tag_name": "llm_model", "regex": r"^wasmcustom\.llm_failover\.provider\.[^.]+\.model(\.([^.]+))\."},
    {"tag_name": "llm_provider", "regex": r"^wasmcustom\.llm_failover\.provider(\.([^.]+))\."},
]
METADATA_NAMESPACE = "llm_failover"


@dataclass
class Provider:
    name: str
    port: int
    format: str = "openai"
    key_env: str | None = None      # env var the attempt role reads its key from
    key: str | None = None          # its value, set in the VM's environment
    auth_style: str | None = None
    models: dict = field(default_factory=dict)
    cooldowns: dict = field(default_factory=dict)
    base_path: str | None = None
    api_version: str | None = None
    host: str | None = None
    tls_ca: str | None = None       # CA file: talk TLS, with SNI and SAN check for `host`
    extra: dict = field(default_factory=dict)   # more `provider` fields (defaultMaxTokens...)
    attempt_extra: dict = field(default_factory=dict)   # more attempt-role fields (breaker, budget...)
    # The provider its endpoint's metadata names (`llm_failover.provider`), which a hedge
    # cluster's attempt filter goes by: the provider's own name unless a test says otherwise.
    endpoint_provider: str | None = None

    def plugin_config(self) -> dict:
        provider: dict = {"name": self.name, "format": self.format,
                          "host": self.host or f"{self.name}.provider.test"}
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
        provider.update(self.extra)
        config = {"role": "attempt", "provider": provider}
        if self.cooldowns:
            config["cooldowns"] = self.cooldowns
        config.update(self.attempt_extra)
        return config


def wasm_filter(plugin_config: dict | str, env: dict[str, str], wasm: Path = WASM,
                vm_configuration: str | None = None) -> dict:
    """`vm_configuration` set: a VM of its own (the same vm_id still shares the data)."""
    configuration = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    vm_config = {
        "vm_id": "llm_failover",
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": str(wasm)}},
        "environment_variables": {"key_values": env},
    }
    if vm_configuration:
        vm_config["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                      "value": vm_configuration}
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "llm_failover",
                "allow_on_headers_stop_iteration": True,
                "failure_policy": "FAIL_RELOAD",
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": configuration},
                "vm_config": vm_config,
            },
        },
    }


def prober_service(plugin_config: dict, name: str = "llm_failover_prober", wasm: Path = WASM) -> dict:
    """The prober role as a bootstrap wasm service (one per Envoy, on the main thread). Its VM
    has its own vm configuration, so its probes never re-enter the VM of the attempt role they
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


def tls_socket(host: str, ca_file: str) -> dict:
    """As in envoy/real-providers.yaml: SNI and SAN are the provider's host."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": host,
            "common_tls_context": {"validation_context": {
                "trusted_ca": {"filename": ca_file},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}],
            }},
        },
    }


UPSTREAM_CODEC = {"name": "envoy.filters.http.upstream_codec",
                  "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}
# Envoy allows 3 concurrent retries per cluster by default: under load the rest would not fail
# over at all.
RETRY_CIRCUIT_BREAKERS = {"thresholds": [{"priority": "DEFAULT", "max_retries": 1024}]}


def upstream_filters(plugin_config: dict | str, env: dict[str, str], vm_configuration: str | None = None) -> dict:
    return {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http_protocol_options": {}},
        "http_filters": [wasm_filter(plugin_config, env, vm_configuration=vm_configuration), UPSTREAM_CODEC],
    }}


def hedge_cluster_name(providers: list[str]) -> str:
    return "hedge_" + "_".join(providers)


def hedge_cluster(providers: list[str], env: dict[str, str], vm_configuration: str | None = None) -> dict:
    """As docs/routing.md shows: an aggregate cluster over provider clusters, whose attempt
    filter takes the attempt role of the provider each endpoint names."""
    return {
        "name": hedge_cluster_name(providers),
        "connect_timeout": "0.5s",
        "lb_policy": "CLUSTER_PROVIDED",
        "circuit_breakers": RETRY_CIRCUIT_BREAKERS,
        "cluster_type": {"name": "envoy.clusters.aggregate", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
            "clusters": [f"provider_{p}" for p in providers]}},
        "typed_extension_protocol_options": upstream_filters({"role": "attempt-by-endpoint"}, env, vm_configuration),
    }


def provider_cluster(p: Provider, env: dict[str, str], attempt_config: dict | str | None = None) -> dict:
    endpoint_provider = p.name if p.endpoint_provider is None else p.endpoint_provider
    endpoint = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p.port}}}}
    if endpoint_provider:
        endpoint["metadata"] = {"filter_metadata": {"llm_failover": {"provider": endpoint_provider}}}
    cluster = {
        "name": f"provider_{p.name}",
        "type": "STATIC",
        "connect_timeout": "0.5s",
        "circuit_breakers": RETRY_CIRCUIT_BREAKERS,
        "load_assignment": {"cluster_name": f"provider_{p.name}", "endpoints": [{"lb_endpoints": [endpoint]}]},
        "typed_extension_protocol_options": upstream_filters(
            attempt_config if attempt_config is not None else p.plugin_config(), env),
    }
    if p.tls_ca:
        cluster["transport_socket"] = tls_socket(p.plugin_config()["provider"]["host"], p.tls_ca)
    return cluster


def render(*, listener_port: int, admin_port: int, providers: list[Provider],
           chains: dict[str, list[str]], models: dict[str, str] | None = None,
           default_chain: str | None = "default", router_extra: dict | None = None,
           per_try_timeout: str = "2s", route_timeout: str = "20s",
           body_buffer_limit: int | None = None, router_config: dict | str | None = None,
           attempt_configs: dict[str, dict | str] | None = None,
           extra_env: dict[str, str] | None = None, probers: list[dict] | None = None,
           route_profiles: dict[str, str] | None = None,
           hedge_clusters: list[list[str]] | None = None, hedge_cluster_vm: str | None = None) -> str:
    """`route_profiles`: path prefix -> profile, each a route of its own carrying the profile in
    its metadata (`llm_failover.profile`), before the catch-all `/v1/` route.
    `hedge_clusters`: provider orders, each an aggregate cluster the router role names in
    `hedgeClusters`; the route then moves each attempt of a hedged request to the next priority.
    `hedge_cluster_vm`: their filters in a VM of their own, where no provider's role ran."""
    env = {p.key_env: p.key for p in providers if p.key_env and p.key}
    env.update(extra_env or {})
    router = {"role": "router", "providers": [p.name for p in providers], "chains": chains}
    if models:
        router["models"] = models
    if default_chain:
        router["defaultChain"] = default_chain
    if hedge_clusters:
        router["hedgeClusters"] = [{"providers": order, "cluster": hedge_cluster_name(order)}
                                   for order in hedge_clusters]
    router.update(router_extra or {})
    route_action = {
        "inline_cluster_specifier_plugin": {"extension": {
            "name": "envoy.router.cluster_specifier_plugin.priority_group",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.router.cluster_specifiers.priority_group.v3.PriorityGroupClusterSpecifier",
                "override_metadata_namespace": METADATA_NAMESPACE,
                "priority_groups": [{"name": p.name, "clusters": [{"cluster_name": f"provider_{p.name}", "weight": 1}]}
                                    for p in providers],
            },
        }},
        "timeout": route_timeout,
        # A provider whose context is too small answers 307 to the request's own URL: Envoy
        # replays it through the router role, which leaves out the smaller providers.
        "internal_redirect_policy": {"redirect_response_codes": [307],
                                     "max_internal_redirects": max(1, len(providers) - 1)},
        "retry_policy": {
            "retry_on": "5xx,reset,connect-failure,retriable-status-codes",
            "retriable_status_codes": [401, 403, 408, 429],
            "num_retries": len(providers) - 1,
            "per_try_timeout": per_try_timeout,
            "refresh_cluster_on_retry": True,
            "retry_back_off": {"base_interval": "0.005s", "max_interval": "0.02s"},
        },
    }
    if hedge_clusters:
        route_action["retry_policy"]["retry_priority"] = {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1}}
    route = {"match": {"prefix": "/v1/"}, "route": route_action}
    if body_buffer_limit:
        route["request_body_buffer_limit"] = body_buffer_limit
    routes = [{"match": {"prefix": prefix}, "route": route_action,
               "metadata": {"filter_metadata": {"llm_failover": {"profile": profile}}}}
              for prefix, profile in (route_profiles or {}).items()] + [route]
    attempt_configs = attempt_configs or {}
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "stats_config": {"stats_tags": STATS_TAGS},
        # Histograms reach /stats only when merged at a flush.
        "stats_flush_interval": "1s",
        "static_resources": {
            "listeners": [{
                "name": "llm",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "llm",
                        "route_config": {"virtual_hosts": [{
                            "name": "llm", "domains": ["*"],
                            "include_request_attempt_count": True,
                            "routes": routes,
                        }]},
                        "http_filters": [
                            wasm_filter(router_config if router_config is not None else router, env),
                            {"name": "envoy.filters.http.header_to_metadata",
                             "typed_config": {
                                 "@type": "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
                                 "request_rules": [{
                                     "header": ORDER_HEADER, "remove": True,
                                     "on_header_present": {"metadata_namespace": METADATA_NAMESPACE,
                                                           "key": "priority_groups",
                                                           "type": "PROTOBUF_VALUE", "encode": "BASE64"}}]}},
                            wasm_filter({"role": "route-refresh"}, env),
                            {"name": "envoy.filters.http.router",
                             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    },
                }]}],
            }],
            "clusters": [provider_cluster(p, env, attempt_configs.get(p.name)) for p in providers]
                        + [hedge_cluster(order, env, hedge_cluster_vm) for order in hedge_clusters or []],
        },
    }
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
