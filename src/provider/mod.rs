//! Providers as the attempt role sees them: where a provider lives, how it authenticates, what
//! it calls each model. One module per wire format builds that format's request path.

mod azure;
mod openai;

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

/// Every header any provider reads a credential from, plus the client's own. Envoy shares the
/// request headers between attempts, so each attempt removes all of them before adding its own.
pub const CREDENTIAL_HEADERS: &[&str] =
    &["authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key", "cookie"];

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub format: Format,
    pub host: String,
    pub base_path: String,
    pub auth: Auth,
    pub models: HashMap<String, String>,
    pub api_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// OpenAI chat completions, also spoken by OpenRouter, DeepSeek, Groq, vLLM and Ollama's `/v1`.
    Openai,
    AzureOpenai,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Openai => "openai",
            Format::AzureOpenai => "azure-openai",
        }
    }

    pub fn default_base_path(self) -> &'static str {
        match self {
            Format::Openai => openai::DEFAULT_BASE_PATH,
            Format::AzureOpenai => azure::DEFAULT_BASE_PATH,
        }
    }

    pub fn default_auth_style(self) -> AuthStyle {
        match self {
            Format::Openai => AuthStyle::Bearer,
            Format::AzureOpenai => AuthStyle::ApiKey,
        }
    }

    pub fn needs_api_version(self) -> bool {
        matches!(self, Format::AzureOpenai)
    }

    /// Whether the model (Azure: the deployment) is part of the URL, so the body must be read
    /// before the path can be set.
    pub fn model_in_path(self) -> bool {
        matches!(self, Format::AzureOpenai)
    }
}

/// The request headers of one attempt, as the attempt role sees them: Envoy's map, shared by
/// every attempt of a request.
pub trait HeaderMap {
    fn contains(&self, name: &str) -> bool;
    fn set(&mut self, name: &str, value: &str);
    fn remove(&mut self, name: &str);
}

impl Provider {
    /// Makes the headers this provider's: no credential but its own, its host. The map may
    /// still hold what an earlier attempt set for another provider.
    pub fn rewrite_headers(&self, headers: &mut dyn HeaderMap) {
        for name in CREDENTIAL_HEADERS {
            if headers.contains(name) {
                headers.remove(name);
            }
        }
        if let (Some(name), Some(value)) = (self.auth.header_name(), self.auth.header_value()) {
            headers.set(name, &value);
        }
        headers.set(":authority", &self.host);
    }

    /// The model name this provider knows the client's `model` by: an exact mapping, then the
    /// `*` mapping, else the name the client sent.
    pub fn target_model<'a>(&'a self, requested: &'a str) -> &'a str {
        self.models
            .get(requested)
            .or_else(|| self.models.get("*"))
            .map(String::as_str)
            .unwrap_or(requested)
    }

    /// Whether the attempt must see the request body before it can send the headers.
    pub fn needs_body(&self) -> bool {
        !self.models.is_empty() || self.format.model_in_path()
    }

