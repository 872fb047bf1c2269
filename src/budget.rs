//! Daily budgets per provider (requests and tokens, spent across every worker) and the price
//! of an answer. A spent budget takes the provider out of its chains until the day resets.

use std::collections::HashMap;

use crate::health::{compare_and_swap, SharedStore, StoreError};
use crate::policy::ExpectedTokens;

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub requests_per_day: Option<u64>,
    pub tokens_per_day: Option<u64>,
    /// Minutes east of UTC at which the budget's day starts at midnight.
    pub utc_offset_minutes: i32,
}

/// What one provider spent on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    pub day: i64,
    pub requests: u64,
    pub tokens: u64,
}

impl Budget {
    /// The budget's day number at `now_ms`.
    pub fn day(&self, now_ms: u64) -> i64 {
        let local = i64::try_from(now_ms).unwrap_or(i64::MAX).saturating_add(i64::from(self.utc_offset_minutes) * 60_000);
        local.div_euclid(DAY_MS)
    }

    /// When the day of `now_ms` ends, in Unix milliseconds.
    pub fn resets_at_ms(&self, now_ms: u64) -> u64 {
        let next_day = self.day(now_ms).saturating_add(1).saturating_mul(DAY_MS);
        let utc = next_day.saturating_sub(i64::from(self.utc_offset_minutes) * 60_000);
        u64::try_from(utc).unwrap_or(0)
    }

    pub fn is_spent(&self, spent: &Spent) -> bool {
        self.requests_per_day.is_some_and(|limit| spent.requests >= limit)
            || self.tokens_per_day.is_some_and(|limit| spent.tokens >= limit)
    }
}

impl Spent {
    fn encode(&self) -> Vec<u8> {
        format!("v1 {} {} {}", self.day, self.requests, self.tokens).into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Spent> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let spent = Spent { day: parts.next()?.parse().ok()?, requests: parts.next()?.parse().ok()?, tokens: parts.next()?.parse().ok()? };
        parts.next().is_none().then_some(spent)
    }

    /// Today's spending: a record from another day counts as nothing spent.
    fn on(self, day: i64) -> Spent {
        if self.day == day {
            self
        } else {
            Spent { day, requests: 0, tokens: 0 }
        }
    }
}

pub fn key(provider: &str) -> String {
    format!("llm-failover/v1/budget/{provider}")
}

/// What the provider spent today (nothing when never recorded).
pub fn spent(store: &dyn SharedStore, provider: &str, budget: &Budget, now_ms: u64) -> Spent {
    let day = budget.day(now_ms);
    store.get(&key(provider)).and_then(|(bytes, _)| Spent::decode(&bytes)).unwrap_or_default().on(day)
}

/// The last spending recorded, whatever its day (the report shows the day with it).
pub fn last_recorded(store: &dyn SharedStore, provider: &str) -> Option<Spent> {
    store.get(&key(provider)).and_then(|(bytes, _)| Spent::decode(&bytes))
}

/// Adds an attempt's requests and tokens to today's spending, in one bounded CAS loop.
pub fn spend(store: &dyn SharedStore, provider: &str, budget: &Budget, requests: u64, tokens: u64, now_ms: u64) -> Result<Spent, StoreError> {
    let day = budget.day(now_ms);
    let spent = compare_and_swap(store, &key(provider), |bytes| {
        let mut next = bytes.and_then(Spent::decode).unwrap_or_default().on(day);
        next.requests = next.requests.saturating_add(requests);
        next.tokens = next.tokens.saturating_add(tokens);
        Some((next.encode(), next))
    })?;
    spent.ok_or(StoreError::CasMismatch)
}

/// Forgets today's spending (an operator's reset).
pub fn clear(store: &dyn SharedStore, provider: &str) -> Result<(), StoreError> {
    store.set(&key(provider), b"", None)
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    /// The expected cost of a request in dollars; `None` when a price is negative or not a
    /// number, which makes it unknown rather than cheapest.
    pub fn cost(&self, tokens: ExpectedTokens) -> Option<f64> {
        let valid = |p: f64| p.is_finite() && p >= 0.0;
        if !valid(self.input_per_mtok) || !valid(self.output_per_mtok) {
            return None;
        }
        Some((tokens.input as f64 * self.input_per_mtok + tokens.output as f64 * self.output_per_mtok) / 1e6)
    }

    /// The cost of an answer in millionths of a dollar (Envoy's counters are integers). A
    /// price per million tokens in dollars is a price per token in micro-dollars.
    pub fn micro_usd(&self, prompt_tokens: u64, completion_tokens: u64) -> u64 {
        let cost = prompt_tokens as f64 * self.input_per_mtok + completion_tokens as f64 * self.output_per_mtok;
        cost.round().clamp(0.0, u64::MAX as f64) as u64
    }
}

