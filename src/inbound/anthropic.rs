//! Anthropic Messages in (`POST /v1/messages`, Claude Code and the Anthropic SDKs): a client's
//! Messages request as an OpenAI chat request for providers that are not Anthropic's, and their
//! answers, streams and errors (in OpenAI's form by then) back in Anthropic's.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::chat::{self, BadRequest};
use crate::provider::openai::AnswerContext;
use crate::provider::Unsupported;
use crate::sse::{Event, EventReader};

// ---------------------------------------------------------------- the router's look

/// What the router role needs of a Messages request: its model and whether it streams. Anthropic
/// requires `max_tokens`, so a request without it is refused before any provider sees it.
pub fn inspect(body: &[u8]) -> Result<chat::ChatRequest<'_>, BadRequest> {
    let request = chat::inspect(body)?;
    #[derive(Deserialize)]
    struct Limit {
        #[serde(default)]
        max_tokens: Option<Value>,
    }
    let limit: Limit = serde_json::from_slice(body).map_err(|e| BadRequest::NotJson(e.to_string()))?;
    if limit.max_tokens.as_ref().and_then(Value::as_u64).is_none_or(|n| n < 1) {
        return Err(BadRequest::NoMaxTokens);
    }
    Ok(request)
}

// ---------------------------------------------------------------- token count

/// What an image or a document counts for when the gateway estimates: Anthropic's count for an
/// image of about 1.15 megapixels, the largest it takes without resizing.
const ATTACHMENT_TOKENS: u64 = 1_600;
/// Each message's role and framing.
const MESSAGE_TOKENS: u64 = 3;

/// The input tokens of a Messages request (a `count_tokens` body) when no Anthropic-format
/// provider can count them: about a token per 4 bytes of text, tool definition and tool input;
/// an image or a document counts as one large image. An estimate, answered as one.
pub fn estimate_input_tokens(body: &[u8]) -> u64 {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    let (mut text_bytes, mut tokens) = content_size(request.get("system"));
    if let Some(Value::Array(messages)) = request.get("messages") {
        for message in messages {
            let (bytes, attachments) = content_size(message.get("content"));
            text_bytes += bytes;
            tokens += MESSAGE_TOKENS + attachments;
        }
    }
    if let Some(Value::Array(tools)) = request.get("tools") {
        text_bytes += tools.iter().map(|tool| tool.to_string().len() as u64).sum::<u64>();
    }
    tokens + text_bytes.div_ceil(4)
}

/// A system prompt's or a message's text bytes, and the tokens of its images and documents.
fn content_size(content: Option<&Value>) -> (u64, u64) {
    let blocks = match content {
        Some(Value::String(text)) => return (text.len() as u64, 0),
        Some(Value::Array(blocks)) => blocks,
        _ => return (0, 0),
    };
    let (mut text_bytes, mut attachments) = (0, 0);
    for block in blocks {
        text_bytes += match (kind(block), block.get("content")) {
            ("image" | "document", _) => {
                attachments += ATTACHMENT_TOKENS;
                0
            }
            ("text", _) => text_field(block, "text").map_or(0, str::len),
            ("thinking", _) => text_field(block, "thinking").map_or(0, str::len),
            ("tool_result", Some(Value::String(text))) => text.len(),
            ("tool_result", Some(inner)) => inner.to_string().len(),
            _ => block.to_string().len(),
        } as u64;
    }
    (text_bytes, attachments)
}

/// The answer of `count_tokens`, in Anthropic's shape.
pub fn token_count_body(input_tokens: u64) -> Vec<u8> {
    json!({"input_tokens": input_tokens}).to_string().into_bytes()
}

// ---------------------------------------------------------------- errors

/// An error as Anthropic sends it (`{"type":"error","error":{"type":..,"message":..}}`), which
/// the Anthropic SDKs raise by status.
pub fn error_body(kind: &str, message: &str) -> Vec<u8> {
    json!({"type": "error", "error": {"type": kind, "message": message}}).to_string().into_bytes()
}

/// Anthropic's error type for an HTTP status.
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        400 | 405 | 409 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An OpenAI error body (a provider's, or one a translation wrote) in Anthropic's shape; the
/// status decides the type, as it does for Anthropic's SDKs.
pub fn error_from_openai(status: u16, body: &[u8]) -> Vec<u8> {
    let value = serde_json::from_slice::<Value>(body).ok();
    let error = value.as_ref().and_then(|v| v.get("error"));
    let message = match error {
        Some(Value::String(message)) => message.clone(),
        Some(error) => error.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| error.to_string()),
        None => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(300).collect();
            if text.is_empty() { format!("the provider answered HTTP {status}") } else { format!("the provider answered HTTP {status}: {text}") }
        }
    };
    error_body(error_type_for_status(status), &message)
}

// ---------------------------------------------------------------- request

