//! Attempt role: an upstream HTTP filter on one provider's cluster, run once per attempt. It
//! rewrites the attempt for its provider and records how the provider answered.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use super::abi::{self, HostStore, RequestHeaders};
use super::counters::{self, Counter, Gauge, Histogram};
use super::router::{EXCEEDED_PARAM, ORIGIN_HEADER};
use super::{health_view, log, now_ms, renewer};
use crate::chat;
use crate::inbound::{self, embeddings, ClientApi, Service};
use crate::config::{self, AttemptConfig, Config, ErrorAnswers, CHAT_SUFFIX};
use crate::health::{self, Downstream, Failure, Outcome, SharedStore};
use crate::provider::openai::{self, AnswerContext, ChatRequest};
use crate::provider::StreamTranslator;
use crate::usage::{RateLimitHeaders, UsageScanner};
use crate::audit::{self, AttemptEntry, AttemptOutcome};
use crate::budget;
use crate::error_kind::{self, Cooldown, ErrorKind, StreamStart};

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
    budget_spent: Counter,
    ttfb_ms: Histogram,
    total_ms: Histogram,
    breaker: Gauge,
}

/// Token and cost counters of one model at the provider, defined when first served.
struct ModelCounters {
    prompt_tokens: Counter,
    completion_tokens: Counter,
    cost_micro_usd: Counter,
}

pub struct AttemptRole {
    config: AttemptConfig,
    counters: Counters,
    models: RefCell<HashMap<String, Rc<ModelCounters>>>,
    latency_written_ms: Cell<u64>,
    /// The provider's fingerprint in this config: outcomes are recorded under it.
    config_tag: u64,
}

thread_local! {
    /// Each provider's attempt role in this VM (one per worker), by provider name: the order
    /// clusters' attempt filter learns its provider only from the endpoint Envoy picked.
    static ROLES: RefCell<HashMap<String, Rc<AttemptRole>>> = RefCell::new(HashMap::new());
}

/// The endpoint metadata naming the provider an endpoint belongs to.
const ENDPOINT_PROVIDER: [&str; 5] = ["xds", "upstream_host_metadata", "filter_metadata", "llm_failover", "provider"];

/// Shared data keeps the router role's config (names of environment variables, never keys)
/// for a VM where no router role ran: a VM reloaded after a crash holds only the plugins that
/// have run since, and an attempt filter given a VM of its own none.
const DEPLOYMENT_KEY: &str = "llm-failover/v1/deployment";

/// Makes these the roles the order clusters' attempts take; the newest router config wins.
pub fn register(attempts: Vec<AttemptConfig>, config_json: &[u8]) {
    if HostStore.get(DEPLOYMENT_KEY).is_none_or(|(stored, _)| stored != config_json) {
        if let Err(error) = HostStore.set(DEPLOYMENT_KEY, config_json, None) {
            log(LogLevel::Warn, &format!("llm-failover: provider configs not shared with other VMs: {error:?}"));
        }
    }
    ROLES.with(|roles| {
        let mut roles = roles.borrow_mut();
        for attempt in attempts {
            roles.insert(attempt.provider.name.clone(), Rc::new(AttemptRole::new(attempt)));
        }
    });
}

fn registered(provider: &str) -> Option<Rc<AttemptRole>> {
    if let Some(role) = ROLES.with(|roles| roles.borrow().get(provider).cloned()) {
        return Some(role);
    }
    let (json, _) = HostStore.get(DEPLOYMENT_KEY)?;
    match config::parse(&json, &abi::VmEnvironment) {
        Ok(Config::Router(deployment)) if deployment.attempt(provider).is_some() => {
            log(LogLevel::Info, "llm-failover: this VM takes the provider configs from the router role's shared config");
            let attempts = deployment.attempts;
            ROLES.with(|roles| {
                let mut roles = roles.borrow_mut();
                for attempt in attempts {
                    roles.entry(attempt.provider.name.clone()).or_insert_with(|| Rc::new(AttemptRole::new(attempt)));
                }
                roles.get(provider).cloned()
            })
        }
        Ok(_) => None,
        Err(error) => {
            log(LogLevel::Error, &format!("llm-failover: the router role's shared config is refused in this VM: {error}"));
            None
        }
    }
}

/// Models a provider may be asked for are the clients' to name: past this many, the rest are
/// counted under one name so that metrics stay bounded.
const MAX_MODEL_METRICS: usize = 64;

impl AttemptRole {
    pub fn new(config: AttemptConfig) -> AttemptRole {
        renewer::note_headers(&config.provider);
        let name = &config.provider.name;
        let metric = |event: &str| format!("llm_failover.provider.{name}.{event}");
        let counters = Counters {
            attempts: Counter::define(&metric("attempts")),
            served: Counter::define(&metric("served")),
            failover: Failure::ALL.iter().map(|f| Counter::define(&metric(&format!("failover.{}", f.name())))).collect(),
            budget_spent: Counter::define(&metric("budget_spent")),
            ttfb_ms: Histogram::define(&metric("ttfb_ms")),
            total_ms: Histogram::define(&metric("total_ms")),
            breaker: Gauge::define(&metric("breaker")),
        };
        if let Err(error) = health::ensure_table(&HostStore) {
            log(LogLevel::Warn, &format!("llm-failover: cannot create the health table: {error:?}"));
        }
        let config_tag = config.provider.fingerprint();
        match health::adopt_config(&HostStore, name, config_tag) {
            Ok(true) => log(LogLevel::Info, &format!("llm-failover: provider `{name}` has a new config: its health starts clean")),
            Ok(false) => {}
            Err(error) => log(LogLevel::Warn, &format!("llm-failover: health of `{name}` not reset for its new config: {error:?}")),
        }
        let role = AttemptRole { config, counters, models: RefCell::new(HashMap::new()), latency_written_ms: Cell::new(0), config_tag };
        role.lift_a_spent_mark_the_budget_no_longer_has(now_ms());
        role
    }

    /// A budget raised (or removed) by a new config brings its provider back today.
    fn lift_a_spent_mark_the_budget_no_longer_has(&self, now: u64) {
        let name = &self.config.provider.name;
        let marked = health_view::current(now).get(name).budget_spent_until_ms > now;
        let still_spent = self.config.budget.as_ref().is_some_and(|b| b.is_spent(&budget::spent(&HostStore, name, b, now)));
        if marked && !still_spent {
            match health::budget_spent(&HostStore, name, 0) {
                Ok(()) => log(LogLevel::Info, &format!("llm-failover: the new budget of `{name}` is not spent: it is back in its chains")),
                Err(error) => log(LogLevel::Warn, &format!("llm-failover: spent budget of `{name}` not lifted: {error:?}")),
            }
        }
    }

