//! The plugin configuration an operator writes in Envoy YAML, in two steps: `json` reads the
//! JSON into raw types, then `check` resolves names and parses durations. Any error names the field.

pub mod json;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use crate::budget::{self, Budget, Price, Prices};
use crate::duration;
use crate::inbound::ClientApi;
use crate::classifier::{Classifier, RawClassifier};
use crate::policy::{self, Profile, RawProfile, Tier};
use crate::probe::{Probe, ProberConfig};
use crate::trust::Network;
use json::{Field, Json};
use crate::health::{BreakerPolicy, CooldownPolicy, ErrorRate, HealthPolicy, LatencyPolicy};
use crate::credentials::RawRenewal;
use crate::provider::vertex::{self, Vertex};
use crate::provider::{Auth, AuthStyle, AwsScope, Format, FormatOptions, Provider};

/// The header the router role names the request's order cluster in; the route's
/// `cluster_header` reads it (see `orders`).
pub const ORDER_HEADER: &str = "x-llm-failover-order";

/// Every chat path ends so, which is how the attempt role (which has no router config) knows a
/// chat request when it sees one.
pub const CHAT_SUFFIX: &str = "/chat/completions";
/// Beside each Messages path: Anthropic's token count.
pub const COUNT_TOKENS_SUFFIX: &str = "/count_tokens";

#[derive(Debug)]
pub enum Config {
    /// The one plugin configuration of a deployment: the router role's, which also holds
    /// every provider's attempt config.
    Router(Box<Deployment>),
    /// The upstream filter of the order clusters: each attempt takes the attempt config of the
    /// provider its endpoint names (`llm_failover.provider` in the endpoint's metadata).
    Attempt,
    Prober(ProberConfig),
}

#[derive(Debug)]
pub struct Deployment {
    pub router: RouterConfig,
    /// One per provider, in the order of `providers`.
    pub attempts: Vec<AttemptConfig>,
}

impl Deployment {
    pub fn attempt(&self, provider: &str) -> Option<&AttemptConfig> {
        self.attempts.iter().find(|a| a.provider.name == provider)
    }
}

#[derive(Debug)]
pub struct RouterConfig {
    pub chat_paths: Vec<String>,
    /// Where Anthropic Messages requests come (`POST`).
    pub messages_paths: Vec<String>,
    /// Where Anthropic's token counts are asked (`POST`): each Messages path's `/count_tokens`.
    pub count_tokens_paths: Vec<String>,
    /// Where the model list is served (`GET`): beside each chat and Messages path.
    pub models_paths: Vec<String>,
    /// Where embeddings requests come (`POST`).
    pub embeddings_paths: Vec<String>,
    /// Where Responses API requests come (`POST`).
    pub responses_paths: Vec<String>,
    /// Each embedding alias's chain (an index in `chains`): the providers that have a model for it.
    embedding_chains: HashMap<String, usize>,
    /// The model list: the aliases of `models` and every name a provider's model map knows.
    pub model_ids: Vec<String>,
    pub max_request_bytes: usize,
    /// The largest answer an attempt holds whole (to translate or read it); Envoy's listener
    /// buffer is rendered a little larger, so the attempt sees the limit first.
    pub max_answer_bytes: usize,
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
    /// Whether the attempts read error answers; with `pass` this role puts them in the
    /// client's shape.
    pub error_answers: ErrorAnswers,
    /// Path prefixes of APIs the gateway does not understand, each sent to one named provider.
    pub passthrough: Vec<Passthrough>,
}

/// Requests under `prefix` go to `provider` as they are, with its key and host: an API the
/// gateway does not understand (audio, files, batches), so without translation or failover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passthrough {
    pub prefix: String,
    pub provider: String,
    /// What replaces `prefix` in the path the provider gets; `None`: the path as it came.
    pub rewrite_prefix: Option<String>,
}

impl Passthrough {
    /// The path the provider gets, for a request path under this prefix.
    pub fn path_for(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix(&self.prefix)?;
        Some(match &self.rewrite_prefix {
            Some(rewrite) => format!("{rewrite}{rest}"),
            None => path.to_string(),
        })
    }
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
    /// Index of its profile in `RouterConfig::profiles`; `None` for an embedding alias's chain.
    pub profile: Option<usize>,
}

/// What the router knows of a provider beyond its name, for ordering and context limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderInfo {
    pub format: Format,
    /// Tokens (input and output) the provider's model takes.
    pub context_window: Option<u64>,
    pub price: Option<Price>,
    pub weight: u32,
    /// It serves the Responses API itself (`responses: true`): stateful fields can go to it.
    pub serves_responses: bool,
    /// Served by Vertex AI, which counts Claude's tokens elsewhere than Anthropic.
    pub on_vertex: bool,
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
    pub error_answers: ErrorAnswers,
    pub max_answer_bytes: usize,
    /// The provider's model for each embedding alias it serves (`embeddings` in the config).
    pub embedding_models: HashMap<String, String>,
}

/// Whether an attempt holds a provider's error answer (and the start of a stream) until it
/// has read it. Reading is what error-aware failover, translated error bodies, context-length
/// replay and stream-start checks need; Envoy 1.36 crashes when a request is retried after an
/// upstream filter held an error answer (fixed in 1.37 by envoyproxy/envoy#41879).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorAnswers {
    #[default]
    Read,
    Pass,
}

/// The Envoy a config runs in (`major.minor`), read from the node's build version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EnvoyVersion(pub u64, pub u64);

impl fmt::Display for EnvoyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// The oldest Envoy that can retry a request after an upstream filter held an error answer.
pub const READS_ERROR_ANSWERS_FROM: EnvoyVersion = EnvoyVersion(1, 37);
/// The oldest Envoy that retries a request whose body is over 1 MiB (1.36 and 1.37 do not,
/// whatever the route's buffer limit: measured).
pub const RETRIES_LARGE_BODIES_FROM: EnvoyVersion = EnvoyVersion(1, 38);
const ENVOY_RETRY_BODY_LIMIT: usize = 1024 * 1024;
/// The oldest Envoy this filter is tested on.
pub const OLDEST_ENVOY: EnvoyVersion = EnvoyVersion(1, 36);

impl Deployment {
    /// What this config needs of the Envoy it runs in; `None` when the version is unknown
    /// (a build that does not say), which is taken as new enough.
    pub fn supported_by(&self, envoy: Option<EnvoyVersion>) -> Result<(), ConfigError> {
        let Some(envoy) = envoy else {
            return Ok(());
        };
        if envoy < OLDEST_ENVOY {
            return Err(invalid("", format!("Envoy {envoy} is older than {OLDEST_ENVOY}, the oldest this filter supports")));
        }
        let reads = self.attempts.first().is_some_and(|a| a.error_answers == ErrorAnswers::Read);
        if reads && envoy < READS_ERROR_ANSWERS_FROM {
            return Err(invalid(
                "errorAnswers",
                format!(
                    "`read` (error-aware failover, translated error bodies, context-length replay, stream-start checks) needs \
                     Envoy {READS_ERROR_ANSWERS_FROM} or later: Envoy {envoy} crashes retrying after a held error answer \
                     (envoyproxy/envoy#41879); set `\"errorAnswers\": \"pass\"` on this Envoy"
                ),
            ));
        }
        if self.router.max_request_bytes > ENVOY_RETRY_BODY_LIMIT && envoy < RETRIES_LARGE_BODIES_FROM {
            return Err(invalid(
                "maxRequestBytes",
                format!(
                    "above {ENVOY_RETRY_BODY_LIMIT} needs Envoy {RETRIES_LARGE_BODIES_FROM} or later: Envoy {envoy} does not \
                     fail over a request whose body is larger"
                ),
            ));
        }
        Ok(())
    }
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

/// How long a provider whose renewed token was refused (401) stays out by default.
const RENEWED_AUTH_FAILURE_COOLDOWN: &str = "5s";

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), reason: reason.into() }
}

impl RouterConfig {
    pub fn is_chat_path(&self, path: &str) -> bool {
        let path = path.split('?').next().unwrap_or(path);
        self.chat_paths.iter().any(|p| p == path)
    }

    /// The client API a request speaks, from its method and path; `None`: not one the gateway
    /// serves (the render's catch-all route answers it, and no provider sees it).
    pub fn client_api(&self, method: &str, path: &str) -> Option<ClientApi> {
        let plain = path.split('?').next().unwrap_or(path);
        match method {
            "POST" if self.chat_paths.iter().any(|p| p == plain) => Some(ClientApi::ChatCompletions),
            "POST" if self.messages_paths.iter().any(|p| p == plain) => Some(ClientApi::AnthropicMessages),
            "POST" if self.count_tokens_paths.iter().any(|p| p == plain) => Some(ClientApi::CountTokens),
            "POST" if self.embeddings_paths.iter().any(|p| p == plain) => Some(ClientApi::Embeddings),
            "POST" if self.responses_paths.iter().any(|p| p == plain) => Some(ClientApi::Responses),
            "GET" if crate::inbound::models::parse(&self.models_paths, path).is_some() => Some(ClientApi::ModelsList),
            _ => None,
        }
    }

    /// The pass-through whose prefix the path starts with (the first listed).
    pub fn passthrough_for(&self, path: &str) -> Option<&Passthrough> {
        self.passthrough.iter().find(|p| path.starts_with(&p.prefix))
    }

    /// The chain of an embedding alias: only providers with a model for it, in the order given.
    pub fn embedding_chain(&self, alias: &str) -> Option<(usize, &Chain)> {
        let index = *self.embedding_chains.get(alias)?;
        Some((index, self.chains.get(index)?))
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
        self.chains.iter().enumerate().find(|(_, c)| c.profile == Some(profile) && c.providers == providers)
    }

    pub fn info(&self, provider: &str) -> Option<&ProviderInfo> {
        self.provider_info.get(provider)
    }
}

/// Where the provider API key comes from: the VM's environment (Envoy's
/// `vm_config.environment_variables`), so keys never sit in the plugin config.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    /// Set only in Envoy's environment, its value unknown until then (`llm-failover-render`).
    fn set_at_run_time(&self, _name: &str) -> bool {
        false
    }
}

pub fn parse(json: &[u8], env: &dyn Environment) -> Result<Config, ConfigError> {
    let document = json::parse(json)?;
    let root = Field::root(&document);
    let role = match &document {
        Json::Object(entries) => match entries.iter().rev().find(|(k, _)| k == "role") {
            Some((_, value)) => Some(Field { value, path: "role" }.string()?),
            None => None,
        },
        _ => return Err(invalid("", "the plugin configuration must be a JSON object")),
    };
    match role.as_deref() {
        Some("router") => check_deployment(RawRouter::read(root)?, env).map(|d| Config::Router(Box::new(d))),
        Some("attempt") => root.object(&["role"]).map(|_| Config::Attempt),
        Some("prober") => check_prober(RawProber::read(root)?).map(Config::Prober),
        Some(old @ ("attempt-by-endpoint" | "route-refresh")) => Err(invalid(
            "role",
            format!("role `{old}` is gone: order clusters take `{{\"role\": \"attempt\"}}` and no route refresh is needed (docs/configuration.md)"),
        )),
        Some(other) => Err(invalid("role", format!("unknown role `{other}`, expected `router`, `attempt` or `prober`"))),
        None => Err(invalid("role", "missing (one of `router`, `attempt`, `prober`)")),
    }
}