// Read as a JSON tree rather than typed models: the typed (tagged and untagged) models cost the
// module more than 100 KB of deserializer code, and it must fit a 1 MiB ConfigMap.

/// Fields with no equivalent in a chat request whose loss would change the answer: refused.
const REFUSED_FIELDS: &[&str] = &["container", "mcp_servers"];

fn kind(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or_default()
}

fn text_field<'v>(value: &'v Value, field: &str) -> Option<&'v str> {
    value.get(field).and_then(Value::as_str)
}

/// Content is a string or an array of blocks; anything else is not a Messages request.
enum Content<'v> {
    Text(&'v str),
    Blocks(&'v [Value]),
}

fn content<'v>(value: Option<&'v Value>, field: &str) -> Result<Content<'v>, String> {
    match value {
        Some(Value::String(text)) => Ok(Content::Text(text)),
        Some(Value::Array(blocks)) => Ok(Content::Blocks(blocks)),
        _ => Err(format!("`{field}` must be a string or an array of content blocks")),
    }
}

/// The client's Messages request as an OpenAI chat request (the model is still the client's:
/// the attempt maps it as it does for chat requests). `stream_options.include_usage` is always
/// set on a stream: Anthropic's `message_delta` reports the usage.
pub fn chat_request(body: &[u8]) -> Result<(Vec<u8>, bool), Unsupported> {
    let not_messages = |why: &str| Unsupported(format!("not a Messages request: {why}"));
    let request: Value = serde_json::from_slice(body).map_err(|e| not_messages(&e.to_string()))?;
    let model = text_field(&request, "model").ok_or_else(|| not_messages("`model` must be a string"))?;
    let max_tokens = request.get("max_tokens").and_then(Value::as_u64).ok_or_else(|| not_messages("`max_tokens` must be a positive integer"))?;
    let turns = request.get("messages").and_then(Value::as_array).ok_or_else(|| not_messages("`messages` must be an array"))?;
    if let Some(field) = REFUSED_FIELDS.iter().find(|f| request.get(**f).is_some_and(|v| !v.is_null())) {
        return Err(Unsupported(format!("`{field}` is Anthropic's own and cannot be translated")));
    }
    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut messages = Vec::new();
    if let Some(system) = request.get("system").filter(|s| !s.is_null()) {
        let text = system_text(system)?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    for (at, turn) in turns.iter().enumerate() {
        let converted = match text_field(turn, "role") {
            Some("user") => content(turn.get("content"), "content").and_then(user_messages),
            Some("assistant") => content(turn.get("content"), "content").and_then(assistant_message).map(|m| m.into_iter().collect()),
            _ => Err("`role` must be user or assistant".into()),
        };
        messages.extend(converted.map_err(|why| Unsupported(format!("messages[{at}]: {why}")))?);
    }
    let mut chat = Map::new();
    chat.insert("model".into(), model.into());
    chat.insert("messages".into(), Value::Array(messages));
    chat.insert("max_tokens".into(), max_tokens.into());
    if let Some(stop) = request.get("stop_sequences").and_then(Value::as_array).filter(|s| !s.is_empty()) {
        chat.insert("stop".into(), Value::Array(stop.clone()));
    }
    for sampling in ["temperature", "top_p"] {
        if let Some(value) = request.get(sampling).filter(|v| v.is_number()) {
            chat.insert(sampling.into(), value.clone());
        }
    }
    if stream {
        chat.insert("stream".into(), true.into());
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(tools) = request.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty()) {
        let tools = tools.iter().map(tool).collect::<Result<Vec<_>, _>>()?;
        chat.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = request.get("tool_choice").filter(|c| !c.is_null()) {
            let (choice, parallel) = tool_choice(choice)?;
            chat.insert("tool_choice".into(), choice);
            if parallel == Some(false) {
                chat.insert("parallel_tool_calls".into(), false.into());
            }
        }
    }
    if let Some(user) = request.get("metadata").and_then(|m| text_field(m, "user_id")) {
        chat.insert("user".into(), user.into());
    }
    let bytes = serde_json::to_vec(&Value::Object(chat)).map_err(|e| Unsupported(format!("the translated request could not be written: {e}")))?;
    Ok((bytes, stream))
}

/// The text of text blocks, joined with a blank line; `None` when a block is not text.
fn block_texts(blocks: &[Value]) -> Option<String> {
    let texts: Option<Vec<&str>> = blocks.iter().map(|b| if kind(b) == "text" { text_field(b, "text") } else { None }).collect();
    texts.map(|texts| texts.join("\n\n"))
}

fn system_text(system: &Value) -> Result<String, Unsupported> {
    match content(Some(system), "system").map_err(Unsupported)? {
        Content::Text(text) => Ok(text.to_string()),
        Content::Blocks(blocks) => block_texts(blocks).ok_or_else(|| Unsupported("system: only text blocks can be translated".into())),
    }
}

fn image_part(block: &Value) -> Result<Value, String> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let url = match (kind(source), text_field(source, "media_type"), text_field(source, "data"), text_field(source, "url")) {
        ("base64", Some(media_type), Some(data), _) => format!("data:{media_type};base64,{data}"),
        ("url", _, _, Some(url)) => url.to_string(),
        _ => return Err("an image source other than base64 or url (Anthropic file ids are Anthropic's own)".into()),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A document: a PDF as OpenAI's file part, plain text as text; others cannot be carried.
fn document_part(block: &Value) -> Result<Value, String> {
    let source = block.get("source").unwrap_or(&Value::Null);
    match (kind(source), text_field(source, "media_type"), text_field(source, "data")) {
        ("base64", Some("application/pdf"), Some(data)) => {
            Ok(json!({"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{data}")}}))
        }
        ("text", _, Some(data)) => Ok(json!({"type": "text", "text": data})),
        _ => Err("a document other than a base64 PDF or plain text".into()),
    }
}

