//! The client APIs the gateway understands, each recognised by its path: which one a request
//! speaks, and which provider formats can serve it, natively or translated.

pub mod anthropic;
pub mod embeddings;
pub mod models;
pub mod responses;

use crate::provider::{Format, StreamTranslator};

/// Where the router role leaves the request's client API for the attempts (a wasm filter-state
/// value: an attempt's filter state is the downstream request's, and unlike a header it never
/// reaches a provider). Envoy shows it as `wasm.llm_failover.api`.
pub const API_PROPERTY: &str = "llm_failover.api";

/// The path a pass-through request goes to its provider with, when its prefix is rewritten.
pub const PASSTHROUGH_PATH_PROPERTY: &str = "llm_failover.passthrough_path";

/// The client's `anthropic-beta`, kept by the router role for the attempts at Anthropic-format
/// providers: an attempt at another format removes the header, and Envoy shares the request
/// headers between attempts.
pub const ANTHROPIC_BETA_PROPERTY: &str = "llm_failover.anthropic_beta";

/// A chat completion request's body length and model, as the router role read them: an attempt
/// at a provider that takes the body as it is sends it on without holding it (holding the
/// headers for the body cost an attempt more than the rest of its request work, measured).
pub const CHAT_REQUEST_PROPERTY: &str = "llm_failover.chat_request";

/// The value of `CHAT_REQUEST_PROPERTY`: `<length>` and the model, on two lines.
pub fn chat_request_note(length: usize, model: &str) -> String {
    format!("{length}\n{model}")
}

/// Reads `chat_request_note`'s value; `None` for anything else.
pub fn read_chat_request_note(value: &[u8]) -> Option<(usize, String)> {
    let text = std::str::from_utf8(value).ok()?;
    let (length, model) = text.split_once('\n')?;
    if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((length.parse().ok()?, model.to_string()))
}

/// An API a client speaks to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientApi {
    /// OpenAI chat completions (`POST .../chat/completions`): the API every provider path
    /// starts from.
    ChatCompletions,
    /// Anthropic Messages (`POST /v1/messages`): Claude Code and the Anthropic SDKs.
    AnthropicMessages,
    /// The model list (`GET /v1/models`, `GET /v1/models/{id}`), answered by the router role.
    ModelsList,
    /// Embeddings (`POST /v1/embeddings`), routed by embedding alias (`embeddings` in the
    /// config), never by the chat chains.
    Embeddings,
    /// Anthropic's token count (`POST /v1/messages/count_tokens`), which Claude Code asks
    /// before a long request: Anthropic-format providers count; without one, the router role
    /// answers an estimate.
    CountTokens,
    /// A path under a `passthrough` prefix: an API the gateway does not understand, sent to
    /// the one provider the operator named, as it is.
    Passthrough,
    /// OpenAI's Responses API (`POST /v1/responses`): the Agents SDK, Codex-style tools.
    Responses,
}

/// How a provider format serves a client API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Only host, path, key and model name change; the body goes as the client sent it.
    Native,
    /// The request and the answer are translated.
    Translated,
}

