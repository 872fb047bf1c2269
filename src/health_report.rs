//! The health endpoint's answer: every provider's breaker, cooldown, failures, latency and
//! budget as JSON, read from the shared table; and how the endpoint's requests are judged.

use serde_json::{json, Value};

use crate::budget::Spent;
use crate::health::{Health, HealthTable, UNTIL_RESET};

/// The header an operator sends the admin secret in.
pub const SECRET_HEADER: &str = "x-llm-failover-admin-secret";

/// The status page (`GET <admin path>/status`): a page with no data in it. Its script asks
/// for the admin secret and sends it only in the header, to the report and reset endpoints,
/// so the page itself is served without the secret (a browser cannot send a header when it
/// opens a URL) and the secret never travels in a URL.
pub const STATUS_PAGE: &str = include_str!("status_page.html");

/// What a request to the admin path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminRequest {
    Report,
    /// The status page, which reads the report with the secret the operator types in.
    StatusPage,
    /// Forget one provider's health (or every provider's); `budget`: today's spending too.
    Reset { provider: Option<String>, budget: bool },
    NotAllowed,
    NotFound,
}

impl AdminRequest {
    /// Every admin request needs the secret but the status page, which holds no data.
    pub fn needs_secret(&self) -> bool {
        *self != AdminRequest::StatusPage
    }

    /// `GET <path>` reports; `POST <path>/reset[?provider=NAME][&budget=true]` resets.
    pub fn parse(method: &str, path_and_query: &str, admin_path: &str) -> Option<AdminRequest> {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        let rest = path.strip_prefix(admin_path).filter(|rest| rest.is_empty() || rest.starts_with('/'))?;
        let parameter = |name: &str| {
            query.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
        };
        Some(match (rest, method) {
            ("" | "/", "GET") => AdminRequest::Report,
            ("/status", "GET") => AdminRequest::StatusPage,
            ("/reset", "POST") => AdminRequest::Reset {
                provider: parameter("provider").filter(|p| !p.is_empty()),
                budget: parameter("budget").as_deref() == Some("true"),
            },
            ("" | "/" | "/reset" | "/status", _) => AdminRequest::NotAllowed,
            _ => AdminRequest::NotFound,
        })
    }
}

/// Compares secrets in time that does not depend on where they differ.
pub fn secret_matches(given: &[u8], expected: &str) -> bool {
    let expected = expected.as_bytes();
    let mut difference = given.len() ^ expected.len();
    for (i, byte) in expected.iter().enumerate() {
        difference |= usize::from(given.get(i).copied().unwrap_or(0) ^ byte);
    }
    difference == 0
}

fn record(health: &Health, now_ms: u64) -> Value {
    let state = health.state(now_ms);
    let cooldown = if health.cooldown_until_ms == UNTIL_RESET && health.open {
        json!("until-reset")
    } else if health.is_cooling(now_ms) {
        json!(health.remaining_ms(now_ms).div_ceil(1000))
    } else {
        Value::Null
    };
    json!({
        "state": state.name(),
        "probeInFlight": health.is_probing(now_ms),
        "cooldownRemainingS": cooldown,
        "consecutiveFailures": health.consecutive_failures,
        "lastFailure": health.last_failure.map(|f| f.name()),
        "lastStatus": if health.last_status == 0 { Value::Null } else { json!(health.last_status) },
        "ttfbMs": if health.ttfb_ms == 0 && health.total_ms == 0 { Value::Null } else { json!(health.ttfb_ms) },
        "totalMs": if health.total_ms == 0 { Value::Null } else { json!(health.total_ms) },
        "slow": now_ms < health.slow_until_ms,
        "nearRateLimit": now_ms < health.near_limit_until_ms,
        "windowRequests": health.window_requests,
        "windowFailures": health.window_failures,
        "updatedAtMs": if health.updated_ms == 0 { Value::Null } else { json!(health.updated_ms) },
    })
}