fn text_part(block: &Value) -> Result<Value, String> {
    let text = text_field(block, "text").ok_or("a text block without `text`")?;
    Ok(json!({"type": "text", "text": text}))
}

/// A user turn: its tool results first, each a `tool` message (OpenAI wants them right after
/// the assistant's calls), then the rest as one user message. A tool result's images (a
/// screenshot tool's) cannot be in a `tool` message: they open that user message, introduced.
fn user_messages(turn: Content) -> Result<Vec<Value>, String> {
    let blocks = match turn {
        Content::Text(text) => return Ok(vec![json!({"role": "user", "content": text})]),
        Content::Blocks(blocks) => blocks,
    };
    let mut out = Vec::new();
    let mut tool_images = Vec::new();
    let mut parts = Vec::new();
    for block in blocks {
        match kind(block) {
            "text" => parts.push(text_part(block)?),
            "image" => parts.push(image_part(block)?),
            "document" => parts.push(document_part(block)?),
            "tool_result" => {
                let id = text_field(block, "tool_use_id").ok_or("a tool_result without `tool_use_id`")?;
                let mut text = match block.get("content").filter(|c| !c.is_null()) {
                    None => String::new(),
                    Some(result) => match content(Some(result), "content")? {
                        Content::Text(text) => text.to_string(),
                        Content::Blocks(blocks) => {
                            let mut texts = Vec::new();
                            for inner in blocks {
                                match kind(inner) {
                                    "text" => texts.push(text_field(inner, "text").unwrap_or_default()),
                                    "image" => {
                                        if tool_images.is_empty() {
                                            tool_images.push(json!({"type": "text", "text": format!("(images returned by tool call {id})")}));
                                        }
                                        tool_images.push(image_part(inner)?);
                                    }
                                    _ => return Err(format!("tool result `{id}`: only text and images can be translated")),
                                }
                            }
                            texts.join("\n\n")
                        }
                    },
                };
                if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                    text = format!("[tool error] {text}");
                }
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            // The model's own reasoning, sent back by clients: no other provider reads it.
            "thinking" | "redacted_thinking" => {}
            "tool_use" => return Err("a tool_use block in a user turn".into()),
            _ => return Err("a content block other than text, image, document, tool_use, tool_result or thinking".into()),
        }
    }
    tool_images.extend(parts);
    if !tool_images.is_empty() {
        out.push(json!({"role": "user", "content": tool_images}));
    }
    Ok(out)
}

fn assistant_message(turn: Content) -> Result<Option<Value>, String> {
    let blocks = match turn {
        Content::Text(text) => return Ok(Some(json!({"role": "assistant", "content": text}))),
        Content::Blocks(blocks) => blocks,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match kind(block) {
            "text" => text.push_str(text_field(block, "text").ok_or("a text block without `text`")?),
            "tool_use" => {
                let (Some(id), Some(name)) = (text_field(block, "id"), text_field(block, "name")) else {
                    return Err("a tool_use block without `id` and `name`".into());
                };
                let arguments = match block.get("input") {
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(input) => input.to_string(),
                };
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}));
            }
            "thinking" | "redacted_thinking" => {}
            "image" | "document" | "tool_result" => return Err("an assistant turn can carry only text and tool_use".into()),
            _ => return Err("a content block other than text, tool_use or thinking".into()),
        }
    }
    if text.is_empty() && calls.is_empty() {
        return Ok(None);
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert("content".into(), if text.is_empty() { Value::Null } else { text.into() });
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(Some(Value::Object(message)))
}

fn tool(definition: &Value) -> Result<Value, Unsupported> {
    let name = text_field(definition, "name").ok_or_else(|| Unsupported("a tool without `name`".into()))?;
    if let Some(kind) = text_field(definition, "type").filter(|k| *k != "custom") {
        return Err(Unsupported(format!("tool `{name}` of type `{kind}`: only custom tools (with an input_schema) translate")));
    }
    let mut function = Map::new();
    function.insert("name".into(), name.into());
    if let Some(description) = text_field(definition, "description") {
        function.insert("description".into(), description.into());
    }
    let schema = definition.get("input_schema").filter(|s| s.is_object()).cloned().unwrap_or_else(|| json!({"type": "object"}));
    function.insert("parameters".into(), schema);
    Ok(json!({"type": "function", "function": function}))
}

