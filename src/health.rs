//! Provider health shared by every Envoy worker: what the last attempts at a provider taught,
//! and until when to leave it out. Records live in a key-value store with compare-and-swap.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CooldownPolicy {
    /// 401/403: a bad key does not heal by itself. `None`: until an operator resets the
    /// provider or the config changes.
    pub auth_failure: Option<Duration>,
    /// 429 without a usable `Retry-After`. (A `Retry-After` on a 5xx extends its backoff.)
    pub rate_limited: Duration,
    /// The longest `Retry-After` believed.
    pub max_retry_after: Duration,
    /// An account out of credit (`insufficient_quota`): someone has to pay first.
    pub quota_exhausted: Duration,
    /// 5xx, connect failure, reset or timeout: `failure_base` doubled per consecutive failure.
    pub failure_base: Duration,
    pub failure_max: Duration,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        CooldownPolicy {
            auth_failure: None,
            rate_limited: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(3600),
            quota_exhausted: Duration::from_secs(3600),
            failure_base: Duration::from_secs(5),
            failure_max: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Unauthorized,
    /// The account is out of credit (`insufficient_quota`, billing errors): not transient
    /// like a 429, so it cools down long.
    QuotaExhausted,
    RateLimited,
    ServerError,
    ConnectFailure,
    NoResponse,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::Unauthorized,
        Failure::QuotaExhausted,
        Failure::RateLimited,
        Failure::ServerError,
        Failure::ConnectFailure,
        Failure::NoResponse,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failure::Unauthorized => "unauthorized",
            Failure::QuotaExhausted => "quota_exhausted",
            Failure::RateLimited => "rate_limited",
            Failure::ServerError => "server_error",
            Failure::ConnectFailure => "connect_failure",
            Failure::NoResponse => "no_response",
        }
    }

    fn from_name(name: &str) -> Option<Failure> {
        Failure::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Why an attempt ended without response headers, or `None` when that was not the
    /// provider's doing: the client went away and Envoy cancelled the attempt.
    pub fn from_unanswered(transport_failure_reason: &str, downstream: &Downstream) -> Option<Failure> {
        if downstream.gone() || downstream.answered_by_another_attempt() {
            return None;
        }
        if transport_failure_reason.is_empty() {
            Some(Failure::NoResponse)
        } else {
            Some(Failure::ConnectFailure)
        }
    }

    /// What a response status says about the provider; `None` for statuses that are the
    /// request's fault (400, 404, 422...) or a success.
    pub fn from_status(status: u16) -> Option<Failure> {
        match status {
            401 | 403 => Some(Failure::Unauthorized),
            429 => Some(Failure::RateLimited),
            408 | 500..=599 => Some(Failure::ServerError),
            _ => None,
        }
    }
}

/// The client's side of the request when an attempt ends, from Envoy's stream info.
#[derive(Debug, Default)]
pub struct Downstream<'a> {
    /// `response.flags`: Envoy's legacy response-flag bits.
    pub response_flags: u64,
    /// `response.code_details`, set once the client's response is decided.
    pub code_details: &'a str,
    /// Another attempt's answer went to the client (hedging: the first answer wins). Not
    /// `code_details == "via_upstream"`: an error answer Envoy retried leaves that too.
    pub answered_elsewhere: bool,
}

