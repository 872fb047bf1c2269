//! The render's input: an Envoy bootstrap and the Istio resources from arbitrary JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = llm_failover::render::render(data);
    let _ = llm_failover::render::render_istio(data);
});
