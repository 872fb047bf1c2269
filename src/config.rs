//! The plugin configuration an operator writes in Envoy YAML, in two steps: serde reads the
//! JSON into raw types, then `check` resolves names and parses durations. Any error names the field.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::budget::{self, Budget, Price, Prices};
use crate::duration;
use crate::classifier::{Classifier, RawClassifier};
use crate::policy::{self, Profile, RawProfile, Tier};
use crate::probe::{Probe, ProberConfig};
use crate::trust::Network;
use crate::health::{BreakerPolicy, CooldownPolicy, ErrorRate, HealthPolicy, LatencyPolicy};
use crate::provider::{Auth, AuthStyle, Format, FormatOptions, Provider};

/// The header the router role hands the provider order in; `header_to_metadata` in the Envoy
/// config must read this name.
pub const ORDER_HEADER: &str = "x-llm-failover-order";

/// Every chat path ends so, which is how the attempt role (which has no router config) knows a
/// chat request when it sees one.
pub const CHAT_SUFFIX: &str = "/chat/completions";

#[derive(Debug)]
pub enum Config {
    Router(Box<RouterConfig>),
    Attempt(Box<AttemptConfig>),
    /// The attempt filter of an aggregate cluster: each attempt takes the attempt role of the
    /// provider its endpoint names (`llm_failover.provider` in the endpoint's metadata).
    AttemptByEndpoint,
    Prober(ProberConfig),
    RouteRefresh,
}

#[derive(Debug)]
pub struct RouterConfig {
    pub chat_paths: Vec<String>,
    pub max_request_bytes: usize,
    pub providers: Vec<String>,
    /// One chain per profile and tier that has its own.
    pub chains: Vec<Chain>,
    /// Plain `chains` entries are profiles of one chain.
    pub profiles: Vec<Profile>,
    model_profiles: HashMap<String, usize>,
    default_profile: Option<usize>,
    pub classifier: Option<Classifier>,
    pub trusted_headers: Option<TrustedHeaders>,
    pub provider_info: HashMap<String, ProviderInfo>,
    /// How long a half-open provider's single probe stays reserved for the request that
    /// claimed it.
    pub probe_timeout: Duration,
    pub admin: Option<Admin>,
    pub hedge_clusters: Vec<HedgeCluster>,
}

/// An Envoy aggregate cluster over providers' clusters, in this order. Envoy neither sends a
/// hedged attempt to another cluster nor, once a request is hedged, moves its retries to the
/// next priority group (measured on 1.40): every attempt of a hedged request stays in its first
/// cluster. Through this one, the route's `previous_priorities` retry priority moves each
/// attempt, hedge or retry, to the next provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HedgeCluster {
    pub providers: Vec<String>,
    pub cluster: String,
}

/// The health endpoint: read every provider's health, reset one or all.
pub struct Admin {
    pub path: String,
    /// Callers must send it in `x-llm-failover-admin-secret`; `None` only when the config
    /// says the listener is internal.
    pub secret: Option<String>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").field("path", &self.path).field("secret", &self.secret.as_ref().map(|_| "<redacted>")).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub providers: Vec<String>,
    /// Index of its profile in `RouterConfig::profiles`.
    pub profile: usize,
}

/// What the router knows of a provider beyond its name, for ordering and context limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderInfo {
    /// Tokens (input and output) the provider's model takes.
    pub context_window: Option<u64>,
    pub price: Option<Price>,
    pub weight: u32,
}

/// Headers a trusted caller may choose its profile and tier with; stripped from the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedHeaders {
    pub profile: String,
    pub tier: String,
    pub sources: Vec<Network>,
}

#[derive(Debug)]
pub struct AttemptConfig {
    pub provider: Provider,
    pub health: HealthPolicy,
    pub rate_limit: RateLimitPolicy,
    pub budget: Option<Budget>,
    pub prices: Prices,
}

/// When rate-limit headers move a provider behind the others before it answers 429.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// Demoted while fewer requests than this remain in the provider's window.
    pub min_remaining_requests: u64,
    /// Demoted while fewer tokens than this remain.
    pub min_remaining_tokens: u64,
    /// How long a demotion lasts when the provider does not say when its window resets.
    pub default_reset: Duration,
}

impl Default for RateLimitPolicy {
    fn default() -> Self {
        RateLimitPolicy { min_remaining_requests: 1, min_remaining_tokens: 1, default_reset: Duration::from_secs(10) }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "field `{}`: {}", self.field, self.reason)
        }
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), reason: reason.into() }
}

impl RouterConfig {
    pub fn is_chat_path(&self, path: &str) -> bool {
        let path = path.split('?').next().unwrap_or(path);
        self.chat_paths.iter().any(|p| p == path)
    }

    /// The chain serving `model` at the normal tier: its alias first, then the default.
    pub fn chain_for(&self, model: &str) -> Option<(usize, &Chain)> {
        let profile = self.profile_for_model(model).or(self.default_profile)?;
        self.chain(profile, Tier::Normal)
    }

    pub fn profile_named(&self, name: &str) -> Option<usize> {
        self.profiles.iter().position(|p| p.name == name)
    }

    /// The profile (or chain) `model` is an alias of.
    pub fn profile_for_model(&self, model: &str) -> Option<usize> {
        self.model_profiles.get(model).copied()
    }

    pub fn default_profile(&self) -> Option<usize> {
        self.default_profile
    }

    /// The chain of a profile at a tier (the normal chain when the tier has none of its own).
    pub fn chain(&self, profile: usize, tier: Tier) -> Option<(usize, &Chain)> {
        let providers = self.profiles.get(profile)?.chain_for(tier);
        self.chains.iter().enumerate().find(|(_, c)| c.profile == profile && c.providers == providers)
    }

