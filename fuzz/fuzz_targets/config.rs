//! The plugin configuration: parsed and checked as the filter does at configure time, for every
//! Envoy version it knows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_failover::config::{self, Config, Environment, EnvoyVersion};

/// Every variable is set: the checks behind a missing key run too.
struct Everything;

impl Environment for Everything {
    fn var(&self, _name: &str) -> Option<String> {
        Some("fuzz-key".into())
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Config::Router(deployment)) = config::parse(data, &Everything) {
        for minor in 35..=41 {
            let _ = deployment.supported_by(Some(EnvoyVersion(1, minor)));
        }
    }
});