impl Downstream<'_> {
    /// Envoy's DC flag: the downstream connection was terminated.
    const DOWNSTREAM_CONNECTION_TERMINATION: u64 = 0x4000;

    pub fn gone(&self) -> bool {
        self.response_flags & Self::DOWNSTREAM_CONNECTION_TERMINATION != 0
            || self.code_details.starts_with("downstream_remote_disconnect")
    }

    /// The client already has its answer from another attempt (hedging: first answer wins).
    pub fn answered_by_another_attempt(&self) -> bool {
        self.answered_elsewhere
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker (1: the first failure does).
    pub consecutive_failures: u32,
    /// Or: an error rate over a window of recent attempts.
    pub error_rate: Option<ErrorRate>,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy { consecutive_failures: 1, error_rate: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRate {
    pub percent: u32,
    pub min_requests: u32,
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyPolicy {
    /// Time to first byte above which a provider is slow: moved behind healthy ones.
    pub slow_ttfb: Option<Duration>,
    /// How long a measurement counts: a slow provider is tried first again after this, and
    /// a measurement older than this is replaced, not averaged.
    pub memory: Duration,
}

impl Default for LatencyPolicy {
    fn default() -> Self {
        LatencyPolicy { slow_ttfb: None, memory: Duration::from_secs(60) }
    }
}

/// Everything that decides how an attempt's outcome changes its provider's health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthPolicy {
    pub cooldowns: CooldownPolicy,
    pub breaker: BreakerPolicy,
    pub latency: LatencyPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success {
        ttfb_ms: u64,
        total_ms: u64,
        /// Rate-limit headers said the provider is nearly spent, until then.
        near_limit_until_ms: Option<u64>,
    },
    Failed { failure: Failure, status: u16, retry_after_ms: Option<u64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    /// The cooldown is over: one request may probe.
    HalfOpen,
}

impl BreakerState {
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// For the breaker gauge.
    pub fn number(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// Cooldown end that only an operator's reset (or a new config) lifts.
pub const UNTIL_RESET: u64 = u64::MAX;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// The breaker tripped; it stays open until `cooldown_until_ms`, then is half-open until a
    /// probe succeeds.
    pub open: bool,
    pub cooldown_until_ms: u64,
    pub consecutive_failures: u32,
    pub last_failure: Option<Failure>,
    pub last_status: u16,
    /// A half-open provider's probe is taken until then.
    pub probe_until_ms: u64,
    /// Decaying averages, and when they were last measured.
    pub ttfb_ms: u64,
    pub total_ms: u64,
    pub latency_at_ms: u64,
    pub slow_until_ms: u64,
    pub near_limit_until_ms: u64,
    pub window_start_ms: u64,
    pub window_requests: u32,
    pub window_failures: u32,
    /// The provider's daily budget is spent until then (the budget's next reset).
    pub budget_spent_until_ms: u64,
    /// A fingerprint of the provider's config when this was learned: a changed config (a new
    /// key, another host) starts from a clean record.
    pub config_tag: u64,
    pub updated_ms: u64,
}

impl Health {
    pub fn state(&self, now_ms: u64) -> BreakerState {
        match (self.open, now_ms < self.cooldown_until_ms) {
            (false, _) => BreakerState::Closed,
            (true, true) => BreakerState::Open,
            (true, false) => BreakerState::HalfOpen,
        }
    }

    pub fn is_cooling(&self, now_ms: u64) -> bool {
        self.state(now_ms) == BreakerState::Open
    }

    /// Half-open with its probe already claimed by another request.
    pub fn is_probing(&self, now_ms: u64) -> bool {
        self.state(now_ms) == BreakerState::HalfOpen && now_ms < self.probe_until_ms
    }

    /// Tried, but behind providers that are neither slow nor nearly out of rate limit.
    pub fn is_demoted(&self, now_ms: u64) -> bool {
        now_ms < self.slow_until_ms || now_ms < self.near_limit_until_ms
    }

    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        if !self.open {
            return 0;
        }
        self.cooldown_until_ms.saturating_sub(now_ms)
    }

    /// Nothing a success would change but the latency: writing it can wait.
    pub fn is_clean(&self, now_ms: u64) -> bool {
        !self.open && self.consecutive_failures == 0 && self.last_failure.is_none() && !self.is_demoted(now_ms)
    }

    pub fn after(&self, outcome: &Outcome, now_ms: u64, policy: &HealthPolicy) -> Health {
        let mut next = self.clone();
        next.updated_ms = now_ms;
        let window = policy.breaker.error_rate.as_ref().map(|rate| duration_ms(rate.window));
        if window.is_some_and(|w| now_ms.saturating_sub(next.window_start_ms) >= w) {
            next.window_start_ms = now_ms;
            next.window_requests = 0;
            next.window_failures = 0;
        }
        next.window_requests = next.window_requests.saturating_add(1);
        match *outcome {
            Outcome::Success { ttfb_ms, total_ms, near_limit_until_ms } => {
                next.open = false;
                next.cooldown_until_ms = 0;
                next.probe_until_ms = 0;
                next.consecutive_failures = 0;
                next.last_failure = None;
                next.last_status = 200;
                let memory = duration_ms(policy.latency.memory);
                let measured = self.ttfb_ms != 0 || self.total_ms != 0;
                let fresh = measured && now_ms.saturating_sub(self.latency_at_ms) < memory;
                next.ttfb_ms = if fresh { (3 * self.ttfb_ms + ttfb_ms) / 4 } else { ttfb_ms };
                next.total_ms = if fresh { (3 * self.total_ms + total_ms) / 4 } else { total_ms };
                next.latency_at_ms = now_ms;
                let slow = policy.latency.slow_ttfb.is_some_and(|limit| next.ttfb_ms > duration_ms(limit));
                next.slow_until_ms = if slow { now_ms.saturating_add(memory) } else { 0 };
                next.near_limit_until_ms = near_limit_until_ms.unwrap_or(0);
            }
            Outcome::Failed { failure, status, retry_after_ms } => {
                next.window_failures = next.window_failures.saturating_add(1);
                next.consecutive_failures = self.consecutive_failures.saturating_add(1);
                next.last_failure = Some(failure);
                next.last_status = status;
                let probe_failed = self.state(now_ms) == BreakerState::HalfOpen;
                let trips = probe_failed
                    || matches!(failure, Failure::Unauthorized | Failure::QuotaExhausted)
                    || next.consecutive_failures >= policy.breaker.consecutive_failures.max(1)
                    || policy.breaker.error_rate.as_ref().is_some_and(|rate| {
                        next.window_requests >= rate.min_requests
                            && u64::from(next.window_failures) * 100 >= u64::from(rate.percent) * u64::from(next.window_requests)
                    });
                if trips {
                    // Backoff doubles for each failure past the one that tripped the breaker.
                    let beyond = next.consecutive_failures.saturating_sub(policy.breaker.consecutive_failures.max(1));
                    let cooldown = cooldown_ms(failure, beyond + 1, retry_after_ms, &policy.cooldowns);
                    let base = if self.state(now_ms) == BreakerState::Open { self.cooldown_until_ms } else { 0 };
                    next.open = true;
                    next.cooldown_until_ms = base.max(now_ms.saturating_add(cooldown));
                    next.probe_until_ms = 0;
                }
            }
        }
        next
    }

    pub fn encode(&self) -> Vec<u8> {
        format!(
            "v2 {} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {}",
            u8::from(self.open),
            self.cooldown_until_ms,
            self.consecutive_failures,
            self.last_failure.map_or("-", Failure::name),
            self.last_status,
            self.probe_until_ms,
            self.ttfb_ms,
            self.total_ms,
            self.latency_at_ms,
            self.slow_until_ms,
            self.near_limit_until_ms,
            self.window_start_ms,
            self.window_requests,
            self.window_failures,
            self.budget_spent_until_ms,
            self.config_tag,
            self.updated_ms
        )
        .into_bytes()
    }

    /// Read as bytes: every field is checked (numbers as digits, the failure as a name), so a
    /// record that is not UTF-8 is refused as before, without a pass to check it first.
    pub fn decode(bytes: &[u8]) -> Option<Health> {
        let mut parts = Fields(Some(bytes));
        if parts.next()? != b"v2" {
            return None;
        }
        let mut number = || -> Option<u64> { parse_u64(parts.next()?) };
        let open = number()? == 1;
        let cooldown_until_ms = number()?;
        let consecutive_failures = u32::try_from(number()?).ok()?;
        let last_failure = match parts.next()? {
            b"-" => None,
            name => Some(Failure::from_name(std::str::from_utf8(name).ok()?)?),
        };
        let mut number = || -> Option<u64> { parse_u64(parts.next()?) };
        let health = Health {
            open,
            cooldown_until_ms,
            consecutive_failures,
            last_failure,
            last_status: u16::try_from(number()?).ok()?,
            probe_until_ms: number()?,
            ttfb_ms: number()?,
            total_ms: number()?,
            latency_at_ms: number()?,
            slow_until_ms: number()?,
            near_limit_until_ms: number()?,
            window_start_ms: number()?,
            window_requests: u32::try_from(number()?).ok()?,
            window_failures: u32::try_from(number()?).ok()?,
            budget_spent_until_ms: number()?,
            config_tag: number()?,
            updated_ms: number()?,
        };
        parts.next().is_none().then_some(health)
    }
}

/// A record's space-separated fields, as `split(' ')` gives them (`slice::split` would be one more
/// caller of `split_at`, see `parse_u64`).
struct Fields<'a>(Option<&'a [u8]>);

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.0?;
        match rest.iter().position(|&b| b == b' ') {
            Some(space) => {
                self.0 = rest.get(space + 1..);
                rest.get(..space)
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

/// `str::parse::<u64>` on bytes: an optional `+`, then at least one digit, no overflow.
fn parse_u64(text: &[u8]) -> Option<u64> {
    // Not `strip_prefix`: one more caller of `split_at` and LLVM stops inlining it into
    // serde_json's string writer, which calls it for every byte it writes.
    let digits = match text.first() {
        Some(b'+') => text.get(1..)?,
        _ => text,
    };
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| if d.is_ascii_digit() { n.checked_mul(10)?.checked_add(u64::from(d - b'0')) } else { None })
}

pub fn duration_ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

fn cooldown_ms(failure: Failure, failures: u32, retry_after_ms: Option<u64>, policy: &CooldownPolicy) -> u64 {
    let ms = duration_ms;
    match failure {
        Failure::Unauthorized => policy.auth_failure.map_or(UNTIL_RESET, ms),
        Failure::QuotaExhausted => ms(policy.quota_exhausted),
        Failure::RateLimited => match retry_after_ms {
            Some(after) => after.min(ms(policy.max_retry_after)),
            None => ms(policy.rate_limited),
        },
        Failure::ServerError | Failure::ConnectFailure | Failure::NoResponse => {
            let doublings = failures.saturating_sub(1).min(32);
            let backoff = ms(policy.failure_base).saturating_mul(1u64 << doublings).min(ms(policy.failure_max));
            // An overloaded provider may say when to come back (HTTP allows it on 503).
            backoff.max(retry_after_ms.unwrap_or(0).min(ms(policy.max_retry_after)))
        }
    }
}

/// `Retry-After` as seconds (fractions allowed) or an HTTP date, in milliseconds from `now_ms`.
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<u64> {
    let value = value.trim();
    if let Some(secs) = crate::decimal::parse_f64(value) {
        return (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).min(u64::MAX as f64) as u64);
    }
    let at_ms = crate::http_date::parse(value)?.saturating_mul(1000);
    Some(at_ms.saturating_sub(now_ms))
}

pub fn now_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    CasMismatch,
    Failed(String),
}

/// What proxy-wasm's `get_shared_data` answered, as a stored value: a key holding an empty
/// value comes back with no bytes but a version, and it exists. Taking it for a missing key
/// would make the next write unconditional, and concurrent writers would lose updates.
pub fn stored(value: Option<Vec<u8>>, version: Option<u32>) -> Option<(Vec<u8>, u32)> {
    match (value, version) {
        (Some(bytes), version) => Some((bytes, version.unwrap_or(0))),
        (None, Some(version)) => Some((Vec::new(), version)),
        (None, None) => None,
    }
}

/// Proxy-wasm shared data as the health logic needs it; the host layer implements it.
pub trait SharedStore {
    /// The value and its version (`None` when the key does not exist).
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes only if the stored version still equals `version` (`None`: unconditionally).
    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError>;
}

const CAS_ATTEMPTS: usize = 10;

/// One bounded compare-and-swap loop over one key: `change` reads the stored bytes (`None` for
/// a missing key) and returns the bytes to write and what the caller wants back, or `None` for
/// nothing to write. A lost race starts over, so concurrent workers never lose an update.
pub fn compare_and_swap<T>(
    store: &dyn SharedStore,
    key: &str,
    mut change: impl FnMut(Option<&[u8]>) -> Option<(Vec<u8>, T)>,
) -> Result<Option<T>, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let (current, version) = match store.get(key) {
            Some((bytes, version)) => (Some(bytes), Some(version)),
            None => (None, None),
        };
        let Some((bytes, result)) = change(current.as_deref()) else {
            return Ok(None);
        };
        match store.set(key, &bytes, version) {
            Ok(()) => return Ok(Some(result)),
            Err(StoreError::CasMismatch) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(StoreError::CasMismatch)
}

/// Every provider's record under one key, so a request reads all the health it needs in a
/// single host call.
pub const TABLE_KEY: &str = "llm-failover/v2/health";

/// Model records (`provider/model`) the table keeps: model names come from clients, and every
/// request decodes the whole table. Past this, the record updated longest ago goes.
pub const MAX_MODEL_RECORDS: usize = 128;
/// The model part of a record's key is cut to this many bytes.
pub const MAX_MODEL_KEY_BYTES: usize = 128;
/// A table read from shared data is read this far at most, whoever wrote it.
const MAX_DECODED_RECORDS: usize = 4096;

fn is_model_record(key: &str) -> bool {
    key.contains('/')
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthTable {
    records: Vec<(String, Health)>,
}

impl HealthTable {
    pub fn records(&self) -> &[(String, Health)] {
        &self.records
    }

    /// A provider never recorded is healthy.
    pub fn get(&self, provider: &str) -> Health {
        self.records.iter().find(|(name, _)| name == provider).map(|(_, h)| h.clone()).unwrap_or_default()
    }

    fn set(&mut self, provider: &str, health: Health) {
        match self.records.iter_mut().find(|(name, _)| name == provider) {
            Some((_, record)) => *record = health,
            None => {
                if is_model_record(provider) {
                    self.make_room_for_a_model();
                }
                self.records.push((provider.to_string(), health));
            }
        }
    }

    /// Evicts the model records updated longest ago until one more fits; provider records stay.
    fn make_room_for_a_model(&mut self) {
        while self.records.iter().filter(|(key, _)| is_model_record(key)).count() >= MAX_MODEL_RECORDS {
            let oldest = self
                .records
                .iter()
                .enumerate()
                .filter(|(_, (key, _))| is_model_record(key))
                .min_by_key(|(_, (_, health))| health.updated_ms)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => {
                    self.records.remove(i);
                }
                None => return,
            }
        }
    }

    /// One line per provider: its name, then its record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.records.len() * 48);
        for (name, health) in &self.records {
            out.extend_from_slice(name.as_bytes());
            out.push(b' ');
            out.extend_from_slice(&health.encode());
            out.push(b'\n');
        }
        out
    }

    /// Lines that do not read as a record are left out: that provider reads as healthy.
    pub fn decode(bytes: &[u8]) -> HealthTable {
        let records = bytes
            .split(|&b| b == b'\n')
            .filter_map(|line| {
                let space = line.iter().position(|&b| b == b' ')?;
                let (name, record) = (line.get(..space)?, line.get(space + 1..)?);
                let health = Health::decode(record)?;
                Some((std::str::from_utf8(name).ok()?.to_string(), health))
            })
            .take(MAX_DECODED_RECORDS)
            .collect();
        HealthTable { records }
    }
}

