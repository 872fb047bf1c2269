//! Providers as the attempt role sees them: where a provider lives, how it authenticates, what
//! it calls each model. One module per wire format translates requests to it and answers back.

pub mod anthropic;
mod azure;
pub mod bedrock;
pub mod gemini;
pub mod ollama;
pub mod openai;
pub mod vertex;

use std::collections::HashMap;
use std::fmt;


/// Every header any provider reads a credential from, plus the client's own. Envoy shares the
/// request headers between attempts, so each attempt removes all of them before adding its own.
/// The `x-amz-*` ones are what Envoy's SigV4 signer adds after the attempt role: they stay in the
/// shared map when a signed attempt fails, and a client's own must not reach a provider either.
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key", "cookie",
    "x-amz-security-token", "x-amz-date", "x-amz-content-sha256",
];

const ANTHROPIC_VERSION: &str = "anthropic-version";
const ANTHROPIC_BETA: &str = "anthropic-beta";

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub format: Format,
    pub host: String,
    pub base_path: String,
    pub auth: Auth,
    pub models: HashMap<String, String>,
    pub api_version: Option<String>,
    pub options: FormatOptions,
    /// It serves OpenAI's Responses API itself (`responses: true`, `openai` format only).
    pub serves_responses: bool,
}

/// What some formats need beyond where and who: settings with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    /// Anthropic requires `max_tokens`; this is sent when the client sets none.
    pub default_max_tokens: u64,
    /// The `anthropic-version` header.
    pub anthropic_version: String,
    /// Served by Google Vertex AI (`gemini` and `anthropic` formats): Vertex's paths and body.
    pub vertex: Option<vertex::Vertex>,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions { default_max_tokens: 4096, anthropic_version: "2023-06-01".into(), vertex: None }
    }
}

/// A request the target format cannot carry without changing its meaning: answered 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// The OpenAI error event that ends a translated stream whose provider sent a line or an event
/// longer than `sse::MAX_LINE_BYTES`.
pub fn oversized_stream_error(api: &str) -> Vec<u8> {
    let message = format!(
        "{api}'s stream carried an event longer than {} MiB; the stream ends here",
        crate::sse::MAX_LINE_BYTES / (1024 * 1024)
    );
    crate::sse::data_event(&openai::error_body(&message, "api_error", Some("bad_provider_answer")))
}

/// A provider's answer translated as it streams: each chunk in, the OpenAI SSE bytes to send
/// for it out (often none, when a chunk ends mid-event).
pub trait StreamTranslator {
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8>;
    /// The rest once the provider's stream ends, `data: [DONE]` included.
    fn finish(&mut self) -> Vec<u8>;
}

