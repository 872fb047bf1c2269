//! Google Gemini's `models/{model}:generateContent`: OpenAI chat requests become Gemini `contents`,
//! and Gemini's answers, server-sent event streams and errors come back in OpenAI's form.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

use super::openai::{
    self, AnswerContext, AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, Content as ChatContent, Delta,
    FinishReason, Image, Message, Part as ChatPart, Role, ToolCall, ToolCallDelta, ToolChoice, Usage,
};
use super::{FormatOptions, Provider, StreamTranslator, Unsupported};
use crate::sse::{self, EventReader};

pub const DEFAULT_BASE_PATH: &str = "/v1beta";

/// Gemini 3 refuses a replayed function call without the thought signature it was issued with,
/// and the chat API has no place to carry one back to us; this is the value Google documents for
/// function calls the model did not produce in this conversation.
const FOREIGN_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// The JSON Schema keywords Gemini reads in `responseJsonSchema` (and function parameters), kept
/// as they are. `properties`, `$defs`, `items`, `additionalProperties`, `anyOf`, `oneOf`,
/// `prefixItems`, `$ref`, `const` and `allOf` are handled in [`gemini_schema`]; the rest is dropped.
const SCHEMA_KEYWORDS: &[&str] = &[
    "$id", "$anchor", "type", "format", "title", "description", "enum", "minItems", "maxItems", "minimum",
    "maximum", "required", "propertyOrdering",
];

/// How much of a stream's start is kept while it has shown no event, to read a bare error body.
const UNFRAMED_LIMIT: usize = 64 * 1024;

pub fn chat_path(provider: &Provider, model: &str, stream: bool) -> String {
    // Gemini names models `models/<id>`; a client that sends the full name means the same model.
    let model = model.strip_prefix("models/").unwrap_or(model);
    let method = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
    format!("{}/models/{}:{}", provider.base_path, super::path_segment(model), method)
}

// ---------------------------------------------------------------------------------------------
// The Gemini API's own models (the parts this translation reads or writes).

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentRequest {
    contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// A thought summary, not part of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thought: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inline_data: Option<Blob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_data: Option<FileData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function_response: Option<FunctionResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thought_signature: Option<String>,
}

impl Part {
    fn text(text: impl Into<String>) -> Part {
        Part { text: Some(text.into()), ..Part::default() }
    }

    fn inline(mime_type: &str, data: &str) -> Part {
        Part { inline_data: Some(Blob { mime_type: mime_type.into(), data: data.into() }), ..Part::default() }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    mime_type: String,
    data: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    mime_type: String,
    file_uri: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    args: Option<Value>,
}

impl FunctionCall {
    /// The arguments as OpenAI carries them: JSON text of an object.
    fn arguments(&self) -> String {
        match &self.args {
            None | Some(Value::Null) => "{}".into(),
            Some(args) => args.to_string(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct FunctionResponse {
    name: String,
    response: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Tool {
    function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters_json_schema: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    function_calling_config: FunctionCallingConfig,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<Vec<String>>,
}

#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<Value>,
}

impl GenerationConfig {
    fn is_empty(&self) -> bool {
        *self == GenerationConfig::default()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    response_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default, deserialize_with = "token_count")]
    prompt_token_count: Option<u64>,
    #[serde(default, deserialize_with = "token_count")]
    tool_use_prompt_token_count: Option<u64>,
    #[serde(default, deserialize_with = "token_count")]
    candidates_token_count: Option<u64>,
    #[serde(default, deserialize_with = "token_count")]
    thoughts_token_count: Option<u64>,
    #[serde(default, deserialize_with = "token_count")]
    total_token_count: Option<u64>,
}

/// A count as any JSON number (or numeric string) holds it: a count too large or negative
/// saturates instead of failing the whole answer.
fn token_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value.and_then(|value| match value {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        Value::String(s) => s.parse::<u64>().ok(),
        _ => None,
    }))
}

impl UsageMetadata {
    /// OpenAI counts tool-use prompts as prompt and thinking as completion.
    fn usage(&self) -> Usage {
        let prompt_tokens = self.prompt_token_count.unwrap_or(0).saturating_add(self.tool_use_prompt_token_count.unwrap_or(0));
        let completion_tokens =
            self.candidates_token_count.unwrap_or(0).saturating_add(self.thoughts_token_count.unwrap_or(0));
        let total_tokens = self.total_token_count.unwrap_or(prompt_tokens.saturating_add(completion_tokens));
        Usage { prompt_tokens, completion_tokens, total_tokens }
    }

    /// Stream events each carry the counts so far, some of them only part of the counts.
    fn update(&mut self, newer: UsageMetadata) {
        self.prompt_token_count = newer.prompt_token_count.or(self.prompt_token_count);
        self.tool_use_prompt_token_count = newer.tool_use_prompt_token_count.or(self.tool_use_prompt_token_count);
        self.candidates_token_count = newer.candidates_token_count.or(self.candidates_token_count);
        self.thoughts_token_count = newer.thoughts_token_count.or(self.thoughts_token_count);
        self.total_token_count = newer.total_token_count.or(self.total_token_count);
    }
}

impl GenerateContentResponse {
    /// Gemini's `responseId` reads as an OpenAI completion id once prefixed.
    fn answer_id(&self, context: &AnswerContext) -> String {
        match self.response_id.as_deref() {
            Some(id) if !id.is_empty() => format!("chatcmpl-{id}"),
            _ => context.id.clone(),
        }
    }

    fn parts(&self) -> &[Part] {
        self.candidates.first().and_then(|c| c.content.as_ref()).map_or(&[], |c| c.parts.as_slice())
    }

