//! Router role: an HCM filter before Envoy's router. It reads the chat request, picks the
//! provider order from shared health and hands it to Envoy; on the way back it turns "every
//! attempt failed" into one OpenAI-style 503.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use super::abi::{self, HostStore};
use super::attempt::{ATTEMPTS_HEADER, PROVIDER_HEADER};
use super::counters::{Counter, Gauge};
use super::{health_view, log, now_ms, renewer};
use crate::chat::{self, BadRequest};
use crate::inbound::{self, models, ClientApi};
use crate::config::{Chain, ErrorAnswers, Passthrough, RouterConfig, ORDER_HEADER};
use crate::provider::Format;
use crate::policy::{self, Profile, Tier};
use crate::health_report::{self, AdminRequest};
use crate::audit::{self, AuditLine, RequestOutcome};
use crate::{budget, health, openai_error, orders, routing};

/// Headers a client could use to choose routes, retries or timeouts: stripped from every
/// request so only this filter and Envoy's own config decide them.
const INTERNAL_HEADERS: &[&str] = &[
    ORDER_HEADER,
    "x-envoy-max-retries",
    super::attempt::TRANSLATED_HEADER,
    ORIGIN_HEADER,
    "x-envoy-retry-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-hedge-on-per-try-timeout",
];

pub const SKIPPED_HEADER: &str = "x-llm-skipped";

struct Counters {
    requests: Counter,
    /// Requests by client API: Anthropic Messages, Responses, embeddings and the model list
    /// (chat's are `requests` less Messages', Responses' and embeddings').
    messages_requests: Counter,
    count_tokens_requests: Counter,
    passthrough_requests: Counter,
    /// Token counts answered with the gateway's estimate.
    token_estimates: Counter,
    embeddings_requests: Counter,
    responses_requests: Counter,
    models_requests: Counter,
    last_resort: Counter,
    exhausted: Counter,
    retries_cut_short: Counter,
    rejected: HashMap<&'static str, Counter>,
    skipped: HashMap<String, Counter>,
    /// Each provider's own breaker, as this worker last set it.
    breaker: HashMap<String, (Gauge, Cell<Option<u64>>)>,
}

const REJECTIONS: [&str; 6] = ["bad_request", "too_large", "unknown_model", "body_timeout", "unsupported_content_encoding", "unsupported_parameter"];

pub struct RouterRole {
    config: RouterConfig,
    counters: Counters,
}

impl RouterRole {
    pub fn new(config: RouterConfig) -> RouterRole {
        let counter = |name: &str| Counter::define(&format!("llm_failover.{name}"));
        let counters = Counters {
            requests: counter("requests"),
            messages_requests: counter("api.anthropic_messages.requests"),
            count_tokens_requests: counter("api.anthropic_count_tokens.requests"),
            passthrough_requests: counter("api.passthrough.requests"),
            token_estimates: counter("api.anthropic_count_tokens.estimated"),
            embeddings_requests: counter("api.embeddings.requests"),
            responses_requests: counter("api.responses.requests"),
            models_requests: counter("api.models_list.requests"),
            last_resort: counter("last_resort"),
            exhausted: counter("exhausted"),
            retries_cut_short: counter("retries_cut_short"),
            rejected: REJECTIONS.iter().map(|r| (*r, counter(&format!("rejected.{r}")))).collect(),
            skipped: config.providers.iter().map(|p| (p.clone(), counter(&format!("provider.{p}.skipped")))).collect(),
            breaker: config
                .providers
                .iter()
                .map(|p| (p.clone(), (Gauge::define(&format!("llm_failover.provider.{p}.breaker")), Cell::new(None))))
                .collect(),
        };
        if let Err(error) = health::ensure_table(&HostStore) {
            log(LogLevel::Warn, &format!("llm-failover: cannot create the health table: {error:?}"));
        }
        RouterRole { config, counters }
    }
}

enum Stage {
    /// Not a chat request: only the internal headers were stripped.
    Passthrough,
    AwaitingBody,
    Routed { chain: usize, model: String, skipped: String, profile: String, planned_attempts: usize, order: Vec<String> },
    Answered,
}

pub struct RouterFilter {
    context_id: u32,
    role: Rc<RouterRole>,
    stage: Stage,
    /// A trusted caller's choice of profile and tier, read (and removed) with the headers.
    chosen_profile: Option<String>,
    chosen_tier: Option<String>,
    /// This request is Envoy's internal replay after that provider's context was too small.
    exceeded_at: Option<String>,
    /// The client's URL, for a context-length redirect.
    origin: Option<String>,
    /// Envoy's `x-request-id` of a chat request, for its audit line.
    request_id: Option<String>,
    /// The status of the answer going back, while its body passes.
    answer_status: u16,
    /// The body held so far, for a request that ends with trailers.
    body_size: usize,
    /// The API the client speaks: the shape of the answers this role writes.
    api: ClientApi,
    /// The format of the provider whose error answer passes unread (`errorAnswers: pass`) and
    /// is put in the client's shape here, once whole.
    unread_error: Option<Format>,
    /// Bedrock's `x-amzn-ErrorType` of that answer, read with its headers: the body callback
    /// no longer sees them once they went on (measured on 1.36).
    unread_error_type: Option<String>,
    /// A token count's estimate, answered when no provider that counts can.
    count_estimate: u64,
}

