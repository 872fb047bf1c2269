//! Router role: an HCM filter before Envoy's router. It reads the chat request, picks the
//! provider order from shared health and hands it to Envoy; on the way back it turns "every
//! attempt failed" into one OpenAI-style 503.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use super::abi::{self, HostStore};
use super::attempt::ATTEMPTS_HEADER;
use super::counters::Counters;
use super::{log, now_ms};
use crate::chat::{self, BadRequest};
use crate::config::{RouterConfig, ORDER_HEADER};
use crate::{health, openai_error, priority_groups, routing};

/// Headers a client could use to choose routes, retries or timeouts: stripped from every
/// request so only this filter and Envoy's own config decide them.
const INTERNAL_HEADERS: &[&str] = &[
    ORDER_HEADER,
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-hedge-on-per-try-timeout",
];

pub const SKIPPED_HEADER: &str = "x-llm-skipped";

pub struct RouterRole {
    config: RouterConfig,
    counters: Counters,
}

impl RouterRole {
    pub fn new(config: RouterConfig) -> RouterRole {
        let counters = Counters::default();
        for name in [
            "requests",
            "last_resort",
            "exhausted",
            "retries_cut_short",
            "rejected.bad_request",
            "rejected.too_large",
            "rejected.unknown_model",
            "rejected.body_timeout",
        ] {
            counters.define(&format!("llm_failover.{name}"));
        }
        for provider in &config.providers {
            counters.define(&format!("llm_failover.provider.{provider}.skipped"));
            if let Err(error) = health::ensure_record(&HostStore, provider) {
                log(LogLevel::Warn, &format!("llm-failover: cannot create the health record of `{provider}`: {error:?}"));
            }
        }
        RouterRole { config, counters }
    }
}

enum Stage {
    /// Not a chat request: only the internal headers were stripped.
    Passthrough,
    AwaitingBody,
    Routed { chain: usize, model: String, skipped: String, planned_attempts: usize },
    Answered,
}

pub struct RouterFilter {
    context_id: u32,
    role: std::rc::Rc<RouterRole>,
    stage: Stage,
}

impl RouterFilter {
    pub fn new(context_id: u32, role: std::rc::Rc<RouterRole>) -> RouterFilter {
        RouterFilter { context_id, role, stage: Stage::Passthrough }
    }

    fn reject(&mut self, status: u32, reason: &str, message: &str, kind: &str, param: Option<&str>) -> Action {
        self.role.counters.inc(&format!("llm_failover.rejected.{reason}"));
        self.stage = Stage::Answered;
        let body = openai_error::body(message, kind, reason, param);
        abi::send_response(status, &format!("llm_failover_{reason}"), &[("content-type", "application/json")], &body);
        Action::Pause
    }

    fn too_large(&mut self) -> Action {
        let limit = self.role.config.max_request_bytes;
        self.reject(
            413,
            "too_large",
            &format!("request body is larger than the {limit} bytes this gateway accepts"),
            "invalid_request_error",
            None,
        )
    }

    fn route(&mut self, body: &[u8]) -> Action {
        let request = match chat::inspect(body) {
            Ok(request) => request,
            Err(bad) => return self.bad_request(&bad),
        };
        let config = &self.role.config;
        let Some(chain) = config.chain_for(&request.model) else {
            let message = format!("The model `{}` does not exist or no provider chain serves it", request.model);
            return self.reject(404, "unknown_model", &message, "invalid_request_error", Some("model"));
        };
        let now = now_ms();
        let plan = routing::plan(chain, |p| health::read(&HostStore, p), now);
        let order_ok = abi::set_header(MapType::HttpRequestHeaders, ORDER_HEADER, &priority_groups::header_value(&plan.order));
        let retries_ok =
            abi::set_header(MapType::HttpRequestHeaders, "x-envoy-max-retries", &(plan.order.len() - 1).to_string());
        if !(order_ok && retries_ok) {
            log(LogLevel::Error, &format!("llm-failover #{}: could not hand the provider order to Envoy", self.context_id));
        }
        let counters = &self.role.counters;
        counters.inc("llm_failover.requests");
        for skipped in &plan.skipped {
            counters.inc(&format!("llm_failover.provider.{skipped}.skipped"));
        }
        if plan.last_resort {
            counters.inc("llm_failover.last_resort");
            log(
                LogLevel::Warn,
                &format!(
                    "llm-failover #{}: every provider of chain `{}` is cooling down; trying `{}`, the first to recover",
                    self.context_id,
                    chain.name,
                    plan.order.first().copied().unwrap_or_default()
                ),
            );
        }
        let chain_index = config.chains.iter().position(|c| c.name == chain.name).unwrap_or(0);
        self.stage = Stage::Routed {
            chain: chain_index,
            model: request.model.into_owned(),
            skipped: plan.skipped.join(","),
            planned_attempts: plan.order.len(),
        };
        Action::Continue
    }

