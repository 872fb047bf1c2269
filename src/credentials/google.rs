//! A Google service account, as Vertex AI takes it: a JWT assertion signed with the account's
//! key (RS256, `google_auth`) traded at Google's token endpoint for an hour-long access token.
//! The key file comes from the VM's environment (a Kubernetes Secret), read at configure time.

use std::fmt;
use std::rc::Rc;

use super::{FieldError, Token, TokenRequest, TokenUrl};
use crate::google_auth::{ServiceAccount, DEFAULT_SCOPE};

pub const KIND: &str = "google-service-account";
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

#[derive(Clone)]
pub struct GoogleServiceAccount {
    pub url: TokenUrl,
    pub scope: String,
    /// `None` only in `llm-failover-render`, which checks a config whose key Envoy's
    /// environment holds: it needs the token URL, never the key.
    account: Option<Rc<ServiceAccount>>,
}

impl PartialEq for GoogleServiceAccount {
    fn eq(&self, other: &Self) -> bool {
        let id = |g: &Self| g.account.as_ref().map(|a| (a.client_email.clone(), a.private_key_id.clone()));
        self.url == other.url && self.scope == other.scope && id(self) == id(other)
    }
}

impl Eq for GoogleServiceAccount {}

impl fmt::Debug for GoogleServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let email = self.account.as_ref().map_or("(key read at run time)", |a| a.client_email.as_str());
        write!(f, "GoogleServiceAccount({email})")
    }
}

impl GoogleServiceAccount {
    /// `key` is the key file's JSON, or `None` when only Envoy's environment knows it. The
    /// assertion's audience is the key's `token_uri` and Google takes it only there, so
    /// `tokenUrl` (which the renderer needs for the token cluster) must be that same URL.
    pub fn new(key: Option<&str>, key_env: &str, token_url: Option<&str>, scope: Option<&str>) -> Result<GoogleServiceAccount, FieldError> {
        let url_text = token_url.unwrap_or(DEFAULT_TOKEN_URL);
        let url = TokenUrl::parse(url_text).map_err(|reason| ("tokenUrl", reason))?;
        let scope = match scope.map(str::trim) {
            None => DEFAULT_SCOPE.to_string(),
            Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => s.to_string(),
            Some(_) => return Err(("scope", "must be space-separated OAuth2 scopes".into())),
        };
        let account = match key {
            None => None,
            Some(json) => {
                let account = ServiceAccount::from_json(json).map_err(|e| ("keyEnv", format!("environment variable `{key_env}`: {e}")))?;
                if account.token_endpoint.uri != url_text {
                    let shown = if token_url.is_some() { "is" } else { "defaults to" };
                    return Err((
                        "tokenUrl",
                        format!("{shown} `{url_text}`, but the key's `token_uri` is `{}`: the assertion is for that URL only", account.token_endpoint.uri),
                    ));
                }
                Some(Rc::new(account))
            }
        };
        Ok(GoogleServiceAccount { url, scope, account })
    }

    /// The token request, with an assertion signed now (Google refuses one issued too far
    /// from its clock).
    pub fn request(&self, now_ms: u64) -> Result<TokenRequest, String> {
        let account = self.account.as_ref().ok_or("the service-account key was not read")?;
        let request = account.token_request(&self.scope, now_ms / 1000).map_err(|e| e.0)?;
        Ok(TokenRequest {
            method: request.method,
            path: self.url.path.clone(),
            authority: self.url.authority.clone(),
            headers: request.headers.into_iter().map(|(name, value)| (name.to_string(), value)).collect(),
            body: Some(request.body.into_bytes()),
        })
    }
}

