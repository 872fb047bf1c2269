//! Anthropic Messages (`POST {base}/messages`): a client's OpenAI chat request in Anthropic's
//! form, and Anthropic's messages, event streams and errors back in OpenAI's.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::openai::{
    self, AnswerContext, AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, ChunkWriter, Content, Delta, FinishReason,
    FunctionCall, Image, Message, Part, Role, Tool, ToolCall, ToolCallDelta, ToolChoice, Usage,
};
use super::{FormatOptions, Provider, StreamTranslator, Unsupported};
use crate::sse::{self, Event, EventReader};

pub const DEFAULT_BASE_PATH: &str = "/v1";

/// Anthropic wants the conversation to open with a user turn; one that opens with the
/// assistant (a greeting after the system prompt) gets this user turn in front of it.
const OPENING_USER_TURN: &str = "(conversation start)";

/// The image types Anthropic reads from base64 data.
const IMAGE_MEDIA_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

/// How much of an error body that is not Anthropic's JSON is kept in the message.
const ERROR_SNIPPET_CHARS: usize = 300;

pub fn chat_path(provider: &Provider) -> String {
    format!("{}/messages", provider.base_path)
}

// ---------------------------------------------------------------- request

#[derive(Debug, Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Turn>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDefinition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceParam>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<Value>,
}