    fn model_counters(&self, model: &str) -> Rc<ModelCounters> {
        let mut models = self.models.borrow_mut();
        let part = if models.len() < MAX_MODEL_METRICS || models.contains_key(model) { counters::name_part(model) } else { "other".into() };
        models
            .entry(part.clone())
            .or_insert_with(|| {
                let metric = |event: &str| format!("llm_failover.provider.{}.model.{part}.{event}", self.config.provider.name);
                Rc::new(ModelCounters {
                    prompt_tokens: Counter::define(&metric("prompt_tokens")),
                    completion_tokens: Counter::define(&metric("completion_tokens")),
                    cost_micro_usd: Counter::define(&metric("cost_micro_usd")),
                })
            })
            .clone()
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
    /// Held past `maxAnswerBytes`: replaced by an error, the rest of it dropped.
    Dropped,
}

/// A 2xx stream is held until its first event shows content or an error: an error before any
/// content can still fail over, since nothing has reached the client.
const PEEK_LIMIT_BYTES: usize = 64 * 1024;

/// While a stream is held, Envoy's per-try timeout keeps running (the router has not seen the
/// response headers yet). A provider that sends only role chunks or pings while it thinks is
/// released at its first complete event after this long, so a slow start is not taken for a
/// dead provider.
const PEEK_MAX_HOLD_MS: u64 = 1_000;

pub struct AttemptFilter {
    context_id: u32,
    role: Rc<AttemptRole>,
    started_ms: u64,
    attempt: Option<String>,
    model: Option<String>,
    awaiting_body: bool,
    /// The request body held so far, for a request that ends with trailers.
    body_size: usize,
    /// The answer's end has passed: an answer that began and did not end was cut off.
    completed: bool,
    /// The answer's status was judged (at its headers, at its end when held, or when the
    /// attempt refused the request itself): an attempt that ends unjudged got no answer in time.
    judged: bool,
    /// Set when the request was translated: the client asked for a stream.
    translated_stream: Option<bool>,
    answer_context: Option<AnswerContext>,
    /// The API the client speaks (the router role left it in the filter state).
    client: ClientApi,
    answer: Answer,
    status: u16,
    /// The model the client asked for: the key of this model's own breaker.
    requested_model: Option<String>,
    ttfb_ms: u64,
    near_limit_until_ms: Option<u64>,
    usage: UsageScanner,
    /// The provider answered 2xx; the success is recorded once the answer is complete.
    success: bool,
    /// Holding a 2xx stream's start (response headers paused) until it shows content.
    peek_stream: bool,
    /// What the error body said, when it decides the failure rather than the status.
    error_kind: Option<ErrorKind>,
    /// The client's URL, which the router role left for a context-length redirect.
    origin: Option<String>,
    /// When the provider's response headers came.
    headers_at_ms: u64,
    /// The response headers went on before the body was read (`errorAnswers: pass`).
    headers_passed: bool,
    /// This attempt's entry of the audit line is written (once: Envoy keeps the first).
    audited: bool,
    /// An embeddings request translated for this provider: how to write its answer.
    embeddings: Option<embeddings::AnswerShape>,
    /// A Responses request served through chat: what its `response` repeats of the request.
    responses_echo: Option<serde_json::Value>,
    /// The generation of the renewed token this attempt was sent with.
    credential_generation: Option<u64>,
}

impl AttemptFilter {
    pub fn new(context_id: u32, role: Rc<AttemptRole>) -> AttemptFilter {
        let usage = UsageScanner::new(role.config.provider.format);
        AttemptFilter {
            context_id,
            role,
            started_ms: 0,
            attempt: None,
            model: None,
            awaiting_body: false,
            body_size: 0,
            completed: false,
            judged: false,
            translated_stream: None,
            answer_context: None,
            client: ClientApi::ChatCompletions,
            answer: Answer::Pass,
            status: 0,
            requested_model: None,
            ttfb_ms: 0,
            near_limit_until_ms: None,
            usage,
            success: false,
            peek_stream: false,
            error_kind: None,
            origin: None,
            headers_at_ms: 0,
            headers_passed: false,
            audited: false,
            embeddings: None,
            responses_echo: None,
            credential_generation: None,
        }
    }

    /// Leaves this attempt's entry of the audit line in the request's filter state, where the
    /// router role collects it when the answer ends.
    fn audit(&mut self, status: Option<u16>, outcome: AttemptOutcome) {
        let Some(attempt) = self.attempt.as_deref().and_then(|a| a.parse::<u32>().ok()).filter(|_| !self.audited) else {
            return;
        };
        self.audited = true;
        let entry = AttemptEntry { attempt, provider: self.provider_name(), model: self.model.as_deref(), status, outcome };
        abi::set_filter_state(&audit::attempt_property(attempt), entry.to_json().as_bytes());
    }

    /// The serving attempt's tokens and cost, for the audit line.
    fn audit_usage(&self) {
        if !self.usage.found() {
            return;
        }
        let (prompt, completion) = (self.usage.prompt_tokens.unwrap_or(0), self.usage.completion_tokens.unwrap_or(0));
        let model = self.model.as_deref().unwrap_or("unknown");
        let cost = self.role.config.prices.of(model).map(|price| price.micro_usd(prompt, completion));
        abi::set_filter_state(audit::USAGE_PROPERTY, audit::usage_json(prompt, completion, cost).as_bytes());
    }

    fn provider_name(&self) -> &str {
        &self.role.config.provider.name
    }

    /// `errorAnswers: read`: answers may be held until their body is read.
    fn reads_error_answers(&self) -> bool {
        self.role.config.error_answers == ErrorAnswers::Read
    }

    /// The answer is complete: latency, tokens, cost and budget, and the health write a
    /// success needs.
    fn succeeded(&self, now: u64) {
        let role = &self.role;
        let config = &role.config;
        role.counters.served.inc();
        let ttfb_ms = self.ttfb_ms;
        let total_ms = now.saturating_sub(self.started_ms);
        role.counters.ttfb_ms.record(ttfb_ms);
        role.counters.total_ms.record(total_ms);
        let model = self.model.as_deref().unwrap_or("unknown");
        if self.usage.found() {
            let counters = role.model_counters(model);
            let (prompt, completion) = (self.usage.prompt_tokens.unwrap_or(0), self.usage.completion_tokens.unwrap_or(0));
            counters.prompt_tokens.add(prompt);
            counters.completion_tokens.add(completion);
            if let Some(price) = config.prices.of(model) {
                counters.cost_micro_usd.add(price.micro_usd(prompt, completion));
            }
            if config.budget.as_ref().is_some_and(|b| b.tokens_per_day.is_some()) {
                self.spend(0, self.usage.total(), now);
            }
        }
        // A success changes nothing but the latency when the provider was clean: skip the
        // shared write (a lock every worker takes) unless something is due.
        let health = health_view::recent(now, VIEW_MAX_AGE_MS);
        let clean = health.get(self.provider_name()).is_clean(now)
            && self.requested_model.as_deref().is_none_or(|m| health.get(&health::model_key(self.provider_name(), m)).is_clean(now));
        let slow = config.health.latency.slow_ttfb.is_some_and(|limit| u128::from(ttfb_ms) > limit.as_millis());
        let counts_rate = config.health.breaker.error_rate.is_some();
        let latency_due = now.saturating_sub(role.latency_written_ms.get()) >= LATENCY_WRITE_INTERVAL_MS;
        if clean && !slow && !counts_rate && !latency_due && self.near_limit_until_ms.is_none() {
            return;
        }
        role.latency_written_ms.set(now);
        let outcome = Outcome::Success { ttfb_ms, total_ms, near_limit_until_ms: self.near_limit_until_ms };
        if let Some(health) = self.record(outcome, now) {
            role.counters.breaker.set(health.state(now).number());
        }
    }

