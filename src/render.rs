//! Renders the Envoy bootstrap for a deployment from its one plugin configuration: the provider
//! clusters, an order cluster per provider order the router can choose (`orders`), the route
//! that sends each request to its order cluster, and the filters. Checked by the same code the
//! filter runs, so a config the filter would refuse is refused here first.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use serde_json::value::RawValue;

use crate::config::{self, ConfigError, Environment, EnvoyVersion, ORDER_HEADER};
use crate::{credentials, duration, orders, yaml};

mod aws_signing;

/// What Envoy needs beyond the plugin configuration.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawInput {
    envoy: RawEnvoy,
    filter: Box<RawValue>,
    /// Where Istio's own gateway proxies carry the filter (`render_istio`).
    #[serde(default)]
    istio: Option<RawIstio>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawIstio {
    namespace: String,
    /// The Istio `Gateway` whose routes get the chat route.
    gateway: String,
    /// The gateway pods' labels: the EnvoyFilter's `workloadSelector`.
    selector: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEnvoy {
    /// `1.36` ... : checked against what the config needs.
    #[serde(default)]
    version: Option<String>,
    /// Where clients connect: needed for a bootstrap, not for Istio.
    #[serde(default)]
    listener: Option<String>,
    #[serde(default)]
    admin: Option<String>,
    /// A listener for the pod network with only `/ready` and admin's `/stats/prometheus`, so
    /// the admin itself can stay on loopback.
    #[serde(default)]
    ops: Option<String>,
    /// Where the audit line of every chat request goes (a file, or `/dev/stdout`).
    #[serde(default)]
    audit_log: Option<String>,
    wasm: String,
    /// Values put in the VM's environment as they are: demos and tests only.
    #[serde(default)]
    environment: BTreeMap<String, String>,
    /// Variables passed from Envoy's own environment to the VM: where keys come from.
    #[serde(default)]
    host_env_keys: Vec<String>,
    #[serde(default = "default_timeout")]
    timeout: String,
    #[serde(default = "default_per_try_timeout")]
    per_try_timeout: String,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: String,
    /// Where a provider is reached when not at its `host` on 443 with TLS.
    #[serde(default)]
    upstreams: BTreeMap<String, RawUpstream>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawUpstream {
    #[serde(default)]
    address: Option<String>,
    #[serde(default = "yes")]
    tls: bool,
    /// The CA bundle that verifies the provider (the system's by default).
    #[serde(default)]
    ca_file: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_timeout() -> String {
    "120s".into()
}
fn default_per_try_timeout() -> String {
    "30s".into()
}
fn default_connect_timeout() -> String {
    "5s".into()
}

/// The first Envoy whose route `request_body_buffer_limit` sets how much of a body is kept for
/// a retry.
const BUFFER_LIMIT_FIELD_FROM: EnvoyVersion = EnvoyVersion(1, 39);
const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";
const VM_ID: &str = "llm_failover";
/// Statuses after which Envoy tries the next provider (with `5xx`, `reset`, `connect-failure`).
pub const RETRIABLE_STATUS_CODES: [u16; 4] = [401, 403, 408, 429];

/// The provider's own cluster: `llm_provider~openai`.
pub fn provider_cluster(provider: &str) -> String {
    format!("llm_provider~{provider}")
}

/// Every variable the render knows the VM will have, without knowing the values of those that
/// come from Envoy's environment.
struct RenderEnvironment<'a> {
    literal: &'a BTreeMap<String, String>,
    from_host: &'a [String],
}

impl Environment for RenderEnvironment<'_> {
    fn var(&self, name: &str) -> Option<String> {
        if let Some(value) = self.literal.get(name) {
            return Some(value.clone());
        }
        self.from_host.iter().any(|k| k == name).then(|| "(set in Envoy's environment at run time)".to_string())
    }

    fn set_at_run_time(&self, name: &str) -> bool {
        !self.literal.contains_key(name) && self.from_host.iter().any(|k| k == name)
    }
}

fn field(prefix: &str, error: ConfigError) -> ConfigError {
    let field = if error.field.is_empty() { prefix.to_string() } else { format!("{prefix}.{}", error.field) };
    ConfigError { field, reason: error.reason }
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), reason: reason.into() }
}

fn parse_version(text: &str) -> Option<EnvoyVersion> {
    let mut parts = text.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some(EnvoyVersion(major, minor))
}

fn socket_address(text: &str, default_port: u16) -> Option<Value> {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok()?),
        None => (text, default_port),
    };
    if host.is_empty() {
        return None;
    }
    Some(json!({"socket_address": {"address": host, "port_value": port}}))
}

fn seconds(field: &str, text: &str) -> Result<String, ConfigError> {
    let d = duration::parse_positive(text).map_err(|r| invalid(field, r))?;
    Ok(format!("{}s", d.as_secs_f64()))
}

/// What both outputs are made of: the checked deployment turned into Envoy's pieces.
struct Parts {
    envoy: RawEnvoy,
    istio: Option<RawIstio>,
    vm: Value,
    router_filter: Value,
    attempt_filters: Value,
    breakers: Value,
    /// Provider clusters, then an order cluster per order the router can choose.
    clusters: Vec<Value>,
    route_action: Value,
    /// A route per chat path.
    chat_routes: Vec<Value>,
    /// The catch-all's answer: an OpenAI-style 404 naming what is served.
    not_served: String,
    /// The HCM's `access_log` that writes the audit lines, if asked for.
    audit_log: Option<Value>,
    max_answer_bytes: usize,
}

/// The route names the chat routes and the catch-all get, here and in Istio.
pub const CHAT_ROUTE: &str = "llm-failover-chat";
/// The route of each Anthropic Messages path.
pub const MESSAGES_ROUTE: &str = "llm-failover-messages";
/// The route of each embeddings path.
pub const EMBEDDINGS_ROUTE: &str = "llm-failover-embeddings";
/// Beside each Messages route: Anthropic's token count.
pub const COUNT_TOKENS_ROUTE: &str = "llm-failover-count-tokens";
/// The route of each pass-through prefix.
pub const PASSTHROUGH_ROUTE: &str = "llm-failover-passthrough";
/// The route of OpenAI's Responses API (`responsesPaths`).
pub const RESPONSES_ROUTE: &str = "llm-failover-responses";
pub const UNSUPPORTED_ROUTE: &str = "llm-failover-unsupported-path";

