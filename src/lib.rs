//! llm-failover: a Proxy-Wasm filter that lets Envoy fail over between LLM providers.
//!
//! The logic is plain Rust tested natively; `host` is the only part that talks to Envoy.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod audit;
pub mod budget;
pub mod chat;
pub mod classifier;
pub mod config;
pub mod credentials;
pub mod decimal;
pub mod duration;
pub mod error_kind;
pub mod google_auth;
pub mod health;
pub mod health_report;
pub mod http_date;
pub mod inbound;
pub mod openai_error;
pub mod orders;
pub mod policy;
pub mod provider;
pub mod probe;
pub mod proxy_map;
pub mod render;
pub mod routing;
pub mod sort;
pub mod sse;
pub mod trust;
pub mod usage;
pub mod yaml;

#[cfg(target_arch = "wasm32")]
mod host;
