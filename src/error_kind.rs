//! Error-aware failover: what a failed attempt's status and error body say went wrong, in any
//! provider's format, and so whether another provider can do better and how long to avoid this one.

use serde_json::{Map, Value};

use crate::sse::EventReader;

/// The most of a body, or of the start of a stream, that is read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request does not fit this model's context window.
    ContextLengthExceeded,
    /// The provider's safety system refused the request.
    ContentPolicy,
    /// Out of credit or quota: unlike a 429, it lasts until someone pays or the quota resets.
    InsufficientQuota,
    /// A transient rate limit.
    RateLimited,
    /// The key is wrong or not allowed.
    Unauthorized,
    /// The provider failed or was overloaded.
    ServerError,
    /// The request itself is wrong; another provider would refuse it too.
    BadRequest,
    /// An error nothing above describes (an unknown error event in a 200 stream, a 3xx).
    Other,
}

/// Where the request goes after an attempt failed so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The next provider in the order.
    AnyProvider,
    /// Only providers with a larger configured context window than this one.
    LargerContext,
    /// No failover: the client gets this answer.
    Client,
}

/// How the provider that answered so is left out of later orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cooldown {
    /// The provider is fine; only this request did not suit it.
    None,
    /// `Retry-After`, or the short rate-limit cooldown.
    RateLimited,
    /// The exponential backoff of failures.
    Backoff,
    /// As long as for a bad key: it does not heal by itself within minutes.
    Long,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::ContextLengthExceeded,
        ErrorKind::ContentPolicy,
        ErrorKind::InsufficientQuota,
        ErrorKind::RateLimited,
        ErrorKind::Unauthorized,
        ErrorKind::ServerError,
        ErrorKind::BadRequest,
        ErrorKind::Other,
    ];

    /// For logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ContextLengthExceeded => "context_length_exceeded",
            ErrorKind::ContentPolicy => "content_policy",
            ErrorKind::InsufficientQuota => "insufficient_quota",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::ServerError => "server_error",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Other => "other",
        }
    }

    pub fn next(self) -> Next {
        match self {
            ErrorKind::ContextLengthExceeded => Next::LargerContext,
            // Another provider's filter might let it through; sending a refused prompt around
            // until one does is not the filter's call to make.
            ErrorKind::ContentPolicy | ErrorKind::BadRequest => Next::Client,
            ErrorKind::InsufficientQuota
            | ErrorKind::RateLimited
            | ErrorKind::Unauthorized
            | ErrorKind::ServerError
            | ErrorKind::Other => Next::AnyProvider,
        }
    }

    pub fn cooldown(self) -> Cooldown {
        match self {
            ErrorKind::ContextLengthExceeded | ErrorKind::ContentPolicy | ErrorKind::BadRequest => Cooldown::None,
            ErrorKind::InsufficientQuota | ErrorKind::Unauthorized => Cooldown::Long,
            ErrorKind::RateLimited => Cooldown::RateLimited,
            ErrorKind::ServerError | ErrorKind::Other => Cooldown::Backoff,
        }
    }
}

/// What a failed attempt's answer means. The body's own signals (codes, then wording) come
/// first, because providers put several kinds under one status: a 400 may be a context limit,
/// a content filter, an empty balance or a bad key; a 429 may be a minute's rate limit or a
/// day's quota. The status decides the rest. Reads at most `MAX_BODY_BYTES` of the body.
pub fn classify(status: u16, body: &[u8]) -> ErrorKind {
    let signals = Signals::read(body);
    if signals.content_policy() {
        return ErrorKind::ContentPolicy;
    }
    if signals.context_length() {
        return ErrorKind::ContextLengthExceeded;
    }
    if status == 402 || signals.insufficient_quota() {
        return ErrorKind::InsufficientQuota;
    }
    // A 200 carrying an error (a stream's error event) may say its status in `error.code`,
    // as OpenRouter and Gemini do.
    let status = match signals.numeric_code {
        Some(code) if status < 400 && (400..600).contains(&code) => code,
        _ => status,
    };
    match status {
        401 | 403 => ErrorKind::Unauthorized,
        429 => ErrorKind::RateLimited,
        408 | 500..=599 => ErrorKind::ServerError,
        // Gemini says a bad key with a 400 (`API_KEY_INVALID`); Groq a tokens-per-minute
        // limit with a 413 (`rate_limit_exceeded`).
        400..=499 if signals.any_code(UNAUTHORIZED_CODES) => ErrorKind::Unauthorized,
        400..=499 if signals.any_code(RATE_LIMIT_CODES) => ErrorKind::RateLimited,
        400..=499 => ErrorKind::BadRequest,
        _ if signals.any_code(UNAUTHORIZED_CODES) => ErrorKind::Unauthorized,
        _ if signals.any_code(RATE_LIMIT_CODES) => ErrorKind::RateLimited,
        _ if signals.any_code(SERVER_CODES) => ErrorKind::ServerError,
        _ if signals.any_code(BAD_REQUEST_CODES) => ErrorKind::BadRequest,
        _ => ErrorKind::Other,
    }
}

