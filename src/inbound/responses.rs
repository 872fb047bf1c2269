//! OpenAI's Responses API in (`POST /v1/responses`, the Agents SDK, Codex-style tools): a
//! request as a chat request for providers that do not serve it natively, and their chat
//! answers and streams back as a `response` object and its typed events.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::provider::openai::AnswerContext;
use crate::provider::Unsupported;
use crate::sse::{Event, EventReader};

// Read as a JSON tree, as the Messages translation is: typed models would cost the module
// more than it can spare (it must fit a 1 MiB ConfigMap).

fn text_field<'v>(value: &'v Value, field: &str) -> Option<&'v str> {
    value.get(field).and_then(Value::as_str)
}

/// Sets a field of a JSON object (every value this module writes to is one).
fn set(object: &mut Value, field: &str, value: Value) {
    if let Some(object) = object.as_object_mut() {
        object.insert(field.into(), value);
    }
}

fn kind(value: &Value) -> &str {
    text_field(value, "type").unwrap_or_default()
}

// ---------------------------------------------------------------- the router's look

/// A request the router refuses before any provider is asked: what is wrong, and the field.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub param: Option<&'static str>,
}

fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Invalid {
    Invalid { message: message.into(), param }
}

/// What the router role needs of a Responses request, checked as OpenAI checks it: a JSON
/// object with a `model` and an `input` (a string or an array of items; it may be left out
/// only where stored state supplies the conversation).
pub fn inspect(body: &[u8]) -> Result<(Value, String, bool), Invalid> {
    let request: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("request body is not valid JSON: {e}"), None))?;
    if !request.is_object() {
        return Err(invalid("request body must be a JSON object", None));
    }
    let model = match text_field(&request, "model") {
        Some(model) if !model.is_empty() => model.to_string(),
        _ => return Err(invalid("you must provide a `model` string", Some("model"))),
    };
    let stored = ["previous_response_id", "conversation", "prompt"].iter().any(|f| request.get(*f).is_some_and(|v| !v.is_null()));
    match request.get("input") {
        Some(Value::String(_)) | Some(Value::Array(_)) => {}
        None | Some(Value::Null) if stored => {}
        _ => return Err(invalid("`input` must be a string or an array of input items", Some("input"))),
    }
    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    Ok((request, model, stream))
}

/// The field of a request that needs state only OpenAI keeps (a stored response, a
/// conversation, a stored prompt, a background run) or a tool only OpenAI runs; `None` when
/// any chat provider can serve it. `store` counts only when the client asks for it: the SDKs
/// leave it out, and a gateway that refused every such request would serve no Responses client.
pub fn stateful_field(request: &Value) -> Option<(&'static str, String)> {
    let set = |field: &str| request.get(field).is_some_and(|v| !v.is_null() && *v != Value::Bool(false));
    for field in ["previous_response_id", "conversation", "prompt", "background"] {
        if set(field) {
            return Some((field, format!("`{field}`")));
        }
    }
    if request.get("store") == Some(&Value::Bool(true)) {
        return Some(("store", "`store: true`".into()));
    }
    let tools = request.get("tools").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if let Some((at, tool)) = tools.iter().enumerate().find(|(_, t)| kind(t) != "function") {
        return Some(("tools", format!("`tools[{at}]` (the built-in tool `{}`)", kind(tool))));
    }
    if let Some(choice) = request.get("tool_choice").filter(|c| c.is_object() && kind(c) != "function") {
        return Some(("tool_choice", format!("`tool_choice` of type `{}`", kind(choice))));
    }
    let items = request.get("input").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if let Some(at) = items.iter().position(|i| kind(i) == "item_reference") {
        return Some(("input", format!("`input[{at}]` (an `item_reference` to a stored item)")));
    }
    None
}

/// The 400 for a stateful field on a chain with providers that only have chat completions.
pub fn stateful_message(field: &str, chain: &str, translated: &[&str]) -> String {
    format!(
        "{field} needs state or tools only OpenAI's Responses API has, and chain `{chain}` may fail over to providers \
         that serve Responses through chat completions ({}), which cannot honour it. Send the whole conversation in \
         `input` with `store` left out or false, use function tools, or route this model to a chain whose providers \
         all have `responses: true`",
        translated.join(", ")
    )
}

// ---------------------------------------------------------------- request