fn tool_choice(choice: &Value) -> Result<(Value, Option<bool>), Unsupported> {
    let parallel = choice.get("disable_parallel_tool_use").and_then(Value::as_bool).map(|disabled| !disabled);
    let value = match (kind(choice), text_field(choice, "name")) {
        ("auto", _) => json!("auto"),
        ("any", _) => json!("required"),
        ("none", _) => json!("none"),
        ("tool", Some(name)) => json!({"type": "function", "function": {"name": name}}),
        (kind, _) => return Err(Unsupported(format!("tool_choice `{kind}` is not one of auto, any, tool (with a name), none"))),
    };
    Ok((value, parallel))
}

// ---------------------------------------------------------------- answer

/// OpenAI's token counts, as far as the answer gives them.
#[derive(Debug, Default, Clone, Copy)]
struct OpenaiUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
}

impl OpenaiUsage {
    fn read(usage: &Value) -> OpenaiUsage {
        let count = |value: Option<&Value>| value.and_then(Value::as_u64).unwrap_or(0);
        OpenaiUsage {
            prompt_tokens: count(usage.get("prompt_tokens")),
            completion_tokens: count(usage.get("completion_tokens")),
            cached_tokens: count(usage.get("prompt_tokens_details").and_then(|d| d.get("cached_tokens"))),
        }
    }

    /// Anthropic counts cached input apart from the rest.
    fn anthropic(self) -> Value {
        let cached = self.cached_tokens.min(self.prompt_tokens);
        let mut usage = Map::new();
        usage.insert("input_tokens".into(), (self.prompt_tokens - cached).into());
        if cached > 0 {
            usage.insert("cache_read_input_tokens".into(), cached.into());
        }
        usage.insert("output_tokens".into(), self.completion_tokens.into());
        Value::Object(usage)
    }
}

fn stop_reason(finish_reason: Option<&str>, called_tools: bool) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ if called_tools => "tool_use",
        _ => "end_turn",
    }
}

/// Anthropic message ids start `msg_`; an OpenAI id keeps its own text after it.
fn message_id(openai_id: Option<&str>, context: &AnswerContext) -> String {
    let id = openai_id.unwrap_or(&context.id);
    let id = id.strip_prefix("chatcmpl-").unwrap_or(id);
    if id.starts_with("msg_") { id.to_string() } else { format!("msg_{id}") }
}

/// OpenAI's arguments are JSON text; Anthropic's input is the object itself.
fn tool_input(name: &str, arguments: &str) -> Result<Value, String> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => Ok(input),
        _ => Err(format!("the arguments of tool call `{name}` are not a JSON object")),
    }
}

/// An OpenAI `chat.completion` as an Anthropic message.
pub fn answer(body: &[u8], context: &AnswerContext) -> Result<Vec<u8>, String> {
    let completion: Value = serde_json::from_slice(body).map_err(|e| format!("not a chat completion: {e}"))?;
    let choice = completion.get("choices").and_then(Value::as_array).and_then(|c| c.first()).ok_or("a chat completion without choices")?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let text = text_field(message, "content").filter(|t| !t.is_empty()).or(text_field(message, "refusal").filter(|t| !t.is_empty()));
    if let Some(text) = text {
        content.push(json!({"type": "text", "text": text}));
    }
    let calls = message.get("tool_calls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for call in calls {
        let function = call.get("function").unwrap_or(&Value::Null);
        let name = text_field(function, "name").ok_or("a tool call without a function name")?;
        let input = tool_input(name, text_field(function, "arguments").unwrap_or_default())?;
        content.push(json!({"type": "tool_use", "id": text_field(call, "id").unwrap_or_default(), "name": name, "input": input}));
    }
    let usage = OpenaiUsage::read(completion.get("usage").unwrap_or(&Value::Null)).anthropic();
    let message = json!({
        "id": message_id(text_field(&completion, "id"), context),
        "type": "message",
        "role": "assistant",
        "model": text_field(&completion, "model").unwrap_or(&context.model),
        "content": content,
        "stop_reason": stop_reason(text_field(choice, "finish_reason"), !calls.is_empty()),
        "stop_sequence": null,
        "usage": usage,
    });
    Ok(message.to_string().into_bytes())
}

// ---------------------------------------------------------------- stream

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing sent: `message_start` waits for the first chunk (its id and model).
    Waiting,
    Answering,
    /// `message_stop` (or an error event) is out: nothing follows.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text(usize),
    Tool(usize),
}