    /// Why the answer ended, once it has: the first candidate's reason, or a blocked prompt.
    fn finish_reason(&self, has_tool_calls: bool) -> Option<FinishReason> {
        match self.candidates.first() {
            Some(candidate) => candidate
                .finish_reason
                .as_deref()
                .filter(|reason| !reason.is_empty() && *reason != "FINISH_REASON_UNSPECIFIED")
                .map(|reason| finish_reason(reason, has_tool_calls)),
            None => self
                .prompt_feedback
                .as_ref()
                .and_then(|feedback| feedback.block_reason.as_ref())
                .map(|_| FinishReason::ContentFilter),
        }
    }
}

fn finish_reason(reason: &str, has_tool_calls: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT" | "IMAGE_RECITATION" | "MODEL_ARMOR" => FinishReason::ContentFilter,
        _ if has_tool_calls => FinishReason::ToolCalls,
        // STOP, and reasons OpenAI has no name for (OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, ...).
        _ => FinishReason::Stop,
    }
}

/// Gemini seldom names its function calls, and OpenAI clients match each tool result to its call
/// by id, across the whole conversation: an id unique to the answer it came in.
fn tool_call_id(call: &FunctionCall, answer_id: &str, index: u32) -> String {
    if let Some(id) = call.id.as_deref().filter(|id| !id.is_empty()) {
        return id.to_string();
    }
    let own = answer_id.strip_prefix("chatcmpl-").unwrap_or(answer_id);
    let token: Vec<char> = own.chars().filter(char::is_ascii_alphanumeric).collect();
    let tail: String = token.iter().skip(token.len().saturating_sub(12)).collect();
    format!("call_{tail}_{index}")
}

// ---------------------------------------------------------------------------------------------
// Request: OpenAI chat completion -> GenerateContentRequest.

pub fn request(request: &ChatRequest, _model: &str, _options: &FormatOptions) -> Result<Vec<u8>, Unsupported> {
    refuse_what_cannot_be_carried(request)?;
    let mut conversation = Conversation::default();
    for message in &request.messages {
        conversation.add(message)?;
    }
    if conversation.contents.is_empty() {
        return Err(Unsupported(
            "Gemini needs at least one user or assistant message with content; this request has none".into(),
        ));
    }
    let declarations = function_declarations(request)?;
    let tool_config = tool_config(request.tool_choice.as_ref())?.filter(|_| !declarations.is_empty());
    let system_instruction =
        if conversation.system.is_empty() { None } else { Some(Content { role: None, parts: conversation.system }) };
    let body = GenerateContentRequest {
        contents: conversation.contents,
        system_instruction,
        tools: if declarations.is_empty() { Vec::new() } else { vec![Tool { function_declarations: declarations }] },
        tool_config,
        generation_config: generation_config(request)?,
    };
    serde_json::to_vec(&body).map_err(|e| Unsupported(format!("the request could not be written as JSON: {e}")))
}

/// Parameters whose answer Gemini cannot give in the shape the client asked for.
fn refuse_what_cannot_be_carried(request: &ChatRequest) -> Result<(), Unsupported> {
    if let Some(n) = request.other.get("n").filter(|n| !n.is_null()) {
        if n.as_u64() != Some(1) {
            return Err(Unsupported(format!(
                "n={n}: only one choice is translated back from Gemini; send n=1 or leave it out"
            )));
        }
    }
    for legacy in ["functions", "function_call"] {
        if request.other.get(legacy).is_some_and(|v| !v.is_null()) {
            return Err(Unsupported(format!(
                "`{legacy}` (OpenAI's deprecated function calling) is not translated to Gemini; use `tools` and `tool_choice`"
            )));
        }
    }
    let wants_audio = request.other.get("audio").is_some_and(|v| !v.is_null())
        || request
            .other
            .get("modalities")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|m| m.as_str() != Some("text")));
    if wants_audio {
        return Err(Unsupported("audio output (`modalities`, `audio`) is not translated to Gemini".into()));
    }
    Ok(())
}

/// The conversation as Gemini takes it: system text apart, turns of alternating roles.
#[derive(Default)]
struct Conversation {
    system: Vec<Part>,
    contents: Vec<Content>,
    /// Tool call id -> function name: a Gemini function response names its function, an OpenAI
    /// tool result only the call's id.
    call_names: HashMap<String, String>,
}

impl Conversation {
    fn add(&mut self, message: &Message) -> Result<(), Unsupported> {
        match message.role {
            Role::System | Role::Developer => {
                let parts = text_only_parts(message, "system")?;
                self.system.extend(parts);
            }
            Role::User => {
                let parts = user_parts(message.content.as_ref())?;
                self.push("user", parts);
            }
            Role::Assistant => {
                let parts = self.model_parts(message)?;
                self.push("model", parts);
            }
            Role::Tool => {
                let part = self.function_response(message)?;
                self.push("user", vec![part]);
            }
            Role::Function => {
                return Err(Unsupported(
                    "`function` messages (OpenAI's deprecated function calling) are not translated to Gemini; use `tool` messages".into(),
                ))
            }
        }
        Ok(())
    }

    /// Gemini wants turns to alternate: a message of the same role as the last turn joins it.
    fn push(&mut self, role: &str, parts: Vec<Part>) {
        if parts.is_empty() {
            return;
        }
        match self.contents.last_mut() {
            Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
            _ => self.contents.push(Content { role: Some(role.into()), parts }),
        }
    }

    fn model_parts(&mut self, message: &Message) -> Result<Vec<Part>, Unsupported> {
        let mut parts = text_only_parts(message, "assistant")?;
        if parts.is_empty() {
            if let Some(refusal) = message.refusal.as_deref().filter(|r| !r.is_empty()) {
                parts.push(Part::text(refusal));
            }
        }
        for call in message.tool_calls.iter().flatten() {
            let args = match call.function.arguments.trim() {
                "" => Value::Object(Map::new()),
                text => match serde_json::from_str::<Value>(text) {
                    Ok(args @ Value::Object(_)) => args,
                    _ => {
                        return Err(Unsupported(format!(
                            "tool call {:?} has arguments that are not a JSON object; Gemini takes function call arguments only as an object",
                            call.id
                        )))
                    }
                },
            };
            self.call_names.insert(call.id.clone(), call.function.name.clone());
            parts.push(Part {
                function_call: Some(FunctionCall { id: None, name: call.function.name.clone(), args: Some(args) }),
                thought_signature: Some(FOREIGN_THOUGHT_SIGNATURE.into()),
                ..Part::default()
            });
        }
        Ok(parts)
    }

    fn function_response(&self, message: &Message) -> Result<Part, Unsupported> {
        let id = message.tool_call_id.as_deref().unwrap_or_default();
        let name = self.call_names.get(id).or(message.name.as_ref()).ok_or_else(|| {
            Unsupported(format!(
                "tool message for tool_call_id {id:?} follows no assistant tool call with that id; Gemini needs the called function's name"
            ))
        })?;
        Ok(Part {
            function_response: Some(FunctionResponse { name: name.clone(), response: tool_result(&message.text()) }),
            ..Part::default()
        })
    }
}

/// Gemini takes a function's result as an object; the convention it documents for anything else
/// is `{"output": ...}`.
fn tool_result(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({ "output": text }),
    }
}

/// The text of a system or assistant message; Gemini has no images or files there.
fn text_only_parts(message: &Message, role: &str) -> Result<Vec<Part>, Unsupported> {
    let texts: Vec<&str> = match &message.content {
        None => Vec::new(),
        Some(ChatContent::Text(text)) => vec![text.as_str()],
        Some(ChatContent::Parts(parts)) => parts
            .iter()
            .map(|part| match part {
                ChatPart::Text { text } => Ok(text.as_str()),
                ChatPart::Refusal { refusal } => Ok(refusal.as_str()),
                _ => Err(Unsupported(format!("{role} messages carry only text to Gemini; this one has an image, audio or file"))),
            })
            .collect::<Result<_, _>>()?,
    };
    // Gemini refuses empty text parts.
    Ok(texts.into_iter().filter(|t| !t.is_empty()).map(Part::text).collect())
}

fn user_parts(content: Option<&ChatContent>) -> Result<Vec<Part>, Unsupported> {
    let parts = match content {
        None => return Ok(Vec::new()),
        Some(ChatContent::Text(text)) if text.is_empty() => return Ok(Vec::new()),
        Some(ChatContent::Text(text)) => return Ok(vec![Part::text(text.as_str())]),
        Some(ChatContent::Parts(parts)) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            ChatPart::Text { text } | ChatPart::Refusal { refusal: text } => {
                if !text.is_empty() {
                    out.push(Part::text(text.as_str()));
                }
            }
            ChatPart::ImageUrl { image_url } => out.push(image_part(image_url.image(), &image_url.url)?),
            ChatPart::InputAudio { input_audio } => out.push(audio_part(input_audio)?),
            ChatPart::File { file } => out.push(file_part(file)?),
        }
    }
    Ok(out)
}