struct RawPassthrough {
    prefix: String,
    provider: String,
    rewrite_prefix: Option<String>,
}

impl RawPassthrough {
    fn read(f: Field) -> Result<RawPassthrough, ConfigError> {
        let o = f.object(&["prefix", "provider", "rewritePrefix"])?;
        Ok(RawPassthrough {
            prefix: o.required("prefix")?.field().string()?,
            provider: o.required("provider")?.field().string()?,
            rewrite_prefix: o.opt_string("rewritePrefix")?,
        })
    }
}

struct RawRouter {
    chat_paths: Vec<String>,
    messages_paths: Vec<String>,
    /// By default beside each chat path (`/v1/chat/completions`: `/v1/embeddings`) when
    /// `embeddings` names an alias; none without.
    embeddings_paths: Option<Vec<String>>,
    /// By default beside each chat path (`/v1/chat/completions`: `/v1/responses`).
    responses_paths: Option<Vec<String>>,
    /// Embedding aliases: for each, the model that serves it at each provider, in failover order.
    embeddings: Ordered<Ordered<String>>,
    passthrough: Vec<RawPassthrough>,
    max_request_bytes: u64,
    max_answer_bytes: u64,
    providers: Vec<RawProvider>,
    chains: BTreeMap<String, Vec<String>>,
    profiles: BTreeMap<String, RawProfile>,
    models: BTreeMap<String, String>,
    classifier: Option<RawClassifier>,
    trusted_headers: Option<RawTrustedHeaders>,
    default_chain: Option<String>,
    probe_timeout: Option<String>,
    admin: Option<RawAdmin>,
    /// Every provider's health policy, unless its own entry says otherwise (field by field).
    cooldowns: RawCooldowns,
    breaker: RawBreaker,
    latency: RawLatency,
    rate_limit: RawRateLimit,
    error_answers: ErrorAnswers,
}

impl RawRouter {
    fn read(f: Field) -> Result<RawRouter, ConfigError> {
        let o = f.object(&[
            "role", "chatPaths", "messagesPaths", "embeddingsPaths", "responsesPaths", "embeddings", "passthrough", "maxRequestBytes", "maxAnswerBytes",
            "providers", "chains", "profiles", "models", "classifier", "trustedHeaders", "defaultChain", "probeTimeout",
            "admin", "cooldowns", "breaker", "latency", "rateLimit", "errorAnswers",
        ])?;
        o.string("role")?;
        Ok(RawRouter {
            chat_paths: o.or_else("chatPaths", |f| f.strings(), default_chat_paths)?,
            messages_paths: o.or_else("messagesPaths", |f| f.strings(), default_messages_paths)?,
            embeddings_paths: o.opt_with("embeddingsPaths", |f| f.strings())?,
            responses_paths: o.opt_with("responsesPaths", |f| f.strings())?,
            embeddings: o.or_else(
                "embeddings",
                |f| Ordered::read(f, |f| Ordered::read(f, |f| f.string())),
                Ordered::default,
            )?,
            passthrough: o.or_else(
                "passthrough",
                |f| f.items()?.iter().map(|p| RawPassthrough::read(p.field())).collect(),
                Vec::new,
            )?,
            max_request_bytes: o.or_else("maxRequestBytes", |f| f.u64(), default_max_request_bytes)?,
            max_answer_bytes: o.or_else("maxAnswerBytes", |f| f.u64(), default_max_answer_bytes)?,
            providers: o.required("providers")?.field().items()?.iter().map(|p| RawProvider::read(p.field())).collect::<Result<_, _>>()?,
            chains: o.or_else("chains", |f| f.map(|v| v.strings()), BTreeMap::new)?,
            profiles: o.or_else("profiles", |f| f.map(RawProfile::read), BTreeMap::new)?,
            models: o.string_map("models")?,
            classifier: o.opt_with("classifier", RawClassifier::read)?,
            trusted_headers: o.opt_with("trustedHeaders", RawTrustedHeaders::read)?,
            default_chain: o.opt_string("defaultChain")?,
            probe_timeout: o.opt_string("probeTimeout")?,
            admin: o.opt_with("admin", RawAdmin::read)?,
            cooldowns: o.or_else("cooldowns", RawCooldowns::read, RawCooldowns::default)?,
            breaker: o.or_else("breaker", RawBreaker::read, RawBreaker::default)?,
            latency: o.or_else("latency", RawLatency::read, RawLatency::default)?,
            rate_limit: o.or_else("rateLimit", RawRateLimit::read, RawRateLimit::default)?,
            error_answers: o.or_else("errorAnswers", ErrorAnswers::read, ErrorAnswers::default)?,
        })
    }
}

impl ErrorAnswers {
    fn read(f: Field) -> Result<ErrorAnswers, ConfigError> {
        f.variant(&[("read", ErrorAnswers::Read), ("pass", ErrorAnswers::Pass)])
    }
}

struct RawTrustedHeaders {
    profile: String,
    tier: String,
    sources: Vec<String>,
}

impl RawTrustedHeaders {
    fn read(f: Field) -> Result<RawTrustedHeaders, ConfigError> {
        let o = f.object(&["profile", "tier", "sources"])?;
        Ok(RawTrustedHeaders {
            profile: o.or_else("profile", |f| f.string(), default_profile_header)?,
            tier: o.or_else("tier", |f| f.string(), default_tier_header)?,
            sources: o.required("sources")?.field().strings()?,
        })
    }
}

fn default_profile_header() -> String {
    "x-llm-profile".into()
}
fn default_tier_header() -> String {
    "x-llm-tier".into()
}

fn default_weight() -> u32 {
    1
}

struct RawProber {
    interval: String,
    lease: String,
    probes: Vec<RawProbe>,
}

impl RawProber {
    fn read(f: Field) -> Result<RawProber, ConfigError> {
        let o = f.object(&["role", "interval", "lease", "probes"])?;
        o.string("role")?;
        Ok(RawProber {
            interval: o.or_else("interval", |f| f.string(), default_probe_interval)?,
            lease: o.or_else("lease", |f| f.string(), default_probe_lease)?,
            probes: o.required("probes")?.field().items()?.iter().map(|p| RawProbe::read(p.field())).collect::<Result<_, _>>()?,
        })
    }
}

fn default_probe_interval() -> String {
    "10s".into()
}
fn default_probe_lease() -> String {
    "30s".into()
}

struct RawProbe {
    provider: String,
    cluster: String,
    path: String,
    timeout: Option<String>,
}