// Codes are compared lowercased. They are OpenAI's `code` and `type`, Anthropic's
// `error.type`, Gemini's `status` and `details[].reason`, Azure's `innererror.code`.

const CONTENT_POLICY_CODES: &[&str] = &[
    // OpenAI images: "Your request was rejected as a result of our safety system."
    "content_policy_violation",
    // Azure OpenAI: "The response was filtered due to the prompt triggering Azure OpenAI's
    // content management policy.", with innererror.code `ResponsibleAIPolicyViolation`.
    "content_filter",
    "responsibleaipolicyviolation",
];

const CONTENT_POLICY_WORDING: &[&str] = &[
    "safety system",
    "content management policy",
    // OpenAI reasoning models, code `invalid_prompt`: "Invalid prompt: your prompt was
    // flagged as potentially violating our usage policy."
    "prompt was flagged",
    "violating our usage policy",
    // OpenRouter 403: "Your chosen model requires moderation and your input was flagged".
    "input was flagged",
];

const CONTEXT_LENGTH_CODES: &[&str] = &["context_length_exceeded"];

const CONTEXT_LENGTH_WORDING: &[&str] = &[
    // OpenAI, and the servers that copy its wording (vLLM, DeepSeek, Groq, Mistral,
    // OpenRouter's "This endpoint's maximum context length is 128000 tokens"): "This model's
    // maximum context length is 8192 tokens. However, your messages resulted in 8227 tokens."
    "maximum context length",
    // OpenAI: "Your input exceeds the context window of this model."
    "context window",
    // Anthropic: "prompt is too long: 215000 tokens > 200000 maximum".
    "prompt is too long",
    // Anthropic: "input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000".
    "exceed context limit",
    // Gemini INVALID_ARGUMENT: "The input token count (1200293) exceeds the maximum number of
    // tokens allowed (1048576)."
    "exceeds the maximum number of tokens",
    // Ollama 400: "the input length exceeds the context length"; LM Studio: "Input length
    // 6491 exceeds context length 1500".
    "exceeds the context length",
    "exceeds context length",
    // Bedrock ValidationException 400: "Input is too long for requested model."
    "input is too long for requested model",
];

const QUOTA_CODES: &[&str] = &[
    // OpenAI 429: "You exceeded your current quota, please check your plan and billing details."
    "insufficient_quota",
    // OpenAI images: "Billing hard limit has been reached".
    "billing_hard_limit_reached",
    // Anthropic 402.
    "billing_error",
    // Gemini 400: "Gemini API free tier is not available in your country. Please enable
    // billing on your project in Google AI Studio." The account, not the request, is at fault.
    "failed_precondition",
];

const QUOTA_WORDING: &[&str] = &[
    // Anthropic 400 invalid_request_error: "Your credit balance is too low to access the
    // Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."
    "credit balance is too low",
    // OpenRouter 402: "Insufficient credits"; DeepSeek 402: "Insufficient Balance".
    "insufficient credits",
    "insufficient balance",
];

const UNAUTHORIZED_CODES: &[&str] = &[
    "invalid_api_key",
    "authentication_error",
    "permission_error",
    // Gemini 400: "API key not valid. Please pass a valid API key.", reason `API_KEY_INVALID`.
    "api_key_invalid",
    "permission_denied",
    "unauthenticated",
];

const RATE_LIMIT_CODES: &[&str] = &["rate_limit_exceeded", "rate_limit_error", "resource_exhausted"];

const SERVER_CODES: &[&str] = &[
    "server_error",
    "api_error",
    "overloaded_error",
    "timeout_error",
    "server_is_overloaded",
    "internal",
    "unavailable",
    "deadline_exceeded",
];

const BAD_REQUEST_CODES: &[&str] =
    &["invalid_request_error", "invalid_argument", "not_found_error", "not_found", "request_too_large", "badrequesterror"];

/// Gemini candidates stopped for these reasons were refused by its safety system.
/// `RECITATION` is left out: it is about copyright, and another model may well answer.
const BLOCKED_FINISH_REASONS: &[&str] = &["SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"];