impl ClientApi {
    pub const ALL: [ClientApi; 7] = [
        ClientApi::ChatCompletions,
        ClientApi::AnthropicMessages,
        ClientApi::ModelsList,
        ClientApi::Embeddings,
        ClientApi::CountTokens,
        ClientApi::Passthrough,
        ClientApi::Responses,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ClientApi::ChatCompletions => "chat-completions",
            ClientApi::AnthropicMessages => "anthropic-messages",
            ClientApi::ModelsList => "models-list",
            ClientApi::Embeddings => "embeddings",
            ClientApi::CountTokens => "anthropic-count-tokens",
            ClientApi::Passthrough => "passthrough",
            ClientApi::Responses => "responses",
        }
    }

    /// Whether its clients are Anthropic's, and read errors in Anthropic's shape.
    pub fn anthropic_shaped(self) -> bool {
        matches!(self, ClientApi::AnthropicMessages | ClientApi::CountTokens)
    }

    pub fn parse(name: &[u8]) -> Option<ClientApi> {
        ClientApi::ALL
            .into_iter()
            .find(|api| api.name().as_bytes() == name)
    }

    /// Whether providers of `format` can serve this API, and how; `None`: no provider of that
    /// format is ever asked (for the model list, none at all: the router role answers). Responses
    /// are native only at an `openai` provider whose config says so (`responses: true`, see
    /// `Provider::serves_responses`): many OpenAI-compatible servers lack the API.
    pub fn service(self, format: Format) -> Option<Service> {
        match (self, format) {
            (ClientApi::ModelsList, _) => None,
            (ClientApi::ChatCompletions, Format::Openai | Format::AzureOpenai) => Some(Service::Native),
            (ClientApi::ChatCompletions, Format::Anthropic | Format::Gemini | Format::Ollama | Format::Bedrock) => {
                Some(Service::Translated)
            }
            (ClientApi::AnthropicMessages, Format::Anthropic) => Some(Service::Native),
            // Through chat completions: the Messages request becomes a chat request, which the
            // provider's own translation (if any) takes from there; the answer comes back the same way.
            (ClientApi::AnthropicMessages, Format::Openai | Format::AzureOpenai | Format::Gemini | Format::Ollama | Format::Bedrock) => {
                Some(Service::Translated)
            }
            (ClientApi::Embeddings, Format::Openai | Format::AzureOpenai) => Some(Service::Native),
            (ClientApi::Embeddings, Format::Gemini | Format::Ollama) => Some(Service::Translated),
            // Anthropic has no embeddings API.
            (ClientApi::Embeddings, Format::Anthropic | Format::Bedrock) => None,
            // Only Anthropic counts in Anthropic's tokens; the others' counts would mislead.
            (ClientApi::CountTokens, Format::Anthropic) => Some(Service::Native),
            (ClientApi::CountTokens, _) => None,
            // The operator named the provider: it is taken to speak the API.
            (ClientApi::Passthrough, _) => Some(Service::Native),
            // Through chat completions, as Messages are.
            (ClientApi::Responses, _) => Some(Service::Translated),
        }
    }

    /// Whether the request carries a body the router role routes by its model.
    pub fn routed_by_model(self) -> bool {
        !matches!(self, ClientApi::ModelsList | ClientApi::Passthrough)
    }
}

/// A provider's error answer in the client's API, for an answer the attempt passed on unread
/// (`errorAnswers: pass`); `None` when the provider already speaks the client's API.
/// `error_type`: Bedrock's `x-amzn-ErrorType` header.
pub fn client_error(api: ClientApi, format: Format, status: u16, body: &[u8], error_type: Option<&str>) -> Option<Vec<u8>> {
    match api.service(format)? {
        Service::Native => None,
        Service::Translated if api.anthropic_shaped() => Some(anthropic::error_from_openai(status, &format.error(status, body, error_type))),
        Service::Translated => Some(format.error(status, body, error_type)),
    }
}

/// A stream that reaches the client through chat completions: the provider's translation to
/// OpenAI chunks (none for an OpenAI-compatible provider), then the client API's from them.
pub fn through_chat(provider: Option<Box<dyn StreamTranslator>>, client: Box<dyn StreamTranslator>) -> Box<dyn StreamTranslator> {
    Box::new(ThroughChat { provider, client })
}

struct ThroughChat {
    provider: Option<Box<dyn StreamTranslator>>,
    client: Box<dyn StreamTranslator>,
}