impl RawProbe {
    fn read(f: Field) -> Result<RawProbe, ConfigError> {
        let o = f.object(&["provider", "cluster", "path", "timeout"])?;
        Ok(RawProbe {
            provider: o.string("provider")?,
            cluster: o.string("cluster")?,
            path: o.string("path")?,
            timeout: o.opt_string("timeout")?,
        })
    }
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

struct RawAdmin {
    path: String,
    secret_env: Option<String>,
    /// Only for a listener no client can reach (an internal or admin-only listener).
    internal_listener: bool,
}

impl RawAdmin {
    fn read(f: Field) -> Result<RawAdmin, ConfigError> {
        let o = f.object(&["path", "secretEnv", "internalListener"])?;
        Ok(RawAdmin {
            path: o.string("path")?,
            secret_env: o.opt_string("secretEnv")?,
            internal_listener: o.or_else("internalListener", |f| f.bool(), || false)?,
        })
    }
}

/// A JSON object whose key order means something (a failover order), unlike the sorted maps.
/// A key given twice is refused.
pub(crate) struct Ordered<V>(pub Vec<(String, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<V> Ordered<V> {
    fn read(f: Field, value: impl Fn(Field) -> Result<V, ConfigError>) -> Result<Ordered<V>, ConfigError> {
        let mut entries: Vec<(String, V)> = Vec::new();
        for (key, v) in f.entries()? {
            if entries.iter().any(|(k, _)| k == key) {
                return Err(invalid(f.path, format!("`{key}` is given twice")));
            }
            entries.push((key.to_string(), value(v.field())?));
        }
        Ok(Ordered(entries))
    }
}

/// Each chat path's prefix with `/embeddings` (or `/responses`), as the model list sits beside it.
fn default_embeddings_paths(chat_paths: &[String]) -> Vec<String> {
    paths_beside(chat_paths, "/embeddings")
}

fn paths_beside(chat_paths: &[String], end: &str) -> Vec<String> {
    let mut paths: Vec<String> = chat_paths.iter().filter_map(|p| p.strip_suffix(CHAT_SUFFIX)).map(|prefix| format!("{prefix}{end}")).collect();
    paths.dedup();
    paths
}

/// The embedding aliases as chains (named `embeddings/<alias>`), each provider's model for
/// each alias, and the errors naming the field. Providers without a model for an alias are not
/// in its chain, so they are never tried for it; Anthropic has no embeddings API.
fn check_embeddings(
    raw: Ordered<Ordered<String>>,
    attempts: &mut [AttemptConfig],
    chains: &mut Vec<Chain>,
) -> Result<HashMap<String, usize>, ConfigError> {
    let mut by_alias = HashMap::with_capacity(raw.0.len());
    for (alias, providers) in raw.0 {
        let field = format!("embeddings.{alias}");
        if alias.is_empty() || alias.chars().any(char::is_control) {
            return Err(invalid("embeddings", format!("`{alias}` is not a model name a client can send")));
        }
        if providers.0.is_empty() {
            return Err(invalid(field, "must name at least one provider and its model"));
        }
        let mut members = Vec::with_capacity(providers.0.len());
        for (provider, model) in providers.0 {
            let field = format!("{field}.{provider}");
            let Some(attempt) = attempts.iter_mut().find(|a| a.provider.name == provider) else {
                return Err(invalid(field, format!("provider `{provider}` is not in `providers`")));
            };
            let format = attempt.provider.format;
            if ClientApi::Embeddings.service(format).is_none() {
                return Err(invalid(field, format!("provider `{provider}` has format `{}`, which has no embeddings API", format.name())));
            }
            if attempt.provider.options.vertex.is_some() {
                return Err(invalid(field, format!("provider `{provider}` is served by Vertex AI, whose embeddings API is not spoken here")));
            }
            let unsafe_in_path = format.model_in_path() && model.contains(['"', '\\', '/', '?', '#', ' ']);
            if model.is_empty() || unsafe_in_path {
                return Err(invalid(field, format!("`{model}` is not a usable model name")));
            }
            attempt.embedding_models.insert(alias.clone(), model);
            members.push(provider);
        }
        by_alias.insert(alias.clone(), chains.len());
        chains.push(Chain { name: format!("embeddings/{alias}"), providers: members, profile: None });
    }
    Ok(by_alias)
}

/// Each pass-through's prefix may not take a path the gateway serves itself. Its provider gets
/// a one-provider chain, so that an order cluster exists for it.
fn check_passthrough(
    raw: Vec<RawPassthrough>,
    served: &[&String],
    admin: Option<&Admin>,
    attempts: &[AttemptConfig],
    chains: &mut Vec<Chain>,
) -> Result<Vec<Passthrough>, ConfigError> {
    let mut checked: Vec<Passthrough> = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let field = |name: &str| format!("passthrough[{i}].{name}");
        if !entry.prefix.starts_with('/') || entry.prefix.contains(['?', '#']) {
            return Err(invalid(field("prefix"), format!("`{}` must be a path starting with `/`, without a query", entry.prefix)));
        }
        let taken = served.iter().find(|p| p.starts_with(&entry.prefix)).map(|p| p.to_string());
        let taken = taken.or(admin.filter(|a| a.path.starts_with(&entry.prefix) || entry.prefix.starts_with(&a.path)).map(|a| a.path.clone()));
        if let Some(path) = taken {
            return Err(invalid(field("prefix"), format!("`{}` would take `{path}`, which the gateway serves itself", entry.prefix)));
        }
        if checked.iter().any(|p| entry.prefix.starts_with(&p.prefix)) {
            return Err(invalid(field("prefix"), format!("`{}` is under an earlier entry's prefix, which takes its requests", entry.prefix)));
        }
        if let Some(rewrite) = entry.rewrite_prefix.as_deref().filter(|r| !r.starts_with('/') || r.contains(['?', '#'])) {
            return Err(invalid(field("rewritePrefix"), format!("`{rewrite}` must be a path starting with `/`, without a query")));
        }
        if !attempts.iter().any(|a| a.provider.name == entry.provider) {
            return Err(invalid(field("provider"), format!("provider `{}` is not in `providers`", entry.provider)));
        }
        chains.push(Chain { name: format!("passthrough{}", entry.prefix), providers: vec![entry.provider.clone()], profile: None });
        checked.push(Passthrough { prefix: entry.prefix, provider: entry.provider, rewrite_prefix: entry.rewrite_prefix });
    }
    Ok(checked)
}

fn default_chat_paths() -> Vec<String> {
    vec!["/v1/chat/completions".to_string()]
}

fn default_messages_paths() -> Vec<String> {
    vec!["/v1/messages".to_string()]
}

fn default_max_request_bytes() -> u64 {
    1024 * 1024
}

fn default_max_answer_bytes() -> u64 {
    8 * 1024 * 1024
}

/// Envoy's buffer limits are 32-bit; the render adds a margin to this one.
pub const MAX_ANSWER_BYTES_LIMIT: u64 = 1 << 30;

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

fn check_deployment(raw: RawRouter, env: &dyn Environment) -> Result<Deployment, ConfigError> {
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
    for (i, path) in raw.messages_paths.iter().enumerate() {
        let field = format!("messagesPaths[{i}]");
        if !path.starts_with('/') || path.contains('?') {
            return Err(invalid(field, format!("`{path}` must be a path starting with `/`, without a query")));
        }
        if raw.chat_paths.contains(path) || raw.messages_paths.get(..i).is_some_and(|before| before.contains(path)) {
            return Err(invalid(field, format!("`{path}` is listed twice (in `chatPaths` or `messagesPaths`)")));
        }
    }
    // Served where asked, or by default beside the chat paths once there is an alias to serve.
    let embeddings_paths = match &raw.embeddings_paths {
        Some(paths) => paths.clone(),
        None if raw.embeddings.0.is_empty() => Vec::new(),
        None => default_embeddings_paths(&raw.chat_paths),
    };
    for (i, path) in embeddings_paths.iter().enumerate() {
        let field = format!("embeddingsPaths[{i}]");
        if !path.starts_with('/') || path.contains('?') {
            return Err(invalid(field, format!("`{path}` must be a path starting with `/`, without a query")));
        }
        let earlier = embeddings_paths.get(..i).is_some_and(|before| before.contains(path));
        if raw.chat_paths.contains(path) || raw.messages_paths.contains(path) || earlier {
            return Err(invalid(field, format!("`{path}` is listed twice (in `chatPaths`, `messagesPaths` or `embeddingsPaths`)")));
        }
    }
    let responses_paths = raw.responses_paths.clone().unwrap_or_else(|| paths_beside(&raw.chat_paths, "/responses"));
    for (i, path) in responses_paths.iter().enumerate() {
        let field = format!("responsesPaths[{i}]");
        if !path.starts_with('/') || path.contains('?') {
            return Err(invalid(field, format!("`{path}` must be a path starting with `/`, without a query")));
        }
        let earlier = responses_paths.get(..i).is_some_and(|before| before.contains(path));
        if raw.chat_paths.contains(path) || raw.messages_paths.contains(path) || embeddings_paths.contains(path) || earlier {
            return Err(invalid(field, format!("`{path}` is listed twice (in `chatPaths`, `messagesPaths`, `embeddingsPaths` or `responsesPaths`)")));
        }
    }
    if raw.max_request_bytes == 0 {
        return Err(invalid("maxRequestBytes", "must be greater than 0"));
    }
    if raw.max_answer_bytes == 0 || raw.max_answer_bytes > MAX_ANSWER_BYTES_LIMIT {
        return Err(invalid("maxAnswerBytes", format!("must be between 1 and {MAX_ANSWER_BYTES_LIMIT}")));
    }
    let max_answer_bytes = usize::try_from(raw.max_answer_bytes).map_err(|_| invalid("maxAnswerBytes", "is too large"))?;
    if raw.providers.is_empty() {
        return Err(invalid("providers", "must name at least one provider"));
    }
    let defaults = HealthDefaults { cooldowns: raw.cooldowns, breaker: raw.breaker, latency: raw.latency, rate_limit: raw.rate_limit };
    defaults.check()?;
    let mut attempts = Vec::with_capacity(raw.providers.len());
    let mut provider_info = HashMap::with_capacity(raw.providers.len());
    for (i, entry) in raw.providers.into_iter().enumerate() {
        let field = |f: String| if f.is_empty() { format!("providers[{i}]") } else { format!("providers[{i}].{f}") };
        let name = entry.name.clone();
        check_name(&name).map_err(|r| invalid(field("name".into()), r))?;
        if attempts.iter().any(|a: &AttemptConfig| a.provider.name == name) {
            return Err(invalid(field("name".into()), format!("`{name}` is listed twice")));
        }
        let (attempt, info) = check_provider(entry, &defaults, raw.error_answers, max_answer_bytes, env).map_err(|e| invalid(field(e.field), e.reason))?;
        provider_info.insert(name, info);
        attempts.push(attempt);
    }
    let provider_names: Vec<String> = attempts.iter().map(|a| a.provider.name.clone()).collect();
    if raw.chains.is_empty() && raw.profiles.is_empty() {
        return Err(invalid("chains", "must define at least one chain (or `profiles`)"));
    }
    let known_provider = |p: &str| provider_names.iter().any(|k| k == p);
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
            chains.push(Chain { name, providers: profile.chain_for(tier).to_vec(), profile: Some(index) });
        }
    }
    let embedding_chains = check_embeddings(raw.embeddings, &mut attempts, &mut chains)?;
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
        if raw.messages_paths.iter().any(|p| p.starts_with(&admin.path)) {
            return Err(invalid("admin.path", "must not overlap `messagesPaths`"));
        }
        if embeddings_paths.iter().any(|p| p.starts_with(&admin.path)) {
            return Err(invalid("admin.path", "must not overlap `embeddingsPaths`"));
        }
        if responses_paths.iter().any(|p| p.starts_with(&admin.path)) {
            return Err(invalid("admin.path", "must not overlap `responsesPaths`"));
        }
    }
    let models_paths = crate::inbound::models::paths(raw.chat_paths.iter().chain(&raw.messages_paths));
    let count_tokens_paths: Vec<String> = raw.messages_paths.iter().map(|p| format!("{p}{COUNT_TOKENS_SUFFIX}")).collect();
    let served: Vec<&String> = raw
        .chat_paths
        .iter()
        .chain(&raw.messages_paths)
        .chain(&count_tokens_paths)
        .chain(&responses_paths)
        .chain(&embeddings_paths)
        .chain(&models_paths)
        .collect();
    let passthrough = check_passthrough(raw.passthrough, &served, admin.as_ref(), &attempts, &mut chains)?;
    let mut model_ids: Vec<String> = raw.models.keys().cloned().collect();
    model_ids.extend(attempts.iter().flat_map(|a| a.provider.models.keys()).filter(|m| *m != "*").cloned());
    model_ids.extend(embedding_chains.keys().cloned());
    crate::sort::stable_sort_by(&mut model_ids, |a, b| a < b);
    model_ids.dedup();
    let router = RouterConfig {
        count_tokens_paths,
        chat_paths: raw.chat_paths,
        messages_paths: raw.messages_paths,
        models_paths,
        embeddings_paths,
        responses_paths,
        embedding_chains,
        model_ids,
        max_request_bytes,
        max_answer_bytes,
        providers: provider_names,
        chains,
        profiles,
        model_profiles,
        default_profile,
        classifier,
        trusted_headers,
        provider_info,
        probe_timeout,
        admin,
        error_answers: raw.error_answers,
        passthrough,
    };
    Ok(Deployment { router, attempts })
}

/// Provider and profile names: they become parts of Envoy cluster names (`orders` joins them
/// with `~`), stat names, shared-data keys and log words.
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

/// An ordered list of providers (a chain, a profile's tier): each one known,
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

#[derive(Default, Clone)]
struct RawBreaker {
    consecutive_failures: Option<u32>,
    error_rate: Option<RawErrorRate>,
}

impl RawBreaker {
    fn read(f: Field) -> Result<RawBreaker, ConfigError> {
        let o = f.object(&["consecutiveFailures", "errorRate"])?;
        Ok(RawBreaker {
            consecutive_failures: o.opt_with("consecutiveFailures", |f| f.u32())?,
            error_rate: o.opt_with("errorRate", RawErrorRate::read)?,
        })
    }
}

#[derive(Clone)]
struct RawErrorRate {
    percent: u32,
    min_requests: u32,
    window: String,
}

impl RawErrorRate {
    fn read(f: Field) -> Result<RawErrorRate, ConfigError> {
        let o = f.object(&["percent", "minRequests", "window"])?;
        Ok(RawErrorRate {
            percent: o.required("percent")?.field().u32()?,
            min_requests: o.or_else("minRequests", |f| f.u32(), default_min_requests)?,
            window: o.or_else("window", |f| f.string(), default_window)?,
        })
    }
}

fn default_min_requests() -> u32 {
    10
}
fn default_window() -> String {
    "60s".into()
}

#[derive(Default, Clone)]
struct RawLatency {
    slow_ttfb: Option<String>,
    memory: Option<String>,
}

impl RawLatency {
    fn read(f: Field) -> Result<RawLatency, ConfigError> {
        let o = f.object(&["slowTtfb", "memory"])?;
        Ok(RawLatency { slow_ttfb: o.opt_string("slowTtfb")?, memory: o.opt_string("memory")? })
    }
}

#[derive(Default, Clone)]
struct RawRateLimit {
    min_remaining_requests: Option<u64>,
    min_remaining_tokens: Option<u64>,
    default_reset: Option<String>,
}

