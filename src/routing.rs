//! The order in which one request tries the providers of its chain, from shared health.

use crate::config::Chain;
use crate::health::Health;

#[derive(Debug, PartialEq, Eq)]
pub struct Plan<'c> {
    /// Providers to try, in order; never empty.
    pub order: Vec<&'c str>,
    /// Providers left out because they are cooling down.
    pub skipped: Vec<&'c str>,
    /// Every provider was cooling down, and `order` holds the one whose cooldown ends first.
    pub last_resort: bool,
}

/// Healthy providers in chain order. When all are cooling down, a single attempt at the one
/// that recovers first: a request is not failed without trying, nor spent on every provider
/// known to be down.
pub fn plan<'c>(chain: &'c Chain, health_of: impl Fn(&str) -> Health, now_ms: u64) -> Plan<'c> {
    let mut order = Vec::with_capacity(chain.providers.len());
    let mut skipped = Vec::new();
    let mut first_back: Option<(&str, u64)> = None;
    for name in &chain.providers {
        let health = health_of(name);
        if health.is_cooling(now_ms) {
            skipped.push(name.as_str());
            if first_back.is_none_or(|(_, until)| health.cooldown_until_ms < until) {
                first_back = Some((name, health.cooldown_until_ms));
            }
        } else {
            order.push(name.as_str());
        }
    }
    match (order.is_empty(), first_back) {
        (true, Some((name, _))) => {
            skipped.retain(|s| *s != name);
            Plan { order: vec![name], skipped, last_resort: true }
        }
        _ => Plan { order, skipped, last_resort: false },
    }
}

/// Seconds until the first provider of the chain comes back, for `Retry-After` (at least 1).
pub fn retry_after_secs(chain: &Chain, health_of: impl Fn(&str) -> Health, now_ms: u64) -> u64 {
    let remaining = chain
        .providers
        .iter()
        .map(|p| health_of(p).remaining_ms(now_ms))
        .filter(|&ms| ms > 0)
        .min()
        .unwrap_or(0);
    remaining.div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn chain(names: &[&str]) -> Chain {
        Chain { name: "c".into(), providers: names.iter().map(|s| s.to_string()).collect() }
    }

    fn cooling(until: &[(&str, u64)]) -> impl Fn(&str) -> Health {
        let map: HashMap<String, u64> = until.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        move |p: &str| Health { cooldown_until_ms: *map.get(p).unwrap_or(&0), ..Health::default() }
    }

    #[test]
    fn healthy_chain_keeps_configured_order() {
        let c = chain(&["a", "b", "c"]);
        let p = plan(&c, cooling(&[]), 100);
        assert_eq!(p, Plan { order: vec!["a", "b", "c"], skipped: vec![], last_resort: false });
    }

    #[test]
    fn cooling_providers_are_left_out() {
        let c = chain(&["a", "b", "c"]);
        let p = plan(&c, cooling(&[("a", 200), ("c", 150)]), 100);
        assert_eq!(p, Plan { order: vec!["b"], skipped: vec!["a", "c"], last_resort: false });
    }

    #[test]
    fn an_expired_cooldown_is_not_cooling() {
        let c = chain(&["a", "b"]);
        assert_eq!(plan(&c, cooling(&[("a", 100)]), 100).order, vec!["a", "b"]);
    }

    #[test]
    fn all_cooling_tries_only_the_first_to_recover() {
        let c = chain(&["a", "b", "c"]);
        let p = plan(&c, cooling(&[("a", 900), ("b", 300), ("c", 500)]), 100);
        assert_eq!(p, Plan { order: vec!["b"], skipped: vec!["a", "c"], last_resort: true });
    }

    #[test]
    fn retry_after_is_the_shortest_remaining_cooldown_rounded_up() {
        let c = chain(&["a", "b", "c"]);
        assert_eq!(retry_after_secs(&c, cooling(&[("a", 9_100), ("b", 4_001)]), 100), 4);
        assert_eq!(retry_after_secs(&c, cooling(&[]), 100), 1);
    }
}
