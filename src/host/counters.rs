//! Envoy counters (they show in /stats as `wasmcustom.<name>`), defined once per name.

use std::cell::RefCell;
use std::collections::HashMap;

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

#[derive(Default)]
pub struct Counters {
    ids: RefCell<HashMap<String, u32>>,
}

impl Counters {
    pub fn define(&self, name: &str) -> Option<u32> {
        if let Some(&id) = self.ids.borrow().get(name) {
            return Some(id);
        }
        let id = hostcalls::define_metric(MetricType::Counter, name).ok()?;
        self.ids.borrow_mut().insert(name.to_string(), id);
        Some(id)
    }

    pub fn inc(&self, name: &str) {
        if let Some(id) = self.define(name) {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}
