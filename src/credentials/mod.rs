//! Credentials the filter renews itself: short-lived tokens fetched from a token endpoint
//! (OAuth2 client credentials, a GitHub-Copilot-style exchange) and kept in shared data, where
//! every worker's attempt role reads them. One module per kind builds its token request and
//! reads the answer; this one keeps each provider's record and decides when to renew.

pub mod exchange;
pub mod google;
pub mod oauth2;

use std::fmt;

use crate::config::Environment;
use crate::health::{compare_and_swap, SharedStore, StoreError};
use crate::routing::Standing;

/// A renewal claimed by a worker and not finished by then is anybody's again.
pub const CLAIM_MS: u64 = 12_000;
/// How long the token request may take.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// A token this close to its expiry is not handed to an attempt: the provider may see it late.
const EXPIRY_SKEW_MS: u64 = 1_000;
const MAX_BACKOFF_MS: u64 = 60_000;
/// Renew a minute before expiry at the latest (or half-way for a shorter-lived token), and at
/// 80% of the token's life at the earliest.
const RENEW_AHEAD_MS: u64 = 60_000;
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The Envoy cluster a provider's token requests go through (`llm-failover-render` makes it).
pub fn token_cluster(provider: &str) -> String {
    format!("llm_token~{provider}")
}

pub fn record_key(provider: &str) -> String {
    format!("llm-failover/v1/credential/{provider}")
}

/// Where a token endpoint is: `https://host[:port]/path`, or `http://` on loopback only (a
/// client secret never crosses a network in the clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUrl {
    pub tls: bool,
    /// `host` or `host:port`, as the `:authority` of the token request.
    pub authority: String,
    pub path: String,
}

impl TokenUrl {
    pub fn parse(text: &str) -> Result<TokenUrl, String> {
        let (tls, rest) = match text.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => return Err(format!("`{text}` must be an https:// URL")),
        };
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (rest.get(..i).unwrap_or(rest), rest.get(i..).unwrap_or("/")));
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
        if authority.is_empty() || authority.contains(['@', ' ']) || path.contains(['#', ' ']) {
            return Err(format!("`{text}` is not a usable URL"));
        }
        if !tls && !loopback {
            return Err(format!("`{text}` must use https (plain http only to a loopback address)"));
        }
        Ok(TokenUrl { tls, authority: authority.to_string(), path: path.to_string() })
    }

    /// The host part, with the port when the URL names one.
    pub fn host(&self) -> &str {
        self.authority.rsplit_once(':').map_or(self.authority.as_str(), |(h, _)| h)
    }

    pub fn port(&self) -> u16 {
        let default = if self.tls { 443 } else { 80 };
        self.authority.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(default)
    }
}

/// One token request, for the host to send through the provider's token cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub method: &'static str,
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// A token endpoint's answer, read.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub expires_at_ms: u64,
    /// When the endpoint asks to be asked again (Copilot's `refresh_in`).
    pub refresh_at_ms: Option<u64>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token").field("value", &"<redacted>").field("expires_at_ms", &self.expires_at_ms).finish()
    }
}

/// How a provider's credential is renewed. A new kind is a module with a `request` and a
/// `parse`, and a variant here.
#[derive(Clone, PartialEq, Eq)]
pub enum Renewal {
    ClientCredentials(oauth2::ClientCredentials),
    Exchange(exchange::TokenExchange),
    Google(google::GoogleServiceAccount),
}

impl fmt::Debug for Renewal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Renewal({} at {}{})", self.kind(), self.url().authority, self.url().path)
    }
}

