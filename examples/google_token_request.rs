//! The token request `google_auth` builds for a service-account key file read from stdin, as
//! JSON on stdout: the end-to-end tests send it to the Google token endpoint fake, which
//! verifies the assertion, so the tokens Envoy uses there come from an assertion this crate
//! signed. A test tool: its output holds a live assertion.
//!
//!   cargo build --release --example google_token_request
//!   target/release/examples/google_token_request < key.json

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use llm_failover::google_auth::{ServiceAccount, DEFAULT_SCOPE};

fn main() -> Result<(), String> {
    let mut key = String::new();
    std::io::stdin().read_to_string(&mut key).map_err(|e| e.to_string())?;
    let account = ServiceAccount::from_json(&key).map_err(|e| e.0)?;
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
    let request = account.token_request(DEFAULT_SCOPE, now_s).map_err(|e| e.0)?;
    let headers: serde_json::Map<String, serde_json::Value> =
        request.headers.into_iter().map(|(name, value)| (name.to_string(), value.into())).collect();
    let out = serde_json::json!({
        "method": request.method, "authority": request.authority, "path": request.path,
        "headers": headers, "body": request.body,
    });
    println!("{out}");
    Ok(())
}