fn parts(input: &[u8]) -> Result<Parts, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(input);
    let raw: RawInput = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let reason = e.inner().to_string();
        invalid(&e.path().to_string(), reason)
    })?;
    let envoy = raw.envoy;
    let filter_text = raw.filter.get().trim();
    let Some(rest) = filter_text.strip_prefix('{') else {
        return Err(invalid("filter", "must be the plugin configuration, a JSON object"));
    };
    if serde_json::from_str::<Value>(filter_text).ok().and_then(|v| v.get("role").cloned()).is_some() {
        return Err(invalid("filter.role", "is set by the render: leave it out"));
    }
    let router_json = with_router_role(rest);
    let env = RenderEnvironment { literal: &envoy.environment, from_host: &envoy.host_env_keys };
    let deployment = match config::parse(router_json.as_bytes(), &env).map_err(|e| field("filter", e))? {
        config::Config::Router(deployment) => deployment,
        _ => return Err(invalid("filter", "is not a router configuration")),
    };
    let version = match &envoy.version {
        Some(text) => Some(parse_version(text).ok_or_else(|| invalid("envoy.version", format!("`{text}` is not an Envoy version like `1.36`")))?),
        None => None,
    };
    deployment.supported_by(version).map_err(|e| field("filter", e))?;
    let router = &deployment.router;

    let vm = json!({
        "vm_id": VM_ID,
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": envoy.wasm}},
        "environment_variables": environment_variables(&envoy),
    });
    let wasm_filter = |configuration: &str| {
        json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": VM_ID,
                    // The router role holds the headers until the body has named the model.
                    "allow_on_headers_stop_iteration": true,
                    "failure_policy": "FAIL_RELOAD",
                    "vm_config": vm.clone(),
                    "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration},
                },
            },
        })
    };
    // Envoy's SigV4 signer comes after the attempt role: it signs the rewritten attempt.
    let mut upstream_filters = vec![wasm_filter("{\"role\": \"attempt\"}")];
    upstream_filters.extend(aws_signing::filters(&deployment)?);
    upstream_filters.push(json!({"name": "envoy.filters.http.upstream_codec",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}));
    let attempt_filters = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {}},
            "http_filters": upstream_filters,
        }
    });
    // Envoy allows 3 concurrent retries per cluster by default: past that, requests would not
    // fail over at all.
    let breakers = json!({"thresholds": [{"priority": "DEFAULT", "max_retries": 1024}]});
    let connect_timeout = seconds("envoy.connectTimeout", &envoy.connect_timeout)?;

    let mut clusters = Vec::new();
    for attempt in &deployment.attempts {
        let provider = &attempt.provider;
        let upstream = envoy.upstreams.get(&provider.name);
        let tls = upstream.is_none_or(|u| u.tls);
        let address_text = upstream.and_then(|u| u.address.clone()).unwrap_or_else(|| provider.host.clone());
        let upstream_field = format!("envoy.upstreams.{}.address", provider.name);
        let address = socket_address(&address_text, if tls { 443 } else { 80 })
            .ok_or_else(|| invalid(&upstream_field, format!("`{address_text}` is not `host` or `host:port`")))?;
        let host = address.pointer("/socket_address/address").and_then(Value::as_str).unwrap_or_default();
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let name = provider_cluster(&provider.name);
        let mut cluster = json!({
            "name": name,
            "type": if is_ip { "STATIC" } else { "LOGICAL_DNS" },
            "connect_timeout": connect_timeout,
            "circuit_breakers": breakers,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{
                "endpoint": {"address": address},
                // Names the provider to the order clusters' attempt filter.
                "metadata": {"filter_metadata": {"llm_failover": {"provider": provider.name}}},
            }]}]},
        });
        if !is_ip {
            set(&mut cluster, "dns_lookup_family", json!("V4_PREFERRED"));
        }
        if tls {
            let sni = provider.host.rsplit_once(':').map_or(provider.host.as_str(), |(h, _)| h);
            let ca = upstream.and_then(|u| u.ca_file.clone()).unwrap_or_else(|| SYSTEM_CA.to_string());
            set(&mut cluster, "transport_socket", json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": sni,
                    "common_tls_context": {"validation_context": {
                        "trusted_ca": {"filename": ca},
                        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": sni}}],
                    }},
                },
            }));
        }
        clusters.push(cluster);
    }
    for attempt in &deployment.attempts {
        if let Some(renewal) = &attempt.provider.auth.renewal {
            clusters.push(token_cluster(&attempt.provider.name, renewal.url(), &connect_timeout));
        }
    }
    if let Some(unknown) = envoy.upstreams.keys().find(|u| deployment.attempt(u).is_none()) {
        return Err(invalid(&format!("envoy.upstreams.{unknown}"), format!("provider `{unknown}` is not in `filter.providers`")));
    }
    for order in orders::all(router) {
        let order: Vec<&str> = order.iter().map(String::as_str).collect();
        clusters.push(json!({
            "name": orders::cluster_name(&order),
            "connect_timeout": connect_timeout,
            "lb_policy": "CLUSTER_PROVIDED",
            "circuit_breakers": breakers,
            "cluster_type": {"name": "envoy.clusters.aggregate", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                "clusters": order.iter().map(|p| provider_cluster(p)).collect::<Vec<_>>(),
            }},
            "typed_extension_protocol_options": attempt_filters,
        }));
    }

    let longest_chain = router.chains.iter().map(|c| c.providers.len()).max().unwrap_or(1);
    let route_action = json!({
        "cluster_header": ORDER_HEADER,
        "timeout": seconds("envoy.timeout", &envoy.timeout)?,
        // A provider whose context is too small answers 307 to the request's own URL: Envoy
        // replays it through the router role, which leaves out the smaller providers.
        "internal_redirect_policy": {"redirect_response_codes": [307], "max_internal_redirects": longest_chain.max(2) - 1},
        "retry_policy": {
            "retry_on": "5xx,reset,connect-failure,retriable-status-codes",
            "retriable_status_codes": RETRIABLE_STATUS_CODES,
            // The router role lowers it per request to its order's length.
            "num_retries": longest_chain - 1,
            "per_try_timeout": seconds("envoy.perTryTimeout", &envoy.per_try_timeout)?,
            "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.05s"},
            // Each retry (or hedge) goes to the order cluster's next provider.
            "retry_priority": {"name": "envoy.retry_priorities.previous_priorities", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": 1}},
        },
    });
    // Retries need the whole body: up to the size the router role accepts. Envoy 1.36-1.38
    // buffer by the older (deprecated) field alone (measured: a 2 MiB body got 413 on 1.37).
    let buffer_limit_field = if version.is_some_and(|v| v < BUFFER_LIMIT_FIELD_FROM) {
        "per_request_buffer_limit_bytes"
    } else {
        "request_body_buffer_limit"
    };
    // Anthropic Messages, Responses and embeddings requests are routed as chat requests are:
    // same order clusters (an embedding alias's among them), same retries.
    let api_paths = router
        .chat_paths
        .iter()
        .map(|p| (CHAT_ROUTE, p))
        .chain(router.messages_paths.iter().map(|p| (MESSAGES_ROUTE, p)))
        .chain(router.count_tokens_paths.iter().map(|p| (COUNT_TOKENS_ROUTE, p)))
        .chain(router.responses_paths.iter().map(|p| (RESPONSES_ROUTE, p)))
        .chain(router.embeddings_paths.iter().map(|p| (EMBEDDINGS_ROUTE, p)));
    let mut chat_routes: Vec<Value> = api_paths
        .map(|(name, path)| {
            json!({
                "name": name,
                "match": {"path": path, "headers": [{"name": ":method", "string_match": {"exact": "POST"}}]},
                buffer_limit_field: router.max_request_bytes,
                "request_headers_to_remove": [ORDER_HEADER],
                "typed_per_filter_config": {DECOMPRESSOR: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}},
                "route": route_action,
            })
        })
        .collect();
    // Any method, no decompressor and no body kept for retries: there is one provider, and the
    // gateway does not read these bodies.
    chat_routes.extend(router.passthrough.iter().map(|p| {
        json!({"name": PASSTHROUGH_ROUTE, "match": {"prefix": p.prefix}, "request_headers_to_remove": [ORDER_HEADER], "route": route_action})
    }));
    let not_served = crate::openai_error::body(
        &format!(
            "this gateway serves POST {}, GET {}",
            router
                .chat_paths
                .iter()
                .chain(&router.messages_paths)
                .chain(&router.count_tokens_paths)
                .chain(&router.responses_paths)
                .chain(&router.embeddings_paths)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", POST "),
            router.models_paths.join(", GET ")
        ),
        "invalid_request_error",
        "unsupported_path",
        None,
    );
    let router_filter = wasm_filter(&router_json);
    let audit_log = envoy.audit_log.as_deref().map(audit_access_log);
    Ok(Parts {
        audit_log,
        max_answer_bytes: router.max_answer_bytes,
        istio: raw.istio,
        vm,
        router_filter,
        attempt_filters,
        breakers,
        clusters,
        route_action,
        chat_routes,
        not_served: String::from_utf8_lossy(&not_served).into_owned(),
        envoy,
    })
}