pub const PROFILE_HEADER: &str = "x-llm-profile";
/// On a token count the gateway estimated, instead of a provider's count.
pub const TOKEN_COUNT_HEADER: &str = "x-llm-token-count";
/// Where the client sent the request (`scheme://authority/path`): an attempt whose provider
/// says the context is too long redirects there, and Envoy replays the request internally.
pub const ORIGIN_HEADER: &str = "x-llm-failover-origin";
/// The query parameter of that internal redirect: the provider whose context was too small.
pub const EXCEEDED_PARAM: &str = "llm_failover_context_exceeded";

/// Route metadata a route may carry under `llm_failover`: its profile and tier.
fn route_metadata(key: &str) -> Option<String> {
    let value = hostcalls::get_property(vec!["xds", "route_metadata", "filter_metadata", "llm_failover", key]).ok().flatten()?;
    String::from_utf8(value).ok().filter(|v| !v.is_empty())
}

impl RouterFilter {
    pub fn new(context_id: u32, role: Rc<RouterRole>) -> RouterFilter {
        RouterFilter {
            context_id,
            role,
            stage: Stage::Passthrough,
            chosen_profile: None,
            chosen_tier: None,
            exceeded_at: None,
            origin: None,
            request_id: None,
            answer_status: 0,
            body_size: 0,
            api: ClientApi::ChatCompletions,
            unread_error: None,
            unread_error_type: None,
            count_estimate: 0,
        }
    }

    /// Takes the profile and tier headers off the request: read when the caller is trusted.
    fn take_trusted_headers(&mut self, headers: &crate::proxy_map::HeaderPairs) {
        let Some(trusted) = &self.role.config.trusted_headers else {
            return;
        };
        let present: Vec<&str> = [trusted.profile.as_str(), trusted.tier.as_str()].into_iter().filter(|h| headers.contains(h)).collect();
        if present.is_empty() {
            return;
        }
        let source = hostcalls::get_property(vec!["source", "address"]).ok().flatten().unwrap_or_default();
        let ip = std::str::from_utf8(&source).ok().and_then(crate::trust::source_ip);
        let is_trusted = ip.is_some_and(|ip| trusted.sources.iter().any(|n| n.contains(ip)));
        if is_trusted {
            self.chosen_profile = headers.get_str(&trusted.profile).map(str::to_string);
            self.chosen_tier = headers.get_str(&trusted.tier).map(str::to_string);
        }
        for name in present {
            abi::remove_header(MapType::HttpRequestHeaders, name);
        }
    }

    fn reject(&mut self, status: u32, reason: &'static str, message: &str, param: Option<&str>) -> Action {
        if let Some(counter) = self.role.counters.rejected.get(reason) {
            counter.inc();
        }
        self.write_audit(status as u16, &RequestOutcome::Rejected(reason));
        self.stage = Stage::Answered;
        let body = if self.api.anthropic_shaped() {
            inbound::anthropic::error_body(inbound::anthropic::error_type_for_status(status as u16), message)
        } else {
            openai_error::body(message, "invalid_request_error", reason, param)
        };
        abi::send_response(status, &format!("llm_failover_{reason}"), &[("content-type", "application/json")], &body);
        Action::Pause
    }

    /// The model list, from the configuration: no provider is asked. Anthropic's shape when
    /// the client names an `anthropic-version`, as the Anthropic SDKs do.
    fn list_models(&mut self, path: &str, anthropic: bool) -> Action {
        self.stage = Stage::Answered;
        let config = &self.role.config;
        let shape = if anthropic { models::Shape::Anthropic } else { models::Shape::Openai };
        let (status, body) = match models::parse(&config.models_paths, path) {
            Some(models::ModelsRequest::List { query }) => (200, models::list(&config.model_ids, shape, &query)),
            Some(models::ModelsRequest::One { id }) => models::one(&config.model_ids, &id, shape),
            None => return Action::Continue,
        };
        let headers = [("content-type", "application/json"), ("x-llm-provider", "llm-failover")];
        abi::send_response(u32::from(status), "llm_failover_models", &headers, &body);
        Action::Pause
    }

    fn too_large(&mut self) -> Action {
        let limit = self.role.config.max_request_bytes;
        self.reject(413, "too_large", &format!("request body is larger than the {limit} bytes this gateway accepts"), None)
    }

    fn bad_request(&mut self, bad: &BadRequest) -> Action {
        self.reject(400, "bad_request", &bad.message(), bad.param())
    }