    /// Counts requests or tokens against the daily budget; a spent budget takes the provider
    /// out of its chains until the budget's day ends.
    fn spend(&self, requests: u64, tokens: u64, now: u64) {
        let Some(budget) = &self.role.config.budget else {
            return;
        };
        let provider = self.provider_name();
        let spent = match budget::spend(&HostStore, provider, budget, requests, tokens, now) {
            Ok(spent) => budget.is_spent(&spent),
            Err(error) => {
                // Fail closed: a budget that cannot be counted is treated as spent.
                log(LogLevel::Warn, &format!("llm-failover #{}: budget of `{provider}` not counted ({error:?}): treating it as spent", self.context_id));
                true
            }
        };
        if !spent {
            return;
        }
        let until = budget.resets_at_ms(now);
        if health_view::recent(now, VIEW_MAX_AGE_MS).get(provider).budget_spent_until_ms == until {
            return;
        }
        self.role.counters.budget_spent.inc();
        log(LogLevel::Warn, &format!("llm-failover #{}: daily budget of `{provider}` is spent; it leaves its chains until the budget resets in {}s", self.context_id, until.saturating_sub(now).div_ceil(1000)));
        if let Err(error) = health::budget_spent(&HostStore, provider, until) {
            log(LogLevel::Warn, &format!("llm-failover #{}: spent budget of `{provider}` not recorded: {error:?}", self.context_id));
        }
    }

    fn failed(&self, failure: Failure, status: u16, retry_after_ms: Option<u64>, now: u64) {
        if let (Failure::Unauthorized, Some(generation)) = (failure, self.credential_generation) {
            renewer::rejected(self.provider_name(), generation, self.context_id);
        }
        let index = Failure::ALL.iter().position(|f| *f == failure);
        if let Some(counter) = index.and_then(|i| self.role.counters.failover.get(i)) {
            counter.inc();
        }
        let Some(health) = self.record(Outcome::Failed { failure, status, retry_after_ms }, now) else {
            return;
        };
        let models_record = self.requested_model.is_some() && health::failure_is_the_models(failure);
        if !models_record {
            // The gauge is the provider's own breaker; a model's shows in the health report.
            self.role.counters.breaker.set(health.state(now).number());
        }
        let status = if status == 0 { String::new() } else { format!("{status} ") };
        let scope = match (&self.requested_model, health::failure_is_the_models(failure)) {
            (Some(model), true) => format!(" for model `{model}`"),
            _ => String::new(),
        };
        let breaker = if !health.open {
            format!("breaker still closed ({} consecutive failures)", health.consecutive_failures)
        } else if health.cooldown_until_ms == health::UNTIL_RESET {
            "cooling down until an operator resets it".to_string()
        } else {
            format!("cooling down {}s", health.remaining_ms(now).div_ceil(1000))
        };
        log(
            LogLevel::Warn,
            &format!(
                "llm-failover #{}: provider `{}` failed ({status}{}){scope} on attempt {}; {breaker}, failing over",
                self.context_id,
                self.provider_name(),
                failure.name(),
                self.attempt.as_deref().unwrap_or("?"),
            ),
        );
    }

    fn record(&self, outcome: Outcome, now: u64) -> Option<health::Health> {
        let provider = self.provider_name();
        let model = self.requested_model.as_deref();
        match health::record_under(&HostStore, provider, self.role.config_tag, model, &outcome, now, &self.role.config.health) {
            Ok(Some(health)) => Some(health),
            Ok(None) => {
                // Envoy is swapping configs: another VM already runs the provider's new one.
                log(LogLevel::Info, &format!("llm-failover #{}: `{provider}` has a new config; this attempt ran with the old one, its outcome is not recorded", self.context_id));
                None
            }
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
            Self::set_content_length(body.len());
        }
    }

    /// The exact length of the body this attempt sends, set while its headers are held: an
    /// earlier attempt's length is still in the shared headers, a stale one truncates the body,
    /// and without one the provider gets a chunked body, which some refuse (Anthropic on Vertex).
    fn set_content_length(length: usize) {
        abi::set_header(MapType::HttpRequestHeaders, "content-length", &length.to_string());
    }

    /// An OpenAI-compatible provider: only the model name may change, every other byte stays.
    fn forward(&mut self, body: &[u8]) {
        let (requested, target, rewritten) = chat::retarget(body, |m| self.role.config.provider.target_model(m).to_string());
        if let Some(rewritten) = rewritten {
            Self::replace_request_body(body.len(), &rewritten);
        }
        self.set_chat_path(&target, false, None);
        self.model = Some(target);
        self.requested_model = Some(requested);
    }

    /// An error this filter writes, in the client's API's shape.
    fn error_body(&self, status: u16, message: &str, openai_kind: &str, code: &str) -> Vec<u8> {
        if self.client.anthropic_shaped() {
            inbound::anthropic::error_body(inbound::anthropic::error_type_for_status(status), message)
        } else {
            openai::error_body(message, openai_kind, Some(code))
        }
    }

    /// The request is the client's fault, not the provider's: no other provider would be told
    /// anything different, so it is answered now rather than failed over.
    fn refuse_request(&mut self, why: &str) -> Action {
        let provider = &self.role.config.provider;
        let message = format!("provider `{}` ({}) cannot take this request: {why}", provider.name, provider.format.name());
        let body = self.error_body(400, &message, "invalid_request_error", "unsupported_by_provider");
        // Answered here, the provider never asked: nothing to hold against it when the attempt ends.
        self.judged = true;
        abi::send_response(400, "llm_failover_unsupported_by_provider", &[("content-type", "application/json")], &body);
        Action::Pause
    }

    /// Anthropic's native providers serve it as it is (model name and key changed); the others
    /// through chat completions: the request becomes a chat request, which an OpenAI-compatible
    /// provider takes as it is and the other formats translate further. Answers come back the
    /// same way (`for_the_client`, `prepare_answer`).
    fn messages_request(&mut self, body: &[u8]) -> Action {
        let provider = &self.role.config.provider;
        if self.client.service(provider.format) == Some(Service::Native) {
            let (target, stream) = self.as_anthropic_sent(body);
            self.set_chat_path(&target, stream, None);
            return Action::Continue;
        }
        let (chat_body, stream) = match inbound::anthropic::chat_request(body) {
            Ok(done) => done,
            Err(unsupported) => return self.refuse_request(&unsupported.0),
        };
        self.as_chat_request(chat_body, stream, body.len())
    }

