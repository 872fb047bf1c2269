//! Renews the credentials of providers whose `auth` has a renewed kind. It runs in the router
//! role's root context: one per worker, each with the whole deployment and a tick timer; a
//! claim in each credential's shared record makes one of them fetch while the others wait.
//! Token requests go through the token cluster `llm-failover-render` makes per provider,
//! which has no wasm filter (a call into this VM's own filter would re-enter it).

use std::cell::RefCell;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};

use super::abi::{self, HostStore};
use super::counters::Counter;
use super::{log, now_ms};
use crate::config::AttemptConfig;
use crate::credentials::{self, Credential, Renewal};
use crate::health::HealthTable;
use crate::provider::Provider;
use crate::proxy_map::HeaderPairs;
use crate::routing::Standing;

pub const TICK: Duration = Duration::from_secs(1);

struct Renewable {
    provider: String,
    renewal: Renewal,
    renewed: Counter,
    failed: Counter,
}

pub struct Renewer {
    renewables: Vec<Renewable>,
    /// Token requests under way: (call token, index in `renewables`).
    in_flight: Vec<(u32, usize)>,
}

thread_local! {
    /// The providers with a renewed credential in this VM, and its kind.
    static RENEWED: RefCell<Vec<(String, &'static str)>> = const { RefCell::new(Vec::new()) };
}

fn renewed_kind(provider: &str) -> Option<&'static str> {
    RENEWED.with(|r| r.borrow().iter().find(|(name, _)| name == provider).map(|(_, kind)| *kind))
}

impl Renewer {
    /// `None` when no provider's credential is renewed: no timer then.
    pub fn new(attempts: &[AttemptConfig]) -> Option<Renewer> {
        let renewables: Vec<Renewable> = attempts
            .iter()
            .filter_map(|a| {
                let renewal = a.provider.auth.renewal.clone()?;
                let name = &a.provider.name;
                let metric = |event: &str| format!("llm_failover.provider.{name}.credential.{event}");
                Some(Renewable { provider: name.clone(), renewal, renewed: Counter::define(&metric("renewed")), failed: Counter::define(&metric("renewal_failed")) })
            })
            .collect();
        RENEWED.with(|r| {
            let mut r = r.borrow_mut();
            for renewable in &renewables {
                r.retain(|(name, _)| *name != renewable.provider);
                r.push((renewable.provider.clone(), renewable.renewal.kind()));
            }
        });
        (!renewables.is_empty()).then(|| Renewer { renewables, in_flight: Vec::new() })
    }

    pub fn tick(&mut self) {
        let now = now_ms();
        for (index, renewable) in self.renewables.iter().enumerate() {
            if self.in_flight.iter().any(|(_, i)| *i == index) {
                continue;
            }
            match credentials::claim(&HostStore, &renewable.provider, now) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    log(LogLevel::Warn, &format!("llm-failover: credential of `{}` not read: {error:?}", renewable.provider));
                    continue;
                }
            }
            let request = match renewable.renewal.request(now) {
                Ok(request) => request,
                Err(reason) => {
                    fail(renewable, &reason, now);
                    continue;
                }
            };
            let cluster = credentials::token_cluster(&renewable.provider);
            let mut headers = vec![(":method", request.method), (":path", request.path.as_str()), (":authority", request.authority.as_str())];
            headers.extend(request.headers.iter().map(|(name, value)| (name.as_str(), value.as_str())));
            let timeout = Duration::from_millis(credentials::REQUEST_TIMEOUT_MS);
            match hostcalls::dispatch_http_call(&cluster, headers, request.body.as_deref(), vec![], timeout) {
                Ok(token) => {
                    self.in_flight.push((token, index));
                }
                Err(status) => fail(renewable, &format!("cannot call cluster `{cluster}` ({status:?})"), now),
            }
        }
    }

    /// A token request's answer; `false` when the call was not one of ours.
    pub fn answered(&mut self, token_id: u32, body_size: usize) -> bool {
        let Some(position) = self.in_flight.iter().position(|(token, _)| *token == token_id) else {
            return false;
        };
        let (_, index) = self.in_flight.swap_remove(position);
        let Some(renewable) = self.renewables.get(index) else {
            return false;
        };
        let now = now_ms();
        let status = abi::header_str(MapType::HttpCallResponseHeaders, ":status").and_then(|s| s.parse::<u16>().ok());
        let Some(status) = status else {
            fail(renewable, "the token endpoint did not answer (timeout or connection failure)", now);
            return true;
        };
        let body = abi::body(BufferType::HttpCallResponseBody, body_size);
        match renewable.renewal.parse(status, &body, now) {
            Ok(token) => match credentials::renewed(&HostStore, &renewable.provider, &token, now) {
                Ok(_) => {
                    renewable.renewed.inc();
                    log(
                        LogLevel::Info,
                        &format!("llm-failover: renewed the credential of `{}`; it expires in {}s", renewable.provider, token.expires_at_ms.saturating_sub(now) / 1000),
                    );
                }
                Err(error) => fail(renewable, &format!("renewed token not stored: {error:?}"), now),
            },
            Err(reason) => fail(renewable, &reason, now),
        }
        true
    }
}

