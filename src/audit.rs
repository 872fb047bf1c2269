//! The audit line of a chat request: what the router role decided and what each attempt did,
//! as one JSON object that Envoy's access log writes from filter state (docs/operations.md).
//!
//! Attempts run in upstream filters that cannot reach the router role's context, so each
//! leaves its entry in the request's filter state under a key of its own (a value set once:
//! Envoy's wasm filter state is read-only once written), and the router role gathers them when
//! the answer ends. No entry holds a key, a header or a body.

use std::borrow::Cow;
use std::fmt::Write;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Filter state key (Envoy prefixes `wasm.`) of the whole line, set once by the router role.
pub const AUDIT_PROPERTY: &str = "llm_failover.audit";
/// Filter state key of the serving attempt's token counts and cost.
pub const USAGE_PROPERTY: &str = "llm_failover.usage";

/// Filter state key of the number of the attempt whose answer went to the client: an attempt
/// Envoy cancels because of it (a hedge that lost) is not its provider's failure.
pub const ANSWERED_PROPERTY: &str = "llm_failover.answered";

/// Filter state key of one attempt's entry (`x-envoy-attempt-count`, from 1).
pub fn attempt_property(attempt: u32) -> String {
    format!("llm_failover.attempt.{attempt}")
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx answer that went to the client.
    Served,
    /// A failure that moves the request to the next provider (`Failure::name`).
    Failed(&'static str),
    /// An answer that is not a failure and not a success (a 400 the client caused, a
    /// context-length redirect): it went back as it was.
    Answered,
    /// No answer, and none of the failures health counts: a hedged attempt that lost, a
    /// client that went away, or a last attempt whose failure Envoy had not yet flagged when
    /// the attempt ended (Envoy's own 503 then goes back).
    Unanswered,
}

/// One attempt's entry, as the attempt role writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptEntry<'a> {
    pub attempt: u32,
    pub provider: &'a str,
    /// The model sent to the provider (its `models` mapping applied).
    pub model: Option<&'a str>,
    /// The status the provider's answer had for health; `None` with no answer.
    pub status: Option<u16>,
    pub outcome: AttemptOutcome,
}

impl AttemptEntry<'_> {
    /// Keys in alphabetical order, as every line of this log has them.
    pub fn to_json(&self) -> String {
        let (outcome, reason) = match &self.outcome {
            AttemptOutcome::Served => ("served", None),
            AttemptOutcome::Failed(reason) => ("failed", Some(*reason)),
            AttemptOutcome::Answered => ("answered", None),
            AttemptOutcome::Unanswered => ("unanswered", None),
        };
        let mut out = Object::new();
        out.number("attempt", Some(u64::from(self.attempt)));
        out.string("model", self.model);
        out.string("outcome", Some(outcome));
        out.string("provider", Some(self.provider));
        if reason.is_some() {
            out.string("reason", reason);
        }
        out.number("status", self.status.map(u64::from));
        out.end()
    }
}

/// A JSON object written field by field: the audit line is built for every request, and a
/// `serde_json::Value` tree of it cost more than the rest of the router role (measured).
struct Object(String);

impl Object {
    fn new() -> Object {
        let mut text = String::with_capacity(512);
        text.push('{');
        Object(text)
    }

    fn key(&mut self, key: &str) {
        self.0.push_str(if self.0.len() > 1 { ",\"" } else { "\"" });
        self.0.push_str(key);
        self.0.push_str("\":");
    }

    fn raw(&mut self, key: &str, json: Option<&str>) {
        self.key(key);
        self.0.push_str(json.unwrap_or("null"));
    }

    fn string(&mut self, key: &str, value: Option<&str>) {
        self.key(key);
        push_string(&mut self.0, value);
    }

    fn number(&mut self, key: &str, value: Option<u64>) {
        self.key(key);
        match value {
            Some(n) => {
                let _ = write!(self.0, "{n}");
            }
            None => self.0.push_str("null"),
        }
    }

    /// `values` as an array: quoted as strings, or (`raw`) JSON texts as they are.
    fn array<'v>(&mut self, key: &str, values: impl IntoIterator<Item = &'v str>, raw: bool) {
        self.key(key);
        self.0.push('[');
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            if raw {
                self.0.push_str(value);
            } else {
                push_string(&mut self.0, Some(value));
            }
        }
        self.0.push(']');
    }

    fn end(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

fn push_string(out: &mut String, value: Option<&str>) {
    match value {
        // Names and ids rarely need escaping: those are copied as they are.
        Some(text) if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') => {
            out.push('"');
            out.push_str(text);
            out.push('"');
        }
        Some(text) => out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "null".into())),
        None => out.push_str("null"),
    }
}