impl Renewal {
    pub fn kind(&self) -> &'static str {
        match self {
            Renewal::ClientCredentials(_) => oauth2::KIND,
            Renewal::Exchange(_) => exchange::KIND,
            Renewal::Google(_) => google::KIND,
        }
    }

    pub fn url(&self) -> &TokenUrl {
        match self {
            Renewal::ClientCredentials(c) => &c.url,
            Renewal::Exchange(e) => &e.url,
            Renewal::Google(g) => &g.url,
        }
    }

    /// The token request to send now, or why there is none (a reason fit for a log).
    pub fn request(&self, now_ms: u64) -> Result<TokenRequest, String> {
        match self {
            Renewal::ClientCredentials(c) => Ok(c.request()),
            Renewal::Exchange(e) => Ok(e.request()),
            Renewal::Google(g) => g.request(now_ms),
        }
    }

    /// The token in an answer, or why there is none (a reason fit for a log: no secret in it).
    pub fn parse(&self, status: u16, body: &[u8], now_ms: u64) -> Result<Token, String> {
        if status != 200 {
            return Err(format!("token endpoint answered {status}{}", error_code(body)));
        }
        let token = match self {
            Renewal::ClientCredentials(_) => oauth2::parse(body, now_ms),
            Renewal::Exchange(_) => exchange::parse(body, now_ms),
            Renewal::Google(_) => google::parse(body, now_ms),
        }?;
        if token.value.is_empty() || token.value.len() > MAX_TOKEN_BYTES || !token.value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("token endpoint answered a token that is not a header value".into());
        }
        if token.expires_at_ms <= now_ms + EXPIRY_SKEW_MS {
            return Err("token endpoint answered a token that has already expired".into());
        }
        Ok(token)
    }
}

/// ` (invalid_client)`: an OAuth2 error's code, which names the problem and holds no secret
/// (unlike `error_description`, which may echo the request).
fn error_code(body: &[u8]) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .filter(|c| c.len() <= 40 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    code.map_or(String::new(), |c| format!(" ({c})"))
}

/// Headers a provider needs besides its credential (Copilot's `Copilot-Integration-Id`,
/// `Editor-Version`): names lower-cased; no credential header, no pseudo-header.
pub fn check_headers(headers: &std::collections::BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    headers
        .iter()
        .map(|(name, value)| {
            let lower = name.to_ascii_lowercase();
            let token = !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !token || crate::provider::CREDENTIAL_HEADERS.contains(&lower.as_str()) || lower == "host" || lower.starts_with("x-llm") {
                return Err(format!("`{name}` cannot be set here"));
            }
            if value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(format!("the value of `{name}` is not a header value"));
            }
            Ok((lower, value.clone()))
        })
        .collect()
}

/// The renewal fields of a provider's `auth`, as written.
#[derive(Debug, Default, Clone)]
pub struct RawRenewal {
    pub kind: String,
    pub token_url: Option<String>,
    pub client_id_env: Option<String>,
    pub client_secret_env: Option<String>,
    pub scope: Option<String>,
    pub token_env: Option<String>,
    pub key_env: Option<String>,
}

/// The field (under `auth.`) and why, for a renewal the config cannot have.
pub type FieldError = (&'static str, String);

/// A secret from the VM's environment.
pub fn secret(env: &dyn Environment, field: &'static str, name: Option<&String>) -> Result<String, FieldError> {
    let name = name.ok_or((field, "is required for this kind".to_string()))?;
    match env.var(name) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim().to_string()),
        _ => Err((field, format!("environment variable `{name}` is not set in the VM (list it in vm_config.environment_variables)"))),
    }
}

impl RawRenewal {
    pub fn check(&self, env: &dyn Environment) -> Result<Renewal, FieldError> {
        let unused = |field: &'static str, set: bool| if set { Err((field, format!("is not used by kind `{}`", self.kind))) } else { Ok(()) };
        if self.kind == google::KIND {
            unused("clientIdEnv", self.client_id_env.is_some())?;
            unused("clientSecretEnv", self.client_secret_env.is_some())?;
            unused("tokenEnv", self.token_env.is_some())?;
            let name = self.key_env.as_deref().ok_or(("keyEnv", "is required for this kind".to_string()))?;
            let key = if env.set_at_run_time(name) { None } else { Some(secret(env, "keyEnv", self.key_env.as_ref())?) };
            let google = google::GoogleServiceAccount::new(key.as_deref(), name, self.token_url.as_deref(), self.scope.as_deref())?;
            return Ok(Renewal::Google(google));
        }
        unused("keyEnv", self.key_env.is_some())?;
        let url = self.token_url.as_deref().ok_or(("tokenUrl", "is required for this kind".to_string()))?;
        let url = TokenUrl::parse(url).map_err(|reason| ("tokenUrl", reason))?;
        match self.kind.as_str() {
            oauth2::KIND => {
                unused("tokenEnv", self.token_env.is_some())?;
                let scope = self.scope.clone().filter(|s| !s.trim().is_empty()).ok_or(("scope", "is required for this kind".to_string()))?;
                Ok(Renewal::ClientCredentials(oauth2::ClientCredentials {
                    url,
                    client_id: secret(env, "clientIdEnv", self.client_id_env.as_ref())?,
                    client_secret: secret(env, "clientSecretEnv", self.client_secret_env.as_ref())?,
                    scope,
                }))
            }
            exchange::KIND => {
                unused("clientIdEnv", self.client_id_env.is_some())?;
                unused("clientSecretEnv", self.client_secret_env.is_some())?;
                unused("scope", self.scope.is_some())?;
                Ok(Renewal::Exchange(exchange::TokenExchange { url, token: secret(env, "tokenEnv", self.token_env.as_ref())?, headers: Vec::new() }))
            }
            other => Err(("kind", format!("`{other}` is not one of `static`, `{}`, `{}`, `{}`", oauth2::KIND, exchange::KIND, google::KIND))),
        }
    }
}

