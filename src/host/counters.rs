//! Envoy metrics (they show in /stats as `wasmcustom.<name>`), defined once so that recording
//! is one host call with no name to build.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

pub struct Counter(Option<u32>);

impl Counter {
    pub fn define(name: &str) -> Counter {
        Counter(hostcalls::define_metric(MetricType::Counter, name).ok())
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        if let (Some(id), true) = (self.0, n > 0) {
            let _ = hostcalls::increment_metric(id, n as i64);
        }
    }
}

pub struct Gauge(Option<u32>);

impl Gauge {
    pub fn define(name: &str) -> Gauge {
        Gauge(hostcalls::define_metric(MetricType::Gauge, name).ok())
    }

    pub fn set(&self, value: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

/// Envoy histograms: Prometheus buckets at /stats/prometheus.
pub struct Histogram(Option<u32>);

impl Histogram {
    pub fn define(name: &str) -> Histogram {
        Histogram(hostcalls::define_metric(MetricType::Histogram, name).ok())
    }

    pub fn record(&self, value: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

/// A metric name part from free text (a model name): Envoy splits names at dots and the
/// Prometheus exporter takes only `[a-zA-Z0-9_]`.
pub fn name_part(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(80).collect()
}
