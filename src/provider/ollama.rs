//! Ollama's native chat API (`POST /api/chat`): OpenAI requests translated to it, and its answers,
//! NDJSON streams and `{"error": "..."}` bodies translated back into OpenAI's forms.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::openai::{
    self, AnswerContext, AssistantMessage, ChatChunk, ChatCompletion, Content, Delta, FinishReason, Image, Part, Role,
    ToolCallDelta, ToolChoice, Usage,
};
use super::{FormatOptions, Provider, StreamTranslator, Unsupported};
use crate::sse::{self, LineReader};

pub const DEFAULT_BASE_PATH: &str = "/api";

pub fn chat_path(provider: &Provider) -> String {
    format!("{}/chat", provider.base_path)
}

/// How much of a provider's text an error message quotes.
const EXCERPT_CHARS: usize = 200;

// ---------------------------------------------------------------- request

/// Ollama's chat request: the fields of `api.ChatRequest` the translation fills.
#[derive(Debug, Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: Vec<Message>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    /// `"json"` or a JSON schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<Value>,
    #[serde(skip_serializing_if = "Options::is_empty")]
    options: Options,
    /// Always sent: Ollama streams unless told `false`.
    stream: bool,
}

/// The Modelfile parameters an OpenAI request has equivalents for.
#[derive(Debug, Default, PartialEq, Serialize)]
struct Options {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_predict: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
}

impl Options {
    fn of(request: &openai::ChatRequest) -> Options {
        Options {
            temperature: request.temperature,
            top_p: request.top_p,
            stop: request.stop.as_ref().map(openai::Stop::sequences),
            num_predict: request.max_output_tokens(),
            seed: request.seed,
            presence_penalty: request.presence_penalty,
            frequency_penalty: request.frequency_penalty,
        }
    }

    fn is_empty(&self) -> bool {
        *self == Options::default()
    }
}

#[derive(Debug, Serialize)]
struct Message {
    role: &'static str,
    /// Required by Ollama even when empty.
    content: String,
    /// Base64, without a `data:` prefix.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall>,
    /// On a tool result: the function that produced it, which is all that links a result to its
    /// call in Ollama's documented API.
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_name: Option<String>,
}

#[derive(Debug, Serialize)]
struct ToolCall {
    function: FunctionCall,
}

#[derive(Debug, Serialize)]
struct FunctionCall {
    name: String,
    /// A JSON object, kept as the client wrote it.
    arguments: Box<RawValue>,
}

#[derive(Debug, Serialize)]
struct Tool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionDefinition<'a>,
}

#[derive(Debug, Serialize)]
struct FunctionDefinition<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: Cow<'a, Value>,
}

/// The client's OpenAI request as an Ollama `/api/chat` body for `model`.
pub fn request(request: &openai::ChatRequest, model: &str, _options: &FormatOptions) -> Result<Vec<u8>, Unsupported> {
    refuse_what_ollama_cannot_do(request)?;
    let mut messages = Vec::with_capacity(request.messages.len());
    for (index, message) in request.messages.iter().enumerate() {
        let earlier = request.messages.get(..index).unwrap_or_default();
        messages.push(translate_message(message, earlier)?);
    }
    let body = Request {
        model,
        messages,
        tools: tools(request)?,
        format: format(request.response_format.as_ref())?,
        options: Options::of(request),
        stream: request.stream,
    };
    serde_json::to_vec(&body).map_err(|e| Unsupported(format!("the request cannot be written as JSON for Ollama: {e}")))
}

/// Parameters asking for an answer Ollama cannot give at all. The others it has no equivalent
/// for are dropped; docs/formats/ollama.md says why, one by one.
fn refuse_what_ollama_cannot_do(request: &openai::ChatRequest) -> Result<(), Unsupported> {
    let given = |name: &str| request.other.get(name).filter(|v| !v.is_null());
    if let Some(n) = given("n") {
        if n.as_f64() != Some(1.0) {
            return Err(Unsupported(format!("`n` is {n}, but Ollama answers with exactly one choice")));
        }
    }
    if given("functions").is_some() || given("function_call").is_some() {
        return Err(Unsupported(
            "the deprecated `functions` and `function_call` are not translated for Ollama: declare them as `tools`"
                .into(),
        ));
    }
    let wants_audio = given("modalities")
        .and_then(Value::as_array)
        .is_some_and(|modalities| modalities.iter().any(|m| m.as_str() == Some("audio")));
    if wants_audio || given("audio").is_some() {
        return Err(Unsupported("Ollama answers in text only; it cannot produce audio".into()));
    }
    if given("web_search_options").is_some() {
        return Err(Unsupported("Ollama's chat API cannot search the web (`web_search_options`)".into()));
    }
    Ok(())
}

fn translate_message(message: &openai::Message, earlier: &[openai::Message]) -> Result<Message, Unsupported> {
    let (mut content, images) = content_and_images(message)?;
    let mut tool_calls = Vec::new();
    let mut tool_name = None;
    match message.role {
        Role::Assistant => {
            if content.is_empty() {
                if let Some(refusal) = &message.refusal {
                    content = refusal.clone();
                }
            }
            for call in message.tool_calls.iter().flatten() {
                tool_calls.push(ToolCall {
                    function: FunctionCall { name: call.function.name.clone(), arguments: arguments_object(call)? },
                });
            }
        }
        Role::Tool => {
            tool_name = message
                .tool_call_id
                .as_deref()
                .and_then(|id| called_function(earlier, id))
                .or_else(|| message.name.clone());
        }
        Role::Function => tool_name = message.name.clone(),
        Role::System | Role::Developer | Role::User => {}
    }
    Ok(Message { role: role(message.role), content, images, tool_calls, tool_name })
}

fn role(role: Role) -> &'static str {
    match role {
        Role::System | Role::Developer => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool | Role::Function => "tool",
    }
}

