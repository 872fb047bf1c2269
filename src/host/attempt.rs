//! Attempt role: an upstream HTTP filter on one provider's cluster, run once per attempt. It
//! rewrites the attempt for its provider and records how the provider answered.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use super::abi::{self, HostStore};
use super::counters::Counters;
use super::{log, now_ms};
use crate::config::{AttemptConfig, CHAT_SUFFIX};
use crate::health::{self, Downstream, Failure, Outcome};
use crate::chat;

pub const PROVIDER_HEADER: &str = "x-llm-provider";
pub const MODEL_HEADER: &str = "x-llm-model";
pub const ATTEMPTS_HEADER: &str = "x-llm-attempts";

pub struct AttemptRole {
    config: AttemptConfig,
    counters: Counters,
}

impl AttemptRole {
    pub fn new(config: AttemptConfig) -> AttemptRole {
        let counters = Counters::default();
        let name = &config.provider.name;
        counters.define(&format!("llm_failover.provider.{name}.attempts"));
        counters.define(&format!("llm_failover.provider.{name}.served"));
        for failure in Failure::ALL {
            counters.define(&format!("llm_failover.provider.{name}.failover.{}", failure.name()));
        }
        if let Err(error) = health::ensure_record(&HostStore, name) {
            log(LogLevel::Warn, &format!("llm-failover: cannot create the health record of `{name}`: {error:?}"));
        }
        AttemptRole { config, counters }
    }
}

pub struct AttemptFilter {
    context_id: u32,
    role: Rc<AttemptRole>,
    started_ms: u64,
    attempt: Option<String>,
    model: Option<String>,
    awaiting_body: bool,
    answered: bool,
}

impl AttemptFilter {
    pub fn new(context_id: u32, role: Rc<AttemptRole>) -> AttemptFilter {
        AttemptFilter { context_id, role, started_ms: 0, attempt: None, model: None, awaiting_body: false, answered: false }
    }

    fn provider_name(&self) -> &str {
        &self.role.config.provider.name
    }

    fn record(&self, outcome: Outcome) {
        let provider = self.provider_name();
        let now = now_ms();
        let health = match health::record(&HostStore, provider, &outcome, now, &self.role.config.cooldowns) {
            Ok(health) => health,
            Err(error) => {
                log(LogLevel::Warn, &format!("llm-failover #{}: health of `{provider}` not recorded: {error:?}", self.context_id));
                return;
            }
        };
        let counters = &self.role.counters;
        match outcome {
            Outcome::Success { .. } => counters.inc(&format!("llm_failover.provider.{provider}.served")),
            Outcome::Failed { failure, status, .. } => {
                counters.inc(&format!("llm_failover.provider.{provider}.failover.{}", failure.name()));
                let status = if status == 0 { String::new() } else { format!("{status} ") };
                log(
                    LogLevel::Warn,
                    &format!(
                        "llm-failover #{}: provider `{provider}` failed ({status}{}) on attempt {}; cooling down {}s, failing over",
                        self.context_id,
                        failure.name(),
                        self.attempt.as_deref().unwrap_or("?"),
                        health.remaining_ms(now).div_ceil(1000)
                    ),
                );
            }
        }
    }

    /// Sets the path once the model is known (Azure puts its deployment there).
    fn set_chat_path(&self, requested_model: &str) {
        let provider = &self.role.config.provider;
        let path = provider.chat_path(provider.target_model(requested_model));
        abi::set_header(MapType::HttpRequestHeaders, ":path", &path);
    }
}

impl Context for AttemptFilter {
    fn on_done(&mut self) -> bool {
        if !self.answered && self.started_ms != 0 {
            // No response headers: the connection failed, was reset, the per-try timeout fired,
            // or the client went away and Envoy cancelled us (not the provider's fault).
            let property = |path: Vec<&str>| hostcalls::get_property(path).ok().flatten().unwrap_or_default();
            let reason = property(vec!["upstream", "transport_failure_reason"]);
            let flags = property(vec!["response", "flags"]);
            let details = property(vec!["response", "code_details"]);
            let downstream = Downstream {
                response_flags: flags.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes),
                code_details: std::str::from_utf8(&details).unwrap_or_default(),
            };
            if let Some(failure) = Failure::from_unanswered(std::str::from_utf8(&reason).unwrap_or("?"), &downstream) {
                self.record(Outcome::Failed { failure, status: 0, retry_after_ms: None });
            }
        }
        true
    }
}

impl HttpContext for AttemptFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.started_ms = now_ms();
        self.role.counters.inc(&format!("llm_failover.provider.{}.attempts", self.provider_name()));
        self.attempt = abi::header(MapType::HttpRequestHeaders, "x-envoy-attempt-count");
        let provider = &self.role.config.provider;
        // Envoy shares these headers between attempts: what an earlier attempt set for another
        // provider is still here.
        provider.rewrite_headers(&mut abi::RequestHeaders);
        let path = abi::header(MapType::HttpRequestHeaders, ":path").unwrap_or_default();
        let is_chat = path.split('?').next().unwrap_or_default().ends_with(CHAT_SUFFIX);
        if !is_chat {
            return Action::Continue;
        }
        if provider.needs_body() && !end_of_stream {
            self.awaiting_body = true;
            return Action::Pause;
        }
        self.set_chat_path("");
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.awaiting_body {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.awaiting_body = false;
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size).ok().flatten().unwrap_or_default();
        let requested = chat::requested_model(&body).map(|m| m.into_owned()).unwrap_or_default();
        let target = self.role.config.provider.target_model(&requested).to_string();
        if let Some(rewritten) = chat::with_model(&body, &target) {
            if hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, &rewritten).is_ok() {
                abi::remove_header(MapType::HttpRequestHeaders, "content-length");
            }
        }
        self.set_chat_path(&requested);
        self.model = Some(target);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.answered = true;
        let status: u16 = abi::header(MapType::HttpResponseHeaders, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let now = now_ms();
        if (200..300).contains(&status) {
            self.record(Outcome::Success { latency_ms: now.saturating_sub(self.started_ms) });
        } else if let Some(failure) = Failure::from_status(status) {
            let retry_after_ms = abi::header(MapType::HttpResponseHeaders, "retry-after")
                .and_then(|v| health::parse_retry_after(&v, now));
            self.record(Outcome::Failed { failure, status, retry_after_ms });
        }
        abi::set_header(MapType::HttpResponseHeaders, PROVIDER_HEADER, self.provider_name());
        if let Some(model) = &self.model {
            abi::set_header(MapType::HttpResponseHeaders, MODEL_HEADER, model);
        }
        if let Some(attempt) = &self.attempt {
            abi::set_header(MapType::HttpResponseHeaders, ATTEMPTS_HEADER, attempt);
        }
        Action::Continue
    }
}