fn image_part(image: Option<Image<'_>>, url: &str) -> Result<Part, Unsupported> {
    match image {
        Some(Image::Inline { media_type, data }) => Ok(Part::inline(media_type, data)),
        Some(Image::Url(url)) if url.starts_with("https://") || url.starts_with("http://") => {
            let mime_type = image_type_of(url).ok_or_else(|| {
                Unsupported(format!(
                    "image URL {url:?} does not end in a known image extension (png, jpg, jpeg, webp, heic, heif, \
                     gif); Gemini needs the image's type with a URL, so send this image as a base64 data: URI"
                ))
            })?;
            Ok(Part { file_data: Some(FileData { mime_type: mime_type.into(), file_uri: url.into() }), ..Part::default() })
        }
        Some(Image::Url(_)) | None => Err(Unsupported(format!(
            "image URL {:?} is neither http(s) nor a base64 data: URI, the two Gemini takes",
            url.chars().take(64).collect::<String>()
        ))),
    }
}

/// The image type a URL's path names by its extension.
fn image_type_of(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let extension = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    match extension.as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "webp" => Some("image/webp"),
        "heic" => Some("image/heic"),
        "heif" => Some("image/heif"),
        "gif" => Some("image/gif"),
        _ => None,
    }
}

fn audio_part(input_audio: &Value) -> Result<Part, Unsupported> {
    let data = input_audio.get("data").and_then(Value::as_str);
    let mime_type = match input_audio.get("format").and_then(Value::as_str) {
        Some("wav") => Some("audio/wav"),
        Some("mp3") => Some("audio/mp3"),
        _ => None,
    };
    match (data, mime_type) {
        (Some(data), Some(mime_type)) => Ok(Part::inline(mime_type, data)),
        _ => Err(Unsupported("input_audio needs base64 `data` and a `format` of wav or mp3".into())),
    }
}

fn file_part(file: &Value) -> Result<Part, Unsupported> {
    let inline = file.get("file_data").and_then(Value::as_str).and_then(|uri| {
        let (meta, data) = uri.strip_prefix("data:")?.split_once(',')?;
        Some((meta.strip_suffix(";base64")?, data))
    });
    match inline {
        Some((mime_type, data)) => Ok(Part::inline(mime_type, data)),
        None => Err(Unsupported(
            "a file part reaches Gemini only as `file_data` holding a base64 data: URI; OpenAI `file_id`s mean nothing to Gemini".into(),
        )),
    }
}

fn function_declarations(request: &ChatRequest) -> Result<Vec<FunctionDeclaration>, Unsupported> {
    let mut declarations = Vec::new();
    for tool in request.tools.iter().flatten() {
        if tool.kind != "function" {
            return Err(Unsupported(format!("tool type {:?}: Gemini takes only function tools", tool.kind)));
        }
        declarations.push(FunctionDeclaration {
            name: tool.function.name.clone(),
            description: tool.function.description.clone().filter(|d| !d.is_empty()),
            parameters_json_schema: tool.function.parameters.as_ref().map(gemini_schema),
        });
    }
    Ok(declarations)
}

fn tool_config(choice: Option<&ToolChoice>) -> Result<Option<ToolConfig>, Unsupported> {
    let (mode, allowed_function_names) = match choice {
        None => return Ok(None),
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "auto" => ("AUTO", None),
            "none" => ("NONE", None),
            "required" => ("ANY", None),
            other => return Err(Unsupported(format!("tool_choice {other:?} is not one of auto, none, required"))),
        },
        Some(ToolChoice::Function { function }) => ("ANY", Some(vec![function.name.clone()])),
    };
    Ok(Some(ToolConfig { function_calling_config: FunctionCallingConfig { mode, allowed_function_names } }))
}

fn generation_config(request: &ChatRequest) -> Result<GenerationConfig, Unsupported> {
    let seed = request
        .seed
        .map(i32::try_from)
        .transpose()
        .map_err(|_| Unsupported("seed: Gemini takes a 32-bit seed; this one is larger".into()))?;
    let (response_mime_type, response_json_schema) = response_format(request.response_format.as_ref())?;
    Ok(GenerationConfig {
        temperature: request.temperature,
        top_p: request.top_p,
        // Gemini reads a 32-bit count; any larger limit means "no limit" just the same.
        max_output_tokens: request.max_output_tokens().map(|n| n.min(i32::MAX as u64)),
        stop_sequences: request.stop.as_ref().map(|s| s.sequences()).filter(|s| !s.is_empty()),
        seed,
        presence_penalty: request.presence_penalty,
        frequency_penalty: request.frequency_penalty,
        response_mime_type,
        response_json_schema,
    })
}