/// The filter state the router role leaves at the end of a chat request (src/audit.rs).
const AUDIT_STATE: &str = "wasm.llm_failover.audit";

/// One line per chat request: the filter state, as it is, when the router role left one.
fn audit_access_log(path: &str) -> Value {
    json!([{
        "name": "envoy.access_loggers.file",
        "filter": {"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": format!("filter_state['{AUDIT_STATE}'] != b''"),
            },
        }},
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {"text_format_source": {"inline_string": format!("%FILTER_STATE({AUDIT_STATE}:PLAIN)%\n")}},
        },
    }])
}

/// Envoy reads an upstream answer in pieces of at most this much (its default read buffer is
/// 1 MiB), so an attempt sees an answer pass maxAnswerBytes before Envoy's own limit.
const ANSWER_BUFFER_MARGIN: usize = 1 << 20;

const DECOMPRESSOR: &str = "envoy.filters.http.decompressor";

/// Envoy's gzip decompressor for request bodies, on the chat routes only (disabled here, enabled
/// by each chat route): the router role reads the body as JSON. Answers are left as they are.
fn request_decompressor() -> Value {
    json!({
        "name": DECOMPRESSOR,
        "disabled": true,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor",
            "decompressor_library": {"name": "gzip", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip"}},
            "request_direction_config": {
                "common_config": {"ignore_no_transform_header": true},
                "advertise_accept_encoding": false,
            },
            "response_direction_config": {"common_config": {"enabled": {
                "default_value": false, "runtime_key": "llm_failover.decompress_answers"}}},
        },
    })
}

/// Envoy's own answers to requests its HTTP codec refused (a header block over its limit, a bad
/// request line) in OpenAI's error shape, as the filter's answers are. Matched by their details
/// (`http1.headers_too_large`...): the DPE response flag is set only after the mapper ran
/// (measured).
fn local_reply_config() -> Value {
    json!({"mappers": [{
        "filter": {"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": "response.code_details.startsWith('http1.') || response.code_details.startsWith('http2.')",
            },
        }},
        "body_format_override": {
            "json_format": {"error": {
                "message": "%LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)",
                "type": "invalid_request_error",
                "code": "bad_http_request",
            }},
        },
    }]})
}

fn router_filter_chain(router_filter: Value) -> Value {
    json!([
        request_decompressor(),
        router_filter,
        {"name": "envoy.filters.http.router",
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ])
}

fn http_connection_manager(stat_prefix: &str, virtual_host: Value, http_filters: Value) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "route_config": {"virtual_hosts": [virtual_host]},
            "http_filters": http_filters,
        },
    })
}