impl StreamTranslator for ThroughChat {
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        match &mut self.provider {
            Some(provider) => {
                let chunks = provider.feed(chunk);
                self.client.feed(&chunks)
            }
            None => self.client.feed(chunk),
        }
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = match &mut self.provider {
            Some(provider) => {
                let chunks = provider.finish();
                self.client.feed(&chunks)
            }
            None => Vec::new(),
        };
        out.extend(self.client.finish());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_request_note_reads_back_and_nothing_else_does() {
        let note = chat_request_note(1024, "gpt-4o\nmini");
        assert_eq!(read_chat_request_note(note.as_bytes()), Some((1024, "gpt-4o\nmini".to_string())));
        for bad in [&b"gpt-4o"[..], b"\ngpt-4o", b"-1\ngpt-4o", b"12a\nm", b"\xff\nm", b"99999999999999999999999\nm"] {
            assert_eq!(read_chat_request_note(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_none() {
        for api in ClientApi::ALL {
            assert_eq!(ClientApi::parse(api.name().as_bytes()), Some(api));
        }
        assert_eq!(ClientApi::parse(b"realtime"), None);
    }

    #[test]
    fn every_format_serves_chat_and_messages_and_none_serves_the_model_list() {
        let formats = [Format::Openai, Format::AzureOpenai, Format::Anthropic, Format::Gemini, Format::Ollama];
        for format in formats {
            assert!(ClientApi::ChatCompletions.service(format).is_some());
            assert!(ClientApi::AnthropicMessages.service(format).is_some());
            assert_eq!(ClientApi::ModelsList.service(format), None);
        }
        assert_eq!(ClientApi::AnthropicMessages.service(Format::Anthropic), Some(Service::Native));
        assert_eq!(ClientApi::AnthropicMessages.service(Format::Openai), Some(Service::Translated));
        assert_eq!(ClientApi::ChatCompletions.service(Format::Openai), Some(Service::Native));
        assert_eq!(ClientApi::ChatCompletions.service(Format::Anthropic), Some(Service::Translated));
    }

    #[test]
    fn only_anthropic_counts_tokens() {
        assert_eq!(ClientApi::CountTokens.service(Format::Anthropic), Some(Service::Native));
        for format in [Format::Openai, Format::AzureOpenai, Format::Gemini, Format::Ollama] {
            assert_eq!(ClientApi::CountTokens.service(format), None);
        }
    }

    #[test]
    fn an_error_read_by_no_attempt_is_put_in_the_clients_shape() {
        let openai = br#"{"error":{"message":"bad tool","type":"invalid_request_error"}}"#;
        let claude = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long"}}"#;
        let gemini = br#"{"error":{"code":400,"message":"text too long","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(client_error(ClientApi::ChatCompletions, Format::Openai, 400, openai, None), None);
        assert_eq!(client_error(ClientApi::AnthropicMessages, Format::Anthropic, 400, claude, None), None);
        let for_messages: serde_json::Value = serde_json::from_slice(&client_error(ClientApi::AnthropicMessages, Format::Openai, 400, openai, None).unwrap()).unwrap();
        assert_eq!(for_messages["type"], "error");
        assert_eq!(for_messages["error"]["type"], "invalid_request_error");
        assert_eq!(for_messages["error"]["message"], "bad tool");
        let from_gemini: serde_json::Value = serde_json::from_slice(&client_error(ClientApi::AnthropicMessages, Format::Gemini, 400, gemini, None).unwrap()).unwrap();
        assert_eq!(from_gemini["error"]["message"], "text too long");
        for api in [ClientApi::ChatCompletions, ClientApi::Embeddings] {
            let for_chat: serde_json::Value = serde_json::from_slice(&client_error(api, Format::Gemini, 400, gemini, None).unwrap()).unwrap();
            assert!(for_chat["error"]["message"].as_str().unwrap().contains("text too long"));
        }
        let for_chat: serde_json::Value = serde_json::from_slice(&client_error(ClientApi::ChatCompletions, Format::Anthropic, 400, claude, None).unwrap()).unwrap();
        assert_eq!(for_chat["error"]["type"], "invalid_request_error");
        assert_eq!(client_error(ClientApi::Embeddings, Format::Anthropic, 400, claude, None), None, "never asked");
    }

    #[test]
    fn embeddings_are_native_at_openai_and_azure_translated_at_gemini_and_ollama_never_at_anthropic() {
        assert_eq!(ClientApi::Embeddings.service(Format::Openai), Some(Service::Native));
        assert_eq!(ClientApi::Embeddings.service(Format::AzureOpenai), Some(Service::Native));
        assert_eq!(ClientApi::Embeddings.service(Format::Gemini), Some(Service::Translated));
        assert_eq!(ClientApi::Embeddings.service(Format::Ollama), Some(Service::Translated));
        assert_eq!(ClientApi::Embeddings.service(Format::Anthropic), None);
    }
}
