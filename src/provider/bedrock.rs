//! AWS Bedrock's Converse API (`/model/{modelId}/converse` and `converse-stream`): OpenAI chat
//! requests become Converse requests; answers, event-stream frames and errors come back as OpenAI's.

use serde_json::{json, Map, Value};

use super::openai::{
    self, AnswerContext, AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, Content as ChatContent, Delta,
    FinishReason, Image, Message, Part as ChatPart, Role, ToolCall, ToolCallDelta, ToolChoice, Usage,
};
use super::{FormatOptions, Provider, StreamTranslator, Unsupported};
use crate::error_kind::{ErrorKind, StreamStart};
use crate::sse;

/// Converse paths start at the host's root: `/model/...`.
pub const DEFAULT_BASE_PATH: &str = "/";

/// AWS limits an event-stream message to 16 MiB; anything longer is no frame of theirs.
const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Total length, headers length, prelude CRC.
const PRELUDE_BYTES: usize = 12;

/// The model id is one path segment, `:` and `/` (inference profile ARNs) escaped, as AWS's
/// SDKs send it; the signer then encodes the escaped path once more for the canonical request.
pub fn chat_path(provider: &Provider, model: &str, stream: bool) -> String {
    let method = if stream { "converse-stream" } else { "converse" };
    format!("{}/model/{}/{}", provider.base_path, super::path_segment(model), method)
}

// ---------------------------------------------------------------------------------------------
// Request: OpenAI chat completion -> Converse.

pub fn request(request: &ChatRequest, _model: &str, _options: &FormatOptions) -> Result<Vec<u8>, Unsupported> {
    refuse_what_cannot_be_carried(request)?;
    let mut conversation = Conversation::default();
    for message in &request.messages {
        conversation.add(message)?;
    }
    if conversation.messages.is_empty() {
        return Err(Unsupported("Bedrock needs at least one user or assistant message with content; this request has none".into()));
    }
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(conversation.messages));
    if !conversation.system.is_empty() {
        body.insert("system".into(), Value::Array(conversation.system));
    }
    let inference = inference_config(request);
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(tools) = tool_config(request, conversation.has_tool_blocks)? {
        body.insert("toolConfig".into(), tools);
    }
    serde_json::to_vec(&Value::Object(body)).map_err(|e| Unsupported(format!("the request could not be written as JSON: {e}")))
}

fn refuse_what_cannot_be_carried(request: &ChatRequest) -> Result<(), Unsupported> {
    if let Some(n) = request.other.get("n").filter(|n| !n.is_null()) {
        if n.as_u64() != Some(1) {
            return Err(Unsupported(format!("n={n}: Bedrock's Converse answers one choice; send n=1 or leave it out")));
        }
    }
    for legacy in ["functions", "function_call"] {
        if request.other.get(legacy).is_some_and(|v| !v.is_null()) {
            return Err(Unsupported(format!(
                "`{legacy}` (OpenAI's deprecated function calling) is not translated to Bedrock; use `tools` and `tool_choice`"
            )));
        }
    }
    match request.response_format.as_ref().and_then(|f| f.get("type")).and_then(Value::as_str) {
        None | Some("text") => Ok(()),
        Some(other) => Err(Unsupported(format!("response_format `{other}`: Bedrock's Converse has no JSON output mode to translate it to"))),
    }
}

#[derive(Default)]
struct Conversation {
    system: Vec<Value>,
    /// `{role, content}`, consecutive messages of one role joined: Converse wants turns to alternate.
    messages: Vec<Value>,
    /// Converse refuses `toolUse` and `toolResult` blocks without a `toolConfig`.
    has_tool_blocks: bool,
}