#[derive(Debug, Serialize)]
struct Metadata {
    user_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Speaker {
    User,
    Assistant,
}

#[derive(Debug, Serialize)]
struct Turn {
    role: Speaker,
    content: Vec<Block>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    Image {
        source: Source,
    },
    Document {
        source: Source,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Source {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum ToolResultContent {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Serialize)]
struct ToolDefinition {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: Value,
}

#[derive(Debug, Serialize)]
struct ToolChoiceParam {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

/// The client's request as an Anthropic Messages request for `model`.
pub fn request(request: &ChatRequest, model: &str, options: &FormatOptions) -> Result<Vec<u8>, Unsupported> {
    refuse_what_cannot_be_carried(request)?;
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (at, message) in request.messages.iter().enumerate() {
        let turn = match message.role {
            Role::System | Role::Developer => {
                let text = system_text(message).map_err(|why| at_message(at, why))?;
                if !text.trim().is_empty() {
                    system.push(text);
                }
                continue;
            }
            Role::User => user_blocks(message).map(|blocks| (Speaker::User, blocks)),
            Role::Assistant => assistant_blocks(message).map(|blocks| (Speaker::Assistant, blocks)),
            Role::Tool => tool_result(message).map(|block| (Speaker::User, vec![block])),
            Role::Function => Err("the deprecated `function` role has no Anthropic equivalent; send `tool` messages".into()),
        };
        let (speaker, blocks) = turn.map_err(|why| at_message(at, why))?;
        add_turn(&mut turns, speaker, blocks);
    }
    shape_conversation(&mut turns);

    let tools = match &request.tools {
        Some(tools) => tools.iter().map(tool_definition).collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let tool_choice = if tools.is_empty() { None } else { tool_choice(request.tool_choice.as_ref(), request.parallel_tool_calls)? };
    let body = MessagesRequest {
        model,
        max_tokens: request.max_output_tokens().unwrap_or(options.default_max_tokens),
        system: if system.is_empty() { None } else { Some(system.join("\n\n")) },
        messages: turns,
        stop_sequences: stop_sequences(request)?,
        // Anthropic's range is 0 to 1 where OpenAI's is 0 to 2; Anthropic's own OpenAI
        // compatibility caps it the same way.
        temperature: request.temperature.map(|t| t.clamp(0.0, 1.0)),
        // Current Claude models refuse `temperature` and `top_p` together, and OpenAI advises
        // setting only one: with both, the temperature is kept.
        top_p: if request.temperature.is_some() { None } else { request.top_p },
        stream: request.stream,
        metadata: request.user.clone().map(|user_id| Metadata { user_id }),
        tools,
        tool_choice,
        output_config: output_config(request.response_format.as_ref())?,
    };
    serde_json::to_vec(&body).map_err(|e| Unsupported(format!("the translated request could not be written: {e}")))
}

fn at_message(at: usize, why: String) -> Unsupported {
    Unsupported(format!("messages[{at}]: {why}"))
}

/// Parameters whose meaning Anthropic has no way to keep: refused rather than dropped.
fn refuse_what_cannot_be_carried(request: &ChatRequest) -> Result<(), Unsupported> {
    if let Some(n) = request.other.get("n") {
        if n.as_u64() != Some(1) && !n.is_null() {
            return Err(Unsupported(format!("n={n}: Anthropic answers with exactly one choice")));
        }
    }
    for deprecated in ["functions", "function_call"] {
        if request.other.get(deprecated).is_some_and(|v| !v.is_null()) {
            return Err(Unsupported(format!("`{deprecated}` (deprecated) is not translated; use `tools` and `tool_choice`")));
        }
    }
    let wants_audio = request.other.get("audio").is_some_and(|v| !v.is_null())
        || request
            .other
            .get("modalities")
            .and_then(Value::as_array)
            .is_some_and(|modalities| modalities.iter().any(|m| m.as_str() == Some("audio")));
    if wants_audio {
        return Err(Unsupported("audio output: Anthropic answers with text only".into()));
    }
    Ok(())
}

fn system_text(message: &Message) -> Result<String, String> {
    if let Some(Content::Parts(parts)) = &message.content {
        if parts.iter().any(|part| !matches!(part, Part::Text { .. })) {
            return Err("a system message can only carry text".into());
        }
    }
    Ok(message.text())
}

fn user_blocks(message: &Message) -> Result<Vec<Block>, String> {
    match &message.content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(text_block(text).into_iter().collect()),
        Some(Content::Parts(parts)) => part_blocks(parts),
    }
}

fn part_blocks(parts: &[Part]) -> Result<Vec<Block>, String> {
    parts.iter().filter_map(|part| part_block(part).transpose()).collect()
}

/// Anthropic refuses text blocks with nothing but whitespace in them.
fn text_block(text: &str) -> Option<Block> {
    if text.trim().is_empty() {
        None
    } else {
        Some(Block::Text { text: text.to_string() })
    }
}

fn part_block(part: &Part) -> Result<Option<Block>, String> {
    match part {
        Part::Text { text } | Part::Refusal { refusal: text } => Ok(text_block(text)),
        Part::ImageUrl { image_url } => match image_url.image() {
            Some(Image::Url(url)) => Ok(Some(Block::Image { source: Source::Url { url: url.to_string() } })),
            Some(Image::Inline { media_type, data }) => {
                let media_type = if media_type == "image/jpg" { "image/jpeg" } else { media_type };
                if !IMAGE_MEDIA_TYPES.contains(&media_type) {
                    return Err(format!("image type `{media_type}`: Anthropic reads {}", IMAGE_MEDIA_TYPES.join(", ")));
                }
                Ok(Some(Block::Image { source: Source::Base64 { media_type: media_type.into(), data: data.into() } }))
            }
            None => Err("an image `data:` URI that is not base64".into()),
        },
        Part::File { file } => document_block(file).map(Some),
        Part::InputAudio { .. } => Err("audio input has no Anthropic equivalent".into()),
    }
}

/// A file part: Anthropic reads PDFs sent inline; OpenAI file ids mean nothing to it.
fn document_block(file: &Value) -> Result<Block, String> {
    let Some(uri) = file.get("file_data").and_then(Value::as_str) else {
        return Err("a file part without `file_data` (OpenAI file ids are OpenAI's own)".into());
    };
    let pdf = uri.strip_prefix("data:application/pdf;base64,");
    match pdf {
        Some(data) => Ok(Block::Document { source: Source::Base64 { media_type: "application/pdf".into(), data: data.into() } }),
        None => Err("a file part that is not a base64 `data:application/pdf` URI".into()),
    }
}

fn assistant_blocks(message: &Message) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    match &message.content {
        None => {}
        Some(Content::Text(text)) => blocks.extend(text_block(text)),
        Some(Content::Parts(parts)) => {
            for part in parts {
                match part {
                    Part::Text { text } | Part::Refusal { refusal: text } => blocks.extend(text_block(text)),
                    _ => return Err("an assistant message can only carry text and refusals".into()),
                }
            }
        }
    }
    if let Some(refusal) = &message.refusal {
        blocks.extend(text_block(refusal));
    }
    for call in message.tool_calls.iter().flatten() {
        blocks.push(Block::ToolUse {
            id: tool_use_id(&call.id),
            name: call.function.name.clone(),
            input: tool_input(&call.function.arguments).map_err(|why| format!("tool call `{}`: {why}", call.id))?,
        });
    }
    Ok(blocks)
}

/// OpenAI's arguments are JSON text; Anthropic's input is the object itself.
fn tool_input(arguments: &str) -> Result<Value, String> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => Ok(input),
        Ok(_) => Err("arguments are JSON but not an object, which Anthropic's tool input must be".into()),
        Err(e) => Err(format!("arguments are not valid JSON ({e})")),
    }
}

/// Anthropic takes tool use ids made of `[A-Za-z0-9_-]` only; ids another provider made may
/// hold other characters. The same rewrite of the call and its result keeps them paired.
fn tool_use_id(id: &str) -> String {
    if id.is_empty() {
        return "_".into();
    }
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

fn tool_result(message: &Message) -> Result<Block, String> {
    let Some(call_id) = &message.tool_call_id else {
        return Err("a tool message without `tool_call_id`".into());
    };
    let content = match &message.content {
        None => None,
        Some(Content::Text(text)) if text.trim().is_empty() => None,
        Some(Content::Text(text)) => Some(ToolResultContent::Text(text.clone())),
        Some(Content::Parts(parts)) => Some(part_blocks(parts)?).filter(|blocks| !blocks.is_empty()).map(ToolResultContent::Blocks),
    };
    Ok(Block::ToolResult { tool_use_id: tool_use_id(call_id), content })
}

/// Appends a turn, or merges it into the previous one when the speaker is the same: the tool
/// results answering one assistant turn become one user turn.
fn add_turn(turns: &mut Vec<Turn>, role: Speaker, content: Vec<Block>) {
    if content.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.content.extend(content),
        _ => turns.push(Turn { role, content }),
    }
}

/// What Anthropic requires of the whole conversation: it opens with a user turn, tool results
/// come first in their user turn, and a final assistant turn (which Anthropic continues) does
/// not end in whitespace.
fn shape_conversation(turns: &mut Vec<Turn>) {
    if turns.first().is_none_or(|turn| turn.role != Speaker::User) {
        turns.insert(0, Turn { role: Speaker::User, content: vec![Block::Text { text: OPENING_USER_TURN.into() }] });
    }
    for turn in turns.iter_mut().filter(|turn| turn.role == Speaker::User) {
        crate::sort::stable_sort_by_key(&mut turn.content, |block| !matches!(block, Block::ToolResult { .. }));
    }
    if let Some(Turn { role: Speaker::Assistant, content }) = turns.last_mut() {
        if let Some(Block::Text { text }) = content.last_mut() {
            text.truncate(text.trim_end().len());
        }
    }
}

fn tool_definition(tool: &Tool) -> Result<ToolDefinition, Unsupported> {
    let name = &tool.function.name;
    if tool.kind != "function" {
        return Err(Unsupported(format!("tool `{name}` of type `{}`: only function tools translate", tool.kind)));
    }
    let input_schema = match &tool.function.parameters {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(Value::Object(schema)) => {
            let mut schema = schema.clone();
            match schema.get("type") {
                None => {
                    schema.insert("type".into(), "object".into());
                }
                Some(kind) if kind.as_str() == Some("object") => {}
                Some(kind) => {
                    return Err(Unsupported(format!("tool `{name}`: parameters of type {kind}; Anthropic takes an object schema")))
                }
            }
            Value::Object(schema)
        }
        Some(_) => return Err(Unsupported(format!("tool `{name}`: parameters are not a JSON schema object"))),
    };
    Ok(ToolDefinition { name: name.clone(), description: tool.function.description.clone(), input_schema })
}

fn tool_choice(choice: Option<&ToolChoice>, parallel_tool_calls: Option<bool>) -> Result<Option<ToolChoiceParam>, Unsupported> {
    let disable_parallel_tool_use = if parallel_tool_calls == Some(false) { Some(true) } else { None };
    let (kind, name) = match choice {
        None if disable_parallel_tool_use.is_none() => return Ok(None),
        None => ("auto", None),
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => ("auto", None),
            "required" => ("any", None),
            // Anthropic's `none` takes no parallel setting: no tool call at all.
            "none" => return Ok(Some(ToolChoiceParam { kind: "none", name: None, disable_parallel_tool_use: None })),
            other => return Err(Unsupported(format!("tool_choice `{other}` is not one of none, auto, required"))),
        },
        Some(ToolChoice::Function { function }) => ("tool", Some(function.name.clone())),
    };
    Ok(Some(ToolChoiceParam { kind, name, disable_parallel_tool_use }))
}

fn stop_sequences(request: &ChatRequest) -> Result<Vec<String>, Unsupported> {
    let sequences = request.stop.as_ref().map(|stop| stop.sequences()).unwrap_or_default();
    if let Some(blank) = sequences.iter().find(|s| s.trim().is_empty()) {
        return Err(Unsupported(format!("stop sequence {blank:?}: Anthropic only stops on sequences with non-whitespace text")));
    }
    Ok(sequences)
}

/// `response_format`: a JSON schema becomes Anthropic's structured output format; `json_object`
/// has no Anthropic equivalent without a schema and is dropped (its prompt already asks for JSON).
fn output_config(response_format: Option<&Value>) -> Result<Option<Value>, Unsupported> {
    let Some(format) = response_format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") | Some("json_object") => Ok(None),
        Some("json_schema") => match format.get("json_schema").and_then(|s| s.get("schema")) {
            Some(schema @ Value::Object(_)) => Ok(Some(json!({"format": {"type": "json_schema", "schema": schema}}))),
            _ => Err(Unsupported("response_format json_schema without a `schema` object".into())),
        },
        _ => Err(Unsupported(format!("response_format {format}: not one of text, json_object, json_schema"))),
    }
}