    pub fn chat_path(&self, model: &str) -> String {
        match self.format {
            Format::Openai => openai::chat_path(self),
            Format::AzureOpenai => azure::chat_path(self, model),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>`
    Bearer,
    /// `api-key: <key>` (Azure OpenAI)
    ApiKey,
    /// `x-api-key: <key>` (Anthropic)
    XApiKey,
    /// `x-goog-api-key: <key>` (Gemini)
    XGoogApiKey,
    /// No credential (a local model server).
    None,
}

pub struct Auth {
    pub style: AuthStyle,
    key: String,
}

impl Auth {
    pub fn new(style: AuthStyle, key: String) -> Auth {
        Auth { style, key }
    }

    pub fn none() -> Auth {
        Auth { style: AuthStyle::None, key: String::new() }
    }

    pub fn header_name(&self) -> Option<&'static str> {
        match self.style {
            AuthStyle::Bearer => Some("authorization"),
            AuthStyle::ApiKey => Some("api-key"),
            AuthStyle::XApiKey => Some("x-api-key"),
            AuthStyle::XGoogApiKey => Some("x-goog-api-key"),
            AuthStyle::None => None,
        }
    }

    pub fn header_value(&self) -> Option<String> {
        match self.style {
            AuthStyle::Bearer => Some(format!("Bearer {}", self.key)),
            AuthStyle::None => None,
            _ => Some(self.key.clone()),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").field("style", &self.style).field("key", &"<redacted>").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(format: Format, models: &[(&str, &str)]) -> Provider {
        Provider {
            name: "p".into(),
            format,
            host: "example.test".into(),
            base_path: format.default_base_path().into(),
            auth: Auth::new(format.default_auth_style(), "k".into()),
            models: models.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            api_version: Some("2024-10-21".into()),
        }
    }

    #[test]
    fn model_mapping_prefers_exact_then_wildcard_then_passes_through() {
        let p = provider(Format::Openai, &[("smart", "gpt-4o"), ("*", "gpt-4o-mini")]);
        assert_eq!(p.target_model("smart"), "gpt-4o");
        assert_eq!(p.target_model("other"), "gpt-4o-mini");
        let plain = provider(Format::Openai, &[]);
        assert_eq!(plain.target_model("other"), "other");
        assert!(!plain.needs_body());
        assert!(p.needs_body());
    }

    #[test]
    fn auth_header_per_style() {
        let cases = [
            (AuthStyle::Bearer, Some("authorization"), Some("Bearer k")),
            (AuthStyle::ApiKey, Some("api-key"), Some("k")),
            (AuthStyle::XApiKey, Some("x-api-key"), Some("k")),
            (AuthStyle::XGoogApiKey, Some("x-goog-api-key"), Some("k")),
            (AuthStyle::None, None, None),
        ];
        for (style, name, value) in cases {
            let auth = Auth::new(style, "k".into());
            assert_eq!(auth.header_name(), name);
            assert_eq!(auth.header_value().as_deref(), value);
            if let Some(name) = name {
                assert!(CREDENTIAL_HEADERS.contains(&name), "{name} must be stripped by every attempt");
            }
        }
    }

    #[derive(Default)]
    struct Headers(std::collections::BTreeMap<String, String>);
    impl HeaderMap for Headers {
        fn contains(&self, name: &str) -> bool {
            self.0.contains_key(name)
        }
        fn set(&mut self, name: &str, value: &str) {
            self.0.insert(name.to_string(), value.to_string());
        }
        fn remove(&mut self, name: &str) {
            self.0.remove(name);
        }
    }

    #[test]
    fn each_attempt_on_a_shared_map_carries_only_its_own_credential() {
        let mut headers = Headers::default();
        for (name, value) in [("authorization", "Bearer client"), ("x-api-key", "client"), ("cookie", "s=1"), ("accept", "*/*")] {
            headers.set(name, value);
        }
        let styles = [AuthStyle::Bearer, AuthStyle::XApiKey, AuthStyle::ApiKey, AuthStyle::XGoogApiKey, AuthStyle::None];
        for (i, style) in styles.into_iter().enumerate() {
            let mut p = provider(Format::Openai, &[]);
            p.auth = Auth::new(style, format!("key-{i}"));
            p.host = format!("host-{i}");
            p.rewrite_headers(&mut headers);
            let credentials: Vec<_> =
                headers.0.iter().filter(|(k, _)| CREDENTIAL_HEADERS.contains(&k.as_str())).collect();
            match p.auth.header_name() {
                Some(name) => assert_eq!(credentials, vec![(&name.to_string(), &p.auth.header_value().unwrap())]),
                None => assert!(credentials.is_empty(), "{credentials:?}"),
            }
            assert_eq!(headers.0[":authority"], format!("host-{i}"));
            assert_eq!(headers.0["accept"], "*/*");
        }
    }

    #[test]
    fn azure_always_needs_the_body_for_its_deployment_path() {
        let p = provider(Format::AzureOpenai, &[]);
        assert!(p.needs_body());
        assert_eq!(p.chat_path("gpt-4o"), "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
    }
}