    /// A token count, asked of an Anthropic-format provider as it is: the router role plans
    /// no other. The same Messages body, its model changed, at the Messages path's `/count_tokens`.
    fn count_tokens_request(&mut self, body: &[u8]) -> Action {
        let provider = &self.role.config.provider;
        if self.client.service(provider.format).is_none() || provider.options.vertex.is_some() {
            return self.refuse_request("it cannot count Anthropic tokens");
        }
        let (target, _) = self.as_anthropic_sent(body);
        let path = format!("{}{}", self.role.config.provider.chat_path(&target, false), config::COUNT_TOKENS_SUFFIX);
        abi::set_header(MapType::HttpRequestHeaders, ":path", &path);
        Action::Continue
    }

    /// An Anthropic client's request to an Anthropic-format provider: only the model changes in
    /// the body (on Vertex AI, it leaves the body for the path). Returns the provider's model
    /// and whether the client asked for a stream, which Vertex sends to another path.
    fn as_anthropic_sent(&mut self, body: &[u8]) -> (String, bool) {
        let provider = &self.role.config.provider;
        let (requested, target, rewritten) = chat::retarget(body, |m| provider.target_model(m).to_string());
        let mut stream = false;
        if provider.options.vertex.is_some() {
            if let Some((sent, streamed)) = crate::provider::vertex::anthropic_body(body) {
                Self::replace_request_body(body.len(), &sent);
                stream = streamed;
            }
        } else if let Some(rewritten) = rewritten {
            Self::replace_request_body(body.len(), &rewritten);
        }
        // The provider's `anthropic-version`, not the client's; its `anthropic-beta` stays,
        // since the body, which may use those features, is the client's.
        for (name, value) in provider.format_headers() {
            abi::set_header(MapType::HttpRequestHeaders, name, &value);
        }
        // An earlier attempt at another format removed it from the shared headers.
        if let Some(beta) = abi::filter_state(inbound::ANTHROPIC_BETA_PROPERTY).and_then(|b| String::from_utf8(b).ok()) {
            abi::set_header(MapType::HttpRequestHeaders, "anthropic-beta", &beta);
        }
        self.model = Some(target.clone());
        self.requested_model = Some(requested);
        (target, stream)
    }

    /// Embeddings at this provider's model for the client's alias: OpenAI-compatible and Azure
    /// providers take the client's body with the model changed, Gemini and Ollama a translation.
    /// The router role only plans providers with a model for the alias.
    fn embeddings_request(&mut self, body: &[u8]) -> Action {
        let config = &self.role.config;
        let provider = &config.provider;
        let request = match embeddings::inspect(body) {
            Ok(request) => request,
            Err(invalid) => return self.refuse_request(&invalid.message),
        };
        let target = config.embedding_models.get(&request.model).cloned();
        let (Some(target), Some(service)) = (target, ClientApi::Embeddings.service(provider.format)) else {
            let why = format!("it has no model for embedding alias `{}`", request.model);
            return self.refuse_request(&why);
        };
        let Some(path) = provider.embeddings_path(&target) else {
            return self.refuse_request("it has no embeddings API");
        };
        if service == Service::Native {
            if let Some(rewritten) = chat::with_model(body, &target) {
                Self::replace_request_body(body.len(), &rewritten);
            }
        } else {
            let translated = match provider.format {
                crate::provider::Format::Gemini => embeddings::gemini::request(&request, &target),
                crate::provider::Format::Ollama => embeddings::ollama::request(&request, &target),
                _ => Err(crate::provider::Unsupported("it has no embeddings API".into())),
            };
            let translated = match translated {
                Ok(translated) => translated,
                Err(unsupported) => return self.refuse_request(&unsupported.0),
            };
            Self::replace_request_body(body.len(), &translated);
            abi::set_header(MapType::HttpRequestHeaders, "content-type", "application/json");
            // The answer is translated: it must come uncompressed.
            abi::set_header(MapType::HttpRequestHeaders, "accept-encoding", "identity");
            self.embeddings = Some(embeddings::AnswerShape { count: request.input.count(), encoding: request.encoding, model: target.clone() });
        }
        abi::set_header(MapType::HttpRequestHeaders, ":path", &path);
        self.model = Some(target);
        self.requested_model = Some(request.model);
        Action::Continue
    }

    /// A provider with `responses: true` serves it as it is (model name and key changed); the
    /// others through chat completions, as Messages are: the request becomes a chat request,
    /// which an OpenAI-compatible provider takes as it is and the other formats translate further.
    fn responses_request(&mut self, body: &[u8]) -> Action {
        let provider = &self.role.config.provider;
        if let Some(path) = provider.responses_path() {
            let (requested, target, rewritten) = chat::retarget(body, |m| provider.target_model(m).to_string());
            if let Some(rewritten) = rewritten {
                Self::replace_request_body(body.len(), &rewritten);
            }
            abi::set_header(MapType::HttpRequestHeaders, ":path", &path);
            // Its answers count tokens as Responses do.
            self.usage = UsageScanner::responses();
            self.model = Some(target);
            self.requested_model = Some(requested);
            return Action::Continue;
        }
        let (chat_body, stream, echo) = match inbound::responses::chat_request(body) {
            Ok(done) => done,
            Err(unsupported) => return self.refuse_request(&unsupported.0),
        };
        self.responses_echo = Some(echo);
        self.as_chat_request(chat_body, stream, body.len())
    }

    /// A client API's request, made a chat request, on to this provider: translated further
    /// for a format of its own, else only its model changed. The answer comes back through chat.
    /// `original_size`: the size of the body buffer it replaces.
    fn as_chat_request(&mut self, chat_body: Vec<u8>, stream: bool, original_size: usize) -> Action {
        let provider = &self.role.config.provider;
        if provider.format.translates() {
            return self.translate(&chat_body, original_size);
        }
        let (requested, target, rewritten) = chat::retarget(&chat_body, |m| provider.target_model(m).to_string());
        let chat_body = rewritten.unwrap_or(chat_body);
        Self::replace_request_body(original_size, &chat_body);
        abi::set_header(MapType::HttpRequestHeaders, "content-type", "application/json");
        // The answer is translated: it must come uncompressed.
        abi::set_header(MapType::HttpRequestHeaders, "accept-encoding", "identity");
        self.set_chat_path(&target, stream, None);
        self.translated_stream = Some(stream);
        self.answer_context = Some(self.new_answer_context(&target, true));
        self.model = Some(target);
        self.requested_model = Some(requested);
        Action::Continue
    }