impl Conversation {
    fn add(&mut self, message: &Message) -> Result<(), Unsupported> {
        match message.role {
            Role::System | Role::Developer => {
                let texts = text_blocks(message, "system")?;
                self.system.extend(texts);
            }
            Role::User => {
                let blocks = user_blocks(message.content.as_ref())?;
                self.push("user", blocks);
            }
            Role::Assistant => {
                let mut blocks = text_blocks(message, "assistant")?;
                if blocks.is_empty() {
                    if let Some(refusal) = message.refusal.as_deref().filter(|r| !r.is_empty()) {
                        blocks.push(json!({"text": refusal}));
                    }
                }
                for call in message.tool_calls.iter().flatten() {
                    let input = match call.function.arguments.trim() {
                        "" => Value::Object(Map::new()),
                        text => match serde_json::from_str::<Value>(text) {
                            Ok(input @ Value::Object(_)) => input,
                            _ => {
                                return Err(Unsupported(format!(
                                    "tool call {:?} has arguments that are not a JSON object; Bedrock takes tool input only as an object",
                                    call.id
                                )))
                            }
                        },
                    };
                    self.has_tool_blocks = true;
                    blocks.push(json!({"toolUse": {"toolUseId": call.id, "name": call.function.name, "input": input}}));
                }
                self.push("assistant", blocks);
            }
            Role::Tool => {
                let id = message.tool_call_id.as_deref().unwrap_or_default();
                let text = message.text();
                let content = if text.is_empty() { Vec::new() } else { vec![json!({"text": text})] };
                self.has_tool_blocks = true;
                self.push("user", vec![json!({"toolResult": {"toolUseId": id, "content": content}})]);
            }
            Role::Function => {
                return Err(Unsupported(
                    "`function` messages (OpenAI's deprecated function calling) are not translated to Bedrock; use `tool` messages".into(),
                ))
            }
        }
        Ok(())
    }

    fn push(&mut self, role: &str, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        if let Some(last) = self.messages.last_mut().filter(|m| m.get("role").and_then(Value::as_str) == Some(role)) {
            if let Some(Value::Array(content)) = last.get_mut("content") {
                content.extend(blocks);
                return;
            }
        }
        self.messages.push(json!({"role": role, "content": blocks}));
    }
}