/// What an error body says, whatever its provider's shape.
#[derive(Debug, Default)]
struct Signals {
    /// Lowercased machine-readable codes.
    codes: Vec<String>,
    /// Gemini's violated `quotaId`s, lowercased (`generaterequestsperdayperprojectpermodel-freetier`).
    quota_ids: Vec<String>,
    /// Lowercased human text: messages, or the whole body when it is not JSON.
    text: String,
    /// The body did not parse, so codes are looked for in `text`.
    unparsed: bool,
    /// `error.code` as a number (OpenRouter, Gemini: the HTTP status).
    numeric_code: Option<u16>,
    /// Gemini blocked the prompt or the answer, or OpenRouter's moderation flagged the input.
    blocked: bool,
}

impl Signals {
    fn read(body: &[u8]) -> Signals {
        let body = body.get(..MAX_BODY_BYTES).unwrap_or(body);
        let mut signals = Signals::default();
        match serde_json::from_slice::<Value>(body) {
            Ok(value) => signals.add_json(&value, 0),
            Err(_) => {
                signals.unparsed = true;
                signals.add_text(&String::from_utf8_lossy(body));
            }
        }
        signals
    }

    fn add_text(&mut self, text: &str) {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(&text.to_lowercase());
    }

    fn add_code(&mut self, code: &str) {
        self.codes.push(code.to_lowercase());
    }

    fn add_json(&mut self, value: &Value, depth: u8) {
        // Gemini answers a stream request that fails with a one-element array.
        let value = match value {
            Value::Array(items) => items.first().unwrap_or(value),
            _ => value,
        };
        let Some(top) = value.as_object() else {
            if let Some(text) = value.as_str() {
                self.add_text(text);
            }
            return;
        };
        match top.get("error") {
            // Ollama: {"error": "model \"x\" not found, try pulling it first"}.
            Some(Value::String(message)) => self.add_text(message),
            Some(Value::Object(error)) => self.add_error(error, depth),
            // vLLM and Mistral: {"object": "error", "message", "type", "code"} at the top.
            _ if top.get("object").and_then(Value::as_str) == Some("error") || top.contains_key("message") => {
                self.add_error(top, depth)
            }
            _ => {}
        }
        self.blocked |= gemini_blocked(top);
    }

    fn add_error(&mut self, error: &Map<String, Value>, depth: u8) {
        for key in ["code", "type", "status"] {
            match error.get(key) {
                Some(Value::String(code)) => self.add_code(code),
                Some(Value::Number(n)) if key == "code" => {
                    self.numeric_code = n.as_u64().and_then(|n| u16::try_from(n).ok());
                }
                _ => {}
            }
        }
        if let Some(message) = error.get("message").and_then(Value::as_str) {
            self.add_text(message);
        }
        if let Some(code) = error.get("innererror").and_then(|e| e.get("code")).and_then(Value::as_str) {
            self.add_code(code);
        }
        for detail in error.get("details").and_then(Value::as_array).into_iter().flatten() {
            if let Some(reason) = detail.get("reason").and_then(Value::as_str) {
                self.add_code(reason);
            }
            for violation in detail.get("violations").and_then(Value::as_array).into_iter().flatten() {
                if let Some(id) = violation.get("quotaId").and_then(Value::as_str) {
                    self.quota_ids.push(id.to_lowercase());
                }
            }
        }
        if let Some(metadata) = error.get("metadata").and_then(Value::as_object) {
            // OpenRouter's moderation names what it flagged.
            self.blocked |= metadata.contains_key("flagged_input");
            // OpenRouter passes the upstream provider's own error body on as a string.
            if let Some(raw) = metadata.get("raw").and_then(Value::as_str) {
                if depth == 0 {
                    match serde_json::from_str::<Value>(raw) {
                        Ok(inner) => self.add_json(&inner, depth + 1),
                        Err(_) => self.add_text(raw),
                    }
                }
            }
        }
    }

    fn any_code(&self, codes: &[&str]) -> bool {
        codes.iter().any(|code| {
            self.codes.iter().any(|c| c == code) || (self.unparsed && self.text.contains(code))
        })
    }

    fn says(&self, wording: &[&str]) -> bool {
        wording.iter().any(|w| self.text.contains(w))
    }

    fn content_policy(&self) -> bool {
        self.blocked || self.any_code(CONTENT_POLICY_CODES) || self.says(CONTENT_POLICY_WORDING)
    }

    fn context_length(&self) -> bool {
        self.any_code(CONTEXT_LENGTH_CODES) || self.says(CONTEXT_LENGTH_WORDING)
    }