fn fail(renewable: &Renewable, reason: &str, now: u64) {
    renewable.failed.inc();
    let credential = credentials::renewal_failed(&HostStore, &renewable.provider, reason, now).ok().flatten().unwrap_or_default();
    let standing = match credential.usable(now) {
        Some(_) => format!("its token stays in use for {}s", credential.expires_at_ms.saturating_sub(now) / 1000),
        None => "the provider is skipped until a renewal succeeds".to_string(),
    };
    log(
        LogLevel::Warn,
        &format!(
            "llm-failover: renewing the credential of `{}` failed ({} in a row): {reason}; next try in {}s, {standing}",
            renewable.provider,
            credential.failures,
            credential.next_try_ms.saturating_sub(now).div_ceil(1000)
        ),
    );
}

/// A provider's standing for a request: its health, and out while it has no token to send.
pub fn standing(table: &HealthTable, provider: &str, model: &str, now: u64) -> Standing {
    let mut standing = Standing::of(table, provider, model);
    if renewed_kind(provider).is_some() {
        credentials::hold_out(&mut standing, &credentials::read(&HostStore, provider), now);
    }
    standing
}

/// Adds each renewed credential's state to the health report's providers.
pub fn annotate(report: &mut serde_json::Value, now: u64) {
    let Some(providers) = report.get_mut("providers").and_then(|p| p.as_array_mut()) else {
        return;
    };
    for entry in providers {
        let Some(name) = entry.get("name").and_then(|n| n.as_str()).map(str::to_string) else {
            continue;
        };
        let Some(kind) = renewed_kind(&name) else {
            continue;
        };
        if let Some(object) = entry.as_object_mut() {
            object.insert("credential".into(), credentials::report(&credentials::read(&HostStore, &name), kind, now));
        }
    }
}

thread_local! {
    /// Every `auth.headers` name of the providers in this VM: each attempt removes them all
    /// (Envoy shares the request headers between attempts) before setting its own.
    static EXTRA_HEADERS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Called for each provider's attempt role as it is made.
pub fn note_headers(provider: &Provider) {
    EXTRA_HEADERS.with(|names| {
        let mut names = names.borrow_mut();
        for (name, _) in &provider.auth.headers {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    });
}

/// Sets the attempt's `auth.headers` (removing other providers'), and its credential header
/// from the provider's current token; the token's generation, for a 401 to retire it. With no
/// token, the attempt goes without a credential (the router left the provider out; this
/// attempt raced its expiry) and fails over.
pub fn apply(provider: &Provider, present: &HeaderPairs, context_id: u32) -> Option<u64> {
    EXTRA_HEADERS.with(|names| {
        for name in names.borrow().iter().filter(|n| present.contains(n) && !provider.auth.headers.iter().any(|(own, _)| own == *n)) {
            abi::remove_header(MapType::HttpRequestHeaders, name);
        }
    });
    for (name, value) in &provider.auth.headers {
        abi::set_header(MapType::HttpRequestHeaders, name, value);
    }
    provider.auth.renewal.as_ref()?;
    let credential: Credential = credentials::read(&HostStore, &provider.name);
    let now = now_ms();
    let Some((token, generation)) = credential.usable(now) else {
        log(LogLevel::Warn, &format!("llm-failover #{context_id}: no valid token for `{}`: the attempt goes without a credential", provider.name));
        return None;
    };
    if let (Some(name), Some(value)) = (provider.auth.header_name(), provider.auth.header_value_with(token)) {
        abi::set_header(MapType::HttpRequestHeaders, name, &value);
    }
    Some(generation)
}

/// The provider refused the token it was sent (401/403): retire it so that it is renewed now.
pub fn rejected(provider: &str, generation: u64, context_id: u32) {
    match credentials::rejected(&HostStore, provider, generation, now_ms()) {
        Ok(true) => log(LogLevel::Warn, &format!("llm-failover #{context_id}: `{provider}` refused its renewed token: renewing it now")),
        Ok(false) => {}
        Err(error) => log(LogLevel::Warn, &format!("llm-failover #{context_id}: refused token of `{provider}` not retired: {error:?}")),
    }
}
