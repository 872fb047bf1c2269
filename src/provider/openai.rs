//! OpenAI chat completions: the API every client speaks to us, and that OpenRouter, DeepSeek,
//! Groq, vLLM and Ollama's `/v1` copy. Its request, response and stream chunk models live here;
//! for OpenAI-compatible providers only the host, the base path and the key differ.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Provider;

pub const DEFAULT_BASE_PATH: &str = "/v1";

pub fn chat_path(provider: &Provider) -> String {
    format!("{}/chat/completions", provider.base_path)
}

/// A chat completion request as a client sends it. Fields no translation reads stay in `other`,
/// so each format can say which ones it drops.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<Value>,
    pub user: Option<String>,
    pub other: Map<String, Value>,
}

/// By hand rather than derived: `other` would need `#[serde(flatten)]`, which buffers the whole
/// request in serde's generic content tree before reading it, in time and in module size.
impl<'de> Deserialize<'de> for ChatRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ChatRequest, D::Error> {
        deserializer.deserialize_map(ChatRequestVisitor)
    }
}

struct ChatRequestVisitor;

/// A field read once: a second one is refused, as derived code does.
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(map: &mut A, slot: &mut Option<T>, name: &'static str) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Visitor<'de> for ChatRequestVisitor {
    type Value = ChatRequest;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a chat completion request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatRequest, A::Error> {
        let (mut model, mut messages, mut stream) = (None, None, None);
        let (mut stream_options, mut max_tokens, mut max_completion_tokens) = (None, None, None);
        let (mut temperature, mut top_p, mut stop, mut seed) = (None, None, None, None);
        let (mut presence_penalty, mut frequency_penalty, mut tools, mut tool_choice) = (None, None, None, None);
        let (mut parallel_tool_calls, mut response_format, mut user) = (None, None, None);
        let mut other = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "model" => once(&mut map, &mut model, "model")?,
                "messages" => once(&mut map, &mut messages, "messages")?,
                "stream" => once(&mut map, &mut stream, "stream")?,
                "stream_options" => once(&mut map, &mut stream_options, "stream_options")?,
                "max_tokens" => once(&mut map, &mut max_tokens, "max_tokens")?,
                "max_completion_tokens" => once(&mut map, &mut max_completion_tokens, "max_completion_tokens")?,
                "temperature" => once(&mut map, &mut temperature, "temperature")?,
                "top_p" => once(&mut map, &mut top_p, "top_p")?,
                "stop" => once(&mut map, &mut stop, "stop")?,
                "seed" => once(&mut map, &mut seed, "seed")?,
                "presence_penalty" => once(&mut map, &mut presence_penalty, "presence_penalty")?,
                "frequency_penalty" => once(&mut map, &mut frequency_penalty, "frequency_penalty")?,
                "tools" => once(&mut map, &mut tools, "tools")?,
                "tool_choice" => once(&mut map, &mut tool_choice, "tool_choice")?,
                "parallel_tool_calls" => once(&mut map, &mut parallel_tool_calls, "parallel_tool_calls")?,
                "response_format" => once(&mut map, &mut response_format, "response_format")?,
                "user" => once(&mut map, &mut user, "user")?,
                _ => {
                    let value: Value = map.next_value()?;
                    other.insert(key, value);
                }
            }
        }
        Ok(ChatRequest {
            model: model.ok_or_else(|| de::Error::missing_field("model"))?,
            messages: messages.ok_or_else(|| de::Error::missing_field("messages"))?,
            stream: stream.unwrap_or_default(),
            stream_options: stream_options.flatten(),
            max_tokens: max_tokens.flatten(),
            max_completion_tokens: max_completion_tokens.flatten(),
            temperature: temperature.flatten(),
            top_p: top_p.flatten(),
            stop: stop.flatten(),
            seed: seed.flatten(),
            presence_penalty: presence_penalty.flatten(),
            frequency_penalty: frequency_penalty.flatten(),
            tools: tools.flatten(),
            tool_choice: tool_choice.flatten(),
            parallel_tool_calls: parallel_tool_calls.flatten(),
            response_format: response_format.flatten(),
            user: user.flatten(),
            other,
        })
    }
}

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<ChatRequest, String> {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }

    /// The output limit the client asked for, under either of its names.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn sequences(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    /// The newer name for `system` in OpenAI's API.
    Developer,
    User,
    Assistant,
    Tool,
    /// The deprecated function-result role.
    Function,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// An assistant turn's refusal text (OpenAI's structured refusals).
    #[serde(default)]
    pub refusal: Option<String>,
}