    fn route(&mut self, body: &[u8]) -> Action {
        if self.api == ClientApi::Embeddings {
            return self.route_embeddings(body);
        }
        // A Responses request is read whole here: its stateful fields decide, with the chain.
        let mut responses = None;
        let inspected = match self.api {
            ClientApi::AnthropicMessages => inbound::anthropic::inspect(body),
            ClientApi::Responses => match inbound::responses::inspect(body) {
                Ok((request, model, stream)) => {
                    responses = Some(request);
                    Ok(chat::ChatRequest { model: model.into(), stream })
                }
                Err(invalid) => return self.reject(400, "bad_request", &invalid.message, invalid.param),
            },
            _ => chat::inspect(body),
        };
        let request = match inspected {
            Ok(request) => request,
            Err(bad) => return self.bad_request(&bad),
        };
        let role = self.role.clone();
        let config = &role.config;
        let route_profile = route_metadata("profile");
        let selection = routing::select_profile(config, route_profile.as_deref(), self.chosen_profile.as_deref(), &request.model, body);
        let (profile_index, source) = match selection {
            routing::Selection::Chosen { profile, source } => (profile, source),
            routing::Selection::Unknown { name, source } => {
                let message = format!("the {} names profile `{name}`, which this gateway does not have", source.name());
                return self.reject(400, "unknown_profile", &message, None);
            }
            routing::Selection::None => {
                let message = format!("The model `{}` does not exist or no provider chain serves it", request.model);
                return self.reject(404, "unknown_model", &message, Some("model"));
            }
        };
        let tier = route_metadata("tier").or(self.chosen_tier.clone()).and_then(|t| Tier::parse(&t)).unwrap_or(Tier::Normal);
        let (Some(profile), Some((chain_index, chain))) = (config.profiles.get(profile_index), config.chain(profile_index, tier)) else {
            return Action::Continue;
        };
        if let Some((param, field)) = responses.as_ref().and_then(inbound::responses::stateful_field) {
            // Only providers that serve Responses themselves keep OpenAI's state and run its tools:
            // a failover to any other would answer without them.
            let translated: Vec<&str> =
                chain.providers.iter().map(String::as_str).filter(|p| !config.info(p).is_some_and(|i| i.serves_responses)).collect();
            if !translated.is_empty() {
                let message = inbound::responses::stateful_message(&field, &chain.name, &translated);
                return self.reject(400, "unsupported_parameter", &message, Some(param));
            }
        }
        let counting = self.api == ClientApi::CountTokens;
        let windows = chain.providers.iter().filter(|p| config.info(p).and_then(|i| i.context_window).is_some()).count();
        // Sizing the request reads the body again: only context windows and price need it. A
        // token count is asked of any window's provider: a long request is what it is for.
        let sized = !counting && (windows > 0 || profile.ordering == policy::Ordering::LowestPrice);
        let expected = if sized { policy::expected_tokens(body, 0) } else { policy::ExpectedTokens::default() };
        let needed = expected.input.saturating_add(expected.output);
        // After a provider said the context is too long, only larger windows may follow.
        let too_small = routing::too_small(chain, config, needed, self.exceeded_at.as_deref());
        if let Some(exceeded_at) = &self.exceeded_at {
            log(LogLevel::Info, &format!("llm-failover #{}: context too long for `{exceeded_at}`; leaving out {too_small:?}", self.context_id));
        }
        if too_small.len() == chain.providers.len() {
            let message = match &self.exceeded_at {
                Some(provider) => format!(
                    "`{provider}` said this request is longer than its context window, and no provider of `{}` has a larger one",
                    chain.name
                ),
                None => format!("This request needs about {needed} tokens, more than the context window of every provider of `{}`", chain.name),
            };
            return self.reject(400, "context_length_exceeded", &message, Some("messages"));
        }
        // A context-length error can only be replayed toward larger windows when windows are
        // known; otherwise the provider's own error goes back to the client.
        if let (Some(origin), true) = (&self.origin, windows >= 2) {
            abi::set_header(MapType::HttpRequestHeaders, ORIGIN_HEADER, origin);
        }
        let mut fitting = Chain { providers: chain.providers.iter().filter(|p| !too_small.contains(&p.as_str())).cloned().collect(), ..chain.clone() };
        if counting {
            self.count_estimate = inbound::anthropic::estimate_input_tokens(body);
            fitting.providers.retain(|p| config.info(p).is_some_and(|info| self.api.service(info.format).is_some() && !info.on_vertex));
            if fitting.providers.is_empty() {
                return self.answer_estimate();
            }
        }
        let now = now_ms();
        let health = health_view::current(now);
        let model = request.model.as_ref();
        let standing = |p: &str| renewer::standing(&health, p, model, now);
        self.show_breakers(chain, &health, now);
        let mut plan = routing::plan(&fitting, model, standing, now);
        self.claim_probes(&mut plan, now);
        if plan.order.is_empty() {
            // Every provider left is half-open and another request is probing each.
            return self.exhausted(chain_index, model, 0, 0);
        }
        let random = now.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(self.context_id);
        routing::apply_ordering(&mut plan, profile.ordering, config, standing, expected, random, now);
        let mut skipped: Vec<String> = too_small.iter().map(|p| p.to_string()).collect();
        skipped.extend(plan.skipped.iter().map(|p| p.to_string()));
        plan.order = orders::served(&plan.order, &chain.providers);
        self.set_timeouts(profile);
        if self.api == ClientApi::ChatCompletions {
            // Written once: an internal replay, which finds it set, has the same body.
            abi::set_filter_state(inbound::CHAT_REQUEST_PROPERTY, inbound::chat_request_note(body.len(), &request.model).as_bytes());
        }
        let chosen = format!("{}; by={}", chain.name, source.name());
        self.hand_over(chain_index, chain, &plan, skipped, request.model.into_owned(), chosen)
    }