    pub fn info(&self, provider: &str) -> Option<&ProviderInfo> {
        self.provider_info.get(provider)
    }

    /// The hedge cluster that tries `order` in order: the shortest whose providers start with
    /// it. Providers past the order are never reached, since the order's length bounds the
    /// attempts.
    pub fn hedge_cluster(&self, order: &[&str]) -> Option<&str> {
        self.hedge_clusters
            .iter()
            .filter(|h| h.providers.len() >= order.len() && h.providers.iter().zip(order).all(|(p, o)| p == o))
            .min_by_key(|h| h.providers.len())
            .map(|h| h.cluster.as_str())
    }
}

/// Where the provider API key comes from: the VM's environment (Envoy's
/// `vm_config.environment_variables`), so keys never sit in the plugin config.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

pub fn parse(json: &[u8], env: &dyn Environment) -> Result<Config, ConfigError> {
    let header: RoleOnly = read(json)?;
    match header.role.as_deref() {
        Some("router") => check_router(read(json)?, env).map(|r| Config::Router(Box::new(r))),
        Some("attempt") => check_attempt(read(json)?, env).map(|a| Config::Attempt(Box::new(a))),
        Some("attempt-by-endpoint") => read::<RawRouteRefresh>(json).map(|_| Config::AttemptByEndpoint),
        Some("prober") => check_prober(read(json)?).map(Config::Prober),
        Some("route-refresh") => read::<RawRouteRefresh>(json).map(|_| Config::RouteRefresh),
        Some(other) => Err(invalid(
            "role",
            format!("unknown role `{other}`, expected `router`, `attempt`, `attempt-by-endpoint`, `route-refresh` or `prober`"),
        )),
        None => Err(invalid("role", "missing (one of `router`, `attempt`, `route-refresh`)")),
    }
}

fn read<'de, T: Deserialize<'de>>(json: &'de [u8]) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let mut field = e.path().to_string();
        let mut reason = e.inner().to_string();
        if field == "." || field.contains('?') {
            // Not a field but a syntax error: its position is the useful part.
            field.clear();
        } else if let Some(at) = reason.find(" at line ") {
            reason.truncate(at);
        }
        invalid(field, reason)
    })
}