/// What shared data holds of one provider's renewed credential.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credential {
    /// Counts the tokens fetched: a 401 retires only the token it was given with.
    pub generation: u64,
    pub token: String,
    pub expires_at_ms: u64,
    pub renew_at_ms: u64,
    /// A worker is fetching a token until then.
    pub claimed_until_ms: u64,
    /// Renewals failed in a row, and when the next one may be tried.
    pub failures: u32,
    pub next_try_ms: u64,
    pub renewed_at_ms: u64,
    /// Why the last renewal failed (or the token was retired); empty after a success.
    pub reason: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("generation", &self.generation)
            .field("token", &if self.token.is_empty() { "" } else { "<redacted>" })
            .field("expires_at_ms", &self.expires_at_ms)
            .field("failures", &self.failures)
            .field("reason", &self.reason)
            .finish()
    }
}

/// How a credential stands, for the health report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialState {
    Fresh,
    Renewing,
    Failed,
    /// No token yet (or it expired or was retired) and no failure to tell.
    Missing,
}

impl CredentialState {
    pub fn name(self) -> &'static str {
        match self {
            CredentialState::Fresh => "fresh",
            CredentialState::Renewing => "renewing",
            CredentialState::Failed => "failed",
            CredentialState::Missing => "missing",
        }
    }
}

impl Credential {
    fn encode(&self) -> Vec<u8> {
        let reason: String = self.reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        format!(
            "v1 {} {} {} {} {} {} {}\n{reason}\n{}",
            self.generation, self.expires_at_ms, self.renew_at_ms, self.claimed_until_ms, self.failures, self.next_try_ms, self.renewed_at_ms, self.token
        )
        .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Credential> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.splitn(3, '\n');
        let mut numbers = lines.next()?.split(' ');
        if numbers.next()? != "v1" {
            return None;
        }
        let mut next = || numbers.next().and_then(|n| n.parse::<u64>().ok());
        let mut credential = Credential {
            generation: next()?,
            expires_at_ms: next()?,
            renew_at_ms: next()?,
            claimed_until_ms: next()?,
            failures: u32::try_from(next()?).ok()?,
            next_try_ms: next()?,
            renewed_at_ms: next()?,
            ..Credential::default()
        };
        credential.reason = lines.next()?.to_string();
        credential.token = lines.next()?.to_string();
        Some(credential)
    }

    /// The token to send now, with its generation.
    pub fn usable(&self, now_ms: u64) -> Option<(&str, u64)> {
        (!self.token.is_empty() && now_ms + EXPIRY_SKEW_MS < self.expires_at_ms).then_some((self.token.as_str(), self.generation))
    }

    pub fn claimed(&self, now_ms: u64) -> bool {
        now_ms < self.claimed_until_ms
    }

    /// A token is to be fetched now: there is none to use or it is time to renew it, no worker
    /// is at it, and a failed renewal's backoff is over.
    pub fn due(&self, now_ms: u64) -> bool {
        (self.usable(now_ms).is_none() || now_ms >= self.renew_at_ms) && !self.claimed(now_ms) && now_ms >= self.next_try_ms
    }