/// The report: the router's providers in their configured order, each with its models.
pub fn report(providers: &[String], table: &HealthTable, budgets: &dyn Fn(&str) -> Option<Spent>, now_ms: u64) -> Value {
    let providers: Vec<Value> = providers
        .iter()
        .map(|name| {
            let health = table.get(name);
            let mut entry = record(&health, now_ms);
            let prefix = format!("{name}/");
            let models: Vec<Value> = table
                .records()
                .iter()
                .filter_map(|(key, h)| key.strip_prefix(&prefix).map(|model| (model, h)))
                .map(|(model, h)| {
                    let mut m = record(h, now_ms);
                    if let Some(object) = m.as_object_mut() {
                        object.insert("model".into(), json!(model));
                    }
                    m
                })
                .collect();
            let spent_until = health.budget_spent_until_ms;
            let budget = json!({
                "spent": now_ms < spent_until,
                "resetsInS": if now_ms < spent_until { json!(spent_until.saturating_sub(now_ms).div_ceil(1000)) } else { Value::Null },
                "lastRecorded": budgets(name).map(|s| json!({"day": s.day, "requests": s.requests, "tokens": s.tokens})),
            });
            if let Some(object) = entry.as_object_mut() {
                object.insert("name".into(), json!(name));
                object.insert("models".into(), json!(models));
                object.insert("budget".into(), budget);
            }
            entry
        })
        .collect();
    json!({ "generatedAtMs": now_ms, "providers": providers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::tests::MemoryStore;
    use crate::health::{self, Failure, HealthPolicy, Outcome, SharedStore, TABLE_KEY};

    #[test]
    fn admin_requests() {
        let cases = [
            ("GET", "/llm/health", AdminRequest::Report),
            ("GET", "/llm/health/?x=1", AdminRequest::Report),
            ("POST", "/llm/health/reset", AdminRequest::Reset { provider: None, budget: false }),
            ("POST", "/llm/health/reset?provider=openai&budget=true", AdminRequest::Reset { provider: Some("openai".into()), budget: true }),
            ("DELETE", "/llm/health", AdminRequest::NotAllowed),
            ("GET", "/llm/health/reset", AdminRequest::NotAllowed),
            ("GET", "/llm/health/other", AdminRequest::NotFound),
            ("GET", "/llm/health/status", AdminRequest::StatusPage),
            ("POST", "/llm/health/status", AdminRequest::NotAllowed),
        ];
        for (method, path, expected) in cases {
            assert_eq!(AdminRequest::parse(method, path, "/llm/health"), Some(expected), "{method} {path}");
        }
        assert_eq!(AdminRequest::parse("GET", "/v1/chat/completions", "/llm/health"), None);
        assert_eq!(AdminRequest::parse("GET", "/llm/healthz", "/llm/health"), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(secret_matches(b"correct horse battery", "correct horse battery"));
        assert!(!secret_matches(b"correct horse batter", "correct horse battery"));
        assert!(!secret_matches(b"correct horse battery!", "correct horse battery"));
        assert!(!secret_matches(b"", "correct horse battery"));
    }

    #[test]
    fn report_shows_what_the_table_holds() {
        let store = MemoryStore::default();
        health::ensure_table(&store).unwrap();
        let policy = HealthPolicy::default();
        let failed = |failure, status| Outcome::Failed { failure, status, retry_after_ms: None };
        health::record(&store, "openai", Some("gpt-4o"), &failed(Failure::RateLimited, 429), 1_000, &policy).unwrap();
        health::record(&store, "claude", None, &failed(Failure::Unauthorized, 401), 1_000, &policy).unwrap();
        health::record(&store, "ollama", None, &Outcome::Success { ttfb_ms: 900, total_ms: 2_000, near_limit_until_ms: None }, 1_000, &policy).unwrap();
        health::budget_spent(&store, "ollama", 61_000).unwrap();
        let table = HealthTable::decode(&store.get(TABLE_KEY).unwrap().0);
        let providers = ["openai", "claude", "ollama", "never-used"].map(String::from);
        let spent = |name: &str| (name == "ollama").then_some(Spent { day: 1, requests: 40, tokens: 9000 });
        let report = report(&providers, &table, &spent, 11_000);
        let p = &report["providers"];
        assert_eq!(p[0]["name"], "openai");
        assert_eq!(p[0]["state"], "closed");
        assert_eq!(p[0]["models"][0]["model"], "gpt-4o");
        assert_eq!(p[0]["models"][0]["state"], "open");
        assert_eq!(p[0]["models"][0]["cooldownRemainingS"], 20);
        assert_eq!(p[0]["models"][0]["lastStatus"], 429);
        assert_eq!(p[1]["state"], "open");
        assert_eq!(p[1]["cooldownRemainingS"], "until-reset");
        assert_eq!(p[1]["lastFailure"], "unauthorized");
        assert_eq!(p[2]["ttfbMs"], 900);
        assert_eq!(p[2]["budget"]["spent"], true);
        assert_eq!(p[2]["budget"]["resetsInS"], 50);
        assert_eq!(p[2]["budget"]["lastRecorded"]["tokens"], 9000);
        assert_eq!(p[3]["state"], "closed");
        assert_eq!(p[3]["lastStatus"], Value::Null);
        assert_eq!(p[3]["budget"]["lastRecorded"], Value::Null);
    }
}