/// The text of a system or assistant message; Converse refuses empty text blocks.
fn text_blocks(message: &Message, role: &str) -> Result<Vec<Value>, Unsupported> {
    let texts: Vec<&str> = match &message.content {
        None => Vec::new(),
        Some(ChatContent::Text(text)) => vec![text.as_str()],
        Some(ChatContent::Parts(parts)) => parts
            .iter()
            .map(|part| match part {
                ChatPart::Text { text } | ChatPart::Refusal { refusal: text } => Ok(text.as_str()),
                _ => Err(Unsupported(format!("{role} messages carry only text to Bedrock; this one has an image, audio or file"))),
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(texts.into_iter().filter(|t| !t.is_empty()).map(|t| json!({"text": t})).collect())
}

fn user_blocks(content: Option<&ChatContent>) -> Result<Vec<Value>, Unsupported> {
    let parts = match content {
        None => return Ok(Vec::new()),
        Some(ChatContent::Text(text)) if text.is_empty() => return Ok(Vec::new()),
        Some(ChatContent::Text(text)) => return Ok(vec![json!({"text": text})]),
        Some(ChatContent::Parts(parts)) => parts,
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            ChatPart::Text { text } | ChatPart::Refusal { refusal: text } if !text.is_empty() => blocks.push(json!({"text": text})),
            ChatPart::Text { .. } | ChatPart::Refusal { .. } => {}
            ChatPart::ImageUrl { image_url } => blocks.push(image_block(image_url.image(), &image_url.url)?),
            ChatPart::InputAudio { .. } | ChatPart::File { .. } => {
                return Err(Unsupported("audio and file parts are not translated to Bedrock".into()))
            }
        }
    }
    Ok(blocks)
}

/// Converse takes an image's bytes (or an S3 location), never a web URL.
fn image_block(image: Option<Image<'_>>, url: &str) -> Result<Value, Unsupported> {
    let Some(Image::Inline { media_type, data }) = image else {
        return Err(Unsupported(format!(
            "image {:?}: Bedrock takes images only as bytes; send it as a base64 data: URI",
            url.chars().take(64).collect::<String>()
        )));
    };
    let format = match media_type {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => return Err(Unsupported(format!("image type `{other}`: Bedrock takes png, jpeg, gif and webp"))),
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

fn inference_config(request: &ChatRequest) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(max) = request.max_output_tokens() {
        // Converse reads a 32-bit count; a larger limit means no limit just the same.
        config.insert("maxTokens".into(), json!(max.min(i32::MAX as u64)));
    }
    if let Some(temperature) = request.temperature {
        config.insert("temperature".into(), json!(temperature));
    }
    if let Some(top_p) = request.top_p {
        config.insert("topP".into(), json!(top_p));
    }
    if let Some(stop) = request.stop.as_ref().map(|s| s.sequences()).filter(|s| !s.is_empty()) {
        config.insert("stopSequences".into(), json!(stop));
    }
    config
}

/// `tool_choice: none` has no Converse equivalent: the tools are left out, unless the
/// conversation already holds tool blocks (which need a `toolConfig`); then the model may choose.
fn tool_config(request: &ChatRequest, has_tool_blocks: bool) -> Result<Option<Value>, Unsupported> {
    let mut tools = Vec::new();
    for tool in request.tools.iter().flatten() {
        if tool.kind != "function" {
            return Err(Unsupported(format!("tool type {:?}: Bedrock takes only function tools", tool.kind)));
        }
        let schema = tool.function.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut spec = Map::new();
        spec.insert("name".into(), json!(tool.function.name));
        if let Some(description) = tool.function.description.as_deref().filter(|d| !d.is_empty()) {
            spec.insert("description".into(), json!(description));
        }
        spec.insert("inputSchema".into(), json!({"json": schema}));
        tools.push(json!({"toolSpec": spec}));
    }
    if tools.is_empty() {
        return Ok(None);
    }
    let choice = match &request.tool_choice {
        None => None,
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => Some(json!({"auto": {}})),
            "required" => Some(json!({"any": {}})),
            "none" if has_tool_blocks => None,
            "none" => return Ok(None),
            other => return Err(Unsupported(format!("tool_choice {other:?} is not one of auto, none, required"))),
        },
        Some(ToolChoice::Function { function }) => Some(json!({"tool": {"name": function.name}})),
    };
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = choice {
        config.insert("toolChoice".into(), choice);
    }
    Ok(Some(Value::Object(config)))
}

// ---------------------------------------------------------------------------------------------
// Answer: Converse -> chat.completion.

fn finish_reason(reason: &str, has_tool_calls: bool) -> FinishReason {
    match reason {
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "content_filtered" | "guardrail_intervened" => FinishReason::ContentFilter,
        _ if has_tool_calls => FinishReason::ToolCalls,
        // end_turn, stop_sequence
        _ => FinishReason::Stop,
    }
}

fn usage_of(usage: &Value) -> Usage {
    let count = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
    Usage::new(count("inputTokens"), count("outputTokens"))
}

pub fn answer(body: &[u8], context: &AnswerContext) -> Result<Vec<u8>, String> {
    let answer: Value = serde_json::from_slice(body).map_err(|e| format!("Bedrock's answer is not JSON: {e}"))?;
    let blocks = answer
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or("Bedrock's answer has no output.message.content")?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        if let Some(piece) = block.get("text").and_then(Value::as_str) {
            text.push_str(piece);
        }
        if let Some(tool_use) = block.get("toolUse") {
            let field = |name: &str| tool_use.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
            let input = tool_use.get("input").map_or_else(|| "{}".to_string(), Value::to_string);
            tool_calls.push(ToolCall {
                id: field("toolUseId"),
                kind: "function".into(),
                function: openai::FunctionCall { name: field("name"), arguments: input },
            });
        }
    }
    let has_tool_calls = !tool_calls.is_empty();
    let reason = answer.get("stopReason").and_then(Value::as_str).unwrap_or_default();
    let content = (!text.is_empty()).then_some(text);
    let usage = answer.get("usage").map(usage_of);
    let message = AssistantMessage::new(content, tool_calls);
    Ok(ChatCompletion::new(context, None, message, finish_reason(reason, has_tool_calls), usage).to_json())
}

// ---------------------------------------------------------------------------------------------
// Errors: `x-amzn-ErrorType` names the exception, the body is `{"message": ...}`; the status
// already says what failover needs (ThrottlingException 429, AccessDenied 403, ...).

/// ModelErrorException (424: the model failed on this request) is the provider's failure:
/// another provider may do better.
pub fn error_status(status: u16) -> u16 {
    if status == 424 {
        502
    } else {
        status
    }
}

/// The exception's name: `x-amzn-ErrorType` (`ThrottlingException:http://internal.amazon.com/...`)
/// or else the body's `__type` (`com.amazon.coral.validate#ValidationException`).
fn exception_name(error_type_header: Option<&str>, body_type: Option<&str>) -> Option<String> {
    let from_header = error_type_header.and_then(|t| t.split(':').next()).map(str::trim).filter(|n| !n.is_empty());
    let from_body = || body_type.and_then(|t| t.rsplit('#').next()).map(str::trim).filter(|n| !n.is_empty());
    from_header.or_else(from_body).map(str::to_string)
}

pub fn error(status: u16, body: &[u8], error_type_header: Option<&str>) -> Vec<u8> {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str).filter(|m| !m.is_empty());
    let message = match field("message").or_else(|| field("Message")) {
        Some(message) => message.to_string(),
        None => {
            let excerpt: String = String::from_utf8_lossy(body).split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
            format!("Bedrock answered HTTP {status}: {excerpt}")
        }
    };
    let code = exception_name(error_type_header, field("__type"));
    let kind = match status {
        403 if message.contains("signature") || message.contains("security token") => "authentication_error",
        _ => openai::error_type_for_status(error_status(status)),
    };
    openai::error_body(&message, kind, code.as_deref())
}

