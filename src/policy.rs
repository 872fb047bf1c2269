//! How one request orders a chain's providers (as configured, by latency, by price or by weight,
//! with health always on top), and each profile's chains for the `fast`, `normal` and `high` tiers.
//!
//! `ordering` in a profile is one of `configured` (the default: the chain's own order),
//! `lowest-latency` (smoothed latency from shared health; providers with none yet go after
//! those measured), `lowest-price` (the expected cost of this request from its estimated input
//! and output tokens; providers without a price go after those priced) or `weighted` (the first
//! provider drawn by weight, the others in configured order). Whatever the ordering, providers
//! cooling down go last and slow ones behind the others; ties keep the configured order.

use std::cmp;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::json::Field;
use crate::config::ConfigError;
use crate::sort::{stable_sort_by, stable_sort_by_key};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ordering {
    #[default]
    Configured,
    LowestLatency,
    LowestPrice,
    Weighted,
}

pub use crate::budget::Price;

/// One provider of the chain as the ordering sees it, in configured order.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub latency_ms: Option<u64>,
    pub price: Option<Price>,
    pub weight: u32,
    pub cooling: bool,
    pub slow: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpectedTokens {
    pub input: u64,
    pub output: u64,
}

/// The order to try `providers` in, as indices into it: every index once.
/// `random` draws the `weighted` pick; the same value gives the same order.
pub fn order(providers: &[Candidate], policy: Ordering, expected: ExpectedTokens, random: u64) -> Vec<usize> {
    let mut ranked: Vec<(usize, &Candidate)> = providers.iter().enumerate().collect();
    match policy {
        Ordering::Configured => {}
        Ordering::LowestLatency => stable_sort_by_key(&mut ranked, |(_, c)| (c.latency_ms.is_none(), c.latency_ms)),
        Ordering::LowestPrice => stable_sort_by(&mut ranked, |(_, a), (_, b)| {
            let cost = |c: &Candidate| c.price.and_then(|p| p.cost(expected));
            match (cost(a), cost(b)) {
                (Some(x), Some(y)) => x.total_cmp(&y) == cmp::Ordering::Less,
                (Some(_), None) => true,
                (_, _) => false,
            }
        }),
        Ordering::Weighted => {
            if let Some(first) = weighted_pick(&ranked, random) {
                let picked = ranked.remove(first);
                ranked.insert(0, picked);
            }
        }
    }
    // Stable: within a health group, the policy's order stands.
    stable_sort_by_key(&mut ranked, |(_, c)| health_rank(c));
    ranked.into_iter().map(|(i, _)| i).collect()
}

/// 0 healthy, 1 slow, 2 cooling, 3 cooling and slow.
fn health_rank(c: &Candidate) -> u8 {
    u8::from(c.cooling) * 2 + u8::from(c.slow)
}