    fn new_answer_context(&self, target: &str, include_usage: bool) -> AnswerContext {
        let now = now_ms();
        AnswerContext { id: format!("chatcmpl-llmf{:x}{:x}", now, self.context_id), created: now / 1000, model: target.to_string(), include_usage }
    }

    /// Whether answers are OpenAI's by the time the provider's translation is done, and must
    /// still become the client's API's.
    fn answers_through_chat(&self) -> bool {
        match self.client {
            ClientApi::AnthropicMessages => self.client.service(self.role.config.provider.format) == Some(Service::Translated),
            ClientApi::Responses => self.responses_echo.is_some(),
            _ => false,
        }
    }

    /// A held answer (`translated`, or `body` when it passes unchanged) in the client's API.
    fn for_the_client(&mut self, translated: Option<Vec<u8>>, body: &[u8]) -> Option<Vec<u8>> {
        if !self.answers_through_chat() {
            return translated;
        }
        let openai_answer = translated.as_deref().unwrap_or(body);
        let responses = self.responses_echo.as_ref();
        if !(200..300).contains(&self.status) {
            // Responses clients take OpenAI's errors, which the answer already is.
            return if responses.is_some() { translated } else { Some(inbound::anthropic::error_from_openai(self.status, openai_answer)) };
        }
        let context = self.answer_context.clone().unwrap_or_else(|| self.new_answer_context(self.model.as_deref().unwrap_or_default(), true));
        let answered = match responses {
            Some(echo) => inbound::responses::answer(openai_answer, &context, echo),
            None => inbound::anthropic::answer(openai_answer, &context),
        };
        match answered {
            Ok(message) => Some(message),
            Err(why) => {
                log(LogLevel::Warn, &format!("llm-failover #{}: answer of `{}` not understood: {why}", self.context_id, self.provider_name()));
                self.status = 502;
                abi::set_header(MapType::HttpResponseHeaders, ":status", "502");
                let message = format!("provider `{}` sent an answer that could not be read: {why}", self.provider_name());
                Some(self.error_body(502, &message, "api_error", "bad_provider_answer"))
            }
        }
    }

    /// A provider with its own API: the request in its format, and its answer to translate.
    /// `original_size`: the size of the body buffer it replaces.
    fn translate(&mut self, body: &[u8], original_size: usize) -> Action {
        let provider = &self.role.config.provider;
        let translated = ChatRequest::parse(body).map_err(|why| format!("the request is not a chat completion request: {why}"));
        let translated = translated.and_then(|request| {
            let target = provider.target_model(&request.model).to_string();
            let body = provider.translate_request(&request, &target).map_err(|unsupported| unsupported.0)?;
            Ok((request.stream, request.include_usage(), target, body, request.model))
        });
        let (stream, include_usage, target, translated, requested) = match translated {
            Ok(done) => done,
            Err(message) => return self.refuse_request(&message),
        };
        Self::replace_request_body(original_size, &translated);
        abi::set_header(MapType::HttpRequestHeaders, "content-type", "application/json");
        // Translation reads the answer: it must come uncompressed.
        abi::set_header(MapType::HttpRequestHeaders, "accept-encoding", "identity");
        for (name, value) in provider.format_headers() {
            abi::set_header(MapType::HttpRequestHeaders, name, &value);
        }
        abi::set_header(MapType::HttpRequestHeaders, TRANSLATED_HEADER, "1");
        self.set_chat_path(&target, stream, None);
        self.translated_stream = Some(stream);
        self.answer_context = Some(self.new_answer_context(&target, include_usage));
        self.model = Some(target);
        self.requested_model = Some(requested);
        Action::Continue
    }