/// OpenAI `chat.completion.chunk`s translated into Anthropic's event sequence as they arrive:
/// `message_start`, per content block `content_block_start`, its deltas (`text_delta`,
/// `input_json_delta`) and `content_block_stop`, then `message_delta` (stop reason, usage) and
/// `message_stop` once the provider's stream ends.
pub struct Stream {
    context: AnswerContext,
    events: EventReader,
    phase: Phase,
    /// Content blocks so far; the next one gets this index.
    blocks: usize,
    open: Option<OpenBlock>,
    /// By OpenAI tool call index: the Anthropic block index it became.
    tools: BTreeMap<u64, usize>,
    finish_reason: Option<String>,
    usage: Option<OpenaiUsage>,
}

fn event(name: &str, data: &Value) -> Vec<u8> {
    format!("event: {name}\ndata: {data}\n\n").into_bytes()
}

impl Stream {
    pub fn new(context: AnswerContext) -> Stream {
        Stream {
            context,
            events: EventReader::default(),
            phase: Phase::Waiting,
            blocks: 0,
            open: None,
            tools: BTreeMap::new(),
            finish_reason: None,
            usage: None,
        }
    }

    fn translate(&mut self, events: Vec<Event>) -> Vec<u8> {
        let mut out = Vec::new();
        for event in events {
            if self.phase == Phase::Closed {
                break;
            }
            self.on_event(&event, &mut out);
        }
        if self.events.overflowed() && self.phase != Phase::Closed {
            self.fail("the provider's stream carried an event longer than 16 MiB; the stream ends here", &mut out);
        }
        out
    }

    fn on_event(&mut self, event: &Event, out: &mut Vec<u8>) {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.end(out);
            return;
        }
        let Ok(chunk @ Value::Object(_)) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = text_field(error, "message").map_or_else(|| error.to_string(), str::to_string);
            self.fail(&message, out);
            return;
        }
        self.start(text_field(&chunk, "id"), text_field(&chunk, "model"), out);
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(OpenaiUsage::read(usage));
        }
        let Some(choice) = chunk.get("choices").and_then(Value::as_array).and_then(|c| c.first()) else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        for text in [text_field(delta, "content"), text_field(delta, "refusal")].into_iter().flatten().filter(|t| !t.is_empty()) {
            self.text(text, out);
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            self.tool_call(call, out);
        }
        if let Some(reason) = text_field(choice, "finish_reason") {
            self.finish_reason = Some(reason.to_string());
        }
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<u8>) {
        if self.phase != Phase::Waiting {
            return;
        }
        self.phase = Phase::Answering;
        let message = json!({
            "id": message_id(id, &self.context),
            "type": "message",
            "role": "assistant",
            "model": model.unwrap_or(&self.context.model),
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        out.extend(event("message_start", &json!({"type": "message_start", "message": message})));
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some(OpenBlock::Text(index) | OpenBlock::Tool(index)) = self.open.take() {
            out.extend(event("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        }
    }

    fn open_block(&mut self, block: Value, out: &mut Vec<u8>) -> usize {
        self.close_block(out);
        let index = self.blocks;
        self.blocks += 1;
        out.extend(event("content_block_start", &json!({"type": "content_block_start", "index": index, "content_block": block})));
        index
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = match self.open {
            Some(OpenBlock::Text(index)) => index,
            _ => {
                let index = self.open_block(json!({"type": "text", "text": ""}), out);
                self.open = Some(OpenBlock::Text(index));
                index
            }
        };
        let delta = json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}});
        out.extend(event("content_block_delta", &delta));
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<u8>) {
        let function = call.get("function").unwrap_or(&Value::Null);
        let at = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let index = match self.tools.get(&at) {
            Some(index) => *index,
            None => {
                let block = json!({
                    "type": "tool_use",
                    "id": text_field(call, "id").unwrap_or_default(),
                    "name": text_field(function, "name").unwrap_or_default(),
                    "input": {},
                });
                let index = self.open_block(block, out);
                self.open = Some(OpenBlock::Tool(index));
                self.tools.insert(at, index);
                index
            }
        };
        if let Some(arguments) = text_field(function, "arguments").filter(|a| !a.is_empty()) {
            let delta = json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": arguments}});
            out.extend(event("content_block_delta", &delta));
        }
    }

    /// The provider's stream ended: the last block closes, then the stop reason and usage.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.start(None, None, out);
        self.close_block(out);
        let usage = self.usage.unwrap_or_default().anthropic();
        let reason = stop_reason(self.finish_reason.as_deref(), !self.tools.is_empty());
        let delta = json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": usage});
        out.extend(event("message_delta", &delta));
        out.extend(event("message_stop", &json!({"type": "message_stop"})));
        self.phase = Phase::Closed;
    }

    /// An error mid-stream: Anthropic's `error` event, and nothing after it.
    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        out.extend(event("error", &json!({"type": "error", "error": {"type": "api_error", "message": message}})));
        self.phase = Phase::Closed;
    }
}