impl RawRateLimit {
    fn read(f: Field) -> Result<RawRateLimit, ConfigError> {
        let o = f.object(&["minRemainingRequests", "minRemainingTokens", "defaultReset"])?;
        Ok(RawRateLimit {
            min_remaining_requests: o.opt_u64("minRemainingRequests")?,
            min_remaining_tokens: o.opt_u64("minRemainingTokens")?,
            default_reset: o.opt_string("defaultReset")?,
        })
    }
}

struct RawBudget {
    requests_per_day: Option<u64>,
    tokens_per_day: Option<u64>,
    reset_utc_offset: Option<String>,
}

impl RawBudget {
    fn read(f: Field) -> Result<RawBudget, ConfigError> {
        let o = f.object(&["requestsPerDay", "tokensPerDay", "resetUtcOffset"])?;
        Ok(RawBudget {
            requests_per_day: o.opt_u64("requestsPerDay")?,
            tokens_per_day: o.opt_u64("tokensPerDay")?,
            reset_utc_offset: o.opt_string("resetUtcOffset")?,
        })
    }
}

struct RawPrice {
    input_per_m_tok: f64,
    output_per_m_tok: f64,
}

impl RawPrice {
    fn read(f: Field) -> Result<RawPrice, ConfigError> {
        let o = f.object(&["inputPerMTok", "outputPerMTok"])?;
        Ok(RawPrice {
            input_per_m_tok: o.required("inputPerMTok")?.field().f64()?,
            output_per_m_tok: o.required("outputPerMTok")?.field().f64()?,
        })
    }
}

/// One provider: where and how to reach it, its health policy (over the deployment's), and
/// what the router knows of it for ordering and context limits.
struct RawProvider {
    name: String,
    format: Format,
    host: String,
    base_path: Option<String>,
    auth: Option<RawAuth>,
    models: BTreeMap<String, String>,
    api_version: Option<String>,
    default_max_tokens: Option<u64>,
    anthropic_version: Option<String>,
    vertex: Option<Vertex>,
    cooldowns: RawCooldowns,
    breaker: RawBreaker,
    latency: RawLatency,
    rate_limit: RawRateLimit,
    budget: Option<RawBudget>,
    prices: BTreeMap<String, RawPrice>,
    /// Tokens (input and output) the provider's model takes.
    context_window: Option<u64>,
    price: Option<RawPrice>,
    weight: u32,
    /// It serves OpenAI's Responses API (`POST {basePath}/responses`); off by default, since
    /// many OpenAI-compatible servers have only chat completions.
    responses: bool,
}

impl RawProvider {
    fn read(f: Field) -> Result<RawProvider, ConfigError> {
        let o = f.object(&[
            "name", "format", "host", "basePath", "auth", "models", "apiVersion", "defaultMaxTokens", "anthropicVersion",
            "cooldowns", "breaker", "latency", "rateLimit", "budget", "prices", "contextWindow", "price", "weight", "responses", "vertex",
        ])?;
        let vertex = o.opt_with("vertex", read_vertex)?;
        let host = match &vertex {
            Some(vertex) => o.opt_string("host")?.unwrap_or_else(|| vertex.default_host()),
            None => o.string("host")?,
        };
        Ok(RawProvider {
            name: o.string("name")?,
            format: read_format(o.required("format")?.field())?,
            host,
            vertex,
            base_path: o.opt_string("basePath")?,
            auth: o.opt_with("auth", RawAuth::read)?,
            models: o.string_map("models")?,
            api_version: o.opt_string("apiVersion")?,
            default_max_tokens: o.opt_u64("defaultMaxTokens")?,
            anthropic_version: o.opt_string("anthropicVersion")?,
            cooldowns: o.or_else("cooldowns", RawCooldowns::read, RawCooldowns::default)?,
            breaker: o.or_else("breaker", RawBreaker::read, RawBreaker::default)?,
            latency: o.or_else("latency", RawLatency::read, RawLatency::default)?,
            rate_limit: o.or_else("rateLimit", RawRateLimit::read, RawRateLimit::default)?,
            budget: o.opt_with("budget", RawBudget::read)?,
            prices: o.or_else("prices", |f| f.map(RawPrice::read), BTreeMap::new)?,
            context_window: o.opt_u64("contextWindow")?,
            price: o.opt_with("price", RawPrice::read)?,
            weight: o.or_else("weight", |f| f.u32(), default_weight)?,
            responses: o.or_else("responses", |f| f.bool(), || false)?,
        })
    }
}

fn read_vertex(f: Field) -> Result<Vertex, ConfigError> {
    let o = f.object(&["project", "location"])?;
    Ok(Vertex { project: o.string("project")?, location: o.string("location")? })
}

fn read_format(f: Field) -> Result<Format, ConfigError> {
    f.variant(&[
        ("openai", Format::Openai),
        ("azure-openai", Format::AzureOpenai),
        ("anthropic", Format::Anthropic),
        ("gemini", Format::Gemini),
        ("ollama", Format::Ollama),
        ("bedrock", Format::Bedrock),
    ])
}

fn read_auth_style(f: Field) -> Result<AuthStyle, ConfigError> {
    f.variant(&[
        ("bearer", AuthStyle::Bearer),
        ("api-key", AuthStyle::ApiKey),
        ("x-api-key", AuthStyle::XApiKey),
        ("x-goog-api-key", AuthStyle::XGoogApiKey),
        ("none", AuthStyle::None),
        ("aws-sigv4", AuthStyle::AwsSigv4),
    ])
}

/// The deployment-wide health policy; a provider's own fields win, one by one.
struct HealthDefaults {
    cooldowns: RawCooldowns,
    breaker: RawBreaker,
    latency: RawLatency,
    rate_limit: RawRateLimit,
}

impl HealthDefaults {
    fn check(&self) -> Result<(), ConfigError> {
        check_cooldowns(&self.cooldowns)?;
        check_breaker(&self.breaker)?;
        check_latency(&self.latency)?;
        check_rate_limit(&self.rate_limit).map(|_| ())
    }
}

fn or<T: Clone>(own: &Option<T>, default: &Option<T>) -> Option<T> {
    own.clone().or_else(|| default.clone())
}

struct RawAuth {
    style: Option<AuthStyle>,
    api_key_env: Option<String>,
    /// `aws-sigv4` only.
    region: Option<String>,
    service: Option<String>,
    /// `kind` is `static` (a key from `apiKeyEnv`, the default) or a kind of renewed token.
    renewal: RawRenewal,
    headers: std::collections::BTreeMap<String, String>,
}

impl RawAuth {
    fn read(f: Field) -> Result<RawAuth, ConfigError> {
        let o = f.object(&["style", "apiKeyEnv", "kind", "tokenUrl", "clientIdEnv", "clientSecretEnv", "scope", "tokenEnv", "keyEnv", "headers", "region", "service"])?;
        let renewal = RawRenewal {
            kind: o.opt_string("kind")?.unwrap_or_default(),
            token_url: o.opt_string("tokenUrl")?,
            client_id_env: o.opt_string("clientIdEnv")?,
            client_secret_env: o.opt_string("clientSecretEnv")?,
            scope: o.opt_string("scope")?,
            token_env: o.opt_string("tokenEnv")?,
            key_env: o.opt_string("keyEnv")?,
        };
        Ok(RawAuth {
            style: o.opt_with("style", read_auth_style)?,
            api_key_env: o.opt_string("apiKeyEnv")?,
            renewal,
            headers: o.string_map("headers")?,
            region: o.opt_string("region")?,
            service: o.opt_string("service")?,
        })
    }

    /// The renewal fields, when `kind` names a renewed token; refused when set without one.
    fn renewal(&self) -> Result<Option<&RawRenewal>, ConfigError> {
        let r = &self.renewal;
        if !matches!(r.kind.as_str(), "" | "static") {
            return Ok(Some(r));
        }
        let set = [("tokenUrl", &r.token_url), ("clientIdEnv", &r.client_id_env), ("clientSecretEnv", &r.client_secret_env), ("scope", &r.scope), ("tokenEnv", &r.token_env), ("keyEnv", &r.key_env)];
        match set.iter().find(|(_, v)| v.is_some()) {
            Some((field, _)) => Err(invalid(format!("auth.{field}"), "needs `auth.kind` naming how the token is renewed")),
            None => Ok(None),
        }
    }
}

/// SigV4 is Envoy's to add, with credentials from Envoy's own environment: the plugin config
/// names only where the signature is for.
fn check_aws_auth(raw: RawAuth) -> Result<Auth, ConfigError> {
    if raw.api_key_env.is_some() {
        return Err(invalid(
            "auth.apiKeyEnv",
            "makes no sense with style `aws-sigv4`: Envoy signs with the AWS credentials of its own environment",
        ));
    }
    let scope_name = |field: &str, value: Option<String>| match value {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') => Ok(v),
        Some(v) => Err(invalid(field, format!("`{v}` is not an AWS name (a-z, 0-9, `-`)"))),
        None => Err(invalid(field, "is required with style `aws-sigv4`")),
    };
    let region = scope_name("auth.region", raw.region)?;
    let service = scope_name("auth.service", raw.service.or_else(|| Some("bedrock".into())))?;
    Ok(Auth::aws_sigv4(AwsScope { region, service }))
}

#[derive(Default, Clone)]
struct RawCooldowns {
    auth_failure: Option<String>,
    rate_limited: Option<String>,
    max_retry_after: Option<String>,
    quota_exhausted: Option<String>,
    failure_base: Option<String>,
    failure_max: Option<String>,
}

impl RawCooldowns {
    fn read(f: Field) -> Result<RawCooldowns, ConfigError> {
        let o = f.object(&["authFailure", "rateLimited", "maxRetryAfter", "quotaExhausted", "failureBase", "failureMax"])?;
        Ok(RawCooldowns {
            auth_failure: o.opt_string("authFailure")?,
            rate_limited: o.opt_string("rateLimited")?,
            max_retry_after: o.opt_string("maxRetryAfter")?,
            quota_exhausted: o.opt_string("quotaExhausted")?,
            failure_base: o.opt_string("failureBase")?,
            failure_max: o.opt_string("failureMax")?,
        })
    }
}

impl RawCooldowns {
    fn over(&self, d: &RawCooldowns) -> RawCooldowns {
        RawCooldowns {
            auth_failure: or(&self.auth_failure, &d.auth_failure),
            rate_limited: or(&self.rate_limited, &d.rate_limited),
            max_retry_after: or(&self.max_retry_after, &d.max_retry_after),
            quota_exhausted: or(&self.quota_exhausted, &d.quota_exhausted),
            failure_base: or(&self.failure_base, &d.failure_base),
            failure_max: or(&self.failure_max, &d.failure_max),
        }
    }
}

/// `cooldowns.authFailure` value: a bad key stays out until an operator resets it.
const UNTIL_RESET: &str = "until-reset";

impl RawBreaker {
    fn over(&self, d: &RawBreaker) -> RawBreaker {
        RawBreaker { consecutive_failures: or(&self.consecutive_failures, &d.consecutive_failures), error_rate: or(&self.error_rate, &d.error_rate) }
    }
}

impl RawLatency {
    fn over(&self, d: &RawLatency) -> RawLatency {
        RawLatency { slow_ttfb: or(&self.slow_ttfb, &d.slow_ttfb), memory: or(&self.memory, &d.memory) }
    }
}