type ResponseFormat = (Option<&'static str>, Option<Value>);

fn response_format(format: Option<&Value>) -> Result<ResponseFormat, Unsupported> {
    let Some(format) = format.filter(|f| !f.is_null()) else {
        return Ok((None, None));
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok((None, None)),
        Some("json_object") => Ok((Some("application/json"), None)),
        Some("json_schema") => {
            let schema = format.get("json_schema").and_then(|s| s.get("schema")).map(gemini_schema);
            Ok((Some("application/json"), schema))
        }
        _ => Err(Unsupported(format!("response_format {format}: only text, json_object and json_schema are translated"))),
    }
}

/// A client's JSON Schema cut to the keywords Gemini documents for `responseJsonSchema`:
/// draft-07 `definitions` become `$defs`, a `const` a one-value `enum`, a one-schema `allOf` its
/// schema; validation-only keywords (`pattern`, `minLength`, `default`, ...) are dropped, and
/// nothing but `$` keywords stays next to a `$ref`, as Gemini requires.
fn gemini_schema(schema: &Value) -> Value {
    let Value::Object(keywords) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in keywords {
        match key.as_str() {
            "properties" | "$defs" | "definitions" => {
                let target = if key == "properties" { "properties" } else { "$defs" };
                if let (Value::Object(named), Value::Object(into)) =
                    (value, out.entry(target).or_insert_with(|| Value::Object(Map::new())))
                {
                    for (name, schema) in named {
                        into.insert(name.clone(), gemini_schema(schema));
                    }
                }
            }
            "items" | "additionalProperties" => {
                out.insert(key.clone(), gemini_schema(value));
            }
            "anyOf" | "oneOf" | "prefixItems" => {
                if let Value::Array(list) = value {
                    out.insert(key.clone(), Value::Array(list.iter().map(gemini_schema).collect()));
                }
            }
            "$ref" => {
                if let Some(reference) = value.as_str() {
                    out.insert(key.clone(), Value::String(reference.replacen("#/definitions/", "#/$defs/", 1)));
                }
            }
            "const" if !keywords.contains_key("enum") && (value.is_string() || value.is_number()) => {
                out.insert("enum".into(), Value::Array(vec![value.clone()]));
            }
            keyword if SCHEMA_KEYWORDS.contains(&keyword) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    if let Some(Value::Array(all)) = keywords.get("allOf") {
        if let [only] = all.as_slice() {
            if let Value::Object(merged) = gemini_schema(only) {
                for (key, value) in merged {
                    out.entry(key).or_insert(value);
                }
            }
        }
    }
    if out.contains_key("$ref") {
        out.retain(|key, _| key.starts_with('$'));
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// Answer: GenerateContentResponse -> chat.completion.

pub fn answer(body: &[u8], context: &AnswerContext) -> Result<Vec<u8>, String> {
    let response: GenerateContentResponse =
        serde_json::from_slice(body).map_err(|e| format!("Gemini's answer is not a GenerateContentResponse: {e}"))?;
    let id = response.answer_id(context);
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for part in response.parts() {
        if part.thought == Some(true) {
            continue;
        }
        if let Some(piece) = &part.text {
            text.push_str(piece);
        }
        if let Some(call) = &part.function_call {
            let index = u32::try_from(tool_calls.len()).unwrap_or(u32::MAX);
            tool_calls.push(ToolCall {
                id: tool_call_id(call, &id, index),
                kind: "function".into(),
                function: openai::FunctionCall { name: call.name.clone(), arguments: call.arguments() },
            });
        }
    }
    let finish_reason = response.finish_reason(!tool_calls.is_empty()).unwrap_or(if tool_calls.is_empty() {
        FinishReason::Stop
    } else {
        FinishReason::ToolCalls
    });
    let content = (!text.is_empty()).then_some(text);
    let usage = response.usage_metadata.map(|u| u.usage());
    Ok(ChatCompletion::new(context, Some(id), AssistantMessage::new(content, tool_calls), finish_reason, usage).to_json())
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// A provider error in OpenAI's terms.
#[derive(Debug)]
struct ProviderError {
    message: String,
    kind: &'static str,
    code: Option<String>,
}

impl ProviderError {
    /// Google's error body, `{"error": {code, message, status, details}}`, alone or (in some
    /// streams) as the only element of an array.
    fn from_google(http_status: Option<u16>, value: &Value) -> Option<ProviderError> {
        let error = match value {
            Value::Array(list) => list.first()?.get("error")?,
            other => other.get("error")?,
        }
        .as_object()?;
        let status = error.get("status").and_then(Value::as_str).filter(|s| !s.is_empty());
        let code = error.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok()).or(http_status);
        let reason = error
            .get("details")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|detail| detail.get("reason").and_then(Value::as_str));
        let message = match error.get("message").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            Some(message) => message.to_string(),
            None => format!("Gemini error {}", status.unwrap_or("without a message")),
        };
        if reason == Some("API_KEY_INVALID") {
            return Some(ProviderError { message, kind: "authentication_error", code: Some("invalid_api_key".into()) });
        }
        let kind = match status {
            Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" | "NOT_FOUND" | "ALREADY_EXISTS") => {
                "invalid_request_error"
            }
            Some("UNAUTHENTICATED") => "authentication_error",
            Some("PERMISSION_DENIED") => "permission_error",
            Some("RESOURCE_EXHAUSTED") => "rate_limit_error",
            Some(_) => "api_error",
            None => openai::error_type_for_status(code.unwrap_or(500)),
        };
        Some(ProviderError { message, kind, code: status.map(str::to_ascii_lowercase) })
    }

    /// A body that is not Google's error shape: an HTML page from a proxy, plain text, nothing.
    fn unreadable(http_status: Option<u16>, body: &[u8]) -> ProviderError {
        let what = match http_status {
            Some(status) => format!("Gemini answered HTTP {status}"),
            None => "Gemini's stream carried no events".into(),
        };
        let excerpt = excerpt(body);
        ProviderError {
            message: if excerpt.is_empty() { what } else { format!("{what}: {excerpt}") },
            kind: openai::error_type_for_status(http_status.unwrap_or(502)),
            code: None,
        }
    }

    fn unreadable_event(cause: &serde_json::Error) -> ProviderError {
        ProviderError { message: format!("Gemini sent an unreadable stream event: {cause}"), kind: "api_error", code: None }
    }

    fn read(http_status: Option<u16>, body: &[u8]) -> ProviderError {
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|value| ProviderError::from_google(http_status, &value))
            .unwrap_or_else(|| ProviderError::unreadable(http_status, body))
    }

    fn body(&self) -> Vec<u8> {
        openai::error_body(&self.message, self.kind, self.code.as_deref())
    }
}

/// The start of a body as one line of text, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect()
}

pub fn error(status: u16, body: &[u8]) -> Vec<u8> {
    ProviderError::read(Some(status), body).body()
}

/// Gemini answers a wrong key with 400 `API_KEY_INVALID`: for failover and health it is the
/// 401 it means.
pub fn error_status(status: u16, body: &[u8]) -> u16 {
    match ProviderError::read(Some(status), body) {
        ProviderError { kind: "authentication_error", .. } if status == 400 => 401,
        _ => status,
    }
}

// ---------------------------------------------------------------------------------------------
// Stream: `streamGenerateContent?alt=sse` events, each a whole GenerateContentResponse.

pub struct Stream {
    context: AnswerContext,
    events: EventReader,
    /// The id every chunk carries, fixed by the first event.
    id: Option<String>,
    tool_calls: u32,
    finish_sent: bool,
    usage: UsageMetadata,
    /// After an error event or `[DONE]`: nothing more is sent.
    closed: bool,
    saw_event: bool,
    /// The stream's first bytes while it has shown no event: a body that is no SSE at all (a bare
    /// JSON error) can only be read whole.
    unframed: Vec<u8>,
}

impl Stream {
    pub fn new(context: AnswerContext) -> Stream {
        Stream {
            context,
            events: EventReader::default(),
            id: None,
            tool_calls: 0,
            finish_sent: false,
            usage: UsageMetadata::default(),
            closed: false,
            saw_event: false,
            unframed: Vec::new(),
        }
    }

    /// One event's `data`. `last` is an event the stream ended inside of, without its blank
    /// line: if it does not read, the stream was cut short, which is no error of the answer.
    fn translate(&mut self, data: &str, last: bool, out: &mut Vec<u8>) {
        self.saw_event = true;
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return;
        }
        let value: Value = match serde_json::from_str(data) {
            Ok(value) => value,
            Err(_) if last => return,
            Err(e) => return self.fail(&ProviderError::unreadable_event(&e), out),
        };
        if let Some(error) = ProviderError::from_google(None, &value) {
            return self.fail(&error, out);
        }
        let response: GenerateContentResponse = match serde_json::from_value(value) {
            Ok(response) => response,
            Err(e) => return self.fail(&ProviderError::unreadable_event(&e), out),
        };
        let id = match &self.id {
            Some(id) => id.clone(),
            None => {
                let id = response.answer_id(&self.context);
                ChatChunk::new(&self.context, &id, Delta::role(), None).write_sse(out);
                self.id = Some(id.clone());
                id
            }
        };
        if let Some(usage) = response.usage_metadata {
            self.usage.update(usage);
        }
        if self.finish_sent {
            return;
        }
        for part in response.parts() {
            if part.thought == Some(true) {
                continue;
            }
            if let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) {
                out.extend(self.chunk(&id, Delta::text(text), None));
            }
            if let Some(call) = &part.function_call {
                let index = self.tool_calls;
                self.tool_calls = self.tool_calls.saturating_add(1);
                let call_id = tool_call_id(call, &id, index);
                out.extend(self.chunk(&id, Delta::tool_call(ToolCallDelta::start(index, &call_id, &call.name)), None));
                out.extend(self.chunk(&id, Delta::tool_call(ToolCallDelta::arguments(index, &call.arguments())), None));
            }
        }
        if let Some(reason) = response.finish_reason(self.tool_calls > 0) {
            out.extend(self.chunk(&id, Delta::default(), Some(reason)));
            self.finish_sent = true;
        }
    }

    fn chunk(&self, id: &str, delta: Delta, finish_reason: Option<FinishReason>) -> Vec<u8> {
        ChatChunk::new(&self.context, id, delta, finish_reason).to_sse()
    }

    /// An error ends the stream: one OpenAI error event, then nothing, not even `[DONE]`.
    fn fail(&mut self, error: &ProviderError, out: &mut Vec<u8>) {
        out.extend(sse::data_event(&error.body()));
        self.closed = true;
    }
}