#[derive(Deserialize)]
struct RoleOnly {
    role: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRouteRefresh {
    #[serde(rename = "role")]
    _role: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRouter {
    #[serde(rename = "role")]
    _role: String,
    #[serde(default = "default_chat_paths")]
    chat_paths: Vec<String>,
    #[serde(default = "default_max_request_bytes")]
    max_request_bytes: u64,
    providers: Vec<String>,
    #[serde(default)]
    chains: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    profiles: BTreeMap<String, RawProfile>,
    #[serde(default)]
    models: BTreeMap<String, String>,
    #[serde(default)]
    classifier: Option<RawClassifier>,
    #[serde(default)]
    trusted_headers: Option<RawTrustedHeaders>,
    #[serde(default)]
    provider_info: BTreeMap<String, RawProviderInfo>,
    #[serde(default)]
    default_chain: Option<String>,
    #[serde(default)]
    probe_timeout: Option<String>,
    #[serde(default)]
    admin: Option<RawAdmin>,
    #[serde(default)]
    hedge_clusters: Vec<RawHedgeCluster>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawHedgeCluster {
    providers: Vec<String>,
    cluster: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTrustedHeaders {
    #[serde(default = "default_profile_header")]
    profile: String,
    #[serde(default = "default_tier_header")]
    tier: String,
    sources: Vec<String>,
}

fn default_profile_header() -> String {
    "x-llm-profile".into()
}
fn default_tier_header() -> String {
    "x-llm-tier".into()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProviderInfo {
    #[serde(default)]
    context_window: Option<u64>,
    #[serde(default)]
    price: Option<RawPrice>,
    #[serde(default = "default_weight")]
    weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProber {
    #[serde(rename = "role")]
    _role: String,
    #[serde(default = "default_probe_interval")]
    interval: String,
    #[serde(default = "default_probe_lease")]
    lease: String,
    probes: Vec<RawProbe>,
}

fn default_probe_interval() -> String {
    "10s".into()
}
fn default_probe_lease() -> String {
    "30s".into()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProbe {
    provider: String,
    cluster: String,
    path: String,
    #[serde(default)]
    timeout: Option<String>,
}

fn check_prober(raw: RawProber) -> Result<ProberConfig, ConfigError> {
    let interval = positive_duration("interval", &raw.interval)?;
    let lease = positive_duration("lease", &raw.lease)?;
    if lease <= interval {
        return Err(invalid("lease", "must be longer than `interval`, or the holder loses it between ticks"));
    }
    if raw.probes.is_empty() {
        return Err(invalid("probes", "must list at least one probe"));
    }
    let mut probes = Vec::with_capacity(raw.probes.len());
    for (i, p) in raw.probes.into_iter().enumerate() {
        check_name(&p.provider).map_err(|r| invalid(format!("probes[{i}].provider"), r))?;
        if p.cluster.is_empty() {
            return Err(invalid(format!("probes[{i}].cluster"), "must name the provider's Envoy cluster"));
        }
        if !p.path.starts_with('/') {
            return Err(invalid(format!("probes[{i}].path"), format!("`{}` must start with `/`", p.path)));
        }
        let timeout = match &p.timeout {
            Some(text) => positive_duration(&format!("probes[{i}].timeout"), text)?,
            None => Duration::from_secs(5),
        };
        probes.push(Probe { provider: p.provider, cluster: p.cluster, path: p.path, timeout });
    }
    Ok(ProberConfig { interval, lease, probes })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAdmin {
    path: String,
    #[serde(default)]
    secret_env: Option<String>,
    /// Only for a listener no client can reach (an internal or admin-only listener).
    #[serde(default)]
    internal_listener: bool,
}

fn default_chat_paths() -> Vec<String> {
    vec!["/v1/chat/completions".to_string()]
}

fn default_max_request_bytes() -> u64 {
    1024 * 1024
}

fn check_admin(raw: &RawAdmin, env: &dyn Environment) -> Result<Admin, ConfigError> {
    if !raw.path.starts_with('/') || raw.path.contains('?') || raw.path.len() < 2 {
        return Err(invalid("admin.path", format!("`{}` must be a path starting with `/`, without a query", raw.path)));
    }
    let secret = match (&raw.secret_env, raw.internal_listener) {
        (Some(name), _) => match env.var(name) {
            Some(secret) if secret.trim().len() >= 16 => Some(secret.trim().to_string()),
            Some(_) => return Err(invalid("admin.secretEnv", format!("the secret in `{name}` must be at least 16 characters"))),
            None => {
                return Err(invalid(
                    "admin.secretEnv",
                    format!("environment variable `{name}` is not set in the VM (list it in vm_config.environment_variables)"),
                ))
            }
        },
        (None, true) => None,
        (None, false) => {
            return Err(invalid("admin", "set `secretEnv`, or `internalListener: true` when only operators can reach this listener"))
        }
    };
    Ok(Admin { path: raw.path.trim_end_matches('/').to_string(), secret })
}

fn check_router(raw: RawRouter, env: &dyn Environment) -> Result<RouterConfig, ConfigError> {
    if raw.chat_paths.is_empty() {
        return Err(invalid("chatPaths", "must list at least one path"));
    }
    for (i, path) in raw.chat_paths.iter().enumerate() {
        if !path.starts_with('/') || path.contains('?') {
            return Err(invalid(format!("chatPaths[{i}]"), format!("`{path}` must be a path starting with `/`, without a query")));
        }
        // The attempt role recognises chat requests by this ending.
        if !path.ends_with(CHAT_SUFFIX) {
            return Err(invalid(format!("chatPaths[{i}]"), format!("`{path}` must end with `{CHAT_SUFFIX}`")));
        }
    }
    if raw.max_request_bytes == 0 {
        return Err(invalid("maxRequestBytes", "must be greater than 0"));
    }
    if raw.providers.is_empty() {
        return Err(invalid("providers", "must name at least one provider"));
    }
    for (i, name) in raw.providers.iter().enumerate() {
        check_name(name).map_err(|r| invalid(format!("providers[{i}]"), r))?;
        if raw.providers.iter().take(i).any(|p| p == name) {
            return Err(invalid(format!("providers[{i}]"), format!("`{name}` is listed twice")));
        }
    }
    if raw.chains.is_empty() && raw.profiles.is_empty() {
        return Err(invalid("chains", "must define at least one chain (or `profiles`)"));
    }
    let known_provider = |p: &str| raw.providers.iter().any(|k| k == p);
    let mut profiles = Vec::with_capacity(raw.chains.len() + raw.profiles.len());
    for (name, members) in raw.chains {
        check_name(&name).map_err(|r| invalid(format!("chains.{name}"), r))?;
        if members.is_empty() {
            return Err(invalid(format!("chains.{name}"), "must name at least one provider"));
        }
        check_members(&format!("chains.{name}"), &members, &known_provider).map_err(|(f, r)| invalid(f, r))?;
        profiles.push(Profile::of_chain(&name, members));
    }
    for profile in policy::check_profiles(raw.profiles, &known_provider).map_err(|(f, r)| invalid(f, r))? {
        if profiles.iter().any(|p| p.name == profile.name) {
            return Err(invalid(format!("profiles.{}", profile.name), "is also the name of a chain"));
        }
        profiles.push(profile);
    }
    let mut chains = Vec::new();
    for (index, profile) in profiles.iter().enumerate() {
        for tier in profile.tiers() {
            let name = if tier == Tier::Normal { profile.name.clone() } else { format!("{}/{}", profile.name, tier.name()) };
            chains.push(Chain { name, providers: profile.chain_for(tier).to_vec(), profile: index });
        }
    }
    let profile_index = |name: &str| profiles.iter().position(|p| p.name == name);
    let mut model_profiles = HashMap::with_capacity(raw.models.len());
    for (model, name) in &raw.models {
        let index = profile_index(name)
            .ok_or_else(|| invalid(format!("models.{model}"), format!("chain `{name}` is not in `chains` or `profiles`")))?;
        model_profiles.insert(model.clone(), index);
    }
    let default_profile = match &raw.default_chain {
        Some(name) => Some(
            profile_index(name)
                .ok_or_else(|| invalid("defaultChain", format!("chain `{name}` is not in `chains` or `profiles`")))?,
        ),
        None => None,
    };
    let classifier = match raw.classifier {
        Some(raw) => Some(Classifier::check(raw, &|p: &str| profile_index(p).is_some()).map_err(|(f, r)| invalid(f, r))?),
        None => None,
    };
    let trusted_headers = match raw.trusted_headers {
        Some(t) => {
            let mut sources = Vec::with_capacity(t.sources.len());
            for (i, source) in t.sources.iter().enumerate() {
                sources.push(Network::parse(source).map_err(|r| invalid(format!("trustedHeaders.sources[{i}]"), r))?);
            }
            if sources.is_empty() {
                return Err(invalid("trustedHeaders.sources", "must list the networks trusted callers come from"));
            }
            for (key, name) in [("profile", &t.profile), ("tier", &t.tier)] {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                    return Err(invalid(format!("trustedHeaders.{key}"), format!("`{name}` must be a lower-case header name")));
                }
            }
            Some(TrustedHeaders { profile: t.profile, tier: t.tier, sources })
        }
        None => None,
    };
    let mut provider_info = HashMap::with_capacity(raw.provider_info.len());
    for (name, info) in raw.provider_info {
        if !known_provider(&name) {
            return Err(invalid(format!("providerInfo.{name}"), format!("provider `{name}` is not in `providers`")));
        }
        if info.context_window == Some(0) {
            return Err(invalid(format!("providerInfo.{name}.contextWindow"), "must be greater than 0"));
        }
        let price = info.price.as_ref().map(|p| check_price(&format!("providerInfo.{name}.price"), p)).transpose()?;
        provider_info.insert(name, ProviderInfo { context_window: info.context_window, price, weight: info.weight });
    }
    let max_request_bytes = usize::try_from(raw.max_request_bytes)
        .map_err(|_| invalid("maxRequestBytes", "is too large"))?;
    let probe_timeout = match &raw.probe_timeout {
        Some(text) => positive_duration("probeTimeout", text)?,
        None => Duration::from_secs(30),
    };
    let admin = raw.admin.as_ref().map(|a| check_admin(a, env)).transpose()?;
    if let Some(admin) = &admin {
        if raw.chat_paths.iter().any(|p| p.starts_with(&admin.path)) {
            return Err(invalid("admin.path", "must not overlap `chatPaths`"));
        }
    }
    let mut hedge_clusters: Vec<HedgeCluster> = Vec::with_capacity(raw.hedge_clusters.len());
    for (i, h) in raw.hedge_clusters.into_iter().enumerate() {
        let field = |name: &str| format!("hedgeClusters[{i}].{name}");
        if h.providers.len() < 2 {
            return Err(invalid(field("providers"), "must name at least two providers: a hedge goes to the next one"));
        }
        check_members(&field("providers"), &h.providers, &known_provider).map_err(|(f, r)| invalid(f, r))?;
        if h.cluster.is_empty() || h.cluster.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(invalid(field("cluster"), "must name the aggregate cluster over these providers' clusters"));
        }
        if hedge_clusters.iter().any(|k| k.providers == h.providers) {
            return Err(invalid(field("providers"), format!("{:?} already has a cluster", h.providers)));
        }
        hedge_clusters.push(HedgeCluster { providers: h.providers, cluster: h.cluster });
    }
    Ok(RouterConfig {
        chat_paths: raw.chat_paths,
        max_request_bytes,
        providers: raw.providers,
        chains,
        profiles,
        model_profiles,
        default_profile,
        classifier,
        trusted_headers,
        provider_info,
        probe_timeout,
        admin,
        hedge_clusters,
    })
}

/// Provider names become Envoy priority-group names, stat names and shared-data keys.
/// Provider and profile names: they become priority-group and stat names, and log words.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` must be 1-64 characters of a-z, 0-9, `-` or `_`"))
    }
}

/// An ordered list of providers (a chain, a profile's tier, a hedge cluster): each one known,
/// and each at most once. Errors are `(field, reason)`, the field naming the entry.
pub(crate) fn check_members(field: &str, members: &[String], known_provider: &dyn Fn(&str) -> bool) -> Result<(), (String, String)> {
    for (i, member) in members.iter().enumerate() {
        if !known_provider(member) {
            return Err((format!("{field}[{i}]"), format!("provider `{member}` is not in `providers`")));
        }
        if members.iter().take(i).any(|m| m == member) {
            return Err((format!("{field}[{i}]"), format!("provider `{member}` appears twice")));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAttempt {
    #[serde(rename = "role")]
    _role: String,
    provider: RawProvider,
    #[serde(default)]
    cooldowns: RawCooldowns,
    #[serde(default)]
    breaker: RawBreaker,
    #[serde(default)]
    latency: RawLatency,
    #[serde(default)]
    rate_limit: RawRateLimit,
    #[serde(default)]
    budget: Option<RawBudget>,
    #[serde(default)]
    prices: BTreeMap<String, RawPrice>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBreaker {
    #[serde(default)]
    consecutive_failures: Option<u32>,
    #[serde(default)]
    error_rate: Option<RawErrorRate>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawErrorRate {
    percent: u32,
    #[serde(default = "default_min_requests")]
    min_requests: u32,
    #[serde(default = "default_window")]
    window: String,
}

fn default_min_requests() -> u32 {
    10
}
fn default_window() -> String {
    "60s".into()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLatency {
    #[serde(default)]
    slow_ttfb: Option<String>,
    #[serde(default)]
    memory: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default)]
    min_remaining_requests: Option<u64>,
    #[serde(default)]
    min_remaining_tokens: Option<u64>,
    #[serde(default)]
    default_reset: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawBudget {
    #[serde(default)]
    requests_per_day: Option<u64>,
    #[serde(default)]
    tokens_per_day: Option<u64>,
    #[serde(default)]
    reset_utc_offset: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPrice {
    input_per_m_tok: f64,
    output_per_m_tok: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProvider {
    name: String,
    format: Format,
    host: String,
    #[serde(default)]
    base_path: Option<String>,
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    models: BTreeMap<String, String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    default_max_tokens: Option<u64>,
    #[serde(default)]
    anthropic_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    style: Option<AuthStyle>,
    #[serde(default)]
    api_key_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCooldowns {
    #[serde(default = "default_auth_failure")]
    auth_failure: String,
    #[serde(default = "default_rate_limited")]
    rate_limited: String,
    #[serde(default = "default_max_retry_after")]
    max_retry_after: String,
    #[serde(default = "default_quota_exhausted")]
    quota_exhausted: String,
    #[serde(default = "default_failure_base")]
    failure_base: String,
    #[serde(default = "default_failure_max")]
    failure_max: String,
}

impl Default for RawCooldowns {
    fn default() -> Self {
        RawCooldowns {
            auth_failure: default_auth_failure(),
            rate_limited: default_rate_limited(),
            max_retry_after: default_max_retry_after(),
            quota_exhausted: default_quota_exhausted(),
            failure_base: default_failure_base(),
            failure_max: default_failure_max(),
        }
    }
}

fn default_auth_failure() -> String {
    UNTIL_RESET.into()
}

/// `cooldowns.authFailure` value: a bad key stays out until an operator resets it.
const UNTIL_RESET: &str = "until-reset";
fn default_rate_limited() -> String {
    "30s".into()
}
fn default_max_retry_after() -> String {
    "1h".into()
}
fn default_quota_exhausted() -> String {
    "1h".into()
}
fn default_failure_base() -> String {
    "5s".into()
}
fn default_failure_max() -> String {
    "5m".into()
}

fn check_attempt(raw: RawAttempt, env: &dyn Environment) -> Result<AttemptConfig, ConfigError> {
    let p = raw.provider;
    check_name(&p.name).map_err(|r| invalid("provider.name", r))?;
    if p.host.is_empty() || p.host.contains('/') || p.host.contains(char::is_whitespace) {
        return Err(invalid("provider.host", format!("`{}` must be a host name with an optional port", p.host)));
    }
    let base_path = p.base_path.unwrap_or_else(|| p.format.default_base_path().to_string());
    if !base_path.starts_with('/') || base_path.contains('?') {
        return Err(invalid("provider.basePath", format!("`{base_path}` must start with `/` and have no query")));
    }
    let base_path = base_path.trim_end_matches('/').to_string();
    if p.format.needs_api_version() && p.api_version.as_deref().unwrap_or("").is_empty() {
        return Err(invalid("provider.apiVersion", format!("is required for format `{}`", p.format.name())));
    }
    let auth = match p.auth {
        None => Auth::none(),
        Some(raw) => {
            let style = raw.style.unwrap_or(p.format.default_auth_style());
            let key = match (style, raw.api_key_env) {
                (AuthStyle::None, None) => String::new(),
                (AuthStyle::None, Some(_)) => {
                    return Err(invalid("provider.auth.apiKeyEnv", "makes no sense with style `none`"))
                }
                (_, None) => return Err(invalid("provider.auth.apiKeyEnv", "is required to send a key")),
                (_, Some(name)) => match env.var(&name) {
                    Some(key) if !key.trim().is_empty() => key.trim().to_string(),
                    _ => {
                        return Err(invalid(
                            "provider.auth.apiKeyEnv",
                            format!("environment variable `{name}` is not set in the VM (list it in vm_config.environment_variables)"),
                        ))
                    }
                },
            };
            Auth::new(style, key)
        }
    };
    for (model, target) in &p.models {
        let unsafe_in_path = p.format.model_in_path() && target.contains(['"', '\\', '/', '?', '#', ' ']);
        if target.is_empty() || unsafe_in_path {
            return Err(invalid(format!("provider.models.{model}"), format!("`{target}` is not a usable model name")));
        }
    }
    let mut options = FormatOptions::default();
    if let Some(max) = p.default_max_tokens {
        if max == 0 {
            return Err(invalid("provider.defaultMaxTokens", "must be greater than 0"));
        }
        options.default_max_tokens = max;
    }
    if let Some(version) = p.anthropic_version {
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("provider.anthropicVersion", format!("`{version}` is not a header value")));
        }
        options.anthropic_version = version;
    }
    let health = HealthPolicy {
        cooldowns: check_cooldowns(&raw.cooldowns)?,
        breaker: check_breaker(&raw.breaker)?,
        latency: check_latency(&raw.latency)?,
    };
    let rate_limit = check_rate_limit(&raw.rate_limit)?;
    let budget = raw.budget.as_ref().map(check_budget).transpose()?;
    let mut prices = Prices::default();
    for (model, price) in &raw.prices {
        prices.0.insert(model.clone(), check_price(&format!("prices.{model}"), price)?);
    }
    Ok(AttemptConfig {
        provider: Provider {
            name: p.name,
            format: p.format,
            host: p.host,
            base_path,
            auth,
            models: p.models.into_iter().collect(),
            api_version: p.api_version,
            options,
        },
        health,
        rate_limit,
        budget,
        prices,
    })
}

fn check_price(field: &str, raw: &RawPrice) -> Result<Price, ConfigError> {
    for (name, value) in [("inputPerMTok", raw.input_per_m_tok), ("outputPerMTok", raw.output_per_m_tok)] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(invalid(format!("{field}.{name}"), "must be a price of 0 or more"));
        }
    }
    Ok(Price { input_per_mtok: raw.input_per_m_tok, output_per_mtok: raw.output_per_m_tok })
}

fn positive_duration(field: &str, text: &str) -> Result<Duration, ConfigError> {
    duration::parse_positive(text).map_err(|r| invalid(field, r))
}

fn check_breaker(raw: &RawBreaker) -> Result<BreakerPolicy, ConfigError> {
    let mut policy = BreakerPolicy::default();
    if let Some(n) = raw.consecutive_failures {
        if n == 0 {
            return Err(invalid("breaker.consecutiveFailures", "must be at least 1"));
        }
        policy.consecutive_failures = n;
    }
    if let Some(rate) = &raw.error_rate {
        if !(1..=100).contains(&rate.percent) {
            return Err(invalid("breaker.errorRate.percent", "must be between 1 and 100"));
        }
        if rate.min_requests == 0 {
            return Err(invalid("breaker.errorRate.minRequests", "must be at least 1"));
        }
        let window = positive_duration("breaker.errorRate.window", &rate.window)?;
        policy.error_rate = Some(ErrorRate { percent: rate.percent, min_requests: rate.min_requests, window });
    }
    Ok(policy)
}

fn check_latency(raw: &RawLatency) -> Result<LatencyPolicy, ConfigError> {
    let mut policy = LatencyPolicy::default();
    if let Some(text) = &raw.slow_ttfb {
        policy.slow_ttfb = Some(positive_duration("latency.slowTtfb", text)?);
    }
    if let Some(text) = &raw.memory {
        policy.memory = positive_duration("latency.memory", text)?;
    }
    Ok(policy)
}

fn check_rate_limit(raw: &RawRateLimit) -> Result<RateLimitPolicy, ConfigError> {
    let mut policy = RateLimitPolicy::default();
    if let Some(n) = raw.min_remaining_requests {
        policy.min_remaining_requests = n;
    }
    if let Some(n) = raw.min_remaining_tokens {
        policy.min_remaining_tokens = n;
    }
    if let Some(text) = &raw.default_reset {
        policy.default_reset = positive_duration("rateLimit.defaultReset", text)?;
    }
    Ok(policy)
}

fn check_budget(raw: &RawBudget) -> Result<Budget, ConfigError> {
    if raw.requests_per_day.is_none() && raw.tokens_per_day.is_none() {
        return Err(invalid("budget", "set `requestsPerDay`, `tokensPerDay` or both"));
    }
    let utc_offset_minutes = match &raw.reset_utc_offset {
        Some(text) => budget::parse_utc_offset(text).map_err(|r| invalid("budget.resetUtcOffset", r))?,
        None => 0,
    };
    Ok(Budget { requests_per_day: raw.requests_per_day, tokens_per_day: raw.tokens_per_day, utc_offset_minutes })
}

fn check_cooldowns(raw: &RawCooldowns) -> Result<CooldownPolicy, ConfigError> {
    let field = |name: &str, text: &str| positive_duration(&format!("cooldowns.{name}"), text);
    let auth_failure = match raw.auth_failure.as_str() {
        UNTIL_RESET => None,
        text => Some(field("authFailure", text)?),
    };
    let policy = CooldownPolicy {
        auth_failure,
        rate_limited: field("rateLimited", &raw.rate_limited)?,
        max_retry_after: field("maxRetryAfter", &raw.max_retry_after)?,
        quota_exhausted: field("quotaExhausted", &raw.quota_exhausted)?,
        failure_base: field("failureBase", &raw.failure_base)?,
        failure_max: field("failureMax", &raw.failure_max)?,
    };
    if policy.failure_max < policy.failure_base {
        return Err(invalid("cooldowns.failureMax", "must not be shorter than `failureBase`"));
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Env(&'static [(&'static str, &'static str)]);
    impl Environment for Env {
        fn var(&self, name: &str) -> Option<String> {
            self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        }
    }
    const ENV: Env = Env(&[("OPENAI_KEY", "sk-test-openai"), ("EMPTY", "  "), ("ADMIN", "a-long-enough-admin-secret"), ("SHORT", "abc")]);

    fn router(json: &str) -> Result<RouterConfig, ConfigError> {
        match parse(json.as_bytes(), &ENV)? {
            Config::Router(r) => Ok(*r),
            other => panic!("expected a router config, got {other:?}"),
        }
    }

    fn attempt(json: &str) -> Result<AttemptConfig, ConfigError> {
        match parse(json.as_bytes(), &ENV)? {
            Config::Attempt(a) => Ok(*a),
            other => panic!("expected an attempt config, got {other:?}"),
        }
    }

    const ROUTER: &str = r#"{"role":"router","providers":["openai","openrouter","ollama"],
        "chains":{"default":["openai","openrouter","ollama"],"local":["ollama"]},
        "models":{"llama3.3":"local"},"defaultChain":"default"}"#;

    #[test]
    fn router_config_resolves_aliases_and_default_chain() {
        let r = router(ROUTER).unwrap();
        assert_eq!(r.chat_paths, vec!["/v1/chat/completions"]);
        assert_eq!(r.max_request_bytes, 1 << 20);
        assert_eq!(r.chain_for("llama3.3").unwrap().1.providers, vec!["ollama"]);
        assert_eq!(r.chain_for("gpt-4o").unwrap().1.name, "default");
        assert!(r.is_chat_path("/v1/chat/completions?x=1"));
        assert!(!r.is_chat_path("/v1/models"));
    }

    #[test]
    fn a_hedge_cluster_serves_every_order_it_starts_with() {
        let r = router(
            r#"{"role":"router","providers":["a","b","c"],"chains":{"c":["a","b","c"]},
                "hedgeClusters":[{"providers":["a","b","c"],"cluster":"abc"},{"providers":["a","b"],"cluster":"ab"},
                                 {"providers":["b","a"],"cluster":"ba"}]}"#,
        )
        .unwrap();
        assert_eq!(r.hedge_cluster(&["a", "b", "c"]), Some("abc"));
        assert_eq!(r.hedge_cluster(&["a", "b"]), Some("ab"), "the shortest that fits");
        assert_eq!(r.hedge_cluster(&["a"]), Some("ab"));
        assert_eq!(r.hedge_cluster(&["b", "a"]), Some("ba"));
        assert_eq!(r.hedge_cluster(&["a", "c"]), None, "the order's second provider must be the cluster's");
        assert_eq!(r.hedge_cluster(&["b", "a", "c"]), None, "a cluster too short would leave `c` out");
        assert!(router(ROUTER).unwrap().hedge_clusters.is_empty());
    }

    #[test]
    fn the_attempt_by_endpoint_role_takes_no_fields() {
        assert!(matches!(parse(br#"{"role":"attempt-by-endpoint"}"#, &ENV), Ok(Config::AttemptByEndpoint)));
        let err = parse(br#"{"role":"attempt-by-endpoint","provider":{"name":"a"}}"#, &ENV).unwrap_err();
        assert_eq!(err.field, "provider");
    }

    #[test]
    fn without_default_chain_an_unknown_model_has_no_chain() {
        let r = router(r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"models":{"m":"c"}}"#).unwrap();
        assert!(r.chain_for("m").is_some());
        assert!(r.chain_for("other").is_none());
    }

    #[test]
    fn bad_router_configs_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"providers":["a"],"chains":{"c":["a"]}}"#, "role", "missing"),
            (r#"{"role":"proxy"}"#, "role", "unknown role `proxy`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a","b"]}}"#, "chains.c[1]", "provider `b` is not in `providers`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":[]}}"#, "chains.c", "at least one provider"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a","a"]}}"#, "chains.c[1]", "appears twice"),
            (r#"{"role":"router","providers":["A b"],"chains":{"c":["A b"]}}"#, "providers[0]", "a-z, 0-9"),
            (r#"{"role":"router","providers":["a","a"],"chains":{"c":["a"]}}"#, "providers[1]", "listed twice"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"models":{"m":"nope"}}"#, "models.m", "chain `nope` is not in `chains`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"defaultChain":"x"}"#, "defaultChain", "chain `x`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"maxRequestBytes":0}"#, "maxRequestBytes", "greater than 0"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"chatPaths":["v1"]}"#, "chatPaths[0]", "starting with `/`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"chatPaths":["/llm/chat"]}"#, "chatPaths[0]", "end with `/chat/completions`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"retries":3}"#, "retries", "unknown field `retries`"),
            (r#"{"role":"router","providers":"a","chains":{"c":["a"]}}"#, "providers", "invalid type"),
            (r#"{"role":"router","providers":[],"chains":{}}"#, "providers", "at least one"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"admin":{"path":"/h"}}"#, "admin", "secretEnv"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"admin":{"path":"/h","secretEnv":"SHORT"}}"#, "admin.secretEnv", "at least 16"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"admin":{"path":"/h","secretEnv":"NOPE"}}"#, "admin.secretEnv", "not set"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"admin":{"path":"h","internalListener":true}}"#, "admin.path", "starting with `/`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"admin":{"path":"/v1","internalListener":true}}"#, "admin.path", "overlap"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"probeTimeout":"0s"}"#, "probeTimeout", "greater than 0"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"providerInfo":{"a":{"price":{"inputPerMTok":1,"outputPerMTok":-2}}}}"#, "providerInfo.a.price.outputPerMTok", "0 or more"),
            (r#"{"role":"router","providers":["a","b"],"chains":{"c":["a","b"]},"hedgeClusters":[{"providers":["a","x"],"cluster":"h"}]}"#, "hedgeClusters[0].providers[1]", "provider `x` is not in `providers`"),
            (r#"{"role":"router","providers":["a","b"],"chains":{"c":["a","b"]},"hedgeClusters":[{"providers":["a","a"],"cluster":"h"}]}"#, "hedgeClusters[0].providers[1]", "appears twice"),
            (r#"{"role":"router","providers":["a","b"],"chains":{"c":["a","b"]},"hedgeClusters":[{"providers":["a"],"cluster":"h"}]}"#, "hedgeClusters[0].providers", "at least two"),
            (r#"{"role":"router","providers":["a","b"],"chains":{"c":["a","b"]},"hedgeClusters":[{"providers":["a","b"],"cluster":""}]}"#, "hedgeClusters[0].cluster", "aggregate cluster"),
            (r#"{"role":"router","providers":["a","b"],"chains":{"c":["a","b"]},"hedgeClusters":[{"providers":["a","b"],"cluster":"h1"},{"providers":["a","b"],"cluster":"h2"}]}"#, "hedgeClusters[1].providers", "already has a cluster"),
            (r#"{"role":"router","providers":["a","b"],"chains":{"c":["a","b"]},"hedgeClusters":[{"first":"a","providers":["a","b"],"cluster":"h"}]}"#, "hedgeClusters[0].first", "unknown field"),
        ];
        for (json, field, reason) in cases {
            let err = router(json).expect_err(json);
            assert_eq!(err.field, *field, "{json}: {err}");
            assert!(err.reason.contains(reason), "{json}: {err}");
        }
    }

    #[test]
    fn admin_secret_comes_from_the_environment_and_is_never_shown() {
        let r = router(r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"admin":{"path":"/llm/health/","secretEnv":"ADMIN"}}"#).unwrap();
        let admin = r.admin.as_ref().unwrap();
        assert_eq!((admin.path.as_str(), admin.secret.as_deref()), ("/llm/health", Some("a-long-enough-admin-secret")));
        assert!(!format!("{r:?}").contains("a-long-enough"));
        let internal = router(r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"admin":{"path":"/h","internalListener":true}}"#).unwrap();
        assert_eq!(internal.admin.unwrap().secret, None);
    }

    #[test]
    fn prober_configs() {
        let ok = parse(br#"{"role":"prober","interval":"5s","probes":[{"provider":"a","cluster":"provider_a","path":"/v1/models"}]}"#, &ENV).unwrap();
        let Config::Prober(p) = ok else { panic!("{ok:?}") };
        assert_eq!((p.interval, p.lease, p.probes[0].timeout), (Duration::from_secs(5), Duration::from_secs(30), Duration::from_secs(5)));
        let bad: &[(&str, &str, &str)] = &[
            (r#"{"role":"prober","probes":[]}"#, "probes", "at least one"),
            (r#"{"role":"prober","interval":"1m","lease":"30s","probes":[]}"#, "lease", "longer than `interval`"),
            (r#"{"role":"prober","probes":[{"provider":"a","cluster":"c","path":"v1/models"}]}"#, "probes[0].path", "start with `/`"),
            (r#"{"role":"prober","probes":[{"provider":"a","cluster":"","path":"/"}]}"#, "probes[0].cluster", "Envoy cluster"),
            (r#"{"role":"prober","probes":[{"provider":"a","cluster":"c","path":"/","every":1}]}"#, "probes[0].every", "unknown field"),
        ];
        for (json, field, reason) in bad {
            let err = parse(json.as_bytes(), &ENV).expect_err(json);
            assert_eq!(err.field, *field, "{json}: {err}");
            assert!(err.reason.contains(reason), "{json}: {err}");
        }
    }

    #[test]
    fn config_that_is_not_json_is_refused_with_its_position() {
        let err = parse(b"{role: router", &ENV).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    const OPENAI: &str = r#"{"role":"attempt","provider":{"name":"openai","format":"openai",
        "host":"api.openai.com","auth":{"apiKeyEnv":"OPENAI_KEY"},"models":{"smart":"gpt-4o"}}}"#;

    #[test]
    fn attempt_config_reads_the_key_from_the_environment() {
        let a = attempt(OPENAI).unwrap();
        assert_eq!(a.provider.name, "openai");
        assert_eq!(a.provider.base_path, "/v1");
        assert_eq!(a.provider.auth.style, AuthStyle::Bearer);
        assert_eq!(a.provider.auth.header_value().as_deref(), Some("Bearer sk-test-openai"));
        assert_eq!(a.health, HealthPolicy::default());
        assert_eq!(a.rate_limit, RateLimitPolicy::default());
        assert_eq!(a.budget, None);
    }

    #[test]
    fn config_debug_output_never_shows_the_key() {
        let a = attempt(OPENAI).unwrap();
        let shown = format!("{a:?}");
        assert!(!shown.contains("sk-test-openai"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn bad_attempt_configs_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"role":"attempt","provider":{"name":"x","format":"mistral-native","host":"h"}}"#, "provider.format", "unknown variant `mistral-native`"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"http://h/v1"}}"#, "provider.host", "host name"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h","auth":{}}}"#, "provider.auth.apiKeyEnv", "required"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h","auth":{"apiKeyEnv":"MISSING"}}}"#, "provider.auth.apiKeyEnv", "`MISSING` is not set"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h","auth":{"apiKeyEnv":"EMPTY"}}}"#, "provider.auth.apiKeyEnv", "`EMPTY` is not set"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h","auth":{"style":"basic","apiKeyEnv":"OPENAI_KEY"}}}"#, "provider.auth.style", "unknown variant `basic`"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"azure-openai","host":"h"}}"#, "provider.apiVersion", "required"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h"},"cooldowns":{"authFailure":"1 hour"}}"#, "cooldowns.authFailure", "unknown unit"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h"},"cooldowns":{"rateLimited":"0s"}}"#, "cooldowns.rateLimited", "greater than 0"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h"},"cooldowns":{"failureBase":"10m","failureMax":"1m"}}"#, "cooldowns.failureMax", "not be shorter"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h"},"breaker":{"consecutiveFailures":0}}"#, "breaker.consecutiveFailures", "at least 1"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h"},"breaker":{"errorRate":{"percent":120}}}"#, "breaker.errorRate.percent", "between 1 and 100"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h"},"latency":{"slowTtfb":"fast"}}"#, "latency.slowTtfb", ""),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h"},"budget":{}}"#, "budget", "requestsPerDay"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h"},"budget":{"requestsPerDay":5,"resetUtcOffset":"KST"}}"#, "budget.resetUtcOffset", "UTC offset"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h"},"prices":{"m":{"inputPerMTok":-1,"outputPerMTok":1}}}"#, "prices.m.inputPerMTok", "0 or more"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h"},"breaker":{"halfOpen":1}}"#, "breaker.halfOpen", "unknown field"),
            (r#"{"role":"attempt","provider":{"name":"x","format":"openai","host":"h","apiKey":"sk-inline"}}"#, "provider.apiKey", "unknown field"),
        ];
        for (json, field, reason) in cases {
            let err = attempt(json).expect_err(json);
            assert_eq!(err.field, *field, "{json}: {err}");
            assert!(err.reason.contains(reason), "{json}: {err}");
        }
    }

    #[test]
    fn azure_defaults_to_the_api_key_header() {
        let a = attempt(
            r#"{"role":"attempt","provider":{"name":"azure","format":"azure-openai","host":"x.openai.azure.com",
            "apiVersion":"2024-10-21","auth":{"apiKeyEnv":"OPENAI_KEY"}}}"#,
        )
        .unwrap();
        assert_eq!(a.provider.auth.style, AuthStyle::ApiKey);
        assert_eq!(a.provider.base_path, "/openai");
    }

    #[test]
    fn route_refresh_role_takes_no_other_field() {
        assert!(matches!(parse(br#"{"role":"route-refresh"}"#, &ENV), Ok(Config::RouteRefresh)));
        let err = parse(br#"{"role":"route-refresh","x":1}"#, &ENV).unwrap_err();
        assert_eq!(err.field, "x");
    }
}
