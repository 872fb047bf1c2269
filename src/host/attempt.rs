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
use crate::provider::openai::{self, AnswerContext, ChatRequest};
use crate::provider::StreamTranslator;

pub const PROVIDER_HEADER: &str = "x-llm-provider";
pub const MODEL_HEADER: &str = "x-llm-model";
pub const ATTEMPTS_HEADER: &str = "x-llm-attempts";
/// Set by an attempt that moved the request off `/chat/completions` (to `/v1/messages`...):
/// the next attempt sees that path, since Envoy shares the headers between attempts.
pub const TRANSLATED_HEADER: &str = "x-llm-failover-translated";

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

/// What the attempt does with the provider's answer on its way back to the client.
enum Answer {
    /// OpenAI-compatible: as it is.
    Pass,
    /// A complete answer or an error in another format: held whole, then translated.
    Hold { error: bool },
    /// A stream in another format: translated chunk by chunk.
    Stream(Box<dyn StreamTranslator>),
}

pub struct AttemptFilter {
    context_id: u32,
    role: Rc<AttemptRole>,
    started_ms: u64,
    attempt: Option<String>,
    model: Option<String>,
    awaiting_body: bool,
    answered: bool,
    /// Set when the request was translated: the client asked for a stream.
    translated_stream: Option<bool>,
    answer_context: Option<AnswerContext>,
    answer: Answer,
    status: u16,
}

impl AttemptFilter {
    pub fn new(context_id: u32, role: Rc<AttemptRole>) -> AttemptFilter {
        AttemptFilter {
            context_id,
            role,
            started_ms: 0,
            attempt: None,
            model: None,
            awaiting_body: false,
            answered: false,
            translated_stream: None,
            answer_context: None,
            answer: Answer::Pass,
            status: 0,
        }
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

    /// Sets the path once the model is known (Azure and Gemini put it there).
    fn set_chat_path(&self, target_model: &str, stream: bool, current: Option<&str>) {
        let path = self.role.config.provider.chat_path(target_model, stream);
        if current != Some(path.as_str()) {
            abi::set_header(MapType::HttpRequestHeaders, ":path", &path);
        }
    }

    fn replace_request_body(body_size: usize, body: &[u8]) {
        if hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, body).is_ok() {
            abi::remove_header(MapType::HttpRequestHeaders, "content-length");
        }
    }

    /// An OpenAI-compatible provider: only the model name may change, every other byte stays.
    fn forward(&mut self, body: &[u8]) {
        let requested = chat::requested_model(body).map(|m| m.into_owned()).unwrap_or_default();
        let target = self.role.config.provider.target_model(&requested).to_string();
        if let Some(rewritten) = chat::with_model(body, &target) {
            Self::replace_request_body(body.len(), &rewritten);
        }
        self.set_chat_path(&target, false, None);
        self.model = Some(target);
    }

    /// A provider with its own API: the request in its format, and its answer to translate.
    fn translate(&mut self, body: &[u8]) -> Action {
        let provider = &self.role.config.provider;
        let translated = ChatRequest::parse(body).map_err(|why| format!("the request is not a chat completion request: {why}"));
        let translated = translated.and_then(|request| {
            let target = provider.target_model(&request.model).to_string();
            let body = provider.translate_request(&request, &target).map_err(|unsupported| unsupported.0)?;
            Ok((request.stream, request.include_usage(), target, body))
        });
        let (stream, include_usage, target, translated) = match translated {
            Ok(done) => done,
            Err(message) => {
                // The request's fault, not the provider's: no other provider would be told
                // anything different, so answer now rather than fail over.
                let message = format!("provider `{}` ({}) cannot take this request: {message}", provider.name, provider.format.name());
                let body = openai::error_body(&message, "invalid_request_error", Some("unsupported_by_provider"));
                abi::send_response(400, "llm_failover_unsupported_by_provider", &[("content-type", "application/json")], &body);
                return Action::Pause;
            }
        };
        Self::replace_request_body(body.len(), &translated);
        abi::set_header(MapType::HttpRequestHeaders, "content-type", "application/json");
        // Translation reads the answer: it must come uncompressed.
        abi::set_header(MapType::HttpRequestHeaders, "accept-encoding", "identity");
        for (name, value) in provider.format_headers() {
            abi::set_header(MapType::HttpRequestHeaders, name, &value);
        }
        abi::set_header(MapType::HttpRequestHeaders, TRANSLATED_HEADER, "1");
        self.set_chat_path(&target, stream, None);
        self.translated_stream = Some(stream);
        let now = now_ms();
        self.answer_context = Some(AnswerContext {
            id: format!("chatcmpl-llmf{:x}{:x}", now, self.context_id),
            created: now / 1000,
            model: target.clone(),
            include_usage,
        });
        self.model = Some(target);
        Action::Continue
    }