/// What `translator` makes of a stream that arrives in `sse::random_split`'s pieces for `seed`,
/// its end included: the property tests and the fuzz target check that any chunking gives the
/// same bytes.
pub fn translate_in_pieces(translator: &mut dyn StreamTranslator, stream: &[u8], seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in crate::sse::random_split(stream, seed) {
        out.extend(translator.feed(piece));
    }
    out.extend(translator.finish());
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI chat completions, also spoken by OpenRouter, DeepSeek, Groq, vLLM and Ollama's `/v1`.
    Openai,
    AzureOpenai,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// Google Gemini (`models/{model}:generateContent`).
    Gemini,
    /// Ollama's native `/api/chat` (NDJSON streams).
    Ollama,
    /// AWS Bedrock's Converse API (`/model/{modelId}/converse`, event-stream answers).
    Bedrock,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Openai => "openai",
            Format::AzureOpenai => "azure-openai",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
            Format::Ollama => "ollama",
            Format::Bedrock => "bedrock",
        }
    }

    pub fn default_base_path(self) -> &'static str {
        match self {
            Format::Openai => openai::DEFAULT_BASE_PATH,
            Format::AzureOpenai => azure::DEFAULT_BASE_PATH,
            Format::Anthropic => anthropic::DEFAULT_BASE_PATH,
            Format::Gemini => gemini::DEFAULT_BASE_PATH,
            Format::Ollama => ollama::DEFAULT_BASE_PATH,
            Format::Bedrock => bedrock::DEFAULT_BASE_PATH,
        }
    }

    pub fn default_auth_style(self) -> AuthStyle {
        match self {
            Format::Openai => AuthStyle::Bearer,
            Format::AzureOpenai => AuthStyle::ApiKey,
            Format::Anthropic => AuthStyle::XApiKey,
            Format::Gemini => AuthStyle::XGoogApiKey,
            Format::Ollama => AuthStyle::None,
            Format::Bedrock => AuthStyle::AwsSigv4,
        }
    }

    pub fn needs_api_version(self) -> bool {
        matches!(self, Format::AzureOpenai)
    }

    /// Whether the model (Azure: the deployment) is part of the URL, so the body must be read
    /// before the path can be set.
    pub fn model_in_path(self) -> bool {
        matches!(self, Format::AzureOpenai | Format::Gemini | Format::Bedrock)
    }

    /// Whether requests and answers are in another API than OpenAI's and must be translated.
    pub fn translates(self) -> bool {
        matches!(self, Format::Anthropic | Format::Gemini | Format::Ollama | Format::Bedrock)
    }

    /// The status health and Envoy's retry policy should see: Anthropic's 529 `overloaded`
    /// is a 503 by any other name.
    pub fn effective_status(self, status: u16) -> u16 {
        match (self, status) {
            (Format::Anthropic, 529) => 503,
            _ => status,
        }
    }

    /// A successful, complete answer in OpenAI's form.
    pub fn answer(self, body: &[u8], context: &openai::AnswerContext) -> Result<Vec<u8>, String> {
        match self {
            Format::Anthropic => anthropic::answer(body, context),
            Format::Gemini => gemini::answer(body, context),
            Format::Ollama => ollama::answer(body, context),
            Format::Bedrock => bedrock::answer(body, context),
            Format::Openai | Format::AzureOpenai => Ok(body.to_vec()),
        }
    }

    pub fn stream(self, context: openai::AnswerContext) -> Option<Box<dyn StreamTranslator>> {
        match self {
            Format::Anthropic => Some(Box::new(anthropic::Stream::new(context))),
            Format::Gemini => Some(Box::new(gemini::Stream::new(context))),
            Format::Ollama => Some(Box::new(ollama::Stream::new(context))),
            Format::Bedrock => Some(Box::new(bedrock::Stream::new(context))),
            Format::Openai | Format::AzureOpenai => None,
        }
    }

    /// The status an error means, once its body is read (Gemini's 400 for a wrong key is a 401).
    pub fn error_status(self, status: u16, body: &[u8]) -> u16 {
        match self {
            Format::Gemini => gemini::error_status(status, body),
            Format::Bedrock => bedrock::error_status(status),
            _ => self.effective_status(status),
        }
    }

    /// A provider's error body as an OpenAI error body. `error_type`: Bedrock's
    /// `x-amzn-ErrorType` header, which names the exception.
    pub fn error(self, status: u16, body: &[u8], error_type: Option<&str>) -> Vec<u8> {
        match self {
            Format::Anthropic => anthropic::error(status, body),
            Format::Gemini => gemini::error(status, body),
            Format::Ollama => ollama::error(status, body),
            Format::Bedrock => bedrock::error(status, body, error_type),
            Format::Openai | Format::AzureOpenai => body.to_vec(),
        }
    }
}