/// Makes sure the table exists, so that every later update can be a compare-and-swap (a
/// write to a missing key cannot be one).
pub fn ensure_table(store: &dyn SharedStore) -> Result<(), StoreError> {
    if store.get(TABLE_KEY).is_none() {
        store.set(TABLE_KEY, &HealthTable::default().encode(), None)?;
    }
    Ok(())
}

/// The record of a model at a provider: its own breaker, beside the provider's.
pub fn model_key(provider: &str, model: &str) -> String {
    let mut key = format!("{provider}/");
    for c in model.chars() {
        if key.len() - provider.len() - 1 + c.len_utf8() > MAX_MODEL_KEY_BYTES {
            break;
        }
        key.push(if c.is_whitespace() || c.is_control() { '_' } else { c });
    }
    key
}

/// Which record a failure belongs to: a bad key or a dead host is the provider's; a rate
/// limit or an overloaded model may be one model's only.
pub fn failure_is_the_models(failure: Failure) -> bool {
    matches!(failure, Failure::RateLimited | Failure::ServerError)
}

/// A compare-and-swap of the health table: `change` edits it (returning what the caller wants
/// back, or `None` for nothing to write).
fn update<T>(store: &dyn SharedStore, mut change: impl FnMut(&mut HealthTable) -> Option<T>) -> Result<Option<T>, StoreError> {
    compare_and_swap(store, TABLE_KEY, |bytes| {
        let mut table = bytes.map(HealthTable::decode).unwrap_or_default();
        let result = change(&mut table)?;
        Some((table.encode(), result))
    })
}

