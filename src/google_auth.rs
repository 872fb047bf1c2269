//! Google service-account credentials: the signed JWT assertion (RS256) and the OAuth2 token
//! request that trades it for an access token, as plain data for the host layer to send.

mod rsa;
mod sha256;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

pub use rsa::RsaKey;

pub const DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_BEARER_GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";
const ASSERTION_LIFETIME_S: u64 = 3600;

/// A service-account key file (the JSON Google hands out), parsed and checked.
#[derive(Debug)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key_id: String,
    pub token_endpoint: TokenEndpoint,
    key: RsaKey,
}

/// Where the token request goes, split from the key's `token_uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEndpoint {
    pub uri: String,
    pub tls: bool,
    pub authority: String,
    pub path: String,
}

/// Why a key file is refused. The message names the field and never quotes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ServiceAccount {
    pub fn from_json(json: &str) -> Result<ServiceAccount, KeyError> {
        // serde_json's messages can quote the input: only the position is kept.
        let file: serde_json::Value = serde_json::from_str(json).map_err(|e| {
            KeyError(format!("service-account key: not a key file JSON object (line {}, column {})", e.line(), e.column()))
        })?;
        let field = |name: &str| {
            file.get(name)
                .and_then(serde_json::Value::as_str)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| KeyError(format!("service-account key: `{name}` is missing")))
        };
        if field("type")? != "service_account" {
            return Err(KeyError("service-account key: `type` is not \"service_account\"".into()));
        }
        let client_email = field("client_email")?.to_string();
        let private_key_id = field("private_key_id")?.to_string();
        let token_endpoint = TokenEndpoint::parse(field("token_uri")?)
            .ok_or_else(|| KeyError("service-account key: `token_uri` is not an http(s) URL".into()))?;
        let key = parse_private_key_pem(field("private_key")?)
            .map_err(|why| KeyError(format!("service-account key: `private_key`: {why}")))?;
        Ok(ServiceAccount { client_email, private_key_id, token_endpoint, key })
    }

    /// The JWT assertion for `scope`, issued at `now_s` (seconds since the epoch).
    pub fn assertion(&self, scope: &str, now_s: u64) -> Result<String, KeyError> {
        let header = format!(
            r#"{{"alg":"RS256","typ":"JWT","kid":{}}}"#,
            serde_json::Value::from(self.private_key_id.as_str())
        );
        let claims = format!(
            r#"{{"iss":{},"scope":{},"aud":{},"iat":{now_s},"exp":{}}}"#,
            serde_json::Value::from(self.client_email.as_str()),
            serde_json::Value::from(scope),
            serde_json::Value::from(self.token_endpoint.uri.as_str()),
            now_s + ASSERTION_LIFETIME_S
        );
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let signature = self
            .key
            .sign_sha256(signing_input.as_bytes())
            .map_err(|why| KeyError(format!("service-account key: `private_key`: {}", why.0)))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// The request that trades a fresh assertion for an access token.
    pub fn token_request(&self, scope: &str, now_s: u64) -> Result<TokenRequest, KeyError> {
        let assertion = self.assertion(scope, now_s)?;
        Ok(TokenRequest {
            method: "POST",
            authority: self.token_endpoint.authority.clone(),
            path: self.token_endpoint.path.clone(),
            headers: vec![("content-type", "application/x-www-form-urlencoded".into()), ("accept", "application/json".into())],
            body: format!("grant_type={JWT_BEARER_GRANT}&assertion={assertion}"),
        })
    }
}

impl TokenEndpoint {
    fn parse(uri: &str) -> Option<TokenEndpoint> {
        let (tls, rest) = match uri.split_once("://")? {
            ("https", rest) => (true, rest),
            ("http", rest) => (false, rest),
            _ => return None,
        };
        let (authority, path) = rest.find('/').map_or((rest, "/"), |slash| (rest.get(..slash).unwrap_or(rest), rest.get(slash..).unwrap_or("/")));
        if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) || path.contains([' ', '#']) {
            return None;
        }
        Some(TokenEndpoint { uri: uri.to_string(), tls, authority: authority.to_string(), path: path.to_string() })
    }
}

/// An HTTP request as plain data; the body holds the assertion, so it is never logged.
pub struct TokenRequest {
    pub method: &'static str,
    pub authority: String,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenRequest({} {}{}, body redacted)", self.method, self.authority, self.path)
    }
}

