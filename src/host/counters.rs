//! Envoy counters (they show in /stats as `wasmcustom.<name>`), defined once at configure
//! time so that counting is one host call with no name to build.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

pub struct Counter(Option<u32>);

impl Counter {
    pub fn define(name: &str) -> Counter {
        Counter(hostcalls::define_metric(MetricType::Counter, name).ok())
    }

    pub fn inc(&self) {
        if let Some(id) = self.0 {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}
