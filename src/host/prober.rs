//! Prober role: a root context (an Envoy bootstrap wasm service) that, each interval, holds the
//! probe lease and sends each open provider a cheap request through its cluster. The provider's
//! attempt role adds the key and records the answer, which closes a recovered breaker.

use std::collections::HashMap;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

use super::abi::{self, HostStore};
use super::{health_view, log, now_ms};
use crate::probe::{self, ProberConfig};

pub struct Prober {
    config: ProberConfig,
    holder: u64,
    holding: bool,
    /// Probes under way: call token -> provider.
    in_flight: HashMap<u32, String>,
}

impl Prober {
    pub fn new(config: ProberConfig, context_id: u32) -> Prober {
        // Unique enough among the probers of one Envoy: the clock at start and the context.
        let holder = now_ms().wrapping_mul(1_000_003) ^ u64::from(context_id);
        Prober { config, holder, holding: false, in_flight: HashMap::new() }
    }

    pub fn interval(&self) -> Duration {
        self.config.interval
    }

    pub fn tick(&mut self) {
        let now = now_ms();
        let holding = match probe::hold_lease(&HostStore, self.holder, now, self.config.lease) {
            Ok(holding) => holding,
            Err(error) => {
                log(LogLevel::Warn, &format!("llm-failover prober: probe lease not read: {error:?}"));
                false
            }
        };
        if holding != self.holding {
            let what = if holding { "holds the probe lease: this prober probes" } else { "lost the probe lease to another prober" };
            log(LogLevel::Info, &format!("llm-failover prober {:x}: {what}", self.holder));
            self.holding = holding;
        }
        if !holding {
            return;
        }
        let table = health_view::current(now);
        for due in probe::due(&self.config, &table, now) {
            if self.in_flight.values().any(|p| *p == due.provider) {
                continue;
            }
            let headers = vec![(":method", "GET"), (":path", due.path.as_str()), (":authority", "llm-failover-probe")];
            match hostcalls::dispatch_http_call(&due.cluster, headers, None, vec![], due.timeout) {
                Ok(token) => {
                    log(LogLevel::Info, &format!("llm-failover prober: probing `{}` with GET {}", due.provider, due.path));
                    self.in_flight.insert(token, due.provider.clone());
                }
                Err(status) => log(
                    LogLevel::Warn,
                    &format!("llm-failover prober: cannot probe `{}` through cluster `{}`: {status:?}", due.provider, due.cluster),
                ),
            }
        }
    }

    pub fn answered(&mut self, token: u32) {
        let Some(provider) = self.in_flight.remove(&token) else {
            return;
        };
        let status = abi::header_str(proxy_wasm::types::MapType::HttpCallResponseHeaders, ":status");
        log(
            LogLevel::Info,
            &format!("llm-failover prober: `{provider}` answered its probe with {}", status.as_deref().unwrap_or("no response")),
        );
    }
}
