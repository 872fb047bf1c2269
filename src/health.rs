//! Provider health shared by every Envoy worker: what the last attempts at a provider taught,
//! and until when to leave it out. Records live in a key-value store with compare-and-swap.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CooldownPolicy {
    /// 401/403: a bad key does not heal by itself, so this is long; it still ends.
    pub auth_failure: Duration,
    /// 429 without a usable `Retry-After`. (A `Retry-After` on a 5xx extends its backoff.)
    pub rate_limited: Duration,
    /// The longest `Retry-After` believed.
    pub max_retry_after: Duration,
    /// 5xx, connect failure, reset or timeout: `failure_base` doubled per consecutive failure.
    pub failure_base: Duration,
    pub failure_max: Duration,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        CooldownPolicy {
            auth_failure: Duration::from_secs(3600),
            rate_limited: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(3600),
            failure_base: Duration::from_secs(5),
            failure_max: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Unauthorized,
    RateLimited,
    ServerError,
    ConnectFailure,
    NoResponse,
}

impl Failure {
    pub const ALL: [Failure; 5] =
        [Failure::Unauthorized, Failure::RateLimited, Failure::ServerError, Failure::ConnectFailure, Failure::NoResponse];

    pub fn name(self) -> &'static str {
        match self {
            Failure::Unauthorized => "unauthorized",
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
        if downstream.gone() {
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
}

impl Downstream<'_> {
    /// Envoy's DC flag: the downstream connection was terminated.
    const DOWNSTREAM_CONNECTION_TERMINATION: u64 = 0x4000;

    pub fn gone(&self) -> bool {
        self.response_flags & Self::DOWNSTREAM_CONNECTION_TERMINATION != 0
            || self.code_details.starts_with("downstream_remote_disconnect")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success { latency_ms: u64 },
    Failed { failure: Failure, status: u16, retry_after_ms: Option<u64> },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub cooldown_until_ms: u64,
    pub consecutive_failures: u32,
    pub last_failure: Option<Failure>,
    pub last_status: u16,
    pub latency_ms: u64,
    pub updated_ms: u64,
}

impl Health {
    pub fn is_cooling(&self, now_ms: u64) -> bool {
        now_ms < self.cooldown_until_ms
    }

    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.cooldown_until_ms.saturating_sub(now_ms)
    }

    pub fn after(&self, outcome: &Outcome, now_ms: u64, policy: &CooldownPolicy) -> Health {
        match *outcome {
            Outcome::Success { latency_ms } => Health {
                cooldown_until_ms: 0,
                consecutive_failures: 0,
                last_failure: None,
                last_status: 200,
                latency_ms: if self.latency_ms == 0 { latency_ms } else { (3 * self.latency_ms + latency_ms) / 4 },
                updated_ms: now_ms,
            },
            Outcome::Failed { failure, status, retry_after_ms } => {
                let failures = self.consecutive_failures.saturating_add(1);
                let cooldown = cooldown_ms(failure, failures, retry_after_ms, policy);
                Health {
                    cooldown_until_ms: self.cooldown_until_ms.max(now_ms.saturating_add(cooldown)),
                    consecutive_failures: failures,
                    last_failure: Some(failure),
                    last_status: status,
                    latency_ms: self.latency_ms,
                    updated_ms: now_ms,
                }
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        format!(
            "v1 {} {} {} {} {} {}",
            self.cooldown_until_ms,
            self.consecutive_failures,
            self.last_failure.map_or("-", Failure::name),
            self.last_status,
            self.latency_ms,
            self.updated_ms
        )
        .into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Health> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let health = Health {
            cooldown_until_ms: parts.next()?.parse().ok()?,
            consecutive_failures: parts.next()?.parse().ok()?,
            last_failure: match parts.next()? {
                "-" => None,
                name => Some(Failure::from_name(name)?),
            },
            last_status: parts.next()?.parse().ok()?,
            latency_ms: parts.next()?.parse().ok()?,
            updated_ms: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(health)
    }
}

fn cooldown_ms(failure: Failure, failures: u32, retry_after_ms: Option<u64>, policy: &CooldownPolicy) -> u64 {
    let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
    match failure {
        Failure::Unauthorized => ms(policy.auth_failure),
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
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).min(u64::MAX as f64) as u64);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64;
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

/// Every provider's record under one key, so a request reads all the health it needs in a
/// single host call.
pub const TABLE_KEY: &str = "llm-failover/v1/health";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthTable {
    records: Vec<(String, Health)>,
}

impl HealthTable {
    /// A provider never recorded is healthy.
    pub fn get(&self, provider: &str) -> Health {
        self.records.iter().find(|(name, _)| name == provider).map(|(_, h)| h.clone()).unwrap_or_default()
    }

    fn set(&mut self, provider: &str, health: Health) {
        match self.records.iter_mut().find(|(name, _)| name == provider) {
            Some((_, record)) => *record = health,
            None => self.records.push((provider.to_string(), health)),
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
                let text = std::str::from_utf8(line).ok()?;
                let (name, record) = text.split_once(' ')?;
                Some((name.to_string(), Health::decode(record.as_bytes())?))
            })
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

/// Applies `outcome` to the provider's record in one bounded compare-and-swap loop, so updates
/// from concurrent workers are never lost.
pub fn record(
    store: &dyn SharedStore,
    provider: &str,
    outcome: &Outcome,
    now_ms: u64,
    policy: &CooldownPolicy,
) -> Result<Health, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let (mut table, version) = match store.get(TABLE_KEY) {
            Some((bytes, version)) => (HealthTable::decode(&bytes), Some(version)),
            None => (HealthTable::default(), None),
        };
        let next = table.get(provider).after(outcome, now_ms, policy);
        table.set(provider, next.clone());
        match store.set(TABLE_KEY, &table.encode(), version) {
            Ok(()) => return Ok(next),
            Err(StoreError::CasMismatch) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(StoreError::CasMismatch)
}

impl Health {
    /// Nothing a success would change but the latency: writing it can wait.
    pub fn is_clean(&self, now_ms: u64) -> bool {
        self.consecutive_failures == 0 && self.last_failure.is_none() && !self.is_cooling(now_ms)
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

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
    fn policy() -> CooldownPolicy {
        CooldownPolicy::default()
    }
    fn failed(failure: Failure, status: u16) -> Outcome {
        Outcome::Failed { failure, status, retry_after_ms: None }
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
        let flag = Downstream { response_flags: 0x4000, code_details: "" };
        let details = Downstream { response_flags: 0, code_details: "downstream_remote_disconnect" };
        assert_eq!(Failure::from_unanswered("", &flag), None);
        assert_eq!(Failure::from_unanswered("", &details), None);
        let other_flags = Downstream { response_flags: 0x20 | 0x2, code_details: "upstream_per_try_timeout" };
        assert_eq!(Failure::from_unanswered("", &other_flags), Some(Failure::NoResponse));
    }

    #[test]
    fn unauthorized_cools_long_but_not_forever() {
        let now = 1_000 * S;
        let h = Health::default().after(&failed(Failure::Unauthorized, 401), now, &policy());
        assert!(h.is_cooling(now + 3599 * S));
        assert!(!h.is_cooling(now + 3600 * S));
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
    fn success_clears_cooldown_and_failures() {
        let now = 10 * S;
        let h = Health::default().after(&failed(Failure::ConnectFailure, 0), now, &policy());
        assert!(h.is_cooling(now));
        let h = h.after(&Outcome::Success { latency_ms: 120 }, now + 1, &policy());
        assert!(!h.is_cooling(now + 1));
        assert_eq!(h.consecutive_failures, 0);
        assert_eq!(h.latency_ms, 120);
        let h = h.after(&Outcome::Success { latency_ms: 40 }, now + 2, &policy());
        assert_eq!(h.latency_ms, 100);
    }

    #[test]
    fn a_short_cooldown_never_shortens_a_longer_one() {
        let now = 10 * S;
        let h = Health::default().after(&failed(Failure::Unauthorized, 401), now, &policy());
        let h2 = h.after(&failed(Failure::ServerError, 503), now + S, &policy());
        assert_eq!(h2.cooldown_until_ms, h.cooldown_until_ms);
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
            cooldown_until_ms: 5,
            consecutive_failures: 2,
            last_failure: Some(Failure::RateLimited),
            last_status: 429,
            latency_ms: 80,
            updated_ms: 4,
        };
        assert_eq!(Health::decode(&h.encode()), Some(h));
        assert_eq!(Health::decode(b"v1 1 2 3"), None);
        assert_eq!(Health::decode(b"v1 1 2 bogus 4 5 6"), None);
        assert_eq!(Health::decode(b"v0 1 2 - 4 5 6"), None);
        let table = HealthTable::decode(b"p v1 1 2 - 4 5 6\n\xff garbage\nq v1 x\nr v1 9 0 - 200 7 8\n");
        assert_eq!(table.get("p").consecutive_failures, 2);
        assert_eq!(table.get("q"), Health::default());
        assert_eq!(table.get("r").cooldown_until_ms, 9);
        assert_eq!(HealthTable::decode(&table.encode()), table);
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
        let h = record(&store, "p", &failed(Failure::ServerError, 503), 0, &policy()).unwrap();
        assert_eq!(h.consecutive_failures, 1);
        assert_eq!(read(&store).0.get("p"), h);
    }

    #[test]
    fn record_gives_up_after_bounded_conflicts() {
        let store = MemoryStore::default();
        ensure_table(&store).unwrap();
        store.conflicts.set(CAS_ATTEMPTS);
        assert_eq!(record(&store, "p", &failed(Failure::ServerError, 503), 0, &policy()), Err(StoreError::CasMismatch));
        assert_eq!(read(&store).0.get("p"), Health::default());
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        // Two "workers" interleave: one reads, the other writes, then the first writes.
        let store = MemoryStore::default();
        ensure_table(&store).unwrap();
        let (_, stale) = store.get(TABLE_KEY).unwrap();
        record(&store, "p", &failed(Failure::ServerError, 503), 0, &policy()).unwrap();
        let lost = store.set(TABLE_KEY, &HealthTable::default().encode(), Some(stale));
        assert_eq!(lost, Err(StoreError::CasMismatch));
        record(&store, "q", &failed(Failure::RateLimited, 429), 0, &policy()).unwrap();
        record(&store, "p", &failed(Failure::ServerError, 503), 0, &policy()).unwrap();
        let (table, _) = read(&store);
        assert_eq!(table.get("p").consecutive_failures, 2);
        assert_eq!(table.get("q").last_failure, Some(Failure::RateLimited));
    }

    #[test]
    fn a_clean_record_is_one_a_success_would_not_change() {
        let h = Health::default();
        assert!(h.is_clean(0));
        let failed_once = h.after(&failed(Failure::ServerError, 503), 0, &policy());
        assert!(!failed_once.is_clean(0));
        assert!(!failed_once.is_clean(10 * 60 * S), "failures still to reset after the cooldown");
        assert!(failed_once.after(&Outcome::Success { latency_ms: 1 }, 1, &policy()).is_clean(1));
    }
}