impl RawRateLimit {
    fn over(&self, d: &RawRateLimit) -> RawRateLimit {
        RawRateLimit {
            min_remaining_requests: or(&self.min_remaining_requests, &d.min_remaining_requests),
            min_remaining_tokens: or(&self.min_remaining_tokens, &d.min_remaining_tokens),
            default_reset: or(&self.default_reset, &d.default_reset),
        }
    }
}

/// Vertex AI serves Gemini and Claude with an OAuth2 access token: a bearer credential.
fn check_vertex(vertex: &Vertex, p: &RawProvider) -> Result<(), ConfigError> {
    if !matches!(p.format, Format::Gemini | Format::Anthropic) {
        return Err(invalid("vertex", format!("Vertex AI serves `gemini` and `anthropic` formats, not `{}`", p.format.name())));
    }
    let project_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_');
    if vertex.project.is_empty() || !vertex.project.chars().all(project_ok) {
        return Err(invalid("vertex.project", format!("`{}` is not a Google Cloud project id", vertex.project)));
    }
    let location_ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if vertex.location.is_empty() || !vertex.location.chars().all(location_ok) {
        return Err(invalid("vertex.location", format!("`{}` is not a Vertex AI location", vertex.location)));
    }
    match p.auth.as_ref().map(|auth| auth.style) {
        None => return Err(invalid("auth", "is required for Vertex AI (an OAuth2 access token, style `bearer`)")),
        Some(Some(style)) if style != AuthStyle::Bearer => return Err(invalid("auth.style", "must be `bearer` for Vertex AI")),
        _ => {}
    }
    if p.anthropic_version.is_some() {
        return Err(invalid("anthropicVersion", format!("Vertex AI takes `{}` in the body, set by the filter", vertex::ANTHROPIC_VERSION)));
    }
    Ok(())
}