// ---------------------------------------------------------------- answer

/// A message as Anthropic answers it, and as `message_start` opens a stream.
#[derive(Debug, Default, Deserialize)]
struct AnthropicMessage {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    content: Vec<ContentBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Thinking, redacted thinking and server tool blocks: nothing in an OpenAI answer holds them.
    #[serde(other)]
    Other,
}

/// Token counts; each may be missing (a `message_delta` carries only what changed) or beyond
/// what a count can be, which reads as missing.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct TokenUsage {
    #[serde(default, deserialize_with = "token_count")]
    input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "token_count")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "token_count")]
    cache_read_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "token_count")]
    output_tokens: Option<u64>,
}

fn token_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(Value::deserialize(deserializer)?.as_u64())
}

impl TokenUsage {
    /// Later counts replace earlier ones: Anthropic's are cumulative.
    fn update(&mut self, newer: TokenUsage) {
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.cache_creation_input_tokens = newer.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = newer.cache_read_input_tokens.or(self.cache_read_input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
    }

    /// OpenAI's prompt tokens are every input token, cached or not.
    fn openai(self) -> Usage {
        let prompt_tokens = [self.input_tokens, self.cache_creation_input_tokens, self.cache_read_input_tokens]
            .into_iter()
            .flatten()
            .fold(0u64, u64::saturating_add);
        let completion_tokens = self.output_tokens.unwrap_or(0);
        Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens.saturating_add(completion_tokens) }
    }
}

/// Anthropic's message as an OpenAI `chat.completion`.
pub fn answer(body: &[u8], context: &AnswerContext) -> Result<Vec<u8>, String> {
    let message: AnthropicMessage = serde_json::from_slice(body).map_err(|e| format!("not an Anthropic message: {e}"))?;
    if let Some(kind) = message.kind.as_deref().filter(|kind| *kind != "message") {
        return Err(format!("an Anthropic `{kind}` where a message was expected"));
    }
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block {
            ContentBlock::Text { text: piece } => text.push_str(&piece),
            ContentBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall { name, arguments: arguments_text(&input) },
            }),
            ContentBlock::Other => {}
        }
    }
    let finish_reason = finish_reason(message.stop_reason.as_deref(), !tool_calls.is_empty());
    let content = if text.is_empty() && !tool_calls.is_empty() { None } else { Some(text) };
    let completion = ChatCompletion::new(
        context,
        message.id.as_deref().map(completion_id),
        AssistantMessage::new(content, tool_calls),
        finish_reason,
        message.usage.map(TokenUsage::openai),
    );
    Ok(completion.to_json())
}

fn completion_id(message_id: &str) -> String {
    format!("chatcmpl-{message_id}")
}

fn arguments_text(input: &Value) -> String {
    match input {
        Value::Null => "{}".into(),
        input => input.to_string(),
    }
}

/// `pause_turn` (a long turn Anthropic paused, to be continued by sending it back) and an
/// exceeded context window both leave the answer unfinished, as `length` does.
fn finish_reason(stop_reason: Option<&str>, called_tools: bool) -> FinishReason {
    match stop_reason {
        Some("end_turn" | "stop_sequence") => FinishReason::Stop,
        Some("max_tokens" | "model_context_window_exceeded" | "pause_turn") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        _ if called_tools => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

// ---------------------------------------------------------------- errors

/// An Anthropic error body (`{"type":"error","error":{"type":..,"message":..}}`) as OpenAI's;
/// a body that is not one keeps its start in the message.
pub fn error(status: u16, body: &[u8]) -> Vec<u8> {
    let detail = serde_json::from_slice::<Value>(body).ok().and_then(|body| ErrorDetail::from_body(&body));
    match detail {
        Some(detail) => {
            let kind = detail.kind.as_deref();
            let message = detail.message.unwrap_or_else(|| format!("Anthropic answered HTTP {status}"));
            openai::error_body(&message, openai_error_type(kind, status), kind)
        }
        None => openai::error_body(&plain_error_message(status, body), openai::error_type_for_status(status), None),
    }
}

struct ErrorDetail {
    kind: Option<String>,
    message: Option<String>,
}

impl ErrorDetail {
    fn from_body(body: &Value) -> Option<ErrorDetail> {
        let error = body.get("error")?;
        let text = |field: &str| error.get(field).and_then(Value::as_str).map(str::to_string);
        match error {
            Value::String(message) => Some(ErrorDetail { kind: None, message: Some(message.clone()) }),
            Value::Object(_) => Some(ErrorDetail { kind: text("type"), message: text("message") }),
            _ => None,
        }
    }
}

fn openai_error_type(anthropic_type: Option<&str>, status: u16) -> &'static str {
    match anthropic_type {
        Some("invalid_request_error" | "not_found_error" | "request_too_large") => "invalid_request_error",
        Some("authentication_error") => "authentication_error",
        Some("permission_error") => "permission_error",
        Some("billing_error") => "insufficient_quota",
        Some("rate_limit_error") => "rate_limit_error",
        Some("api_error" | "overloaded_error" | "timeout_error") => "api_error",
        _ => openai::error_type_for_status(status),
    }
}

fn plain_error_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("Anthropic answered HTTP {status} with no body");
    }
    let mut snippet: String = text.chars().take(ERROR_SNIPPET_CHARS).collect();
    if snippet.len() < text.len() {
        snippet.push('…');
    }
    format!("Anthropic answered HTTP {status}: {snippet}")
}

// ---------------------------------------------------------------- stream

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing sent yet: the id may still come from `message_start`.
    Waiting,
    /// The role chunk is out.
    Answering,
    /// The finish chunk (and usage) is out; `[DONE]` waits for the end of the stream.
    Ended,
    /// An error event is out: nothing follows it, not even `[DONE]`.
    Failed,
    /// `[DONE]` is out.
    Closed,
}

/// A tool use block of the stream, as the OpenAI tool call it becomes.
#[derive(Debug, Clone, Copy)]
struct StreamedToolCall {
    index: u32,
    has_arguments: bool,
}

/// Anthropic's message events translated into `chat.completion.chunk`s as they arrive.
pub struct Stream {
    context: AnswerContext,
    events: EventReader,
    id: String,
    phase: Phase,
    /// By Anthropic content block index; OpenAI counts tool calls alone, from 0.
    tool_calls: HashMap<u64, StreamedToolCall>,
    usage: TokenUsage,
    stop_reason: Option<String>,
    chunks: ChunkWriter,
}

#[derive(Debug, Deserialize)]
struct MessageStart {
    message: AnthropicMessage,
}

#[derive(Debug, Deserialize)]
struct BlockStart {
    index: u64,
    content_block: ContentBlock,
}

#[derive(Debug, Deserialize)]
struct BlockDeltaEvent {
    index: u64,
    delta: BlockDelta,
}