/// Applies an attempt's outcome: a failure to the record it belongs to (the provider's or the
/// model's), a success to both. Returns the record the outcome changed.
pub fn record(
    store: &dyn SharedStore,
    provider: &str,
    model: Option<&str>,
    outcome: &Outcome,
    now_ms: u64,
    policy: &HealthPolicy,
) -> Result<Health, StoreError> {
    record_under(store, provider, ANY_CONFIG, model, outcome, now_ms, policy)?.ok_or(StoreError::CasMismatch)
}

/// A `config_tag` that matches whatever config the provider's health is kept for.
pub const ANY_CONFIG: u64 = 0;

/// `record`, for an attempt made with the provider config whose fingerprint is `config_tag`.
/// While Envoy swaps configs, an attempt can still run with the old one (its listener or
/// cluster not yet replaced) after a VM with the new one made the provider start clean: the
/// old key's 401 says nothing about the new key. Such an outcome is not recorded (`None`).
pub fn record_under(
    store: &dyn SharedStore,
    provider: &str,
    config_tag: u64,
    model: Option<&str>,
    outcome: &Outcome,
    now_ms: u64,
    policy: &HealthPolicy,
) -> Result<Option<Health>, StoreError> {
    let model_key = model.map(|m| model_key(provider, m));
    update(store, |table| {
        let kept_for = table.get(provider).config_tag;
        if config_tag != ANY_CONFIG && kept_for != ANY_CONFIG && kept_for != config_tag {
            return None;
        }
        let key = match (outcome, &model_key) {
            (Outcome::Failed { failure, .. }, Some(key)) if failure_is_the_models(*failure) => key.as_str(),
            _ => provider,
        };
        let next = table.get(key).after(outcome, now_ms, policy);
        table.set(key, next.clone());
        if let (Outcome::Success { .. }, Some(key)) = (outcome, &model_key) {
            let model_health = table.get(key);
            if model_health != Health::default() {
                table.set(key, model_health.after(outcome, now_ms, policy));
            }
        }
        Some(next)
    })
}

/// Claims the single probe of a half-open record for one request. `false` when the record is
/// not half-open or another request (on any worker) claimed it first.
pub fn claim_probe(store: &dyn SharedStore, key: &str, now_ms: u64, probe_timeout: Duration) -> Result<bool, StoreError> {
    let claimed = update(store, |table| {
        let mut health = table.get(key);
        if health.state(now_ms) != BreakerState::HalfOpen || health.is_probing(now_ms) {
            return None;
        }
        health.probe_until_ms = now_ms.saturating_add(duration_ms(probe_timeout));
        table.set(key, health);
        Some(())
    })?;
    Ok(claimed.is_some())
}

/// Marks the provider's budget spent until `until_ms`.
pub fn budget_spent(store: &dyn SharedStore, provider: &str, until_ms: u64) -> Result<(), StoreError> {
    update(store, |table| {
        let mut health = table.get(provider);
        if health.budget_spent_until_ms == until_ms {
            return None;
        }
        health.budget_spent_until_ms = until_ms;
        table.set(provider, health);
        Some(())
    })
    .map(|_| ())
}

/// Starts the provider (and its models) from clean records when its config changed since
/// they were written; returns whether it did.
pub fn adopt_config(store: &dyn SharedStore, provider: &str, tag: u64) -> Result<bool, StoreError> {
    let adopted = update(store, |table| {
        if table.get(provider).config_tag == tag {
            return None;
        }
        let prefix = format!("{provider}/");
        table.records.retain(|(key, _)| key != provider && !key.starts_with(&prefix));
        table.set(provider, Health { config_tag: tag, ..Health::default() });
        Some(())
    })?;
    Ok(adopted.is_some())
}