// ---------------------------------------------------------------------------------------------
// Stream: `application/vnd.amazon.eventstream` frames, each one event.

/// One event-stream message: the headers the translation reads, and the JSON payload.
#[derive(Debug, Default, PartialEq)]
struct Frame {
    message_type: String,
    event_type: String,
    exception_type: String,
    payload: Vec<u8>,
}

/// IEEE CRC-32, as the event-stream prelude and message checksums use.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes)
}

/// The first whole frame in `buffer` and its length; `Ok(None)` while it is incomplete.
fn next_frame(buffer: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    let (Some(total), Some(headers_len), Some(prelude_crc)) = (be32(buffer, 0), be32(buffer, 4), be32(buffer, 8)) else {
        return Ok(None);
    };
    if crc32(buffer.get(..8).unwrap_or_default()) != prelude_crc {
        return Err("an event-stream frame failed its prelude checksum".into());
    }
    let (total, headers_len) = (total as usize, headers_len as usize);
    if total > MAX_FRAME_BYTES || total < PRELUDE_BYTES + headers_len + 4 {
        return Err(format!("an event-stream frame claims an impossible length ({total} bytes, {headers_len} of headers)"));
    }
    let Some(frame) = buffer.get(..total) else {
        return Ok(None);
    };
    if be32(frame, total - 4) != Some(crc32(frame.get(..total - 4).unwrap_or_default())) {
        return Err("an event-stream frame failed its message checksum".into());
    }
    let headers = frame.get(PRELUDE_BYTES..PRELUDE_BYTES + headers_len).unwrap_or_default();
    let mut read = read_headers(headers).ok_or("an event-stream frame has unreadable headers")?;
    read.payload = frame.get(PRELUDE_BYTES + headers_len..total - 4).unwrap_or_default().to_vec();
    Ok(Some((read, total)))
}

fn read_headers(mut headers: &[u8]) -> Option<Frame> {
    let mut frame = Frame::default();
    while let Some((&name_len, rest)) = headers.split_first() {
        let name = rest.get(..usize::from(name_len))?;
        let (&kind, rest) = rest.get(usize::from(name_len)..)?.split_first()?;
        let (value, rest) = match kind {
            0 | 1 => (&[][..], rest),
            2 => rest.split_at_checked(1)?,
            3 => rest.split_at_checked(2)?,
            4 => rest.split_at_checked(4)?,
            5 | 8 => rest.split_at_checked(8)?,
            9 => rest.split_at_checked(16)?,
            6 | 7 => {
                let len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
                rest.get(2..)?.split_at_checked(len)?
            }
            _ => return None,
        };
        if kind == 7 {
            let value = String::from_utf8_lossy(value).into_owned();
            match name {
                b":message-type" => frame.message_type = value,
                b":event-type" => frame.event_type = value,
                b":exception-type" | b":error-code" => frame.exception_type = value,
                _ => {}
            }
        }
        headers = rest;
    }
    Some(frame)
}