/// Google answers as OAuth2 does: `{"access_token":"ya29...","expires_in":3599,"token_type":"Bearer"}`.
pub fn parse(body: &[u8], now_ms: u64) -> Result<Token, String> {
    super::oauth2::parse(body, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Renewal;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    const KEY: &str = include_str!("../../tests/fixtures/google/TEST-ONLY-service-account.json");

    fn key_with(token_uri: &str) -> String {
        let mut value: serde_json::Value = serde_json::from_str(KEY).unwrap();
        value["token_uri"] = token_uri.into();
        value.to_string()
    }

    #[test]
    fn google_s_token_answers_are_read_as_oauth2_ones() {
        let key = key_with("http://127.0.0.1:8123/token");
        let renewal = Renewal::Google(GoogleServiceAccount::new(Some(&key), "KEY", Some("http://127.0.0.1:8123/token"), None).unwrap());
        let ok = br#"{"access_token":"ya29.token","expires_in":3599,"token_type":"Bearer"}"#;
        let token = renewal.parse(200, ok, 1_000).unwrap();
        assert_eq!((token.value.as_str(), token.expires_at_ms), ("ya29.token", 1_000 + 3_599_000));
        assert!(!format!("{token:?}").contains("ya29"));
        let refused = br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        assert_eq!(renewal.parse(400, refused, 0).unwrap_err(), "token endpoint answered 400 (invalid_grant)");
        assert_eq!(renewal.parse(503, b"busy", 0).unwrap_err(), "token endpoint answered 503");
        assert!(renewal.parse(200, b"{}", 0).unwrap_err().contains("access_token"));
        assert!(renewal.parse(200, br#"{"access_token":"t","token_type":"Bearer"}"#, 0).unwrap_err().contains("expires_in"));
        assert!(renewal.parse(200, br#"{"access_token":"t","expires_in":100,"token_type":"MAC"}"#, 0).is_err());
        assert!(renewal.parse(200, br#"{"access_token":"a\r\nb","expires_in":100}"#, 0).is_err(), "not a header value");
    }

    #[test]
    fn signs_an_assertion_for_the_key_s_token_uri_at_request_time() {
        let key = key_with("http://127.0.0.1:8123/token");
        let google = GoogleServiceAccount::new(Some(&key), "KEY", Some("http://127.0.0.1:8123/token"), None).unwrap();
        let renewal = Renewal::Google(google);
        let request = renewal.request(1_700_000_000_500).unwrap();
        assert_eq!((request.method, request.authority.as_str(), request.path.as_str()), ("POST", "127.0.0.1:8123", "/token"));
        let body = String::from_utf8(request.body.unwrap()).unwrap();
        let assertion = body.strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=").unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(assertion.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!((claims["aud"].as_str(), claims["iat"].as_u64(), claims["scope"].as_str()), (Some("http://127.0.0.1:8123/token"), Some(1_700_000_000), Some(DEFAULT_SCOPE)));
        let later = renewal.request(1_700_000_100_000).unwrap();
        assert_ne!(later.body, Some(body.into_bytes()), "a new assertion for each request");
        assert!(!format!("{renewal:?}").contains("MII"));
    }

    #[test]
    fn the_token_url_defaults_to_google_s_and_must_be_the_key_s() {
        let google = GoogleServiceAccount::new(Some(KEY), "KEY", None, Some("https://www.googleapis.com/auth/cloud-platform.read-only")).unwrap();
        assert_eq!((google.url.authority.as_str(), google.url.path.as_str(), google.url.tls), ("oauth2.googleapis.com", "/token", true));
        let (field, reason) = GoogleServiceAccount::new(Some(&key_with("https://elsewhere.example/token")), "KEY", None, None).unwrap_err();
        assert_eq!(field, "tokenUrl");
        assert!(reason.contains("defaults to `https://oauth2.googleapis.com/token`") && reason.contains("https://elsewhere.example/token"), "{reason}");
        let (field, _) = GoogleServiceAccount::new(Some(KEY), "KEY", Some("https://other.example/token"), None).unwrap_err();
        assert_eq!(field, "tokenUrl");
        assert_eq!(GoogleServiceAccount::new(Some(KEY), "KEY", None, Some(" ")).unwrap_err().0, "scope");
    }

    #[test]
    fn a_bad_key_is_refused_naming_the_variable_never_quoting_the_key() {
        let pem_start = "MIIEv";
        let user_key = r#"{"type":"authorized_user","client_id":"x","client_secret":"d-FL95Q19q7MQmFpd7hHD0Ty","refresh_token":"1//0gsecret"}"#;
        for bad in [user_key, "not json at all MIIEvQ", &KEY.replace("-----BEGIN PRIVATE KEY-----", "")] {
            let (field, reason) = GoogleServiceAccount::new(Some(bad), "GOOGLE_SA", None, None).unwrap_err();
            assert_eq!(field, "keyEnv");
            assert!(reason.starts_with("environment variable `GOOGLE_SA`: service-account key: "), "{reason}");
            assert!(!reason.contains(pem_start) && !reason.contains("d-FL95") && !reason.contains("1//0g"), "{reason}");
        }
    }

    #[test]
    fn without_the_key_only_the_url_is_known() {
        let google = GoogleServiceAccount::new(None, "KEY", Some("http://127.0.0.1:9/token"), None).unwrap();
        assert_eq!(google.url.port(), 9);
        assert!(google.request(0).is_err());
    }

    #[test]
    fn reads_google_s_answer() {
        let google = Renewal::Google(GoogleServiceAccount::new(Some(KEY), "KEY", None, None).unwrap());
        let token = google.parse(200, br#"{"access_token":"ya29.c.abc","expires_in":3599,"token_type":"Bearer"}"#, 1_000).unwrap();
        assert_eq!((token.value.as_str(), token.expires_at_ms), ("ya29.c.abc", 3_600_000));
        let deleted_key = br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        assert_eq!(google.parse(400, deleted_key, 0).unwrap_err(), "token endpoint answered 400 (invalid_grant)");
    }
}