/// Text parts joined by newlines (as `Message::text` does) and images in order. Ollama keeps a
/// message's images apart from its text, so where an image stood between texts is lost.
fn content_and_images(message: &openai::Message) -> Result<(String, Vec<String>), Unsupported> {
    let parts = match &message.content {
        None => return Ok((String::new(), Vec::new())),
        Some(Content::Text(text)) => return Ok((text.clone(), Vec::new())),
        Some(Content::Parts(parts)) => parts,
    };
    let mut texts = Vec::new();
    let mut images = Vec::new();
    for part in parts {
        match part {
            Part::Text { text } => texts.push(text.as_str()),
            Part::Refusal { refusal } => texts.push(refusal.as_str()),
            Part::ImageUrl { image_url } => match image_url.image() {
                Some(Image::Inline { data, .. }) => images.push(data.to_string()),
                // The URL is not quoted back: it may carry a signature.
                Some(Image::Url(_)) => return Err(Unsupported(
                    "Ollama takes images only inline, not by URL: send each image as a `data:image/...;base64,` URI"
                        .into(),
                )),
                None => {
                    return Err(Unsupported(
                        "an image `data:` URI is not base64; Ollama takes base64 images only".into(),
                    ))
                }
            },
            Part::InputAudio { .. } => return Err(Unsupported("Ollama's chat API takes no audio input".into())),
            Part::File { .. } => return Err(Unsupported("Ollama's chat API takes no file input".into())),
        }
    }
    Ok((texts.join("\n"), images))
}

/// The function an earlier assistant turn called under `id`: the nearest such call, since a
/// conversation may reuse ids across turns.
fn called_function(earlier: &[openai::Message], id: &str) -> Option<String> {
    earlier
        .iter()
        .rev()
        .filter(|m| m.role == Role::Assistant)
        .flat_map(|m| m.tool_calls.iter().flatten())
        .find(|call| call.id == id)
        .map(|call| call.function.name.clone())
}

/// OpenAI carries arguments as JSON text, Ollama as an object; empty text means no arguments.
fn arguments_object(call: &openai::ToolCall) -> Result<Box<RawValue>, Unsupported> {
    let text = call.function.arguments.trim();
    let text = if text.is_empty() { "{}" } else { text };
    match serde_json::from_str::<Box<RawValue>>(text) {
        Ok(arguments) if arguments.get().starts_with('{') => Ok(arguments),
        _ => Err(Unsupported(format!(
            "the arguments of tool call `{}` are not a JSON object, and Ollama takes tool call arguments only as an object",
            call.id
        ))),
    }
}

/// The tools the model may call. Ollama cannot force a call: `none` sends no tools, a named
/// function sends only that one, `required` sends them all without forcing a call.
fn tools(request: &openai::ChatRequest) -> Result<Vec<Tool<'_>>, Unsupported> {
    let declared = request.tools.as_deref().unwrap_or_default();
    let offered: Vec<&openai::Tool> = match &request.tool_choice {
        None => declared.iter().collect(),
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" | "required" => declared.iter().collect(),
            "none" => Vec::new(),
            other => {
                return Err(Unsupported(format!("`tool_choice` \"{}\" is not one Ollama can follow", excerpt(other))))
            }
        },
        Some(ToolChoice::Function { function }) => {
            let named: Vec<_> = declared.iter().filter(|t| t.function.name == function.name).collect();
            if named.is_empty() {
                return Err(Unsupported(format!(
                    "`tool_choice` names the function `{}`, which is not among the request's `tools`",
                    excerpt(&function.name)
                )));
            }
            named
        }
    };
    offered.into_iter().map(tool).collect()
}

fn tool(tool: &openai::Tool) -> Result<Tool<'_>, Unsupported> {
    if tool.kind != "function" {
        return Err(Unsupported(format!("Ollama takes only `function` tools, not `{}`", excerpt(&tool.kind))));
    }
    let function = &tool.function;
    // OpenAI lets a function without arguments omit its schema; Ollama requires one.
    let parameters = match &function.parameters {
        Some(parameters) => Cow::Borrowed(parameters),
        None => Cow::Owned(serde_json::json!({ "type": "object", "properties": {} })),
    };
    Ok(Tool {
        kind: "function",
        function: FunctionDefinition { name: &function.name, description: function.description.as_deref(), parameters },
    })
}

fn format(response_format: Option<&Value>) -> Result<Option<Value>, Unsupported> {
    let Some(response_format) = response_format else {
        return Ok(None);
    };
    match response_format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Value::from("json"))),
        Some("json_schema") => {
            let schema = response_format.get("json_schema").and_then(|s| s.get("schema")).filter(|s| s.is_object());
            Ok(Some(schema.cloned().unwrap_or_else(|| Value::from("json"))))
        }
        _ => Err(Unsupported(format!(
            "`response_format` {} is not one Ollama has an equivalent for",
            excerpt(&response_format.to_string())
        ))),
    }
}

// ---------------------------------------------------------------- answer

/// An Ollama chat response: the whole answer, or one line of a stream. Read leniently: a field
/// that is missing or null is empty.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Response {
    message: Option<ResponseMessage>,
    done: bool,
    done_reason: Option<String>,
    #[serde(deserialize_with = "token_count")]
    prompt_eval_count: u64,
    #[serde(deserialize_with = "token_count")]
    eval_count: u64,
    /// Set instead of everything else when the model failed.
    error: Option<Value>,
}

/// `thinking` (a reasoning model's trace, `deepseek-r1`) is not read: OpenAI's chat completions
/// have no place for it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResponseMessage {
    content: Option<String>,
    tool_calls: Option<Vec<ResponseToolCall>>,
}

#[derive(Debug, Deserialize)]
struct ResponseToolCall {
    /// Recent Ollama versions name each call; older ones do not.
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: ResponseFunctionCall,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResponseFunctionCall {
    name: String,
    arguments: Option<Box<RawValue>>,
}

impl ResponseFunctionCall {
    /// The arguments as OpenAI's compact JSON text, in Ollama's key order.
    fn arguments_text(&self) -> String {
        match &self.arguments {
            None => "{}".into(),
            Some(raw) => match serde_json::from_str::<String>(raw.get()) {
                // Arguments that arrive already as JSON text are passed on as that text.
                Ok(text) => text,
                Err(_) => compact_json(raw.get()),
            },
        }
    }
}

/// Valid JSON without the whitespace between its tokens; parsing into a `Value` would also do
/// that, but would sort the keys.
fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        out.push(c);
    }
    out
}

/// A count that is not a whole number that fits (negative, fractional, absurdly large) reads as
/// zero rather than failing the answer.
fn token_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let value = Value::deserialize(deserializer)?;
    Ok(value.as_u64().unwrap_or(0))
}

impl Response {
    fn usage(&self) -> Usage {
        let (prompt, completion) = (self.prompt_eval_count, self.eval_count);
        Usage { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt.saturating_add(completion) }
    }

    fn content(&self) -> &str {
        self.message.as_ref().and_then(|m| m.content.as_deref()).unwrap_or_default()
    }