/// A block's delta by its `type`: `text_delta` carries `text`, `input_json_delta` carries
/// `partial_json`; thinking, signature and citation deltas translate to nothing. Read as plain
/// fields rather than a tagged enum, which serde buffers in a generic tree first.
#[derive(Debug, Deserialize)]
struct BlockDelta {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
}

/// Only an event's `type`: the rest is read by the type's own model, from the text, with no
/// JSON tree in between. Reading it checks that the whole event is JSON.
#[derive(Deserialize)]
struct EventType<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
struct BlockStop {
    index: u64,
}

#[derive(Debug, Deserialize)]
struct MessageDelta {
    #[serde(default)]
    delta: MessageDeltaBody,
    #[serde(default)]
    usage: Option<TokenUsage>,
}

#[derive(Debug, Default, Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

impl Stream {
    pub fn new(context: AnswerContext) -> Stream {
        Stream {
            id: context.id.clone(),
            context,
            events: EventReader::default(),
            phase: Phase::Waiting,
            tool_calls: HashMap::new(),
            usage: TokenUsage::default(),
            stop_reason: None,
            chunks: ChunkWriter::default(),
        }
    }

    fn translate(&mut self, events: Vec<Event>) -> Vec<u8> {
        let mut out = Vec::new();
        for event in events {
            if matches!(self.phase, Phase::Ended | Phase::Failed | Phase::Closed) {
                break;
            }
            self.on_event(&event, &mut out);
        }
        out
    }

    fn on_event(&mut self, event: &Event, out: &mut Vec<u8>) {
        let data = event.data.as_str();
        // Not JSON: nothing Anthropic sends, nothing to translate.
        let Ok(head) = serde_json::from_str::<EventType>(data) else {
            return;
        };
        // A `type` that is not a string counts as none, as the event's name then says.
        let named = head.kind.and_then(|raw| serde_json::from_str::<Cow<str>>(raw.get()).ok());
        let kind = named.as_deref().or(event.name.as_deref()).unwrap_or_default();
        match kind {
            "message_start" => {
                if let Ok(start) = serde_json::from_str::<MessageStart>(data) {
                    if self.phase == Phase::Waiting {
                        if let Some(id) = &start.message.id {
                            self.id = completion_id(id);
                        }
                    }
                    if let Some(usage) = start.message.usage {
                        self.usage.update(usage);
                    }
                }
                self.start(out);
            }
            "content_block_start" => {
                if let Ok(start) = serde_json::from_str::<BlockStart>(data) {
                    self.on_block_start(start, out);
                }
            }
            "content_block_delta" => {
                if let Ok(delta) = serde_json::from_str::<BlockDeltaEvent>(data) {
                    self.on_block_delta(delta, out);
                }
            }
            "content_block_stop" => {
                if let Ok(stop) = serde_json::from_str::<BlockStop>(data) {
                    self.on_block_stop(stop.index, out);
                }
            }
            "message_delta" => {
                if let Ok(delta) = serde_json::from_str::<MessageDelta>(data) {
                    if delta.delta.stop_reason.is_some() {
                        self.stop_reason = delta.delta.stop_reason;
                    }
                    if let Some(usage) = delta.usage {
                        self.usage.update(usage);
                    }
                }
            }
            "message_stop" => self.end(out),
            "error" => {
                if let Ok(data) = serde_json::from_str::<Value>(data) {
                    self.fail(&data, out);
                }
            }
            // `ping`, and event types newer than this translation.
            _ => {}
        }
    }

    fn on_block_start(&mut self, start: BlockStart, out: &mut Vec<u8>) {
        match start.content_block {
            ContentBlock::Text { text } => self.text(&text, out),
            ContentBlock::ToolUse { id, name, input } => {
                self.start(out);
                let index = u32::try_from(self.tool_calls.len()).unwrap_or(u32::MAX);
                self.emit(Delta::tool_call(ToolCallDelta::start(index, &id, &name)), None, out);
                // Anthropic streams the input as JSON text and starts it empty; were it not
                // empty here, it is the whole input.
                let has_arguments = input.as_object().is_some_and(|input| !input.is_empty());
                if has_arguments {
                    self.emit(Delta::tool_call(ToolCallDelta::arguments(index, &input.to_string())), None, out);
                }
                self.tool_calls.insert(start.index, StreamedToolCall { index, has_arguments });
            }
            ContentBlock::Other => {}
        }
    }

    fn on_block_delta(&mut self, delta: BlockDeltaEvent, out: &mut Vec<u8>) {
        match (delta.delta.kind.as_str(), delta.delta.text, delta.delta.partial_json) {
            ("text_delta", Some(text), _) => self.text(&text, out),
            ("input_json_delta", _, Some(partial_json)) => {
                let Some(call) = self.tool_calls.get_mut(&delta.index) else {
                    return;
                };
                if partial_json.is_empty() {
                    return;
                }
                call.has_arguments = true;
                let index = call.index;
                self.emit(Delta::tool_call(ToolCallDelta::arguments(index, &partial_json)), None, out);
            }
            _ => {}
        }
    }

    /// A tool that takes no input streams no JSON; OpenAI's arguments are then `{}`.
    fn on_block_stop(&mut self, block: u64, out: &mut Vec<u8>) {
        let Some(call) = self.tool_calls.get_mut(&block) else {
            return;
        };
        if !call.has_arguments {
            call.has_arguments = true;
            let index = call.index;
            self.emit(Delta::tool_call(ToolCallDelta::arguments(index, "{}")), None, out);
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        self.start(out);
        if !text.is_empty() {
            self.emit(Delta::text(text), None, out);
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.phase == Phase::Waiting {
            self.phase = Phase::Answering;
            self.emit(Delta::role(), None, out);
        }
    }

    /// The finish chunk, then usage if the client asked for it.
    fn end(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        let finish_reason = finish_reason(self.stop_reason.as_deref(), !self.tool_calls.is_empty());
        self.emit(Delta::default(), Some(finish_reason), out);
        if self.context.include_usage {
            ChatChunk::usage(&self.context, &self.id, self.usage.openai()).write_sse(out);
        }
        self.phase = Phase::Ended;
    }

    fn fail(&mut self, data: &Value, out: &mut Vec<u8>) {
        let detail = ErrorDetail::from_body(data).unwrap_or(ErrorDetail { kind: None, message: None });
        let kind = detail.kind.as_deref();
        let message = detail.message.clone().unwrap_or_else(|| "Anthropic sent an error in the stream".into());
        // An error inside a stream has no status of its own: unknown kinds read as a server error.
        let error_type = openai_error_type(kind, 500);
        out.extend(sse::data_event(&openai::error_body(&message, error_type, kind)));
        self.phase = Phase::Failed;
    }

    fn emit(&mut self, delta: Delta, finish_reason: Option<FinishReason>, out: &mut Vec<u8>) {
        self.chunks.write(&self.context, &self.id, &delta, finish_reason, out);
    }
}

impl StreamTranslator for Stream {
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if matches!(self.phase, Phase::Failed | Phase::Closed) {
            return Vec::new();
        }
        let events = self.events.feed(chunk);
        let mut out = self.translate(events);
        if self.events.overflowed() && !matches!(self.phase, Phase::Ended | Phase::Failed | Phase::Closed) {
            out.extend(super::oversized_stream_error("Anthropic"));
            self.phase = Phase::Failed;
        }
        out
    }

    /// A stream cut short still ends as OpenAI's do: a finish chunk if none was sent, then
    /// `[DONE]`.
    fn finish(&mut self) -> Vec<u8> {
        if matches!(self.phase, Phase::Failed | Phase::Closed) {
            return Vec::new();
        }
        let events = self.events.finish();
        let mut out = self.translate(events);
        match self.phase {
            Phase::Failed | Phase::Closed => return out,
            Phase::Waiting | Phase::Answering => self.end(&mut out),
            Phase::Ended => {}
        }
        out.extend_from_slice(sse::DONE);
        self.phase = Phase::Closed;
        out
    }
}


#[cfg(test)]
mod tests {
    use super::super::{Auth, Format};
    use super::*;