/// The stats tags that give the filter's metrics the same names and labels on every version.
fn stats_tags() -> Value {
    // Envoy 1.36-1.38 name the filter's metrics under the cluster whose filter made the VM
    // (`cluster.llm_failover~a.wasmcustom.llm_failover...`); the first tag takes that off,
    // so Prometheus sees the same names on every version (docs/compatibility.md).
    json!([
        {"tag_name": "llm_failover_vm", "regex": r"^(cluster\.([^.]+)\.)wasmcustom\.llm_failover\."},
        {"tag_name": "llm_reason", "regex": r"^(?:cluster\.[^.]+\.)?wasmcustom\.llm_failover\.provider\.[^.]+\.failover(\.([^.]+))$"},
        {"tag_name": "llm_model", "regex": r"^(?:cluster\.[^.]+\.)?wasmcustom\.llm_failover\.provider\.[^.]+\.model(\.([^.]+))\."},
        {"tag_name": "llm_provider", "regex": r"^(?:cluster\.[^.]+\.)?wasmcustom\.llm_failover\.provider(\.([^.]+))\."},
    ])
}

/// The Envoy bootstrap, as YAML, for a render input (JSON).
pub fn render(input: &[u8]) -> Result<String, ConfigError> {
    let Parts { envoy, vm, router_filter, attempt_filters, breakers, mut clusters, route_action, mut chat_routes, not_served, audit_log, max_answer_bytes, .. } = parts(input)?;
    chat_routes.push(json!({
        "name": UNSUPPORTED_ROUTE,
        "match": {"prefix": "/"},
        "direct_response": {"status": 404, "body": {"inline_string": not_served}},
        "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}],
    }));
    let Some(listener) = &envoy.listener else {
        return Err(invalid("envoy.listener", "is needed: the `address:port` clients connect to"));
    };
    let listener = socket_address(listener, 10000).ok_or_else(|| invalid("envoy.listener", "must be `address:port`"))?;
    let mut hcm = http_connection_manager(
        "llm",
        // Envoy tells each attempt its number; it comes back as x-llm-attempts.
        json!({"name": "llm", "domains": ["*"], "include_request_attempt_count": true, "routes": chat_routes}),
        router_filter_chain(router_filter),
    );
    if let Some(config) = hcm.get_mut("typed_config") {
        set(config, "local_reply_config", local_reply_config());
        if let Some(access_log) = audit_log {
            set(config, "access_log", access_log);
        }
    }
    // The attempt filters hold answers in this buffer: larger than maxAnswerBytes, so that the
    // attempt, not Envoy, decides what happens to a larger answer.
    let answer_buffer = max_answer_bytes.saturating_add(ANSWER_BUFFER_MARGIN);
    let mut listeners = vec![json!({"name": "llm", "address": listener, "per_connection_buffer_limit_bytes": answer_buffer,
                                    "filter_chains": [{"filters": [hcm]}]})];
    let admin = match &envoy.admin {
        Some(admin) => Some(socket_address(admin, 9901).ok_or_else(|| invalid("envoy.admin", "must be `address:port`"))?),
        None => None,
    };
    if let Some(ops) = &envoy.ops {
        let address = socket_address(ops, 9902).ok_or_else(|| invalid("envoy.ops", "must be `address:port`"))?;
        let Some(admin) = &admin else {
            return Err(invalid("envoy.ops", "serves the admin's /stats/prometheus: set `envoy.admin` too"));
        };
        listeners.push(ops_listener(address));
        clusters.push(json!({
            "name": ADMIN_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": ADMIN_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": admin}}]}]},
        }));
    }
    let mut bootstrap = json!({
        "stats_config": {"stats_tags": stats_tags()},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    });
    if let Some(address) = admin {
        set(&mut bootstrap, "admin", json!({"address": address}));
    }
    Ok(yaml::to_yaml(&bootstrap, &[("llm_vm", &vm), ("attempt_filters", &attempt_filters), ("retry_breakers", &breakers), ("route", &route_action)]))
}

const ADMIN_CLUSTER: &str = "llm_failover_admin";

/// Readiness (answered by Envoy's health check filter, which fails while Envoy drains) and the
/// metrics, for the pod network; nothing else of the admin.
fn ops_listener(address: Value) -> Value {
    let virtual_host = json!({"name": "ops", "domains": ["*"], "routes": [
        {"match": {"path": "/stats/prometheus"}, "route": {"cluster": ADMIN_CLUSTER}},
        {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
    ]});
    let filters = json!([
        {"name": "envoy.filters.http.health_check", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
            "pass_through_mode": false,
            "headers": [{"name": ":path", "string_match": {"exact": "/ready"}}],
        }},
        {"name": "envoy.filters.http.router",
         "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ]);
    json!({"name": "ops", "address": address, "filter_chains": [{"filters": [http_connection_manager("ops", virtual_host, filters)]}]})
}

/// The same deployment inside Istio's own gateway proxies: one EnvoyFilter that adds the
/// provider and order clusters, puts the router role before the router and the chat route
/// before the `Gateway`'s catch-all route, plus the bootstrap override that tags the metrics
/// (docs/deploy-istio.md says why not a WasmPlugin).
pub fn render_istio(input: &[u8]) -> Result<String, ConfigError> {
    let Parts { istio, router_filter, clusters, chat_routes, audit_log, .. } = parts(input)?;
    let Some(istio) = istio else {
        return Err(invalid("istio", "is needed to render for Istio: namespace, gateway, selector"));
    };
    let gateway = format!("{}/{}", istio.namespace, istio.gateway);
    let mut patches: Vec<Value> = clusters
        .into_iter()
        .map(|cluster| json!({"applyTo": "CLUSTER", "match": {"context": "GATEWAY"}, "patch": {"operation": "ADD", "value": cluster}}))
        .collect();
    // Each inserted right before Envoy's router: the decompressor ends up before the router role.
    for filter in [request_decompressor(), router_filter] {
        patches.push(json!({
            "applyTo": "HTTP_FILTER",
            "match": {"context": "GATEWAY", "listener": {"filterChain": {"filter": {
                "name": "envoy.filters.network.http_connection_manager",
                "subFilter": {"name": "envoy.filters.http.router"}}}}},
            "patch": {"operation": "INSERT_BEFORE", "value": filter},
        }));
    }
    if let Some(access_log) = audit_log {
        // Merged into the gateway's HTTP connection manager: added to Istio's own access logs.
        patches.push(json!({
            "applyTo": "NETWORK_FILTER",
            "match": {"context": "GATEWAY", "listener": {"filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager"}}}},
            "patch": {"operation": "MERGE", "value": {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "access_log": access_log,
                },
            }},
        }));
    }
    patches.push(json!({
        "applyTo": "VIRTUAL_HOST",
        "match": {"context": "GATEWAY", "routeConfiguration": {"gateway": gateway}},
        "patch": {"operation": "MERGE", "value": {"include_request_attempt_count": true}},
    }));
    for route in chat_routes {
        patches.push(json!({
            "applyTo": "HTTP_ROUTE",
            "match": {"context": "GATEWAY", "routeConfiguration": {"gateway": gateway, "vhost": {"route": {"name": UNSUPPORTED_ROUTE}}}},
            "patch": {"operation": "INSERT_BEFORE", "value": route},
        }));
    }
    let envoy_filter = json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "llm-failover", "namespace": istio.namespace},
        "spec": {"workloadSelector": {"labels": istio.selector}, "configPatches": patches},
    });
    let bootstrap_override = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "llm-failover-bootstrap", "namespace": istio.namespace},
        "data": {"custom_bootstrap.json": serde_json::to_string_pretty(&json!({"stats_config": {"stats_tags": stats_tags()}})).unwrap_or_default()},
    });
    Ok(format!("{}---\n{}", yaml::to_yaml(&envoy_filter, &[]), yaml::to_yaml(&bootstrap_override, &[])))
}