/// A content part of a user, system or developer message as a chat content part.
fn input_part(part: &Value) -> Result<Value, String> {
    match kind(part) {
        "input_text" | "output_text" | "text" => Ok(json!({"type": "text", "text": text_field(part, "text").unwrap_or_default()})),
        "input_image" => {
            let url = text_field(part, "image_url").ok_or("an `input_image` by `file_id` is stored at OpenAI; send `image_url`")?;
            let mut image = json!({"url": url});
            if let Some(detail) = part.get("detail").filter(|d| d.is_string()) {
                set(&mut image, "detail", detail.clone());
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        "input_file" => {
            let data = text_field(part, "file_data").ok_or("an `input_file` by `file_id` or `file_url` cannot be translated; send `file_data`")?;
            let mut file = json!({"file_data": data});
            if let Some(name) = part.get("filename").filter(|n| n.is_string()) {
                set(&mut file, "filename", name.clone());
            }
            Ok(json!({"type": "file", "file": file}))
        }
        other => Err(format!("a content part of type `{other}` cannot be translated")),
    }
}

/// The text of parts that must all be text (system prompts, assistant turns, tool outputs).
fn texts(content: &Value, what: &str) -> Result<String, String> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Array(parts) => {
            let texts: Option<Vec<&str>> = parts
                .iter()
                .map(|p| match kind(p) {
                    "input_text" | "output_text" | "text" => text_field(p, "text"),
                    "refusal" => text_field(p, "refusal"),
                    _ => None,
                })
                .collect();
            texts.map(|t| t.join("\n\n")).ok_or_else(|| format!("{what} may hold only text"))
        }
        _ => Err(format!("{what} must be a string or an array of content parts")),
    }
}

/// One input item into the chat messages so far: function calls join the assistant message
/// before them, as a chat request carries them.
fn add_item(messages: &mut Vec<Value>, item: &Value) -> Result<(), String> {
    let item_kind = match kind(item) {
        "" if item.get("role").is_some() => "message",
        other => other,
    };
    match item_kind {
        "message" => {
            let content = item.get("content").unwrap_or(&Value::Null);
            let message = match text_field(item, "role") {
                Some("user") => match content {
                    Value::String(text) => json!({"role": "user", "content": text}),
                    Value::Array(parts) => json!({"role": "user", "content": parts.iter().map(input_part).collect::<Result<Vec<_>, _>>()?}),
                    _ => return Err("`content` must be a string or an array of content parts".into()),
                },
                Some("system" | "developer") => json!({"role": "system", "content": texts(content, "a system or developer message")?}),
                Some("assistant") => json!({"role": "assistant", "content": texts(content, "an assistant message")?}),
                _ => return Err("`role` must be user, assistant, system or developer".into()),
            };
            messages.push(message);
        }
        "function_call" => {
            let (Some(id), Some(name)) = (text_field(item, "call_id"), text_field(item, "name")) else {
                return Err("a `function_call` needs `call_id` and `name`".into());
            };
            let call = json!({"id": id, "type": "function", "function": {"name": name, "arguments": text_field(item, "arguments").unwrap_or("{}")}});
            match messages.last_mut().filter(|m| m["role"] == "assistant") {
                Some(Value::Object(last)) => match last.get_mut("tool_calls") {
                    Some(Value::Array(calls)) => calls.push(call),
                    _ => {
                        if last.get("content").and_then(Value::as_str) == Some("") {
                            last.insert("content".into(), Value::Null);
                        }
                        last.insert("tool_calls".into(), json!([call]));
                    }
                },
                _ => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let id = text_field(item, "call_id").ok_or("a `function_call_output` needs `call_id`")?;
            let output = texts(item.get("output").unwrap_or(&Value::Null), "a `function_call_output` sent to this provider")?;
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": output}));
        }
        // The model's own reasoning: no other provider reads it (as Anthropic's `thinking`).
        "reasoning" => {}
        other => return Err(format!("an item of type `{other}` cannot be translated")),
    }
    Ok(())
}

/// `text.format` as chat's `response_format`; plain text needs none.
fn response_format(text: &Value) -> Option<Value> {
    let format = text.get("format")?;
    match kind(format) {
        "json_object" => Some(json!({"type": "json_object"})),
        "json_schema" => {
            let mut schema = Map::new();
            for field in ["name", "schema", "description", "strict"] {
                if let Some(value) = format.get(field).filter(|v| !v.is_null()) {
                    schema.insert(field.into(), value.clone());
                }
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        _ => None,
    }
}

/// The client's Responses request as an OpenAI chat request (its model still the client's: the
/// attempt maps it as for chat), whether it streams, and what the answer echoes of it.
/// `stream_options.include_usage` is always set on a stream: `response.completed` reports usage.
pub fn chat_request(body: &[u8]) -> Result<(Vec<u8>, bool, Value), Unsupported> {
    let not_responses = |why: &str| Unsupported(format!("not a Responses request: {why}"));
    let request: Value = serde_json::from_slice(body).map_err(|e| not_responses(&e.to_string()))?;
    let model = text_field(&request, "model").ok_or_else(|| not_responses("`model` must be a string"))?;
    if let Some((_, field)) = stateful_field(&request) {
        return Err(Unsupported(format!("{field} needs state or tools only OpenAI's Responses API has")));
    }
    let stream = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut messages = Vec::new();
    match request.get("instructions") {
        Some(Value::String(text)) if !text.is_empty() => messages.push(json!({"role": "system", "content": text})),
        None | Some(Value::Null | Value::String(_)) => {}
        Some(_) => return Err(Unsupported("`instructions` must be a string".into())),
    }
    match request.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for (at, item) in items.iter().enumerate() {
                add_item(&mut messages, item).map_err(|why| Unsupported(format!("input[{at}]: {why}")))?;
            }
        }
        _ => return Err(not_responses("`input` must be a string or an array of items")),
    }
    let mut chat = Map::new();
    chat.insert("model".into(), model.into());
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(max) = request.get("max_output_tokens").filter(|v| v.is_u64()) {
        chat.insert("max_tokens".into(), max.clone());
    }
    for field in ["temperature", "top_p"] {
        if let Some(value) = request.get(field).filter(|v| v.is_number()) {
            chat.insert(field.into(), value.clone());
        }
    }
    if stream {
        chat.insert("stream".into(), true.into());
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let tools = request.get("tools").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if !tools.is_empty() {
        let tools: Vec<Value> = tools
            .iter()
            .map(|tool| {
                let mut function = Map::new();
                for field in ["name", "description", "parameters", "strict"] {
                    if let Some(value) = tool.get(field).filter(|v| !v.is_null()) {
                        function.insert(field.into(), value.clone());
                    }
                }
                json!({"type": "function", "function": function})
            })
            .collect();
        chat.insert("tools".into(), Value::Array(tools));
        match request.get("tool_choice") {
            Some(Value::String(choice)) => {
                chat.insert("tool_choice".into(), choice.as_str().into());
            }
            Some(choice @ Value::Object(_)) => {
                let name = text_field(choice, "name").ok_or_else(|| Unsupported("`tool_choice` of type `function` needs `name`".into()))?;
                chat.insert("tool_choice".into(), json!({"type": "function", "function": {"name": name}}));
            }
            _ => {}
        }
        if let Some(parallel) = request.get("parallel_tool_calls").filter(|v| v.is_boolean()) {
            chat.insert("parallel_tool_calls".into(), parallel.clone());
        }
    }
    if let Some(format) = request.get("text").and_then(response_format) {
        chat.insert("response_format".into(), format);
    }
    if let Some(user) = text_field(&request, "user").or(text_field(&request, "safety_identifier")) {
        chat.insert("user".into(), user.into());
    }
    let bytes = serde_json::to_vec(&Value::Object(chat)).map_err(|e| Unsupported(format!("the translated request could not be written: {e}")))?;
    Ok((bytes, stream, echo(&request)))
}

/// The request's parameters a `response` object repeats, with OpenAI's defaults.
fn echo(request: &Value) -> Value {
    let field = |name: &str, default: Value| request.get(name).filter(|v| !v.is_null()).cloned().unwrap_or(default);
    json!({
        "instructions": field("instructions", Value::Null),
        "max_output_tokens": field("max_output_tokens", Value::Null),
        "metadata": field("metadata", json!({})),
        "parallel_tool_calls": field("parallel_tool_calls", true.into()),
        "previous_response_id": null,
        "store": false,
        "temperature": field("temperature", Value::Null),
        "text": field("text", json!({"format": {"type": "text"}})),
        "tool_choice": field("tool_choice", "auto".into()),
        "tools": field("tools", json!([])),
        "top_p": field("top_p", Value::Null),
        "user": field("user", Value::Null),
    })
}

// ---------------------------------------------------------------- answer

/// A chat usage as a Responses usage.
fn usage(chat: &Value) -> Value {
    let count = |value: Option<&Value>| value.and_then(Value::as_u64).unwrap_or(0);
    let input = count(chat.get("prompt_tokens"));
    let output = count(chat.get("completion_tokens"));
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": count(chat.pointer("/prompt_tokens_details/cached_tokens"))},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": count(chat.pointer("/completion_tokens_details/reasoning_tokens"))},
        "total_tokens": input.saturating_add(output),
    })
}