    fn tool_calls(&self) -> &[ResponseToolCall] {
        self.message.as_ref().and_then(|m| m.tool_calls.as_deref()).unwrap_or_default()
    }

    fn error_message(&self) -> Option<String> {
        self.error.as_ref().filter(|e| !e.is_null()).map(error_text)
    }
}

/// Ollama says `stop` also when the model called tools; `load` and `unload` answer a request
/// without messages; older versions send no reason at all.
fn finish_reason(done_reason: Option<&str>, called_tools: bool) -> FinishReason {
    match done_reason {
        Some("length") => FinishReason::Length,
        _ if called_tools => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Ollama's own id for a call (recent versions), else one made from the answer's id: `call_0`
/// alone would repeat across the turns of a conversation, which some providers refuse.
fn tool_call_id(provided: Option<&str>, answer_id: &str, index: u32) -> String {
    if let Some(id) = provided.filter(|id| !id.is_empty()) {
        return id.to_string();
    }
    let answer: String = answer_id
        .strip_prefix("chatcmpl-")
        .unwrap_or(answer_id)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    format!("call_{answer}_{index}")
}

/// A complete (non-streamed) Ollama answer as an OpenAI `chat.completion`.
pub fn answer(body: &[u8], context: &AnswerContext) -> Result<Vec<u8>, String> {
    let response: Response =
        serde_json::from_slice(body).map_err(|e| format!("Ollama's answer is not a chat response: {e}"))?;
    if let Some(message) = response.error_message() {
        return Err(format!("Ollama answered with an error: {message}"));
    }
    let tool_calls: Vec<openai::ToolCall> = response
        .tool_calls()
        .iter()
        .zip(0u32..)
        .map(|(call, index)| openai::ToolCall {
            id: tool_call_id(call.id.as_deref(), &context.id, index),
            kind: "function".into(),
            function: openai::FunctionCall {
                name: call.function.name.clone(),
                arguments: call.function.arguments_text(),
            },
        })
        .collect();
    let content = match response.content() {
        "" if !tool_calls.is_empty() => None,
        text => Some(text.to_string()),
    };
    let finish = finish_reason(response.done_reason.as_deref(), !tool_calls.is_empty());
    let message = AssistantMessage::new(content, tool_calls);
    Ok(ChatCompletion::new(context, None, message, finish, Some(response.usage())).to_json())
}

// ---------------------------------------------------------------- errors

/// An Ollama error body (`{"error": "model 'x' not found"}`, or whatever a proxy in front of it
/// sent) as an OpenAI error body.
pub fn error(status: u16, body: &[u8]) -> Vec<u8> {
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(value) => match value.get("error").filter(|e| !e.is_null()) {
            Some(error) => error_text(error),
            None => excerpt(String::from_utf8_lossy(body).trim()),
        },
        Err(_) => excerpt(String::from_utf8_lossy(body).trim()),
    };
    let message = if message.is_empty() { format!("Ollama answered HTTP {status} without a message") } else { message };
    // Ollama's two wordings: `model 'x' not found` and `model "x" not found, try pulling it first`.
    let code =
        (status == 404 && message.starts_with("model ") && message.contains("not found")).then_some("model_not_found");
    openai::error_body(&message, openai::error_type_for_status(status), code)
}

/// The text of an `error` value: Ollama's is a string; an OpenAI-style object is read too.
fn error_text(error: &Value) -> String {
    match error {
        Value::String(text) => text.clone(),
        _ => match error.get("message").and_then(Value::as_str) {
            Some(text) => text.to_string(),
            None => excerpt(&error.to_string()),
        },
    }
}

/// At most `EXCERPT_CHARS` characters of a provider's or client's text, cut on a character.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{}...", text.get(..end).unwrap_or_default()),
        None => text.to_string(),
    }
}

// ---------------------------------------------------------------- stream

/// An Ollama NDJSON stream (one chat response per line, the last with `done: true` and the token
/// counts) translated into OpenAI chunks as its bytes arrive.
pub struct Stream {
    context: AnswerContext,
    lines: LineReader,
    /// The role chunk that opens every OpenAI stream has been sent.
    started: bool,
    tool_calls: u32,
    /// The chunk with the finish reason has been sent.
    finished: bool,
    /// Nothing more may be sent: after an error event, or once `[DONE]` went out.
    closed: bool,
}

impl Stream {
    pub fn new(context: AnswerContext) -> Stream {
        Stream { context, lines: LineReader::default(), started: false, tool_calls: 0, finished: false, closed: false }
    }

    fn translate_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let line = line.trim_ascii();
        if line.is_empty() || self.closed || self.finished {
            return;
        }
        let response: Response = match serde_json::from_slice(line) {
            Ok(response) => response,
            Err(_) => {
                let text = String::from_utf8_lossy(line);
                self.fail(
                    out,
                    &format!("Ollama's stream carried a line that is not a chat response: {}", excerpt(&text)),
                );
                return;
            }
        };
        if let Some(message) = response.error_message() {
            self.fail(out, &message);
            return;
        }
        self.start(out);
        if !response.content().is_empty() {
            self.send(out, Delta::text(response.content()), None);
        }
        for call in response.tool_calls() {
            let index = self.tool_calls;
            self.tool_calls = self.tool_calls.saturating_add(1);
            let id = tool_call_id(call.id.as_deref(), &self.context.id, index);
            let mut delta = ToolCallDelta::start(index, &id, &call.function.name);
            // Ollama sends each call whole: name and arguments go out in one delta.
            delta.function.arguments = Some(call.function.arguments_text());
            self.send(out, Delta::tool_call(delta), None);
        }
        if response.done {
            self.send(out, Delta::default(), Some(finish_reason(response.done_reason.as_deref(), self.tool_calls > 0)));
            self.finished = true;
            if self.context.include_usage {
                ChatChunk::usage(&self.context, &self.context.id, response.usage()).write_sse(out);
            }
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.send(out, Delta::role(), None);
        }
    }

    fn send(&self, out: &mut Vec<u8>, delta: Delta, finish_reason: Option<FinishReason>) {
        ChatChunk::new(&self.context, &self.context.id, delta, finish_reason).write_sse(out);
    }

    /// One OpenAI error event, which the SDKs raise; the stream ends there, without `[DONE]`.
    fn fail(&mut self, out: &mut Vec<u8>, message: &str) {
        out.extend(sse::data_event(&openai::error_body(message, "api_error", None)));
        self.closed = true;
    }
}