    const CONVERSATION_REQUEST: &str = include_str!("fixtures/anthropic/request_conversation.openai.json");
    const CONVERSATION_TRANSLATED: &str = include_str!("fixtures/anthropic/request_conversation.anthropic.json");
    const TOOLS_REQUEST: &str = include_str!("fixtures/anthropic/request_tools.openai.json");
    const TOOLS_TRANSLATED: &str = include_str!("fixtures/anthropic/request_tools.anthropic.json");
    const TEXT_ANSWER: &str = include_str!("fixtures/anthropic/answer_text.anthropic.json");
    const TEXT_ANSWER_TRANSLATED: &str = include_str!("fixtures/anthropic/answer_text.openai.json");
    const TOOL_ANSWER: &str = include_str!("fixtures/anthropic/answer_tool_use.anthropic.json");
    const TOOL_ANSWER_TRANSLATED: &str = include_str!("fixtures/anthropic/answer_tool_use.openai.json");
    const TEXT_STREAM: &str = include_str!("fixtures/anthropic/stream_text.anthropic.sse");
    const TEXT_STREAM_TRANSLATED: &str = include_str!("fixtures/anthropic/stream_text.openai.sse");
    const TOOL_STREAM: &str = include_str!("fixtures/anthropic/stream_tool_use.anthropic.sse");
    const TOOL_STREAM_TRANSLATED: &str = include_str!("fixtures/anthropic/stream_tool_use.openai.sse");
    const ERROR_STREAM: &str = include_str!("fixtures/anthropic/stream_error.anthropic.sse");
    const ERROR_STREAM_TRANSLATED: &str = include_str!("fixtures/anthropic/stream_error.openai.sse");

    const MODEL: &str = "claude-sonnet-4-5";

    fn context(include_usage: bool) -> AnswerContext {
        AnswerContext { id: "chatcmpl-llmf1".into(), created: 1_700_000_000, model: MODEL.into(), include_usage }
    }

    fn translate(body: &str) -> Result<Value, Unsupported> {
        let request = ChatRequest::parse(body.as_bytes()).unwrap();
        request_with(&request, &FormatOptions::default())
    }

    fn request_with(chat: &ChatRequest, options: &FormatOptions) -> Result<Value, Unsupported> {
        request(chat, MODEL, options).map(|bytes| serde_json::from_slice(&bytes).unwrap())
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn refusal(body: Value) -> String {
        match translate(&body.to_string()) {
            Err(Unsupported(why)) => why,
            Ok(translated) => panic!("expected a refusal, got {translated}"),
        }
    }

    #[test]
    fn path_is_messages_under_the_base_path() {
        let provider = Provider {
            name: "claude".into(),
            format: Format::Anthropic,
            host: "api.anthropic.com".into(),
            base_path: DEFAULT_BASE_PATH.into(),
            auth: Auth::new(Format::Anthropic.default_auth_style(), "k".into()),
            models: HashMap::new(),
            api_version: None,
            options: FormatOptions::default(),
            serves_responses: false,
        };
        assert_eq!(provider.chat_path("ignored", true), "/v1/messages");
        assert_eq!(provider.auth.header_name(), Some("x-api-key"));
        assert_eq!(provider.format_headers(), vec![("anthropic-version", "2023-06-01".to_string())]);
    }

    // ------------------------------------------------------------ request

    #[test]
    fn golden_conversation_with_system_prompt_images_and_sampling() {
        assert_eq!(translate(CONVERSATION_REQUEST).unwrap(), json(CONVERSATION_TRANSLATED));
    }

    #[test]
    fn golden_tools_calls_and_results() {
        assert_eq!(translate(TOOLS_REQUEST).unwrap(), json(TOOLS_TRANSLATED));
    }

    #[test]
    fn max_tokens_is_always_sent_and_unset_parameters_are_not() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let options = FormatOptions { default_max_tokens: 1234, ..FormatOptions::default() };
        let translated = request_with(&ChatRequest::parse(body.to_string().as_bytes()).unwrap(), &options).unwrap();
        assert_eq!(
            translated,
            json!({"model": MODEL, "max_tokens": 1234, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
        );
        let legacy = json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(translate(&legacy.to_string()).unwrap()["max_tokens"], 9);
        let both = json!({"model": "m", "max_tokens": 9, "max_completion_tokens": 7, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(translate(&both.to_string()).unwrap()["max_tokens"], 7);
    }

    #[test]
    fn a_conversation_that_does_not_open_with_the_user_gets_an_opening_turn() {
        let greeting = json!({"model": "m", "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Tell me a joke."}]});
        let translated = translate(&greeting.to_string()).unwrap();
        assert_eq!(
            translated["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": OPENING_USER_TURN}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello! How can I help?"}]},
                {"role": "user", "content": [{"type": "text", "text": "Tell me a joke."}]}])
        );
        let only_system = json!({"model": "m", "messages": [{"role": "system", "content": "Say hi."}]});
        let translated = translate(&only_system.to_string()).unwrap();
        assert_eq!(translated["system"], "Say hi.");
        assert_eq!(translated["messages"], json!([{"role": "user", "content": [{"type": "text", "text": OPENING_USER_TURN}]}]));
    }