/// A provider's entry: its attempt config, and what the router knows of it. Fields in errors
/// are the entry's own (`host`, `cooldowns.rateLimited`).
fn check_provider(
    p: RawProvider,
    defaults: &HealthDefaults,
    error_answers: ErrorAnswers,
    max_answer_bytes: usize,
    env: &dyn Environment,
) -> Result<(AttemptConfig, ProviderInfo), ConfigError> {
    if let Some(vertex) = &p.vertex {
        check_vertex(vertex, &p)?;
    }
    if p.context_window == Some(0) {
        return Err(invalid("contextWindow", "must be greater than 0"));
    }
    let price = p.price.as_ref().map(|price| check_price("price", price)).transpose()?;
    if p.responses && p.format != Format::Openai {
        return Err(invalid("responses", format!("only `openai` providers serve the Responses API natively; `{}` ones are served it through chat completions", p.format.name())));
    }
    let info = ProviderInfo {
        format: p.format,
        context_window: p.context_window,
        price,
        weight: p.weight,
        serves_responses: p.responses,
        on_vertex: p.vertex.is_some(),
    };
    if p.host.is_empty() || p.host.contains('/') || p.host.contains(char::is_whitespace) {
        return Err(invalid("host", format!("`{}` must be a host name with an optional port", p.host)));
    }
    let default_base_path = if p.vertex.is_some() { vertex::DEFAULT_BASE_PATH } else { p.format.default_base_path() };
    let base_path = p.base_path.unwrap_or_else(|| default_base_path.to_string());
    if !base_path.starts_with('/') || base_path.contains('?') {
        return Err(invalid("basePath", format!("`{base_path}` must start with `/` and have no query")));
    }
    let base_path = base_path.trim_end_matches('/').to_string();
    if p.format.needs_api_version() && p.api_version.as_deref().unwrap_or("").is_empty() {
        return Err(invalid("apiVersion", format!("is required for format `{}`", p.format.name())));
    }
    let auth = match p.auth {
        None => Auth::none(),
        Some(raw) if raw.style.unwrap_or(p.format.default_auth_style()) == AuthStyle::AwsSigv4 => {
            if raw.renewal()?.is_some() {
                return Err(invalid("auth.kind", "makes no sense with style `aws-sigv4`: Envoy signs each request"));
            }
            check_aws_auth(raw)?
        }
        Some(raw) if raw.region.is_some() || raw.service.is_some() => {
            let field = if raw.region.is_some() { "auth.region" } else { "auth.service" };
            return Err(invalid(field, "is for style `aws-sigv4` only"));
        }
        Some(raw) if raw.renewal()?.is_some() => {
            let RawAuth { style, api_key_env, renewal, headers, .. } = raw;
            if api_key_env.is_some() {
                return Err(invalid("auth.apiKeyEnv", format!("is not used by kind `{}`: the token is renewed", renewal.kind)));
            }
            let style = style.unwrap_or(AuthStyle::Bearer);
            if style == AuthStyle::None {
                return Err(invalid("auth.style", "cannot be `none` for a renewed token"));
            }
            let mut renewal = renewal.check(env).map_err(|(field, reason)| invalid(format!("auth.{field}"), reason))?;
            let headers = crate::credentials::check_headers(&headers).map_err(|reason| invalid("auth.headers", reason))?;
            if let crate::credentials::Renewal::Exchange(exchange) = &mut renewal {
                // Copilot's token endpoint asks for the same editor headers as its API.
                exchange.headers = headers.clone();
            }
            let mut auth = Auth::renewed(style, renewal);
            auth.headers = headers;
            auth
        }
        Some(raw) => {
            let default_style = if p.vertex.is_some() { AuthStyle::Bearer } else { p.format.default_auth_style() };
            let style = raw.style.unwrap_or(default_style);
            let key = match (style, raw.api_key_env) {
                (AuthStyle::None, None) => String::new(),
                (AuthStyle::None, Some(_)) => {
                    return Err(invalid("auth.apiKeyEnv", "makes no sense with style `none`"))
                }
                (_, None) => return Err(invalid("auth.apiKeyEnv", "is required to send a key")),
                (_, Some(name)) => match env.var(&name) {
                    Some(key) if !key.trim().is_empty() => key.trim().to_string(),
                    _ => {
                        return Err(invalid(
                            "auth.apiKeyEnv",
                            format!("environment variable `{name}` is not set in the VM (list it in vm_config.environment_variables)"),
                        ))
                    }
                },
            };
            let mut auth = Auth::new(style, key);
            auth.headers = crate::credentials::check_headers(&raw.headers).map_err(|reason| invalid("auth.headers", reason))?;
            auth
        }
    };
    for (model, target) in &p.models {
        let unsafe_in_path = (p.format.model_in_path() || p.vertex.is_some()) && target.contains(['"', '\\', '/', '?', '#', ' ']);
        if target.is_empty() || unsafe_in_path {
            return Err(invalid(format!("models.{model}"), format!("`{target}` is not a usable model name")));
        }
    }
    let mut options = FormatOptions::default();
    if let Some(max) = p.default_max_tokens {
        if max == 0 {
            return Err(invalid("defaultMaxTokens", "must be greater than 0"));
        }
        options.default_max_tokens = max;
    }
    if let Some(version) = p.anthropic_version {
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("anthropicVersion", format!("`{version}` is not a header value")));
        }
        options.anthropic_version = version;
    }
    let mut cooldowns = p.cooldowns.over(&defaults.cooldowns);
    if auth.renewal.is_some() && cooldowns.auth_failure.is_none() {
        // A refused token is renewed at once: the provider is back as soon as the new one is.
        cooldowns.auth_failure = Some(RENEWED_AUTH_FAILURE_COOLDOWN.into());
    }
    let health = HealthPolicy {
        cooldowns: check_cooldowns(&cooldowns)?,
        breaker: check_breaker(&p.breaker.over(&defaults.breaker))?,
        latency: check_latency(&p.latency.over(&defaults.latency))?,
    };
    let rate_limit = check_rate_limit(&p.rate_limit.over(&defaults.rate_limit))?;
    let budget = p.budget.as_ref().map(check_budget).transpose()?;
    let mut prices = Prices::default();
    for (model, price) in &p.prices {
        prices.0.insert(model.clone(), check_price(&format!("prices.{model}"), price)?);
    }
    let attempt = AttemptConfig {
        provider: Provider {
            name: p.name,
            format: p.format,
            host: p.host,
            base_path,
            auth,
            models: p.models.into_iter().collect(),
            api_version: p.api_version,
            options: FormatOptions { vertex: p.vertex, ..options },
            serves_responses: p.responses,
        },
        health,
        rate_limit,
        budget,
        prices,
        error_answers,
        max_answer_bytes,
        embedding_models: HashMap::new(),
    };
    Ok((attempt, info))
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
    let field = |name: &str, text: &Option<String>, default: &str| {
        positive_duration(&format!("cooldowns.{name}"), text.as_deref().unwrap_or(default))
    };
    let auth_failure = match raw.auth_failure.as_deref().unwrap_or(UNTIL_RESET) {
        UNTIL_RESET => None,
        text => Some(positive_duration("cooldowns.authFailure", text)?),
    };
    let policy = CooldownPolicy {
        auth_failure,
        rate_limited: field("rateLimited", &raw.rate_limited, "30s")?,
        max_retry_after: field("maxRetryAfter", &raw.max_retry_after, "1h")?,
        quota_exhausted: field("quotaExhausted", &raw.quota_exhausted, "1h")?,
        failure_base: field("failureBase", &raw.failure_base, "5s")?,
        failure_max: field("failureMax", &raw.failure_max, "5m")?,
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
    const ENV: Env = Env(&[
        ("OPENAI_KEY", "sk-test-openai"),
        ("EMPTY", "  "),
        ("ADMIN", "a-long-enough-admin-secret"),
        ("SHORT", "abc"),
        ("GOOGLE_SA", include_str!("../tests/fixtures/google/TEST-ONLY-service-account.json")),
    ]);

    fn deployment(json: &str) -> Result<Deployment, ConfigError> {
        match parse(json.as_bytes(), &ENV)? {
            Config::Router(d) => Ok(*d),
            other => panic!("expected a router config, got {other:?}"),
        }
    }

    /// Tables of router fields name providers only: each becomes the plainest entry.
    fn router(json: &str) -> Result<RouterConfig, ConfigError> {
        let mut value: serde_json::Value = serde_json::from_str(json).expect("test JSON");
        if let Some(serde_json::Value::Array(providers)) = value.get_mut("providers") {
            for p in providers.iter_mut() {
                if let serde_json::Value::String(name) = p {
                    *p = serde_json::json!({"name": name, "format": "openai", "host": format!("{name}.test")});
                }
            }
        }
        deployment(&value.to_string()).map(|d| d.router)
    }

    #[test]
    fn a_passthrough_sends_its_prefix_to_one_provider_and_takes_no_served_path() {
        let r = router(r#"{"role":"router","providers":["a","b"],"chains":{"c":["a","b"]},
            "passthrough":[{"prefix":"/v1/audio/","provider":"b"},{"prefix":"/files","provider":"a","rewritePrefix":"/v1/files"}]}"#).unwrap();
        let audio = r.passthrough_for("/v1/audio/speech").unwrap();
        assert_eq!((audio.provider.as_str(), audio.path_for("/v1/audio/speech").unwrap()), ("b", "/v1/audio/speech".to_string()));
        let files = r.passthrough_for("/files/abc?x=1").unwrap();
        assert_eq!(files.path_for("/files/abc?x=1").unwrap(), "/v1/files/abc?x=1");
        assert_eq!(r.passthrough_for("/v1/audios"), None);
        assert!(r.chains.iter().any(|c| c.providers == ["b"] && c.profile.is_none()), "an order cluster of its provider alone");
        let bad = |entry: &str| router(&format!(r#"{{"role":"router","providers":["a"],"chains":{{"c":["a"]}},"admin":{{"path":"/llm-admin","internalListener":true}},"passthrough":[{entry}]}}"#)).unwrap_err();
        for (entry, field, reason) in [
            (r#"{"prefix":"/v1/","provider":"a"}"#, "passthrough[0].prefix", "would take `/v1/chat/completions`"),
            (r#"{"prefix":"/v1/messages/","provider":"a"}"#, "passthrough[0].prefix", "would take `/v1/messages/count_tokens`"),
            (r#"{"prefix":"/v1/resp","provider":"a"}"#, "passthrough[0].prefix", "would take `/v1/responses`"),
            (r#"{"prefix":"/llm-admin/x","provider":"a"}"#, "passthrough[0].prefix", "would take `/llm-admin`"),
            (r#"{"prefix":"v1/audio","provider":"a"}"#, "passthrough[0].prefix", "starting with `/`"),
            (r#"{"prefix":"/a","provider":"a"},{"prefix":"/a/b","provider":"a"}"#, "passthrough[1].prefix", "earlier entry"),
            (r#"{"prefix":"/a","provider":"z"}"#, "passthrough[0].provider", "not in `providers`"),
            (r#"{"prefix":"/a","provider":"a","rewritePrefix":"v1"}"#, "passthrough[0].rewritePrefix", "starting with `/`"),
            (r#"{"prefix":"/a","provider":"a","to":"b"}"#, "passthrough[0].to", "unknown field"),
        ] {
            let err = bad(entry);
            assert_eq!(err.field, field, "{entry}");
            assert!(err.reason.contains(reason), "{entry}: {}", err.reason);
        }
    }

    #[test]
    fn each_client_api_is_known_by_its_method_and_path() {
        let r = router(r#"{"role":"router","providers":["a",{"name":"b","format":"anthropic","host":"b","models":{"fast":"claude-haiku","*":"claude-sonnet"}}],
            "chains":{"c":["a","b"]},"models":{"smart":"c"},"chatPaths":["/v1/chat/completions","/llm/v1/chat/completions"]}"#).unwrap();
        assert_eq!(r.messages_paths, vec!["/v1/messages"], "the default");
        assert_eq!(r.models_paths, vec!["/llm/v1/models", "/v1/models"]);
        assert_eq!(r.model_ids, vec!["fast", "smart"], "aliases and model-map keys, not `*`");
        let cases = [
            ("POST", "/v1/chat/completions", Some(ClientApi::ChatCompletions)),
            ("POST", "/llm/v1/chat/completions?x=1", Some(ClientApi::ChatCompletions)),
            ("POST", "/v1/messages", Some(ClientApi::AnthropicMessages)),
            ("POST", "/v1/messages?beta=true", Some(ClientApi::AnthropicMessages)),
            ("POST", "/v1/messages/count_tokens?beta=true", Some(ClientApi::CountTokens)),
            ("GET", "/v1/messages/count_tokens", None),
            ("GET", "/v1/models", Some(ClientApi::ModelsList)),
            ("GET", "/llm/v1/models/smart", Some(ClientApi::ModelsList)),
            ("GET", "/v1/messages", None),
            ("POST", "/v1/models", None),
            ("POST", "/v1/responses", Some(ClientApi::Responses)),
            ("POST", "/llm/v1/responses", Some(ClientApi::Responses)),
            ("GET", "/v1/responses", None),
            ("POST", "/v1/embeddings", None),
        ];
        for (method, path, api) in cases {
            assert_eq!(r.client_api(method, path), api, "{method} {path}");
        }
        let none = router(r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"messagesPaths":[]}"#).unwrap();
        assert_eq!(none.client_api("POST", "/v1/messages"), None, "an empty list turns the Messages API off");
        let chosen = router(r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"responsesPaths":["/ai/responses"]}"#).unwrap();
        assert_eq!((chosen.client_api("POST", "/ai/responses"), chosen.client_api("POST", "/v1/responses")), (Some(ClientApi::Responses), None));
        let off = router(r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"responsesPaths":[]}"#).unwrap();
        assert_eq!(off.client_api("POST", "/v1/responses"), None, "an empty list turns the Responses API off");
    }

    #[test]
    fn only_openai_providers_may_serve_responses_natively_and_the_router_knows_which_do() {
        let r = router(r#"{"role":"router","providers":[{"name":"a","format":"openai","host":"a","responses":true},"b"],"chains":{"c":["a","b"]}}"#).unwrap();
        assert_eq!(r.info("a").map(|i| i.serves_responses), Some(true));
        assert_eq!(r.info("b").map(|i| i.serves_responses), Some(false), "off by default");
        let refused = router(r#"{"role":"router","providers":[{"name":"g","format":"gemini","host":"g","responses":true}],"chains":{"c":["g"]}}"#).unwrap_err();
        assert_eq!(refused.field, "providers[0].responses");
        assert!(refused.reason.contains("only `openai` providers"), "{}", refused.reason);
        for (paths, field, reason) in [
            (r#"["v1/responses"]"#, "responsesPaths[0]", "starting with `/`"),
            (r#"["/v1/chat/completions"]"#, "responsesPaths[0]", "listed twice"),
            (r#"["/r","/r"]"#, "responsesPaths[1]", "listed twice"),
        ] {
            let config = format!(r#"{{"role":"router","providers":["a"],"chains":{{"c":["a"]}},"responsesPaths":{paths}}}"#);
            let error = router(&config).unwrap_err();
            assert_eq!(error.field, field, "{paths}");
            assert!(error.reason.contains(reason), "{paths}: {}", error.reason);
        }
    }

    const EMBEDDINGS: &str = r#"{"role":"router","providers":["a",
        {"name":"g","format":"gemini","host":"g"},{"name":"o","format":"ollama","host":"o"},{"name":"c","format":"anthropic","host":"c"}],
        "chains":{"chat":["a","c"]},"chatPaths":["/v1/chat/completions","/llm/v1/chat/completions"],
        "embeddings":{"small":{"o":"nomic-embed-text","a":"text-embedding-3-small"},"gem":{"g":"gemini-embedding-001"}}}"#;

    #[test]
    fn embedding_aliases_are_chains_in_the_order_given_of_the_providers_that_have_a_model() {
        let d = deployment(&EMBEDDINGS.replacen(r#"["a","#, r#"[{"name":"a","format":"openai","host":"a"},"#, 1)).unwrap();
        let r = &d.router;
        let (_, small) = r.embedding_chain("small").unwrap();
        assert_eq!((small.name.as_str(), small.providers.clone(), small.profile), ("embeddings/small", vec!["o".to_string(), "a".to_string()], None));
        assert_eq!(r.embedding_chain("gem").unwrap().1.providers, vec!["g"]);
        assert!(r.embedding_chain("chat").is_none() && r.chain_for("small").is_none(), "aliases and chains do not mix");
        assert_eq!(r.embeddings_paths, vec!["/v1/embeddings", "/llm/v1/embeddings"], "beside each chat path");
        assert_eq!(r.client_api("POST", "/llm/v1/embeddings"), Some(ClientApi::Embeddings));
        assert_eq!(r.client_api("GET", "/v1/embeddings"), None);
        assert!(r.model_ids.contains(&"small".to_string()), "the model list names the aliases");
        let models = |name: &str| d.attempt(name).unwrap().embedding_models.clone();
        assert_eq!(models("o").get("small").map(String::as_str), Some("nomic-embed-text"));
        assert_eq!(models("a").get("gem"), None, "no model for `gem`: never tried for it");
        assert!(models("c").is_empty());
        // The chat chains' order clusters and the aliases' both exist.
        let orders = crate::orders::all(r);
        assert!(orders.contains(&vec!["o".to_string(), "a".to_string()]) && orders.contains(&vec!["a".to_string(), "c".to_string()]));
        let plain = router(r#"{"role":"router","providers":["a"],"chains":{"c":["a"]}}"#).unwrap();
        assert!(plain.embeddings_paths.is_empty(), "no alias, no embeddings path");
        let chosen = router(r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"embeddingsPaths":["/e"],"embeddings":{"x":{"a":"m"}}}"#).unwrap();
        assert_eq!(chosen.embeddings_paths, vec!["/e"]);
    }

    #[test]
    fn embeddings_config_errors_name_the_field() {
        let cases = [
            (r#""embeddings":{"x":{"ghost":"m"}}"#, "embeddings.x.ghost", "not in `providers`"),
            (r#""embeddings":{"x":{"c":"claude"}}"#, "embeddings.x.c", "no embeddings API"),
            (r#""embeddings":{"x":{"v":"text-embedding-005"}}"#, "embeddings.x.v", "served by Vertex AI"),
            (r#""embeddings":{"x":{}}"#, "embeddings.x", "at least one provider"),
            (r#""embeddings":{"x":{"a":""}}"#, "embeddings.x.a", "not a usable model name"),
            (r#""embeddings":{"x":{"g":"models/a?b"}}"#, "embeddings.x.g", "not a usable model name"),
            (r#""embeddings":{"":{"a":"m"}}"#, "embeddings", "not a model name"),
            (r#""embeddings":{"x":{"a":1}}"#, "embeddings.x.a", "invalid type"),
            (r#""embeddings":{"x":{"a":"m"}},"embeddingsPaths":["/v1/chat/completions"]"#, "embeddingsPaths[0]", "listed twice"),
            (r#""embeddings":{"x":{"a":"m"}},"embeddingsPaths":["v1/embeddings"]"#, "embeddingsPaths[0]", "must be a path"),
            (r#""embeddings":{"x":{"a":"m"}},"admin":{"path":"/v1/emb","internalListener":true}"#, "admin.path", "embeddingsPaths"),
        ];
        for (extra, field, reason) in cases {
            let vertex = r#"{"name":"v","format":"gemini","vertex":{"project":"p","location":"l"},"auth":{"apiKeyEnv":"OPENAI_KEY"}}"#;
            let json = format!(r#"{{"role":"router","providers":["a",{{"name":"g","format":"gemini","host":"g"}},{{"name":"c","format":"anthropic","host":"c"}},{vertex}],"chains":{{"chat":["a"]}},{extra}}}"#);
            let error = router(&json).unwrap_err();
            assert_eq!(error.field, field, "{extra}: {error}");
            assert!(error.reason.contains(reason), "{extra}: {error}");
        }
        // The order of an alias's providers is its failover order: a provider given twice is refused.
        let twice = r#"{"role":"router","providers":[{"name":"a","format":"openai","host":"a"}],"chains":{"c":["a"]},
            "embeddings":{"x":{"a":"m","a":"n"}}}"#;
        let error = deployment(twice).unwrap_err();
        assert!(error.field.starts_with("embeddings.x") && error.reason.contains("given twice"), "{error}");
    }

    /// A deployment of this one provider entry (with `extra` deployment fields).
    fn attempt_with(entry: &str, extra: &str) -> Result<AttemptConfig, ConfigError> {
        let json = format!(r#"{{"role":"router","providers":[{entry}],"chains":{{"c":["x"]}}{extra}}}"#);
        deployment(&json).map(|mut d| d.attempts.remove(0))
    }

    fn attempt(entry: &str) -> Result<AttemptConfig, ConfigError> {
        attempt_with(entry, "")
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
    fn the_attempt_role_takes_no_fields_and_old_roles_say_what_replaced_them() {
        assert!(matches!(parse(br#"{"role":"attempt"}"#, &ENV), Ok(Config::Attempt)));
        let err = parse(br#"{"role":"attempt","provider":{"name":"a"}}"#, &ENV).unwrap_err();
        assert_eq!(err.field, "provider");
        for old in ["attempt-by-endpoint", "route-refresh"] {
            let err = parse(format!(r#"{{"role":"{old}"}}"#).as_bytes(), &ENV).unwrap_err();
            assert!(err.reason.contains("is gone"), "{err}");
        }
    }

    #[test]
    fn provider_health_takes_the_deployment_defaults_field_by_field() {
        let json = r#"{"role":"router","chains":{"c":["a","b"]},
            "cooldowns":{"rateLimited":"7s","failureBase":"1s"},"breaker":{"consecutiveFailures":2},
            "providers":[{"name":"a","format":"openai","host":"a","cooldowns":{"rateLimited":"9s"}},
                         {"name":"b","format":"openai","host":"b","breaker":{"consecutiveFailures":5}}]}"#;
        let d = deployment(json).unwrap();
        let (a, b) = (&d.attempts[0].health, &d.attempts[1].health);
        assert_eq!((a.cooldowns.rate_limited, a.cooldowns.failure_base), (Duration::from_secs(9), Duration::from_secs(1)));
        assert_eq!((b.cooldowns.rate_limited, b.breaker.consecutive_failures), (Duration::from_secs(7), 5));
        assert_eq!(a.breaker.consecutive_failures, 2);
        assert_eq!(a.cooldowns.failure_max, Duration::from_secs(300), "the filter's own default");
        let bad = r#"{"role":"router","chains":{"c":["a"]},"cooldowns":{"rateLimited":"0s"},"providers":[{"name":"a","format":"openai","host":"a"}]}"#;
        assert_eq!(deployment(bad).unwrap_err().field, "cooldowns.rateLimited");
    }

    #[test]
    fn envoy_136_runs_a_deployment_only_with_error_answers_passed() {
        let reads = deployment(r#"{"role":"router","chains":{"c":["a"]},"providers":[{"name":"a","format":"openai","host":"a"}]}"#).unwrap();
        let err = reads.supported_by(Some(EnvoyVersion(1, 36))).unwrap_err();
        assert_eq!(err.field, "errorAnswers");
        assert!(err.reason.contains("Envoy 1.37") && err.reason.contains("41879"), "{err}");
        assert!(reads.supported_by(Some(EnvoyVersion(1, 37))).is_ok() && reads.supported_by(None).is_ok());
        assert!(reads.supported_by(Some(EnvoyVersion(1, 35))).unwrap_err().reason.contains("oldest"));
        let passes = deployment(r#"{"role":"router","errorAnswers":"pass","chains":{"c":["a"]},"providers":[{"name":"a","format":"openai","host":"a"}]}"#).unwrap();
        assert!(passes.supported_by(Some(EnvoyVersion(1, 36))).is_ok());
        let large = r#"{"role":"router","maxRequestBytes":4194304,"chains":{"c":["a"]},"providers":[{"name":"a","format":"openai","host":"a"}]}"#;
        let large = deployment(large).unwrap();
        let err = large.supported_by(Some(EnvoyVersion(1, 37))).unwrap_err();
        assert_eq!(err.field, "maxRequestBytes");
        assert!(err.reason.contains("Envoy 1.38"), "{err}");
        assert!(large.supported_by(Some(EnvoyVersion(1, 38))).is_ok());
        assert_eq!(passes.attempts[0].error_answers, ErrorAnswers::Pass);
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
            (r#"{"role":"router","providers":[{"name":"a","format":"openai","host":"a"}],"chains":{"c":["a"]},"hedgeClusters":[]}"#, "hedgeClusters", "unknown field"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a","b"]}}"#, "chains.c[1]", "provider `b` is not in `providers`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":[]}}"#, "chains.c", "at least one provider"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a","a"]}}"#, "chains.c[1]", "appears twice"),
            (r#"{"role":"router","providers":["A b"],"chains":{"c":["A b"]}}"#, "providers[0].name", "a-z, 0-9"),
            (r#"{"role":"router","providers":["a","a"],"chains":{"c":["a"]}}"#, "providers[1].name", "listed twice"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"models":{"m":"nope"}}"#, "models.m", "chain `nope` is not in `chains`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"defaultChain":"x"}"#, "defaultChain", "chain `x`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"maxRequestBytes":0}"#, "maxRequestBytes", "greater than 0"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"maxAnswerBytes":0}"#, "maxAnswerBytes", "between 1 and"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"maxAnswerBytes":2147483648}"#, "maxAnswerBytes", "between 1 and"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"chatPaths":["v1"]}"#, "chatPaths[0]", "starting with `/`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"chatPaths":["/llm/chat"]}"#, "chatPaths[0]", "end with `/chat/completions`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"messagesPaths":["v1/messages"]}"#, "messagesPaths[0]", "starting with `/`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"messagesPaths":["/v1/messages?x"]}"#, "messagesPaths[0]", "without a query"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"messagesPaths":["/v1/chat/completions"]}"#, "messagesPaths[0]", "listed twice"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"messagesPaths":["/m","/m"]}"#, "messagesPaths[1]", "listed twice"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"messagesPaths":["/h/messages"],"admin":{"path":"/h","internalListener":true}}"#, "admin.path", "overlap `messagesPaths`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"retries":3}"#, "retries", "unknown field `retries`"),
            (r#"{"role":"router","providers":"a","chains":{"c":["a"]}}"#, "providers", "invalid type"),
            (r#"{"role":"router","providers":[],"chains":{}}"#, "providers", "at least one"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"admin":{"path":"/h"}}"#, "admin", "secretEnv"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"admin":{"path":"/h","secretEnv":"SHORT"}}"#, "admin.secretEnv", "at least 16"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"admin":{"path":"/h","secretEnv":"NOPE"}}"#, "admin.secretEnv", "not set"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"admin":{"path":"h","internalListener":true}}"#, "admin.path", "starting with `/`"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"admin":{"path":"/v1","internalListener":true}}"#, "admin.path", "overlap"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"probeTimeout":"0s"}"#, "probeTimeout", "greater than 0"),
            (r#"{"role":"router","providers":[{"name":"a","format":"openai","host":"a","price":{"inputPerMTok":1,"outputPerMTok":-2}}],"chains":{"c":["a"]}}"#, "providers[0].price.outputPerMTok", "0 or more"),
            (r#"{"role":"router","providers":[{"name":"a","format":"openai","host":"a","contextWindow":0}],"chains":{"c":["a"]}}"#, "providers[0].contextWindow", "greater than 0"),
            (r#"{"role":"router","providers":["a"],"chains":{"c":["a"]},"errorAnswers":"drop"}"#, "errorAnswers", "unknown variant"),
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

    const OPENAI: &str = r#"{"name":"x","format":"openai",
        "host":"api.openai.com","auth":{"apiKeyEnv":"OPENAI_KEY"},"models":{"smart":"gpt-4o"}}"#;

    #[test]
    fn attempt_config_reads_the_key_from_the_environment() {
        let a = attempt(OPENAI).unwrap();
        assert_eq!(a.provider.name, "x");
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
            (r#"{"name":"x","format":"mistral-native","host":"h"}"#, "providers[0].format", "unknown variant `mistral-native`"),
            (r#"{"name":"x","format":"openai","host":"http://h/v1"}"#, "providers[0].host", "host name"),
            (r#"{"name":"x","format":"openai","host":"h","auth":{}}"#, "providers[0].auth.apiKeyEnv", "required"),
            (r#"{"name":"x","format":"openai","host":"h","auth":{"apiKeyEnv":"MISSING"}}"#, "providers[0].auth.apiKeyEnv", "`MISSING` is not set"),
            (r#"{"name":"x","format":"openai","host":"h","auth":{"apiKeyEnv":"EMPTY"}}"#, "providers[0].auth.apiKeyEnv", "`EMPTY` is not set"),
            (r#"{"name":"x","format":"openai","host":"h","auth":{"style":"basic","apiKeyEnv":"OPENAI_KEY"}}"#, "providers[0].auth.style", "unknown variant `basic`"),
            (r#"{"name":"x","format":"azure-openai","host":"h"}"#, "providers[0].apiVersion", "required"),
            (r#"{"name":"x","format":"openai","host":"h","cooldowns":{"authFailure":"1 hour"}}"#, "providers[0].cooldowns.authFailure", "unknown unit"),
            (r#"{"name":"x","format":"openai","host":"h","cooldowns":{"rateLimited":"0s"}}"#, "providers[0].cooldowns.rateLimited", "greater than 0"),
            (r#"{"name":"x","format":"openai","host":"h","cooldowns":{"failureBase":"10m","failureMax":"1m"}}"#, "providers[0].cooldowns.failureMax", "not be shorter"),
            (r#"{"name":"x","format":"openai","host":"h","breaker":{"consecutiveFailures":0}}"#, "providers[0].breaker.consecutiveFailures", "at least 1"),
            (r#"{"name":"x","format":"openai","host":"h","breaker":{"errorRate":{"percent":120}}}"#, "providers[0].breaker.errorRate.percent", "between 1 and 100"),
            (r#"{"name":"x","format":"openai","host":"h","latency":{"slowTtfb":"fast"}}"#, "providers[0].latency.slowTtfb", ""),
            (r#"{"name":"x","format":"openai","host":"h","budget":{}}"#, "providers[0].budget", "requestsPerDay"),
            (r#"{"name":"x","format":"openai","host":"h","budget":{"requestsPerDay":5,"resetUtcOffset":"KST"}}"#, "providers[0].budget.resetUtcOffset", "UTC offset"),
            (r#"{"name":"x","format":"openai","host":"h","prices":{"m":{"inputPerMTok":-1,"outputPerMTok":1}}}"#, "providers[0].prices.m.inputPerMTok", "0 or more"),
            (r#"{"name":"x","format":"openai","host":"h","breaker":{"halfOpen":1}}"#, "providers[0].breaker.halfOpen", "unknown field"),
            (r#"{"name":"x","format":"openai","host":"h","apiKey":"sk-inline"}"#, "providers[0].apiKey", "unknown field"),
            (r#"{"name":"x","format":"bedrock","host":"h","auth":{}}"#, "providers[0].auth.region", "required"),
            (r#"{"name":"x","format":"bedrock","host":"h","auth":{"region":"us-east-1","apiKeyEnv":"OPENAI_KEY"}}"#, "providers[0].auth.apiKeyEnv", "own environment"),
            (r#"{"name":"x","format":"bedrock","host":"h","auth":{"region":"US East"}}"#, "providers[0].auth.region", "not an AWS name"),
            (r#"{"name":"x","format":"openai","host":"h","auth":{"apiKeyEnv":"OPENAI_KEY","region":"us-east-1"}}"#, "providers[0].auth.region", "`aws-sigv4` only"),
            (r#"{"name":"x","format":"ollama","vertex":{"project":"p","location":"l"},"auth":{"apiKeyEnv":"OPENAI_KEY"}}"#, "providers[0].vertex", "not `ollama`"),
            (r#"{"name":"x","format":"gemini","vertex":{"project":"p"},"auth":{"apiKeyEnv":"OPENAI_KEY"}}"#, "providers[0].vertex", "missing field `location`"),
            (r#"{"name":"x","format":"gemini","vertex":{"project":"p/q","location":"l"},"auth":{"apiKeyEnv":"OPENAI_KEY"}}"#, "providers[0].vertex.project", "project id"),
            (r#"{"name":"x","format":"gemini","vertex":{"project":"p","location":"US Central"},"auth":{"apiKeyEnv":"OPENAI_KEY"}}"#, "providers[0].vertex.location", "location"),
            (r#"{"name":"x","format":"gemini","vertex":{"project":"p","location":"l"}}"#, "providers[0].auth", "required for Vertex"),
            (r#"{"name":"x","format":"gemini","vertex":{"project":"p","location":"l"},"auth":{"style":"x-goog-api-key","apiKeyEnv":"OPENAI_KEY"}}"#, "providers[0].auth.style", "`bearer`"),
            (r#"{"name":"x","format":"anthropic","vertex":{"project":"p","location":"l"},"auth":{"apiKeyEnv":"OPENAI_KEY"},"anthropicVersion":"2023-06-01"}"#, "providers[0].anthropicVersion", "vertex-2023-10-16"),
            (r#"{"name":"x","format":"gemini","vertex":{"project":"p","location":"l"},"auth":{"apiKeyEnv":"OPENAI_KEY"},"models":{"m":"a/b"}}"#, "providers[0].models.m", "model name"),
        ];
        for (json, field, reason) in cases {
            let err = attempt(json).expect_err(json);
            assert_eq!(err.field, *field, "{json}: {err}");
            assert!(err.reason.contains(reason), "{json}: {err}");
        }
    }

    #[test]
    fn bedrock_is_signed_by_envoy_and_the_filter_holds_no_aws_key() {
        let a = attempt(r#"{"name":"x","format":"bedrock","host":"bedrock-runtime.us-east-1.amazonaws.com","auth":{"region":"us-east-1"}}"#).unwrap();
        assert_eq!(a.provider.auth.style, AuthStyle::AwsSigv4);
        assert_eq!(a.provider.auth.aws, Some(AwsScope { region: "us-east-1".into(), service: "bedrock".into() }));
        assert_eq!(a.provider.auth.header_name(), None);
        assert_eq!(a.provider.base_path, "");
        assert_eq!(a.provider.chat_path("anthropic.claude-3-5-sonnet-20240620-v1:0", false), "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse");
        let err = attempt(r#"{"name":"x","format":"bedrock","host":"h","auth":{"region":"us-east-1","kind":"token-exchange","tokenUrl":"https://h/x","tokenEnv":"OPENAI_KEY"}}"#).unwrap_err();
        assert_eq!(err.field, "providers[0].auth.kind", "{err}");
    }

    #[test]
    fn renewed_tokens_are_bearers_with_a_short_auth_cooldown() {
        let entra = r#"{"name":"x","format":"azure-openai","host":"x.openai.azure.com","apiVersion":"2024-10-21",
            "auth":{"kind":"oauth2-client-credentials","tokenUrl":"https://login.microsoftonline.com/t/oauth2/v2.0/token",
            "clientIdEnv":"OPENAI_KEY","clientSecretEnv":"ADMIN","scope":"https://cognitiveservices.azure.com/.default"}}"#;
        let a = attempt(entra).unwrap();
        assert_eq!(a.provider.auth.style, AuthStyle::Bearer);
        assert_eq!(a.provider.auth.renewal.as_ref().map(|r| r.kind()), Some("oauth2-client-credentials"));
        assert_eq!(a.health.cooldowns.auth_failure, Some(Duration::from_secs(5)));
        assert!(!format!("{a:?}").contains("a-long-enough-admin-secret"));
        let cases: &[(&str, &str, &str)] = &[
            (r#""auth":{"kind":"token-exchange","tokenUrl":"https://api.github.com/x","tokenEnv":"NOPE"}"#, "providers[0].auth.tokenEnv", "not set"),
            (r#""auth":{"kind":"token-exchange","tokenUrl":"http://api.github.com/x","tokenEnv":"OPENAI_KEY"}"#, "providers[0].auth.tokenUrl", "https"),
            (r#""auth":{"kind":"token-exchange","tokenUrl":"https://h/x","tokenEnv":"OPENAI_KEY","apiKeyEnv":"OPENAI_KEY"}"#, "providers[0].auth.apiKeyEnv", "not used"),
            (r#""auth":{"kind":"token-exchange","tokenUrl":"https://h/x","tokenEnv":"OPENAI_KEY","style":"none"}"#, "providers[0].auth.style", "none"),
            (r#""auth":{"apiKeyEnv":"OPENAI_KEY","tokenUrl":"https://h/x"}"#, "providers[0].auth.tokenUrl", "auth.kind"),
            (r#""auth":{"kind":"saml","tokenUrl":"https://h/x"}"#, "providers[0].auth.kind", "not one of"),
            (r#""auth":{"kind":"token-exchange","tokenUrl":"https://h/x","tokenEnv":"OPENAI_KEY","clientSecret":"x"}"#, "providers[0].auth.clientSecret", "unknown field"),
            (r#""auth":{"apiKeyEnv":"OPENAI_KEY","headers":{"Authorization":"Bearer x"}}"#, "providers[0].auth.headers", "cannot be set"),
            (r#""auth":{"kind":"token-exchange","tokenUrl":"https://h/x","tokenEnv":"OPENAI_KEY","headers":{"Editor-Version":""}}"#, "providers[0].auth.headers", "not a header value"),
        ];
        for (auth, field, reason) in cases {
            let json = format!(r#"{{"name":"x","format":"openai","host":"h",{auth}}}"#);
            let err = attempt(&json).expect_err(&json);
            assert_eq!(err.field, *field, "{json}: {err}");
            assert!(err.reason.contains(reason), "{json}: {err}");
        }
        let copilot = r#"{"name":"x","format":"openai","host":"api.githubcopilot.com","basePath":"/","cooldowns":{"authFailure":"30s"},
            "auth":{"kind":"token-exchange","tokenUrl":"https://api.github.com/copilot_internal/v2/token","tokenEnv":"OPENAI_KEY"}}"#;
        assert_eq!(attempt(copilot).unwrap().health.cooldowns.auth_failure, Some(Duration::from_secs(30)), "the operator's own");
        let with_headers = copilot.replace(r#""tokenEnv":"OPENAI_KEY""#, r#""tokenEnv":"OPENAI_KEY","headers":{"Copilot-Integration-Id":"vscode-chat"}"#);
        assert_eq!(attempt(&with_headers).unwrap().provider.auth.headers, vec![("copilot-integration-id".to_string(), "vscode-chat".to_string())]);
    }

    #[test]
    fn vertex_takes_a_google_service_account_renewed_by_the_filter() {
        let entry = r#"{"name":"x","format":"gemini","vertex":{"project":"p","location":"us-central1"},"auth":{"kind":"google-service-account","keyEnv":"GOOGLE_SA"}}"#;
        let a = attempt(entry).unwrap();
        assert_eq!(a.provider.auth.style, AuthStyle::Bearer);
        assert_eq!(a.provider.auth.renewal.as_ref().map(|r| (r.kind(), r.url().authority.as_str())), Some(("google-service-account", "oauth2.googleapis.com")));
        assert_eq!(a.health.cooldowns.auth_failure, Some(Duration::from_secs(5)));
        assert!(!format!("{a:?}").contains("PRIVATE KEY"));
        let cases = [
            (entry.replace("GOOGLE_SA", "NOPE"), "providers[0].auth.keyEnv", "not set"),
            (entry.replace("GOOGLE_SA", "OPENAI_KEY"), "providers[0].auth.keyEnv", "service-account key: not a key file"),
            (entry.replace(r#""keyEnv""#, r#""tokenUrl":"https://example.com/token","keyEnv""#), "providers[0].auth.tokenUrl", "token_uri"),
            (entry.replace(r#""keyEnv""#, r#""style":"api-key","keyEnv""#), "providers[0].auth.style", "bearer"),
        ];
        for (json, field, reason) in cases {
            let err = attempt(&json).expect_err(&json);
            assert_eq!(err.field, field, "{json}: {err}");
            assert!(err.reason.contains(reason) && !err.reason.contains("MII") && !err.reason.contains("sk-test"), "{json}: {err}");
        }
    }

    #[test]
    fn vertex_providers_default_to_the_regional_host_v1_and_bearer_auth() {
        let a = attempt(r#"{"name":"x","format":"gemini","vertex":{"project":"my-proj","location":"us-east5"},"auth":{"apiKeyEnv":"OPENAI_KEY"}}"#).unwrap();
        assert_eq!(a.provider.host, "us-east5-aiplatform.googleapis.com");
        assert_eq!(a.provider.base_path, "/v1");
        assert_eq!(a.provider.auth.style, AuthStyle::Bearer);
        assert_eq!(a.provider.embeddings_path("text-embedding-005"), None);
        assert_eq!(
            a.provider.chat_path("gemini-2.5-pro", true),
            "/v1/projects/my-proj/locations/us-east5/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        let c = attempt(r#"{"name":"x","format":"anthropic","vertex":{"project":"my-proj","location":"global"},"host":"127.0.0.1:9","auth":{"apiKeyEnv":"OPENAI_KEY"}}"#).unwrap();
        assert_eq!(c.provider.host, "127.0.0.1:9");
        assert_eq!(c.provider.chat_path("claude-x@1", false), "/v1/projects/my-proj/locations/global/publishers/anthropic/models/claude-x@1:rawPredict");
        assert!(c.provider.format_headers().is_empty());
        assert_eq!(c.provider.stale_format_headers(), &["anthropic-version"]);
        assert_ne!(a.provider.fingerprint(), attempt(r#"{"name":"x","format":"gemini","vertex":{"project":"other","location":"us-east5"},"auth":{"apiKeyEnv":"OPENAI_KEY"}}"#).unwrap().provider.fingerprint());
    }

    #[test]
    fn azure_defaults_to_the_api_key_header() {
        let a = attempt(
            r#"{"name":"x","format":"azure-openai","host":"x.openai.azure.com",
            "apiVersion":"2024-10-21","auth":{"apiKeyEnv":"OPENAI_KEY"}}"#,
        )
        .unwrap();
        assert_eq!(a.provider.auth.style, AuthStyle::ApiKey);
        assert_eq!(a.provider.base_path, "/openai");
    }
}