/// Whether an exception frame came before any content in the start of a converse-stream:
/// `messageStart` precedes content, any other event is content. A broken frame is the
/// provider's failure, as a 502 would be.
pub fn stream_start(mut buffer: &[u8]) -> StreamStart {
    loop {
        let (frame, used) = match next_frame(buffer) {
            Ok(Some(read)) => read,
            Ok(None) => return StreamStart::Undecided,
            Err(_) => return StreamStart::Error(ErrorKind::ServerError),
        };
        if frame.message_type == "exception" || frame.message_type == "error" {
            return StreamStart::Error(exception_error_kind(&frame.exception_type));
        }
        if frame.event_type != "messageStart" {
            return StreamStart::Content;
        }
        buffer = buffer.get(used..).unwrap_or_default();
    }
}

/// What an exception before content means for failover, as its status would.
fn exception_error_kind(exception: &str) -> ErrorKind {
    let is = |name: &str| exception.eq_ignore_ascii_case(name);
    if is("throttlingException") || is("modelNotReadyException") {
        ErrorKind::RateLimited
    } else if is("validationException") {
        ErrorKind::BadRequest
    } else if is("accessDeniedException") {
        ErrorKind::Unauthorized
    } else {
        ErrorKind::ServerError
    }
}

/// The OpenAI error type an exception in a stream means.
fn exception_kind(exception: &str) -> &'static str {
    match exception {
        "throttlingException" | "ThrottlingException" => "rate_limit_error",
        "validationException" | "ValidationException" => "invalid_request_error",
        "accessDeniedException" | "AccessDeniedException" => "permission_error",
        _ => "api_error",
    }
}

pub struct Stream {
    context: AnswerContext,
    buffer: Vec<u8>,
    started: bool,
    /// Converse content block index -> OpenAI tool call index.
    tool_blocks: Vec<(u64, u32)>,
    tool_calls: u32,
    finish_sent: bool,
    usage: Usage,
    /// After an exception or a broken frame: nothing more is sent.
    closed: bool,
}

impl Stream {
    pub fn new(context: AnswerContext) -> Stream {
        Stream {
            context,
            buffer: Vec::new(),
            started: false,
            tool_blocks: Vec::new(),
            tool_calls: 0,
            finish_sent: false,
            usage: Usage::default(),
            closed: false,
        }
    }

    fn chunk(&mut self, delta: Delta, finish_reason: Option<FinishReason>, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            ChatChunk::new(&self.context, &self.context.id, Delta::role(), None).write_sse(out);
        }
        if delta != Delta::default() || finish_reason.is_some() {
            ChatChunk::new(&self.context, &self.context.id, delta, finish_reason).write_sse(out);
        }
    }

    fn fail(&mut self, message: &str, kind: &str, code: Option<&str>, out: &mut Vec<u8>) {
        out.extend(sse::data_event(&openai::error_body(message, kind, code)));
        self.closed = true;
    }

    fn translate(&mut self, frame: Frame, out: &mut Vec<u8>) {
        let event: Value = serde_json::from_slice(&frame.payload).unwrap_or(Value::Null);
        if frame.message_type != "event" {
            let message = event.get("message").and_then(Value::as_str).unwrap_or("Bedrock's stream ended in an error");
            let code = (!frame.exception_type.is_empty()).then_some(frame.exception_type.as_str());
            return self.fail(message, exception_kind(&frame.exception_type), code, out);
        }
        if self.finish_sent && frame.event_type != "metadata" {
            return;
        }
        match frame.event_type.as_str() {
            "messageStart" => self.chunk(Delta::default(), None, out),
            "contentBlockStart" => {
                let Some(tool_use) = event.pointer("/start/toolUse") else { return };
                let block = event.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
                let index = self.tool_calls;
                self.tool_calls = self.tool_calls.saturating_add(1);
                self.tool_blocks.push((block, index));
                let field = |name: &str| tool_use.get(name).and_then(Value::as_str).unwrap_or_default();
                self.chunk(Delta::tool_call(ToolCallDelta::start(index, field("toolUseId"), field("name"))), None, out);
            }
            "contentBlockDelta" => {
                if let Some(text) = event.pointer("/delta/text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    self.chunk(Delta::text(text), None, out);
                }
                if let Some(input) = event.pointer("/delta/toolUse/input").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    let block = event.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
                    if let Some(&(_, index)) = self.tool_blocks.iter().find(|(b, _)| *b == block) {
                        self.chunk(Delta::tool_call(ToolCallDelta::arguments(index, input)), None, out);
                    }
                }
            }
            "messageStop" => {
                let reason = event.get("stopReason").and_then(Value::as_str).unwrap_or_default();
                self.chunk(Delta::default(), Some(finish_reason(reason, self.tool_calls > 0)), out);
                self.finish_sent = true;
            }
            "metadata" => {
                if let Some(usage) = event.get("usage") {
                    self.usage = usage_of(usage);
                }
            }
            // contentBlockStop, and events of later API versions.
            _ => {}
        }
    }
}