    /// Records what the status says about the provider and names the attempt on the response.
    fn judge(&mut self, status: u16) {
        self.judged = true;
        let now = now_ms();
        self.ttfb_ms = now.saturating_sub(self.started_ms);
        let outcome = match self.failure_of(status) {
            _ if (200..300).contains(&status) => AttemptOutcome::Served,
            Some(failure) => AttemptOutcome::Failed(failure.name()),
            None => AttemptOutcome::Answered,
        };
        if !matches!(outcome, AttemptOutcome::Failed(_)) {
            // Not retried: this answer is the client's, and any other attempt under way is
            // cancelled for it. Set once, by the first.
            if let Some(attempt) = &self.attempt {
                abi::set_filter_state(audit::ANSWERED_PROPERTY, attempt.as_bytes());
            }
        }
        self.audit(Some(status), outcome);
        if (200..300).contains(&status) {
            // Recorded when the answer is complete (`on_done`), with its total time and tokens.
            self.success = true;
            let policy = &self.role.config.rate_limit;
            // One host call for all of them: most are absent, and each lookup crosses into Envoy.
            let response = abi::headers(MapType::HttpResponseHeaders);
            let limits = RateLimitHeaders::read(|name| response.get_str(name).map(str::to_string), now);
            if limits.nearly_spent(policy.min_remaining_requests, policy.min_remaining_tokens) {
                let reset = limits.reset_in_ms.unwrap_or(health::duration_ms(policy.default_reset));
                self.near_limit_until_ms = Some(now.saturating_add(reset.max(1)));
            }
        } else if let Some(failure) = self.failure_of(status) {
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

    /// What a failed answer says about the provider: the error body's kind where it decides
    /// (a refused prompt or a too-long context is not the provider's fault; an account out of
    /// credit is not a passing rate limit), else the status.
    fn failure_of(&self, status: u16) -> Option<Failure> {
        match self.error_kind.map(ErrorKind::cooldown) {
            Some(Cooldown::None) => None,
            Some(_) if self.error_kind == Some(ErrorKind::InsufficientQuota) => Some(Failure::QuotaExhausted),
            _ => Failure::from_status(status),
        }
    }

    /// Reads an error body: the status Envoy's retry policy should see follows what the error
    /// means. A content-policy refusal or a too-long context is returned as a 400 (no other
    /// provider is tried); an account out of credit is a 429 (the next provider is).
    fn read_error(&mut self, body: &[u8]) {
        let kind = error_kind::classify(self.status, body);
        self.error_kind = Some(kind);
        let status = match kind {
            ErrorKind::ContentPolicy | ErrorKind::ContextLengthExceeded => 400,
            ErrorKind::InsufficientQuota => 429,
            _ => self.status,
        };
        if status != self.status {
            abi::set_header(MapType::HttpResponseHeaders, ":status", &status.to_string());
            self.status = status;
        }
        if kind == ErrorKind::ContextLengthExceeded {
            self.redirect_for_a_larger_context();
        }
    }

    /// Envoy cannot skip the next attempts from here, so the answer becomes an internal
    /// redirect to the client's own URL: Envoy replays the request through the router role,
    /// which then plans only providers with a larger context window than this one's.
    fn redirect_for_a_larger_context(&mut self) {
        let Some(origin) = self.origin.clone() else {
            return;
        };
        let separator = if origin.contains('?') { '&' } else { '?' };
        let location = format!("{origin}{separator}{EXCEEDED_PARAM}={}", self.provider_name());
        abi::set_header(MapType::HttpResponseHeaders, ":status", "307");
        abi::set_header(MapType::HttpResponseHeaders, "location", &location);
        self.status = 307;
    }

    /// The start of a 2xx stream, held: content releases it as a success; an error event
    /// turns it into the failure it reports, which Envoy retries at the next provider.
    fn peek(&mut self, buffered: &[u8], end_of_stream: bool) -> Option<Action> {
        let bedrock = self.role.config.provider.format == crate::provider::Format::Bedrock;
        let start = if bedrock { crate::provider::bedrock::stream_start(buffered) } else { error_kind::stream_start(buffered) };
        // Bedrock's binary frames decide as soon as one is whole.
        let complete_event = bedrock || buffered.windows(2).any(|w| w == b"\n\n" || w == b"\r\n") || buffered.starts_with(b"{") && buffered.contains(&b'\n');
        let held_long = now_ms().saturating_sub(self.headers_at_ms) >= PEEK_MAX_HOLD_MS;
        let decided = end_of_stream || buffered.len() >= PEEK_LIMIT_BYTES || (held_long && complete_event);
        match start {
            StreamStart::Undecided if !decided => return Some(Action::Pause),
            StreamStart::Error(kind) => {
                self.error_kind = Some(kind);
                let status = match kind {
                    ErrorKind::RateLimited | ErrorKind::InsufficientQuota => 429,
                    ErrorKind::Unauthorized => 401,
                    ErrorKind::ContentPolicy | ErrorKind::ContextLengthExceeded | ErrorKind::BadRequest => 400,
                    _ => 503,
                };
                log(
                    LogLevel::Warn,
                    &format!(
                        "llm-failover #{}: `{}` sent an error event ({}) before any content; answering {status}",
                        self.context_id,
                        self.provider_name(),
                        kind.name()
                    ),
                );
                abi::set_header(MapType::HttpResponseHeaders, ":status", &status.to_string());
                self.status = status;
            }
            _ => {}
        }
        self.peek_stream = false;
        self.judge(self.status);
        None
    }

    /// A complete answer in the provider's format, in OpenAI's; one that cannot be read turns
    /// the response into a 502.
    /// The answer as the client gets it: translated, or `None` when it goes as it is (an
    /// OpenAI-format answer that is JSON). One that cannot be read becomes a 502.
    fn read_answer(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let format = self.role.config.provider.format;
        let read = match (&self.embeddings, &self.answer_context) {
            (Some(shape), _) => {
                let vectors = match format {
                    crate::provider::Format::Gemini => embeddings::gemini::answer(body),
                    crate::provider::Format::Ollama => embeddings::ollama::answer(body),
                    _ => Err("not an embeddings format".to_string()),
                };
                vectors.and_then(|v| v.check_count(shape.count)).map(|v| Some(embeddings::openai_answer(&v, shape)))
            }
            (None, Some(context)) => format.answer(body, context).map(Some),
            (None, None) => openai::check_answer(body).map(|()| None),
        };
        read.unwrap_or_else(|why| {
            // Asked for `identity`: an encoded answer is the provider's fault, and says why.
            let why = match answer_encoding() {
                Some(encoding) => format!("it came encoded with `{encoding}` although asked for `identity`"),
                None => why,
            };
            log(LogLevel::Warn, &format!("llm-failover #{}: answer of `{}` not understood: {why}", self.context_id, self.provider_name()));
            self.status = 502;
            abi::set_header(MapType::HttpResponseHeaders, ":status", "502");
            abi::remove_header(MapType::HttpResponseHeaders, "content-encoding");
            abi::remove_header(MapType::HttpResponseHeaders, "content-length");
            let message = format!("provider `{}` sent an answer that could not be read: {why}", self.provider_name());
            Some(self.error_body(502, &message, "api_error", "bad_provider_answer"))
        })
    }

    /// Decides, from the response headers, how the answer comes back; returns the status
    /// health and Envoy's retry policy should see.
    fn prepare_answer(&mut self, status: u16, end_of_stream: bool) -> u16 {
        let format = self.role.config.provider.format;
        let reads_errors = self.reads_error_answers();
        if (!reads_errors && status >= 400) || self.client == ClientApi::Passthrough {
            // Passed on unread (see `ErrorAnswers`; a pass-through's API is not known); only its
            // status may change, which needs no hold: Anthropic's 529 "overloaded" is a 503.
            let effective = format.effective_status(status);
            if effective != status {
                abi::set_header(MapType::HttpResponseHeaders, ":status", &effective.to_string());
            }
            return effective;
        }
        if reads_errors && !end_of_stream && (200..300).contains(&format.effective_status(status)) {
            let content_type = abi::header_str(MapType::HttpResponseHeaders, "content-type").unwrap_or_default();
            self.peek_stream = content_type.starts_with("text/event-stream")
                || content_type.starts_with("application/x-ndjson")
                || (format == crate::provider::Format::Bedrock && content_type.starts_with("application/vnd.amazon.eventstream"));
        }
        if self.embeddings.is_some() {
            // A translated embeddings answer is read whole, success or error, and rewritten.
            let effective = format.effective_status(status);
            if !end_of_stream {
                abi::remove_header(MapType::HttpResponseHeaders, "content-length");
                abi::set_header(MapType::HttpResponseHeaders, "content-type", "application/json");
                self.answer = Answer::Hold { error: !(200..300).contains(&effective) };
            }
            return effective;
        }
        let (Some(stream), Some(context)) = (self.translated_stream, self.answer_context.take()) else {
            if status >= 400 && !end_of_stream {
                self.answer = Answer::Hold { error: true };
            } else if reads_errors && !end_of_stream && !self.peek_stream && (200..300).contains(&status) && answer_encoding().is_none() {
                // Read whole before it goes on: a 200 that is not JSON (a proxy's HTML page, a
                // body cut short) fails over, as a translated provider's would.
                self.answer = Answer::Hold { error: false };
            }
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
        let provider_stream = format.stream(context.clone());
        let stream_translator = if self.answers_through_chat() {
            let client: Box<dyn StreamTranslator> = match &self.responses_echo {
                Some(echo) => Box::new(inbound::responses::Stream::new(context.clone(), echo.clone())),
                None => Box::new(inbound::anthropic::Stream::new(context.clone())),
            };
            Some(inbound::through_chat(provider_stream, client))
        } else {
            provider_stream
        };
        self.answer = match stream_translator {
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
        if self.success && !self.completed {
            // The answer began and never ended: Envoy's deadline cut it, or the provider reset.
            if let Some(failure) = unfinished_attempt_failure(false, self.attempt.as_deref()) {
                log(LogLevel::Warn, &format!("llm-failover #{}: the answer of `{}` was cut off after it began", self.context_id, self.provider_name()));
                self.success = false;
                self.audit(Some(self.status), AttemptOutcome::Failed(failure.name()));
                self.failed(failure, self.status, None, now_ms());
            }
        }
        if self.success {
            self.succeeded(now_ms());
        }
        // Response headers held and never judged count as none: Envoy's per-try timeout can end
        // an attempt while it reads an answer (the soak found these uncounted).
        if !self.judged && self.started_ms != 0 {
            // No response headers: the connection failed, was reset, the per-try timeout fired,
            // or Envoy cancelled us: the client went away, or a hedged attempt answered first
            // (neither is the provider's fault).
            match unfinished_attempt_failure(true, self.attempt.as_deref()) {
                Some(failure) => {
                    self.audit(None, AttemptOutcome::Failed(failure.name()));
                    self.failed(failure, 0, None, now_ms());
                }
                None => self.audit(None, AttemptOutcome::Unanswered),
            }
        }
        true
    }
}

/// The answer's content coding, unless it is `identity`: an answer compressed for the client (who
/// asked for it) is passed on unread; one compressed despite `identity` cannot be translated.
fn answer_encoding() -> Option<String> {
    abi::header_str(MapType::HttpResponseHeaders, "content-encoding").filter(|e| !e.eq_ignore_ascii_case("identity"))
}

/// What an attempt that ended early says about its provider, from Envoy's stream info; `None`
/// when the client went away or another attempt answered. `connecting`: no response headers
/// came, so a transport failure means the provider could not be reached.
fn unfinished_attempt_failure(connecting: bool, attempt: Option<&str>) -> Option<Failure> {
    let property = |path: Vec<&str>| hostcalls::get_property(path).ok().flatten().unwrap_or_default();
    let flags = property(vec!["response", "flags"]);
    let details = property(vec!["response", "code_details"]);
    let answered = abi::filter_state(audit::ANSWERED_PROPERTY);
    let downstream = Downstream {
        response_flags: flags.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes),
        code_details: std::str::from_utf8(&details).unwrap_or_default(),
        answered_elsewhere: answered.is_some_and(|by| Some(by.as_slice()) != attempt.map(str::as_bytes)),
    };
    if !connecting {
        // This attempt's answer was the one going to the client.
        return (!downstream.gone()).then_some(Failure::NoResponse);
    }
    let reason = property(vec!["upstream", "transport_failure_reason"]);
    Failure::from_unanswered(std::str::from_utf8(&reason).unwrap_or("?"), &downstream)
}

impl HttpContext for AttemptFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.started_ms = now_ms();
        self.role.counters.attempts.inc();
        let headers = abi::headers(MapType::HttpRequestHeaders);
        self.attempt = headers.get_str("x-envoy-attempt-count").map(str::to_string);
        self.origin = headers.get_str(ORIGIN_HEADER).map(str::to_string);
        let provider = &self.role.config.provider;
        // Envoy shares these headers between attempts: what an earlier attempt set for another
        // provider is still here.
        provider.rewrite_headers(&mut RequestHeaders { present: &headers });
        self.credential_generation = renewer::apply(provider, &headers, self.context_id);
        for name in provider.stale_format_headers() {
            if headers.contains(name) {
                abi::remove_header(MapType::HttpRequestHeaders, name);
            }
        }
        let path = headers.get_str(":path").unwrap_or_default();
        self.client = abi::filter_state(inbound::API_PROPERTY).and_then(|v| ClientApi::parse(&v)).unwrap_or(ClientApi::ChatCompletions);
        if self.client == ClientApi::Passthrough {
            // Its key and host are set above; the rest goes as the client sent it, but for the
            // path's prefix where the operator rewrote it.
            if let Some(rewritten) = abi::filter_state(inbound::PASSTHROUGH_PATH_PROPERTY).and_then(|p| String::from_utf8(p).ok()) {
                abi::set_header(MapType::HttpRequestHeaders, ":path", &rewritten);
            }
            return Action::Continue;
        }
        // An embeddings request always names its alias, which each provider maps to its model.
        let whole_body = self.client != ClientApi::ChatCompletions;
        let chat = whole_body || path.split('?').next().unwrap_or_default().ends_with(CHAT_SUFFIX) || headers.contains(TRANSLATED_HEADER);
        if !chat {
            return Action::Continue;
        }
        self.spend(1, 0, self.started_ms);
        if self.client == ClientApi::ChatCompletions && !provider.needs_body() {
            // The body goes as it is: the router role's note gives its length (an earlier
            // attempt's may be in the shared headers) and its model.
            if let Some((length, model)) = abi::filter_state(inbound::CHAT_REQUEST_PROPERTY).and_then(|v| inbound::read_chat_request_note(&v)) {
                Self::set_content_length(length);
                self.set_chat_path(&model, false, Some(path));
                self.model = Some(model.clone());
                self.requested_model = Some(model);
                return Action::Continue;
            }
        }
        // Held for the body, whose length goes in the headers.
        if !end_of_stream {
            self.awaiting_body = true;
            return Action::Pause;
        }
        self.set_chat_path("", false, Some(path));
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.body_size = body_size;
        if !self.awaiting_body {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.request_complete(body_size)
    }

    /// A body that ends with trailers (Envoy's decompressor adds its byte counts) is whole here.
    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        if self.awaiting_body {
            return self.request_complete(self.body_size);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        self.completed = end_of_stream;
        self.headers_at_ms = now_ms();
        let status: u16 = abi::header_str(MapType::HttpResponseHeaders, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        self.status = self.prepare_answer(status, end_of_stream);
        if self.peek_stream || (self.reads_error_answers() && matches!(self.answer, Answer::Hold { .. })) {
            // Held until the body is read: an answer that cannot be read becomes a 502, and an
            // error may mean another status than it has (Gemini's 400 for a bad key is a 401),
            // which decides whether Envoy retries at the next provider.
            return Action::Pause;
        }
        // With `errorAnswers: pass` a translated answer's headers go on at once, its body still
        // held and translated: Envoy 1.36 crashes retrying after held headers, and an unreadable
        // answer turned 502 is retried (measured).
        self.headers_passed = true;
        self.judge(self.status);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.completed |= end_of_stream;
        let action = self.response_body(body_size, end_of_stream);
        if end_of_stream && self.success {
            self.audit_usage();
        }
        action
    }
}

impl AttemptFilter {
    fn request_complete(&mut self, body_size: usize) -> Action {
        self.awaiting_body = false;
        let body = abi::body(BufferType::HttpRequestBody, body_size);
        Self::set_content_length(body.len());
        match self.client {
            ClientApi::AnthropicMessages => return self.messages_request(&body),
            ClientApi::Embeddings => return self.embeddings_request(&body),
            ClientApi::CountTokens => return self.count_tokens_request(&body),
            ClientApi::Responses => return self.responses_request(&body),
            ClientApi::ChatCompletions | ClientApi::ModelsList | ClientApi::Passthrough => {}
        }
        if self.role.config.provider.format.translates() {
            return self.translate(&body, body.len());
        }
        self.forward(&body);
        Action::Continue
    }

    /// An answer too large to hold: the client is told, in place of it, and while its headers
    /// are still held Envoy tries the next provider (a 502).
    fn too_large_answer(&mut self, body_size: usize) -> Action {
        let limit = self.role.config.max_answer_bytes;
        log(
            LogLevel::Warn,
            &format!("llm-failover #{}: answer of `{}` is larger than maxAnswerBytes ({limit}); dropped", self.context_id, self.provider_name()),
        );
        let message = format!("provider `{}` sent an answer larger than the {limit} bytes this gateway holds to read it", self.provider_name());
        let body = self.error_body(502, &message, "api_error", "answer_too_large");
        let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &body);
        self.answer = Answer::Dropped;
        if self.headers_passed {
            if self.success {
                self.success = false;
                self.failed(Failure::ServerError, 502, None, now_ms());
            }
        } else {
            abi::set_header(MapType::HttpResponseHeaders, ":status", "502");
            abi::set_header(MapType::HttpResponseHeaders, "content-type", "application/json");
            abi::remove_header(MapType::HttpResponseHeaders, "content-length");
            self.status = 502;
            self.judge(502);
        }
        Action::Continue
    }

    fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // Read each chunk once, and only where it is used: a held body whole at its end.
        let held = matches!(self.answer, Answer::Hold { .. });
        if held && !end_of_stream && body_size > self.role.config.max_answer_bytes {
            return self.too_large_answer(body_size);
        }
        if matches!(self.answer, Answer::Dropped) {
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &[]);
            return Action::Continue;
        }
        let needed = self.peek_stream
            || match self.answer {
                Answer::Pass => self.success,
                Answer::Stream(_) => true,
                Answer::Hold { .. } => end_of_stream,
                Answer::Dropped => false,
            };
        if !needed {
            return if matches!(self.answer, Answer::Hold { .. }) { Action::Pause } else { Action::Continue };
        }
        let chunk = abi::body(BufferType::HttpResponseBody, body_size);
        if self.peek_stream {
            if let Some(action) = self.peek(&chunk, end_of_stream) {
                return action;
            }
            // Decided: everything held so far goes on as one chunk.
        }
        match &mut self.answer {
            Answer::Pass => {
                if self.success {
                    self.usage.feed(&chunk);
                }
                Action::Continue
            }
            Answer::Stream(translator) => {
                self.usage.feed(&chunk);
                let mut out = translator.feed(&chunk);
                if end_of_stream {
                    out.extend(translator.finish());
                }
                let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &out);
                Action::Continue
            }
            Answer::Dropped => Action::Continue,
            Answer::Hold { error } => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let error = *error;
                let body = chunk;
                if !error {
                    self.usage.feed(&body);
                }
                let format = self.role.config.provider.format;
                let translated = if error {
                    let status = format.error_status(self.status, &body);
                    if status != self.status {
                        abi::set_header(MapType::HttpResponseHeaders, ":status", &status.to_string());
                    }
                    // A native Messages answer's error is already in the client's shape.
                    let native = self.client.anthropic_shaped() && !self.answers_through_chat();
                    let translated = if native {
                        None
                    } else {
                        let error_type = abi::header_str(MapType::HttpResponseHeaders, "x-amzn-errortype");
                        Some(format.error(self.status, &body, error_type.as_deref()))
                    };
                    self.status = status;
                    self.read_error(&body);
                    translated
                } else {
                    self.read_answer(&body)
                };
                let translated = self.for_the_client(translated, &body);
                if let Some(translated) = translated {
                    let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &translated);
                }
                if !self.headers_passed {
                    self.judge(self.status);
                } else if let Some(failure) = Failure::from_status(self.status).filter(|_| self.success) {
                    // The client already has a 200: the answer's error body says what went wrong.
                    self.success = false;
                    self.failed(failure, self.status, None, now_ms());
                }
                Action::Continue
            }
        }
    }
}

