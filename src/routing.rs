//! The order in which one request tries the providers of its chain, from shared health.

use crate::config::{Chain, RouterConfig};
use crate::policy;
use crate::health::{self, BreakerState, Health, HealthTable, UNTIL_RESET};

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
    /// A provider's standing for a request for `model`, from the health table.
    pub fn of(table: &HealthTable, provider: &str, model: &str) -> Standing {
        Standing { provider: table.get(provider), model: table.get(&health::model_key(provider, model)) }
    }

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

    pub fn demoted(&self, now_ms: u64) -> bool {
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

/// Seconds until the first provider of the chain comes back, for `Retry-After` (at least 1);
/// `None` when every provider is held out until an operator resets it: waiting will not help.
pub fn retry_after_secs(chain: &Chain, standing_of: impl Fn(&str) -> Standing, now_ms: u64) -> Option<u64> {
    let out: Vec<Option<u64>> = chain.providers.iter().map(|p| standing_of(p).out_until(now_ms)).collect();
    if !out.is_empty() && out.iter().all(|until| *until == Some(UNTIL_RESET)) {
        return None;
    }
    let remaining = out.into_iter().flatten().filter(|&until| until != UNTIL_RESET).map(|until| until.saturating_sub(now_ms)).min();
    Some(remaining.unwrap_or(0).div_ceil(1000).max(1))
}

/// What chose a request's profile, in the order they are asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileSource {
    /// The route's metadata (`llm_failover.profile`): one filter config serves many routes.
    Route,
    /// A trusted caller's header.
    Header,
    /// The request's `model` is an alias of the profile (or chain).
    Model,
    Classifier,
    Default,
}

impl ProfileSource {
    pub fn name(self) -> &'static str {
        match self {
            ProfileSource::Route => "route",
            ProfileSource::Header => "header",
            ProfileSource::Model => "model",
            ProfileSource::Classifier => "classifier",
            ProfileSource::Default => "default",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    Chosen { profile: usize, source: ProfileSource },
    /// A route or a header named a profile the config does not have.
    Unknown { name: String, source: ProfileSource },
    /// Nothing chose one and there is no default.
    None,
}

/// The request's profile: the route's, a trusted header's, the model alias's, the
/// classifier's, else the default.
pub fn select_profile(config: &RouterConfig, route: Option<&str>, header: Option<&str>, model: &str, body: &[u8]) -> Selection {
    for (name, source) in [(route, ProfileSource::Route), (header, ProfileSource::Header)] {
        if let Some(name) = name {
            return match config.profile_named(name) {
                Some(profile) => Selection::Chosen { profile, source },
                None => Selection::Unknown { name: name.to_string(), source },
            };
        }
    }
    if let Some(profile) = config.profile_for_model(model) {
        return Selection::Chosen { profile, source: ProfileSource::Model };
    }
    if let Some(profile) = config.classifier.as_ref().and_then(|c| config.profile_named(c.classify_body(body))) {
        return Selection::Chosen { profile, source: ProfileSource::Classifier };
    }
    match config.default_profile() {
        Some(profile) => Selection::Chosen { profile, source: ProfileSource::Default },
        None => Selection::None,
    }
}

/// Providers of the chain whose context window cannot hold the request (`needed` tokens), and,
/// after `exceeded_at` said the context was too long, those not larger than it: left out
/// before any attempt, in chain order.
pub fn too_small<'c>(chain: &'c Chain, config: &RouterConfig, needed: u64, exceeded_at: Option<&str>) -> Vec<&'c str> {
    let smaller = exceeded_at.map(|at| not_larger_than(chain, config, at)).unwrap_or_default();
    chain
        .providers
        .iter()
        .map(String::as_str)
        .filter(|p| smaller.contains(p) || config.info(p).and_then(|i| i.context_window).is_some_and(|window| window < needed))
        .collect()
}

/// After `exceeded_at` said the context was too long: the chain's providers whose configured
/// window is not larger than its (those without a window included, and itself).
pub fn not_larger_than<'c>(chain: &'c Chain, config: &RouterConfig, exceeded_at: &str) -> Vec<&'c str> {
    let window = |p: &str| config.info(p).and_then(|i| i.context_window);
    let limit = window(exceeded_at);
    chain
        .providers
        .iter()
        .filter(|p| p.as_str() == exceeded_at || limit.is_none() || window(p).is_none_or(|w| Some(w) <= limit))
        .map(String::as_str)
        .collect()
}

