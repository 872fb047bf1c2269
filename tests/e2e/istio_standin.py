"""What istiod would make of deploy/istio/, as far as it can be built without istiod: an Envoy
bootstrap shaped like the one an Istio gateway proxy runs (its listener `0.0.0.0_8080`, route
configuration `http.8080`, virtual host `*:80`, the filters Istio puts before the router, the
`outbound|443||host` clusters of its ServiceEntries, its Prometheus listener and stats matcher),
with the VirtualService's route, the bootstrap override merged in, and then the EnvoyFilter's
patches applied as Istio applies them.

It stands in for istiod; it does not show that istiod accepts the resources (only their schemas
are checked), how istio-agent delivers the config (ADS, ECDS), or the injected pod itself.
A patch this module does not know how to apply fails the test instead of being skipped.
"""

from __future__ import annotations

import copy
import json
import re

ROUTER = "envoy.filters.http.router"
HCM = "envoy.filters.network.http_connection_manager"


def _typed(type_name: str) -> dict:
    return {"@type": f"type.googleapis.com/{type_name}"}


def _hcm(stat_prefix: str, route_config: dict, http_filters: list[dict]) -> dict:
    return {"name": HCM, "typed_config": {
        **_typed("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
        "stat_prefix": stat_prefix, "route_config": route_config, "http_filters": http_filters}}


def _virtual_service_routes(virtual_service: dict) -> list[dict]:
    """The Envoy routes Istio makes of a VirtualService's `http` entries (those used here)."""
    routes = []
    for http in virtual_service["spec"]["http"]:
        unknown = set(http) - {"name", "directResponse", "headers"}
        assert not unknown, f"the stand-in does not translate VirtualService fields {unknown}"
        direct = http["directResponse"]
        route = {"name": http["name"], "match": {"prefix": "/"},
                 "direct_response": {"status": direct["status"], "body": {"inline_string": direct["body"]["string"]}}}
        response_set = http.get("headers", {}).get("response", {}).get("set", {})
        if response_set:
            route["response_headers_to_add"] = [{"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
                                                for k, v in response_set.items()]
        routes.append(route)
    return routes


def gateway_bootstrap(*, listener_port: int, admin_port: int, prometheus_port: int,
                      virtual_service: dict, service_entry_hosts: list[str],
                      stats_inclusion_regexps: list[str]) -> dict:
    """An Istio gateway proxy's config before our EnvoyFilter: loopback ports stand for the
    pod's 8080, 15000 and 15090."""
    routes = _virtual_service_routes(virtual_service)
    istio_filters = [
        {"name": "envoy.filters.http.cors", "typed_config": _typed("envoy.extensions.filters.http.cors.v3.Cors")},
        {"name": "envoy.filters.http.fault", "typed_config": _typed("envoy.extensions.filters.http.fault.v3.HTTPFault")},
        {"name": ROUTER, "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router")},
    ]
    gateway_listener = {
        "name": "0.0.0.0_8080",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
        "filter_chains": [{"filters": [_hcm(
            "outbound_0.0.0.0_8080",
            {"name": "http.8080", "virtual_hosts": [{"name": "*:80", "domains": ["*"], "routes": routes}]},
            istio_filters)]}],
    }
    prometheus_listener = {
        "name": "prometheus",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": prometheus_port}},
        "filter_chains": [{"filters": [_hcm(
            "stats",
            {"virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": [
                {"match": {"prefix": "/stats/prometheus"}, "route": {"cluster": "prometheus_stats"}}]}]},
            [{"name": ROUTER, "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router")}])]}],
    }
    clusters = [
        {"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s"},
        {"name": "prometheus_stats", "type": "STATIC", "connect_timeout": "0.25s",
         "load_assignment": {"cluster_name": "prometheus_stats", "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}}]}]}},
    ] + [
        # What a ServiceEntry for the host on port 443 (TLS) gives: passthrough to its DNS name.
        {"name": f"outbound|443||{host}", "type": "STRICT_DNS", "connect_timeout": "10s",
         "load_assignment": {"cluster_name": f"outbound|443||{host}", "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": host, "port_value": 443}}}}]}]}}
        for host in service_entry_hosts
    ]
    # Istio exports only the stats its matcher includes; ProxyConfig's proxyStatsMatcher adds
    # the regexes of deployment.yaml's annotation.
    inclusion = [{"prefix": p} for p in ("reporter=", "cluster_manager", "listener_manager", "server",
                                          "cluster.xds-grpc", "wasm", "component", "istio")]
    inclusion += [{"safe_regex": {"regex": r}} for r in stats_inclusion_regexps]
    return {
        "node": {"id": "router~127.0.0.1~llm-egress-0.llm-failover~llm-failover.svc.cluster.local",
                 "cluster": "llm-egress.llm-failover"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "stats_config": {"use_all_default_tags": False, "stats_matcher": {"inclusion_list": {"patterns": inclusion}}},
        "static_resources": {"listeners": [gateway_listener, prometheus_listener], "clusters": clusters},
    }


def merge_bootstrap_override(bootstrap: dict, override: dict) -> None:
    """pilot-agent merges the bootstrap override as protobuf merge does: maps merged, lists
    appended, scalars replaced."""
    def merge(into: dict, extra: dict) -> None:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            elif isinstance(value, list) and isinstance(into.get(key), list):
                into[key].extend(copy.deepcopy(value))
            else:
                into[key] = copy.deepcopy(value)
    merge(bootstrap, override)


def _match_labels(envoy_filter: dict, labels: dict) -> bool:
    wanted = envoy_filter["spec"].get("workloadSelector", {}).get("labels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def _hcm_filters(listener: dict) -> list[list[dict]]:
    return [f["typed_config"]["http_filters"] for chain in listener["filter_chains"]
            for f in chain["filters"] if f["name"] == HCM]


def _route_configs(bootstrap: dict) -> list[dict]:
    return [f["typed_config"]["route_config"] for listener in bootstrap["static_resources"]["listeners"]
            for chain in listener["filter_chains"] for f in chain["filters"]
            if f["name"] == HCM and f["typed_config"]["route_config"].get("name", "").startswith("http.")]


def apply_envoy_filter(bootstrap: dict, envoy_filter: dict, *, workload_labels: dict, gateway: str) -> list[int]:
    """Applies each patch of `envoy_filter` to a gateway's config; returns, per patch, the number
    of places it applied to (none at all if the workload selector does not match).
    `gateway` (`namespace/name`) is the Istio Gateway the route configurations came from."""
    assert envoy_filter["kind"] == "EnvoyFilter"
    if not _match_labels(envoy_filter, workload_labels):
        return []
    counts = []
    static = bootstrap["static_resources"]
    for patch in envoy_filter["spec"]["configPatches"]:
        applied = 0
        match, operation, value = patch["match"], patch["patch"]["operation"], patch["patch"].get("value")
        assert match.get("context") == "GATEWAY", f"not a gateway patch: {match}"
        where = (patch["applyTo"], operation)
        if where == ("CLUSTER", "ADD"):
            assert set(match) == {"context"}, match
            static["clusters"].append(copy.deepcopy(value))
            applied += 1
        elif where == ("HTTP_FILTER", "INSERT_BEFORE"):
            chain = match["listener"]["filterChain"]["filter"]
            assert chain["name"] == HCM and set(match["listener"]) == {"filterChain"}, match
            for listener in static["listeners"]:
                if not listener["name"].startswith("0.0.0.0_"):
                    continue    # Istio patches the listeners it generates, not the bootstrap's own
                for filters in _hcm_filters(listener):
                    names = [f["name"] for f in filters]
                    if chain["subFilter"]["name"] in names:
                        filters.insert(names.index(chain["subFilter"]["name"]), copy.deepcopy(value))
                        applied += 1
        elif where == ("NETWORK_FILTER", "MERGE"):
            chain = match["listener"]["filterChain"]["filter"]
            assert chain == {"name": HCM} and set(match["listener"]) == {"filterChain"}, match
            for listener in static["listeners"]:
                if listener["name"].startswith("0.0.0.0_"):
                    for filter_chain in listener["filter_chains"]:
                        for network_filter in filter_chain["filters"]:
                            if network_filter["name"] == HCM:
                                merge_bootstrap_override(network_filter, value)
                                applied += 1
        elif where == ("VIRTUAL_HOST", "MERGE"):
            config = match["routeConfiguration"]
            assert set(config) == {"gateway"}, config
            if config["gateway"] == gateway:
                for route_config in _route_configs(bootstrap):
                    for vhost in route_config["virtual_hosts"]:
                        merge_bootstrap_override(vhost, value)
                        applied += 1
        elif where == ("HTTP_ROUTE", "INSERT_BEFORE"):
            config = match["routeConfiguration"]
            assert set(config) == {"gateway", "vhost"} and set(config["vhost"]) == {"route"}, config
            if config["gateway"] == gateway:
                for route_config in _route_configs(bootstrap):
                    for vhost in route_config["virtual_hosts"]:
                        names = [r.get("name") for r in vhost["routes"]]
                        if config["vhost"]["route"]["name"] in names:
                            vhost["routes"].insert(names.index(config["vhost"]["route"]["name"]), copy.deepcopy(value))
                            applied += 1
        else:
            raise AssertionError(f"the stand-in does not apply {where}")
        counts.append(applied)
    return counts


def wasm_plugin_filter(router_filter: dict) -> dict:
    """The router role as a WasmPlugin would place it: Istio's PluginConfig has no
    `allow_on_headers_stop_iteration`, so the filter gets Envoy's default (false)."""
    placed = copy.deepcopy(router_filter)
    placed["typed_config"]["config"].pop("allow_on_headers_stop_iteration", None)
    return placed


def prometheus_names(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{", text, re.M)}


def dumps(bootstrap: dict) -> str:
    return json.dumps(bootstrap, indent=1)