/// The attempt filter of an order cluster (an aggregate over provider clusters): Envoy picks the
/// endpoint, its metadata names the provider, and that provider's attempt role (from the router
/// role's config, in this VM or from shared data) rewrites and records the attempt.
pub struct ByEndpoint {
    context_id: u32,
    attempt: Option<AttemptFilter>,
}

impl ByEndpoint {
    pub fn new(context_id: u32) -> ByEndpoint {
        ByEndpoint { context_id, attempt: None }
    }

    /// No provider to speak for: the request cannot be sent with the right key, so it is not
    /// sent at all.
    fn misconfigured(&self, provider: Option<&str>) -> Action {
        let why = match provider {
            None => "the endpoint Envoy chose has no `llm_failover.provider` in its metadata".to_string(),
            Some(name) => format!("provider `{name}` is not in the router role's `providers`"),
        };
        log(LogLevel::Error, &format!("llm-failover #{}: attempt not sent: {why}", self.context_id));
        let message = format!("the gateway is misconfigured: {why}");
        let body = match abi::filter_state(inbound::API_PROPERTY).and_then(|v| ClientApi::parse(&v)) {
            Some(api) if api.anthropic_shaped() => inbound::anthropic::error_body("api_error", &message),
            _ => openai::error_body(&message, "server_error", Some("gateway_misconfigured")),
        };
        abi::send_response(500, "llm_failover_misconfigured", &[("content-type", "application/json")], &body);
        Action::Pause
    }
}

