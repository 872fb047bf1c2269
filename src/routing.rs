//! The order in which one request tries the providers of its chain, from shared health.

use crate::config::Chain;
use crate::health::{self, BreakerState, Health, UNTIL_RESET};

#[derive(Debug, PartialEq, Eq)]
pub struct Plan<'c> {
    /// Providers to try, in order; never empty.
    pub order: Vec<&'c str>,
    /// Providers left out: open breaker, a probe already under way, or a spent budget.
    pub skipped: Vec<&'c str>,
    /// Every provider was out, and `order` holds the one whose cooldown ends first.
    pub last_resort: bool,
    /// Records in `order` that are half-open: the request must claim their single probe, and
    /// drop the provider from `order` if another request claimed it first.
    pub probes: Vec<(&'c str, String)>,
}

/// How a provider stands for one request, from its record and its record for the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    pub provider: Health,
    pub model: Health,
}

impl Standing {
    fn out_until(&self, now_ms: u64) -> Option<u64> {
        let open = [&self.provider, &self.model]
            .into_iter()
            .filter(|h| h.is_cooling(now_ms) || h.is_probing(now_ms))
            .map(|h| if h.is_cooling(now_ms) { h.cooldown_until_ms } else { h.probe_until_ms })
            .max();
        let spent_until = self.provider.budget_spent_until_ms;
        let spent = (now_ms < spent_until).then_some(spent_until);
        open.into_iter().chain(spent).max()
    }

    fn half_open(&self, now_ms: u64) -> Vec<bool> {
        [&self.provider, &self.model].iter().map(|h| h.state(now_ms) == BreakerState::HalfOpen).collect()
    }

    fn demoted(&self, now_ms: u64) -> bool {
        self.provider.is_demoted(now_ms) || self.model.is_demoted(now_ms)
    }
}

/// Providers whose breakers are closed, in chain order, with slow or nearly rate-limited ones
/// moved behind the rest; half-open ones get their single probe if this request claims it.
/// When every provider is out, a single attempt at the one that comes back first: a request
/// is not failed without trying, nor spent on every provider known to be down.
pub fn plan<'c>(chain: &'c Chain, model: &str, standing_of: impl Fn(&str) -> Standing, now_ms: u64) -> Plan<'c> {
    let mut ready = Vec::with_capacity(chain.providers.len());
    let mut demoted = Vec::new();
    let mut skipped = Vec::new();
    let mut probes = Vec::new();
    let mut first_back: Option<(&str, u64)> = None;
    for name in &chain.providers {
        let standing = standing_of(name);
        if let Some(until) = standing.out_until(now_ms) {
            skipped.push(name.as_str());
            if first_back.is_none_or(|(_, first)| until < first) {
                first_back = Some((name, until));
            }
            continue;
        }
        let half_open = standing.half_open(now_ms);
        if half_open.first() == Some(&true) {
            probes.push((name.as_str(), name.clone()));
        }
        if half_open.get(1) == Some(&true) {
            probes.push((name.as_str(), health::model_key(name, model)));
        }
        if standing.demoted(now_ms) {
            demoted.push(name.as_str());
        } else {
            ready.push(name.as_str());
        }
    }
    ready.extend(demoted);
    match (ready.is_empty(), first_back) {
        (true, Some((name, _))) => {
            skipped.retain(|s| *s != name);
            Plan { order: vec![name], skipped, last_resort: true, probes: Vec::new() }
        }
        _ => Plan { order: ready, skipped, last_resort: false, probes },
    }
}