    pub fn state(&self, now_ms: u64) -> CredentialState {
        match (self.usable(now_ms).is_some(), self.claimed(now_ms), self.failures > 0) {
            (_, true, _) => CredentialState::Renewing,
            (true, false, _) => CredentialState::Fresh,
            (false, false, true) => CredentialState::Failed,
            (false, false, false) => CredentialState::Missing,
        }
    }
}

pub fn read(store: &dyn SharedStore, provider: &str) -> Credential {
    store.get(&record_key(provider)).and_then(|(bytes, _)| Credential::decode(&bytes)).unwrap_or_default()
}

/// One CAS over the provider's record (`dyn`: one copy of the loop for every change).
fn change(store: &dyn SharedStore, provider: &str, edit: &mut dyn FnMut(&mut Credential) -> bool) -> Result<Option<Credential>, StoreError> {
    compare_and_swap(store, &record_key(provider), |bytes| {
        let mut credential = bytes.and_then(Credential::decode).unwrap_or_default();
        edit(&mut credential).then(|| (credential.encode(), credential.clone()))
    })
}

/// Claims the provider's renewal for this worker when one is due: `true` means fetch now.
pub fn claim(store: &dyn SharedStore, provider: &str, now_ms: u64) -> Result<bool, StoreError> {
    let claimed = change(store, provider, &mut |c| {
        let due = c.due(now_ms);
        if due {
            c.claimed_until_ms = now_ms + CLAIM_MS;
        }
        due
    })?;
    Ok(claimed.is_some())
}

/// When to renew a token fetched at `now_ms`: at 80% of its life, or a minute before it
/// expires (half-way for a short-lived one) if that is later; sooner if the endpoint asks.
pub fn renew_at(token: &Token, now_ms: u64) -> u64 {
    let life = token.expires_at_ms.saturating_sub(now_ms);
    let ahead = (life / 5).max(RENEW_AHEAD_MS.min(life / 2));
    let at = token.expires_at_ms.saturating_sub(ahead);
    token.refresh_at_ms.map_or(at, |refresh| refresh.clamp(now_ms, at))
}

pub fn renewed(store: &dyn SharedStore, provider: &str, token: &Token, now_ms: u64) -> Result<Option<Credential>, StoreError> {
    change(store, provider, &mut |c| {
        *c = Credential {
            generation: c.generation + 1,
            token: token.value.clone(),
            expires_at_ms: token.expires_at_ms,
            renew_at_ms: renew_at(token, now_ms),
            renewed_at_ms: now_ms,
            ..Credential::default()
        };
        true
    })
}

/// A renewal that failed: the next try backs off (1 s, doubled per failure, at most a minute);
/// a token still valid stays in use.
pub fn renewal_failed(store: &dyn SharedStore, provider: &str, reason: &str, now_ms: u64) -> Result<Option<Credential>, StoreError> {
    change(store, provider, &mut |c| {
        c.failures = c.failures.saturating_add(1);
        let backoff = 1_000u64.saturating_mul(1 << c.failures.saturating_sub(1).min(16)).min(MAX_BACKOFF_MS);
        c.next_try_ms = now_ms + backoff;
        c.claimed_until_ms = 0;
        c.reason = reason.to_string();
        true
    })
}

/// The provider refused the token of `generation` (a 401): retire it and renew at once. A
/// token already renewed since is kept.
pub fn rejected(store: &dyn SharedStore, provider: &str, generation: u64, now_ms: u64) -> Result<bool, StoreError> {
    let retired = change(store, provider, &mut |c| {
        let current = c.generation == generation && !c.token.is_empty();
        if current {
            c.token.clear();
            c.expires_at_ms = 0;
            c.renew_at_ms = now_ms;
            c.next_try_ms = c.next_try_ms.min(now_ms);
            c.reason = "the provider refused the token (401)".into();
        }
        current
    })?;
    Ok(retired.is_some())
}

/// A provider with no token to send is out like a cooling one, until its renewal may succeed.
pub fn hold_out(standing: &mut Standing, credential: &Credential, now_ms: u64) {
    if credential.usable(now_ms).is_some() {
        return;
    }
    let until = credential.next_try_ms.max(credential.claimed_until_ms).max(now_ms + EXPIRY_SKEW_MS);
    standing.provider.open = true;
    standing.provider.cooldown_until_ms = standing.provider.cooldown_until_ms.max(until);
}