/// The plugin configuration as the operator wrote it (after its opening brace), with the router
/// role first and the operator's indentation brought to the left.
fn with_router_role(rest: &str) -> String {
    if rest.trim_start().starts_with('}') {
        return "{\"role\": \"router\"}".to_string();
    }
    let mut lines = rest.lines();
    let first = lines.next().unwrap_or_default().trim();
    let others: Vec<&str> = lines.collect();
    let margin = others.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    let mut text = String::from("{\"role\": \"router\",");
    if !first.is_empty() {
        text.push(' ');
        text.push_str(first);
    }
    for line in others {
        text.push('\n');
        text.push_str(line.get(margin..).unwrap_or(line.trim_start()));
    }
    text
}

/// Where the filter fetches a provider's renewed token: the token URL's host, over TLS with
/// the system's CA unless the URL is plain http to a loopback address. No wasm filter on it.
fn token_cluster(provider: &str, url: &credentials::TokenUrl, connect_timeout: &str) -> Value {
    let name = credentials::token_cluster(provider);
    let host = url.host().trim_start_matches('[').trim_end_matches(']');
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let mut cluster = json!({
        "name": name,
        "type": if is_ip { "STATIC" } else { "LOGICAL_DNS" },
        "connect_timeout": connect_timeout,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": {"socket_address": {"address": host, "port_value": url.port()}}},
        }]}]},
    });
    if !is_ip {
        set(&mut cluster, "dns_lookup_family", json!("V4_PREFERRED"));
    }
    if url.tls {
        set(&mut cluster, "transport_socket", json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": host,
                "common_tls_context": {"validation_context": {
                    "trusted_ca": {"filename": SYSTEM_CA},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}],
                }},
            },
        }));
    }
    cluster
}

fn set(object: &mut Value, key: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.insert(key.to_string(), value);
    }
}