/// What the router role reads of an attempt's entry.
#[derive(Deserialize)]
struct EntryView<'a> {
    #[serde(borrow)]
    provider: Cow<'a, str>,
    outcome: &'a str,
}

/// Token counts of the serving attempt; `cost_micro_usd` is `None` without a price.
pub fn usage_json(prompt_tokens: u64, completion_tokens: u64, cost_micro_usd: Option<u64>) -> String {
    let mut out = Object::new();
    out.number("completionTokens", Some(completion_tokens));
    out.number("costMicroUsd", cost_micro_usd);
    out.number("promptTokens", Some(prompt_tokens));
    out.end()
}

/// How the request ended, as the router role saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// An attempt's answer went to the client (a 2xx, or a provider's own error passed on).
    Answered,
    /// Every attempt failed, or every provider was out: the all-down 503.
    AllProvidersUnavailable,
    /// Refused before any provider (`rejected.<reason>`).
    Rejected(&'static str),
    /// A token count the gateway estimated: no provider that counts could be asked.
    Estimated,
}

/// What the router role knows of a request, with what the attempts left.
#[derive(Debug, Default)]
pub struct AuditLine<'a> {
    pub time_ms: u64,
    pub request_id: Option<&'a str>,
    /// The client API (`chat-completions`, `anthropic-messages`).
    pub api: Option<&'a str>,
    pub model: Option<&'a str>,
    /// `chain; by=source`, as `x-llm-profile` says it.
    pub profile: Option<&'a str>,
    pub chain: Option<&'a str>,
    /// The providers in the order the router handed to Envoy.
    pub planned: Vec<&'a str>,
    pub skipped: Vec<&'a str>,
    /// Each attempt's entry as written (JSON text); entries that do not parse are dropped.
    pub attempts: Vec<Vec<u8>>,
    pub usage: Option<Vec<u8>>,
    pub status: u16,
}

