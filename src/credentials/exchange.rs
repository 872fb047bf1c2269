//! A long-lived token exchanged for a short-lived one, as GitHub Copilot does: `GET` the
//! exchange URL with `Authorization: token <long-lived>`, answered with the short-lived token,
//! when it expires (Unix seconds) and when to ask again (`refresh_in` seconds).

use super::{Token, TokenRequest, TokenUrl};

pub const KIND: &str = "token-exchange";

#[derive(Clone, PartialEq, Eq)]
pub struct TokenExchange {
    pub url: TokenUrl,
    /// The long-lived token (a GitHub OAuth token for Copilot).
    pub token: String,
    /// `auth.headers`, sent with the exchange too.
    pub headers: Vec<(String, String)>,
}

impl TokenExchange {
    pub fn request(&self) -> TokenRequest {
        // GitHub's API refuses requests without a User-Agent.
        let mut headers = vec![
            ("authorization".to_string(), format!("token {}", self.token)),
            ("accept".to_string(), "application/json".into()),
            ("user-agent".to_string(), "llm-failover".into()),
        ];
        headers.retain(|(name, _)| !self.headers.iter().any(|(own, _)| own == name));
        headers.extend(self.headers.iter().cloned());
        TokenRequest { method: "GET", path: self.url.path.clone(), authority: self.url.authority.clone(), headers, body: None }
    }
}

/// `{"token":"...","expires_at":1767225600,"refresh_in":1500}`
pub fn parse(body: &[u8], now_ms: u64) -> Result<Token, String> {
    let answer: serde_json::Value = serde_json::from_slice(body).map_err(|_| "token endpoint answered something that is not JSON".to_string())?;
    let value = answer.get("token").and_then(|t| t.as_str()).ok_or("token endpoint answered no `token`")?;
    let expires_at = answer.get("expires_at").and_then(|t| t.as_u64()).ok_or("token endpoint answered no `expires_at`")?;
    let refresh_at_ms = answer.get("refresh_in").and_then(|t| t.as_u64()).map(|s| now_ms.saturating_add(s.saturating_mul(1000)));
    Ok(Token { value: value.to_string(), expires_at_ms: expires_at.saturating_mul(1000), refresh_at_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Renewal;

    #[test]
    fn exchanges_the_long_lived_token() {
        let exchange = TokenExchange { url: TokenUrl::parse("https://api.github.com/copilot_internal/v2/token").unwrap(), token: "gho_long".into(), headers: vec![("editor-version".into(), "vscode/1.95.0".into())] };
        let request = exchange.request();
        assert_eq!((request.method, request.path.as_str(), request.authority.as_str(), request.body), ("GET", "/copilot_internal/v2/token", "api.github.com", None));
        assert!(request.headers.contains(&("authorization".into(), "token gho_long".into())));
        assert!(request.headers.contains(&("editor-version".into(), "vscode/1.95.0".into())));
        let renewal = Renewal::Exchange(exchange);
        let token = renewal.parse(200, br#"{"token":"tid=1;exp=2;sku=x:abc","expires_at":2000,"refresh_in":1500,"endpoints":{}}"#, 100_000).unwrap();
        assert_eq!((token.value.as_str(), token.expires_at_ms, token.refresh_at_ms), ("tid=1;exp=2;sku=x:abc", 2_000_000, Some(1_600_000)));
        assert_eq!(renewal.parse(401, br#"{"message":"Bad credentials"}"#, 0).unwrap_err(), "token endpoint answered 401");
        assert!(renewal.parse(200, br#"{"token":"t","expires_at":1}"#, 100_000).is_err(), "already expired");
        assert!(renewal.parse(200, br#"{"expires_at":2000}"#, 0).is_err());
    }
}