/// Seconds until the first provider of the chain comes back, for `Retry-After` (at least 1).
pub fn retry_after_secs(chain: &Chain, standing_of: impl Fn(&str) -> Standing, now_ms: u64) -> u64 {
    let remaining = chain
        .providers
        .iter()
        .filter_map(|p| standing_of(p).out_until(now_ms))
        .filter(|&until| until != UNTIL_RESET)
        .map(|until| until.saturating_sub(now_ms))
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

    fn open_until(until: u64) -> Health {
        Health { open: true, cooldown_until_ms: until, consecutive_failures: 1, ..Health::default() }
    }

    fn standings(entries: &[(&str, Standing)]) -> impl Fn(&str) -> Standing {
        let map: HashMap<String, Standing> = entries.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        move |p: &str| map.get(p).cloned().unwrap_or_default()
    }

    fn provider(health: Health) -> Standing {
        Standing { provider: health, ..Standing::default() }
    }

    fn plan_of(names: &[&str], entries: &[(&str, Standing)], now: u64) -> (Vec<String>, Vec<String>, bool, Vec<String>) {
        let c = chain(names);
        let p = plan(&c, "m", standings(entries), now);
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        (strings(&p.order), strings(&p.skipped), p.last_resort, p.probes.iter().map(|(_, k)| k.clone()).collect())
    }

    #[test]
    fn table_of_plans() {
        let now = 100;
        let slow = Health { slow_until_ms: 500, ..Health::default() };
        let near_limit = Health { near_limit_until_ms: 500, ..Health::default() };
        let probing = Health { probe_until_ms: 400, ..open_until(50) };
        type Expected<'a> = (Vec<&'a str>, Vec<&'a str>, bool, Vec<&'a str>);
        type Case<'a> = (&'a str, Vec<(&'a str, Standing)>, Expected<'a>);
        let cases: Vec<Case> = vec![
            ("healthy chain keeps its order", vec![], (vec!["a", "b", "c"], vec![], false, vec![])),
            ("open breakers are left out", vec![("a", provider(open_until(200))), ("c", provider(open_until(150)))], (vec!["b"], vec!["a", "c"], false, vec![])),
            ("an open model at a provider leaves it out too", vec![("a", Standing { model: open_until(200), ..Standing::default() })], (vec!["b", "c"], vec!["a"], false, vec![])),
            ("half-open asks for the probe", vec![("a", provider(open_until(100)))], (vec!["a", "b", "c"], vec![], false, vec!["a"])),
            ("half-open model asks for the model's probe", vec![("b", Standing { model: open_until(90), ..Standing::default() })], (vec!["a", "b", "c"], vec![], false, vec!["b/m"])),
            ("a probe under way elsewhere: skip", vec![("a", provider(probing))], (vec!["b", "c"], vec!["a"], false, vec![])),
            ("slow and nearly rate-limited go behind", vec![("a", provider(slow.clone())), ("b", provider(near_limit))], (vec!["c", "a", "b"], vec![], false, vec![])),
            ("a spent budget is out", vec![("b", provider(Health { budget_spent_until_ms: 1000, ..Health::default() }))], (vec!["a", "c"], vec!["b"], false, vec![])),
            ("all out: only the first back", vec![("a", provider(open_until(900))), ("b", provider(open_until(300))), ("c", provider(Health { budget_spent_until_ms: 500, ..Health::default() }))], (vec!["b"], vec!["a", "c"], true, vec![])),
            ("all slow: order kept", vec![("a", provider(slow.clone())), ("b", provider(slow.clone())), ("c", provider(slow))], (vec!["a", "b", "c"], vec![], false, vec![])),
        ];
        for (name, entries, (order, skipped, last_resort, probes)) in cases {
            let got = plan_of(&["a", "b", "c"], &entries, now);
            let strings = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
            assert_eq!(got, (strings(order), strings(skipped), last_resort, strings(probes)), "{name}");
        }
    }

    #[test]
    fn retry_after_is_the_shortest_remaining_out_time_rounded_up() {
        let c = chain(&["a", "b", "c"]);
        let entries = [("a", provider(open_until(9_100))), ("b", provider(open_until(4_001)))];
        assert_eq!(retry_after_secs(&c, standings(&entries), 100), 4);
        assert_eq!(retry_after_secs(&c, standings(&[]), 100), 1);
        let until_reset = [("a", provider(open_until(UNTIL_RESET))), ("b", provider(open_until(7_000)))];
        assert_eq!(retry_after_secs(&c, standings(&until_reset), 0), 7);
    }
}