/// A position in `ranked`, drawn by weight among the providers of the best health group, so
/// a heavy weight never puts a cooling provider first. `None` when they all weigh nothing.
fn weighted_pick(ranked: &[(usize, &Candidate)], random: u64) -> Option<usize> {
    let best = ranked.iter().map(|(_, c)| health_rank(c)).min()?;
    let eligible = || ranked.iter().enumerate().filter(move |(_, (_, c))| health_rank(c) == best);
    let total: u64 = eligible().map(|(_, (_, c))| u64::from(c.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = random % total;
    for (position, (_, c)) in eligible() {
        let weight = u64::from(c.weight);
        if point < weight {
            return Some(position);
        }
        point -= weight;
    }
    None
}

#[derive(Deserialize)]
struct MaxTokens {
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_tokens: Option<u64>,
}

/// The output limit a raw chat request asks for, under either of its names
/// (`max_completion_tokens` wins, as at OpenAI).
pub fn requested_max_tokens(body: &[u8]) -> Option<u64> {
    let limits: MaxTokens = serde_json::from_slice(body).ok()?;
    limits.max_completion_tokens.or(limits.max_tokens)
}

/// A request's expected size for pricing: input about a token per 4 bytes of body, output
/// its own limit or `default_output_tokens`.
pub fn expected_tokens(body: &[u8], default_output_tokens: u64) -> ExpectedTokens {
    ExpectedTokens {
        input: (body.len() as u64).div_ceil(4),
        output: requested_max_tokens(body).unwrap_or(default_output_tokens),
    }
}

/// How much a request is willing to spend for its answer: each tier is a chain of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Fast,
    Normal,
    High,
}

impl Tier {
    /// A header value: `fast`, `normal` or `high`, in any case, spaces around ignored.
    pub fn parse(value: &str) -> Option<Tier> {
        let value = value.trim();
        [Tier::Fast, Tier::Normal, Tier::High].into_iter().find(|t| value.eq_ignore_ascii_case(t.name()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Fast => "fast",
            Tier::Normal => "normal",
            Tier::High => "high",
        }
    }
}

#[derive(Debug)]
pub struct RawProfile {
    fast: Option<Vec<String>>,
    normal: Option<Vec<String>>,
    high: Option<Vec<String>>,
    ordering: Ordering,
    hedge_after: Option<String>,
    deadline: Option<String>,
    first_byte_timeout: Option<String>,
}

impl RawProfile {
    pub fn read(f: Field) -> Result<RawProfile, ConfigError> {
        let o = f.object(&["fast", "normal", "high", "ordering", "hedgeAfter", "deadline", "firstByteTimeout"])?;
        let ordering = |f: Field| {
            f.variant(&[
                ("configured", Ordering::Configured),
                ("lowest-latency", Ordering::LowestLatency),
                ("lowest-price", Ordering::LowestPrice),
                ("weighted", Ordering::Weighted),
            ])
        };
        Ok(RawProfile {
            fast: o.opt_with("fast", |f| f.strings())?,
            normal: o.opt_with("normal", |f| f.strings())?,
            high: o.opt_with("high", |f| f.strings())?,
            ordering: o.or_else("ordering", ordering, Ordering::default)?,
            hedge_after: o.opt_string("hedgeAfter")?,
            deadline: o.opt_string("deadline")?,
            first_byte_timeout: o.opt_string("firstByteTimeout")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub ordering: Ordering,
    /// When an attempt has not answered by then, Envoy sends the next one too (hedging); the
    /// first answer wins.
    pub hedge_after: Option<Duration>,
    /// The whole request, every failover included.
    pub deadline: Option<Duration>,
    /// Each attempt's time to its response headers.
    pub first_byte_timeout: Option<Duration>,
    normal: Vec<String>,
    fast: Option<Vec<String>>,
    high: Option<Vec<String>>,
}

impl Profile {
    /// Errors are `(field, reason)`, the field spelled as in the plugin config
    /// (`profiles.coder.high[1]`).
    pub fn check(name: &str, raw: RawProfile, known_provider: &dyn Fn(&str) -> bool) -> Result<Profile, (String, String)> {
        let field = format!("profiles.{name}");
        // Profile names end up in logs and metric labels, like provider names.
        crate::config::check_name(name).map_err(|reason| (field.clone(), reason))?;
        let chain = |tier: Tier, members: Option<Vec<String>>| -> Result<Option<Vec<String>>, (String, String)> {
            let Some(members) = members else { return Ok(None) };
            let field = format!("{field}.{}", tier.name());
            if members.is_empty() {
                return Err((field, "must name at least one provider (leave the tier out to use `normal`)".into()));
            }
            crate::config::check_members(&field, &members, known_provider)?;
            Ok(Some(members))
        };
        let duration = |key: &str, text: &Option<String>| -> Result<Option<Duration>, (String, String)> {
            let Some(text) = text else { return Ok(None) };
            crate::duration::parse_positive(text).map(Some).map_err(|reason| (format!("{field}.{key}"), reason))
        };
        let hedge_after = duration("hedgeAfter", &raw.hedge_after)?;
        let deadline = duration("deadline", &raw.deadline)?;
        let first_byte_timeout = duration("firstByteTimeout", &raw.first_byte_timeout)?;
        if hedge_after.is_some() && first_byte_timeout.is_some() {
            return Err((format!("{field}.hedgeAfter"), "and `firstByteTimeout` both set Envoy's per-try timeout: choose one".into()));
        }
        let Some(normal) = chain(Tier::Normal, raw.normal)? else {
            return Err((format!("{field}.normal"), "is required: it serves requests without a tier, and tiers left out".into()));
        };
        Ok(Profile {
            name: name.to_string(),
            ordering: raw.ordering,
            hedge_after,
            deadline,
            first_byte_timeout,
            normal,
            fast: chain(Tier::Fast, raw.fast)?,
            high: chain(Tier::High, raw.high)?,
        })
    }

    /// The providers for `tier`, in configured order; a tier left out uses `normal`.
    /// A profile of one chain, as a plain `chains` entry is.
    pub fn of_chain(name: &str, providers: Vec<String>) -> Profile {
        Profile { name: name.to_string(), ordering: Ordering::Configured, hedge_after: None, deadline: None, first_byte_timeout: None, normal: providers, fast: None, high: None }
    }

    /// Every tier with its own chain, `normal` first.
    pub fn tiers(&self) -> Vec<Tier> {
        let mut tiers = vec![Tier::Normal];
        if self.fast.is_some() {
            tiers.push(Tier::Fast);
        }
        if self.high.is_some() {
            tiers.push(Tier::High);
        }
        tiers
    }

    pub fn chain_for(&self, tier: Tier) -> &[String] {
        let chain = match tier {
            Tier::Fast => self.fast.as_ref(),
            Tier::Normal => None,
            Tier::High => self.high.as_ref(),
        };
        chain.unwrap_or(&self.normal)
    }
}

/// Every profile of the `profiles` map, checked, in name order.
pub fn check_profiles(
    raw: BTreeMap<String, RawProfile>,
    known_provider: &dyn Fn(&str) -> bool,
) -> Result<Vec<Profile>, (String, String)> {
    raw.into_iter().map(|(name, profile)| Profile::check(&name, profile, known_provider)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy)]
    struct C {
        latency_ms: Option<u64>,
        price: Option<(f64, f64)>,
        weight: u32,
        cooling: bool,
        slow: bool,
    }

    const OK: C = C { latency_ms: None, price: None, weight: 1, cooling: false, slow: false };
    const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

    fn ms(latency: u64) -> C {
        C { latency_ms: Some(latency), ..OK }
    }
    fn priced(input: f64, output: f64) -> C {
        C { price: Some((input, output)), ..OK }
    }
    fn weight(weight: u32) -> C {
        C { weight, ..OK }
    }
    impl C {
        fn cooling(self) -> C {
            C { cooling: true, ..self }
        }
        fn slow(self) -> C {
            C { slow: true, ..self }
        }
    }

    fn candidates(cs: &[C]) -> Vec<Candidate<'static>> {
        cs.iter()
            .zip(NAMES)
            .map(|(c, name)| Candidate {
                name,
                latency_ms: c.latency_ms,
                price: c.price.map(|(input_per_mtok, output_per_mtok)| Price { input_per_mtok, output_per_mtok }),
                weight: c.weight,
                cooling: c.cooling,
                slow: c.slow,
            })
            .collect()
    }

    const NO_TOKENS: ExpectedTokens = ExpectedTokens { input: 0, output: 0 };
    const INPUT_HEAVY: ExpectedTokens = ExpectedTokens { input: 1_000_000, output: 0 };
    const OUTPUT_HEAVY: ExpectedTokens = ExpectedTokens { input: 0, output: 1_000_000 };

    /// Name, providers, ordering, expected tokens, random, expected order.
    type OrderCase<'a> = (&'a str, &'a [C], Ordering, ExpectedTokens, u64, &'a [usize]);

    #[test]
    fn orders_by_policy_with_health_on_top() {
        use Ordering::*;
        let cases: &[OrderCase] = &[
            ("configured keeps the chain", &[OK, OK, OK], Configured, NO_TOKENS, 0, &[0, 1, 2]),
            ("cooling goes last", &[OK.cooling(), OK, OK], Configured, NO_TOKENS, 0, &[1, 2, 0]),
            ("slow behind healthy, cooling behind slow", &[OK.cooling(), OK.slow(), OK, OK.cooling().slow(), OK], Configured, NO_TOKENS, 0, &[2, 4, 1, 0, 3]),
            ("all cooling keeps the chain", &[OK.cooling(), OK.cooling()], Configured, NO_TOKENS, 0, &[0, 1]),
            ("lowest latency first, unknown after known", &[ms(300), ms(100), OK, ms(200)], LowestLatency, NO_TOKENS, 0, &[1, 3, 0, 2]),
            ("latency ties keep the chain", &[ms(100), ms(100), ms(50)], LowestLatency, NO_TOKENS, 0, &[2, 0, 1]),
            ("the fastest is cooling", &[ms(300), ms(10).cooling(), ms(200)], LowestLatency, NO_TOKENS, 0, &[2, 0, 1]),
            ("the fastest is slow-flagged", &[ms(300), ms(10).slow(), ms(200)], LowestLatency, NO_TOKENS, 0, &[2, 0, 1]),
            ("cheap input wins an input-heavy request", &[priced(10.0, 10.0), priced(1.0, 30.0), OK], LowestPrice, INPUT_HEAVY, 0, &[1, 0, 2]),
            ("cheap output wins an output-heavy request", &[priced(10.0, 10.0), priced(1.0, 30.0), OK], LowestPrice, OUTPUT_HEAVY, 0, &[0, 1, 2]),
            ("unknown price after known, even a free one", &[OK, priced(0.0, 0.0), priced(5.0, 5.0)], LowestPrice, OUTPUT_HEAVY, 0, &[1, 2, 0]),
            ("a price that is not a number is unknown", &[priced(f64::NAN, 1.0), priced(-1.0, 0.0), priced(3.0, 3.0)], LowestPrice, OUTPUT_HEAVY, 0, &[2, 0, 1]),
            ("price ties keep the chain", &[priced(2.0, 2.0), priced(2.0, 2.0)], LowestPrice, OUTPUT_HEAVY, 0, &[0, 1]),
            ("the cheapest is cooling", &[priced(1.0, 1.0).cooling(), priced(9.0, 9.0)], LowestPrice, OUTPUT_HEAVY, 0, &[1, 0]),
            ("weighted: random 0 lands on the first", &[weight(1), weight(3)], Weighted, NO_TOKENS, 0, &[0, 1]),
            ("weighted: random 1 lands on the second", &[weight(1), weight(3)], Weighted, NO_TOKENS, 1, &[1, 0]),
            ("weighted: random 3 lands on the second", &[weight(1), weight(3)], Weighted, NO_TOKENS, 3, &[1, 0]),
            ("weighted: random wraps around the total", &[weight(1), weight(3)], Weighted, NO_TOKENS, 4, &[0, 1]),
            ("weighted: the rest keep the chain", &[weight(0), weight(5), weight(5)], Weighted, NO_TOKENS, 7, &[2, 0, 1]),
            ("weighted: no weight never goes first", &[weight(0), weight(5), weight(5)], Weighted, NO_TOKENS, 0, &[1, 0, 2]),
            ("weighted: a single weight is always drawn", &[weight(0), weight(1)], Weighted, NO_TOKENS, 1, &[1, 0]),
            ("weighted: all weightless keeps the chain", &[weight(0), weight(0)], Weighted, NO_TOKENS, 1, &[0, 1]),
            ("weighted: a heavy cooling provider is not drawn", &[weight(1), weight(1000).cooling()], Weighted, NO_TOKENS, 500, &[0, 1]),
            ("weighted: drawn among the slow when none is healthy", &[weight(1).slow(), weight(1).cooling(), weight(1).slow()], Weighted, NO_TOKENS, 1, &[2, 0, 1]),
            ("weighted: drawn among the cooling when all are", &[weight(1).cooling(), weight(3).cooling()], Weighted, NO_TOKENS, 1, &[1, 0]),
            ("weighted: a healthy weightless one when others are slow", &[weight(0), weight(9).slow()], Weighted, NO_TOKENS, 3, &[0, 1]),
            ("no providers", &[], LowestLatency, NO_TOKENS, 0, &[]),
        ];
        for (name, cs, policy, tokens, random, expected) in cases {
            let got = order(&candidates(cs), *policy, *tokens, *random);
            assert_eq!(got, *expected, "{name}");
            let mut sorted = got.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..cs.len()).collect::<Vec<_>>(), "{name}: not a permutation");
        }
    }

    #[test]
    fn weighted_draws_first_in_proportion_to_weight() {
        let providers = candidates(&[weight(1), weight(2), weight(1), weight(0)]);
        let mut firsts = [0u32; 4];
        for random in 0..400 {
            let first = order(&providers, Ordering::Weighted, NO_TOKENS, random)[0];
            firsts[first] += 1;
        }
        assert_eq!(firsts, [100, 200, 100, 0]);
        // The same random value always gives the same order.
        let again = |random| order(&providers, Ordering::Weighted, NO_TOKENS, random);
        assert_eq!(again(u64::MAX), again(u64::MAX));
    }

    #[test]
    fn cost_is_per_million_tokens() {
        let price = Price { input_per_mtok: 2.5, output_per_mtok: 10.0 };
        assert_eq!(price.cost(ExpectedTokens { input: 1_000_000, output: 500_000 }), Some(7.5));
        assert_eq!(price.cost(ExpectedTokens { input: 4_000, output: 0 }), Some(0.01));
        assert_eq!(Price { input_per_mtok: f64::INFINITY, output_per_mtok: 1.0 }.cost(NO_TOKENS), None);
    }

    #[test]
    fn expected_tokens_from_the_body() {
        let cases: &[(&str, ExpectedTokens)] = &[
            (r#"{"model":"m","max_tokens":100,"messages":[]}"#, ExpectedTokens { input: 11, output: 100 }),
            (r#"{"max_tokens":100,"max_completion_tokens":300}"#, ExpectedTokens { input: 12, output: 300 }),
            (r#"{"max_completion_tokens":7}"#, ExpectedTokens { input: 7, output: 7 }),
            (r#"{"model":"m","messages":[]}"#, ExpectedTokens { input: 7, output: 512 }),
            (r#"{"max_tokens":"lots"}"#, ExpectedTokens { input: 6, output: 512 }),
            (r#"{"max_tokens":-1}"#, ExpectedTokens { input: 5, output: 512 }),
            ("", ExpectedTokens { input: 0, output: 512 }),
        ];
        for (body, expected) in cases {
            assert_eq!(expected_tokens(body.as_bytes(), 512), *expected, "{body} ({} bytes)", body.len());
        }
    }

    #[test]
    fn tiers_parse_from_a_header_value() {
        let cases: &[(&str, Option<Tier>)] = &[
            ("fast", Some(Tier::Fast)),
            ("normal", Some(Tier::Normal)),
            ("high", Some(Tier::High)),
            (" HIGH ", Some(Tier::High)),
            ("Fast", Some(Tier::Fast)),
            ("", None),
            ("turbo", None),
            ("fastest", None),
        ];
        for (value, expected) in cases {
            assert_eq!(Tier::parse(value), *expected, "{value:?}");
        }
    }

    fn known(name: &str) -> bool {
        ["qwen-small", "llama", "gpt", "claude", "gemini"].contains(&name)
    }

    fn profiles(json: &str) -> Result<Vec<Profile>, (String, String)> {
        let document = crate::config::json::parse(json.as_bytes()).expect(json);
        let entries = Field::root(&document).entries().expect(json);
        let raw = entries.iter().map(|(name, p)| (name.to_string(), RawProfile::read(p.field()).expect(json))).collect();
        check_profiles(raw, &known)
    }

    fn raw(json: &str) -> Result<RawProfile, ConfigError> {
        RawProfile::read(Field::root(&crate::config::json::parse(json.as_bytes())?))
    }

    #[test]
    fn each_tier_has_its_chain_and_missing_tiers_use_normal() {
        let checked = profiles(
            r#"{"coder":{"fast":["qwen-small","llama"],"normal":["gpt","llama"],"high":["claude","gpt"],"ordering":"lowest-latency"},
                "general":{"normal":["gemini"]},
                "reasoner":{"normal":["gpt"],"high":["claude"],"ordering":"weighted"}}"#,
        )
        .unwrap();
        let chain = |profile: usize, tier| checked[profile].chain_for(tier).to_vec();
        let cases: &[(usize, Tier, &[&str])] = &[
            (0, Tier::Fast, &["qwen-small", "llama"]),
            (0, Tier::Normal, &["gpt", "llama"]),
            (0, Tier::High, &["claude", "gpt"]),
            (1, Tier::Fast, &["gemini"]),
            (1, Tier::High, &["gemini"]),
            (2, Tier::Fast, &["gpt"]),
            (2, Tier::High, &["claude"]),
        ];
        for (profile, tier, expected) in cases {
            assert_eq!(chain(*profile, *tier), *expected, "{} {tier:?}", checked[*profile].name);
        }
        let orderings: Vec<_> = checked.iter().map(|p| (p.name.as_str(), p.ordering)).collect();
        assert_eq!(
            orderings,
            [("coder", Ordering::LowestLatency), ("general", Ordering::Configured), ("reasoner", Ordering::Weighted)]
        );
    }

    #[test]
    fn bad_profiles_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"coder":{"fast":["llama"]}}"#, "profiles.coder.normal", "is required"),
            (r#"{"coder":{"normal":["gpt"],"high":["claude","o3"]}}"#, "profiles.coder.high[1]", "provider `o3` is not in `providers`"),
            (r#"{"coder":{"normal":["gpt","gpt"]}}"#, "profiles.coder.normal[1]", "appears twice"),
            (r#"{"coder":{"normal":[]}}"#, "profiles.coder.normal", "at least one provider"),
            (r#"{"coder":{"normal":["gpt"],"fast":[]}}"#, "profiles.coder.fast", "leave the tier out"),
            (r#"{"Coder X":{"normal":["gpt"]}}"#, "profiles.Coder X", "a-z, 0-9"),
            (r#"{"":{"normal":["gpt"]}}"#, "profiles.", "1-64 characters"),
        ];
        for (json, field, reason) in cases {
            let (got_field, got_reason) = profiles(json).expect_err(json);
            assert_eq!(got_field, *field, "{json}: {got_reason}");
            assert!(got_reason.contains(reason), "{json}: {got_reason}");
        }
    }

    #[test]
    fn raw_profiles_refuse_unknown_fields_and_orderings() {
        let cases: &[(&str, &str)] = &[
            (r#"{"normal":["gpt"],"ordering":"cheapest"}"#, "unknown variant `cheapest`"),
            (r#"{"normal":["gpt"],"ordering":"lowestLatency"}"#, "unknown variant `lowestLatency`"),
            (r#"{"normal":["gpt"],"turbo":["gpt"]}"#, "unknown field `turbo`"),
        ];
        for (json, reason) in cases {
            let err = raw(json).unwrap_err();
            assert!(err.to_string().contains(reason), "{json}: {err}");
        }
        let orderings: &[(&str, Ordering)] = &[
            ("configured", Ordering::Configured),
            ("lowest-latency", Ordering::LowestLatency),
            ("lowest-price", Ordering::LowestPrice),
            ("weighted", Ordering::Weighted),
        ];
        for (name, ordering) in orderings {
            let profile = raw(&format!(r#"{{"normal":["gpt"],"ordering":"{name}"}}"#)).unwrap();
            assert_eq!(profile.ordering, *ordering);
        }
    }
}