impl Context for ByEndpoint {
    fn on_done(&mut self) -> bool {
        self.attempt.as_mut().is_none_or(AttemptFilter::on_done)
    }
}

impl HttpContext for ByEndpoint {
    fn on_http_request_headers(&mut self, headers: usize, end_of_stream: bool) -> Action {
        let provider = hostcalls::get_property(ENDPOINT_PROVIDER.to_vec()).ok().flatten().and_then(|v| String::from_utf8(v).ok());
        let Some(role) = provider.as_deref().and_then(registered) else {
            return self.misconfigured(provider.as_deref());
        };
        let attempt = self.attempt.insert(AttemptFilter::new(self.context_id, role));
        attempt.on_http_request_headers(headers, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.attempt.as_mut().map_or(Action::Continue, |a| a.on_http_request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, trailers: usize) -> Action {
        self.attempt.as_mut().map_or(Action::Continue, |a| a.on_http_request_trailers(trailers))
    }

    fn on_http_response_headers(&mut self, headers: usize, end_of_stream: bool) -> Action {
        self.attempt.as_mut().map_or(Action::Continue, |a| a.on_http_response_headers(headers, end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.attempt.as_mut().map_or(Action::Continue, |a| a.on_http_response_body(body_size, end_of_stream))
    }
}