/// The credential's entry in the health report: how it stands, never the token.
pub fn report(credential: &Credential, kind: &str, now_ms: u64) -> serde_json::Value {
    let seconds = |until: u64| if until > now_ms { serde_json::json!(until.saturating_sub(now_ms).div_ceil(1000)) } else { serde_json::Value::Null };
    let when = |at: u64| if at == 0 { serde_json::Value::Null } else { serde_json::json!(at) };
    serde_json::json!({
        "kind": kind,
        "state": credential.state(now_ms).name(),
        "expiresInS": if credential.token.is_empty() { serde_json::Value::Null } else { seconds(credential.expires_at_ms) },
        "renewInS": if credential.token.is_empty() { serde_json::Value::Null } else { seconds(credential.renew_at_ms) },
        "renewedAtMs": when(credential.renewed_at_ms),
        "failures": credential.failures,
        "lastError": if credential.reason.is_empty() { serde_json::Value::Null } else { serde_json::json!(credential.reason) },
        "nextTryInS": if credential.failures > 0 { seconds(credential.next_try_ms) } else { serde_json::Value::Null },
    })
}

/// `application/x-www-form-urlencoded` value.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(char::from(byte)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::tests::MemoryStore;
    use std::collections::HashMap;

    struct Env(HashMap<&'static str, &'static str>);
    impl Environment for Env {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }

    fn token(value: &str, expires_at_ms: u64) -> Token {
        Token { value: value.into(), expires_at_ms, refresh_at_ms: None }
    }

    #[test]
    fn token_urls() {
        let url = TokenUrl::parse("https://login.microsoftonline.com/tenant/oauth2/v2.0/token").unwrap();
        assert_eq!((url.tls, url.authority.as_str(), url.path.as_str(), url.port()), (true, "login.microsoftonline.com", "/tenant/oauth2/v2.0/token", 443));
        let url = TokenUrl::parse("http://127.0.0.1:9000/t?x=1").unwrap();
        assert_eq!((url.tls, url.host(), url.port(), url.path.as_str()), (false, "127.0.0.1", 9000, "/t?x=1"));
        assert_eq!(TokenUrl::parse("https://h").unwrap().path, "/");
        for bad in ["http://login.example.com/t", "ftp://h/t", "login.example.com/t", "https://user@h/t", "https:///t"] {
            assert!(TokenUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renewal_config_names_the_field() {
        let env = Env(HashMap::from([("ID", "client"), ("SECRET", "s3cret"), ("GH", "ghu_x")]));
        let oauth = RawRenewal {
            kind: oauth2::KIND.into(),
            token_url: Some("https://login.example.com/t".into()),
            client_id_env: Some("ID".into()),
            client_secret_env: Some("SECRET".into()),
            scope: Some("https://cognitiveservices.azure.com/.default".into()),
            token_env: None,
            key_env: None,
        };
        assert_eq!(oauth.check(&env).unwrap().kind(), oauth2::KIND);
        let exchange = RawRenewal { kind: exchange::KIND.into(), token_url: Some("https://api.github.com/copilot_internal/v2/token".into()), token_env: Some("GH".into()), ..RawRenewal::default() };
        assert_eq!(exchange.check(&env).unwrap().kind(), exchange::KIND);
        let cases: Vec<(RawRenewal, &str)> = vec![
            (RawRenewal { token_url: None, ..oauth.clone() }, "tokenUrl"),
            (RawRenewal { token_url: Some("http://login.example.com/t".into()), ..oauth.clone() }, "tokenUrl"),
            (RawRenewal { client_secret_env: Some("MISSING".into()), ..oauth.clone() }, "clientSecretEnv"),
            (RawRenewal { client_id_env: None, ..oauth.clone() }, "clientIdEnv"),
            (RawRenewal { scope: None, ..oauth.clone() }, "scope"),
            (RawRenewal { token_env: Some("GH".into()), ..oauth.clone() }, "tokenEnv"),
            (RawRenewal { token_env: None, ..exchange.clone() }, "tokenEnv"),
            (RawRenewal { scope: Some("x".into()), ..exchange.clone() }, "scope"),
            (RawRenewal { kind: "magic".into(), ..exchange.clone() }, "kind"),
            (RawRenewal { key_env: Some("GH".into()), ..exchange.clone() }, "keyEnv"),
            (RawRenewal { kind: google::KIND.into(), key_env: None, ..RawRenewal::default() }, "keyEnv"),
            (RawRenewal { kind: google::KIND.into(), key_env: Some("MISSING".into()), ..RawRenewal::default() }, "keyEnv"),
            (RawRenewal { kind: google::KIND.into(), key_env: Some("GH".into()), ..RawRenewal::default() }, "keyEnv"),
            (RawRenewal { kind: google::KIND.into(), key_env: Some("GH".into()), token_env: Some("GH".into()), ..RawRenewal::default() }, "tokenEnv"),
        ];
        for (raw, field) in cases {
            let (got, reason) = raw.check(&env).unwrap_err();
            assert_eq!(got, field, "{raw:?}: {reason}");
            assert!(!reason.contains("s3cret") && !reason.contains("ghu_x"));
        }
        assert!(!format!("{:?}", oauth.check(&env).unwrap()).contains("s3cret"));
    }

    #[test]
    fn renews_at_80_percent_or_a_minute_ahead_whichever_is_later() {
        let hour = token("t", 3_600_000);
        assert_eq!(renew_at(&hour, 0), 2_880_000);
        let two_minutes = token("t", 120_000);
        assert_eq!(renew_at(&two_minutes, 0), 60_000, "a minute ahead");
        let short = token("t", 4_000);
        assert_eq!(renew_at(&short, 0), 2_000, "half-way for a token shorter than two minutes");
        let asks = Token { refresh_at_ms: Some(1_000_000), ..hour.clone() };
        assert_eq!(renew_at(&asks, 0), 1_000_000, "the endpoint's refresh_in");
    }

    #[test]
    fn one_worker_renews_then_everyone_uses_the_token() {
        let store = MemoryStore::default();
        assert_eq!(read(&store, "p").state(0), CredentialState::Missing);
        assert!(claim(&store, "p", 0).unwrap());
        assert!(!claim(&store, "p", 10).unwrap(), "claimed by the first worker");
        assert_eq!(read(&store, "p").state(10), CredentialState::Renewing);
        renewed(&store, "p", &token("tok", 10_000), 100).unwrap();
        let c = read(&store, "p");
        assert_eq!((c.usable(200), c.state(200)), (Some(("tok", 1)), CredentialState::Fresh));
        assert!(!claim(&store, "p", 1_000).unwrap(), "not due yet");
        assert!(claim(&store, "p", c.renew_at_ms).unwrap(), "due ahead of expiry");
        renewed(&store, "p", &token("tok2", 20_000), c.renew_at_ms).unwrap();
        assert_eq!(read(&store, "p").usable(9_500), Some(("tok2", 2)));
        assert_eq!(read(&store, "p").usable(19_500), None, "too close to expiry");
        store.conflicts.set(2);
        assert!(claim(&store, "p", 30_000).unwrap(), "lost races are retried");
        assert!(!claim(&store, "p", 30_000 + CLAIM_MS - 1).unwrap());
        assert!(claim(&store, "p", 30_000 + CLAIM_MS).unwrap(), "a claim that was never finished lapses");
    }

    #[test]
    fn failures_back_off_keep_a_valid_token_and_show() {
        let store = MemoryStore::default();
        renewed(&store, "p", &token("tok", 100_000), 0).unwrap();
        let due = read(&store, "p").renew_at_ms;
        assert!(claim(&store, "p", due).unwrap());
        renewal_failed(&store, "p", "token endpoint answered 503", due).unwrap();
        let c = read(&store, "p");
        assert_eq!((c.usable(due), c.failures, c.next_try_ms), (Some(("tok", 1)), 1, due + 1_000));
        assert!(!claim(&store, "p", due + 999).unwrap());
        assert!(claim(&store, "p", due + 1_000).unwrap());
        renewal_failed(&store, "p", "connect failure", due + 1_000).unwrap();
        assert_eq!(read(&store, "p").next_try_ms, due + 3_000, "doubled");
        for i in 0..20 {
            renewal_failed(&store, "p", "x", i).unwrap();
        }
        assert_eq!(read(&store, "p").next_try_ms, 19 + MAX_BACKOFF_MS);
        let expired = read(&store, "p");
        assert_eq!(expired.state(100_000), CredentialState::Failed);
        renewed(&store, "p", &token("tok2", 300_000), 200_000).unwrap();
        let c = read(&store, "p");
        assert_eq!((c.failures, c.reason.as_str(), c.state(200_001)), (0, "", CredentialState::Fresh));
    }

    #[test]
    fn a_401_retires_only_the_token_it_was_sent_with() {
        let store = MemoryStore::default();
        renewed(&store, "p", &token("old", 100_000), 0).unwrap();
        renewed(&store, "p", &token("new", 100_000), 10).unwrap();
        assert!(!rejected(&store, "p", 1, 20).unwrap(), "an older token's 401");
        assert_eq!(read(&store, "p").usable(20), Some(("new", 2)));
        assert!(rejected(&store, "p", 2, 20).unwrap());
        let c = read(&store, "p");
        assert_eq!(c.usable(20), None);
        assert!(c.due(20), "renewed at once");
        assert!(!format!("{c:?}").contains("new"));
    }

    #[test]
    fn a_provider_without_a_token_is_held_out() {
        let mut standing = Standing::default();
        let mut c = Credential { token: "t".into(), expires_at_ms: 10_000, ..Credential::default() };
        hold_out(&mut standing, &c, 0);
        assert!(!standing.provider.open);
        c.expires_at_ms = 0;
        c.next_try_ms = 5_000;
        hold_out(&mut standing, &c, 0);
        assert!(standing.provider.is_cooling(4_999));
        assert!(!standing.provider.is_cooling(5_000));
    }

    #[test]
    fn records_survive_shared_data() {
        let c = Credential { generation: 3, token: "a.b-c_d".into(), expires_at_ms: 9, renew_at_ms: 8, claimed_until_ms: 7, failures: 2, next_try_ms: 6, renewed_at_ms: 5, reason: "token endpoint answered 500\nx".into() };
        let back = Credential::decode(&c.encode()).unwrap();
        assert_eq!(back.reason, "token endpoint answered 500 x");
        assert_eq!(Credential { reason: back.reason.clone(), ..c }, back);
        assert_eq!(Credential::decode(b"garbage"), None);
    }

    #[test]
    fn the_report_shows_the_state_never_the_token() {
        let store = MemoryStore::default();
        renewed(&store, "p", &token("secret-token", 10_000), 0).unwrap();
        let fresh = report(&read(&store, "p"), "oauth2-client-credentials", 1_000);
        assert_eq!((fresh["state"].as_str(), fresh["expiresInS"].as_u64(), fresh["failures"].as_u64()), (Some("fresh"), Some(9), Some(0)));
        assert!(!fresh.to_string().contains("secret-token"));
        renewal_failed(&store, "p", "token endpoint answered 503", 20_000).unwrap();
        let failed = report(&read(&store, "p"), "oauth2-client-credentials", 20_000);
        assert_eq!((failed["state"].as_str(), failed["lastError"].as_str(), failed["nextTryInS"].as_u64()), (Some("failed"), Some("token endpoint answered 503"), Some(1)));
        assert_eq!(failed["expiresInS"], serde_json::Value::Null);
    }

    #[test]
    fn extra_headers_are_plain_headers_only() {
        let map = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(check_headers(&map(&[("Copilot-Integration-Id", "vscode-chat")])).unwrap(), vec![("copilot-integration-id".to_string(), "vscode-chat".to_string())]);
        for bad in [("Authorization", "x"), ("api-key", "x"), (":path", "/"), ("Host", "h"), ("x-llm-provider", "a"), ("Editor-Version", ""), ("a b", "c"), ("e", "line\nbreak")] {
            assert!(check_headers(&map(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("https://cognitiveservices.azure.com/.default"), "https%3A%2F%2Fcognitiveservices.azure.com%2F.default");
        assert_eq!(form_encode("a b&c=d"), "a+b%26c%3Dd");
    }
}