impl StreamTranslator for Stream {
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        for line in self.lines.feed(chunk) {
            self.translate_line(&line, &mut out);
        }
        if self.lines.overflowed() && !self.closed && !self.finished {
            out.extend(super::oversized_stream_error("Ollama"));
            self.closed = true;
        }
        out
    }

    /// Also closes a stream that was cut short: a last line that is not JSON was cut mid-way and
    /// is dropped, and a finish reason is sent if Ollama's `done` line never came.
    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        for line in self.lines.finish() {
            if serde_json::from_slice::<Value>(&line).is_ok() {
                self.translate_line(&line, &mut out);
            }
        }
        if self.closed {
            return out;
        }
        if !self.finished {
            self.start(&mut out);
            let reason = if self.tool_calls > 0 { FinishReason::ToolCalls } else { FinishReason::Stop };
            self.send(&mut out, Delta::default(), Some(reason));
            self.finished = true;
        }
        out.extend_from_slice(sse::DONE);
        self.closed = true;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Auth, Format};
    use super::*;
    use openai::ChatRequest;

    const REQUEST_OPENAI: &str = include_str!("fixtures/ollama/request_conversation.openai.json");
    const REQUEST_OLLAMA: &str = include_str!("fixtures/ollama/request_conversation.ollama.json");
    const ANSWER_TEXT_OLLAMA: &str = include_str!("fixtures/ollama/answer_text.ollama.json");
    const ANSWER_TEXT_OPENAI: &str = include_str!("fixtures/ollama/answer_text.openai.json");
    const ANSWER_TOOLS_OLLAMA: &str = include_str!("fixtures/ollama/answer_tool_calls.ollama.json");
    const ANSWER_TOOLS_OPENAI: &str = include_str!("fixtures/ollama/answer_tool_calls.openai.json");
    const STREAM_TEXT: &str = include_str!("fixtures/ollama/stream_text.ndjson");
    const STREAM_TEXT_SSE: &str = include_str!("fixtures/ollama/stream_text.sse");
    const STREAM_TOOLS: &str = include_str!("fixtures/ollama/stream_tool_call.ndjson");
    const STREAM_TOOLS_SSE: &str = include_str!("fixtures/ollama/stream_tool_call.sse");
    const STREAM_ERROR: &str = include_str!("fixtures/ollama/stream_error.ndjson");
    const STREAM_ERROR_SSE: &str = include_str!("fixtures/ollama/stream_error.sse");

    fn context(model: &str, include_usage: bool) -> AnswerContext {
        AnswerContext { id: "chatcmpl-7f3a9c".into(), created: 1751920000, model: model.into(), include_usage }
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn translate(openai_request: &Value) -> Result<Value, Unsupported> {
        let request = ChatRequest::parse(&serde_json::to_vec(openai_request).unwrap()).unwrap();
        super::request(&request, "llama3.3", &FormatOptions::default())
            .map(|body| serde_json::from_slice(&body).unwrap())
    }

    /// A one-message request with `extra` fields merged in.
    fn simple_request(extra: Value) -> Value {
        let mut request = serde_json::json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] });
        for (key, value) in extra.as_object().unwrap() {
            request[key] = value.clone();
        }
        request
    }

    fn refusal(openai_request: Value) -> String {
        translate(&openai_request).unwrap_err().0
    }

    fn whole_stream(ndjson: &[u8], context: AnswerContext) -> Vec<u8> {
        let mut stream = Stream::new(context);
        let mut out = stream.feed(ndjson);
        out.extend(stream.finish());
        out
    }

    /// Each event's data: the JSON value, or the text for `[DONE]`.
    fn events(sse_bytes: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(sse_bytes).unwrap();
        assert!(text.is_empty() || text.ends_with("\n\n"), "unterminated event in {text:?}");
        text.split_terminator("\n\n")
            .map(|event| {
                let data = event.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {event:?}"));
                serde_json::from_str(data).unwrap_or_else(|_| Value::from(data))
            })
            .collect()
    }

    /// What the OpenAI SDK relies on: every chunk parses as a `chat.completion.chunk` of one id,
    /// the first carries the role, one carries the finish reason, then maybe usage, then `[DONE]`.
    fn assert_sdk_stream(sse_bytes: &[u8], context: &AnswerContext) -> Vec<ChatChunk> {
        let events = events(sse_bytes);
        let (last, chunks) = events.split_last().unwrap();
        assert_eq!(last, &Value::from("[DONE]"));
        let chunks: Vec<ChatChunk> = chunks.iter().map(|c| serde_json::from_value(c.clone()).unwrap()).collect();
        for chunk in &chunks {
            assert_eq!((chunk.id.as_str(), chunk.object.as_str()), (context.id.as_str(), "chat.completion.chunk"));
            assert_eq!((chunk.created, chunk.model.as_str()), (context.created, context.model.as_str()));
        }
        assert_eq!(chunks[0].choices[0].delta, Delta::role());
        let finished = positions(&chunks, |c| c.choices.first().is_some_and(|c| c.finish_reason.is_some()));
        let usage = positions(&chunks, |c| c.usage.is_some());
        let end = chunks.len() - 1;
        if context.include_usage {
            assert_eq!((finished, usage), (vec![end - 1], vec![end]));
            assert!(chunks[end].choices.is_empty());
        } else {
            assert_eq!((finished, usage), (vec![end], vec![]));
        }
        chunks
    }

    fn positions(chunks: &[ChatChunk], keep: impl Fn(&ChatChunk) -> bool) -> Vec<usize> {
        chunks.iter().enumerate().filter(|(_, chunk)| keep(chunk)).map(|(i, _)| i).collect()
    }

    // -------------------------------------------------------------- request

    #[test]
    fn path_is_the_base_path_then_chat() {
        let mut provider = Provider {
            name: "ollama".into(),
            format: Format::Ollama,
            host: "localhost:11434".into(),
            base_path: Format::Ollama.default_base_path().into(),
            auth: Auth::none(),
            models: Default::default(),
            api_version: None,
            options: FormatOptions::default(),
            serves_responses: false,
        };
        assert_eq!(provider.chat_path("llama3.3", true), "/api/chat");
        provider.base_path = "/ollama/api".into();
        assert_eq!(provider.chat_path("llama3.3", false), "/ollama/api/chat");
    }

    #[test]
    fn golden_conversation_request() {
        let request = ChatRequest::parse(REQUEST_OPENAI.as_bytes()).unwrap();
        let body = super::request(&request, "qwen2.5-coder:32b", &FormatOptions::default()).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json(REQUEST_OLLAMA));
        // Arguments keep the client's text and key order.
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains(r#""arguments":{"city":"Paris","unit":"celsius"}"#), "{text}");
    }

    #[test]
    fn stream_is_always_sent_explicitly() {
        assert_eq!(translate(&simple_request(serde_json::json!({}))).unwrap()["stream"], false);
        assert_eq!(translate(&simple_request(serde_json::json!({ "stream": false }))).unwrap()["stream"], false);
        assert_eq!(translate(&simple_request(serde_json::json!({ "stream": true }))).unwrap()["stream"], true);
    }

    #[test]
    fn sampling_parameters_become_options() {
        let ollama = translate(&simple_request(serde_json::json!({
            "max_completion_tokens": 99, "max_tokens": 5, "stop": "END", "temperature": 0, "seed": -7
        })))
        .unwrap();
        assert_eq!(
            ollama["options"],
            serde_json::json!({ "num_predict": 99, "stop": ["END"], "temperature": 0.0, "seed": -7 })
        );
        let plain = translate(&simple_request(serde_json::json!({}))).unwrap();
        assert!(plain.get("options").is_none(), "{plain}");
    }

    #[test]
    fn parameters_ollama_has_no_equivalent_for_are_dropped() {
        let ollama = translate(&simple_request(serde_json::json!({
            "user": "u", "logit_bias": { "1": 5 }, "logprobs": true, "top_logprobs": 3, "parallel_tool_calls": false,
            "reasoning_effort": "low", "store": true, "metadata": { "a": "b" }, "service_tier": "auto",
            "prediction": { "type": "content", "content": "x" }, "n": 1, "stream_options": { "include_usage": true }
        })))
        .unwrap();
        assert_eq!(
            ollama,
            serde_json::json!({ "model": "llama3.3", "messages": [{ "role": "user", "content": "hi" }], "stream": false })
        );
    }

    #[test]
    fn response_format_becomes_format() {
        let format = |response_format: Value| {
            translate(&simple_request(serde_json::json!({ "response_format": response_format })))
                .map(|o| o.get("format").cloned())
        };
        assert_eq!(format(serde_json::json!({ "type": "text" })), Ok(None));
        assert_eq!(format(serde_json::json!({ "type": "json_object" })), Ok(Some(Value::from("json"))));
        let schema = serde_json::json!({ "type": "object", "properties": { "age": { "type": "integer" } }, "required": ["age"] });
        assert_eq!(
            format(
                serde_json::json!({ "type": "json_schema", "json_schema": { "name": "person", "strict": true, "schema": schema } })
            ),
            Ok(Some(schema))
        );
        assert_eq!(
            format(serde_json::json!({ "type": "json_schema", "json_schema": { "name": "any" } })),
            Ok(Some(Value::from("json")))
        );
        assert!(format(serde_json::json!({ "type": "grammar" })).unwrap_err().0.contains("response_format"));
    }

    fn weather_and_time(tool_choice: Value) -> Result<Vec<String>, Unsupported> {
        let request = simple_request(serde_json::json!({
            "tools": [
                { "type": "function", "function": { "name": "get_weather", "parameters": { "type": "object" } } },
                { "type": "function", "function": { "name": "get_time", "parameters": { "type": "object" } } }
            ],
            "tool_choice": tool_choice
        }));
        translate(&request).map(|ollama| match ollama.get("tools") {
            None => Vec::new(),
            Some(tools) => {
                tools.as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap().to_string()).collect()
            }
        })
    }

    #[test]
    fn tool_choice_narrows_the_tools_ollama_sees() {
        let both = vec!["get_weather".to_string(), "get_time".to_string()];
        assert_eq!(weather_and_time(Value::Null), Ok(both.clone()));
        assert_eq!(weather_and_time(Value::from("auto")), Ok(both.clone()));
        assert_eq!(weather_and_time(Value::from("required")), Ok(both));
        assert_eq!(weather_and_time(Value::from("none")), Ok(vec![]));
        let named = serde_json::json!({ "type": "function", "function": { "name": "get_time" } });
        assert_eq!(weather_and_time(named), Ok(vec!["get_time".to_string()]));
        let unknown = serde_json::json!({ "type": "function", "function": { "name": "book_flight" } });
        assert!(weather_and_time(unknown).unwrap_err().0.contains("book_flight"));
        assert!(weather_and_time(Value::from("sometimes")).is_err());
    }

    #[test]
    fn only_function_tools_are_translated() {
        let custom =
            simple_request(serde_json::json!({ "tools": [{ "type": "custom", "function": { "name": "grep" } }] }));
        assert!(refusal(custom).contains("custom"));
    }

    #[test]
    fn images_must_be_inline_base64() {
        let with_image = |url: &str| {
            simple_request(serde_json::json!({ "messages": [{ "role": "user", "content": [
                { "type": "text", "text": "what is this?" },
                { "type": "image_url", "image_url": { "url": url } }
            ] }] }))
        };
        let ollama = translate(&with_image("data:image/webp;base64,UklGRg==")).unwrap();
        assert_eq!(
            ollama["messages"][0],
            serde_json::json!({ "role": "user", "content": "what is this?", "images": ["UklGRg=="] })
        );
        let refused = refusal(with_image("https://example.com/cat.png?signature=secret"));
        assert!(
            refused.contains("not by URL") && refused.contains("data:") && !refused.contains("secret"),
            "{refused}"
        );
        assert!(refusal(with_image("data:image/svg+xml,<svg/>")).contains("not base64"));
    }

    #[test]
    fn audio_and_files_are_refused() {
        let parts =
            |part: Value| simple_request(serde_json::json!({ "messages": [{ "role": "user", "content": [part] }] }));
        let audio =
            parts(serde_json::json!({ "type": "input_audio", "input_audio": { "data": "AAA=", "format": "wav" } }));
        assert!(refusal(audio).contains("audio"));
        let file = parts(serde_json::json!({ "type": "file", "file": { "file_id": "file-1" } }));
        assert!(refusal(file).contains("file"));
        assert!(refusal(simple_request(serde_json::json!({ "modalities": ["text", "audio"] }))).contains("audio"));
    }

    #[test]
    fn requests_ollama_cannot_answer_are_refused() {
        assert!(refusal(simple_request(serde_json::json!({ "n": 3 }))).contains("one choice"));
        let functions = simple_request(serde_json::json!({ "functions": [{ "name": "f", "parameters": {} }] }));
        assert!(refusal(functions).contains("tools"));
        assert!(refusal(simple_request(serde_json::json!({ "web_search_options": {} }))).contains("web"));
    }

    #[test]
    fn tool_results_are_named_after_the_nearest_call_with_their_id() {
        let call = |id: &str, name: &str| {
            serde_json::json!({ "role": "assistant", "content": "", "tool_calls": [
                { "id": id, "type": "function", "function": { "name": name, "arguments": "{}" } }
            ] })
        };
        let request = simple_request(serde_json::json!({ "messages": [
            { "role": "user", "content": "go" },
            call("call_0", "first"),
            { "role": "tool", "tool_call_id": "call_0", "content": "1" },
            call("call_0", "second"),
            { "role": "tool", "tool_call_id": "call_0", "content": "2" },
            { "role": "tool", "tool_call_id": "call_unknown", "content": "3" },
            { "role": "tool", "tool_call_id": "call_unknown", "name": "named", "content": "4" },
            { "role": "function", "name": "legacy", "content": "5" }
        ] }));
        let ollama = translate(&request).unwrap();
        let names: Vec<_> =
            ollama["messages"].as_array().unwrap().iter().map(|m| m.get("tool_name").cloned()).collect();
        let name = |n: &str| Some(Value::from(n));
        assert_eq!(names, vec![None, None, name("first"), None, name("second"), None, name("named"), name("legacy")]);
        assert_eq!(ollama["messages"][7]["role"], "tool");
    }

    #[test]
    fn assistant_arguments_must_be_a_json_object() {
        let with_arguments = |arguments: &str| {
            simple_request(serde_json::json!({ "messages": [
                { "role": "user", "content": "go" },
                { "role": "assistant", "tool_calls": [{ "id": "call_9", "type": "function", "function": { "name": "f", "arguments": arguments } }] },
                { "role": "tool", "tool_call_id": "call_9", "content": "ok" }
            ] }))
        };
        let ollama = translate(&with_arguments("  ")).unwrap();
        assert_eq!(
            ollama["messages"][1]["tool_calls"],
            serde_json::json!([{ "function": { "name": "f", "arguments": {} } }])
        );
        assert_eq!(ollama["messages"][1]["content"], "");
        for bad in ["{\"a\":", "[1,2]", "\"text\"", "null"] {
            assert!(refusal(with_arguments(bad)).contains("call_9"), "{bad}");
        }
    }

    #[test]
    fn an_assistant_refusal_is_what_it_said() {
        let request = simple_request(serde_json::json!({ "messages": [
            { "role": "user", "content": "help me with something bad" },
            { "role": "assistant", "content": null, "refusal": "I can't help with that." },
            { "role": "assistant", "content": [{ "type": "refusal", "refusal": "No." }] },
            { "role": "user", "content": "ok" }
        ] }));
        let ollama = translate(&request).unwrap();
        assert_eq!(ollama["messages"][1]["content"], "I can't help with that.");
        assert_eq!(ollama["messages"][2]["content"], "No.");
    }

    // -------------------------------------------------------------- answer

    #[test]
    fn golden_text_answer() {
        let out = answer(ANSWER_TEXT_OLLAMA.as_bytes(), &context("llama3.3", false)).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), json(ANSWER_TEXT_OPENAI));
        let completion: ChatCompletion = serde_json::from_slice(&out).unwrap();
        assert_eq!(completion.usage, Some(Usage::new(26, 298)));
    }

    #[test]
    fn golden_tool_call_answer() {
        let out = answer(ANSWER_TOOLS_OLLAMA.as_bytes(), &context("llama3.3", false)).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), json(ANSWER_TOOLS_OPENAI));
    }

    #[test]
    fn each_done_reason_becomes_a_finish_reason() {
        let call = r#","tool_calls":[{"function":{"name":"f","arguments":{"x":1}}}]"#;
        let cases = [
            (r#""done_reason":"stop","#, "", FinishReason::Stop),
            (r#""done_reason":"length","#, "", FinishReason::Length),
            (r#""done_reason":"load","#, "", FinishReason::Stop),
            (r#""done_reason":"unload","#, "", FinishReason::Stop),
            (r#""done_reason":"something new","#, "", FinishReason::Stop),
            ("", "", FinishReason::Stop),
            (r#""done_reason":"stop","#, call, FinishReason::ToolCalls),
            ("", call, FinishReason::ToolCalls),
            (r#""done_reason":"length","#, call, FinishReason::Length),
        ];
        for (reason, calls, expected) in cases {
            let body =
                format!(r#"{{"model":"m","message":{{"role":"assistant","content":"x"{calls}}},{reason}"done":true}}"#);
            let out = answer(body.as_bytes(), &context("m", false)).unwrap();
            let completion: ChatCompletion = serde_json::from_slice(&out).unwrap();
            assert_eq!(completion.choices[0].finish_reason, Some(expected), "{body}");
            assert_eq!(completion.usage, Some(Usage::new(0, 0)), "no counts read as none");
        }
    }

    #[test]
    fn arguments_become_compact_json_text_in_ollamas_key_order() {
        let arguments = |raw: &str| {
            let call: ResponseToolCall =
                serde_json::from_str(&format!(r#"{{"function":{{"name":"f","arguments":{raw}}}}}"#)).unwrap();
            call.function.arguments_text()
        };
        assert_eq!(arguments("{ \"b\" : [1, 2],\n \"a\": \"x y \\\" z\\\\\" }"), r#"{"b":[1,2],"a":"x y \" z\\"}"#);
        assert_eq!(arguments(r#""{\"a\": 1}""#), r#"{"a": 1}"#);
        assert_eq!(arguments("null"), "{}");
        assert_eq!(arguments("{}"), "{}");
    }

    #[test]
    fn thinking_is_dropped_from_answers() {
        let body = r#"{"model":"deepseek-r1:32b","message":{"role":"assistant","content":"4","thinking":"2+2 is 4"},"done":true,"done_reason":"stop","prompt_eval_count":9,"eval_count":30}"#;
        let completion: ChatCompletion =
            serde_json::from_slice(&answer(body.as_bytes(), &context("m", false)).unwrap()).unwrap();
        assert_eq!(completion.choices[0].message, AssistantMessage::new(Some("4".into()), vec![]));
        assert_eq!(completion.usage, Some(Usage::new(9, 30)));
    }

    #[test]
    fn an_error_body_is_not_an_answer() {
        let error = answer(br#"{"error":"llama runner process has terminated"}"#, &context("m", false)).unwrap_err();
        assert!(error.contains("llama runner process has terminated"), "{error}");
        assert!(answer(b"<html>502</html>", &context("m", false)).is_err());
    }

    #[test]
    fn counts_that_do_not_fit_never_panic() {
        let answer_with = |counts: &str| {
            let body = format!(r#"{{"message":{{"role":"assistant","content":"x"}},"done":true,{counts}}}"#);
            answer(body.as_bytes(), &context("m", false))
                .map(|out| serde_json::from_slice::<ChatCompletion>(&out).unwrap().usage)
        };
        let max = u64::MAX;
        assert_eq!(
            answer_with(&format!(r#""prompt_eval_count":{max},"eval_count":{max}"#)),
            Ok(Some(Usage { prompt_tokens: max, completion_tokens: max, total_tokens: max }))
        );
        let zero = Ok(Some(Usage::new(0, 0)));
        assert_eq!(answer_with(r#""prompt_eval_count":-5,"eval_count":1.5"#), zero);
        assert_eq!(answer_with(r#""prompt_eval_count":123456789012345678901234567890,"eval_count":"7""#), zero);
        assert!(answer_with(r#""prompt_eval_count":1e400"#).is_err());
    }

    // -------------------------------------------------------------- errors

    fn assert_error(status: u16, body: &[u8], message: &str, kind: &str, code: Option<&str>) {
        let out: Value = serde_json::from_slice(&error(status, body)).unwrap();
        let expected =
            serde_json::json!({ "error": { "message": message, "type": kind, "param": null, "code": code } });
        assert_eq!(out, expected, "{status} {:?}", String::from_utf8_lossy(body));
    }

    #[test]
    fn errors_in_ollamas_shape_for_each_status() {
        let not_found = Some("model_not_found");
        assert_error(
            404,
            br#"{"error":"model 'qwen9' not found"}"#,
            "model 'qwen9' not found",
            "invalid_request_error",
            not_found,
        );
        let pull = "model \"llama3.3\" not found, try pulling it first";
        assert_error(
            404,
            &serde_json::to_vec(&serde_json::json!({ "error": pull })).unwrap(),
            pull,
            "invalid_request_error",
            not_found,
        );
        let unmarshal = "json: cannot unmarshal array into Go struct field Message.messages.content of type string";
        assert_error(
            400,
            &serde_json::to_vec(&serde_json::json!({ "error": unmarshal })).unwrap(),
            unmarshal,
            "invalid_request_error",
            None,
        );
        let signin = br#"{"error":"unauthorized","signin_url":"https://ollama.com/connect?name=x"}"#;
        assert_error(401, signin, "unauthorized", "authentication_error", None);
        assert_error(
            403,
            br#"{"error":"remote inference is unavailable"}"#,
            "remote inference is unavailable",
            "permission_error",
            None,
        );
        assert_error(429, br#"{"error":"too many requests"}"#, "too many requests", "rate_limit_error", None);
        let crashed = "llama runner process has terminated: exit status 2";
        assert_error(
            500,
            &serde_json::to_vec(&serde_json::json!({ "error": crashed })).unwrap(),
            crashed,
            "api_error",
            None,
        );
        let busy = "server busy, please try again.  maximum pending requests exceeded";
        assert_error(503, &serde_json::to_vec(&serde_json::json!({ "error": busy })).unwrap(), busy, "api_error", None);
    }

    #[test]
    fn errors_that_are_not_ollamas_json() {
        // Gin's own answer to a wrong path: no model is missing.
        assert_error(404, b"404 page not found", "404 page not found", "invalid_request_error", None);
        let gateway = b"<html><body>502 Bad Gateway</body></html>\n";
        assert_error(502, gateway, "<html><body>502 Bad Gateway</body></html>", "api_error", None);
        assert_error(500, b"", "Ollama answered HTTP 500 without a message", "api_error", None);
        assert_error(
            400,
            br#"{"error":{"message":"bad","type":"invalid_request_error"}}"#,
            "bad",
            "invalid_request_error",
            None,
        );
        assert_error(500, br#"{"error":{"detail":1}}"#, r#"{"detail":1}"#, "api_error", None);
        assert_error(500, br#"{"error":null}"#, r#"{"error":null}"#, "api_error", None);
        assert_error(500, b"\xff\xfe\x00oops", "\u{fffd}\u{fffd}\u{0}oops", "api_error", None);
        let long = "x".repeat(500);
        assert_error(500, long.as_bytes(), &format!("{}...", &long[..EXCERPT_CHARS]), "api_error", None);
    }

    // -------------------------------------------------------------- stream

    #[test]
    fn golden_text_stream() {
        let context = context("deepseek-r1:32b", true);
        let out = whole_stream(STREAM_TEXT.as_bytes(), context.clone());
        assert_eq!(events(&out), events(STREAM_TEXT_SSE.as_bytes()));
        let chunks = assert_sdk_stream(&out, &context);
        let text: String = chunks.iter().filter_map(|c| c.choices.first()?.delta.content.clone()).collect();
        assert_eq!(text, "안녕하세요! 🌍 The sky is blue because of Rayleigh scattering.");
        assert_eq!(chunks.last().unwrap().usage, Some(Usage::new(26, 15)));
    }

    #[test]
    fn golden_tool_call_stream() {
        let context = context("qwen2.5-coder:32b", false);
        let out = whole_stream(STREAM_TOOLS.as_bytes(), context.clone());
        assert_eq!(events(&out), events(STREAM_TOOLS_SSE.as_bytes()));
        let chunks = assert_sdk_stream(&out, &context);
        let calls: Vec<_> =
            chunks.iter().filter_map(|c| c.choices.first()?.delta.tool_calls.clone()).flatten().collect();
        let arguments: Vec<Value> = calls.iter().map(|c| json(c.function.arguments.as_deref().unwrap())).collect();
        assert_eq!(
            arguments,
            vec![
                serde_json::json!({ "city": "Tokyo", "unit": "celsius" }),
                serde_json::json!({ "zone": "Asia/Tokyo", "note": "東京 ⏰" })
            ]
        );
    }

    #[test]
    fn a_tool_call_cut_inside_its_arguments_goes_out_whole_once_its_line_is_complete() {
        let cut = STREAM_TOOLS.find("\"unit\"").unwrap();
        let (first, rest) = STREAM_TOOLS.as_bytes().split_at(cut);
        let mut stream = Stream::new(context("qwen2.5-coder:32b", false));
        assert!(stream.feed(first).is_empty(), "nothing before the line is complete");
        let line_end = rest.iter().position(|b| *b == b'\n').unwrap() + 1;
        let out = stream.feed(&rest[..line_end]);
        let events = events(&out);
        assert_eq!(events.len(), 2, "role, then the call: {events:?}");
        let call = &events[1]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["function"]["arguments"], r#"{"city":"Tokyo","unit":"celsius"}"#);
        assert_eq!((call["index"].as_u64(), call["id"].as_str()), (Some(0), Some("call_7f3a9c_0")));
    }

    #[test]
    fn an_error_mid_stream_is_the_last_event() {
        let mut stream = Stream::new(context("llama3.3", true));
        let mut out = stream.feed(STREAM_ERROR.as_bytes());
        out.extend(stream.feed(b"{\"message\":{\"content\":\"more\"},\"done\":false}\n"));
        out.extend(stream.finish());
        out.extend(stream.finish());
        assert_eq!(events(&out), events(STREAM_ERROR_SSE.as_bytes()));
    }

    #[test]
    fn an_error_before_anything_else_is_the_only_event() {
        let out = whole_stream(b"{\"error\":\"model 'x' not found\"}\n", context("x", true));
        assert_eq!(
            events(&out),
            vec![
                serde_json::json!({ "error": { "message": "model 'x' not found", "type": "api_error", "param": null, "code": null } })
            ]
        );
    }

    #[test]
    fn a_line_that_is_not_json_ends_the_stream_with_an_error() {
        let out = whole_stream(
            b"{\"message\":{\"content\":\"a\"},\"done\":false}\n<html>oops\n{\"done\":true}\n",
            context("m", false),
        );
        let events = events(&out);
        assert_eq!(events.len(), 3, "{events:?}");
        let message = events[2]["error"]["message"].as_str().unwrap();
        assert!(message.contains("<html>oops"), "{message}");
    }

    #[test]
    fn a_stream_cut_short_still_closes_cleanly() {
        let text_lines: Vec<&str> = STREAM_TEXT.lines().collect();
        let cut_between_lines = text_lines[..5].join("\n") + "\n";
        let cut_mid_line = cut_between_lines.clone() + &text_lines[5][..40];
        for cut in [cut_between_lines, cut_mid_line] {
            let context = context("deepseek-r1:32b", true);
            let out = whole_stream(cut.as_bytes(), context.clone());
            let events = events(&out);
            assert_eq!(events.len(), 6, "role, 3 texts, finish, [DONE]: {events:?}");
            assert_eq!(events[4]["choices"][0]["finish_reason"], "stop");
            assert_eq!(events[5], "[DONE]");
            // No usage chunk: Ollama never said how many tokens it used.
            let context_without_usage = AnswerContext { include_usage: false, ..context };
            assert_sdk_stream(&out, &context_without_usage);
        }
        let tool_line = STREAM_TOOLS.lines().next().unwrap().to_string() + "\n";
        let out = whole_stream(tool_line.as_bytes(), context("m", false));
        assert_eq!(events(&out)[2]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(events(&whole_stream(b"", context("m", false))).len(), 3, "role, finish, [DONE]");
    }

    #[test]
    fn a_last_line_without_its_newline_is_read() {
        let trimmed = STREAM_TEXT.trim_end();
        let context = context("deepseek-r1:32b", true);
        assert_eq!(events(&whole_stream(trimmed.as_bytes(), context)), events(STREAM_TEXT_SSE.as_bytes()));
    }

    #[test]
    fn nothing_is_sent_after_done() {
        let mut stream = Stream::new(context("m", false));
        let mut out = stream.feed(b"{\"message\":{\"content\":\"a\"},\"done\":true,\"done_reason\":\"stop\"}\r\n");
        out.extend(stream.feed(b"{\"message\":{\"content\":\"late\"},\"done\":false}\n{\"error\":\"late\"}\n"));
        out.extend(stream.finish());
        assert_eq!(events(&out).len(), 4, "role, text, finish, [DONE]");
        assert!(stream.feed(b"{\"message\":{\"content\":\"later\"}}\n").is_empty());
        assert!(stream.finish().is_empty());
    }

    #[test]
    fn any_split_of_a_stream_translates_the_same() {
        let cut_mid_line = STREAM_TEXT.get(..STREAM_TEXT.len() - 60).unwrap();
        let crlf = STREAM_TOOLS.replace('\n', "\r\n");
        let fixtures = [STREAM_TEXT, STREAM_TOOLS, STREAM_ERROR, cut_mid_line, crlf.as_str()];
        for (number, fixture) in fixtures.iter().enumerate() {
            for include_usage in [false, true] {
                let context = context("m", include_usage);
                let whole = whole_stream(fixture.as_bytes(), context.clone());
                for seed in 0..300 {
                    let out = crate::provider::translate_in_pieces(&mut Stream::new(context.clone()), fixture.as_bytes(), seed);
                    assert_eq!(out, whole, "fixture {number}, seed {seed}");
                }
            }
        }
    }

    // -------------------------------------------------------------- robustness

    /// Deterministic junk: bytes of every value, JSON-looking fragments, broken UTF-8.
    fn junk(seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
        let fragments: [&[u8]; 12] = [
            b"{",
            b"}",
            b"\"done\":true",
            b"\"error\":",
            b"\n",
            b"\xf0\x9f",
            b"[",
            b"null",
            b"99999999999999999999999",
            b"\"message\":{\"content\":\"",
            b"\"tool_calls\":[{\"function\":{\"arguments\":",
            b"\r",
        ];
        let mut bytes = Vec::new();
        for _ in 0..(seed % 40) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match fragments.get((state % 16) as usize) {
                Some(fragment) => bytes.extend_from_slice(fragment),
                None => bytes.push((state >> 8) as u8),
            }
        }
        bytes
    }

    #[test]
    fn no_input_makes_it_panic() {
        let mut inputs: Vec<Vec<u8>> = (0..2000).map(junk).collect();
        for fixture in [STREAM_TEXT, STREAM_TOOLS, STREAM_ERROR, ANSWER_TEXT_OLLAMA, ANSWER_TOOLS_OLLAMA] {
            for end in 0..=fixture.len() {
                inputs.push(fixture.as_bytes()[..end].to_vec());
            }
        }
        for input in &inputs {
            let _ = answer(input, &context("m", true));
            let _ = error(500, input);
            let out = whole_stream(input, context("m", true));
            // Whatever came in, what goes out is complete SSE events.
            let _ = events(&out);
        }
    }
}