impl StreamTranslator for Stream {
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        self.buffer.extend_from_slice(chunk);
        let mut used = 0;
        while !self.closed {
            match next_frame(self.buffer.get(used..).unwrap_or_default()) {
                Ok(Some((frame, len))) => {
                    used += len;
                    self.translate(frame, &mut out);
                }
                Ok(None) => break,
                Err(why) => {
                    self.fail(&format!("Bedrock's stream broke: {why}"), "api_error", Some("bad_provider_answer"), &mut out);
                }
            }
        }
        self.buffer.drain(..used.min(self.buffer.len()));
        if self.closed {
            self.buffer = Vec::new();
        }
        out
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        // A stream cut short still ends the way OpenAI clients expect.
        if !self.finish_sent {
            let reason = if self.tool_calls > 0 { FinishReason::ToolCalls } else { FinishReason::Stop };
            self.chunk(Delta::default(), Some(reason), &mut out);
            self.finish_sent = true;
        }
        if self.context.include_usage {
            ChatChunk::usage(&self.context, &self.context.id, self.usage).write_sse(&mut out);
        }
        out.extend_from_slice(sse::DONE);
        self.closed = true;
        out
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// An event-stream frame as AWS writes it: string headers, payload, both checksums.
    pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut encoded = Vec::new();
        for (name, value) in headers {
            encoded.push(name.len() as u8);
            encoded.extend_from_slice(name.as_bytes());
            encoded.push(7);
            encoded.extend_from_slice(&(value.len() as u16).to_be_bytes());
            encoded.extend_from_slice(value.as_bytes());
        }
        let total = PRELUDE_BYTES + encoded.len() + payload.len() + 4;
        let mut out = Vec::new();
        out.extend_from_slice(&(total as u32).to_be_bytes());
        out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32(&out).to_be_bytes());
        out.extend_from_slice(&encoded);
        out.extend_from_slice(payload);
        out.extend_from_slice(&crc32(&out).to_be_bytes());
        out
    }

    fn event(kind: &str, payload: &Value) -> Vec<u8> {
        let headers = [(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")];
        frame(&headers, payload.to_string().as_bytes())
    }

    /// The frames of `fixtures/bedrock/<name>.events.json`: `[[event type, payload], ...]`.
    fn stream_of(events: &str) -> Vec<u8> {
        let events: Vec<(String, Value)> = serde_json::from_str(events).unwrap();
        events.iter().flat_map(|(kind, payload)| event(kind, payload)).collect()
    }

    fn context(include_usage: bool) -> AnswerContext {
        AnswerContext { id: "chatcmpl-local1".into(), created: 1_700_000_000, model: "anthropic.claude-3-5-sonnet-20240620-v1:0".into(), include_usage }
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn chunks(sse: &[u8]) -> Value {
        let text = String::from_utf8(sse.to_vec()).unwrap();
        let events: Vec<Value> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|data| if data == "[DONE]" { json!("[DONE]") } else { json(data) })
            .collect();
        Value::Array(events)
    }

    const CHAT_OPENAI: &str = include_str!("fixtures/bedrock/chat.openai.json");
    const CHAT_BEDROCK: &str = include_str!("fixtures/bedrock/chat.bedrock.json");
    const ANSWER_TOOL_CALLS: (&str, &str) =
        (include_str!("fixtures/bedrock/answer_tool_calls.bedrock.json"), include_str!("fixtures/bedrock/answer_tool_calls.openai.json"));
    const STREAM_TOOL_CALL: (&str, &str) =
        (include_str!("fixtures/bedrock/stream_tool_call.events.json"), include_str!("fixtures/bedrock/stream_tool_call.chunks.json"));

    #[test]
    fn a_chat_request_with_system_images_tools_and_tool_results_becomes_converse() {
        let chat = ChatRequest::parse(CHAT_OPENAI.as_bytes()).unwrap();
        let body = request(&chat, "m", &FormatOptions::default()).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json(CHAT_BEDROCK));
    }

    #[test]
    fn a_converse_answer_with_a_tool_call_becomes_a_chat_completion() {
        let out = answer(ANSWER_TOOL_CALLS.0.as_bytes(), &context(false)).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), json(ANSWER_TOOL_CALLS.1));
    }

    #[test]
    fn stop_reasons_become_finish_reasons() {
        for (reason, expected) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("tool_use", FinishReason::ToolCalls),
            ("max_tokens", FinishReason::Length),
            ("content_filtered", FinishReason::ContentFilter),
            ("guardrail_intervened", FinishReason::ContentFilter),
        ] {
            assert_eq!(finish_reason(reason, false), expected, "{reason}");
        }
    }

    #[test]
    fn what_converse_cannot_carry_is_refused() {
        for (extra, says) in [
            (json!({"n": 2}), "n=2"),
            (json!({"response_format": {"type": "json_object"}}), "response_format"),
            (json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]}]}), "base64"),
        ] {
            let mut chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().unwrap() {
                chat[k] = v.clone();
            }
            let parsed = ChatRequest::parse(chat.to_string().as_bytes()).unwrap();
            let Err(Unsupported(message)) = request(&parsed, "m", &FormatOptions::default()) else { panic!("{chat} must be refused") };
            assert!(message.contains(says), "{message}");
        }
    }

    #[test]
    fn tool_choice_none_leaves_the_tools_out_unless_the_conversation_used_them() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        let fresh = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": "none"});
        let body: Value = serde_json::from_slice(&request(&ChatRequest::parse(fresh.to_string().as_bytes()).unwrap(), "m", &FormatOptions::default()).unwrap()).unwrap();
        assert!(body.get("toolConfig").is_none(), "{body}");
        let used = json!({"model": "m", "tools": tools, "tool_choice": "none", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "ok"}]});
        let body: Value = serde_json::from_slice(&request(&ChatRequest::parse(used.to_string().as_bytes()).unwrap(), "m", &FormatOptions::default()).unwrap()).unwrap();
        assert_eq!(body["toolConfig"], json!({"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}]}));
    }

    #[test]
    fn errors_keep_bedrock_s_message_and_their_status_s_kind() {
        let throttled = br#"{"message":"Too many requests, please wait before trying again."}"#;
        let body: Value = serde_json::from_slice(&error(429, throttled, Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"))).unwrap();
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["code"], "ThrottlingException");
        let typed: Value = serde_json::from_slice(&error(400, br#"{"__type":"com.amazon.coral.validate#ValidationException","message":"bad"}"#, None)).unwrap();
        assert_eq!(typed["error"]["code"], "ValidationException");
        let both: Value = serde_json::from_slice(&error(400, br#"{"__type":"a#FromBody","message":"bad"}"#, Some("FromHeader"))).unwrap();
        assert_eq!(both["error"]["code"], "FromHeader");
        let unnamed: Value = serde_json::from_slice(&error(429, throttled, Some(""))).unwrap();
        assert!(unnamed["error"]["code"].is_null());
        assert_eq!(body["error"]["message"], "Too many requests, please wait before trying again.");
        let signature: Value = serde_json::from_slice(&error(403, br#"{"message":"The request signature we calculated does not match the signature you provided."}"#, None)).unwrap();
        assert_eq!(signature["error"]["type"], "authentication_error");
        let html: Value = serde_json::from_slice(&error(503, b"<html>down</html>", None)).unwrap();
        assert_eq!(html["error"]["message"], "Bedrock answered HTTP 503: <html>down</html>");
        assert_eq!(error_status(424), 502);
        assert_eq!(error_status(429), 429);
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_streamed_tool_call_becomes_chat_chunks() {
        let out = translate_whole(&stream_of(STREAM_TOOL_CALL.0), true);
        assert_eq!(chunks(&out), json(STREAM_TOOL_CALL.1));
    }

    fn translate_whole(stream: &[u8], include_usage: bool) -> Vec<u8> {
        let mut translator = Stream::new(context(include_usage));
        let mut out = translator.feed(stream);
        out.extend(translator.finish());
        out
    }

    #[test]
    fn any_chunking_of_the_event_stream_gives_the_same_chunks() {
        let stream = stream_of(STREAM_TOOL_CALL.0);
        let whole = translate_whole(&stream, true);
        for seed in 0..300 {
            let mut translator = Stream::new(context(true));
            assert_eq!(super::super::translate_in_pieces(&mut translator, &stream, seed), whole, "seed {seed}");
        }
        let mut one_byte = Stream::new(context(true));
        let mut out: Vec<u8> = stream.iter().flat_map(|b| one_byte.feed(std::slice::from_ref(b))).collect();
        out.extend(one_byte.finish());
        assert_eq!(out, whole);
    }

    #[test]
    fn a_bad_checksum_ends_the_stream_in_an_error() {
        let good = stream_of(STREAM_TOOL_CALL.0);
        for at in [2, 9, 40, good.len() - 2] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            let out = String::from_utf8(translate_whole(&bad, false)).unwrap();
            assert!(out.contains("Bedrock's stream broke") && out.contains("checksum") || out.contains("impossible length"), "byte {at}: {out}");
            assert!(!out.contains("[DONE]"), "{out}");
        }
    }

    #[test]
    fn an_exception_before_content_is_the_failure_it_names_and_content_first_is_the_answer() {
        let start = event("messageStart", &json!({"role": "assistant"}));
        let throttled = frame(&[(":exception-type", "throttlingException"), (":content-type", "application/json"), (":message-type", "exception")], br#"{"message":"slow down"}"#);
        let text = event("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}}));
        assert_eq!(stream_start(&[start.clone(), throttled.clone()].concat()), StreamStart::Error(ErrorKind::RateLimited));
        assert_eq!(stream_start(&throttled), StreamStart::Error(ErrorKind::RateLimited));
        assert_eq!(stream_start(&[start.clone(), text.clone(), throttled.clone()].concat()), StreamStart::Content);
        assert_eq!(stream_start(&start), StreamStart::Undecided);
        let whole = [start, throttled].concat();
        assert_eq!(stream_start(&whole[..whole.len() - 1]), StreamStart::Undecided, "a frame cut short decides nothing");
        let stopped = frame(&[(":exception-type", "modelStreamErrorException"), (":message-type", "exception")], b"{}");
        assert_eq!(stream_start(&stopped), StreamStart::Error(ErrorKind::ServerError));
        let mut broken = text;
        let last = broken.len() - 1;
        broken[last] ^= 1;
        assert_eq!(stream_start(&broken), StreamStart::Error(ErrorKind::ServerError));
    }

    #[test]
    fn an_exception_frame_mid_stream_is_an_error_the_client_sees() {
        let mut stream = event("messageStart", &json!({"role": "assistant"}));
        stream.extend(event("contentBlockDelta", &json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}})));
        stream.extend(frame(
            &[(":exception-type", "throttlingException"), (":content-type", "application/json"), (":message-type", "exception")],
            br#"{"message":"Too many tokens, please wait before trying again."}"#,
        ));
        let out = chunks(&translate_whole(&stream, false));
        let last = out.as_array().unwrap().last().unwrap();
        assert_eq!(last["error"]["type"], "rate_limit_error");
        assert_eq!(last["error"]["code"], "throttlingException");
        assert_eq!(out[1]["choices"][0]["delta"]["content"], "Hel");
    }
}