/// `path` without the query parameter `name`, and its value; `None` when it has none.
pub fn take_query_param(path: &str, name: &str) -> Option<(String, String)> {
    let (base, query) = path.split_once('?')?;
    let mut value = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((key, v)) if key == name => {
                value = Some(v.to_string());
                false
            }
            _ => true,
        })
        .collect();
    let value = value?;
    let plain = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    Some((plain, value))
}

/// Reorders the planned providers by the profile's ordering policy; health stays on top
/// (demoted providers stay behind the others).
pub fn apply_ordering(
    plan: &mut Plan,
    ordering: policy::Ordering,
    config: &RouterConfig,
    standing_of: impl Fn(&str) -> Standing,
    expected: policy::ExpectedTokens,
    random: u64,
    now_ms: u64,
) {
    if ordering == policy::Ordering::Configured || plan.last_resort {
        return;
    }
    let candidates: Vec<policy::Candidate> = plan
        .order
        .iter()
        .map(|name| {
            let standing = standing_of(name);
            let info = config.info(name);
            policy::Candidate {
                name,
                latency_ms: (standing.provider.ttfb_ms > 0).then_some(standing.provider.ttfb_ms),
                price: info.and_then(|i| i.price),
                weight: info.map_or(1, |i| i.weight),
                cooling: false,
                slow: standing.demoted(now_ms),
            }
        })
        .collect();
    let order = policy::order(&candidates, ordering, expected, random);
    plan.order = order.iter().filter_map(|&i| plan.order.get(i).copied()).collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn chain(names: &[&str]) -> Chain {
        Chain { name: "c".into(), providers: names.iter().map(|s| s.to_string()).collect(), profile: Some(0) }
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
        assert_eq!(retry_after_secs(&c, standings(&entries), 100), Some(4));
        assert_eq!(retry_after_secs(&c, standings(&[]), 100), Some(1));
        let until_reset = [("a", provider(open_until(UNTIL_RESET))), ("b", provider(open_until(7_000)))];
        assert_eq!(retry_after_secs(&c, standings(&until_reset), 0), Some(7));
        let all_reset = [("a", provider(open_until(UNTIL_RESET))), ("b", provider(open_until(UNTIL_RESET))), ("c", provider(open_until(UNTIL_RESET)))];
        assert_eq!(retry_after_secs(&c, standings(&all_reset), 0), None, "only an operator brings them back");
    }

    fn profiles_config() -> RouterConfig {
        let json = r#"{"role":"router","providers":[
              {"name":"qwen","format":"openai","host":"q","contextWindow":32768},
              {"name":"r1","format":"openai","host":"r","contextWindow":65536},
              {"name":"llama","format":"openai","host":"l"},
              {"name":"big","format":"openai","host":"b","contextWindow":200000}],
            "chains":{"general":["llama","qwen"]},
            "profiles":{
              "coder":{"normal":["qwen","r1"],"fast":["qwen"],"high":["big","qwen"]},
              "reasoner":{"normal":["r1","qwen"],"ordering":"lowest-latency"}},
            "models":{"my-coder":"coder"},
            "defaultChain":"general",
            "classifier":{"default":"general","rules":[
              {"profile":"coder","keywords":["코드","function","bug"]},
              {"profile":"reasoner","keywords":["증명","prove","why"]}]}}"#;
        match crate::config::parse(json.as_bytes(), &NoEnv).unwrap() {
            crate::config::Config::Router(d) => d.router,
            _ => unreachable!(),
        }
    }

    struct NoEnv;
    impl crate::config::Environment for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn body(text: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"model":"gpt-4o","messages":[{"role":"user","content":text}]})).unwrap()
    }

    #[test]
    fn the_profile_comes_from_route_header_model_classifier_then_default() {
        let config = profiles_config();
        let name = |s: Selection| match s {
            Selection::Chosen { profile, source } => format!("{}:{}", config.profiles[profile].name, source.name()),
            Selection::Unknown { name, source } => format!("unknown {name}:{}", source.name()),
            Selection::None => "none".into(),
        };
        let cases = [
            (Some("reasoner"), Some("coder"), "my-coder", "fix this bug", "reasoner:route"),
            (None, Some("reasoner"), "my-coder", "fix this bug", "reasoner:header"),
            (None, None, "my-coder", "why is the sky blue", "coder:model"),
            (None, None, "gpt-4o", "이 함수의 버그를 고쳐줘: function f()", "coder:classifier"),
            (None, None, "gpt-4o", "이 정리를 증명해줘", "reasoner:classifier"),
            (None, None, "gpt-4o", "hello there", "general:classifier"),
            (Some("ghost"), None, "gpt-4o", "hi", "unknown ghost:route"),
            (None, Some("ghost"), "gpt-4o", "hi", "unknown ghost:header"),
        ];
        for (route, header, model, text, expected) in cases {
            assert_eq!(name(select_profile(&config, route, header, model, &body(text))), expected, "{text}");
        }
    }

    #[test]
    fn tiers_pick_their_chain_and_fall_back_to_normal() {
        let config = profiles_config();
        let coder = config.profile_named("coder").unwrap();
        let chain = |tier| config.chain(coder, tier).unwrap().1.providers.clone();
        assert_eq!(chain(policy::Tier::Normal), vec!["qwen", "r1"]);
        assert_eq!(chain(policy::Tier::Fast), vec!["qwen"]);
        assert_eq!(chain(policy::Tier::High), vec!["big", "qwen"]);
        let reasoner = config.profile_named("reasoner").unwrap();
        assert_eq!(config.chain(reasoner, policy::Tier::High).unwrap().1.providers, vec!["r1", "qwen"]);
    }

    #[test]
    fn providers_too_small_for_the_request_are_left_out() {
        let config = profiles_config();
        let (_, chain) = config.chain(config.profile_named("coder").unwrap(), policy::Tier::High).unwrap();
        assert_eq!(too_small(chain, &config, 40_000, None), vec!["qwen"]);
        assert!(too_small(chain, &config, 1_000, None).is_empty());
        let (_, general) = config.chain(config.profile_named("general").unwrap(), policy::Tier::Normal).unwrap();
        assert_eq!(too_small(general, &config, 40_000, None), vec!["qwen"], "a provider without a window is never too small");
    }

    #[test]
    fn after_a_context_error_only_larger_windows_remain() {
        let config = profiles_config();
        let (_, high) = config.chain(config.profile_named("coder").unwrap(), policy::Tier::High).unwrap();
        assert_eq!(not_larger_than(high, &config, "qwen"), vec!["qwen"]);
        assert_eq!(not_larger_than(high, &config, "big"), vec!["big", "qwen"]);
        // Too small for the request, and not larger than the one that refused: each once, in
        // chain order, so a larger provider left over is seen.
        let c = chain(&["r1", "qwen", "big"]);
        assert_eq!(too_small(&c, &config, 40_000, Some("r1")), vec!["r1", "qwen"]);
        assert_eq!(too_small(&c, &config, 40_000, Some("big")), vec!["r1", "qwen", "big"]);
        let (_, general) = config.chain(config.profile_named("general").unwrap(), policy::Tier::Normal).unwrap();
        assert_eq!(not_larger_than(general, &config, "qwen"), vec!["llama", "qwen"], "no window: not known to be larger");
        assert_eq!(
            take_query_param("/v1/chat/completions?a=1&llm_failover_context_exceeded=qwen", "llm_failover_context_exceeded"),
            Some(("/v1/chat/completions?a=1".into(), "qwen".into()))
        );
        assert_eq!(take_query_param("/v1/chat/completions?x=1", "y"), None);
        assert_eq!(take_query_param("/p?y=2", "y"), Some(("/p".into(), "2".into())));
    }

    #[test]
    fn ordering_by_latency_keeps_demoted_providers_behind() {
        let config = profiles_config();
        let c = chain(&["qwen", "r1", "llama"]);
        let latency = |ms| Health { ttfb_ms: ms, ..Health::default() };
        let entries = [("qwen", provider(latency(900))), ("r1", provider(Health { slow_until_ms: 999, ..latency(10) })), ("llama", provider(latency(300)))];
        let mut p = plan(&c, "m", standings(&entries), 100);
        assert_eq!(p.order, vec!["qwen", "llama", "r1"]);
        apply_ordering(&mut p, policy::Ordering::LowestLatency, &config, standings(&entries), policy::ExpectedTokens::default(), 0, 100);
        assert_eq!(p.order, vec!["llama", "qwen", "r1"]);
    }
}