/// Whether a body that ended before its first event may be an event stream cut short (nothing,
/// or the start of an SSE field) rather than something else, such as a bare JSON error.
fn could_start_an_event_stream(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let Some(first_line) = text.split(['\n', '\r']).find(|line| !line.trim().is_empty()) else {
        return true;
    };
    first_line.starts_with(':')
        || ["data:", "event:", "id:", "retry:"]
            .iter()
            .any(|field| first_line.starts_with(field) || field.starts_with(first_line))
}

impl StreamTranslator for Stream {
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        if !self.saw_event && self.unframed.len() < UNFRAMED_LIMIT {
            let room = UNFRAMED_LIMIT - self.unframed.len();
            self.unframed.extend(chunk.iter().take(room));
        }
        for event in self.events.feed(chunk) {
            self.translate(&event.data, false, &mut out);
            if self.closed {
                break;
            }
        }
        if self.events.overflowed() && !self.closed {
            out.extend(super::oversized_stream_error("Gemini"));
            self.closed = true;
        }
        if self.saw_event && !self.unframed.is_empty() {
            self.unframed = Vec::new();
        }
        out
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        for event in self.events.finish() {
            self.translate(&event.data, true, &mut out);
            if self.closed {
                return out;
            }
        }
        if !self.saw_event && !could_start_an_event_stream(&self.unframed) {
            self.fail(&ProviderError::read(None, &self.unframed), &mut out);
            return out;
        }
        // A stream cut short still ends the way OpenAI clients expect.
        let id = match &self.id {
            Some(id) => id.clone(),
            None => {
                let id = self.context.id.clone();
                out.extend(self.chunk(&id, Delta::role(), None));
                id
            }
        };
        if !self.finish_sent {
            let reason = if self.tool_calls > 0 { FinishReason::ToolCalls } else { FinishReason::Stop };
            out.extend(self.chunk(&id, Delta::default(), Some(reason)));
            self.finish_sent = true;
        }
        if self.context.include_usage {
            ChatChunk::usage(&self.context, &id, self.usage.usage()).write_sse(&mut out);
        }
        out.extend_from_slice(sse::DONE);
        self.closed = true;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Auth, AuthStyle, Format};
    use super::*;
    use crate::sse::random_split;

    const CHAT_OPENAI: &str = include_str!("fixtures/gemini/chat.openai.json");
    const CHAT_GEMINI: &str = include_str!("fixtures/gemini/chat.gemini.json");
    const TOOLS_OPENAI: &str = include_str!("fixtures/gemini/tools.openai.json");
    const TOOLS_GEMINI: &str = include_str!("fixtures/gemini/tools.gemini.json");
    const ANSWER_TEXT: (&str, &str) =
        (include_str!("fixtures/gemini/answer_text.gemini.json"), include_str!("fixtures/gemini/answer_text.openai.json"));
    const ANSWER_TOOL_CALLS: (&str, &str) = (
        include_str!("fixtures/gemini/answer_tool_calls.gemini.json"),
        include_str!("fixtures/gemini/answer_tool_calls.openai.json"),
    );
    const ANSWER_BLOCKED: (&str, &str) = (
        include_str!("fixtures/gemini/answer_blocked.gemini.json"),
        include_str!("fixtures/gemini/answer_blocked.openai.json"),
    );
    const STREAM_TEXT: (&str, &str) =
        (include_str!("fixtures/gemini/stream_text.sse"), include_str!("fixtures/gemini/stream_text.chunks.json"));
    const STREAM_TOOL_CALL: (&str, &str) = (
        include_str!("fixtures/gemini/stream_tool_call.sse"),
        include_str!("fixtures/gemini/stream_tool_call.chunks.json"),
    );
    const STREAM_ERROR: &str = include_str!("fixtures/gemini/stream_error.sse");

    fn context(include_usage: bool) -> AnswerContext {
        AnswerContext { id: "chatcmpl-local1".into(), created: 1_700_000_000, model: "gemini-2.5-flash".into(), include_usage }
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn translate(openai: &str) -> Result<Value, Unsupported> {
        let chat = ChatRequest::parse(openai.as_bytes()).unwrap();
        request(&chat, "gemini-2.5-flash", &FormatOptions::default()).map(|body| serde_json::from_slice(&body).unwrap())
    }

    fn refusal(openai: Value) -> String {
        match translate(&openai.to_string()) {
            Err(Unsupported(message)) => message,
            Ok(body) => panic!("expected a refusal, got {body}"),
        }
    }

    fn provider(model_base: &str) -> Provider {
        Provider {
            name: "gemini".into(),
            format: Format::Gemini,
            host: "generativelanguage.googleapis.com".into(),
            base_path: model_base.into(),
            auth: Auth::new(AuthStyle::XGoogApiKey, "k".into()),
            models: Default::default(),
            api_version: None,
            options: Default::default(),
            serves_responses: false,
        }
    }

    #[test]
    fn a_wrong_key_is_a_401_for_failover() {
        let wrong_key = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",
            "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
        assert_eq!(error_status(400, wrong_key), 401);
        assert_eq!(error_status(400, br#"{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}"#), 400);
        assert_eq!(error_status(503, b"<html>"), 503);
    }

    #[test]
    fn path_names_the_model_and_the_method() {
        let p = provider(DEFAULT_BASE_PATH);
        assert_eq!(p.chat_path("gemini-2.5-flash", false), "/v1beta/models/gemini-2.5-flash:generateContent");
        assert_eq!(
            p.chat_path("gemini-2.5-flash", true),
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(p.chat_path("models/gemini-2.5-pro", false), "/v1beta/models/gemini-2.5-pro:generateContent");
        assert_eq!(provider("/v1").chat_path("gemini-2.0-flash-001", false), "/v1/models/gemini-2.0-flash-001:generateContent");
    }

    #[test]
    fn a_client_model_cannot_leave_its_segment() {
        let p = provider(DEFAULT_BASE_PATH);
        assert_eq!(p.chat_path("../../files?key=x", false), "/v1beta/models/..%2F..%2Ffiles%3Fkey%3Dx:generateContent");
        assert_eq!(p.chat_path("..", false), "/v1beta/models/%2E%2E:generateContent");
        assert_eq!(p.chat_path("a:streamGenerateContent", false), "/v1beta/models/a%3AstreamGenerateContent:generateContent");
        assert_eq!(p.chat_path("models/../x", true), "/v1beta/models/..%2Fx:streamGenerateContent?alt=sse");
        assert_eq!(p.chat_path("m#frag %", false), "/v1beta/models/m%23frag%20%25:generateContent");
    }

    #[test]
    fn golden_request_system_turns_images_and_sampling() {
        assert_eq!(translate(CHAT_OPENAI).unwrap(), json(CHAT_GEMINI));
    }

    #[test]
    fn golden_request_tools_calls_results_and_schema() {
        assert_eq!(translate(TOOLS_OPENAI).unwrap(), json(TOOLS_GEMINI));
    }

    #[test]
    fn tool_choice_modes() {
        let cases = [
            (json!("auto"), json!({"mode": "AUTO"})),
            (json!("none"), json!({"mode": "NONE"})),
            (json!("required"), json!({"mode": "ANY"})),
            (json!({"type": "function", "function": {"name": "f"}}), json!({"mode": "ANY", "allowedFunctionNames": ["f"]})),
        ];
        for (choice, expected) in cases {
            let body = translate(
                &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": choice,
                    "tools": [{"type": "function", "function": {"name": "f"}}]})
                .to_string(),
            )
            .unwrap();
            assert_eq!(body["toolConfig"]["functionCallingConfig"], expected, "{choice}");
            assert_eq!(body["tools"], json!([{"functionDeclarations": [{"name": "f"}]}]));
        }
        // Without tools there is nothing to configure.
        let body =
            translate(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "none"}).to_string())
                .unwrap();
        assert_eq!(body, json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}));
    }

    #[test]
    fn parameters_without_an_equivalent_are_dropped() {
        let body = translate(
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "u", "logit_bias": {"1": 5},
                "parallel_tool_calls": true, "store": true, "metadata": {"a": "b"}, "service_tier": "auto",
                "top_logprobs": 2, "prediction": {"type": "content", "content": "x"}, "n": null,
                "response_format": {"type": "text"}, "stream": true})
            .to_string(),
        )
        .unwrap();
        assert_eq!(body, json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}));
    }

    #[test]
    fn huge_limits_are_capped_to_what_gemini_reads() {
        let body = translate(
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": u64::MAX}).to_string(),
        )
        .unwrap();
        assert_eq!(body["generationConfig"]["maxOutputTokens"], json!(i32::MAX));
    }

    #[test]
    fn requests_gemini_cannot_carry_are_refused_with_the_reason() {
        let user = |content: Value| json!({"model": "m", "messages": [{"role": "user", "content": content}]});
        let with = |mut base: Value, key: &str, value: Value| {
            base[key] = value;
            base
        };
        let hi = user(json!("hi"));
        let cases = [
            (with(hi.clone(), "n", json!(2)), "n=2"),
            (with(hi.clone(), "functions", json!([{"name": "f"}])), "`functions`"),
            (with(hi.clone(), "modalities", json!(["text", "audio"])), "audio output"),
            (with(hi.clone(), "seed", json!(1_i64 << 40)), "32-bit seed"),
            (with(hi.clone(), "response_format", json!({"type": "grammar"})), "response_format"),
            (with(hi.clone(), "tool_choice", json!("sometimes")), "tool_choice \"sometimes\""),
            (
                with(hi.clone(), "tools", json!([{"type": "custom", "function": {"name": "f"}}])),
                "Gemini takes only function tools",
            ),
            (user(json!([{"type": "image_url", "image_url": {"url": "https://x.test/cat"}}])), "known image extension"),
            (user(json!([{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}])), "neither http(s)"),
            (user(json!([{"type": "image_url", "image_url": {"url": "ftp://x.test/a.png"}}])), "neither http(s)"),
            (user(json!([{"type": "file", "file": {"file_id": "file-123"}}])), "file_id"),
            (user(json!([{"type": "input_audio", "input_audio": {"data": "AAA=", "format": "flac"}}])), "wav or mp3"),
            (json!({"model": "m", "messages": [{"role": "system", "content": "only rules"}]}), "at least one user"),
            (
                json!({"model": "m", "messages": [{"role": "system", "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}}]}, {"role": "user", "content": "hi"}]}),
                "system messages carry only text",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"},
                    {"role": "tool", "tool_call_id": "call_unknown", "content": "42"}]}),
                "call_unknown",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"},
                    {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[1,2]"}}]}]}),
                "not a JSON object",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"},
                    {"role": "function", "name": "f", "content": "42"}]}),
                "`function` messages",
            ),
        ];
        for (openai, expected) in cases {
            let message = refusal(openai.clone());
            assert!(message.contains(expected), "{openai}: {message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn audio_files_and_named_tool_results() {
        let body = translate(
            &json!({"model": "m", "messages": [
                {"role": "user", "content": [
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
                    {"type": "image_url", "image_url": {"url": "http://x.test/a/b.webp#frag"}}]},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
                {"role": "assistant", "content": null, "refusal": "Still can't."},
                {"role": "tool", "tool_call_id": "from-elsewhere", "name": "lookup", "content": "[1, 2]"}]})
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            body["contents"],
            json!([
                {"role": "user", "parts": [
                    {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                    {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                    {"fileData": {"mimeType": "image/webp", "fileUri": "http://x.test/a/b.webp#frag"}}]},
                {"role": "model", "parts": [{"text": "I can't."}, {"text": "Still can't."}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"output": "[1, 2]"}}}]}
            ])
        );
    }

    #[test]
    fn empty_messages_leave_no_empty_turn() {
        let body = translate(
            &json!({"model": "m", "messages": [
                {"role": "user", "content": "one"}, {"role": "assistant", "content": ""},
                {"role": "user", "content": [{"type": "text", "text": ""}]}, {"role": "user", "content": "two"}]})
            .to_string(),
        )
        .unwrap();
        assert_eq!(body["contents"], json!([{"role": "user", "parts": [{"text": "one"}, {"text": "two"}]}]));
    }

    #[test]
    fn a_reused_tool_call_id_names_its_latest_call() {
        let body = translate(
            &json!({"model": "m", "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "first", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": "{}"},
                {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "second", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": "{}"}]})
            .to_string(),
        )
        .unwrap();
        assert_eq!(body["contents"][2]["parts"][0]["functionResponse"]["name"], "first");
        assert_eq!(body["contents"][4]["parts"][0]["functionResponse"]["name"], "second");
    }

    #[test]
    fn schemas_keep_what_gemini_reads() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": ["object", "null"],
            "title": "T",
            "properties": {
                "pattern": {"type": "string", "pattern": "x", "minLength": 1, "format": "date"},
                "tags": {"type": "array", "items": {"type": "string", "examples": ["a"]}, "minItems": 1, "uniqueItems": true},
                "choice": {"anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "null"}]},
                "wrapped": {"allOf": [{"$ref": "#/$defs/Inner"}], "description": "not kept next to the $ref"},
                "flag": {"const": true},
                "pair": {"type": "array", "prefixItems": [{"type": "number", "multipleOf": 2}], "maxItems": 2},
                "either": {"oneOf": [{"type": "string"}], "not": {"type": "number"}}
            },
            "additionalProperties": {"type": "integer", "deprecated": true},
            "$defs": {"Inner": {"type": "object", "propertyOrdering": ["a"], "properties": {"a": {"type": "string"}}, "required": ["a"]}},
            "if": {}, "then": {}, "else": {}
        });
        assert_eq!(
            gemini_schema(&schema),
            json!({
                "type": ["object", "null"],
                "title": "T",
                "properties": {
                    "pattern": {"type": "string", "format": "date"},
                    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "choice": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                    "wrapped": {"$ref": "#/$defs/Inner"},
                    "flag": {},
                    "pair": {"type": "array", "prefixItems": [{"type": "number"}], "maxItems": 2},
                    "either": {"oneOf": [{"type": "string"}]}
                },
                "additionalProperties": {"type": "integer"},
                "$defs": {"Inner": {"type": "object", "propertyOrdering": ["a"], "properties": {"a": {"type": "string"}}, "required": ["a"]}}
            })
        );
        assert_eq!(gemini_schema(&json!(true)), json!(true));
    }

    fn answer_value(gemini: &str, context: &AnswerContext) -> Value {
        serde_json::from_slice(&answer(gemini.as_bytes(), context).unwrap()).unwrap()
    }

    #[test]
    fn golden_answers() {
        for (gemini, expected) in [ANSWER_TEXT, ANSWER_TOOL_CALLS, ANSWER_BLOCKED] {
            let translated = answer_value(gemini, &context(false));
            assert_eq!(translated, json(expected));
            // What the OpenAI SDK reads.
            let completion: ChatCompletion = serde_json::from_value(translated).unwrap();
            assert_eq!(completion.object, "chat.completion");
        }
    }

    #[test]
    fn each_finish_reason() {
        let cases = [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("IMAGE_SAFETY", "content_filter"),
            ("IMAGE_PROHIBITED_CONTENT", "content_filter"),
            ("LANGUAGE", "stop"),
            ("OTHER", "stop"),
            ("MALFORMED_FUNCTION_CALL", "stop"),
            ("SOMETHING_NEW", "stop"),
            ("FINISH_REASON_UNSPECIFIED", "stop"),
        ];
        for (gemini, openai) in cases {
            let body = json!({"candidates": [{"content": {"parts": [{"text": "x"}], "role": "model"}, "finishReason": gemini}]});
            let translated = answer_value(&body.to_string(), &context(false));
            assert_eq!(translated["choices"][0]["finish_reason"], openai, "{gemini}");
            assert_eq!(translated["id"], "chatcmpl-local1");
            assert!(translated.get("usage").is_none());
        }
        // A tool call ends the turn as tool_calls, except when cut or filtered.
        for (gemini, openai) in [("STOP", "tool_calls"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter")] {
            let body = json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "id": "fc-7", "args": {"a": [1]}}}]}, "finishReason": gemini}]});
            let translated = answer_value(&body.to_string(), &context(false));
            assert_eq!(translated["choices"][0]["finish_reason"], openai, "{gemini}");
            assert_eq!(
                translated["choices"][0]["message"]["tool_calls"],
                json!([{"id": "fc-7", "type": "function", "function": {"name": "f", "arguments": "{\"a\":[1]}"}}])
            );
            assert_eq!(translated["choices"][0]["message"]["content"], Value::Null);
        }
    }

    #[test]
    fn usage_counts_thinking_as_completion_and_saturates() {
        let body = json!({"candidates": [], "usageMetadata": {
            "promptTokenCount": 10, "toolUsePromptTokenCount": 5, "candidatesTokenCount": 3, "thoughtsTokenCount": 4}});
        assert_eq!(
            answer_value(&body.to_string(), &context(false))["usage"],
            json!({"prompt_tokens": 15, "completion_tokens": 7, "total_tokens": 22})
        );
        let body = r#"{"usageMetadata": {"promptTokenCount": 18446744073709551615, "candidatesTokenCount": 1e30,
            "thoughtsTokenCount": 99999999999999999999999, "totalTokenCount": -4, "toolUsePromptTokenCount": "12"}}"#;
        let usage = &answer_value(body, &context(false))["usage"];
        assert_eq!(usage["prompt_tokens"], json!(u64::MAX));
        assert_eq!(usage["completion_tokens"], json!(u64::MAX));
        assert_eq!(usage["total_tokens"], json!(0));
    }

    #[test]
    fn an_answer_with_nothing_in_it_still_reads() {
        let translated = answer_value("{}", &context(false));
        assert_eq!(translated["choices"][0]["message"], json!({"role": "assistant", "content": null}));
        assert_eq!(translated["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn garbage_answers_are_errors_not_panics() {
        for body in [&b""[..], b"not json", b"{\"candidates\": 5}", b"[1,2]", b"{\"candidates\": [{\"content\": {\"parts\": [{\"text\": 7}]}}]}",
            b"{\"usageMetadata\": {\"promptTokenCount\": 1e999}}", b"\xff\xfe{"]
        {
            assert!(answer(body, &context(false)).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    fn error_value(status: u16, body: &str) -> Value {
        serde_json::from_slice(&error(status, body.as_bytes())).unwrap()
    }

    #[test]
    fn errors_in_openai_form() {
        let google = |code: u16, status: &str, message: &str| {
            json!({"error": {"code": code, "message": message, "status": status}}).to_string()
        };
        let cases = [
            (429, google(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."), "rate_limit_error", Some("resource_exhausted")),
            (400, google(400, "INVALID_ARGUMENT", "Request contains an invalid argument."), "invalid_request_error", Some("invalid_argument")),
            (400, google(400, "FAILED_PRECONDITION", "User location is not supported for the API use."), "invalid_request_error", Some("failed_precondition")),
            (403, google(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."), "permission_error", Some("permission_denied")),
            (401, google(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."), "authentication_error", Some("unauthenticated")),
            (404, google(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta."), "invalid_request_error", Some("not_found")),
            (500, google(500, "INTERNAL", "An internal error has occurred."), "api_error", Some("internal")),
            (503, google(503, "UNAVAILABLE", "The model is overloaded. Please try again later."), "api_error", Some("unavailable")),
            (504, google(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."), "api_error", Some("deadline_exceeded")),
        ];
        for (status, body, kind, code) in cases {
            let translated = error_value(status, &body);
            let message = json(&body)["error"]["message"].clone();
            assert_eq!(translated, json!({"error": {"message": message, "type": kind, "param": null, "code": code}}), "{body}");
        }
    }

    #[test]
    fn an_invalid_key_is_an_authentication_error_though_gemini_says_400() {
        let body = r#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"}}]}}"#;
        assert_eq!(
            error_value(400, body)["error"],
            json!({"message": "API key not valid. Please pass a valid API key.", "type": "authentication_error", "param": null, "code": "invalid_api_key"})
        );
    }

    #[test]
    fn errors_that_are_not_googles_shape() {
        let array = r#"[{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}]"#;
        assert_eq!(error_value(429, array)["error"]["type"], "rate_limit_error");
        let html = "<html><head><title>502 Bad Gateway</title></head>\n<body>  bad   gateway</body></html>";
        assert_eq!(
            error_value(502, html)["error"],
            json!({"message": format!("Gemini answered HTTP 502: {}", html.split_whitespace().collect::<Vec<_>>().join(" ")),
                "type": "api_error", "param": null, "code": null})
        );
        assert_eq!(error_value(429, "")["error"]["message"], "Gemini answered HTTP 429");
        assert_eq!(error_value(429, "")["error"]["type"], "rate_limit_error");
        assert_eq!(error_value(401, r#"{"error": "nope"}"#)["error"]["type"], "authentication_error");
        assert_eq!(error_value(500, r#"{"error": {"code": 500}}"#)["error"]["message"], "Gemini error without a message");
        let long = "x".repeat(5000);
        assert_eq!(error_value(500, &long)["error"]["message"].as_str().unwrap().chars().count(), "Gemini answered HTTP 500: ".len() + 200);
        let bytes = error(503, b"\xff\xfe broken \xc3");
        assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
    }

    /// The stream fed whole, then finished.
    fn run(stream: &[u8], context: &AnswerContext) -> Vec<u8> {
        let mut translator = Stream::new(context.clone());
        let mut out = translator.feed(stream);
        out.extend(translator.finish());
        out
    }

    /// Each `data:` payload of an OpenAI SSE body, and whether it ended with `[DONE]`.
    fn events(out: &[u8]) -> (Vec<Value>, bool) {
        let text = std::str::from_utf8(out).unwrap();
        let mut values = Vec::new();
        let mut done = false;
        for event in text.split_terminator("\n\n") {
            let data = event.strip_prefix("data: ").unwrap();
            assert!(!done, "nothing may follow [DONE]");
            if data == "[DONE]" {
                done = true;
            } else {
                values.push(json(data));
            }
        }
        (values, done)
    }

    #[test]
    fn golden_streams() {
        for (stream, expected) in [STREAM_TEXT, STREAM_TOOL_CALL] {
            let out = run(stream.as_bytes(), &context(true));
            let (chunks, done) = events(&out);
            assert!(done);
            assert_eq!(Value::Array(chunks.clone()), json(expected));
            // What the OpenAI SDK reads: every event a chat.completion.chunk with one id.
            for chunk in chunks {
                let chunk: ChatChunk = serde_json::from_value(chunk).unwrap();
                assert_eq!(chunk.object, "chat.completion.chunk");
                assert_eq!(chunk.id, json(expected)[0]["id"]);
            }
        }
    }

    #[test]
    fn crlf_framing_reads_the_same() {
        for (stream, _) in [STREAM_TEXT, STREAM_TOOL_CALL] {
            let crlf = stream.replace('\n', "\r\n");
            assert_eq!(run(crlf.as_bytes(), &context(true)), run(stream.as_bytes(), &context(true)));
        }
    }

    #[test]
    fn usage_only_when_asked() {
        let (chunks, done) = events(&run(STREAM_TEXT.0.as_bytes(), &context(false)));
        assert!(done);
        assert_eq!(chunks.len(), 5);
        assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    }

    #[test]
    fn any_split_of_a_stream_translates_the_same() {
        let streams = [STREAM_TEXT.0, STREAM_TOOL_CALL.0, STREAM_ERROR];
        for stream in streams {
            for variant in [stream.to_string(), stream.replace('\n', "\r\n")] {
                let bytes = variant.as_bytes();
                let whole = run(bytes, &context(true));
                for seed in 0..300 {
                    let out = crate::provider::translate_in_pieces(&mut Stream::new(context(true)), bytes, seed);
                    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&whole), "seed {seed}");
                }
            }
        }
    }

    #[test]
    fn a_tool_call_cut_inside_its_arguments_waits_for_the_rest() {
        let stream = STREAM_TOOL_CALL.0.as_bytes();
        let cut = STREAM_TOOL_CALL.0.find("\"days\"").unwrap();
        let mut translator = Stream::new(context(false));
        let first = translator.feed(&stream[..cut]);
        let (chunks, _) = events(&first);
        assert!(chunks.iter().all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()), "no half call is sent");
        let rest = translator.feed(&stream[cut..]);
        let (chunks, _) = events(&rest);
        assert_eq!(chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "get_weather");
    }

    #[test]
    fn an_error_in_the_stream_ends_it() {
        let out = run(STREAM_ERROR.as_bytes(), &context(true));
        let (chunks, done) = events(&out);
        assert!(!done, "no [DONE] after an error");
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "The first half of an answer");
        assert_eq!(
            chunks[2],
            json!({"error": {"message": "The model is overloaded. Please try again later.", "type": "api_error", "param": null, "code": "unavailable"}})
        );
        // An array-wrapped error, as the first event.
        let out = run(b"data: [{\"error\": {\"code\": 429, \"message\": \"slow down\", \"status\": \"RESOURCE_EXHAUSTED\"}}]\n\n", &context(true));
        let (chunks, done) = events(&out);
        assert!(!done);
        assert_eq!(chunks, vec![json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": "resource_exhausted"}})]);
    }

    #[test]
    fn a_body_that_is_no_event_stream_is_an_error() {
        let bare = b"{\n  \"error\": {\n    \"code\": 400,\n    \"message\": \"Invalid JSON payload received.\",\n    \"status\": \"INVALID_ARGUMENT\"\n  }\n}\n";
        let (chunks, done) = events(&run(bare, &context(true)));
        assert!(!done);
        assert_eq!(chunks[0]["error"]["message"], "Invalid JSON payload received.");
        let (chunks, done) = events(&run(b"<html>oops</html>", &context(true)));
        assert!(!done);
        assert_eq!(chunks[0]["error"]["message"], "Gemini's stream carried no events: <html>oops</html>");
        let (chunks, _) = events(&run(b"data: {not json\n\ndata: {}\n\n", &context(true)));
        assert!(chunks[0]["error"]["message"].as_str().unwrap().starts_with("Gemini sent an unreadable stream event: "));
    }

    #[test]
    fn a_stream_cut_short_still_closes() {
        // Nothing at all.
        let (chunks, done) = events(&run(b"", &context(true)));
        assert!(done);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0]["id"], "chatcmpl-local1");
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[2]["usage"], json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}));
        // Cut after a tool call and inside the next event: the call ends the turn.
        let stream = STREAM_TOOL_CALL.0;
        let cut = stream.rfind("data:").unwrap() + 20;
        let (chunks, done) = events(&run(&stream.as_bytes()[..cut], &context(true)));
        assert!(done);
        let finish: Vec<_> = chunks.iter().filter_map(|c| c["choices"].get(0)?.get("finish_reason")?.as_str()).collect();
        assert_eq!(finish, vec!["tool_calls"]);
        assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 72);
        // A last event without its blank line is still read.
        let trimmed = STREAM_TEXT.0.trim_end();
        assert_eq!(run(trimmed.as_bytes(), &context(true)), run(STREAM_TEXT.0.as_bytes(), &context(true)));
    }

    #[test]
    fn a_blocked_prompt_streams_a_content_filter_finish() {
        let stream = b"data: {\"promptFeedback\": {\"blockReason\": \"SAFETY\"}, \"usageMetadata\": {\"promptTokenCount\": 6, \"totalTokenCount\": 6}}\r\n\r\n";
        let (chunks, done) = events(&run(stream, &context(true)));
        assert!(done);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(chunks[2]["usage"], json!({"prompt_tokens": 6, "completion_tokens": 0, "total_tokens": 6}));
    }

    #[test]
    fn nothing_is_sent_after_the_end() {
        let mut translator = Stream::new(context(false));
        let mut out = translator.feed(STREAM_TEXT.0.as_bytes());
        out.extend(translator.finish());
        assert!(out.ends_with(sse::DONE));
        assert!(translator.feed(b"data: {}\n\n").is_empty());
        assert!(translator.finish().is_empty());
    }

    #[test]
    fn garbage_streams_never_panic() {
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let alphabet: &[u8] = b"data: {}[]\":,\n\r error candidates parts text functionCall 1e999 \xff\xc3\xa9";
        for round in 0..300 {
            let mut bytes = Vec::new();
            for _ in 0..(round % 97) * 3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let mut translator = Stream::new(context(round % 2 == 0));
            for piece in random_split(&bytes, seed) {
                translator.feed(piece);
            }
            translator.finish();
        }
        for stream in [STREAM_TEXT.0, STREAM_TOOL_CALL.0] {
            // Every prefix of a real stream ends as a well-formed OpenAI stream.
            for cut in 0..stream.len() {
                let (chunks, done) = events(&run(&stream.as_bytes()[..cut], &context(true)));
                assert!(done, "cut at {cut}");
                assert_eq!(chunks.iter().filter(|c| c["choices"].get(0).is_some_and(|c| !c["finish_reason"].is_null())).count(), 1);
            }
        }
    }
}