    fn insufficient_quota(&self) -> bool {
        if self.any_code(&["resource_exhausted"]) {
            // Gemini words a per-minute limit and a per-day quota alike ("You exceeded your
            // current quota"); only the violated quota tells them apart.
            let per_day = |s: &str| s.contains("perday") || s.contains("per_day") || s.contains("per day");
            return self.quota_ids.iter().any(|id| per_day(id)) || per_day(&self.text);
        }
        self.any_code(QUOTA_CODES) || self.says(QUOTA_WORDING) || self.text.contains("exceeded your current quota")
    }
}

fn gemini_blocked(answer: &Map<String, Value>) -> bool {
    let prompt_blocked = answer
        .get("promptFeedback")
        .and_then(|f| f.get("blockReason"))
        .and_then(Value::as_str)
        .is_some_and(|reason| !reason.is_empty() && reason != "BLOCK_REASON_UNSPECIFIED");
    let answer_blocked = answer.get("candidates").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("finishReason").and_then(Value::as_str).is_some_and(|r| BLOCKED_FINISH_REASONS.contains(&r))
    });
    prompt_blocked || answer_blocked
}

/// How a 200 stream begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// An error event came before any content: nothing has reached the client, so the
    /// attempt can still fail over as if it had been answered with an error status.
    Error(ErrorKind),
    /// Content came first, or the stream ended cleanly without any: the stream is the answer.
    Content,
    /// Nothing decisive in these bytes: call again with more of the stream. Past
    /// `MAX_BODY_BYTES` it stays undecided, and the stream should be passed on.
    Undecided,
}

/// Whether an error event arrived before any content, in the start of a 200 stream: OpenAI
/// chunks (`data: {"error": ...}`), Anthropic events (`event: error`), Gemini SSE, or Ollama's
/// NDJSON. Only complete events count; reads at most `MAX_BODY_BYTES`.
pub fn stream_start(first_bytes: &[u8]) -> StreamStart {
    let bytes = first_bytes.get(..MAX_BODY_BYTES).unwrap_or(first_bytes);
    let ndjson = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if ndjson {
        let complete = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(end) => bytes.get(..end).unwrap_or_default(),
            None => return StreamStart::Undecided,
        };
        for line in complete.split(|&b| b == b'\n') {
            if let Some(start) = event_start(None, line) {
                return start;
            }
        }
    } else {
        // Line by line, to stop at the event that decides: a whole stream can be in the buffer.
        let mut reader = EventReader::default();
        let mut from = 0;
        while from < bytes.len() {
            let rest = bytes.get(from..).unwrap_or_default();
            let end = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
            for event in reader.feed(rest.get(..end).unwrap_or_default()) {
                if let Some(start) = event_start(event.name.as_deref(), event.data.as_bytes()) {
                    return start;
                }
            }
            from += end;
        }
    }
    StreamStart::Undecided
}

/// The kind of error that arrived before any content, if one did.
pub fn stream_error_before_content(first_bytes: &[u8]) -> Option<ErrorKind> {
    match stream_start(first_bytes) {
        StreamStart::Error(kind) => Some(kind),
        StreamStart::Content | StreamStart::Undecided => None,
    }
}

/// What one event decides, or `None` for events that precede content (role chunks,
/// `message_start`, `ping`, keep-alives).
fn event_start(name: Option<&str>, data: &[u8]) -> Option<StreamStart> {
    let trimmed = data.trim_ascii();
    if trimmed.is_empty() {
        return None;
    }
    if trimmed == b"[DONE]" {
        return Some(StreamStart::Content);
    }
    if name == Some("error") {
        return Some(StreamStart::Error(classify(200, trimmed)));
    }
    let value: Value = serde_json::from_slice(trimmed).ok()?;
    let event = value.as_object()?;
    let is_error = event.get("error").is_some_and(|e| !e.is_null())
        || event.get("type").and_then(Value::as_str) == Some("error")
        || event.get("object").and_then(Value::as_str) == Some("error")
        || event.get("type").and_then(Value::as_str) == Some("response.failed")
        || gemini_blocked(event);
    if is_error {
        return Some(StreamStart::Error(classify(200, trimmed)));
    }
    has_content(event).then_some(StreamStart::Content)
}

fn non_empty(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(fields)) => !fields.is_empty(),
        Some(_) => true,
    }
}