/// A client-chosen model name put in a path (Azure's deployment, Gemini's model) must stay
/// one segment: no `/`, `?`, `:` or dot segment escapes it.
fn path_segment(text: &str) -> String {
    if text == "." || text == ".." {
        return text.replace('.', "%2E");
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
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
        if self.auth.renewal.is_none() {
            if let (Some(name), Some(value)) = (self.auth.header_name(), self.auth.header_value()) {
                headers.set(name, &value);
            }
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
        !self.models.is_empty() || self.format.model_in_path() || self.format.translates()
    }

    pub fn chat_path(&self, model: &str, stream: bool) -> String {
        if let Some(vertex) = &self.options.vertex {
            return vertex.chat_path(&self.base_path, self.format, model, stream);
        }
        match self.format {
            Format::Openai => openai::chat_path(self),
            Format::AzureOpenai => azure::chat_path(self, model),
            Format::Anthropic => anthropic::chat_path(self),
            Format::Gemini => gemini::chat_path(self, model, stream),
            Format::Ollama => ollama::chat_path(self),
            Format::Bedrock => bedrock::chat_path(self, model, stream),
        }
    }

    /// Where this provider serves the Responses API, when it does (`responses: true`).
    pub fn responses_path(&self) -> Option<String> {
        self.serves_responses.then(|| format!("{}/responses", self.base_path))
    }

    /// Where this provider serves embeddings for `model`; `None`: it has no embeddings API.
    pub fn embeddings_path(&self, model: &str) -> Option<String> {
        let base = &self.base_path;
        if self.options.vertex.is_some() {
            return None;
        }
        match self.format {
            Format::Openai => Some(format!("{base}/embeddings")),
            Format::AzureOpenai => Some(azure::embeddings_path(self, model)),
            Format::Gemini => Some(format!("{base}/models/{}:batchEmbedContents", path_segment(model.strip_prefix("models/").unwrap_or(model)))),
            // `/api` by default: `/api/embed`.
            Format::Ollama => Some(format!("{base}/embed")),
            Format::Anthropic | Format::Bedrock => None,
        }
    }

    /// The client's OpenAI request in this provider's format, for `model`.
    pub fn translate_request(&self, request: &openai::ChatRequest, model: &str) -> Result<Vec<u8>, Unsupported> {
        match self.format {
            Format::Anthropic if self.options.vertex.is_some() => {
                let body = anthropic::request(request, model, &self.options)?;
                vertex::anthropic_body(&body).map(|(body, _)| body).ok_or_else(|| Unsupported("the translated request could not be written".into()))
            }
            Format::Anthropic => anthropic::request(request, model, &self.options),
            Format::Gemini => gemini::request(request, model, &self.options),
            Format::Ollama => ollama::request(request, model, &self.options),
            Format::Bedrock => bedrock::request(request, model, &self.options),
            Format::Openai | Format::AzureOpenai => Err(Unsupported("nothing to translate".into())),
        }
    }

    /// A fingerprint of where and as whom this provider is reached (the key included, never
    /// shown): when it changes, what was learned about the provider no longer holds.
    pub fn fingerprint(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let renewal = self.auth.renewal.as_ref().map(|r| format!("{r:?}")).unwrap_or_default();
        let parts = [self.format.name(), &self.host, &self.base_path, self.api_version.as_deref().unwrap_or(""), &self.auth.key, &renewal];
        let vertex = self.options.vertex.as_ref().map(|v| format!("{}/{}", v.project, v.location)).unwrap_or_default();
        for part in parts.iter().map(|p| p.as_bytes()).chain([format!("{:?}", self.auth.style).as_bytes(), vertex.as_bytes()]) {
            for byte in part.iter().chain([&0u8]) {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }

    /// Headers the format requires besides the credential (`anthropic-version`).
    pub fn format_headers(&self) -> Vec<(&'static str, String)> {
        match self.format {
            Format::Anthropic if self.options.vertex.is_none() => vec![(ANTHROPIC_VERSION, self.options.anthropic_version.clone())],
            _ => Vec::new(),
        }
    }

    /// Format headers an earlier attempt at another format may have left in the shared map.
    pub fn stale_format_headers(&self) -> &'static [&'static str] {
        match self.format {
            // Vertex takes the version in the body; the client's beta features may stay.
            Format::Anthropic if self.options.vertex.is_some() => &[ANTHROPIC_VERSION],
            Format::Anthropic => &[],
            // A Messages client's beta features mean nothing to another API.
            _ => &[ANTHROPIC_VERSION, ANTHROPIC_BETA],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// AWS Signature V4, added by Envoy's own signer after the attempt role: the filter sends
    /// no credential and never holds one.
    AwsSigv4,
}

/// Where Envoy's SigV4 signer signs for (`auth.region`, `auth.service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsScope {
    pub region: String,
    pub service: String,
}

pub struct Auth {
    pub style: AuthStyle,
    key: String,
    /// Set with `AwsSigv4`.
    pub aws: Option<AwsScope>,
    /// A token the filter renews itself: the attempt role sends the current one from shared
    /// data instead of `key`.
    pub renewal: Option<crate::credentials::Renewal>,
    /// Headers the provider needs besides the credential (`auth.headers`), set on each attempt.
    pub headers: Vec<(String, String)>,
}

impl Auth {
    pub fn new(style: AuthStyle, key: String) -> Auth {
        Auth { style, key, aws: None, renewal: None, headers: Vec::new() }
    }

    pub fn aws_sigv4(scope: AwsScope) -> Auth {
        Auth { aws: Some(scope), ..Auth::new(AuthStyle::AwsSigv4, String::new()) }
    }

    pub fn none() -> Auth {
        Auth::new(AuthStyle::None, String::new())
    }

    pub fn renewed(style: AuthStyle, renewal: crate::credentials::Renewal) -> Auth {
        Auth { renewal: Some(renewal), ..Auth::new(style, String::new()) }
    }

    /// The credential header with a renewed token in it.
    pub fn header_value_with(&self, token: &str) -> Option<String> {
        match self.style {
            AuthStyle::Bearer => Some(format!("Bearer {token}")),
            AuthStyle::None | AuthStyle::AwsSigv4 => None,
            _ => Some(token.to_string()),
        }
    }

    pub fn header_name(&self) -> Option<&'static str> {
        match self.style {
            AuthStyle::Bearer => Some("authorization"),
            AuthStyle::ApiKey => Some("api-key"),
            AuthStyle::XApiKey => Some("x-api-key"),
            AuthStyle::XGoogApiKey => Some("x-goog-api-key"),
            AuthStyle::None | AuthStyle::AwsSigv4 => None,
        }
    }

    pub fn header_value(&self) -> Option<String> {
        match self.style {
            AuthStyle::Bearer => Some(format!("Bearer {}", self.key)),
            AuthStyle::None | AuthStyle::AwsSigv4 => None,
            _ => Some(self.key.clone()),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("style", &self.style)
            .field("key", &"<redacted>")
            .field("aws", &self.aws)
            .field("renewal", &self.renewal)
            .finish()
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
            options: FormatOptions::default(),
            serves_responses: false,
        }
    }

    #[test]
    fn a_translated_stream_with_an_oversized_line_ends_in_an_error_event_and_holds_nothing() {
        let megabyte = vec![b'x'; 1024 * 1024];
        for (format, api) in [(Format::Anthropic, "Anthropic"), (Format::Gemini, "Gemini"), (Format::Ollama, "Ollama")] {
            let context = openai::AnswerContext { id: "chatcmpl-1".into(), created: 1, model: "m".into(), include_usage: false };
            let Some(mut translator) = format.stream(context) else { panic!("{api} streams are translated") };
            let mut out = Vec::new();
            for _ in 0..(crate::sse::MAX_LINE_BYTES / megabyte.len() + 1) {
                out.extend(translator.feed(&megabyte));
            }
            assert_eq!(out, oversized_stream_error(api), "{api}: one error event, and the line is not passed on");
            assert!(String::from_utf8_lossy(&out).contains(&format!("{api}'s stream carried an event longer than 16 MiB")));
            assert!(translator.feed(b"\n\ndata: {}\n\n").is_empty() && translator.finish().is_empty(), "{api}: the stream ended");
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
    fn embeddings_paths_per_format_and_none_at_anthropic() {
        assert_eq!(provider(Format::Openai, &[]).embeddings_path("m").as_deref(), Some("/v1/embeddings"));
        assert_eq!(
            provider(Format::AzureOpenai, &[]).embeddings_path("emb/../x").as_deref(),
            Some("/openai/deployments/emb%2F..%2Fx/embeddings?api-version=2024-10-21")
        );
        assert_eq!(
            provider(Format::Gemini, &[]).embeddings_path("models/gemini-embedding-001").as_deref(),
            Some("/v1beta/models/gemini-embedding-001:batchEmbedContents")
        );
        assert_eq!(provider(Format::Ollama, &[]).embeddings_path("nomic-embed-text").as_deref(), Some("/api/embed"));
        assert_eq!(provider(Format::Anthropic, &[]).embeddings_path("m"), None);
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
    fn a_signed_attempt_s_headers_and_a_client_s_own_never_reach_the_next_provider() {
        let mut headers = Headers::default();
        // What the client sent, then what Envoy's signer added to the shared map for a failed
        // Bedrock attempt.
        for (name, value) in [
            ("x-amz-security-token", "client-token"),
            ("authorization", "AWS4-HMAC-SHA256 Credential=AKIA.../bedrock/aws4_request, Signature=..."),
            ("x-amz-date", "20261201T100000Z"),
            ("x-amz-content-sha256", "e3b0c442"),
        ] {
            headers.set(name, value);
        }
        let mut next = provider(Format::Openai, &[]);
        next.auth = Auth::new(AuthStyle::Bearer, "openai-key".into());
        next.rewrite_headers(&mut headers);
        assert!(!headers.0.keys().any(|k| k.starts_with("x-amz-")), "{:?}", headers.0);
        assert_eq!(headers.0["authorization"], "Bearer openai-key");
        let mut signed = provider(Format::Bedrock, &[]);
        signed.auth = Auth::aws_sigv4(AwsScope { region: "us-east-1".into(), service: "bedrock".into() });
        headers.set("x-amz-security-token", "client-token");
        signed.rewrite_headers(&mut headers);
        assert!(!headers.0.contains_key("authorization") && !headers.0.contains_key("x-amz-security-token"), "{:?}", headers.0);
    }

    #[test]
    fn the_fingerprint_changes_with_where_and_who_not_with_model_names() {
        let base = provider(Format::Openai, &[]);
        let mut other_key = provider(Format::Openai, &[]);
        other_key.auth = Auth::new(AuthStyle::Bearer, "k2".into());
        let mut other_host = provider(Format::Openai, &[]);
        other_host.host = "elsewhere.test".into();
        let more_models = provider(Format::Openai, &[("a", "b")]);
        assert_ne!(base.fingerprint(), other_key.fingerprint());
        assert_ne!(base.fingerprint(), other_host.fingerprint());
        assert_ne!(base.fingerprint(), provider(Format::Anthropic, &[]).fingerprint());
        assert_eq!(base.fingerprint(), more_models.fingerprint());
    }

    #[test]
    fn azure_always_needs_the_body_for_its_deployment_path() {
        let p = provider(Format::AzureOpenai, &[]);
        assert!(p.needs_body());
        assert_eq!(p.chat_path("gpt-4o", false), "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
    }
}