fn environment_variables(envoy: &RawEnvoy) -> Value {
    let mut variables = json!({});
    if !envoy.environment.is_empty() {
        set(&mut variables, "key_values", json!(envoy.environment));
    }
    if !envoy.host_env_keys.is_empty() {
        set(&mut variables, "host_env_keys", json!(envoy.host_env_keys));
    }
    variables
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: &str = r#"{
      "envoy": {"listener": "127.0.0.1:10000", "admin": "127.0.0.1:9901", "wasm": "llm_failover.wasm",
                "hostEnvKeys": ["OPENAI_API_KEY"],
                "upstreams": {"ollama": {"address": "127.0.0.1:11434", "tls": false}}},
      "filter": {
        "providers": [
          {"name": "openai", "format": "openai", "host": "api.openai.com", "auth": {"apiKeyEnv": "OPENAI_API_KEY"}},
          {"name": "ollama", "format": "ollama", "host": "localhost:11434"}
        ],
        "chains": {"default": ["openai", "ollama"]}
      }
    }"#;

    #[test]
    fn a_renewed_credential_gets_a_token_cluster_without_the_filter() {
        let entra = r#"{"name": "azure", "format": "azure-openai", "host": "r.openai.azure.com", "apiVersion": "2024-10-21",
            "auth": {"kind": "oauth2-client-credentials", "tokenUrl": "https://login.microsoftonline.com/t/oauth2/v2.0/token",
                     "clientIdEnv": "AZURE_CLIENT_ID", "clientSecretEnv": "AZURE_CLIENT_SECRET", "scope": "https://cognitiveservices.azure.com/.default"}},
          {"name": "local", "format": "openai", "host": "localhost", "auth": {"kind": "token-exchange", "tokenUrl": "http://127.0.0.1:8099/exchange", "tokenEnv": "OPENAI_API_KEY"}},
          {"name": "ollama""#;
        let input = INPUT.replace(r#"{"name": "ollama""#, entra).replace(r#""hostEnvKeys": ["OPENAI_API_KEY"]"#, r#""hostEnvKeys": ["OPENAI_API_KEY", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]"#);
        let yaml = render(input.as_bytes()).unwrap();
        let token = yaml.split("- name: llm_token~azure").nth(1).unwrap().split("- name: ").next().unwrap();
        for expected in ["address: login.microsoftonline.com", "port_value: 443", "sni: login.microsoftonline.com", "type: LOGICAL_DNS"] {
            assert!(token.contains(expected), "missing {expected:?} in:\n{token}");
        }
        assert!(!token.contains("http_filters"), "no attempt filter on a token cluster:\n{token}");
        let local = yaml.split("- name: llm_token~local").nth(1).unwrap().split("- name: ").next().unwrap();
        assert!(local.contains("port_value: 8099") && !local.contains("transport_socket"), "{local}");
        assert!(!yaml.contains("AZURE_CLIENT_SECRET\n") || yaml.contains("- AZURE_CLIENT_SECRET"), "only the variable's name");
    }

    #[test]
    fn a_google_service_account_gets_google_s_token_endpoint_with_tls() {
        let vertex = r#"{"name": "vertex", "format": "gemini", "vertex": {"project": "p", "location": "us-central1"},
            "auth": {"kind": "google-service-account", "keyEnv": "GOOGLE_SA"}},
          {"name": "ollama""#;
        let input = INPUT.replace(r#"{"name": "ollama""#, vertex).replace(r#""hostEnvKeys": ["OPENAI_API_KEY"]"#, r#""hostEnvKeys": ["OPENAI_API_KEY", "GOOGLE_SA"]"#);
        // The key is in Envoy's environment only: the render checks all the rest.
        let yaml = render(input.as_bytes()).unwrap();
        let token = yaml.split("- name: llm_token~vertex").nth(1).unwrap().split("- name: ").next().unwrap();
        for expected in ["address: oauth2.googleapis.com", "port_value: 443", "sni: oauth2.googleapis.com", "type: LOGICAL_DNS"] {
            assert!(token.contains(expected), "missing {expected:?} in:\n{token}");
        }
        // A key given in the render's input is checked against `tokenUrl`.
        let key = serde_json::to_string(include_str!("../tests/fixtures/google/TEST-ONLY-service-account.json")).unwrap();
        let literal = input.replace(r#""hostEnvKeys": ["OPENAI_API_KEY", "GOOGLE_SA"]"#, &format!(r#""hostEnvKeys": ["OPENAI_API_KEY"], "environment": {{"GOOGLE_SA": {key}}}"#));
        assert!(render(literal.as_bytes()).is_ok());
        let elsewhere = literal.replace(r#""keyEnv""#, r#""tokenUrl": "http://127.0.0.1:9/token", "keyEnv""#);
        let err = render(elsewhere.as_bytes()).unwrap_err();
        assert!(err.field.ends_with("auth.tokenUrl") && err.reason.contains("token_uri") && !err.reason.contains("MII"), "{err}");
    }

    #[test]
    fn a_passthrough_prefix_gets_a_route_before_the_catch_all() {
        let input = INPUT.replace(r#""chains":"#, r#""passthrough": [{"prefix": "/v1/audio/", "provider": "openai"}], "chains":"#);
        let yaml = render(input.as_bytes()).unwrap();
        let routes = yaml.split("- name: llm-failover-passthrough").nth(1).unwrap();
        assert!(routes.trim_start().starts_with("match:\n") && routes.contains("prefix: /v1/audio/"), "{yaml}");
        assert!(routes.find("route: *route") < routes.find(UNSUPPORTED_ROUTE), "before the 404:\n{yaml}");
        assert!(yaml.contains("name: llm_failover~openai\n"), "its provider's order cluster:\n{yaml}");
        let istio = input.replacen('{', r#"{"istio": {"namespace": "llm", "gateway": "egress", "selector": {"istio": "egress"}},"#, 1);
        let yaml = render_istio(istio.as_bytes()).unwrap();
        assert!(yaml.contains("name: llm-failover-passthrough"), "{yaml}");
    }

    #[test]
    fn a_vertex_provider_is_reached_at_its_location_endpoint_with_tls() {
        let input = INPUT.replace(
            r#"{"name": "ollama", "format": "ollama", "host": "localhost:11434"}"#,
            r#"{"name": "gemini-vertex", "format": "gemini", "vertex": {"project": "p", "location": "europe-west4"},
                "auth": {"apiKeyEnv": "OPENAI_API_KEY"}}"#,
        )
        .replace(r#""upstreams": {"ollama": {"address": "127.0.0.1:11434", "tls": false}}"#, r#""upstreams": {}"#)
        .replace(r#"["openai", "ollama"]"#, r#"["openai", "gemini-vertex"]"#);
        let yaml = render(input.as_bytes()).unwrap();
        for expected in [
            "name: llm_provider~gemini-vertex",
            "address: europe-west4-aiplatform.googleapis.com",
            "port_value: 443",
            "sni: europe-west4-aiplatform.googleapis.com",
            "\"vertex\": {",
        ] {
            assert!(yaml.contains(expected), "missing {expected:?} in:\n{yaml}");
        }
        let bad = input.replace(r#""location": "europe-west4""#, r#""location": "Europe West""#);
        assert_eq!(render(bad.as_bytes()).unwrap_err().field, "filter.providers[1].vertex.location");
    }

    #[test]
    fn renders_provider_and_order_clusters_and_the_route() {
        let yaml = render(INPUT.as_bytes()).unwrap();
        for expected in [
            "name: llm_provider~openai",
            "name: llm_provider~ollama",
            "name: llm_failover~openai~ollama",
            "name: llm_failover~ollama~openai",
            "name: llm_failover~ollama\n",
            "cluster_header: x-llm-failover-order",
            "sni: api.openai.com",
            "host_env_keys:\n                  - OPENAI_API_KEY",
            "num_retries: 1",
            "\"role\": \"router\",",
            "route: &route\n                  cluster_header",
            // The Messages route: the same route action (retries, order cluster), one YAML alias.
            "- name: llm-failover-messages",
            "path: /v1/messages",
            "route: *route",
            // The Responses route, beside the chat path by default.
            "- name: llm-failover-responses",
            "path: /v1/responses",
            "this gateway serves POST /v1/chat/completions, POST /v1/messages, POST /v1/messages/count_tokens, POST /v1/responses, GET /v1/models",
        ] {
            assert!(yaml.contains(expected), "missing {expected:?} in:\n{yaml}");
        }
        assert!(!yaml.contains("sni: localhost"), "ollama is plain text");
        assert_eq!(yaml.matches(r#"\"role\": \"attempt\""#).count(), 1, "one attempt filter, aliased:\n{yaml}");
        assert!(!yaml.contains("llm-failover-embeddings"), "no embedding alias, no embeddings route");
    }

    #[test]
    fn a_sigv4_provider_gets_envoy_s_signer_after_the_attempt_role_scoped_to_its_host() {
        let bedrock = r#"{"name": "bedrock", "format": "bedrock", "host": "bedrock-runtime.us-east-1.amazonaws.com",
            "auth": {"style": "aws-sigv4", "region": "us-east-1", "service": "bedrock"}},"#;
        let input = INPUT.replace(r#""providers": ["#, &format!(r#""providers": [{bedrock}"#));
        let yaml = render(input.as_bytes()).unwrap();
        let filters = yaml.as_str();
        let (attempt, signer, codec) =
            (filters.find(r#"\"role\": \"attempt\""#), filters.find("AwsRequestSigning"), filters.find("UpstreamCodec"));
        assert!(attempt.is_some() && attempt < signer && signer < codec, "attempt, signer, codec:\n{filters}");
        for expected in ["ExtensionWithMatcher", r#"header_name: ":authority""#, "exact: bedrock-runtime.us-east-1.amazonaws.com", "SkipFilter", "use_unsigned_payload: false", "region: us-east-1"] {
            assert!(yaml.contains(expected), "missing {expected:?} in:\n{yaml}");
        }
        assert_eq!(yaml.matches("AwsRequestSigning").count(), 1, "{yaml}");
        let shared_host = input.replace(r#""host": "api.openai.com""#, r#""host": "bedrock-runtime.us-east-1.amazonaws.com""#);
        assert_eq!(render(shared_host.as_bytes()).unwrap_err().field, "filter.providers[0].host");
        assert!(!render(INPUT.as_bytes()).unwrap().contains("AwsRequestSigning"), "no signer without a signed provider");
    }

    #[test]
    fn an_embedding_alias_gets_its_route_and_order_clusters() {
        let input = INPUT.replace(
            r#""chains": {"default": ["openai", "ollama"]}"#,
            r#""chains": {"default": ["openai"]}, "embeddings": {"embed": {"ollama": "nomic-embed-text", "openai": "text-embedding-3-small"}}"#,
        );
        let yaml = render(input.as_bytes()).unwrap();
        for expected in [
            "- name: llm-failover-embeddings",
            "path: /v1/embeddings",
            "name: llm_failover~ollama~openai",
            "num_retries: 1",
            "this gateway serves POST /v1/chat/completions, POST /v1/messages, POST /v1/messages/count_tokens, POST /v1/responses, POST /v1/embeddings, GET /v1/models",
        ] {
            assert!(yaml.contains(expected), "missing {expected:?} in:\n{yaml}");
        }
        let istio = input.replacen('{', r#"{"istio": {"namespace": "llm", "gateway": "egress", "selector": {"istio": "egress"}},"#, 1);
        let yaml = render_istio(istio.as_bytes()).unwrap();
        assert!(yaml.contains("name: llm-failover-embeddings") && yaml.contains("name: llm_failover~ollama~openai"), "{yaml}");
        assert_eq!(yaml.matches("applyTo: HTTP_ROUTE").count(), 5, "chat, Messages, token counts, Responses and embeddings:\n{yaml}");
        let anthropic = input.replace(r#""embed": {"ollama""#, r#""embed": {"claude": "x", "ollama""#);
        assert_eq!(render(anthropic.as_bytes()).unwrap_err().field, "filter.embeddings.embed.claude");
    }

    #[test]
    fn a_config_the_filter_refuses_is_refused_with_its_field() {
        let cases: &[(&str, &str, &str)] = &[
            (r#""chains": {"default": ["openai", "ghost"]}"#, "filter.chains.default[1]", "not in `providers`"),
            (r#""chains": {"default": ["openai"]}, "role": "router""#, "filter.role", "leave it out"),
        ];
        for (replacement, field, reason) in cases {
            let input = INPUT.replace(r#""chains": {"default": ["openai", "ollama"]}"#, replacement);
            let err = render(input.as_bytes()).unwrap_err();
            assert_eq!(err.field, *field, "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
        let no_key = INPUT.replace(r#""hostEnvKeys": ["OPENAI_API_KEY"],"#, "");
        assert_eq!(render(no_key.as_bytes()).unwrap_err().field, "filter.providers[0].auth.apiKeyEnv");
        let ghost = INPUT.replace(r#""upstreams": {"ollama""#, r#""upstreams": {"olama""#);
        assert_eq!(render(ghost.as_bytes()).unwrap_err().field, "envoy.upstreams.olama");
    }

    #[test]
    fn envoy_136_needs_error_answers_passed() {
        let old = INPUT.replace(r#""listener""#, r#""version": "1.36", "listener""#);
        let err = render(old.as_bytes()).unwrap_err();
        assert_eq!(err.field, "filter.errorAnswers", "{err}");
        assert!(err.reason.contains("1.37"), "{err}");
        let passing = old.replace(r#""chains""#, r#""errorAnswers": "pass", "chains""#);
        assert!(render(passing.as_bytes()).is_ok());
        let newer = INPUT.replace(r#""listener""#, r#""version": "1.37", "listener""#);
        assert!(render(newer.as_bytes()).is_ok());
    }

    #[test]
    fn the_shipped_yaml_is_what_the_render_makes_of_its_json() {
        let shipped = [
            ("demo", &include_bytes!("../envoy/demo.json")[..], include_str!("../envoy/demo.yaml")),
            ("real-providers", &include_bytes!("../envoy/real-providers.json")[..], include_str!("../envoy/real-providers.yaml")),
            ("kubernetes/gateway", &include_bytes!("../deploy/kubernetes/gateway/llm-failover.json")[..], include_str!("../deploy/kubernetes/gateway/envoy.yaml")),
        ];
        for (name, json, committed) in shipped {
            let made = render(json).unwrap();
            let body = committed.split_once("\n\n").map_or(committed, |(_, body)| body);
            assert!(made == body, "the YAML of {name} is stale: run `make envoy-configs`");
        }
        let committed = include_str!("../deploy/istio/llm-failover.yaml");
        let made = render_istio(include_bytes!("../deploy/istio/llm-failover.json")).unwrap();
        assert!(committed.split_once("\n\n").is_some_and(|(_, body)| body == made), "deploy/istio/llm-failover.yaml is stale: run `make envoy-configs`");
    }

    #[test]
    fn the_ops_listener_shows_readiness_and_metrics_and_needs_the_admin() {
        let with_ops = INPUT.replace(r#""admin": "127.0.0.1:9901","#, r#""admin": "127.0.0.1:9901", "ops": "0.0.0.0:9902","#);
        let yaml = render(with_ops.as_bytes()).unwrap();
        for expected in ["name: ops", "port_value: 9902", "exact: /ready", "path: /stats/prometheus", "cluster: llm_failover_admin", "pass_through_mode: false"] {
            assert!(yaml.contains(expected), "missing {expected:?} in:\n{yaml}");
        }
        assert!(!render(INPUT.as_bytes()).unwrap().contains("name: ops"));
        let no_admin = with_ops.replace(r#""admin": "127.0.0.1:9901","#, "");
        let err = render(no_admin.as_bytes()).unwrap_err();
        assert_eq!(err.field, "envoy.ops", "{err}");
        let audited = INPUT.replace(r#""wasm":"#, r#""auditLog": "/dev/stdout", "wasm":"#);
        let yaml = render(audited.as_bytes()).unwrap();
        for expected in ["access_log:", "path: /dev/stdout", "%FILTER_STATE(wasm.llm_failover.audit:PLAIN)%", "filter_state['wasm.llm_failover.audit'] != b''"] {
            assert!(yaml.contains(expected), "missing {expected:?} in:\n{yaml}");
        }
        assert!(!render(INPUT.as_bytes()).unwrap().contains("access_log:"));
        let no_listener = INPUT.replace(r#""listener": "127.0.0.1:10000","#, "");
        assert_eq!(render(no_listener.as_bytes()).unwrap_err().field, "envoy.listener");
    }

    #[test]
    fn bad_input_is_answered_by_envoy_in_the_filter_s_shape_and_answers_fit_the_buffer() {
        let yaml = render(INPUT.as_bytes()).unwrap();
        assert!(yaml.contains(&format!("per_connection_buffer_limit_bytes: {}", (8 << 20) + ANSWER_BUFFER_MARGIN)), "{yaml}");
        let listener = yaml.split("listeners:").nth(1).unwrap();
        let filters: Vec<&str> = listener.lines().filter_map(|l| l.trim().strip_prefix("- name: envoy.filters.http.")).collect();
        assert_eq!(filters, ["decompressor", "wasm", "router"], "the decompressor runs before the router role");
        let decompressor = yaml.split("- name: envoy.filters.http.decompressor").nth(1).unwrap();
        assert!(decompressor.trim_start().starts_with("disabled: true"), "on the chat routes only: {decompressor}");
        assert_eq!(yaml.matches(&format!("{DECOMPRESSOR}:\n")).count(), 4, "the chat, Messages, token-count and Responses routes enable it");
        for expected in ["local_reply_config:", "response.code_details.startsWith('http1.')", "code: bad_http_request", "type: invalid_request_error"] {
            assert!(yaml.contains(expected), "missing {expected:?} in:\n{yaml}");
        }
        let smaller = INPUT.replacen(r#""filter": {"#, r#""filter": {"maxAnswerBytes": 1048576, "#, 1);
        let yaml = render(smaller.as_bytes()).unwrap();
        assert!(yaml.contains(&format!("per_connection_buffer_limit_bytes: {}", (1 << 20) + ANSWER_BUFFER_MARGIN)));
    }

    #[test]
    fn istio_gets_the_same_clusters_filter_and_route_as_patches() {
        let istio = INPUT.replacen('{', r#"{"istio": {"namespace": "llm", "gateway": "egress", "selector": {"istio": "egress"}},"#, 1);
        let yaml = render_istio(istio.as_bytes()).unwrap();
        let bootstrap = render(istio.as_bytes()).unwrap();
        for cluster in ["llm_provider~openai", "llm_provider~ollama", "llm_failover~openai~ollama", "llm_failover~ollama~openai", "llm_failover~ollama\n"] {
            assert!(yaml.contains(&format!("name: {cluster}")), "missing {cluster:?} in:\n{yaml}");
        }
        let clusters = bootstrap.matches("- name: llm_failover~").count() + bootstrap.matches("- name: llm_provider~").count();
        assert_eq!(yaml.matches("applyTo: CLUSTER").count(), clusters, "{yaml}");
        for expected in [
            "kind: EnvoyFilter",
            "namespace: llm",
            "gateway: llm/egress",
            "operation: INSERT_BEFORE",
            "name: envoy.filters.http.router",
            "allow_on_headers_stop_iteration: true",
            "name: llm-failover-unsupported-path",
            "name: llm-failover-chat",
            "name: llm-failover-messages",
            "name: llm-failover-responses",
            "include_request_attempt_count: true",
            "istio: egress",
            "name: llm-failover-bootstrap",
            "\"tag_name\": \"llm_provider\"",
        ] {
            assert!(yaml.contains(expected), "missing {expected:?} in:\n{yaml}");
        }
        assert!(!yaml.contains('&') && !yaml.contains('*'), "no YAML anchors for kubectl:\n{yaml}");
        assert_eq!(yaml.matches("applyTo: HTTP_ROUTE").count(), 4, "the chat, Messages, token-count and Responses routes:\n{yaml}");
        assert!(!yaml.contains("NETWORK_FILTER"));
        let audited = istio.replace(r#""wasm":"#, r#""auditLog": "/dev/stdout", "wasm":"#);
        let yaml = render_istio(audited.as_bytes()).unwrap();
        assert!(yaml.contains("applyTo: NETWORK_FILTER") && yaml.contains("%FILTER_STATE(wasm.llm_failover.audit:PLAIN)%"), "{yaml}");
        let err = render_istio(INPUT.as_bytes()).unwrap_err();
        assert_eq!(err.field, "istio", "{err}");
    }
}
