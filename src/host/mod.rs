//! The only code that talks to Envoy: root contexts that read the plugin config and pick a
//! role, and the per-request contexts of each role. Everything they decide comes from the
//! plain-Rust modules beside this one.

mod abi;
mod attempt;
mod counters;
mod health_view;
mod prober;
mod route_refresh;
mod router;

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use crate::config::{self, Config};
use crate::health;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|panic| {
        log(LogLevel::Critical, &format!("llm-failover panicked: {panic}"));
    }));
    proxy_wasm::set_root_context(|context_id| Box::new(Root { context_id, role: None }));
}}

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

pub fn now_ms() -> u64 {
    hostcalls::get_current_time().map_or(0, health::now_ms)
}

enum Role {
    Router(Rc<router::RouterRole>),
    Attempt(Rc<attempt::AttemptRole>),
    AttemptByEndpoint,
    RouteRefresh,
    Prober(prober::Prober),
}

struct Root {
    context_id: u32,
    role: Option<Role>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, _body_size: usize, _trailers: usize) {
        if let Some(Role::Prober(prober)) = &mut self.role {
            prober.answered(token_id);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            _ => Vec::new(),
        };
        let config = match config::parse(&bytes, &abi::VmEnvironment) {
            Ok(config) => config,
            Err(error) => {
                log(LogLevel::Critical, &format!("llm-failover: plugin configuration refused: {error}"));
                return false;
            }
        };
        let (role, summary) = match config {
            Config::Router(config) => {
                let summary = format!(
                    "router for {:?}, {} chains over providers {:?}",
                    config.chat_paths,
                    config.chains.len(),
                    config.providers
                );
                (Role::Router(Rc::new(router::RouterRole::new(*config))), summary)
            }
            Config::Attempt(config) => {
                let summary = format!(
                    "attempt role for provider `{}` ({} at {})",
                    config.provider.name,
                    config.provider.format.name(),
                    config.provider.host
                );
                let role = Rc::new(attempt::AttemptRole::new(*config));
                attempt::register(&role, &bytes);
                (Role::Attempt(role), summary)
            }
            Config::AttemptByEndpoint => (Role::AttemptByEndpoint, "attempt role of the provider each endpoint names".to_string()),
            Config::RouteRefresh => (Role::RouteRefresh, "route-refresh".to_string()),
            Config::Prober(config) => {
                let summary = format!("prober of {} providers every {:?}", config.probes.len(), config.interval);
                let prober = prober::Prober::new(config, self.context_id);
                let _ = hostcalls::set_tick_period(prober.interval());
                (Role::Prober(prober), summary)
            }
        };
        log(LogLevel::Info, &format!("llm-failover #{}: configured as {summary}", self.context_id));
        self.role = Some(role);
        true
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        match self.role.as_ref()? {
            Role::Router(role) => Some(Box::new(router::RouterFilter::new(context_id, role.clone()))),
            Role::Attempt(role) => Some(Box::new(attempt::AttemptFilter::new(context_id, role.clone()))),
            Role::AttemptByEndpoint => Some(Box::new(attempt::ByEndpoint::new(context_id))),
            Role::RouteRefresh => Some(Box::new(route_refresh::RouteRefresh)),
            Role::Prober(_) => None,
        }
    }

    fn on_tick(&mut self) {
        if let Some(Role::Prober(prober)) = &mut self.role {
            prober.tick();
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