    /// The last attempt role stamped its attempt number on the response. Fewer attempts than
    /// planned means Envoy stopped retrying by itself: its retry circuit breaker overflowed
    /// (3 concurrent retries by default), or the body was larger than the route's
    /// `request_body_buffer_limit`, which Envoy does not keep for a retry.
    fn warn_if_cut_short(&self, planned_attempts: usize) {
        let made = abi::header(MapType::HttpResponseHeaders, ATTEMPTS_HEADER).and_then(|v| v.parse::<usize>().ok());
        if let Some(made) = made.filter(|&made| made < planned_attempts) {
            self.role.counters.inc("llm_failover.retries_cut_short");
            log(
                LogLevel::Warn,
                &format!(
                    "llm-failover #{}: Envoy stopped after {made} of {planned_attempts} attempts; check the provider \
                     clusters' circuit_breakers max_retries (Envoy's default allows 3 concurrent retries) and that the \
                     route's request_body_buffer_limit is at least maxRequestBytes ({})",
                    self.context_id, self.role.config.max_request_bytes
                ),
            );
        }
    }

    /// Envoy itself refused the request while this filter held it (its own buffer limit, or
    /// a body that never finished arriving): same answer, in OpenAI's shape.
    fn refused_by_envoy(&mut self, status: u16) -> Action {
        match status {
            413 => self.too_large(),
            408 => self.reject(
                408,
                "body_timeout",
                "the request body did not arrive in time",
                "invalid_request_error",
                None,
            ),
            _ => Action::Continue,
        }
    }

    fn bad_request(&mut self, bad: &BadRequest) -> Action {
        self.reject(400, "bad_request", &bad.message(), "invalid_request_error", bad.param())
    }

    /// Every attempt failed: answer once, in OpenAI's shape, with when to come back.
    fn exhausted(&mut self, chain: usize, model: &str, status: u16, planned_attempts: usize) -> Action {
        let role = self.role.clone();
        let Some(chain) = role.config.chains.get(chain) else {
            return Action::Continue;
        };
        self.warn_if_cut_short(planned_attempts);
        let retry_after = routing::retry_after_secs(chain, |p| health::read(&HostStore, p), now_ms());
        self.role.counters.inc("llm_failover.exhausted");
        log(
            LogLevel::Warn,
            &format!(
                "llm-failover #{}: no provider of chain `{}` could serve model `{model}` (last status {status}); answering 503, retry after {retry_after}s",
                self.context_id, chain.name
            ),
        );
        let message = format!(
            "No provider could serve model `{model}` right now (providers tried or cooling down: {}). Retry after {retry_after} seconds.",
            chain.providers.join(", ")
        );
        let body = openai_error::body(&message, "server_error", "all_providers_unavailable", None);
        let retry_after = retry_after.to_string();
        self.stage = Stage::Answered;
        abi::send_response(
            503,
            "llm_failover_all_providers_unavailable",
            &[("content-type", "application/json"), ("retry-after", &retry_after)],
            &body,
        );
        Action::Pause
    }
}

impl Context for RouterFilter {}

impl HttpContext for RouterFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        for name in INTERNAL_HEADERS {
            abi::remove_header(MapType::HttpRequestHeaders, name);
        }
        let path = abi::header(MapType::HttpRequestHeaders, ":path").unwrap_or_default();
        let method = abi::header(MapType::HttpRequestHeaders, ":method").unwrap_or_default();
        if method != "POST" || !self.role.config.is_chat_path(&path) {
            return Action::Continue;
        }
        let declared = abi::header(MapType::HttpRequestHeaders, "content-length").and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > self.role.config.max_request_bytes) {
            return self.too_large();
        }
        if end_of_stream {
            return self.bad_request(&BadRequest::NotJson("the request has no body".into()));
        }
        self.stage = Stage::AwaitingBody;
        // Held until the body has told us the model; needs `allow_on_headers_stop_iteration`.
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !matches!(self.stage, Stage::AwaitingBody) {
            return Action::Continue;
        }
        if body_size > self.role.config.max_request_bytes {
            return self.too_large();
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size).ok().flatten().unwrap_or_default();
        self.route(&body)
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let status: u16 = abi::header(MapType::HttpResponseHeaders, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let Stage::Routed { chain, model, skipped, planned_attempts } = &self.stage else {
            if matches!(self.stage, Stage::AwaitingBody) {
                return self.refused_by_envoy(status);
            }
            return Action::Continue;
        };
        if health::Failure::from_status(status).is_some() {
            let (chain, model, planned) = (*chain, model.clone(), *planned_attempts);
            return self.exhausted(chain, &model, status, planned);
        }
        if !skipped.is_empty() {
            abi::set_header(MapType::HttpResponseHeaders, SKIPPED_HEADER, skipped);
        }
        Action::Continue
    }
}