    /// An embeddings request: its alias's chain (only providers with a model for the alias, in
    /// the operator's order), planned by health as chat chains are. No profile, sizing or
    /// ordering policy: vectors of one alias come from interchangeable models only.
    fn route_embeddings(&mut self, body: &[u8]) -> Action {
        let request = match inbound::embeddings::inspect(body) {
            Ok(request) => request,
            Err(invalid) => return self.reject(400, "bad_request", &invalid.message, invalid.param),
        };
        let role = self.role.clone();
        let Some((chain_index, chain)) = role.config.embedding_chain(&request.model) else {
            let message = format!("The model `{}` is not an embedding model this gateway serves", request.model);
            return self.reject(404, "unknown_model", &message, Some("model"));
        };
        let now = now_ms();
        let health = health_view::current(now);
        let model = request.model.as_str();
        let standing = |p: &str| renewer::standing(&health, p, model, now);
        self.show_breakers(chain, &health, now);
        let mut plan = routing::plan(chain, model, standing, now);
        self.claim_probes(&mut plan, now);
        if plan.order.is_empty() {
            return self.exhausted(chain_index, model, 0, 0);
        }
        let skipped = plan.skipped.iter().map(|p| p.to_string()).collect();
        plan.order = orders::served(&plan.order, &chain.providers);
        let chosen = format!("{}; by=model", chain.name);
        self.hand_over(chain_index, chain, &plan, skipped, request.model.clone(), chosen)
    }