/// Forgets what was learned about one provider (and its models), or about all: an operator's
/// reset. Returns how many records it cleared. A provider's record keeps the fingerprint of its
/// config: without it, the next config load would take any config for a new one, and forget
/// what was learned after the reset.
pub fn reset(store: &dyn SharedStore, provider: Option<&str>) -> Result<usize, StoreError> {
    let cleared = update(store, |table| {
        let mut cleared = 0;
        table.records.retain_mut(|(key, health)| {
            let owner = key.split_once('/').map_or(key.as_str(), |(owner, _)| owner);
            if provider.is_some_and(|name| name != owner) {
                return true;
            }
            cleared += 1;
            *health = Health { config_tag: health.config_tag, ..Health::default() };
            !is_model_record(key) && health.config_tag != ANY_CONFIG
        });
        Some(cleared)
    })?;
    Ok(cleared.unwrap_or(0))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    #[test]
    fn record_numbers_read_as_core_reads_them() {
        for text in ["0", "7", "+7", "", "+", "-1", "1x", "18446744073709551615", "18446744073709551616", "00012", " 1"] {
            assert_eq!(parse_u64(text.as_bytes()), text.parse::<u64>().ok(), "{text:?}");
        }
    }

    #[test]
    fn a_record_that_is_not_utf8_is_refused() {
        let mut bytes = Health::default().encode();
        assert!(Health::decode(&bytes).is_some());
        bytes.push(0xff);
        assert_eq!(Health::decode(&bytes), None);
        let mut table = b"openai ".to_vec();
        table.extend_from_slice(&Health::default().encode());
        table.extend_from_slice(b"\n\xffname ");
        table.extend_from_slice(&Health::default().encode());
        assert_eq!(HealthTable::decode(&table).records().len(), 1);
    }

    /// An in-memory store with versions like Envoy's; `conflicts` makes the next N writes
    /// lose their race, as if another worker wrote first.
    #[derive(Default)]
    pub struct MemoryStore {
        pub entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        pub conflicts: Cell<usize>,
        next_version: Cell<u32>,
    }

    impl SharedStore for MemoryStore {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.entries.borrow().get(key).cloned()
        }

        fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError> {
            if self.conflicts.get() > 0 {
                self.conflicts.set(self.conflicts.get() - 1);
                return Err(StoreError::CasMismatch);
            }
            let mut entries = self.entries.borrow_mut();
            if let (Some(v), Some((_, stored))) = (version, entries.get(key)) {
                if v != *stored {
                    return Err(StoreError::CasMismatch);
                }
            }
            self.next_version.set(self.next_version.get() + 1);
            entries.insert(key.to_string(), (value.to_vec(), self.next_version.get()));
            Ok(())
        }
    }

    fn read(store: &dyn SharedStore) -> (HealthTable, u32) {
        match store.get(TABLE_KEY) {
            Some((bytes, version)) => (HealthTable::decode(&bytes), version),
            None => (HealthTable::default(), 0),
        }
    }

    const S: u64 = 1000;
    fn policy() -> HealthPolicy {
        HealthPolicy::default()
    }
    fn failed(failure: Failure, status: u16) -> Outcome {
        Outcome::Failed { failure, status, retry_after_ms: None }
    }
    fn success(ttfb_ms: u64) -> Outcome {
        Outcome::Success { ttfb_ms, total_ms: ttfb_ms * 2, near_limit_until_ms: None }
    }

    #[test]
    fn statuses_map_to_failures() {
        assert_eq!(Failure::from_status(401), Some(Failure::Unauthorized));
        assert_eq!(Failure::from_status(403), Some(Failure::Unauthorized));
        assert_eq!(Failure::from_status(429), Some(Failure::RateLimited));
        assert_eq!(Failure::from_status(503), Some(Failure::ServerError));
        assert_eq!(Failure::from_status(529), Some(Failure::ServerError));
        assert_eq!(Failure::from_status(408), Some(Failure::ServerError));
        assert_eq!(Failure::from_status(400), None);
        assert_eq!(Failure::from_status(404), None);
        assert_eq!(Failure::from_status(200), None);
    }

    #[test]
    fn an_attempt_the_client_abandoned_is_not_the_providers_failure() {
        let still_there = Downstream::default();
        assert_eq!(Failure::from_unanswered("", &still_there), Some(Failure::NoResponse));
        assert_eq!(
            Failure::from_unanswered("delayed connect error: Connection refused", &still_there),
            Some(Failure::ConnectFailure)
        );
        let flag = Downstream { response_flags: 0x4000, ..Downstream::default() };
        let details = Downstream { code_details: "downstream_remote_disconnect", ..Downstream::default() };
        assert_eq!(Failure::from_unanswered("", &flag), None);
        assert_eq!(Failure::from_unanswered("", &details), None);
        let hedge_won = Downstream { code_details: "via_upstream", answered_elsewhere: true, ..Downstream::default() };
        assert_eq!(Failure::from_unanswered("", &hedge_won), None, "a hedged attempt answered first");
        // An earlier attempt's 503 that Envoy retried leaves `via_upstream` as well.
        let after_a_retried_error = Downstream { code_details: "via_upstream", ..Downstream::default() };
        assert_eq!(Failure::from_unanswered("", &after_a_retried_error), Some(Failure::NoResponse));
        let other_flags = Downstream { response_flags: 0x20 | 0x2, code_details: "upstream_per_try_timeout", ..Downstream::default() };
        assert_eq!(Failure::from_unanswered("", &other_flags), Some(Failure::NoResponse));
    }

    /// Replays outcomes at given times and reports the breaker state after each.
    fn replay(policy: &HealthPolicy, steps: &[(u64, Outcome)]) -> Vec<(BreakerState, u64)> {
        let mut h = Health::default();
        steps
            .iter()
            .map(|(at, outcome)| {
                h = h.after(outcome, *at, policy);
                (h.state(*at), h.remaining_ms(*at) / S)
            })
            .collect()
    }

    #[test]
    fn breaker_transitions_table() {
        use BreakerState::*;
        let e503 = failed(Failure::ServerError, 503);
        let default = HealthPolicy::default();
        let three = HealthPolicy { breaker: BreakerPolicy { consecutive_failures: 3, ..BreakerPolicy::default() }, ..policy() };
        let rate = HealthPolicy {
            breaker: BreakerPolicy {
                consecutive_failures: 100,
                error_rate: Some(ErrorRate { percent: 50, min_requests: 4, window: Duration::from_secs(60) }),
            },
            ..policy()
        };
        type Case<'a> = (&'a str, &'a HealthPolicy, Vec<(u64, Outcome)>, Vec<(BreakerState, u64)>);
        let cases: Vec<Case> = vec![
            ("one failure opens by default", &default, vec![(0, e503)], vec![(Open, 5)]),
            ("closed stays closed below the threshold", &three, vec![(0, e503), (S, e503)], vec![(Closed, 0), (Closed, 0)]),
            ("the third consecutive failure opens", &three, vec![(0, e503), (S, e503), (2 * S, e503)], vec![(Closed, 0), (Closed, 0), (Open, 5)]),
            ("a success resets the count", &three, vec![(0, e503), (S, e503), (2 * S, success(10)), (3 * S, e503)], vec![(Closed, 0), (Closed, 0), (Closed, 0), (Closed, 0)]),
            ("open becomes half-open when the cooldown ends", &default, vec![(0, e503), (5 * S, e503)], vec![(Open, 5), (Open, 10)]),
            ("a failed probe re-opens with a longer backoff", &default, vec![(0, e503), (6 * S, e503), (17 * S, e503)], vec![(Open, 5), (Open, 10), (Open, 20)]),
            ("a successful probe closes", &default, vec![(0, e503), (6 * S, success(10))], vec![(Open, 5), (Closed, 0)]),
            ("error rate below min requests does not open", &rate, vec![(0, e503), (S, e503), (2 * S, e503)], vec![(Closed, 0), (Closed, 0), (Closed, 0)]),
            ("error rate over the window opens", &rate, vec![(0, success(1)), (S, e503), (2 * S, success(1)), (3 * S, e503)], vec![(Closed, 0), (Closed, 0), (Closed, 0), (Open, 5)]),
            ("a new window forgets old failures", &rate, vec![(0, e503), (S, e503), (2 * S, e503), (70 * S, e503)], vec![(Closed, 0), (Closed, 0), (Closed, 0), (Closed, 0)]),
            ("401 opens until reset", &default, vec![(0, failed(Failure::Unauthorized, 401)), (999_999 * S, success(1))], vec![(Open, UNTIL_RESET / S), (Closed, 0)]),
        ];
        for (name, policy, steps, expected) in cases {
            assert_eq!(replay(policy, &steps), expected, "{name}");
        }
    }

    #[test]
    fn unauthorized_may_be_configured_to_end() {
        let p = HealthPolicy { cooldowns: CooldownPolicy { auth_failure: Some(Duration::from_secs(60)), ..CooldownPolicy::default() }, ..policy() };
        let h = Health::default().after(&failed(Failure::Unauthorized, 401), 0, &p);
        assert!(h.is_cooling(59 * S));
        assert_eq!(h.state(60 * S), BreakerState::HalfOpen);
    }

    #[test]
    fn rate_limit_follows_retry_after_capped() {
        let now = 1_000 * S;
        let with = |after| Outcome::Failed { failure: Failure::RateLimited, status: 429, retry_after_ms: after };
        assert_eq!(Health::default().after(&with(Some(7 * S)), now, &policy()).remaining_ms(now), 7 * S);
        assert_eq!(Health::default().after(&with(None), now, &policy()).remaining_ms(now), 30 * S);
        assert_eq!(Health::default().after(&with(Some(99_999 * S)), now, &policy()).remaining_ms(now), 3600 * S);
    }

    #[test]
    fn server_errors_back_off_exponentially_to_the_cap() {
        let mut h = Health::default();
        let mut seen = vec![];
        for i in 0..10 {
            let now = i * 1000 * S;
            h = h.after(&failed(Failure::ServerError, 503), now, &policy());
            seen.push(h.remaining_ms(now) / S);
        }
        assert_eq!(seen, vec![5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
    }

    #[test]
    fn retry_after_on_a_server_error_extends_the_backoff_never_shortens_it() {
        let now = 0;
        let with = |after| Outcome::Failed { failure: Failure::ServerError, status: 503, retry_after_ms: after };
        assert_eq!(Health::default().after(&with(Some(60 * S)), now, &policy()).remaining_ms(now), 60 * S);
        assert_eq!(Health::default().after(&with(Some(S)), now, &policy()).remaining_ms(now), 5 * S);
        assert_eq!(Health::default().after(&with(Some(99_999 * S)), now, &policy()).remaining_ms(now), 3600 * S);
    }

    #[test]
    fn a_short_cooldown_never_shortens_a_longer_one() {
        let now = 10 * S;
        let h = Health::default().after(&failed(Failure::RateLimited, 429), now, &policy());
        let h2 = h.after(&failed(Failure::ServerError, 503), now + S, &policy());
        assert_eq!(h2.cooldown_until_ms, h.cooldown_until_ms);
    }

    #[test]
    fn latency_decays_and_a_stale_average_is_replaced() {
        let p = HealthPolicy {
            latency: LatencyPolicy { slow_ttfb: Some(Duration::from_millis(300)), memory: Duration::from_secs(10) },
            ..policy()
        };
        let h = Health::default().after(&success(400), 0, &p);
        assert_eq!((h.ttfb_ms, h.total_ms), (400, 800));
        assert!(h.is_demoted(S) && h.is_demoted(10 * S - 1) && !h.is_demoted(10 * S), "slow for the memory");
        let h = h.after(&success(200), S, &p);
        assert_eq!(h.ttfb_ms, 350, "averaged while fresh");
        assert!(h.is_demoted(S));
        let h = h.after(&success(20), 20 * S, &p);
        assert_eq!(h.ttfb_ms, 20, "a stale average is replaced");
        assert!(!h.is_demoted(20 * S));
        assert!(h.is_clean(20 * S));
    }

    #[test]
    fn rate_limit_headers_demote_until_the_reset() {
        let h = Health::default().after(&Outcome::Success { ttfb_ms: 1, total_ms: 1, near_limit_until_ms: Some(9 * S) }, 0, &policy());
        assert!(h.is_demoted(8 * S) && !h.is_demoted(9 * S));
        assert!(!h.is_clean(0));
        assert_eq!(h.state(0), BreakerState::Closed);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = 1_700_000_000 * S;
        assert_eq!(parse_retry_after("12", now), Some(12 * S));
        assert_eq!(parse_retry_after("0.5", now), Some(500));
        assert_eq!(parse_retry_after("Tue, 14 Nov 2023 22:13:40 GMT", now), Some(20 * S));
        assert_eq!(parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now), Some(0));
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn records_round_trip_and_garbage_reads_as_healthy() {
        let h = Health {
            open: true,
            cooldown_until_ms: UNTIL_RESET,
            consecutive_failures: 2,
            last_failure: Some(Failure::RateLimited),
            last_status: 429,
            probe_until_ms: 3,
            ttfb_ms: 80,
            total_ms: 900,
            latency_at_ms: 4,
            slow_until_ms: 5,
            near_limit_until_ms: 6,
            window_start_ms: 7,
            window_requests: 8,
            window_failures: 9,
            budget_spent_until_ms: 11,
            config_tag: 12,
            updated_ms: 10,
        };
        assert_eq!(Health::decode(&h.encode()), Some(h.clone()));
        assert_eq!(Health::decode(b"v2 1 2 3"), None);
        assert_eq!(Health::decode(b"v1 1 2 - 4 5 6"), None, "a record of an older layout reads as healthy");
        let mut table = HealthTable::default();
        table.set("p", h.clone());
        table.set("p/gpt-4o", Health::default());
        let mut bytes = table.encode();
        bytes.extend_from_slice(b"\xff garbage\nq v2 x\n");
        let read = HealthTable::decode(&bytes);
        assert_eq!(read.get("p"), h);
        assert_eq!(read.get("q"), Health::default());
        assert_eq!(read.records().len(), 2);
    }

    #[test]
    fn model_records_are_bounded_and_the_oldest_goes_first() {
        let mut table = HealthTable::default();
        let failing = Health { open: true, cooldown_until_ms: 99, last_status: 429, ..Health::default() };
        table.set("openai", Health { updated_ms: 0, ..failing.clone() });
        for i in 0..10_000u64 {
            let model = format!("client-made-model-{i}-{}", "x".repeat(300));
            table.set(&model_key("openai", &model), Health { updated_ms: i + 1, ..failing.clone() });
        }
        let models: Vec<&String> = table.records().iter().map(|(k, _)| k).filter(|k| is_model_record(k)).collect();
        assert_eq!(models.len(), MAX_MODEL_RECORDS);
        assert!(models.iter().all(|k| k.len() <= "openai/".len() + MAX_MODEL_KEY_BYTES), "{:?}", models.first());
        assert!(models.iter().any(|k| k.starts_with("openai/client-made-model-9999-")), "the newest stays");
        assert!(!models.iter().any(|k| k.starts_with("openai/client-made-model-0-")), "the oldest went");
        assert_eq!(table.get("openai").last_status, 429, "a provider's record is never evicted");
        let bytes = table.encode();
        assert!(bytes.len() < (MAX_MODEL_RECORDS + 1) * 256, "{} bytes", bytes.len());
        assert_eq!(HealthTable::decode(&bytes), table);

        let huge: Vec<u8> = (0..100_000).flat_map(|i| format!("p{i} {}\n", String::from_utf8_lossy(&failing.encode())).into_bytes()).collect();
        assert_eq!(HealthTable::decode(&huge).records().len(), MAX_DECODED_RECORDS);
        assert_eq!(model_key("p", "ünï côdé"), "p/ünï_côdé");
        assert_eq!(model_key("p", &"é".repeat(200)).len(), "p/".len() + MAX_MODEL_KEY_BYTES);
    }

    #[test]
    fn an_empty_stored_value_still_exists_with_its_version() {
        assert_eq!(stored(None, Some(7)), Some((Vec::new(), 7)));
        assert_eq!(stored(Some(b"x".to_vec()), Some(3)), Some((b"x".to_vec(), 3)));
        assert_eq!(stored(None, None), None);
    }

    #[test]
    fn record_retries_through_cas_conflicts() {
        let store = MemoryStore::default();
        ensure_table(&store).unwrap();
        store.conflicts.set(3);
        let h = record(&store, "p", None, &failed(Failure::ServerError, 503), 0, &policy()).unwrap();
        assert_eq!(h.consecutive_failures, 1);
        assert_eq!(read(&store).0.get("p"), h);
    }

    #[test]
    fn record_gives_up_after_bounded_conflicts() {
        let store = MemoryStore::default();
        ensure_table(&store).unwrap();
        store.conflicts.set(CAS_ATTEMPTS);
        assert_eq!(record(&store, "p", None, &failed(Failure::ServerError, 503), 0, &policy()), Err(StoreError::CasMismatch));
        assert_eq!(read(&store).0.get("p"), Health::default());
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        // Two "workers" interleave: one reads, the other writes, then the first writes.
        let store = MemoryStore::default();
        ensure_table(&store).unwrap();
        let (_, stale) = store.get(TABLE_KEY).unwrap();
        record(&store, "p", None, &failed(Failure::ServerError, 503), 0, &policy()).unwrap();
        let lost = store.set(TABLE_KEY, &HealthTable::default().encode(), Some(stale));
        assert_eq!(lost, Err(StoreError::CasMismatch));
        record(&store, "q", None, &failed(Failure::RateLimited, 429), 0, &policy()).unwrap();
        record(&store, "p", None, &failed(Failure::ServerError, 503), 10 * S, &policy()).unwrap();
        let (table, _) = read(&store);
        assert_eq!(table.get("p").consecutive_failures, 2);
        assert_eq!(table.get("q").last_failure, Some(Failure::RateLimited));
    }

    #[test]
    fn failures_go_to_the_provider_or_the_model_success_clears_both() {
        let store = MemoryStore::default();
        ensure_table(&store).unwrap();
        record(&store, "p", Some("gpt-4o"), &failed(Failure::RateLimited, 429), 0, &policy()).unwrap();
        record(&store, "p", Some("gpt-4o"), &failed(Failure::ConnectFailure, 0), 0, &policy()).unwrap();
        let (table, _) = read(&store);
        assert_eq!(table.get("p/gpt-4o").last_failure, Some(Failure::RateLimited));
        assert_eq!(table.get("p").last_failure, Some(Failure::ConnectFailure));
        record(&store, "p", Some("gpt-4o"), &success(5), 60 * S, &policy()).unwrap();
        let (table, _) = read(&store);
        assert_eq!(table.get("p/gpt-4o").state(60 * S), BreakerState::Closed);
        assert_eq!(table.get("p").state(60 * S), BreakerState::Closed);
        assert_eq!(model_key("p", "a b\n"), "p/a_b_");
    }

    #[test]
    fn exactly_one_claim_wins_the_probe() {
        let store = MemoryStore::default();
        ensure_table(&store).unwrap();
        record(&store, "p", None, &failed(Failure::ServerError, 503), 0, &policy()).unwrap();
        let timeout = Duration::from_secs(30);
        assert!(!claim_probe(&store, "p", 4 * S, timeout).unwrap(), "still open");
        let claims: Vec<bool> = (0..32).map(|_| claim_probe(&store, "p", 5 * S, timeout).unwrap()).collect();
        assert_eq!(claims.iter().filter(|c| **c).count(), 1);
        assert!(claims[0]);
        assert!(claim_probe(&store, "p", 35 * S, timeout).unwrap(), "an abandoned probe can be claimed again");
        assert!(!claim_probe(&store, "healthy", 5 * S, timeout).unwrap());
        store.conflicts.set(2);
        assert!(claim_probe(&store, "p", 70 * S, timeout).unwrap(), "a lost race is retried");
    }

    #[test]
    fn reset_forgets_one_provider_and_its_models_or_all() {
        let store = MemoryStore::default();
        ensure_table(&store).unwrap();
        for key in ["p", "q"] {
            record(&store, key, Some("m"), &failed(Failure::RateLimited, 429), 0, &policy()).unwrap();
            record(&store, key, None, &failed(Failure::Unauthorized, 401), 0, &policy()).unwrap();
        }
        assert_eq!(reset(&store, Some("p")).unwrap(), 2);
        let (table, _) = read(&store);
        assert_eq!(table.get("p"), Health::default());
        assert!(table.get("q").open);
        assert_eq!(reset(&store, None).unwrap(), 2);
        assert!(read(&store).0.records().is_empty());
    }

    #[test]
    fn a_changed_config_starts_clean_and_a_budget_mark_sticks() {
        let store = MemoryStore::default();
        ensure_table(&store).unwrap();
        assert!(adopt_config(&store, "p", 7).unwrap());
        record(&store, "p", Some("m"), &failed(Failure::RateLimited, 429), 0, &policy()).unwrap();
        record(&store, "p", None, &failed(Failure::Unauthorized, 401), 0, &policy()).unwrap();
        budget_spent(&store, "p", 99).unwrap();
        assert!(!adopt_config(&store, "p", 7).unwrap(), "same config: nothing forgotten");
        let (table, _) = read(&store);
        assert!(table.get("p").open && table.get("p").config_tag == 7 && table.get("p").budget_spent_until_ms == 99);
        assert!(adopt_config(&store, "p", 8).unwrap());
        let (table, _) = read(&store);
        assert_eq!(table.get("p"), Health { config_tag: 8, ..Health::default() });
        assert_eq!(table.get("p/m"), Health::default());
    }

    #[test]
    fn a_reset_keeps_the_fingerprint_so_an_unchanged_config_keeps_what_came_after() {
        let store = MemoryStore::default();
        ensure_table(&store).unwrap();
        adopt_config(&store, "p", 7).unwrap();
        adopt_config(&store, "q", 9).unwrap();
        record(&store, "p", Some("m"), &failed(Failure::RateLimited, 429), 0, &policy()).unwrap();
        record(&store, "p", None, &failed(Failure::Unauthorized, 401), 0, &policy()).unwrap();
        assert_eq!(reset(&store, Some("p")).unwrap(), 2, "the provider's record and its model's");
        assert_eq!(read(&store).0.get("p"), Health { config_tag: 7, ..Health::default() });
        record(&store, "p", Some("m"), &failed(Failure::RateLimited, 429), S, &policy()).unwrap();
        assert!(!adopt_config(&store, "p", 7).unwrap(), "the same config after a reset is not a new one");
        assert!(read(&store).0.get("p/m").open, "what was learned after the reset is kept");
        assert_eq!(reset(&store, None).unwrap(), 3, "p, p/m and q");
        let (table, _) = read(&store);
        assert_eq!(table.records().len(), 2);
        assert_eq!((table.get("p").config_tag, table.get("q").config_tag), (7, 9));
    }

    #[test]
    fn an_outcome_under_a_config_the_provider_no_longer_has_is_not_recorded() {
        let store = MemoryStore::default();
        ensure_table(&store).unwrap();
        adopt_config(&store, "p", 8).unwrap();
        let old_key = record_under(&store, "p", 7, None, &failed(Failure::Unauthorized, 401), 0, &policy());
        assert_eq!(old_key, Ok(None), "the old key's 401 says nothing about the new key");
        let old_model = record_under(&store, "p", 7, Some("m"), &failed(Failure::RateLimited, 429), 0, &policy());
        assert_eq!(old_model, Ok(None));
        assert_eq!(read(&store).0.get("p"), Health { config_tag: 8, ..Health::default() });
        assert_eq!(read(&store).0.get("p/m"), Health::default());
        let new_key = record_under(&store, "p", 8, None, &failed(Failure::Unauthorized, 401), 0, &policy()).unwrap();
        assert!(new_key.is_some_and(|h| h.open && h.config_tag == 8));
        let unknown = record_under(&store, "q", 5, None, &failed(Failure::ServerError, 503), 0, &policy()).unwrap();
        assert!(unknown.is_some(), "a provider with no fingerprint yet takes any outcome");
    }

    #[test]
    fn a_clean_record_is_one_a_success_would_not_change() {
        let h = Health::default();
        assert!(h.is_clean(0));
        let failed_once = h.after(&failed(Failure::ServerError, 503), 0, &policy());
        assert!(!failed_once.is_clean(0));
        assert!(!failed_once.is_clean(10 * 60 * S), "failures still to reset after the cooldown");
        assert!(failed_once.after(&success(1), 1, &policy()).is_clean(1));
    }
}