/// The status a finish reason gives the response, and why it is incomplete.
fn status(finish_reason: Option<&str>) -> (&'static str, Value) {
    match finish_reason {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// The id a chat completion's id gives the response and its items (`chatcmpl-X`: `X`).
fn id_stem<'a>(openai_id: Option<&'a str>, context: &'a AnswerContext) -> &'a str {
    let id = openai_id.unwrap_or(&context.id);
    id.strip_prefix("chatcmpl-").unwrap_or(id)
}

fn call_item(call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    let id = format!("fc_{}", call_id.strip_prefix("call_").unwrap_or(call_id));
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status})
}

fn message_item(id: &str, content: Vec<Value>, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A `response` object: the request's echo, and what the provider said.
fn response(echo: &Value, stem: &str, context: &AnswerContext, model: &str, status: &str, output: Vec<Value>) -> Value {
    let mut response = echo.as_object().cloned().unwrap_or_default();
    for (field, value) in [
        ("id", json!(format!("resp_{stem}"))),
        ("object", "response".into()),
        ("created_at", context.created.into()),
        ("status", status.into()),
        ("error", Value::Null),
        ("incomplete_details", Value::Null),
        ("model", model.into()),
        ("output", Value::Array(output)),
        ("usage", Value::Null),
    ] {
        response.insert(field.into(), value);
    }
    Value::Object(response)
}

/// An OpenAI `chat.completion` as a Responses `response`.
pub fn answer(body: &[u8], context: &AnswerContext, echo: &Value) -> Result<Vec<u8>, String> {
    let completion: Value = serde_json::from_slice(body).map_err(|e| format!("not a chat completion: {e}"))?;
    let choice = completion.get("choices").and_then(Value::as_array).and_then(|c| c.first()).ok_or("a chat completion without choices")?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let stem = id_stem(text_field(&completion, "id"), context);
    let mut content = Vec::new();
    if let Some(text) = text_field(message, "content").filter(|t| !t.is_empty()) {
        content.push(text_part(text));
    }
    if let Some(refusal) = text_field(message, "refusal").filter(|t| !t.is_empty()) {
        content.push(json!({"type": "refusal", "refusal": refusal}));
    }
    let mut output = Vec::new();
    if !content.is_empty() {
        output.push(message_item(&format!("msg_{stem}"), content, "completed"));
    }
    for call in message.get("tool_calls").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        let function = call.get("function").unwrap_or(&Value::Null);
        let name = text_field(function, "name").ok_or("a tool call without a function name")?;
        output.push(call_item(text_field(call, "id").unwrap_or_default(), name, text_field(function, "arguments").unwrap_or_default(), "completed"));
    }
    let (status, incomplete) = status(text_field(choice, "finish_reason"));
    let mut response = response(echo, stem, context, text_field(&completion, "model").unwrap_or(&context.model), status, output);
    set(&mut response, "incomplete_details", incomplete);
    set(&mut response, "usage", usage(completion.get("usage").unwrap_or(&Value::Null)));
    Ok(response.to_string().into_bytes())
}