    /// Hands the planned order to Envoy (the order cluster, the retries it allows) and counts it.
    fn hand_over(&mut self, chain_index: usize, chain: &Chain, plan: &routing::Plan, skipped: Vec<String>, model: String, chosen: String) -> Action {
        let role = self.role.clone();
        // Writing a request header makes Envoy pick the route (and its `cluster_header`) again.
        let order_ok = abi::set_header(MapType::HttpRequestHeaders, ORDER_HEADER, &orders::cluster_name(&plan.order));
        let retries_ok =
            abi::set_header(MapType::HttpRequestHeaders, "x-envoy-max-retries", &(plan.order.len() - 1).to_string());
        if !(order_ok && retries_ok) {
            log(LogLevel::Error, &format!("llm-failover #{}: could not hand the provider order to Envoy", self.context_id));
        }
        let counters = &role.counters;
        counters.requests.inc();
        match self.api {
            ClientApi::AnthropicMessages => counters.messages_requests.inc(),
            ClientApi::Embeddings => counters.embeddings_requests.inc(),
            ClientApi::CountTokens => counters.count_tokens_requests.inc(),
            ClientApi::Responses => counters.responses_requests.inc(),
            ClientApi::ChatCompletions | ClientApi::ModelsList | ClientApi::Passthrough => {}
        }
        for skipped in &plan.skipped {
            if let Some(counter) = counters.skipped.get(*skipped) {
                counter.inc();
            }
        }
        if plan.last_resort {
            counters.last_resort.inc();
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
        self.stage = Stage::Routed {
            chain: chain_index,
            model,
            skipped: skipped.join(","),
            profile: chosen,
            planned_attempts: plan.order.len(),
            order: plan.order.iter().map(|p| p.to_string()).collect(),
        };
        Action::Continue
    }

    /// The health endpoint: a report of every provider, or a reset.
    fn administer(&mut self, request: AdminRequest, authorized: bool) -> Action {
        self.stage = Stage::Answered;
        let json = [("content-type", "application/json"), ("cache-control", "no-store")];
        if !authorized {
            log(LogLevel::Warn, &format!("llm-failover #{}: health endpoint refused: no valid {}", self.context_id, health_report::SECRET_HEADER));
            let body = openai_error::body(
                &format!("the health endpoint needs the admin secret in `{}`", health_report::SECRET_HEADER),
                "authentication_error",
                "admin_secret_required",
                None,
            );
            abi::send_response(401, "llm_failover_admin_unauthorized", &json, &body);
            return Action::Pause;
        }
        let providers = &self.role.config.providers;
        let (status, body) = match request {
            AdminRequest::Report => {
                let now = now_ms();
                let table = health_view::current(now);
                let spent = |p: &str| budget::last_recorded(&HostStore, p);
                let mut report = health_report::report(providers, &table, &spent, now);
                renewer::annotate(&mut report, now);
                (200, report.to_string().into_bytes())
            }
            AdminRequest::Reset { provider: Some(name), .. } if !providers.contains(&name) => {
                (404, openai_error::body(&format!("no provider `{name}` in this router's config"), "invalid_request_error", "unknown_provider", Some("provider")))
            }
            AdminRequest::Reset { provider, budget } => {
                let reset = health::reset(&HostStore, provider.as_deref());
                let cleared: Vec<&String> = match (&provider, budget) {
                    (_, false) => Vec::new(),
                    (Some(name), true) => providers.iter().filter(|p| *p == name).collect(),
                    (None, true) => providers.iter().collect(),
                };
                let budgets_ok = cleared.iter().all(|p| budget::clear(&HostStore, p).is_ok());
                let who = provider.as_deref().unwrap_or("every provider");
                match reset {
                    Ok(records) if budgets_ok => {
                        log(LogLevel::Warn, &format!("llm-failover #{}: health of {who} reset by an operator ({records} records{})", self.context_id, if budget { ", budget too" } else { "" }));
                        (200, serde_json::json!({ "reset": who, "records": records, "budget": budget }).to_string().into_bytes())
                    }
                    _ => (503, openai_error::body("the health table is busy; try again", "api_error", "reset_failed", None)),
                }
            }
            AdminRequest::StatusPage => {
                // No data, no secret: the page's script reads the report with the secret.
                let headers = [
                    ("content-type", "text/html; charset=utf-8"),
                    ("cache-control", "no-store"),
                    ("content-security-policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"),
                    ("x-frame-options", "DENY"),
                    ("referrer-policy", "no-referrer"),
                ];
                abi::send_response(200, "llm_failover_admin", &headers, health_report::STATUS_PAGE.as_bytes());
                return Action::Pause;
            }
            AdminRequest::NotAllowed => (405, openai_error::body("use GET for the report, POST .../reset to reset", "invalid_request_error", "method_not_allowed", None)),
            AdminRequest::NotFound => (404, openai_error::body("unknown health endpoint path", "invalid_request_error", "not_found", None)),
        };
        abi::send_response(status, "llm_failover_admin", &json, &body);
        Action::Pause
    }

    /// The profile's deadline for the whole request and its per-attempt limit, as Envoy's own
    /// request headers: the route's retry policy applies them. Hedging sends the next attempt
    /// when one has not answered in time, and the first answer wins.
    fn set_timeouts(&self, profile: &Profile) {
        let ms = |d: std::time::Duration| d.as_millis().max(1).to_string();
        if let Some(deadline) = profile.deadline {
            abi::set_header(MapType::HttpRequestHeaders, "x-envoy-upstream-rq-timeout-ms", &ms(deadline));
        }
        let hedged = profile.hedge_after.is_some();
        let per_try = if hedged { profile.hedge_after } else { profile.first_byte_timeout };
        if let Some(per_try) = per_try {
            abi::set_header(MapType::HttpRequestHeaders, "x-envoy-upstream-rq-per-try-timeout-ms", &ms(per_try));
        }
        if hedged {
            abi::set_header(MapType::HttpRequestHeaders, "x-envoy-hedge-on-per-try-timeout", "true");
        }
    }

    /// The breaker gauges follow what requests see: an attempt sets them when it records a
    /// failure, and this catches a cooldown that ended or a reset.
    fn show_breakers(&self, chain: &Chain, health: &health::HealthTable, now: u64) {
        for name in &chain.providers {
            if let Some((gauge, shown)) = self.role.counters.breaker.get(name) {
                let state = health.get(name).state(now).number();
                if shown.get() != Some(state) {
                    gauge.set(state);
                    shown.set(Some(state));
                }
            }
        }
    }

    /// A half-open provider takes one request, across every worker: the one whose claim
    /// lands first. The others leave it out.
    fn claim_probes(&self, plan: &mut routing::Plan, now: u64) {
        for (name, key) in std::mem::take(&mut plan.probes) {
            let claimed = match health::claim_probe(&HostStore, &key, now, self.role.config.probe_timeout) {
                Ok(claimed) => claimed,
                Err(error) => {
                    log(LogLevel::Warn, &format!("llm-failover #{}: probe of `{key}` not claimed: {error:?}", self.context_id));
                    false
                }
            };
            if claimed {
                log(LogLevel::Info, &format!("llm-failover #{}: `{key}` is half-open; this request probes it", self.context_id));
            } else if plan.order.contains(&name) {
                plan.order.retain(|p| *p != name);
                plan.skipped.push(name);
            }
        }
    }

    /// A request under a pass-through prefix: to its one provider, as it came but for the
    /// path's prefix, its key and host (the attempt's). No body is read, nothing is translated,
    /// and there is no other provider to fail over to.
    fn pass_through(&self, passthrough: &Passthrough, path: &str) -> Action {
        self.role.counters.passthrough_requests.inc();
        if !abi::set_filter_state(inbound::API_PROPERTY, ClientApi::Passthrough.name().as_bytes()) {
            log(LogLevel::Warn, &format!("llm-failover #{}: the client API was not left for the attempt", self.context_id));
        }
        // The attempt writes it: a new path here would make Envoy pick the route again.
        if let Some(rewritten) = passthrough.path_for(path).filter(|p| p != path) {
            abi::set_filter_state(inbound::PASSTHROUGH_PATH_PROPERTY, rewritten.as_bytes());
        }
        abi::set_header(MapType::HttpRequestHeaders, ORDER_HEADER, &orders::cluster_name(&[passthrough.provider.as_str()]));
        abi::set_header(MapType::HttpRequestHeaders, "x-envoy-max-retries", "0");
        Action::Continue
    }

    /// A token count no provider could make: the estimate, marked as one.
    fn answer_estimate(&mut self) -> Action {
        self.role.counters.token_estimates.inc();
        self.write_audit(200, &RequestOutcome::Estimated);
        self.stage = Stage::Answered;
        let headers = [("content-type", "application/json"), ("x-llm-provider", "llm-failover"), (TOKEN_COUNT_HEADER, "estimate")];
        let body = inbound::anthropic::token_count_body(self.count_estimate);
        abi::send_response(200, "llm_failover_token_estimate", &headers, &body);
        Action::Pause
    }

    /// Every attempt failed: answer once, in OpenAI's shape, with when to come back.
    fn exhausted(&mut self, chain: usize, model: &str, status: u16, planned_attempts: usize) -> Action {
        if self.api == ClientApi::CountTokens {
            return self.answer_estimate();
        }
        let role = self.role.clone();
        let Some(chain) = role.config.chains.get(chain) else {
            return Action::Continue;
        };
        self.warn_if_cut_short(planned_attempts);
        let now = now_ms();
        let health = health_view::current(now);
        let standing = |p: &str| renewer::standing(&health, p, model, now);
        let retry_after = routing::retry_after_secs(chain, standing, now);
        role.counters.exhausted.inc();
        let (when, advice) = match retry_after {
            Some(secs) => (format!("retry after {secs}s"), format!("Retry after {secs} seconds.")),
            None => (
                "every provider waits for an operator's reset".to_string(),
                "Every provider is held out until an operator resets it (a rejected key?).".to_string(),
            ),
        };
        log(
            LogLevel::Warn,
            &format!(
                "llm-failover #{}: no provider of chain `{}` could serve model `{model}` (last status {status}); answering 503, {when}",
                self.context_id, chain.name
            ),
        );
        let message = format!(
            "No provider could serve model `{model}` right now (providers tried or cooling down: {}). {advice}",
            chain.providers.join(", ")
        );
        // Anthropic's clients know "every provider is busy" as its 529 `overloaded_error`, which
        // their SDKs retry after `Retry-After`.
        let (answer_status, body) = match self.api {
            ClientApi::AnthropicMessages => (529, inbound::anthropic::error_body("overloaded_error", &message)),
            _ => (503, openai_error::body(&message, "server_error", "all_providers_unavailable", None)),
        };
        self.write_audit(answer_status, &RequestOutcome::AllProvidersUnavailable);
        let retry_after = retry_after.map(|secs| secs.to_string());
        let mut headers = vec![("content-type", "application/json")];
        if let Some(secs) = &retry_after {
            headers.push(("retry-after", secs));
        }
        self.stage = Stage::Answered;
        abi::send_response(u32::from(answer_status), "llm_failover_all_providers_unavailable", &headers, &body);
        Action::Pause
    }

    /// The request's audit line, for Envoy's access log (`%FILTER_STATE(wasm.llm_failover.audit:PLAIN)%`):
    /// what this role decided, with the entries the attempts left. Written once, when the
    /// answer is decided; a request the filter never took for a chat request has none.
    fn write_audit(&self, status: u16, outcome: &RequestOutcome) {
        let config = &self.role.config;
        let mut line = AuditLine { time_ms: now_ms(), request_id: self.request_id.as_deref(), api: Some(self.api.name()), status, ..AuditLine::default() };
        match &self.stage {
            Stage::Routed { chain, model, skipped, profile, planned_attempts, order } => {
                line.model = Some(model);
                line.profile = Some(profile);
                line.chain = config.chains.get(*chain).map(|c| c.name.as_str());
                line.planned = order.iter().map(String::as_str).collect();
                line.skipped = skipped.split(',').filter(|s| !s.is_empty()).collect();
                // Hedges and retries are numbered from 1; there are at most as many as planned.
                line.attempts = (1..=*planned_attempts as u32).filter_map(|n| abi::filter_state(&audit::attempt_property(n))).collect();
                line.usage = abi::filter_state(audit::USAGE_PROPERTY);
            }
            Stage::AwaitingBody => {}
            Stage::Passthrough | Stage::Answered => return,
        }
        abi::set_filter_state(audit::AUDIT_PROPERTY, line.to_json(outcome).as_bytes());
    }

    /// The last attempt role stamped its attempt number on the response. Fewer attempts than
    /// planned means Envoy stopped retrying by itself: its retry circuit breaker overflowed
    /// (3 concurrent retries by default), or the body was larger than the route's
    /// `request_body_buffer_limit`, which Envoy does not keep for a retry.
    fn warn_if_cut_short(&self, planned_attempts: usize) {
        let made = abi::header_str(MapType::HttpResponseHeaders, ATTEMPTS_HEADER).and_then(|v| v.parse::<usize>().ok());
        if let Some(made) = made.filter(|&made| made < planned_attempts) {
            self.role.counters.retries_cut_short.inc();
            log(
                LogLevel::Warn,
                &format!(
                    "llm-failover #{}: Envoy stopped after {made} of {planned_attempts} attempts; check the order \
                     clusters' circuit_breakers max_retries (Envoy's default allows 3 concurrent retries) and that the \
                     route's body buffer limit (request_body_buffer_limit; per_request_buffer_limit_bytes before Envoy \
                     1.39) is at least maxRequestBytes ({}); Envoy 1.36 and 1.37 never retry a body over 1 MiB",
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
            408 => self.reject(408, "body_timeout", "the request body did not arrive in time", None),
            _ => Action::Continue,
        }
    }
}

impl RouterFilter {
    /// With `errorAnswers: pass` (Envoy 1.36) the attempt lets a provider's error answer go
    /// unread, in the provider's own shape; here, after Envoy's router has decided not to retry
    /// it, holding it is safe. The answer's provider is the one the attempt stamped on it.
    fn unread_error_format(&self) -> Option<Format> {
        if answered_by_an_attempt_role() || abi::header(MapType::HttpResponseHeaders, "content-encoding").is_some() {
            return None;
        }
        let config = &self.role.config;
        let provider = abi::header_str(MapType::HttpResponseHeaders, PROVIDER_HEADER)?;
        let format = config.info(&provider)?.format;
        let reshaped = config.error_answers == ErrorAnswers::Pass && self.api.service(format) == Some(inbound::Service::Translated);
        reshaped.then_some(format)
    }
}

/// An attempt role answered itself (Envoy's details name the local reply): a request the
/// provider cannot take, or a misconfigured cluster. That answer says more than "no provider
/// could serve", so it goes back as it is.
fn answered_by_an_attempt_role() -> bool {
    let details = hostcalls::get_property(vec!["response", "code_details"]).ok().flatten().unwrap_or_default();
    details.starts_with(b"llm_failover_")
}

impl Context for RouterFilter {}

impl HttpContext for RouterFilter {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let headers = abi::headers(MapType::HttpRequestHeaders);
        for name in INTERNAL_HEADERS {
            if headers.contains(name) {
                abi::remove_header(MapType::HttpRequestHeaders, name);
            }
        }
        self.take_trusted_headers(&headers);
        let role = self.role.clone();
        let config = &role.config;
        if let Some(admin) = &config.admin {
            let method = headers.get_str(":method").unwrap_or_default();
            if let Some(request) = AdminRequest::parse(method, headers.get_str(":path").unwrap_or_default(), &admin.path) {
                let authorized = !request.needs_secret() || admin.secret.as_deref().is_none_or(|secret| {
                    headers.get(health_report::SECRET_HEADER).is_some_and(|given| health_report::secret_matches(given, secret))
                });
                return self.administer(request, authorized);
            }
        }
        let method = headers.get_str(":method").unwrap_or_default();
        let path = headers.get_str(":path").unwrap_or_default();
        let Some(api) = config.client_api(method, path) else {
            return match config.passthrough_for(path) {
                Some(passthrough) => self.pass_through(passthrough, path),
                None => Action::Continue,
            };
        };
        self.api = api;
        match api {
            ClientApi::ModelsList => {
                role.counters.models_requests.inc();
                let path = headers.get_str(":path").unwrap_or_default().to_string();
                return self.list_models(&path, headers.contains("anthropic-version"));
            }
            // The attempts read it: their provider may need the request translated, and the
            // answer goes back in this API's shape.
            ClientApi::AnthropicMessages | ClientApi::Embeddings | ClientApi::CountTokens | ClientApi::Responses => {
                // An internal replay (context too long) finds it set: a value is written once.
                let left = abi::filter_state(inbound::API_PROPERTY).is_some_and(|v| v == api.name().as_bytes());
                if !left && !abi::set_filter_state(inbound::API_PROPERTY, api.name().as_bytes()) {
                    log(LogLevel::Warn, &format!("llm-failover #{}: the client API was not left for the attempts", self.context_id));
                }
                if let Some(beta) = headers.get("anthropic-beta").filter(|_| !left && api.anthropic_shaped()) {
                    abi::set_filter_state(inbound::ANTHROPIC_BETA_PROPERTY, beta);
                }
            }
            ClientApi::ChatCompletions | ClientApi::Passthrough => {}
        }
        let mut path = headers.get_str(":path").unwrap_or_default().to_string();
        if let Some((plain, exceeded_at)) = routing::take_query_param(&path, EXCEEDED_PARAM) {
            abi::set_header(MapType::HttpRequestHeaders, ":path", &plain);
            self.exceeded_at = Some(exceeded_at);
            path = plain;
        }
        self.request_id = headers.get_str("x-request-id").map(str::to_string);
        let scheme = headers.get_str(":scheme").unwrap_or("http");
        self.origin = Some(format!("{scheme}://{}{path}", headers.get_str(":authority").unwrap_or_default()));
        let declared = headers.get_str("content-length").and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > config.max_request_bytes) {
            return self.too_large();
        }
        if end_of_stream {
            return self.bad_request(&BadRequest::NotJson("the request has no body".into()));
        }
        // The decompressor before this filter has taken off the encodings Envoy can undo.
        if let Some(encoding) = headers.get_str("content-encoding").filter(|e| !e.eq_ignore_ascii_case("identity")) {
            let message = format!("request bodies encoded with `{encoding}` are not accepted: send it uncompressed or gzip-compressed");
            return self.reject(415, "unsupported_content_encoding", &message, None);
        }
        // The body is read as JSON whatever its label says: every provider is told it is JSON.
        if !headers.get_str("content-type").is_some_and(|t| t.starts_with("application/json")) {
            abi::set_header(MapType::HttpRequestHeaders, "content-type", "application/json");
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
        self.body_size = body_size;
        if !end_of_stream {
            return Action::Pause;
        }
        let body = abi::body(BufferType::HttpRequestBody, body_size);
        self.route(&body)
    }

    /// A body that ends with trailers (Envoy's decompressor adds its byte counts as trailers)
    /// is complete here.
    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        if !matches!(self.stage, Stage::AwaitingBody) {
            return Action::Continue;
        }
        let body = abi::body(BufferType::HttpRequestBody, self.body_size);
        self.route(&body)
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        if matches!(self.stage, Stage::Passthrough | Stage::Answered) {
            return Action::Continue;
        }
        let status: u16 = abi::header_str(MapType::HttpResponseHeaders, ":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let Stage::Routed { chain, model, skipped, profile, planned_attempts, .. } = &self.stage else {
            return self.refused_by_envoy(status);
        };
        if health::Failure::from_status(status).is_some() && !answered_by_an_attempt_role() {
            let (chain, model, planned) = (*chain, model.clone(), *planned_attempts);
            return self.exhausted(chain, &model, status, planned);
        }
        let location = abi::header_str(MapType::HttpResponseHeaders, "location").unwrap_or_default();
        if status == 307 && location.contains(EXCEEDED_PARAM) {
            // Envoy did not replay it: the route lacks `internal_redirect_policy` for 307, or
            // every larger provider was tried.
            let message = "The request is longer than the context window of the providers that could be tried";
            return self.reject(400, "context_length_exceeded", message, Some("messages"));
        }
        if !skipped.is_empty() {
            abi::set_header(MapType::HttpResponseHeaders, SKIPPED_HEADER, skipped);
        }
        abi::set_header(MapType::HttpResponseHeaders, PROFILE_HEADER, profile);
        self.answer_status = status;
        if end_of_stream {
            self.write_audit(status, &RequestOutcome::Answered);
        } else if status >= 400 {
            self.unread_error = self.unread_error_format();
            if self.unread_error.is_some() {
                self.unread_error_type = abi::header_str(MapType::HttpResponseHeaders, "x-amzn-errortype");
                abi::remove_header(MapType::HttpResponseHeaders, "content-length");
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(format) = self.unread_error {
            if !end_of_stream {
                return Action::Pause;
            }
            let body = abi::body(BufferType::HttpResponseBody, body_size);
            if let Some(translated) = inbound::client_error(self.api, format, self.answer_status, &body, self.unread_error_type.as_deref()) {
                let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, &translated);
            }
        }
        // The attempt's filter saw the end first: its tokens are in the filter state by now.
        if end_of_stream && matches!(self.stage, Stage::Routed { .. }) {
            self.write_audit(self.answer_status, &RequestOutcome::Answered);
        }
        Action::Continue
    }
}
