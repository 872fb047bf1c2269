//! The only code that talks to Envoy: root contexts that read the plugin config and pick a
//! role, and the per-request contexts of each role. Everything they decide comes from the
//! plain-Rust modules beside this one.

mod abi;
mod attempt;
mod counters;
mod health_view;
mod prober;
mod renewer;
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
    proxy_wasm::set_root_context(|context_id| Box::new(Root { context_id, role: None, renewer: None }));
}}

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

pub fn now_ms() -> u64 {
    hostcalls::get_current_time().map_or(0, health::now_ms)
}

enum Role {
    Router(Rc<router::RouterRole>),
    Attempt,
    Prober(prober::Prober),
}

struct Root {
    context_id: u32,
    role: Option<Role>,
    /// The router role's renewal of providers' tokens, when any provider's is renewed.
    renewer: Option<renewer::Renewer>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if self.renewer.as_mut().is_some_and(|r| r.answered(token_id, body_size)) {
            return;
        }
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
        let envoy = abi::envoy_version();
        if let Config::Router(deployment) = &config {
            if let Err(error) = deployment.supported_by(envoy) {
                log(LogLevel::Critical, &format!("llm-failover: plugin configuration refused: {error}"));
                return false;
            }
        }
        let (role, summary) = match config {
            Config::Router(deployment) => {
                let config = deployment.router;
                let providers: Vec<String> = deployment
                    .attempts
                    .iter()
                    .map(|a| format!("{} ({} at {})", a.provider.name, a.provider.format.name(), a.provider.host))
                    .collect();
                let mut paths = config.chat_paths.clone();
                paths.extend(config.embeddings_paths.iter().cloned());
                let summary = format!("router for {:?}, {} chains over providers {}", paths, config.chains.len(), providers.join(", "));
                self.renewer = renewer::Renewer::new(&deployment.attempts);
                if self.renewer.is_some() {
                    // Not fetched here: during on_configure Envoy's clusters may not be ready.
                    let _ = hostcalls::set_tick_period(renewer::TICK);
                }
                attempt::register(deployment.attempts, &bytes);
                (Role::Router(Rc::new(router::RouterRole::new(config))), summary)
            }
            Config::Attempt => {
                // One per order cluster: say it once, at debug level.
                self.role = Some(Role::Attempt);
                log(LogLevel::Debug, &format!("llm-failover #{}: configured as the attempt role", self.context_id));
                return true;
            }
            Config::Prober(config) => {
                let summary = format!("prober of {} providers every {:?}", config.probes.len(), config.interval);
                let prober = prober::Prober::new(config, self.context_id);
                let _ = hostcalls::set_tick_period(prober.interval());
                (Role::Prober(prober), summary)
            }
        };
        let envoy = envoy.map_or("an Envoy of unknown version".to_string(), |v| format!("Envoy {v}"));
        log(LogLevel::Info, &format!("llm-failover #{}: configured as {summary} in {envoy}", self.context_id));
        self.role = Some(role);
        true
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        match self.role.as_ref()? {
            Role::Router(role) => Some(Box::new(router::RouterFilter::new(context_id, role.clone()))),
            Role::Attempt => Some(Box::new(attempt::ByEndpoint::new(context_id))),
            Role::Prober(_) => None,
        }
    }

    fn on_tick(&mut self) {
        if let Some(renewer) = &mut self.renewer {
            renewer.tick();
        }
        if let Some(Role::Prober(prober)) = &mut self.role {
            prober.tick();
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