fn parse_private_key_pem(pem: &str) -> Result<RsaKey, String> {
    let block = |label: &str| {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = pem.find(&begin)? + begin.len();
        let stop = start + pem.get(start..)?.find(&end)?;
        pem.get(start..stop)
    };
    let (body, pkcs8) = match (block("PRIVATE KEY"), block("RSA PRIVATE KEY")) {
        (Some(body), _) => (body, true),
        (None, Some(body)) => (body, false),
        (None, None) => return Err("no PEM PRIVATE KEY block".into()),
    };
    let base64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD.decode(base64).map_err(|_| "PEM body is not base64".to_string())?;
    let key = if pkcs8 { RsaKey::from_pkcs8_der(&der) } else { RsaKey::from_pkcs1_der(&der) };
    key.map_err(|fault| fault.0.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_KEY: &str = include_str!("../tests/fixtures/google/TEST-ONLY-service-account.json");
    const TEST_SIGNATURE_HEX: &str = include_str!("../tests/fixtures/google/TEST-ONLY-signature.hex");
    const TEST_ASSERTION: &str = include_str!("../tests/fixtures/google/TEST-ONLY-assertion-iat-1700000000.jwt");

    fn key_json(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut value: serde_json::Value = serde_json::from_str(TEST_KEY).unwrap();
        edit(&mut value);
        value.to_string()
    }

    fn private_key_pem() -> String {
        let value: serde_json::Value = serde_json::from_str(TEST_KEY).unwrap();
        value["private_key"].as_str().unwrap().to_string()
    }

    #[test]
    fn signature_matches_python_cryptography() {
        let account = ServiceAccount::from_json(TEST_KEY).unwrap();
        let signature = account.key.sign_sha256(b"llm-failover RS256 test message").unwrap();
        let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, TEST_SIGNATURE_HEX.trim());
    }

    #[test]
    fn assertion_matches_python_cryptography() {
        let account = ServiceAccount::from_json(TEST_KEY).unwrap();
        assert_eq!(account.assertion(DEFAULT_SCOPE, 1_700_000_000).unwrap(), TEST_ASSERTION.trim());
        let other_time = account.assertion(DEFAULT_SCOPE, 1_700_000_001).unwrap();
        assert_ne!(other_time, TEST_ASSERTION.trim());
    }

    #[test]
    fn token_request_is_a_jwt_bearer_form_post_to_token_uri() {
        let json = key_json(|v| v["token_uri"] = "http://127.0.0.1:8123/token".into());
        let account = ServiceAccount::from_json(&json).unwrap();
        let request = account.token_request(DEFAULT_SCOPE, 1_700_000_000).unwrap();
        assert_eq!((request.method, request.authority.as_str(), request.path.as_str()), ("POST", "127.0.0.1:8123", "/token"));
        assert!(!account.token_endpoint.tls);
        assert!(request.headers.contains(&("content-type", "application/x-www-form-urlencoded".into())));
        let assertion = request
            .body
            .strip_prefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
            .unwrap();
        let claims = URL_SAFE_NO_PAD.decode(assertion.split('.').nth(1).unwrap()).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
        assert_eq!(claims["aud"], "http://127.0.0.1:8123/token");
        assert_eq!(claims["exp"], 1_700_003_600);
        assert!(!format!("{request:?}").contains(assertion));
    }

    #[test]
    fn bad_key_files_are_refused_naming_the_field_without_the_key() {
        let pem = private_key_pem();
        let broken_base64 = pem.replacen("MII", "M*I", 1);
        let mut truncated_der = pem.lines().take(5).collect::<Vec<_>>().join("\n");
        truncated_der.push_str("\n-----END PRIVATE KEY-----\n");
        // A P-256 key made for this test only.
        let ec_key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgyBIt82Gdre72PqWc\nNsQhD3ahZxNLjhFlR82XO9zkCimhRANCAARRlL8K/QhQ5wPH2xeTu0ESAA6HkR2i\n0m/h2kxD9e2GfjxpMQD7GkQNeVH1NxOjswCqRVIQaBn6d7JTrHUci6oI\n-----END PRIVATE KEY-----\n";
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "service-account key: not a key file JSON object (line 1, column 2)"),
            (key_json(|v| v["type"] = "authorized_user".into()), "service-account key: `type` is not \"service_account\""),
            (key_json(|v| v["client_email"] = serde_json::Value::Null), "service-account key: `client_email` is missing"),
            (key_json(|v| v["token_uri"] = "ftp://x/token".into()), "service-account key: `token_uri` is not an http(s) URL"),
            (key_json(|v| v["private_key"] = "MIIEv...".into()), "service-account key: `private_key`: no PEM PRIVATE KEY block"),
            (key_json(|v| v["private_key"] = broken_base64.clone().into()), "service-account key: `private_key`: PEM body is not base64"),
            (key_json(|v| v["private_key"] = truncated_der.clone().into()), "service-account key: `private_key`: malformed DER"),
            (key_json(|v| v["private_key"] = ec_key.into()), "service-account key: `private_key`: not an RSA key"),
        ];
        for (json, expected) in cases {
            let error = ServiceAccount::from_json(&json).unwrap_err();
            assert_eq!(error.0, expected);
            assert!(!error.0.contains("MII"), "{error}");
        }
        // A well-formed key whose parts do not belong together signs nothing.
        let account = ServiceAccount::from_json(TEST_KEY).unwrap();
        let mut broken = account.key;
        broken.tamper_for_test();
        assert_eq!(broken.sign_sha256(b"x").unwrap_err().0, "inconsistent RSA key");
        let account = ServiceAccount::from_json(TEST_KEY).unwrap();
        assert!(!format!("{account:?}").contains("MII"));
    }

    #[test]
    #[ignore = "timing, run with --ignored --nocapture in release"]
    fn signing_time() {
        let account = ServiceAccount::from_json(TEST_KEY).unwrap();
        let start = std::time::Instant::now();
        for i in 0..20 {
            account.assertion(DEFAULT_SCOPE, 1_700_000_000 + i).unwrap();
        }
        println!("RS256 assertion: {:?} each", start.elapsed() / 20);
    }
}