// ---------------------------------------------------------------- stream

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing sent: `response.created` waits for the first chunk (its id and model).
    Waiting,
    Answering,
    /// `response.completed` (or an error event) is out: nothing follows.
    Closed,
}

/// The output item being streamed: its index in `output`, and for text what came so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Open {
    Text(usize, String),
    Tool(usize),
}

/// OpenAI `chat.completion.chunk`s as the Responses API's typed events, as they arrive:
/// `response.created` and `response.in_progress`, per output item `response.output_item.added`,
/// its content (`response.content_part.added`, `response.output_text.delta`...; or
/// `response.function_call_arguments.delta`...) and `response.output_item.done`, then
/// `response.completed` (or `response.incomplete`) with the whole response once the provider's
/// stream ends. Every event carries its `sequence_number`.
pub struct Stream {
    context: AnswerContext,
    echo: Value,
    events: EventReader,
    phase: Phase,
    sequence: u64,
    stem: String,
    model: String,
    /// Every output item so far, the open one as it stands.
    output: Vec<Value>,
    open: Option<Open>,
    /// By chat tool call index: the output index it became.
    tools: BTreeMap<u64, usize>,
    finish_reason: Option<String>,
    usage: Value,
}

impl Stream {
    pub fn new(context: AnswerContext, echo: Value) -> Stream {
        let stem = id_stem(None, &context).to_string();
        let model = context.model.clone();
        Stream {
            context,
            echo,
            events: EventReader::default(),
            phase: Phase::Waiting,
            sequence: 0,
            stem,
            model,
            output: Vec::new(),
            open: None,
            tools: BTreeMap::new(),
            finish_reason: None,
            usage: Value::Null,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, name: &str, mut data: Value) {
        set(&mut data, "type", name.into());
        set(&mut data, "sequence_number", self.sequence.into());
        self.sequence += 1;
        out.extend(format!("event: {name}\ndata: {data}\n\n").into_bytes());
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
            self.fail("the provider's stream carried an event longer than 16 MiB; the stream ends here", "bad_provider_answer", &mut out);
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
            let code = text_field(error, "code").or(text_field(error, "type")).unwrap_or("api_error").to_string();
            self.fail(&message, &code, out);
            return;
        }
        self.start(text_field(&chunk, "id"), text_field(&chunk, "model"), out);
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = usage.clone();
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

    fn snapshot(&self, status: &str) -> Value {
        response(&self.echo, &self.stem, &self.context, &self.model, status, self.output.clone())
    }

    fn start(&mut self, id: Option<&str>, model: Option<&str>, out: &mut Vec<u8>) {
        if self.phase != Phase::Waiting {
            return;
        }
        self.phase = Phase::Answering;
        self.stem = id_stem(id, &self.context).to_string();
        if let Some(model) = model {
            self.model = model.to_string();
        }
        let response = self.snapshot("in_progress");
        self.emit(out, "response.created", json!({"response": response.clone()}));
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    fn item_id(&self, index: usize) -> String {
        self.output.get(index).and_then(|item| text_field(item, "id")).unwrap_or_default().to_string()
    }

    /// The open item is complete: its done events, and its final form in `output`.
    fn close_item(&mut self, out: &mut Vec<u8>) {
        match self.open.take() {
            Some(Open::Text(index, text)) => {
                let id = self.item_id(index);
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = at.clone();
                set(&mut done, "text", text.as_str().into());
                set(&mut done, "logprobs", json!([]));
                self.emit(out, "response.output_text.done", done);
                let mut part = at;
                set(&mut part, "part", text_part(&text));
                self.emit(out, "response.content_part.done", part);
                let item = message_item(&id, vec![text_part(&text)], "completed");
                self.item_done(index, item, out);
            }
            Some(Open::Tool(index)) => {
                let Some(item) = self.output.get(index).cloned() else {
                    return;
                };
                let arguments = text_field(&item, "arguments").unwrap_or_default();
                let done = json!({"item_id": self.item_id(index), "output_index": index, "arguments": arguments, "name": item.get("name")});
                self.emit(out, "response.function_call_arguments.done", done);
                let mut item = item;
                set(&mut item, "status", "completed".into());
                self.item_done(index, item, out);
            }
            None => {}
        }
    }

    fn item_done(&mut self, index: usize, item: Value, out: &mut Vec<u8>) {
        if let Some(slot) = self.output.get_mut(index) {
            *slot = item.clone();
        }
        self.emit(out, "response.output_item.done", json!({"output_index": index, "item": item}));
    }

    fn open_item(&mut self, item: Value, out: &mut Vec<u8>) -> usize {
        self.close_item(out);
        let index = self.output.len();
        self.output.push(item.clone());
        self.emit(out, "response.output_item.added", json!({"output_index": index, "item": item}));
        index
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = match &mut self.open {
            Some(Open::Text(index, so_far)) => {
                so_far.push_str(text);
                *index
            }
            _ => {
                let texts = self.output.iter().filter(|i| kind(i) == "message").count();
                let id = if texts == 0 { format!("msg_{}", self.stem) } else { format!("msg_{}_{}", self.stem, self.output.len()) };
                let index = self.open_item(message_item(&id, Vec::new(), "in_progress"), out);
                let part = json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part("")});
                self.emit(out, "response.content_part.added", part);
                self.open = Some(Open::Text(index, text.to_string()));
                index
            }
        };
        let delta = json!({"item_id": self.item_id(index), "output_index": index, "content_index": 0, "delta": text, "logprobs": []});
        self.emit(out, "response.output_text.delta", delta);
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<u8>) {
        let function = call.get("function").unwrap_or(&Value::Null);
        let at = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let index = match self.tools.get(&at) {
            Some(index) => *index,
            None => {
                let item = call_item(text_field(call, "id").unwrap_or_default(), text_field(function, "name").unwrap_or_default(), "", "in_progress");
                let index = self.open_item(item, out);
                self.open = Some(Open::Tool(index));
                self.tools.insert(at, index);
                index
            }
        };
        if let Some(arguments) = text_field(function, "arguments").filter(|a| !a.is_empty()) {
            if let Some(Value::String(so_far)) = self.output.get_mut(index).and_then(|item| item.get_mut("arguments")) {
                so_far.push_str(arguments);
            }
            let delta = json!({"item_id": self.item_id(index), "output_index": index, "delta": arguments});
            self.emit(out, "response.function_call_arguments.delta", delta);
        }
    }