fn has_content(event: &Map<String, Value>) -> bool {
    // OpenAI chunks: a delta with text, a tool call or a refusal, or a finish reason.
    let openai = event.get("choices").and_then(Value::as_array).into_iter().flatten().any(|choice| {
        let delta = choice.get("delta");
        let field = |name: &str| non_empty(delta.and_then(|d| d.get(name)));
        field("content")
            || field("tool_calls")
            || field("function_call")
            || field("refusal")
            || field("reasoning_content")
            || non_empty(choice.get("finish_reason"))
    });
    // OpenAI's Responses: any event past the response's creation (an output item, its deltas,
    // the end). Its `response` field is not Ollama's.
    if let Some(kind) = event.get("type").and_then(Value::as_str).filter(|k| k.starts_with("response.")) {
        return !matches!(kind, "response.created" | "response.in_progress" | "response.queued");
    }
    // Anthropic: any content block delta, a block that is not empty text, or the end.
    let anthropic = match event.get("type").and_then(Value::as_str) {
        Some("content_block_delta" | "message_stop") => true,
        Some("content_block_start") => event.get("content_block").is_some_and(|block| {
            block.get("type").and_then(Value::as_str) != Some("text") || non_empty(block.get("text"))
        }),
        _ => false,
    };
    // Gemini: a candidate with parts, or one that finished.
    let gemini = event.get("candidates").and_then(Value::as_array).into_iter().flatten().any(|c| {
        non_empty(c.get("content").and_then(|content| content.get("parts"))) || non_empty(c.get("finishReason"))
    });
    // Ollama: message text or tool calls (`/api/chat`), response text (`/api/generate`), or done.
    let ollama = non_empty(event.get("message").and_then(|m| m.get("content")))
        || non_empty(event.get("message").and_then(|m| m.get("tool_calls")))
        || non_empty(event.get("response"))
        || event.get("done").and_then(Value::as_bool) == Some(true);
    openai || anthropic || gemini || ollama
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind::*;

    fn check(cases: &[(&str, u16, &str, ErrorKind)]) {
        for (name, status, body, expected) in cases {
            assert_eq!(classify(*status, body.as_bytes()), *expected, "{name}: {status} {body}");
        }
    }

    #[test]
    fn openai_errors() {
        check(&[
            (
                "context_length_exceeded",
                400,
                r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 8227 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
                ContextLengthExceeded,
            ),
            (
                "context window, newer wording",
                400,
                r#"{"error":{"message":"Your input exceeds the context window of this model. Please adjust your input and try again.","type":"invalid_request_error","param":"input","code":"context_length_exceeded"}}"#,
                ContextLengthExceeded,
            ),
            (
                "insufficient_quota is not a rate limit",
                429,
                r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
                InsufficientQuota,
            ),
            (
                "rate_limit_exceeded",
                429,
                r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
                RateLimited,
            ),
            (
                "content_policy_violation",
                400,
                r#"{"error":{"code":"content_policy_violation","message":"Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.","param":null,"type":"invalid_request_error"}}"#,
                ContentPolicy,
            ),
            (
                "invalid_prompt flagged by the usage policy",
                400,
                r#"{"error":{"message":"Invalid prompt: your prompt was flagged as potentially violating our usage policy. Please try again with a different prompt: https://platform.openai.com/docs/guides/reasoning#advice-on-prompting","type":"invalid_request_error","param":null,"code":"invalid_prompt"}}"#,
                ContentPolicy,
            ),
            (
                "invalid_api_key is a 401 whatever its type says",
                401,
                r#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
                Unauthorized,
            ),
            (
                "unsupported region",
                403,
                r#"{"error":{"code":"unsupported_country_region_territory","message":"Country, region, or territory not supported","param":null,"type":"request_forbidden"}}"#,
                Unauthorized,
            ),
            (
                "server_error",
                500,
                r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#,
                ServerError,
            ),
            (
                "model_not_found",
                404,
                r#"{"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#,
                BadRequest,
            ),
            (
                "a plain bad request",
                400,
                r#"{"error":{"message":"Invalid type for 'temperature': expected a decimal, but got a string instead.","type":"invalid_request_error","param":"temperature","code":"invalid_type"}}"#,
                BadRequest,
            ),
        ]);
    }

    #[test]
    fn azure_openai_errors() {
        check(&[(
            "content_filter with ResponsibleAIPolicyViolation",
            400,
            r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":true,"detected":true}}}}}"#,
            ContentPolicy,
        )]);
    }

    #[test]
    fn anthropic_errors() {
        check(&[
            (
                "prompt is too long",
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 215000 tokens > 200000 maximum"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#,
                ContextLengthExceeded,
            ),
            (
                "input and max_tokens exceed the context limit",
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000, decrease input length or `max_tokens` and try again"}}"#,
                ContextLengthExceeded,
            ),
            (
                "credit balance is too low, under a 400",
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."},"request_id":"req_011CbrFTcXhtiMzr3s6EocF7"}"#,
                InsufficientQuota,
            ),
            ("billing_error", 402, r#"{"type":"error","error":{"type":"billing_error","message":"Billing issue"}}"#, InsufficientQuota),
            (
                "rate_limit_error",
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization of 40,000 input tokens per minute."}}"#,
                RateLimited,
            ),
            ("overloaded_error 529", 529, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, ServerError),
            ("api_error", 500, r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#, ServerError),
            ("authentication_error", 401, r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#, Unauthorized),
            (
                "permission_error",
                403,
                r#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}"#,
                Unauthorized,
            ),
            (
                "request_too_large",
                413,
                r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#,
                BadRequest,
            ),
            (
                "roles must alternate",
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: roles must alternate between \"user\" and \"assistant\""}}"#,
                BadRequest,
            ),
        ]);
    }

    #[test]
    fn gemini_errors() {
        check(&[
            (
                "input token count exceeds the maximum",
                400,
                r#"{"error":{"code":400,"message":"The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#,
                ContextLengthExceeded,
            ),
            (
                "the same in the array a failed stream request gets",
                400,
                r#"[{"error":{"code":400,"message":"The input token count (2551556) exceeds the maximum number of tokens allowed (1048576).","errors":[{"message":"The input token count (2551556) exceeds the maximum number of tokens allowed (1048576).","domain":"global","reason":"badRequest"}],"status":"INVALID_ARGUMENT"}}]"#,
                ContextLengthExceeded,
            ),
            (
                "RESOURCE_EXHAUSTED on a per-day quota",
                429,
                r#"{"error":{"code":429,"message":"You exceeded your current quota. Go to https://aistudio.google.com/apikey to upgrade your quota tier.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_requests_per_model_per_day","quotaId":"GenerateRequestsPerDayPerProjectPerModel"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"25s"}]}}"#,
                InsufficientQuota,
            ),
            (
                "RESOURCE_EXHAUSTED on per-minute quotas",
                429,
                r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_input_token_count","quotaId":"GenerateContentInputTokensPerModelPerMinute-FreeTier"},{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"9s"}]}}"#,
                RateLimited,
            ),
            (
                "RESOURCE_EXHAUSTED without details",
                429,
                r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#,
                RateLimited,
            ),
            (
                "prepay credits depleted",
                402,
                r#"{"error":{"code":402,"message":"Your prepayment credits are depleted.","status":"RESOURCE_EXHAUSTED"}}"#,
                InsufficientQuota,
            ),
            (
                "free tier not available without billing",
                400,
                r#"{"error":{"code":400,"message":"Gemini API free tier is not available in your country. Please enable billing on your project in Google AI Studio.","status":"FAILED_PRECONDITION"}}"#,
                InsufficientQuota,
            ),
            (
                "API_KEY_INVALID under a 400",
                400,
                r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}"#,
                Unauthorized,
            ),
            (
                "PERMISSION_DENIED",
                403,
                r#"{"error":{"code":403,"message":"Your API key doesn't have the required permissions.","status":"PERMISSION_DENIED"}}"#,
                Unauthorized,
            ),
            (
                "UNAVAILABLE",
                503,
                r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
                ServerError,
            ),
            (
                "prompt blocked for SAFETY",
                200,
                r#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","probability":"HIGH"}]},"usageMetadata":{"promptTokenCount":12}}"#,
                ContentPolicy,
            ),
            (
                "answer stopped for PROHIBITED_CONTENT",
                200,
                r#"{"candidates":[{"finishReason":"PROHIBITED_CONTENT","index":0}]}"#,
                ContentPolicy,
            ),
            ("a malformed request", 400, r#"{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}"#, BadRequest),
        ]);
    }

    #[test]
    fn bedrock_errors() {
        check(&[
            ("ValidationException: input too long", 400, r#"{"message":"Input is too long for requested model."}"#, ContextLengthExceeded),
            ("ValidationException", 400, r#"{"message":"Malformed input request, please reformat your input and try again."}"#, BadRequest),
            ("ThrottlingException", 429, r#"{"message":"Too many requests, please wait before trying again."}"#, RateLimited),
            ("bad signature", 403, r#"{"message":"The request signature we calculated does not match the signature you provided."}"#, Unauthorized),
            ("ModelTimeoutException", 408, r#"{"message":"Model has timed out in processing the request."}"#, ServerError),
            ("ServiceUnavailableException", 503, r#"{"message":"Bedrock is unable to process your request."}"#, ServerError),
        ]);
    }

    #[test]
    fn ollama_errors() {
        check(&[
            ("input exceeds the context length", 400, r#"{"error":"the input length exceeds the context length"}"#, ContextLengthExceeded),
            ("model not pulled", 404, r#"{"error":"model \"llama3\" not found, try pulling it first"}"#, BadRequest),
            ("runner crashed", 500, r#"{"error":"llama runner process has terminated: signal: killed"}"#, ServerError),
            (
                "through the OpenAI-compatible endpoint",
                400,
                r#"{"error":{"message":"the input length exceeds the context length","type":"invalid_request_error","param":null,"code":null}}"#,
                ContextLengthExceeded,
            ),
        ]);
    }

    #[test]
    fn openai_compatible_servers() {
        check(&[
            (
                "vLLM puts the error at the top",
                400,
                r#"{"object":"error","message":"This model's maximum context length is 131072 tokens. However, you requested 351430 tokens. Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}"#,
                ContextLengthExceeded,
            ),
            (
                "Mistral",
                400,
                r#"{"object":"error","message":"Prompt contains 40000 tokens and 0 draft tokens, too large for model with 32768 maximum context length","type":"invalid_request_error","param":null,"code":null}"#,
                ContextLengthExceeded,
            ),
            (
                "Groq says a TPM limit with a 413",
                413,
                r#"{"error":{"message":"Request too large for model `llama-3.3-70b-versatile` in organization `org_01` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 12000, please reduce your message size and try again.","type":"tokens","code":"rate_limit_exceeded"}}"#,
                RateLimited,
            ),
            ("DeepSeek balance", 402, r#"{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}"#, InsufficientQuota),
            (
                "OpenRouter credits",
                402,
                r#"{"error":{"code":402,"message":"Insufficient credits. This account never purchased credits.","metadata":{"limit_source":"openrouter_credits"}}}"#,
                InsufficientQuota,
            ),
            (
                "OpenRouter moderation, under a 403",
                403,
                r#"{"error":{"code":403,"message":"meta-llama/llama-guard requires moderation on OpenAI. Your input was flagged for \"violence\". No credits were charged.","metadata":{"reasons":["violence"],"flagged_input":"...","provider_name":"OpenAI","model_slug":"openai/gpt-4o"}}}"#,
                ContentPolicy,
            ),
            (
                "OpenRouter passes the provider's body on",
                400,
                r#"{"error":{"message":"Provider returned error","code":400,"metadata":{"raw":"{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"prompt is too long: 208310 tokens > 200000 maximum\"}}","provider_name":"Anthropic"}}}"#,
                ContextLengthExceeded,
            ),
        ]);
    }

    #[test]
    fn bodies_that_are_not_json() {
        check(&[
            ("an HTML gateway page", 502, "<html><body><h1>502 Bad Gateway</h1></body></html>", ServerError),
            ("Envoy's own reply", 503, "upstream connect error or disconnect/reset before headers. reset reason: connection failure", ServerError),
            ("empty", 429, "", RateLimited),
            ("empty 401", 401, "", Unauthorized),
            ("empty 404", 404, "", BadRequest),
            ("plain text context message", 400, "Input length 6491 exceeds context length 1500", ContextLengthExceeded),
            ("a 3xx", 302, "", Other),
        ]);
    }

    #[test]
    fn only_the_first_64_kib_are_read() {
        let pad = "x".repeat(MAX_BODY_BYTES);
        let late = format!(r#"{{"error":{{"message":"{pad} maximum context length","type":"invalid_request_error"}}}}"#);
        let early = format!(r#"{{"error":{{"message":"maximum context length {pad}","type":"invalid_request_error"}}}}"#);
        assert_eq!(classify(400, late.as_bytes()), BadRequest);
        // Cut, the body is no longer JSON; its text is still read.
        assert_eq!(classify(400, early.as_bytes()), ContextLengthExceeded);
        let code_late = format!(r#"{{"error":{{"message":"{pad}","code":"insufficient_quota"}}}}"#);
        assert_eq!(classify(429, code_late.as_bytes()), RateLimited);
        let code_early = format!(r#"{{"error":{{"code":"insufficient_quota","message":"{pad}"}}}}"#);
        assert_eq!(classify(429, code_early.as_bytes()), InsufficientQuota);
    }

    #[test]
    fn each_kind_says_where_to_go_and_how_long_to_stay_away() {
        let cases: &[(ErrorKind, Next, Cooldown, &str)] = &[
            (ContextLengthExceeded, Next::LargerContext, Cooldown::None, "context_length_exceeded"),
            (ContentPolicy, Next::Client, Cooldown::None, "content_policy"),
            (InsufficientQuota, Next::AnyProvider, Cooldown::Long, "insufficient_quota"),
            (RateLimited, Next::AnyProvider, Cooldown::RateLimited, "rate_limited"),
            (Unauthorized, Next::AnyProvider, Cooldown::Long, "unauthorized"),
            (ServerError, Next::AnyProvider, Cooldown::Backoff, "server_error"),
            (BadRequest, Next::Client, Cooldown::None, "bad_request"),
            (Other, Next::AnyProvider, Cooldown::Backoff, "other"),
        ];
        assert_eq!(cases.len(), ErrorKind::ALL.len());
        for (kind, next, cooldown, name) in cases {
            assert_eq!((kind.next(), kind.cooldown(), kind.name()), (*next, *cooldown, *name), "{kind:?}");
        }
    }

    #[test]
    fn stream_starts() {
        let cases: &[(&str, &str, StreamStart)] = &[
            (
                "OpenAI error chunk before content",
                "data: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n",
                StreamStart::Error(ServerError),
            ),
            (
                "OpenAI role chunk, then an error",
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
                 data: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}\n\n",
                StreamStart::Error(RateLimited),
            ),
            (
                "OpenAI content first, error later",
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n\
                 data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n",
                StreamStart::Content,
            ),
            (
                "OpenAI tool call first",
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
                StreamStart::Content,
            ),
            ("OpenAI empty stream that ends", "data: [DONE]\n\n", StreamStart::Content),
            (
                "OpenAI role chunk only, so far",
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
                StreamStart::Undecided,
            ),
            ("an event not yet complete", "data: {\"error\":{\"message\":\"The server had an err", StreamStart::Undecided),
            (
                "OpenRouter keep-alive comments, then an error chunk",
                ": OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n\
                 data: {\"id\":\"gen-1\",\"object\":\"chat.completion.chunk\",\"error\":{\"code\":502,\"message\":\"Provider disconnected\"},\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\"}]}\n\n",
                StreamStart::Error(ServerError),
            ),
            (
                "Anthropic overloaded after message_start",
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]}}\n\n\
                 event: ping\ndata: {\"type\": \"ping\"}\n\n\
                 event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
                StreamStart::Error(ServerError),
            ),
            (
                "Anthropic empty text block, then a delta",
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\n\
                 event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
                 event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
                 event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"x\"}}\n\n",
                StreamStart::Content,
            ),
            (
                "Anthropic tool use block",
                "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\n",
                StreamStart::Content,
            ),
            (
                "Anthropic empty text block only",
                "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
                StreamStart::Undecided,
            ),
            (
                "Gemini SSE text",
                "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}],\"role\": \"model\"},\"index\": 0}]}\r\n\r\n",
                StreamStart::Content,
            ),
            (
                "Gemini SSE prompt blocked",
                "data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"}}\r\n\r\n",
                StreamStart::Error(ContentPolicy),
            ),
            (
                "Ollama NDJSON error",
                "{\"error\":\"an error was encountered while running the model: unexpected EOF\"}\n",
                StreamStart::Error(Other),
            ),
            (
                "Ollama NDJSON content",
                "{\"model\":\"llama3.2\",\"created_at\":\"2025-01-01T00:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n",
                StreamStart::Content,
            ),
            ("Ollama line not complete", "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"}", StreamStart::Undecided),
            (
                "OpenAI Responses created, in progress, then an output item",
                "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"output\":[]}}\n\n\
                 event: response.in_progress\ndata: {\"type\":\"response.in_progress\",\"sequence_number\":1,\"response\":{\"output\":[]}}\n\n\
                 event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"message\"}}\n\n",
                StreamStart::Content,
            ),
            (
                "OpenAI Responses created only, so far",
                "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"output\":[]}}\n\n",
                StreamStart::Undecided,
            ),
            (
                "OpenAI Responses failed before any output",
                "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{}}\n\n\
                 event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"The server had an error\"}}}\n\n",
                // Its error sits inside `response`: read as an error of no known kind, which the
                // attempt answers 503 and Envoy retries at the next provider.
                StreamStart::Error(Other),
            ),
            ("nothing yet", "", StreamStart::Undecided),
        ];
        for (name, stream, expected) in cases {
            assert_eq!(stream_start(stream.as_bytes()), *expected, "{name}");
            let error = match expected {
                StreamStart::Error(kind) => Some(*kind),
                _ => None,
            };
            assert_eq!(stream_error_before_content(stream.as_bytes()), error, "{name}");
        }
    }

    #[test]
    fn a_stream_is_decided_only_from_its_first_64_kib() {
        let keep_alive = ": ping\n\n".repeat(MAX_BODY_BYTES / 8 + 1);
        let error = "data: {\"error\":{\"message\":\"x\",\"type\":\"server_error\"}}\n\n";
        assert_eq!(stream_start(format!("{keep_alive}{error}").as_bytes()), StreamStart::Undecided);
        assert_eq!(stream_start(format!(": ping\n\n{error}").as_bytes()), StreamStart::Error(ServerError));
    }
}
