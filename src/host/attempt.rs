//! Attempt role: an upstream HTTP filter on one provider's cluster, run once per attempt. It
//! rewrites the attempt for its provider and records how the provider answered.

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use super::abi::{self, HostStore, RequestHeaders};
use super::counters::Counter;
use super::{health_view, log, now_ms};
use crate::chat;
use crate::config::{AttemptConfig, CHAT_SUFFIX};
use crate::health::{self, Downstream, Failure, Outcome};

pub const PROVIDER_HEADER: &str = "x-llm-provider";
pub const MODEL_HEADER: &str = "x-llm-model";
pub const ATTEMPTS_HEADER: &str = "x-llm-attempts";

/// How long a worker may keep a healthy provider's latency to itself before writing it to
/// shared health. Failures and recoveries are written at once.
const LATENCY_WRITE_INTERVAL_MS: u64 = 10_000;

/// How old this worker's view of shared health may be when a success decides whether it has
/// anything to write.
const VIEW_MAX_AGE_MS: u64 = 1_000;

struct Counters {
    attempts: Counter,
    served: Counter,
    /// In the order of `Failure::ALL`.
    failover: Vec<Counter>,
}

pub struct AttemptRole {
    config: AttemptConfig,
    counters: Counters,
    latency_written_ms: Cell<u64>,
}

impl AttemptRole {
    pub fn new(config: AttemptConfig) -> AttemptRole {
        let name = &config.provider.name;
        let counter = |event: &str| Counter::define(&format!("llm_failover.provider.{name}.{event}"));
        let counters = Counters {
            attempts: counter("attempts"),
            served: counter("served"),
            failover: Failure::ALL.iter().map(|f| counter(&format!("failover.{}", f.name()))).collect(),
        };
        if let Err(error) = health::ensure_table(&HostStore) {
            log(LogLevel::Warn, &format!("llm-failover: cannot create the health table: {error:?}"));
        }
        AttemptRole { config, counters, latency_written_ms: Cell::new(0) }
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

    fn succeeded(&self, now: u64) {
        let role = &self.role;
        role.counters.served.inc();
        // A success changes nothing but the latency when the provider was clean: skip the
        // shared write (a lock every worker takes) unless the latency is due.
        let clean = health_view::recent(now, VIEW_MAX_AGE_MS).get(self.provider_name()).is_clean(now);
        if clean && now.saturating_sub(role.latency_written_ms.get()) < LATENCY_WRITE_INTERVAL_MS {
            return;
        }
        role.latency_written_ms.set(now);
        self.record(Outcome::Success { latency_ms: now.saturating_sub(self.started_ms) }, now);
    }

    fn failed(&self, failure: Failure, status: u16, retry_after_ms: Option<u64>, now: u64) {
        let index = Failure::ALL.iter().position(|f| *f == failure);
        if let Some(counter) = index.and_then(|i| self.role.counters.failover.get(i)) {
            counter.inc();
        }
        let Some(health) = self.record(Outcome::Failed { failure, status, retry_after_ms }, now) else {
            return;
        };
        let status = if status == 0 { String::new() } else { format!("{status} ") };
        log(
            LogLevel::Warn,
            &format!(
                "llm-failover #{}: provider `{}` failed ({status}{}) on attempt {}; cooling down {}s, failing over",
                self.context_id,
                self.provider_name(),
                failure.name(),
                self.attempt.as_deref().unwrap_or("?"),
                health.remaining_ms(now).div_ceil(1000)
            ),
        );
    }

    fn record(&self, outcome: Outcome, now: u64) -> Option<health::Health> {
        let provider = self.provider_name();
        match health::record(&HostStore, provider, &outcome, now, &self.role.config.cooldowns) {
            Ok(health) => Some(health),
            Err(error) => {
                log(LogLevel::Warn, &format!("llm-failover #{}: health of `{provider}` not recorded: {error:?}", self.context_id));
                None
            }
        }
    }

    /// Sets the path once the model is known (Azure puts its deployment there).
    fn set_chat_path(&self, requested_model: &str, current: Option<&str>) {
        let provider = &self.role.config.provider;
        let path = provider.chat_path(provider.target_model(requested_model), false);
        if current != Some(path.as_str()) {
            abi::set_header(MapType::HttpRequestHeaders, ":path", &path);
        }
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
                self.failed(failure, 0, None, now_ms());
            }
        }
        true
    }
}

impl HttpContext for AttemptFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.started_ms = now_ms();
        self.role.counters.attempts.inc();
        let headers = abi::headers(MapType::HttpRequestHeaders);
        self.attempt = headers.get_str("x-envoy-attempt-count").map(str::to_string);
        let provider = &self.role.config.provider;
        // Envoy shares these headers between attempts: what an earlier attempt set for another
        // provider is still here.
        provider.rewrite_headers(&mut RequestHeaders { present: &headers });
        let path = headers.get_str(":path").unwrap_or_default();
        if !path.split('?').next().unwrap_or_default().ends_with(CHAT_SUFFIX) {
            return Action::Continue;
        }
        if provider.needs_body() && !end_of_stream {
            self.awaiting_body = true;
            return Action::Pause;
        }
        self.set_chat_path("", Some(path));
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
        self.set_chat_path(&requested, None);
        self.model = Some(target);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.answered = true;
        let headers = abi::headers(MapType::HttpResponseHeaders);
        let status: u16 = headers.get_str(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let now = now_ms();
        if (200..300).contains(&status) {
            self.succeeded(now);
        } else if let Some(failure) = Failure::from_status(status) {
            let retry_after_ms = headers.get_str("retry-after").and_then(|v| health::parse_retry_after(v, now));
            self.failed(failure, status, retry_after_ms, now);
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