    /// The provider's stream ended: the last item closes, then the whole response.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.start(None, None, out);
        self.close_item(out);
        let (status, incomplete) = status(self.finish_reason.as_deref());
        let mut response = self.snapshot(status);
        set(&mut response, "incomplete_details", incomplete);
        set(&mut response, "usage", usage(&self.usage));
        let name = if status == "completed" { "response.completed" } else { "response.incomplete" };
        self.emit(out, name, json!({"response": response}));
        self.phase = Phase::Closed;
    }

    /// An error mid-stream: OpenAI's `error` event, and nothing after it.
    fn fail(&mut self, message: &str, code: &str, out: &mut Vec<u8>) {
        self.emit(out, "error", json!({"code": code, "message": message, "param": null}));
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
        // A stream that ended without `[DONE]` still ends with the whole response.
        self.end(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::StreamTranslator;

    const CONVERSATION_REQUEST: &str = include_str!("fixtures/responses/request_conversation.responses.json");
    const CONVERSATION_TRANSLATED: &str = include_str!("fixtures/responses/request_conversation.openai.json");
    const TOOLS_REQUEST: &str = include_str!("fixtures/responses/request_tools.responses.json");
    const TOOLS_TRANSLATED: &str = include_str!("fixtures/responses/request_tools.openai.json");
    const TEXT_ANSWER: &str = include_str!("fixtures/anthropic/answer_text.openai.json");
    const TEXT_ANSWER_TRANSLATED: &str = include_str!("fixtures/responses/answer_text.responses.json");
    const TOOL_ANSWER: &str = include_str!("fixtures/anthropic/answer_tool_use.openai.json");
    const TOOL_ANSWER_TRANSLATED: &str = include_str!("fixtures/responses/answer_tool_use.responses.json");
    const TEXT_STREAM: &str = include_str!("fixtures/responses/stream_text.openai.sse");
    const TEXT_STREAM_TRANSLATED: &str = include_str!("fixtures/responses/stream_text.responses.sse");
    const TOOL_STREAM: &str = include_str!("fixtures/anthropic/stream_tool_use.openai.sse");
    const TOOL_STREAM_TRANSLATED: &str = include_str!("fixtures/responses/stream_tool_use.responses.sse");
    const ERROR_STREAM: &str = include_str!("fixtures/anthropic/stream_error.openai.sse");
    const ERROR_STREAM_TRANSLATED: &str = include_str!("fixtures/responses/stream_error.responses.sse");
    const CUT_BY_LENGTH_STREAM: &str = include_str!("fixtures/anthropic/stream_text.openai.sse");

    fn context() -> AnswerContext {
        AnswerContext { id: "chatcmpl-llmf1".into(), created: 1_700_000_000, model: "gpt-4o".into(), include_usage: true }
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn translated(body: &Value) -> Result<Value, String> {
        chat_request(body.to_string().as_bytes()).map(|(bytes, _, _)| serde_json::from_slice(&bytes).unwrap()).map_err(|u| u.0)
    }

    fn plain_echo() -> Value {
        echo(&json!({"model": "gpt-4o", "input": "hi"}))
    }

    fn streamed(stream: &str) -> String {
        let mut translator = Stream::new(context(), plain_echo());
        let mut out = translator.feed(stream.as_bytes());
        out.extend(translator.finish());
        String::from_utf8(out).unwrap()
    }

    /// Each event's name, checked against its data's `type` and numbered in order.
    fn event_names(stream: &str) -> Vec<String> {
        let mut names = Vec::new();
        for (number, block) in stream.split_terminator("\n\n").enumerate() {
            let (name, data) = block.split_once('\n').unwrap();
            let name = name.strip_prefix("event: ").unwrap();
            let data = json(data.strip_prefix("data: ").unwrap());
            assert_eq!(data["type"], name);
            assert_eq!(data["sequence_number"], number as u64, "{block}");
            names.push(name.to_string());
        }
        names
    }

    // ------------------------------------------------------------ request

    #[test]
    fn golden_conversation_with_instructions_developer_images_sampling_and_format() {
        let (bytes, stream, echo) = chat_request(CONVERSATION_REQUEST.as_bytes()).unwrap();
        assert!(stream);
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), json(CONVERSATION_TRANSLATED));
        assert_eq!((echo["instructions"].as_str(), echo["max_output_tokens"].as_u64()), (Some("You are a concise assistant."), Some(300)));
        assert_eq!(echo["metadata"], json!({"team": "search"}));
    }

    #[test]
    fn golden_function_calls_and_their_outputs_a_tools_second_turn() {
        assert_eq!(translated(&json(TOOLS_REQUEST)).unwrap(), json(TOOLS_TRANSLATED));
    }

    #[test]
    fn the_translation_is_a_chat_request_every_provider_translation_reads() {
        for request in [CONVERSATION_REQUEST, TOOLS_REQUEST] {
            let (bytes, _, _) = chat_request(request.as_bytes()).unwrap();
            let chat = crate::provider::openai::ChatRequest::parse(&bytes).unwrap();
            assert!(chat.other.is_empty(), "only fields chat completions knows: {:?}", chat.other);
            let options = crate::provider::FormatOptions::default();
            crate::provider::anthropic::request(&chat, "claude-sonnet-4-5", &options).unwrap();
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
        let body = json!({"model": "m", "input": "hi"});
        assert_eq!(translated(&body).unwrap(), json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let body = json!({"model": "m", "input": [{"role": "user", "content": "hi"}], "store": false, "background": false, "tools": [],
            "tool_choice": "auto", "instructions": ""});
        assert_eq!(translated(&body).unwrap(), json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        let body = json!({"model": "m", "input": [{"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "ok"}]});
        assert_eq!(translated(&body).unwrap()["messages"], json!([
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]));
    }

    #[test]
    fn stateful_fields_and_built_in_tools_are_named_and_never_dropped() {
        let with = |field: &str, value: Value| {
            let mut body = json!({"model": "m", "input": "hi"});
            body[field] = value;
            body
        };
        let cases = [
            (with("previous_response_id", json!("resp_1")), "previous_response_id", "`previous_response_id`"),
            (with("conversation", json!("conv_1")), "conversation", "`conversation`"),
            (with("prompt", json!({"id": "pmpt_1"})), "prompt", "`prompt`"),
            (with("background", json!(true)), "background", "`background`"),
            (with("store", json!(true)), "store", "`store: true`"),
            (with("tools", json!([{"type": "function", "name": "f"}, {"type": "web_search"}])), "tools", "`tools[1]` (the built-in tool `web_search`)"),
            (with("tools", json!([{"type": "file_search", "vector_store_ids": ["vs_1"]}])), "tools", "`file_search`"),
            (with("tools", json!([{"type": "code_interpreter", "container": {"type": "auto"}}])), "tools", "`code_interpreter`"),
            (with("tool_choice", json!({"type": "web_search_preview"})), "tool_choice", "`tool_choice` of type `web_search_preview`"),
            (with("input", json!([{"role": "user", "content": "hi"}, {"type": "item_reference", "id": "msg_1"}])), "input", "`input[1]`"),
        ];
        for (body, param, named) in cases {
            let (field, description) = stateful_field(&body).unwrap();
            assert_eq!(field, param);
            assert!(description.contains(named), "{description} should name {named}");
            let why = translated(&body).unwrap_err();
            assert!(why.contains(named), "the translation refuses it too: {why}");
        }
        for body in [with("store", json!(false)), with("background", json!(false)), with("previous_response_id", Value::Null), json!({"model": "m", "input": "hi"})] {
            assert_eq!(stateful_field(&body), None, "{body}");
        }
        let message = stateful_message("`store: true`", "default", &["claude", "gemini"]);
        assert!(message.contains("chain `default`") && message.contains("(claude, gemini)") && message.contains("responses: true"), "{message}");
    }

    #[test]
    fn what_cannot_be_carried_is_refused_naming_it() {
        let input = |items: Value| json!({"model": "m", "input": items});
        let cases = [
            (input(json!([{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}])), "input[0]: an `input_image` by `file_id`"),
            (input(json!([{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/y.pdf"}]}])), "input[0]: an `input_file`"),
            (input(json!([{"role": "user", "content": [{"type": "input_audio"}]}])), "input[0]: a content part of type `input_audio`"),
            (input(json!([{"role": "system", "content": [{"type": "input_image", "image_url": "u"}]}])), "input[0]: a system or developer message may hold only text"),
            (input(json!([{"role": "tool", "content": "x"}])), "input[0]: `role`"),
            (input(json!([{"type": "computer_call", "call_id": "c"}])), "input[0]: an item of type `computer_call`"),
            (input(json!([{"type": "function_call", "name": "f"}])), "input[0]: a `function_call` needs `call_id`"),
            (input(json!(5)), "not a Responses request"),
            (json!({"model": "m", "input": "hi", "instructions": [{"role": "user"}]}), "`instructions` must be a string"),
        ];
        for (body, expected) in cases {
            let why = translated(&body).unwrap_err();
            assert!(why.contains(expected), "{why} should name {expected}");
        }
    }

    #[test]
    fn the_router_refuses_what_openai_would() {
        assert!(inspect(br#"{"model":"m","input":"hi"}"#).is_ok());
        assert!(inspect(br#"{"model":"m","input":"hi","stream":true}"#).unwrap().2);
        assert!(inspect(br#"{"model":"m","previous_response_id":"resp_1"}"#).is_ok(), "stored state may supply the input");
        assert_eq!(inspect(br#"{"model":"m"}"#).unwrap_err().param, Some("input"));
        assert_eq!(inspect(br#"{"model":"m","input":{}}"#).unwrap_err().param, Some("input"));
        assert_eq!(inspect(br#"{"input":"hi"}"#).unwrap_err().param, Some("model"));
        assert_eq!(inspect(br#"{"model":"","input":"hi"}"#).unwrap_err().param, Some("model"));
        assert_eq!(inspect(br#"[1]"#).unwrap_err().param, None);
        assert!(inspect(b"{nope").unwrap_err().message.starts_with("request body is not valid JSON"));
    }

    // ------------------------------------------------------------ answer

    #[test]
    fn golden_answers_text_and_function_calls() {
        let echo = echo(&json!({"model": "gpt-4o", "input": "hi", "instructions": "Be brief.", "max_output_tokens": 50, "temperature": 0.2}));
        assert_eq!(json(&String::from_utf8(answer(TEXT_ANSWER.as_bytes(), &context(), &echo).unwrap()).unwrap()), json(TEXT_ANSWER_TRANSLATED));
        let echo = super::echo(&json!({"model": "gpt-4o", "input": "hi", "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]}));
        assert_eq!(json(&String::from_utf8(answer(TOOL_ANSWER.as_bytes(), &context(), &echo).unwrap()).unwrap()), json(TOOL_ANSWER_TRANSLATED));
    }

    #[test]
    fn finish_reasons_become_a_status_and_refusals_a_refusal_part() {
        for (finish, status, reason) in [("stop", "completed", Value::Null), ("tool_calls", "completed", Value::Null),
            ("length", "incomplete", json!({"reason": "max_output_tokens"})), ("content_filter", "incomplete", json!({"reason": "content_filter"}))] {
            let body = json!({"id": "chatcmpl-1", "model": "m", "choices": [{"message": {"content": "x"}, "finish_reason": finish}]});
            let out = json(&String::from_utf8(answer(body.to_string().as_bytes(), &context(), &plain_echo()).unwrap()).unwrap());
            assert_eq!((&out["status"], &out["incomplete_details"]), (&json!(status), &reason), "{finish}");
        }
        let body = json!({"choices": [{"message": {"content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}]});
        let out = json(&String::from_utf8(answer(body.to_string().as_bytes(), &context(), &plain_echo()).unwrap()).unwrap());
        assert_eq!(out["output"][0]["content"], json!([{"type": "refusal", "refusal": "I can't help with that."}]));
        assert_eq!(out["id"], "resp_llmf1", "the answer context's id when the provider gave none");
    }

    #[test]
    fn an_answer_that_cannot_be_read_says_why() {
        assert!(answer(b"<html>", &context(), &plain_echo()).unwrap_err().starts_with("not a chat completion"));
        assert_eq!(answer(br#"{"choices":[]}"#, &context(), &plain_echo()).unwrap_err(), "a chat completion without choices");
        let nameless = json!({"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}}]});
        assert_eq!(answer(nameless.to_string().as_bytes(), &context(), &plain_echo()).unwrap_err(), "a tool call without a function name");
    }

    // ------------------------------------------------------------ stream

    #[test]
    fn golden_streams_text_function_calls_and_error() {
        assert_eq!(streamed(TEXT_STREAM), TEXT_STREAM_TRANSLATED);
        assert_eq!(streamed(TOOL_STREAM), TOOL_STREAM_TRANSLATED);
        assert_eq!(streamed(ERROR_STREAM), ERROR_STREAM_TRANSLATED);
    }

    #[test]
    fn the_stream_has_the_event_sequence_the_openai_sdk_accumulates() {
        assert_eq!(event_names(&streamed(TEXT_STREAM)), [
            "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
            "response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done",
            "response.output_item.done", "response.completed"]);
        let tools = event_names(&streamed(TOOL_STREAM));
        assert_eq!(tools.iter().filter(|n| *n == "response.output_item.added").count(), 3, "a message and two calls");
        assert_eq!(tools.iter().filter(|n| *n == "response.function_call_arguments.done").count(), 2);
        assert_eq!(tools.last().map(String::as_str), Some("response.completed"));
        assert_eq!(event_names(&streamed(ERROR_STREAM)).last().map(String::as_str), Some("error"));
        let cut = event_names(&streamed(CUT_BY_LENGTH_STREAM));
        assert_eq!(cut.last().map(String::as_str), Some("response.incomplete"), "finish_reason length");
    }

    #[test]
    fn the_streamed_response_is_the_answer_the_same_completion_gives() {
        let text = streamed(TOOL_STREAM);
        let last = text.split_terminator("\n\n").last().unwrap();
        let completed = json(last.split_once("data: ").unwrap().1);
        let whole = json!({"id": "chatcmpl-T2", "model": "gpt-4o", "choices": [{"finish_reason": "tool_calls", "message": {
            "content": "Checking.", "tool_calls": [
                {"id": "call_a", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
                {"id": "call_b", "function": {"name": "get_time", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}});
        let answered = json(&String::from_utf8(answer(whole.to_string().as_bytes(), &context(), &plain_echo()).unwrap()).unwrap());
        assert_eq!(completed["response"], answered);
    }

    #[test]
    fn any_chunking_of_the_stream_translates_to_the_same_bytes() {
        for stream in [TEXT_STREAM, TOOL_STREAM, ERROR_STREAM, CUT_BY_LENGTH_STREAM] {
            let whole = streamed(stream).into_bytes();
            for seed in 0..500 {
                let out = crate::provider::translate_in_pieces(&mut Stream::new(context(), plain_echo()), stream.as_bytes(), seed);
                assert_eq!(out, whole, "seed {seed}");
            }
        }
    }

    #[test]
    fn an_anthropic_stream_reaches_a_responses_client_through_chat_for_any_chunking() {
        let anthropic_stream = include_str!("../provider/fixtures/anthropic/stream_tool_use.anthropic.sse");
        let run = |seed: Option<u64>| {
            let provider = crate::provider::Format::Anthropic.stream(context());
            let mut chain = super::super::through_chat(provider, Box::new(Stream::new(context(), plain_echo())));
            match seed {
                Some(seed) => crate::provider::translate_in_pieces(chain.as_mut(), anthropic_stream.as_bytes(), seed),
                None => {
                    let mut out = chain.feed(anthropic_stream.as_bytes());
                    out.extend(chain.finish());
                    out
                }
            }
        };
        let whole = run(None);
        let names = event_names(&String::from_utf8(whole.clone()).unwrap());
        assert_eq!(names.first().map(String::as_str), Some("response.created"));
        assert_eq!(names.last().map(String::as_str), Some("response.completed"));
        assert!(names.iter().any(|n| n == "response.function_call_arguments.delta"), "{names:?}");
        for seed in 0..200 {
            assert_eq!(run(Some(seed)), whole, "seed {seed}");
        }
    }

    #[test]
    fn a_stream_cut_before_done_still_ends_with_the_whole_response() {
        let cut = TEXT_STREAM.replace("data: [DONE]\n\n", "");
        assert_eq!(event_names(&streamed(&cut)).last().map(String::as_str), Some("response.completed"));
        assert_eq!(event_names(&streamed("")), ["response.created", "response.in_progress", "response.completed"]);
    }

    #[test]
    fn garbage_never_panics_and_never_breaks_the_stream_shape() {
        let garbage: Vec<Vec<u8>> = vec![
            b"data: {not json\n\n".to_vec(),
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":18446744073709551615}]}}]}\n\n".to_vec(),
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\"}},{\"index\":1}]}}]}\n\ndata: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"}\"}}]}}]}\n\n".to_vec(),
            b"data: {\"usage\":{\"prompt_tokens\":1e999}}\n\n".to_vec(),
            b"data: {\"error\":\"plain\"}".to_vec(),
            b"\xff\xfe\x00\r\r\n\n".to_vec(),
            (0..=255u8).collect(),
        ];
        for (i, bytes) in garbage.iter().enumerate() {
            let mut translator = Stream::new(context(), plain_echo());
            let mut out = translator.feed(bytes);
            out.extend(translator.finish());
            let names = event_names(&String::from_utf8(out).unwrap());
            assert!(matches!(names.last().map(String::as_str), Some("response.completed" | "error")), "case {i}: {names:?}");
        }
    }
}
