//! OAuth2 client credentials (RFC 6749 4.4), as Microsoft Entra ID grants tokens for Azure
//! OpenAI: a form POST of the client's id, secret and scope, answered with a bearer token and
//! its lifetime in seconds.

use super::{form_encode, Token, TokenRequest, TokenUrl};

pub const KIND: &str = "oauth2-client-credentials";

#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub url: TokenUrl,
    pub client_id: String,
    pub client_secret: String,
    pub scope: String,
}

impl ClientCredentials {
    pub fn request(&self) -> TokenRequest {
        let body = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            form_encode(&self.client_id),
            form_encode(&self.client_secret),
            form_encode(&self.scope)
        );
        TokenRequest {
            method: "POST",
            path: self.url.path.clone(),
            authority: self.url.authority.clone(),
            headers: vec![("content-type".into(), "application/x-www-form-urlencoded".into()), ("accept".into(), "application/json".into())],
            body: Some(body.into_bytes()),
        }
    }
}

/// `{"token_type":"Bearer","expires_in":3599,"access_token":"..."}`; some servers send
/// `expires_in` as a string.
pub fn parse(body: &[u8], now_ms: u64) -> Result<Token, String> {
    let answer: serde_json::Value = serde_json::from_slice(body).map_err(|_| "token endpoint answered something that is not JSON".to_string())?;
    let value = answer.get("access_token").and_then(|t| t.as_str()).ok_or("token endpoint answered no `access_token`")?;
    if let Some(kind) = answer.get("token_type").and_then(|t| t.as_str()) {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(format!("token endpoint answered a `{}` token, not a bearer one", kind.chars().take(20).collect::<String>()));
        }
    }
    let expires_in = match answer.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or("token endpoint answered no `expires_in`")?;
    Ok(Token { value: value.to_string(), expires_at_ms: now_ms.saturating_add(expires_in.saturating_mul(1000)), refresh_at_ms: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Renewal;

    fn entra() -> ClientCredentials {
        ClientCredentials {
            url: TokenUrl::parse("https://login.microsoftonline.com/contoso/oauth2/v2.0/token").unwrap(),
            client_id: "app-id".into(),
            client_secret: "s3cret/+=".into(),
            scope: "https://cognitiveservices.azure.com/.default".into(),
        }
    }

    #[test]
    fn asks_entra_for_a_token_with_a_form() {
        let request = entra().request();
        assert_eq!((request.method, request.path.as_str(), request.authority.as_str()), ("POST", "/contoso/oauth2/v2.0/token", "login.microsoftonline.com"));
        assert_eq!(
            String::from_utf8(request.body.unwrap()).unwrap(),
            "grant_type=client_credentials&client_id=app-id&client_secret=s3cret%2F%2B%3D&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default"
        );
        assert!(request.headers.contains(&("content-type".into(), "application/x-www-form-urlencoded".into())));
    }

    #[test]
    fn reads_the_token_and_its_lifetime() {
        let renewal = Renewal::ClientCredentials(entra());
        let token = renewal.parse(200, br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0.x.y"}"#, 1_000).unwrap();
        assert_eq!((token.value.as_str(), token.expires_at_ms), ("eyJ0.x.y", 3_600_000));
        assert_eq!(renewal.parse(200, br#"{"expires_in":"60","access_token":"a"}"#, 0).unwrap().expires_at_ms, 60_000);
        let refused = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. app-id"}"#;
        assert_eq!(renewal.parse(401, refused, 0).unwrap_err(), "token endpoint answered 401 (invalid_client)");
        assert_eq!(renewal.parse(503, b"<html>", 0).unwrap_err(), "token endpoint answered 503");
        for bad in [&br#"{"expires_in":60}"#[..], br#"{"access_token":"a"}"#, br#"{"access_token":"a","expires_in":0}"#, br#"{"token_type":"mac","access_token":"a","expires_in":60}"#, br#"{"access_token":"a b","expires_in":60}"#, b"nope"] {
            assert!(renewal.parse(200, bad, 0).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