    #[test]
    fn empty_text_is_left_out_and_a_final_assistant_turn_loses_trailing_whitespace() {
        let body = json!({"model": "m", "messages": [
            {"role": "system", "content": "  "},
            {"role": "user", "content": "Question?"},
            {"role": "user", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": " \n"}]},
            {"role": "assistant", "content": "The answer is "}]});
        let translated = translate(&body.to_string()).unwrap();
        assert!(translated.get("system").is_none());
        assert_eq!(
            translated["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Question?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "The answer is"}]}])
        );
    }

    #[test]
    fn tool_results_lead_their_user_turn() {
        let body = json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "user", "content": "hurry"},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]});
        let translated = translate(&body.to_string()).unwrap();
        assert_eq!(
            translated["messages"][2],
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                {"type": "text", "text": "hurry"}]})
        );
    }

    #[test]
    fn tool_choice_modes_and_parallel_calls() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        let cases = [
            (json!(null), json!(null), Value::Null),
            (json!("auto"), json!(null), json!({"type": "auto"})),
            (json!("required"), json!(null), json!({"type": "any"})),
            (json!("none"), json!(null), json!({"type": "none"})),
            (json!("none"), json!(false), json!({"type": "none"})),
            (json!({"type": "function", "function": {"name": "f"}}), json!(null), json!({"type": "tool", "name": "f"})),
            (json!(null), json!(false), json!({"type": "auto", "disable_parallel_tool_use": true})),
            (json!(null), json!(true), Value::Null),
            (json!("required"), json!(false), json!({"type": "any", "disable_parallel_tool_use": true})),
        ];
        for (choice, parallel, expected) in cases {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools});
            if !choice.is_null() {
                body["tool_choice"] = choice.clone();
            }
            if !parallel.is_null() {
                body["parallel_tool_calls"] = parallel.clone();
            }
            let translated = translate(&body.to_string()).unwrap();
            assert_eq!(translated.get("tool_choice").cloned().unwrap_or(Value::Null), expected, "{choice} {parallel}");
        }
        let without_tools = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required", "parallel_tool_calls": false});
        let translated = translate(&without_tools.to_string()).unwrap();
        assert!(translated.get("tool_choice").is_none() && translated.get("tools").is_none());
    }

    #[test]
    fn temperature_is_capped_at_anthropics_maximum() {
        for (asked, sent) in [(0.0, 0.0), (0.7, 0.7), (1.0, 1.0), (1.6, 1.0), (2.0, 1.0)] {
            let body = json!({"model": "m", "temperature": asked, "messages": [{"role": "user", "content": "x"}]});
            assert_eq!(translate(&body.to_string()).unwrap()["temperature"], sent);
        }
    }

    #[test]
    fn top_p_is_sent_only_without_a_temperature() {
        let body = json!({"model": "m", "top_p": 0.5, "messages": [{"role": "user", "content": "x"}]});
        let translated = translate(&body.to_string()).unwrap();
        assert_eq!((translated["top_p"].clone(), translated.get("temperature")), (json!(0.5), None));
        let body = json!({"model": "m", "top_p": 0.5, "temperature": 0.3, "messages": [{"role": "user", "content": "x"}]});
        let translated = translate(&body.to_string()).unwrap();
        assert_eq!((translated["temperature"].clone(), translated.get("top_p")), (json!(0.3), None));
    }

    #[test]
    fn response_format_json_schema_becomes_the_output_format() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": false});
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "strict": true, "schema": schema}}});
        assert_eq!(translate(&body.to_string()).unwrap()["output_config"], json!({"format": {"type": "json_schema", "schema": schema}}));
        for dropped in [json!({"type": "json_object"}), json!({"type": "text"})] {
            let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": dropped});
            assert!(translate(&body.to_string()).unwrap().get("output_config").is_none());
        }
    }

    #[test]
    fn inline_pdfs_become_documents_and_jpg_is_read_as_jpeg() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}}]}]});
        assert_eq!(
            translate(&body.to_string()).unwrap()["messages"][0]["content"],
            json!([
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}}])
        );
    }

    #[test]
    fn requests_whose_meaning_cannot_be_kept_are_refused_with_the_reason() {
        let user = |content: Value| json!({"model": "m", "messages": [{"role": "user", "content": content}]});
        let with = |key: &str, value: Value| {
            let mut body = user(json!("x"));
            body[key] = value;
            body
        };
        let call = |arguments: &str| {
            json!({"model": "m", "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]}]})
        };
        let cases = [
            (call("{\"city\": \"Par"), "messages[1]: tool call `c`: arguments are not valid JSON"),
            (call("[1, 2]"), "not an object"),
            (with("n", json!(2)), "n=2"),
            (with("functions", json!([{"name": "f"}])), "`functions`"),
            (with("function_call", json!("auto")), "`function_call`"),
            (with("modalities", json!(["text", "audio"])), "audio output"),
            (with("stop", json!(["\n"])), "non-whitespace"),
            (with("tools", json!([{"type": "custom", "function": {"name": "g"}}])), "only function tools"),
            (with("tools", json!([{"type": "function", "function": {"name": "g", "parameters": {"type": "string"}}}])), "object schema"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes",
                    "tools": [{"type": "function", "function": {"name": "g"}}]}),
                "tool_choice `sometimes`",
            ),
            (with("response_format", json!({"type": "json_schema", "json_schema": {"name": "x"}})), "without a `schema`"),
            (with("response_format", json!({"type": "yaml"})), "not one of text"),
            (user(json!([{"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}])), "audio input"),
            (user(json!([{"type": "file", "file": {"file_id": "file-abc"}}])), "OpenAI file ids"),
            (user(json!([{"type": "file", "file": {"file_data": "data:text/csv;base64,YQ=="}}])), "application/pdf"),
            (user(json!([{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}])), "not base64"),
            (user(json!([{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAA="}}])), "image type `image/tiff`"),
            (json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "1"}]}), "`function` role"),
            (json!({"model": "m", "messages": [{"role": "tool", "content": "1"}]}), "without `tool_call_id`"),
            (
                json!({"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
                "system message can only carry text",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
                "assistant message can only carry text",
            ),
        ];
        for (body, expected) in cases {
            let why = refusal(body.clone());
            assert!(why.contains(expected), "{body}: {why:?} should mention {expected:?}");
        }
        // Parameters kept as OpenAI allows them are no reason to refuse.
        let body = with("n", json!(1));
        assert!(translate(&body.to_string()).is_ok());
    }

    // ------------------------------------------------------------ answer

    fn answer_json(body: &str, include_usage: bool) -> Value {
        serde_json::from_slice(&answer(body.as_bytes(), &context(include_usage)).unwrap()).unwrap()
    }

    #[test]
    fn golden_text_answer_without_thinking() {
        assert_eq!(answer_json(TEXT_ANSWER, false), json(TEXT_ANSWER_TRANSLATED));
    }

    #[test]
    fn golden_tool_use_answer() {
        let translated = answer_json(TOOL_ANSWER, false);
        assert_eq!(translated, json(TOOL_ANSWER_TRANSLATED));
        let completion: ChatCompletion = serde_json::from_value(translated).unwrap();
        let calls = completion.choices[0].message.tool_calls.as_ref().unwrap();
        let arguments: Value = serde_json::from_str(&calls[1].function.arguments).unwrap();
        assert_eq!(arguments, json!({"city": "서울"}));
    }

    #[test]
    fn every_stop_reason_has_a_finish_reason() {
        let cases = [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("pause_turn", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("a_reason_from_the_future", "stop"),
        ];
        for (stop_reason, finish_reason) in cases {
            let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "text", "text": "x"}],
                "stop_reason": stop_reason, "usage": {"input_tokens": 1, "output_tokens": 1}});
            assert_eq!(answer_json(&body.to_string(), false)["choices"][0]["finish_reason"], finish_reason, "{stop_reason}");
        }
    }

    #[test]
    fn a_tool_call_alone_has_null_content_and_an_empty_answer_has_empty_content() {
        let body = json!({"id": "msg_1", "type": "message", "content": [{"type": "tool_use", "id": "toolu_1", "name": "ping", "input": {}}], "stop_reason": null});
        let translated = answer_json(&body.to_string(), false);
        assert_eq!(translated["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(translated["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{}");
        assert_eq!(translated["choices"][0]["finish_reason"], "tool_calls");
        assert!(translated.get("usage").is_none());

        let empty = json!({"type": "message", "content": [], "stop_reason": "end_turn"});
        let translated = answer_json(&empty.to_string(), false);
        assert_eq!(translated["choices"][0]["message"]["content"], "");
        assert_eq!(translated["id"], "chatcmpl-llmf1");
    }

    #[test]
    fn usage_counts_cached_input_and_survives_absurd_numbers() {
        let usage = |usage: Value| {
            let body = json!({"id": "msg_1", "type": "message", "content": [], "stop_reason": "end_turn", "usage": usage});
            answer_json(&body.to_string(), false)["usage"].clone()
        };
        assert_eq!(
            usage(json!({"input_tokens": 10, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30, "output_tokens": 4})),
            json!({"prompt_tokens": 60, "completion_tokens": 4, "total_tokens": 64})
        );
        assert_eq!(
            usage(json!({"input_tokens": u64::MAX, "cache_read_input_tokens": u64::MAX, "output_tokens": u64::MAX})),
            json!({"prompt_tokens": u64::MAX, "completion_tokens": u64::MAX, "total_tokens": u64::MAX})
        );
        let absurd = json!({"input_tokens": 1e300, "output_tokens": -3, "cache_read_input_tokens": "7"});
        assert_eq!(usage(absurd), json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}));
    }

    #[test]
    fn unreadable_answers_are_errors_not_panics() {
        let bodies: [&[u8]; 8] = [
            b"",
            b"not json",
            b"{\"id\": \"msg_1\", \"content\": [",
            b"[1, 2, 3]",
            b"{\"type\": \"error\", \"error\": {\"type\": \"api_error\", \"message\": \"boom\"}}",
            b"{\"type\": \"message\", \"content\": [{\"type\": \"tool_use\", \"name\": \"no id\"}]}",
            b"{\"type\": \"message\", \"content\": \"text instead of blocks\"}",
            &[0xff, 0xfe, 0x00, 0x7b],
        ];
        for body in bodies {
            assert!(answer(body, &context(false)).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    // ------------------------------------------------------------ errors

    fn error_json(status: u16, body: &[u8]) -> Value {
        serde_json::from_slice(&error(status, body)).unwrap()
    }

    #[test]
    fn anthropic_errors_keep_their_message_and_name_their_type_as_the_code() {
        let cases = [
            (400, "invalid_request_error", "messages: roles must alternate", "invalid_request_error"),
            (401, "authentication_error", "invalid x-api-key", "authentication_error"),
            (402, "billing_error", "Your credit balance is too low", "insufficient_quota"),
            (403, "permission_error", "Your API key does not have permission", "permission_error"),
            (404, "not_found_error", "model: claude-nope", "invalid_request_error"),
            (413, "request_too_large", "Request exceeds the maximum size", "invalid_request_error"),
            (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", "rate_limit_error"),
            (500, "api_error", "Internal server error", "api_error"),
            (504, "timeout_error", "Request timed out", "api_error"),
            (529, "overloaded_error", "Overloaded", "api_error"),
            (418, "teapot_error", "a type from the future", "api_error"),
            (422, "unprocessable_error", "a 4xx type from the future", "invalid_request_error"),
        ];
        for (status, kind, message, openai_type) in cases {
            let body = json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"});
            assert_eq!(
                error_json(status, body.to_string().as_bytes()),
                json!({"error": {"message": message, "type": openai_type, "param": null, "code": kind}}),
                "{status} {kind}"
            );
        }
    }

    #[test]
    fn error_bodies_that_are_not_anthropics_still_become_openai_errors() {
        let html = b"<html><body><h1>413 Request Entity Too Large</h1></body></html>";
        assert_eq!(
            error_json(413, html),
            json!({"error": {"message": format!("Anthropic answered HTTP 413: {}", String::from_utf8_lossy(html)),
                "type": "invalid_request_error", "param": null, "code": null}})
        );
        assert_eq!(error_json(502, b"")["error"]["message"], "Anthropic answered HTTP 502 with no body");
        assert_eq!(error_json(401, br#"{"error": "bad key"}"#)["error"], json!({"message": "bad key", "type": "authentication_error", "param": null, "code": null}));
        assert_eq!(error_json(500, br#"{"error": {"type": "api_error"}}"#)["error"]["message"], "Anthropic answered HTTP 500");
        let long = "é".repeat(5000);
        let message = error_json(503, long.as_bytes())["error"]["message"].as_str().unwrap().to_string();
        assert!(message.ends_with('…') && message.chars().count() < 400, "{message}");
        for garbage in [&b"\xff\xfe{"[..], b"{\"error\": 12}", b"[]", b"null", b"{\"type\": \"error\""] {
            assert_eq!(error_json(500, garbage)["error"]["type"], "api_error");
        }
    }

    // ------------------------------------------------------------ stream

    fn translate_whole(stream: &str, include_usage: bool) -> Vec<u8> {
        let mut translator = Stream::new(context(include_usage));
        let mut out = translator.feed(stream.as_bytes());
        out.extend(translator.finish());
        out
    }

    /// The data of each event of an OpenAI stream.
    fn events(out: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.ends_with("\n\n"), "{text}");
        text.split_terminator("\n\n").map(|event| event.strip_prefix("data: ").unwrap().to_string()).collect()
    }

    fn read_chunks(out: &[u8]) -> Vec<ChatChunk> {
        let events = events(out);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        events[..events.len() - 1].iter().map(|data| serde_json::from_str(data).unwrap()).collect()
    }

    #[test]
    fn golden_text_stream() {
        let out = translate_whole(TEXT_STREAM, true);
        assert_eq!(String::from_utf8(out.clone()).unwrap(), TEXT_STREAM_TRANSLATED);
        let chunks = read_chunks(&out);
        assert!(chunks.iter().all(|c| c.id == "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL" && c.created == 1_700_000_000 && c.model == MODEL));
        assert_eq!(chunks[0].choices[0].delta, Delta::role());
        let text: String = chunks.iter().flat_map(|c| &c.choices).filter_map(|c| c.delta.content.clone()).collect();
        assert_eq!(text, "안녕하세요! 파리는 오늘 맑아요 ☀️🗼\nEnjoy \"the\" trip.");
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish.choices[0].finish_reason, Some(FinishReason::Stop));
        let usage = chunks.last().unwrap();
        assert!(usage.choices.is_empty());
        assert_eq!(usage.usage, Some(Usage::new(37, 15)));
    }

    #[test]
    fn golden_tool_use_stream_counts_tool_calls_not_blocks() {
        let out = translate_whole(TOOL_STREAM, false);
        assert_eq!(String::from_utf8(out.clone()).unwrap(), TOOL_STREAM_TRANSLATED);
        let chunks = read_chunks(&out);
        assert!(chunks.iter().all(|c| c.usage.is_none() && c.choices.len() == 1));
        let mut calls: Vec<(String, String, String)> = Vec::new();
        for delta in chunks.iter().filter_map(|c| c.choices[0].delta.tool_calls.as_ref()).flatten() {
            let index = delta.index as usize;
            if let Some(id) = &delta.id {
                assert_eq!(index, calls.len());
                calls.push((id.clone(), delta.function.name.clone().unwrap(), String::new()));
            }
            calls[index].2.push_str(delta.function.arguments.as_deref().unwrap_or_default());
        }
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].0.as_str(), calls[0].1.as_str()), ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"));
        assert_eq!(
            serde_json::from_str::<Value>(&calls[0].2).unwrap(),
            json!({"location": "San Francisco, CA", "note": "날씨 🌧", "unit": "fahrenheit"})
        );
        assert_eq!((calls[1].1.as_str(), calls[1].2.as_str()), ("get_time", "{}"));
        let text: String = chunks.iter().filter_map(|c| c.choices[0].delta.content.clone()).collect();
        assert_eq!(text, "Okay, let's check the weather for San Francisco, CA:");
        assert_eq!(chunks.last().unwrap().choices[0].finish_reason, Some(FinishReason::ToolCalls));
    }

    #[test]
    fn golden_error_stream_ends_at_the_error() {
        let mut translator = Stream::new(context(true));
        let mut out = translator.feed(ERROR_STREAM.as_bytes());
        out.extend(translator.finish());
        assert_eq!(String::from_utf8(out.clone()).unwrap(), ERROR_STREAM_TRANSLATED);
        let events = events(&out);
        let error: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_eq!(error, json!({"error": {"message": "Overloaded", "type": "api_error", "param": null, "code": "overloaded_error"}}));
        assert!(!out.ends_with(sse::DONE));
        assert!(translator.feed(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n").is_empty());
        assert!(translator.finish().is_empty());
    }

    #[test]
    fn a_stream_cut_short_still_closes_once() {
        // Cut inside the third text delta: the complete events are translated, the rest is not.
        let cut = TEXT_STREAM.find("오늘").unwrap();
        let mut translator = Stream::new(context(true));
        let mut out = translator.feed(&TEXT_STREAM.as_bytes()[..cut]);
        out.extend(translator.finish());
        let chunks = read_chunks(&out);
        let finishes: Vec<_> = chunks.iter().flat_map(|c| &c.choices).filter_map(|c| c.finish_reason).collect();
        assert_eq!(finishes, vec![FinishReason::Stop]);
        let text: String = chunks.iter().flat_map(|c| &c.choices).filter_map(|c| c.delta.content.clone()).collect();
        assert_eq!(text, "안녕하세요! 파리는 ");
        assert_eq!(chunks.last().unwrap().usage, Some(Usage::new(37, 1)));
        assert!(translator.finish().is_empty(), "[DONE] is sent once");

        // Cut after message_delta: its stop reason is the one given.
        let cut = TOOL_STREAM.find("event: message_stop").unwrap();
        let out = translate_whole(&TOOL_STREAM[..cut], false);
        let chunks = read_chunks(&out);
        assert_eq!(chunks.last().unwrap().choices[0].finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(chunks.iter().filter(|c| c.choices[0].finish_reason.is_some()).count(), 1);
    }

    #[test]
    fn an_empty_stream_still_answers_in_order() {
        let out = translate_whole("", false);
        let chunks = read_chunks(&out);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].choices[0].delta, Delta::role());
        assert_eq!(chunks[0].id, "chatcmpl-llmf1");
        assert_eq!(chunks[1].choices[0].finish_reason, Some(FinishReason::Stop));
    }

    #[test]
    fn a_last_event_without_its_blank_line_is_still_read() {
        let whole = translate_whole(TEXT_STREAM, true);
        let unterminated = translate_whole(TEXT_STREAM.trim_end(), true);
        assert_eq!(unterminated, whole);
    }

    #[test]
    fn any_split_of_a_stream_translates_the_same() {
        for (stream, include_usage) in [(TEXT_STREAM, true), (TOOL_STREAM, false), (ERROR_STREAM, true), (TOOL_STREAM, true)] {
            let whole = translate_whole(stream, include_usage);
            for seed in 0..500 {
                let out = crate::provider::translate_in_pieces(&mut Stream::new(context(include_usage)), stream.as_bytes(), seed);
                assert_eq!(out, whole, "seed {seed}");
            }
        }
    }

    #[test]
    fn garbage_never_panics_and_never_breaks_the_stream_shape() {
        let garbage: Vec<Vec<u8>> = vec![
            b"data: {not json\n\n".to_vec(),
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\n".to_vec(),
            b"data: {\"type\":\"content_block_delta\",\"index\":18446744073709551616,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n".to_vec(),
            b"data: {\"type\":\"content_block_delta\",\"index\":-1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\"}}\n\n".to_vec(),
            b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":1e999}}\n\n".to_vec(),
            b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":18446744073709551615,\"cache_read_input_tokens\":18446744073709551615,\"output_tokens\":18446744073709551615}}}\n\n".to_vec(),
            b"data: {\"type\":\"content_block_start\",\"index\":5,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"n\",\"input\":{\"a\":1}}}\n\n".to_vec(),
            b"data: {\"type\":\"content_block_stop\",\"index\":5}\n\n".to_vec(),
            b"data: [DONE]\n\n".to_vec(),
            b"\xff\xfe\x00\r\r\n\n".to_vec(),
            b"data: {\"type\":\"error\",\"error\":\"plain\"}".to_vec(),
            (0..=255u8).collect(),
        ];
        for (i, bytes) in garbage.iter().enumerate() {
            let mut translator = Stream::new(context(true));
            let mut out = translator.feed(bytes);
            out.extend(translator.finish());
            let text = String::from_utf8(out).unwrap();
            let last = text.split_terminator("\n\n").last().unwrap();
            assert!(last == "data: [DONE]" || last.starts_with("data: {\"error\""), "{i}: {text}");
            for data in text.split_terminator("\n\n").filter(|e| *e != "data: [DONE]" && !e.starts_with("data: {\"error\"")) {
                let _: ChatChunk = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            }
        }
        // A tool use whose input arrives whole, in its start event, keeps it.
        let out = translate_whole(std::str::from_utf8(&garbage[6]).unwrap(), false);
        assert!(String::from_utf8(out).unwrap().contains(r#""arguments":"{\"a\":1}""#));
        // The error given as a bare string keeps its text.
        let out = translate_whole(std::str::from_utf8(&garbage[10]).unwrap(), false);
        assert!(String::from_utf8(out).unwrap().contains(r#""message":"plain""#));
    }
}
