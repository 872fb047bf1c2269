//! OpenAI chat completions and every vendor that copies it (OpenRouter, DeepSeek, Groq, vLLM,
//! Ollama's `/v1`): only the host, the base path and the key differ.

use super::Provider;

pub const DEFAULT_BASE_PATH: &str = "/v1";

pub fn chat_path(provider: &Provider) -> String {
    format!("{}/chat/completions", provider.base_path)
}

#[cfg(test)]
mod tests {
    use super::super::{Auth, Format, Provider};

    #[test]
    fn base_path_then_chat_completions() {
        let p = Provider {
            name: "openrouter".into(),
            format: Format::Openai,
            host: "openrouter.ai".into(),
            base_path: "/api/v1".into(),
            auth: Auth::none(),
            models: Default::default(),
            api_version: None,
        };
        assert_eq!(p.chat_path("ignored"), "/api/v1/chat/completions");
    }
}