impl AuditLine<'_> {
    pub fn to_json(&self, outcome: &RequestOutcome) -> String {
        // Entries are kept as written; one that does not read as an entry is left out.
        let attempts: Vec<(&str, EntryView)> = self
            .attempts
            .iter()
            .filter_map(|bytes| {
                let text = std::str::from_utf8(bytes).ok()?;
                Some((text, serde_json::from_str::<EntryView>(text).ok()?))
            })
            .collect();
        let served_by = attempts.iter().rev().find(|(_, view)| view.outcome == "served").map(|(_, view)| view.provider.as_ref());
        let usage = self.usage.as_deref().and_then(|bytes| std::str::from_utf8(bytes).ok()).filter(|text| serde_json::from_str::<&RawValue>(text).is_ok());
        let (outcome, reason) = match outcome {
            RequestOutcome::Answered => ("answered", None),
            RequestOutcome::AllProvidersUnavailable => ("all_providers_unavailable", None),
            RequestOutcome::Rejected(reason) => ("rejected", Some(*reason)),
            RequestOutcome::Estimated => ("estimated", None),
        };
        let mut out = Object::new();
        out.string("api", self.api);
        out.array("attempts", attempts.iter().map(|(text, _)| text.trim()), true);
        out.string("chain", self.chain);
        out.number("llmFailover", Some(1));
        out.string("model", self.model);
        out.string("outcome", Some(outcome));
        out.array("planned", self.planned.iter().copied(), false);
        out.string("profile", self.profile);
        out.string("reason", reason);
        out.string("requestId", self.request_id);
        out.string("servedBy", served_by);
        out.array("skipped", self.skipped.iter().copied(), false);
        out.number("status", Some(u64::from(self.status)));
        out.number("timeMs", Some(self.time_ms));
        out.raw("usage", usage);
        out.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn an_attempt_entry_names_its_reason_only_when_it_failed() {
        let failed = AttemptEntry { attempt: 1, provider: "openai", model: Some("gpt-4o"), status: Some(429), outcome: AttemptOutcome::Failed("rate_limited") };
        assert_eq!(
            failed.to_json(),
            r#"{"attempt":1,"model":"gpt-4o","outcome":"failed","provider":"openai","reason":"rate_limited","status":429}"#
        );
        let refused = AttemptEntry { attempt: 3, provider: "ollama", model: None, status: None, outcome: AttemptOutcome::Failed("connect_failure") };
        assert_eq!(parse(&refused.to_json())["status"], Value::Null);
        let served = AttemptEntry { attempt: 2, provider: "openrouter", model: Some("openai/gpt-4o"), status: Some(200), outcome: AttemptOutcome::Served };
        assert_eq!(served.to_json(), r#"{"attempt":2,"model":"openai/gpt-4o","outcome":"served","provider":"openrouter","status":200}"#);
    }

    #[test]
    fn a_failover_line_lists_the_attempts_in_order_and_who_served() {
        let first = AttemptEntry { attempt: 1, provider: "a", model: Some("gpt-4o"), status: Some(429), outcome: AttemptOutcome::Failed("rate_limited") };
        let second = AttemptEntry { attempt: 2, provider: "b", model: Some("gpt-4o"), status: Some(200), outcome: AttemptOutcome::Served };
        let line = AuditLine {
            time_ms: 1_795_000_000_000,
            request_id: Some("r-1"),
            api: Some("chat-completions"),
            model: Some("gpt-4o"),
            profile: Some("default; by=default"),
            chain: Some("default"),
            planned: vec!["a", "b"],
            skipped: vec!["c"],
            attempts: vec![first.to_json().into_bytes(), second.to_json().into_bytes()],
            usage: Some(usage_json(5, 3, Some(43)).into_bytes()),
            status: 200,
        };
        let line = parse(&line.to_json(&RequestOutcome::Answered));
        assert_eq!(line["servedBy"], "b");
        assert_eq!(line["attempts"][0]["reason"], "rate_limited");
        assert_eq!(line["attempts"][1]["outcome"], "served");
        assert_eq!(line["skipped"], json!(["c"]));
        assert_eq!(line["usage"], json!({"promptTokens": 5, "completionTokens": 3, "costMicroUsd": 43}));
        assert_eq!(line["outcome"], "answered");
        assert_eq!(line["reason"], Value::Null);
        assert_eq!(line["api"], "chat-completions");
    }

    #[test]
    fn a_line_is_written_with_its_keys_in_order_and_its_strings_escaped() {
        let entry = AttemptEntry { attempt: 1, provider: "a", model: Some("m\"1"), status: Some(200), outcome: AttemptOutcome::Served };
        let line = AuditLine {
            time_ms: 7,
            request_id: Some("r\\1"),
            api: Some("chat-completions"),
            model: Some("m\"1"),
            profile: None,
            chain: Some("c"),
            planned: vec!["a", "b"],
            skipped: vec![],
            attempts: vec![entry.to_json().into_bytes()],
            usage: Some(usage_json(5, 3, None).into_bytes()),
            status: 200,
        };
        assert_eq!(
            line.to_json(&RequestOutcome::Answered),
            concat!(
                r#"{"api":"chat-completions","attempts":[{"attempt":1,"model":"m\"1","outcome":"served","provider":"a","status":200}],"#,
                r#""chain":"c","llmFailover":1,"model":"m\"1","outcome":"answered","planned":["a","b"],"profile":null,"reason":null,"#,
                r#""requestId":"r\\1","servedBy":"a","skipped":[],"status":200,"timeMs":7,"#,
                r#""usage":{"completionTokens":3,"costMicroUsd":null,"promptTokens":5}}"#
            )
        );
    }

    #[test]
    fn an_all_down_line_has_no_server_and_unreadable_entries_are_dropped() {
        let failed = AttemptEntry { attempt: 1, provider: "a", model: None, status: Some(503), outcome: AttemptOutcome::Failed("server_error") };
        let line = AuditLine { attempts: vec![failed.to_json().into_bytes(), b"not json".to_vec()], status: 503, ..AuditLine::default() };
        let line = parse(&line.to_json(&RequestOutcome::AllProvidersUnavailable));
        assert_eq!(line["servedBy"], Value::Null);
        assert_eq!(line["attempts"].as_array().unwrap().len(), 1);
        assert_eq!(line["outcome"], "all_providers_unavailable");
        let rejected = parse(&AuditLine { status: 404, ..AuditLine::default() }.to_json(&RequestOutcome::Rejected("unknown_model")));
        assert_eq!((rejected["outcome"].as_str(), rejected["reason"].as_str()), (Some("rejected"), Some("unknown_model")));
    }

    #[test]
    fn each_attempt_has_a_key_of_its_own() {
        assert_eq!(attempt_property(2), "llm_failover.attempt.2");
        assert_ne!(attempt_property(1), attempt_property(11));
    }
}