impl crate::provider::StreamTranslator for Stream {
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        let events = self.events.feed(chunk);
        self.translate(events)
    }

    fn finish(&mut self) -> Vec<u8> {
        let events = self.events.finish();
        let mut out = self.translate(events);
        // A stream that ended without `[DONE]` still ends in Anthropic's way.
        self.end(&mut out);
        out
    }
}

/// The model a Messages request names, for the attempt's breaker; same reader as chat's.
pub fn requested_model(body: &[u8]) -> Option<Cow<'_, str>> {
    chat::requested_model(body)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_token_estimate_counts_text_tools_and_attachments() {
        let text = "x".repeat(400);
        let plain = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#);
        assert_eq!(estimate_input_tokens(plain.as_bytes()), 100 + MESSAGE_TOKENS);
        let with_system = format!(r#"{{"model":"m","system":"{text}","messages":[{{"role":"user","content":"{text}"}}]}}"#);
        assert_eq!(estimate_input_tokens(with_system.as_bytes()), 200 + MESSAGE_TOKENS);
        let image = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{}"}}}},{{"type":"text","text":"{text}"}}]}}]}}"#,
            "A".repeat(100_000)
        );
        assert_eq!(estimate_input_tokens(image.as_bytes()), ATTACHMENT_TOKENS + 100 + MESSAGE_TOKENS, "an image is not its base64");
        let tool = r#"{"name":"get_weather","input_schema":{"type":"object"}}"#;
        let with_tool = format!(r#"{{"model":"m","tools":[{tool}],"messages":[{{"role":"user","content":"{text}"}}]}}"#);
        assert_eq!(estimate_input_tokens(with_tool.as_bytes()), (400 + tool.len() as u64).div_ceil(4) + MESSAGE_TOKENS);
        assert_eq!(estimate_input_tokens(b"not json"), 0);
        assert_eq!(token_count_body(7), br#"{"input_tokens":7}"#.to_vec());
    }
    use super::*;
    use crate::provider::StreamTranslator;
    use crate::sse;

    const CONVERSATION_REQUEST: &str = include_str!("fixtures/anthropic/request_conversation.anthropic.json");
    const CONVERSATION_TRANSLATED: &str = include_str!("fixtures/anthropic/request_conversation.openai.json");
    const TOOLS_REQUEST: &str = include_str!("fixtures/anthropic/request_tools.anthropic.json");
    const TOOLS_TRANSLATED: &str = include_str!("fixtures/anthropic/request_tools.openai.json");
    const TEXT_ANSWER: &str = include_str!("fixtures/anthropic/answer_text.openai.json");
    const TEXT_ANSWER_TRANSLATED: &str = include_str!("fixtures/anthropic/answer_text.anthropic.json");
    const TOOL_ANSWER: &str = include_str!("fixtures/anthropic/answer_tool_use.openai.json");
    const TOOL_ANSWER_TRANSLATED: &str = include_str!("fixtures/anthropic/answer_tool_use.anthropic.json");
    const TEXT_STREAM: &str = include_str!("fixtures/anthropic/stream_text.openai.sse");
    const TEXT_STREAM_TRANSLATED: &str = include_str!("fixtures/anthropic/stream_text.anthropic.sse");
    const TOOL_STREAM: &str = include_str!("fixtures/anthropic/stream_tool_use.openai.sse");
    const TOOL_STREAM_TRANSLATED: &str = include_str!("fixtures/anthropic/stream_tool_use.anthropic.sse");
    const ERROR_STREAM: &str = include_str!("fixtures/anthropic/stream_error.openai.sse");
    const ERROR_STREAM_TRANSLATED: &str = include_str!("fixtures/anthropic/stream_error.anthropic.sse");

    fn context() -> AnswerContext {
        AnswerContext { id: "chatcmpl-llmf1".into(), created: 1_700_000_000, model: "gpt-4o".into(), include_usage: true }
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn translated(body: &Value) -> Result<Value, String> {
        chat_request(body.to_string().as_bytes()).map(|(bytes, _)| serde_json::from_slice(&bytes).unwrap()).map_err(|u| u.0)
    }

    fn streamed(stream: &str) -> Vec<u8> {
        let mut translator = Stream::new(context());
        let mut out = translator.feed(stream.as_bytes());
        out.extend(translator.finish());
        out
    }

    // ------------------------------------------------------------ request

    #[test]
    fn golden_conversation_with_system_blocks_images_sampling_and_thinking_dropped() {
        let (bytes, stream) = chat_request(CONVERSATION_REQUEST.as_bytes()).unwrap();
        assert!(stream);
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), json(CONVERSATION_TRANSLATED));
    }

    #[test]
    fn golden_tools_tool_use_and_tool_results() {
        assert_eq!(translated(&json(TOOLS_REQUEST)).unwrap(), json(TOOLS_TRANSLATED));
    }

    #[test]
    fn the_translation_is_a_chat_request_every_provider_translation_reads() {
        for request in [CONVERSATION_REQUEST, TOOLS_REQUEST] {
            let (bytes, _) = chat_request(request.as_bytes()).unwrap();
            let chat = crate::provider::openai::ChatRequest::parse(&bytes).unwrap();
            assert!(chat.other.is_empty(), "only fields chat completions knows: {:?}", chat.other);
            let options = crate::provider::FormatOptions::default();
            crate::provider::gemini::request(&chat, "gemini-2.5-flash", &options).unwrap();
            // Ollama takes images only inline: the conversation's image URL is refused there.
            match crate::provider::ollama::request(&chat, "llama3.3", &options) {
                Ok(_) => assert_eq!(request, TOOLS_REQUEST),
                Err(why) => assert!(why.0.contains("not by URL"), "{why:?}"),
            }
        }
    }

    #[test]
    fn a_plain_request_sets_nothing_it_was_not_given() {
        let body = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(translated(&body).unwrap(), json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}));
        let choices = [("auto", json!("auto")), ("any", json!("required")), ("none", json!("none"))];
        for (kind, expected) in choices {
            let body = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"name": "t", "input_schema": {"type": "object"}}], "tool_choice": {"type": kind}});
            assert_eq!(translated(&body).unwrap()["tool_choice"], expected, "{kind}");
        }
    }

    #[test]
    fn what_cannot_be_carried_is_refused_naming_it() {
        let base = || json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        let with = |field: &str, value: Value| {
            let mut body = base();
            body[field] = value;
            body
        };
        let cases = [
            (with("tools", json!([{"type": "web_search_20250305", "name": "web_search"}])), "tool `web_search` of type `web_search_20250305`"),
            (with("mcp_servers", json!([{"type": "url", "url": "https://x"}])), "`mcp_servers`"),
            (with("messages", json!([{"role": "user", "content": [{"type": "search_result", "source": "s", "title": "t", "content": []}]}])), "messages[0]: a content block"),
            (with("messages", json!([{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "u"}}]}])), "messages[0]: a document"),
            (with("messages", json!([{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}])), "messages[0]: an image source"),
            (with("messages", json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "search_result", "source": "s", "title": "t", "content": []}]}]}])), "tool result `t`"),
            (with("system", json!([{"type": "image", "source": {"type": "url", "url": "u"}}])), "system: only text"),
            (with("tool_choice", json!({"type": "tool"})), "tool_choice `tool`"),
            (with("messages", json!("hi")), "not a Messages request"),
        ];
        for (body, expected) in cases {
            let mut body = body;
            if body.get("tool_choice").is_some() {
                body["tools"] = json!([{"name": "t", "input_schema": {"type": "object"}}]);
            }
            let why = translated(&body).unwrap_err();
            assert!(why.contains(expected), "{why} should name {expected}");
        }
    }

    #[test]
    fn documents_and_a_tool_results_images_find_a_place_in_the_chat_request() {
        let body = json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "shot", "name": "screenshot", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "shot", "content": [
                    {"type": "text", "text": "taken"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}}]}]});
        assert_eq!(translated(&body).unwrap()["messages"], json!([
            {"role": "assistant", "content": null, "tool_calls": [{"id": "shot", "type": "function", "function": {"name": "screenshot", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "shot", "content": "taken"},
            {"role": "user", "content": [
                {"type": "text", "text": "(images returned by tool call shot)"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER"}},
                {"type": "text", "text": "notes"}]}]));
    }

    #[test]
    fn the_router_refuses_what_anthropic_would() {
        assert!(inspect(br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#).is_ok());
        assert_eq!(inspect(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#), Err(BadRequest::NoMaxTokens));
        assert_eq!(inspect(br#"{"model":"m","max_tokens":0,"messages":[{}]}"#), Err(BadRequest::NoMaxTokens));
        assert_eq!(inspect(br#"{"model":"m","max_tokens":"5","messages":[{}]}"#), Err(BadRequest::NoMaxTokens));
        assert_eq!(inspect(br#"{"model":"m","max_tokens":5,"messages":[]}"#), Err(BadRequest::NoMessages));
        assert_eq!(inspect(br#"{"max_tokens":5,"messages":[{}]}"#), Err(BadRequest::NoModel));
    }

    // ------------------------------------------------------------ answer and errors

    #[test]
    fn golden_answers_text_and_tool_use() {
        assert_eq!(json(&String::from_utf8(answer(TEXT_ANSWER.as_bytes(), &context()).unwrap()).unwrap()), json(TEXT_ANSWER_TRANSLATED));
        assert_eq!(json(&String::from_utf8(answer(TOOL_ANSWER.as_bytes(), &context()).unwrap()).unwrap()), json(TOOL_ANSWER_TRANSLATED));
    }

    #[test]
    fn finish_reasons_become_stop_reasons() {
        for (finish, stop) in [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal")] {
            let body = json!({"id": "chatcmpl-1", "model": "m", "choices": [{"message": {"content": "x"}, "finish_reason": finish}]});
            let out = json(&String::from_utf8(answer(body.to_string().as_bytes(), &context()).unwrap()).unwrap());
            assert_eq!(out["stop_reason"], stop, "{finish}");
        }
    }

    #[test]
    fn an_answer_that_cannot_be_read_says_why() {
        assert!(answer(b"<html>", &context()).unwrap_err().starts_with("not a chat completion"));
        assert_eq!(answer(br#"{"choices":[]}"#, &context()).unwrap_err(), "a chat completion without choices");
        let bad_arguments = json!({"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}}]});
        assert!(answer(bad_arguments.to_string().as_bytes(), &context()).unwrap_err().contains("tool call `f`"));
    }

    #[test]
    fn openai_errors_take_anthropics_shape_and_type_by_status() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(json(&String::from_utf8(error_from_openai(429, body)).unwrap()), json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}}));
        let plain = json(&String::from_utf8(error_from_openai(502, b"Bad Gateway")).unwrap());
        assert_eq!(plain["error"], json!({"type": "api_error", "message": "the provider answered HTTP 502: Bad Gateway"}));
        for (status, kind) in [(400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"), (404, "not_found_error"), (413, "request_too_large"), (500, "api_error"), (503, "overloaded_error"), (529, "overloaded_error")] {
            assert_eq!(error_type_for_status(status), kind, "{status}");
        }
    }

    // ------------------------------------------------------------ stream

    #[test]
    fn golden_streams_text_tool_use_and_error() {
        assert_eq!(String::from_utf8(streamed(TEXT_STREAM)).unwrap(), TEXT_STREAM_TRANSLATED);
        assert_eq!(String::from_utf8(streamed(TOOL_STREAM)).unwrap(), TOOL_STREAM_TRANSLATED);
        assert_eq!(String::from_utf8(streamed(ERROR_STREAM)).unwrap(), ERROR_STREAM_TRANSLATED);
    }

    #[test]
    fn any_chunking_of_the_stream_translates_to_the_same_bytes() {
        for stream in [TEXT_STREAM, TOOL_STREAM, ERROR_STREAM] {
            let whole = streamed(stream);
            for seed in 0..500 {
                let out = crate::provider::translate_in_pieces(&mut Stream::new(context()), stream.as_bytes(), seed);
                assert_eq!(out, whole, "seed {seed}");
            }
        }
    }

    #[test]
    fn a_stream_cut_before_done_still_ends_in_anthropics_way() {
        let cut = TEXT_STREAM.replace("data: [DONE]\n\n", "");
        let out = String::from_utf8(streamed(&cut)).unwrap();
        assert!(out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), "{out}");
        let empty = String::from_utf8(streamed("")).unwrap();
        let names: Vec<&str> = empty.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
    }

    #[test]
    fn a_gemini_stream_reaches_a_messages_client_through_chat_for_any_chunking() {
        let gemini_stream = include_str!("../provider/fixtures/gemini/stream_text.sse");
        let run = |pieces: Vec<&[u8]>| {
            let provider = crate::provider::Format::Gemini.stream(context());
            let mut chain = super::super::through_chat(provider, Box::new(Stream::new(context())));
            let mut out = Vec::new();
            for piece in pieces {
                out.extend(chain.feed(piece));
            }
            out.extend(chain.finish());
            out
        };
        let whole = run(vec![gemini_stream.as_bytes()]);
        let text = String::from_utf8(whole.clone()).unwrap();
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(names.last(), Some(&"message_stop"));
        assert!(names.contains(&"content_block_delta") && names.contains(&"message_delta"), "{text}");
        for seed in 0..200 {
            assert_eq!(run(sse::random_split(gemini_stream.as_bytes(), seed)), whole, "seed {seed}");
        }
    }

    #[test]
    fn garbage_never_panics_and_never_breaks_the_stream_shape() {
        let garbage: Vec<Vec<u8>> = vec![
            b"data: {not json\n\n".to_vec(),
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":18446744073709551615}]}}]}\n\n".to_vec(),
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":-1}]}}]}\n\n".to_vec(),
            b"data: {\"usage\":{\"prompt_tokens\":1e999}}\n\n".to_vec(),
            b"data: {\"error\":\"plain\"}".to_vec(),
            b"\xff\xfe\x00\r\r\n\n".to_vec(),
            (0..=255u8).collect(),
        ];
        for (i, bytes) in garbage.iter().enumerate() {
            let mut translator = Stream::new(context());
            let mut out = translator.feed(bytes);
            out.extend(translator.finish());
            let text = String::from_utf8(out).unwrap();
            let last = text.lines().filter_map(|l| l.strip_prefix("event: ")).next_back();
            assert!(matches!(last, Some("message_stop" | "error")), "case {i}: {text}");
        }
    }
}