impl Message {
    /// The message's text: the string, or its text parts joined by newlines.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(text)) => text.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// By hand rather than `untagged`, which buffers the content in serde's generic tree and tries
/// each variant in turn.
impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Content, D::Error> {
        deserializer.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of content parts")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
        Ok(Content::Text(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
        Ok(Content::Text(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
        let mut parts = Vec::new();
        while let Some(part) = seq.next_element()? {
            parts.push(part);
        }
        Ok(Content::Parts(parts))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
    InputAudio { input_audio: Value },
    File { file: Value },
    Refusal { refusal: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default)]
    pub detail: Option<String>,
}

/// An image as a provider that takes inline bytes needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image<'a> {
    /// A `data:<media type>;base64,<data>` URI, split.
    Inline { media_type: &'a str, data: &'a str },
    Url(&'a str),
}

impl ImageUrl {
    /// The image, or `None` for a `data:` URI that is not base64 (which no provider takes).
    pub fn image(&self) -> Option<Image<'_>> {
        let Some(rest) = self.url.strip_prefix("data:") else {
            return Some(Image::Url(&self.url));
        };
        let (meta, data) = rest.split_once(',')?;
        let media_type = meta.strip_suffix(";base64")?;
        Some(Image::Inline { media_type, data })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as OpenAI sends it.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDefinition,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `none`, `auto` or `required`.
    Mode(String),
    Function { function: FunctionName },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FunctionName {
    pub name: String,
}

/// What the translated answer says about itself where the provider's answer is silent: the
/// attempt decides these once, so every chunk of a stream agrees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerContext {
    /// Used when the provider's answer has no id of its own.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model the provider was asked for.
    pub model: String,
    /// The client asked for a final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens.saturating_add(completion_tokens) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl ChatCompletion {
    pub fn new(context: &AnswerContext, id: Option<String>, message: AssistantMessage, finish_reason: FinishReason, usage: Option<Usage>) -> ChatCompletion {
        ChatCompletion {
            id: id.unwrap_or_else(|| context.id.clone()),
            object: "chat.completion".into(),
            created: context.created,
            model: context.model.clone(),
            choices: vec![Choice { index: 0, message, finish_reason: Some(finish_reason), logprobs: None }],
            usage,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: Option<FinishReason>,
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    pub role: String,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

impl AssistantMessage {
    pub fn new(content: Option<String>, tool_calls: Vec<ToolCall>) -> AssistantMessage {
        AssistantMessage {
            role: "assistant".into(),
            content,
            tool_calls: if tool_calls.is_empty() { None } else { Some(tool_calls) },
        }
    }
}

/// One `chat.completion.chunk` of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl ChatChunk {
    pub fn new(context: &AnswerContext, id: &str, delta: Delta, finish_reason: Option<FinishReason>) -> ChatChunk {
        ChatChunk {
            id: id.to_string(),
            object: "chat.completion.chunk".into(),
            created: context.created,
            model: context.model.clone(),
            choices: vec![ChunkChoice { index: 0, delta, finish_reason, logprobs: None }],
            usage: None,
        }
    }

    /// The final chunk of a stream whose client asked for usage: no choices, only usage.
    pub fn usage(context: &AnswerContext, id: &str, usage: Usage) -> ChatChunk {
        ChatChunk {
            id: id.to_string(),
            object: "chat.completion.chunk".into(),
            created: context.created,
            model: context.model.clone(),
            choices: Vec::new(),
            usage: Some(usage),
        }
    }

    /// The chunk as one SSE event.
    pub fn to_sse(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_sse(&mut out);
        out
    }

    /// The chunk as one SSE event at the end of `out`: serialized in place, not copied there.
    pub fn write_sse(&self, out: &mut Vec<u8>) {
        // A text chunk is about 200 bytes: room for it at once, not doubling up to it.
        out.reserve(256);
        out.extend_from_slice(b"data: ");
        let start = out.len();
        if serde_json::to_writer(&mut *out, self).is_err() {
            // Cannot happen writing to a Vec; what `to_vec` gave then (nothing) is kept.
            out.truncate(start);
        }
        out.extend_from_slice(b"\n\n");
    }
}

/// Writes a stream's chunks as `ChatChunk::write_sse` does, byte for byte, with what every chunk
/// of the stream shares (its id, creation time and model) serialized once rather than per chunk.
#[derive(Debug, Default)]
pub struct ChunkWriter {
    /// The id `head` was made for: it may change before the first chunk (a provider's own id).
    id: String,
    /// `data: {"id":..,"object":..,"created":..,"model":..,"choices":[{"index":0,"delta":`
    head: Vec<u8>,
}

impl ChunkWriter {
    pub fn write(&mut self, context: &AnswerContext, id: &str, delta: &Delta, finish_reason: Option<FinishReason>, out: &mut Vec<u8>) {
        if self.head.is_empty() || self.id != id {
            self.id = id.to_string();
            self.head.clear();
            self.head.extend_from_slice(b"data: {\"id\":");
            write_json(&mut self.head, id);
            self.head.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
            write_json(&mut self.head, &context.created);
            self.head.extend_from_slice(b",\"model\":");
            write_json(&mut self.head, &context.model);
            self.head.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
        }
        out.reserve(self.head.len() + 128);
        out.extend_from_slice(&self.head);
        write_json(out, delta);
        out.extend_from_slice(b",\"finish_reason\":");
        write_json(out, &finish_reason);
        out.extend_from_slice(b",\"logprobs\":null}]}\n\n");
    }
}

/// Serializing into a `Vec` cannot fail.
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(out, value);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<FinishReason>,
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

impl Delta {
    pub fn role() -> Delta {
        Delta { role: Some("assistant".into()), content: Some(String::new()), tool_calls: None }
    }

    pub fn text(text: impl Into<String>) -> Delta {
        Delta { content: Some(text.into()), ..Delta::default() }
    }

    pub fn tool_call(call: ToolCallDelta) -> Delta {
        Delta { tool_calls: Some(vec![call]), ..Delta::default() }
    }
}

/// A piece of a streamed tool call: the first carries id and name, later ones argument text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub function: FunctionCallDelta,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

impl ToolCallDelta {
    pub fn start(index: u32, id: &str, name: &str) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: Some(id.to_string()),
            kind: Some("function".into()),
            function: FunctionCallDelta { name: Some(name.to_string()), arguments: Some(String::new()) },
        }
    }

    pub fn arguments(index: u32, arguments: &str) -> ToolCallDelta {
        ToolCallDelta { index, id: None, kind: None, function: FunctionCallDelta { name: None, arguments: Some(arguments.to_string()) } }
    }
}

/// A complete (not streamed) answer passed on as it is must at least be JSON.
pub fn check_answer(body: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map(|_| ()).map_err(|e| format!("not JSON: {e}"))
}

/// An error as OpenAI sends it, also inside a stream (`data: {"error": ...}`), which the SDKs
/// raise as an API error.
pub fn error_body(message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    crate::openai_error::with_code(message, kind, code, None)
}

/// The OpenAI error `type` for an HTTP status, for providers whose errors have other names.
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        400 | 404 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Auth, Format, Provider};
    use super::*;

    #[test]
    fn an_answer_passed_on_must_be_json() {
        assert_eq!(check_answer(br#"{"id":"x","choices":[]}"#), Ok(()));
        for bad in [&b"<html>502 Bad Gateway</html>"[..], b"", b"{\"id\":\"x\",\"cho", b"{} trailing"] {
            let why = check_answer(bad).unwrap_err();
            assert!(why.starts_with("not JSON: "), "{why}");
        }
    }

    #[test]
    fn a_request_keeps_unknown_fields_and_refuses_what_derived_code_refused() {
        let r = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"user","content":[{"type":"text","text":"a"}]}],
                "stop":null,"stream":true,"logprobs":true,"metadata":{"k":"v"}}"#,
        )
        .unwrap();
        assert_eq!((r.model.as_str(), r.stream, r.stop.as_ref()), ("m", true, None));
        assert_eq!(r.messages[0].content, Some(Content::Text("hi".into())));
        assert_eq!(r.messages[1].content, Some(Content::Parts(vec![Part::Text { text: "a".into() }])));
        assert_eq!(r.other.keys().collect::<Vec<_>>(), ["logprobs", "metadata"]);
        let refused: &[(&[u8], &str)] = &[
            (br#"{"messages":[]}"#, "missing field `model`"),
            (br#"{"model":"m"}"#, "missing field `messages`"),
            (br#"{"model":"m","model":"n","messages":[]}"#, "duplicate field `model`"),
            (br#"{"model":"m","messages":[],"stream":null}"#, "invalid type: null"),
            (br#"{"model":"m","messages":[{"role":"user","content":5}]}"#, "expected a string or an array of content parts"),
            (br#"["m"]"#, "invalid type: sequence"),
        ];
        for (body, reason) in refused {
            let err = ChatRequest::parse(body).unwrap_err();
            assert!(err.contains(reason), "{}: {err}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_chunk_writer_writes_what_a_chat_chunk_serializes_to() {
        let context = AnswerContext { id: "x".into(), created: 1_700_000_000, model: "m\"odel/ü".into(), include_usage: false };
        let deltas = [
            (Delta::role(), None),
            (Delta::text("a \"quoted\"\n\u{1}line ü 😀"), None),
            (Delta::tool_call(ToolCallDelta::start(0, "call_1", "get")), None),
            (Delta::tool_call(ToolCallDelta::arguments(0, "{\"a\":1}")), None),
            (Delta::default(), Some(FinishReason::Stop)),
            (Delta::default(), Some(FinishReason::ToolCalls)),
        ];
        let mut writer = ChunkWriter::default();
        for id in ["chatcmpl-1", "chatcmpl-\\2"] {
            for (delta, finish_reason) in &deltas {
                let mut out = b"before".to_vec();
                writer.write(&context, id, delta, *finish_reason, &mut out);
                let mut expected = b"before".to_vec();
                expected.extend(ChatChunk::new(&context, id, delta.clone(), *finish_reason).to_sse());
                assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
            }
        }
    }

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
            options: Default::default(),
            serves_responses: false,
        };
        assert_eq!(p.chat_path("ignored", false), "/api/v1/chat/completions");
    }

    #[test]
    fn reads_every_message_shape_a_client_sends() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":5,
            "stop":"END","logit_bias":{"1":2},
            "messages":[
              {"role":"developer","content":"be brief"},
              {"role":"user","content":[{"type":"text","text":"what is"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAA="}}]},
              {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
              {"role":"tool","tool_call_id":"call_1","content":"42"}],
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
            "tool_choice":{"type":"function","function":{"name":"f"}}}"#;
        let r = ChatRequest::parse(body).unwrap();
        assert!(r.stream && r.include_usage());
        assert_eq!(r.max_output_tokens(), Some(5));
        assert_eq!(r.stop.unwrap().sequences(), vec!["END"]);
        assert_eq!(r.messages[0].role, Role::Developer);
        assert_eq!(r.messages[1].text(), "what is");
        let Some(Content::Parts(parts)) = &r.messages[1].content else { panic!() };
        let Part::ImageUrl { image_url } = &parts[1] else { panic!() };
        assert_eq!(image_url.image(), Some(Image::Inline { media_type: "image/png", data: "AAA=" }));
        assert_eq!(r.messages[2].tool_calls.as_ref().unwrap()[0].function.arguments, r#"{"a":1}"#);
        assert_eq!(r.tool_choice, Some(ToolChoice::Function { function: FunctionName { name: "f".into() } }));
        assert!(r.other.contains_key("logit_bias"));
    }

    #[test]
    fn image_urls_and_data_uris() {
        let url = |u: &str| ImageUrl { url: u.into(), detail: None };
        assert_eq!(url("https://x/y.png").image(), Some(Image::Url("https://x/y.png")));
        assert_eq!(url("data:image/jpeg;base64,/9j=").image(), Some(Image::Inline { media_type: "image/jpeg", data: "/9j=" }));
        assert_eq!(url("data:text/plain,hello").image(), None);
    }

    #[test]
    fn chunks_serialize_as_the_sdk_expects() {
        let context = AnswerContext { id: "chatcmpl-1".into(), created: 7, model: "m".into(), include_usage: false };
        let chunk = ChatChunk::new(&context, "chatcmpl-1", Delta::tool_call(ToolCallDelta::start(0, "call_1", "f")), None);
        let v: Value = serde_json::from_slice(&serde_json::to_vec(&chunk).unwrap()).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        assert_eq!(v["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "f");
        assert_eq!(v["choices"][0]["finish_reason"], Value::Null);
        assert!(v.get("usage").is_none());
        assert!(chunk.to_sse().starts_with(b"data: {"));
    }
}