/// Prices by model, with an optional `*` for the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices(pub HashMap<String, Price>);

impl Prices {
    pub fn of(&self, model: &str) -> Option<Price> {
        self.0.get(model).or_else(|| self.0.get("*")).copied()
    }
}

/// `+09:00`, `-05:30` or `Z` as minutes east of UTC.
pub fn parse_utc_offset(text: &str) -> Result<i32, String> {
    if text == "Z" || text == "+00:00" || text == "-00:00" {
        return Ok(0);
    }
    let bad = || format!("`{text}` is not a UTC offset like `+09:00` or `-05:30`");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, text.get(1..).ok_or_else(bad)?),
        Some(b'-') => (-1, text.get(1..).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    let (hours, minutes) = rest.split_once(':').ok_or_else(bad)?;
    let hours: i32 = hours.parse().map_err(|_| bad())?;
    let minutes: i32 = minutes.parse().map_err(|_| bad())?;
    if hours.abs() > 14 || !(0..60).contains(&minutes) || hours < 0 {
        return Err(bad());
    }
    Ok(sign * (hours * 60 + minutes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::tests::MemoryStore;

    const HOUR: u64 = 3_600_000;

    fn budget(requests: Option<u64>, tokens: Option<u64>, offset: i32) -> Budget {
        Budget { requests_per_day: requests, tokens_per_day: tokens, utc_offset_minutes: offset }
    }

    #[test]
    fn the_day_starts_at_midnight_of_the_configured_offset() {
        let seoul = budget(None, None, 9 * 60);
        let midnight_utc = 20_000 * 24 * HOUR;
        // 14:59 UTC is 23:59 in Seoul; 15:00 UTC is the next day there.
        assert_eq!(seoul.day(midnight_utc + 15 * HOUR - 1) + 1, seoul.day(midnight_utc + 15 * HOUR));
        assert_eq!(seoul.resets_at_ms(midnight_utc + 10 * HOUR), midnight_utc + 15 * HOUR);
        let utc = budget(None, None, 0);
        assert_eq!(utc.resets_at_ms(midnight_utc + 1), midnight_utc + 24 * HOUR);
    }

    #[test]
    fn spending_accumulates_then_resets_with_the_day() {
        let store = MemoryStore::default();
        let b = budget(Some(3), Some(100), 0);
        let now = 20_000 * 24 * HOUR + HOUR;
        for _ in 0..2 {
            spend(&store, "p", &b, 1, 0, now).unwrap();
        }
        assert!(!b.is_spent(&spent(&store, "p", &b, now)));
        let after = spend(&store, "p", &b, 1, 40, now).unwrap();
        assert_eq!((after.requests, after.tokens), (3, 40));
        assert!(b.is_spent(&after));
        assert_eq!(spent(&store, "p", &b, now + 24 * HOUR), Spent { day: b.day(now) + 1, requests: 0, tokens: 0 });
        let tokens_only = budget(None, Some(100), 0);
        assert!(tokens_only.is_spent(&spend(&store, "q", &tokens_only, 0, 100, now).unwrap()));
    }

    #[test]
    fn spending_survives_cas_conflicts_and_garbage() {
        let store = MemoryStore::default();
        let b = budget(Some(10), None, 0);
        store.conflicts.set(4);
        assert_eq!(spend(&store, "p", &b, 1, 5, 0).unwrap().requests, 1);
        store.set(&key("p"), b"garbage", None).unwrap();
        assert_eq!(spend(&store, "p", &b, 1, 0, 0).unwrap().requests, 1);
        clear(&store, "p").unwrap();
        assert_eq!(spent(&store, "p", &b, 0).requests, 0);
    }

    #[test]
    fn prices_per_model_with_a_default() {
        let mut prices = Prices::default();
        prices.0.insert("gpt-4o".into(), Price { input_per_mtok: 2.5, output_per_mtok: 10.0 });
        prices.0.insert("*".into(), Price { input_per_mtok: 0.15, output_per_mtok: 0.6 });
        // 1000 in, 500 out at $2.50/$10 per Mtok = $0.0025 + $0.005 = 7500 micro-USD.
        assert_eq!(prices.of("gpt-4o").unwrap().micro_usd(1000, 500), 7500);
        assert_eq!(prices.of("mini").unwrap().micro_usd(1_000_000, 0), 150_000);
        assert_eq!(Prices::default().of("x"), None);
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("+09:00"), Ok(540));
        assert_eq!(parse_utc_offset("-05:30"), Ok(-330));
        assert_eq!(parse_utc_offset("Z"), Ok(0));
        for bad in ["9", "+9", "+25:00", "+09:60", "09:00", ""] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
    }
}