    /// Records what the status says about the provider and names the attempt on the response.
    fn judge(&self, status: u16) {
        let now = now_ms();
        if (200..300).contains(&status) {
            self.succeeded(now);
        } else if let Some(failure) = Failure::from_status(status) {
            let retry_after = abi::header_str(MapType::HttpResponseHeaders, "retry-after");
            let retry_after_ms = retry_after.and_then(|v| health::parse_retry_after(&v, now));
            self.failed(failure, status, retry_after_ms, now);
        }
        abi::set_header(MapType::HttpResponseHeaders, PROVIDER_HEADER, self.provider_name());
        if let Some(model) = &self.model {
            abi::set_header(MapType::HttpResponseHeaders, MODEL_HEADER, model);
        }
        if let Some(attempt) = &self.attempt {
            abi::set_header(MapType::HttpResponseHeaders, ATTEMPTS_HEADER, attempt);
        }
    }

    /// A complete answer in the provider's format, in OpenAI's; one that cannot be read turns
    /// the response into a 502.
    fn read_answer(&mut self, body: &[u8]) -> Vec<u8> {
        let format = self.role.config.provider.format;
        let read = match &self.answer_context {
            Some(context) => format.answer(body, context),
            None => Err("no answer context".into()),
        };
        read.unwrap_or_else(|why| {
            log(LogLevel::Warn, &format!("llm-failover #{}: answer of `{}` not understood: {why}", self.context_id, self.provider_name()));
            self.status = 502;
            abi::set_header(MapType::HttpResponseHeaders, ":status", "502");
            let message = format!("provider `{}` sent an answer that could not be read: {why}", self.provider_name());
            openai::error_body(&message, "api_error", Some("bad_provider_answer"))
        })
    }

    /// Decides, from the response headers, how the answer comes back; returns the status
    /// health and Envoy's retry policy should see.
    fn prepare_answer(&mut self, status: u16, end_of_stream: bool) -> u16 {
        let format = self.role.config.provider.format;
        let (Some(stream), Some(context)) = (self.translated_stream, self.answer_context.take()) else {
            return status;
        };
        let effective = format.effective_status(status);
        if effective != status {
            abi::set_header(MapType::HttpResponseHeaders, ":status", &effective.to_string());
        }
        if end_of_stream {
            return effective;
        }
        abi::remove_header(MapType::HttpResponseHeaders, "content-length");
        let success = (200..300).contains(&effective);
        self.answer = match format.stream(context.clone()) {
            Some(translator) if success && stream => {
                abi::set_header(MapType::HttpResponseHeaders, "content-type", "text/event-stream");
                Answer::Stream(translator)
            }
            _ => {
                abi::set_header(MapType::HttpResponseHeaders, "content-type", "application/json");
                self.answer_context = Some(context);
                Answer::Hold { error: !success }
            }
        };
        effective
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
        for name in provider.stale_format_headers() {
            if headers.contains(name) {
                abi::remove_header(MapType::HttpRequestHeaders, name);
            }
        }
        let path = headers.get_str(":path").unwrap_or_default();
        let chat = path.split('?').next().unwrap_or_default().ends_with(CHAT_SUFFIX) || headers.contains(TRANSLATED_HEADER);
        if !chat {
            return Action::Continue;
        }
        if provider.needs_body() && !end_of_stream {
            self.awaiting_body = true;
            return Action::Pause;
        }
        self.set_chat_path("", false, Some(path));
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
        if self.role.config.provider.format.translates() {
            return self.translate(&body);
        }
        self.forward(&body);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.answered = true;
        let status: u16 = abi::header_str(MapType::HttpResponseHeaders, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        self.status = self.prepare_answer(status, end_of_stream);
        if matches!(self.answer, Answer::Hold { error: false }) {
            // Held until the answer is read: one that cannot be read becomes a 502, which
            // Envoy retries at the next provider.
            return Action::Pause;
        }
        self.judge(self.status);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &mut self.answer {
            Answer::Pass => Action::Continue,
            Answer::Stream(translator) => {
                let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
                let mut out = translator.feed(&chunk);
                if end_of_stream {
                    out.extend(translator.finish());
                }
                let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out);
                Action::Continue
            }
            Answer::Hold { error } => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let error = *error;
                let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size).ok().flatten().unwrap_or_default();
                let translated = if error { self.role.config.provider.format.error(self.status, &body) } else { self.read_answer(&body) };
                let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &translated);
                if !error {
                    self.judge(self.status);
                }
                Action::Continue
            }
        }
    }
}
