//! Active probes: a cheap request (`GET /v1/models` or the provider's equivalent) to each
//! provider whose breaker is open, so that a recovered provider comes back without a paid chat
//! request finding out. Only the holder of a lease in shared data probes.

use std::time::Duration;

use crate::health::{compare_and_swap, duration_ms, BreakerState, HealthTable, SharedStore, StoreError};

pub const LEASE_KEY: &str = "llm-failover/v1/probe-lease";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub provider: String,
    /// The provider's Envoy cluster: the probe passes its attempt role, which adds the key.
    pub cluster: String,
    pub path: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProberConfig {
    pub interval: Duration,
    /// How long a holder keeps the lease without renewing it; another prober takes over after.
    pub lease: Duration,
    pub probes: Vec<Probe>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    holder: u64,
    until_ms: u64,
}

impl Lease {
    fn encode(&self) -> Vec<u8> {
        format!("v1 {} {}", self.holder, self.until_ms).into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Lease> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let lease = Lease { holder: parts.next()?.parse().ok()?, until_ms: parts.next()?.parse().ok()? };
        parts.next().is_none().then_some(lease)
    }
}

/// Takes or renews the lease for `holder`; `false` while another holder's lease runs.
pub fn hold_lease(store: &dyn SharedStore, holder: u64, now_ms: u64, lease: Duration) -> Result<bool, StoreError> {
    let until_ms = now_ms.saturating_add(duration_ms(lease));
    let held = compare_and_swap(store, LEASE_KEY, |bytes| {
        if bytes.and_then(Lease::decode).is_some_and(|l| l.holder != holder && now_ms < l.until_ms) {
            return None;
        }
        Some((Lease { holder, until_ms }.encode(), ()))
    })?;
    Ok(held.is_some())
}

/// The probes due now: providers whose own breaker is open or half-open. (A model's breaker
/// is left to traffic: listing models says nothing about one model's rate limit.)
pub fn due<'p>(config: &'p ProberConfig, table: &HealthTable, now_ms: u64) -> Vec<&'p Probe> {
    config.probes.iter().filter(|p| table.get(&p.provider).state(now_ms) != BreakerState::Closed).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::tests::MemoryStore;
    use crate::health::{self, Failure, HealthPolicy, Outcome};

    const LEASE: Duration = Duration::from_secs(30);

    #[test]
    fn one_holder_at_a_time_until_its_lease_lapses() {
        let store = MemoryStore::default();
        assert!(hold_lease(&store, 1, 0, LEASE).unwrap());
        assert!(!hold_lease(&store, 2, 1_000, LEASE).unwrap());
        assert!(hold_lease(&store, 1, 10_000, LEASE).unwrap(), "the holder renews");
        assert!(!hold_lease(&store, 2, 39_999, LEASE).unwrap());
        assert!(hold_lease(&store, 2, 40_000, LEASE).unwrap(), "a lapsed lease is taken over");
        assert!(!hold_lease(&store, 1, 40_001, LEASE).unwrap());
        store.conflicts.set(3);
        assert!(hold_lease(&store, 2, 41_000, LEASE).unwrap(), "lost races are retried");
        store.set(LEASE_KEY, b"garbage", None).unwrap();
        assert!(hold_lease(&store, 3, 41_000, LEASE).unwrap(), "an unreadable lease is nobody's");
    }

    #[test]
    fn only_providers_with_an_open_breaker_are_probed() {
        let store = MemoryStore::default();
        health::ensure_table(&store).unwrap();
        let policy = HealthPolicy::default();
        let failed = |failure, status| Outcome::Failed { failure, status, retry_after_ms: None };
        health::record(&store, "down", None, &failed(Failure::ConnectFailure, 0), 0, &policy).unwrap();
        health::record(&store, "limited", Some("m"), &failed(Failure::RateLimited, 429), 0, &policy).unwrap();
        let probe = |name: &str| Probe { provider: name.into(), cluster: format!("provider_{name}"), path: "/v1/models".into(), timeout: LEASE };
        let config = ProberConfig { interval: LEASE, lease: LEASE, probes: vec![probe("down"), probe("limited"), probe("fine")] };
        let table = HealthTable::decode(&store.get(health::TABLE_KEY).unwrap().0);
        assert_eq!(due_names(&config, &table, 1_000), vec!["down"]);
        assert_eq!(due_names(&config, &table, 10 * 60 * 1000), vec!["down"], "half-open is probed too");
    }

    fn due_names<'a>(config: &'a ProberConfig, table: &HealthTable, now: u64) -> Vec<&'a str> {
        due(config, table, now).iter().map(|p| p.provider.as_str()).collect()
    }
}
