//! Embeddings (`POST /v1/embeddings`): the client's request read once, each provider format's
//! translation of it (`gemini`, `ollama`; OpenAI-compatible and Azure take it as it is), and the
//! vectors written back in OpenAI's answer, as floats or as base64 of little-endian float32.

pub mod gemini;
pub mod ollama;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::provider::Unsupported;

/// OpenAI takes at most this many inputs in one request.
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    /// The embedding alias the client named.
    pub model: String,
    pub input: Input,
    pub dimensions: Option<u64>,
    pub encoding: Encoding,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u64>),
    TokenLists(Vec<Vec<u64>>),
}

impl Input {
    /// How many vectors the answer carries.
    pub fn count(&self) -> usize {
        match self {
            Input::Text(_) | Input::Tokens(_) => 1,
            Input::Texts(texts) => texts.len(),
            Input::TokenLists(lists) => lists.len(),
        }
    }

    /// The texts, for providers that take only text: token ids are OpenAI's tokenizer's.
    pub fn texts(&self) -> Result<Vec<&str>, Unsupported> {
        match self {
            Input::Text(text) => Ok(vec![text.as_str()]),
            Input::Texts(texts) => Ok(texts.iter().map(String::as_str).collect()),
            Input::Tokens(_) | Input::TokenLists(_) => {
                Err(Unsupported("`input` as token ids is OpenAI's tokenizer's; this provider takes text".into()))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Float,
    /// Each vector as base64 of its little-endian float32 values (what the OpenAI SDKs ask for
    /// by default, and decode).
    Base64,
}

/// A request the router refuses before any provider sees it, with the parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub message: String,
    pub param: Option<&'static str>,
}

fn invalid(message: impl Into<String>, param: &'static str) -> Invalid {
    Invalid { message: message.into(), param: Some(param) }
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    dimensions: Option<Value>,
    #[serde(default)]
    encoding_format: Option<Value>,
}

/// Reads and checks the client's request as OpenAI does: a model, a non-empty input of text or
/// token ids (at most 2048 entries), a positive `dimensions`, `float` or `base64`.
pub fn inspect(body: &[u8]) -> Result<EmbeddingsRequest, Invalid> {
    // A struct reads a JSON array too, field by field: only an object is a request.
    if body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b != b'{') {
        return Err(Invalid { message: "request body must be a JSON object".into(), param: None });
    }
    let raw: RawRequest = serde_json::from_slice(body).map_err(|e| {
        let why = e.to_string();
        let message = if why.starts_with("invalid type") { "request body must be a JSON object".to_string() } else { format!("request body is not valid JSON: {why}") };
        Invalid { message, param: None }
    })?;
    let model = match raw.model {
        Some(Value::String(model)) if !model.is_empty() => model,
        _ => return Err(invalid("you must provide a `model` string", "model")),
    };
    let input = raw.input.ok_or_else(|| invalid("you must provide `input`", "input"))?;
    let input: Input = serde_json::from_value(input)
        .map_err(|_| invalid("`input` must be a string, an array of strings, an array of token ids or an array of them", "input"))?;
    let empty = match &input {
        Input::Text(text) => text.is_empty(),
        Input::Texts(texts) => texts.is_empty() || texts.iter().any(String::is_empty),
        Input::Tokens(tokens) => tokens.is_empty(),
        Input::TokenLists(lists) => lists.is_empty() || lists.iter().any(Vec::is_empty),
    };
    if empty {
        return Err(invalid("`input` must not be empty, nor hold an empty entry", "input"));
    }
    if input.count() > MAX_INPUTS {
        return Err(invalid(format!("`input` holds {} entries; at most {MAX_INPUTS} are accepted", input.count()), "input"));
    }
    let dimensions = match raw.dimensions {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64().filter(|d| *d >= 1) {
            Some(d) => Some(d),
            None => return Err(invalid("`dimensions` must be a positive integer", "dimensions")),
        },
    };
    let encoding = match raw.encoding_format.as_ref() {
        None | Some(Value::Null) => Encoding::Float,
        Some(Value::String(name)) if name == "float" => Encoding::Float,
        Some(Value::String(name)) if name == "base64" => Encoding::Base64,
        Some(_) => return Err(invalid("`encoding_format` must be `float` or `base64`", "encoding_format")),
    };
    Ok(EmbeddingsRequest { model, input, dimensions, encoding })
}

/// The tokens a provider reports for an embeddings request (it has no output tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u64,
}

/// Vectors read from a provider's answer, before they are written in OpenAI's.
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    pub vectors: Vec<Vec<f64>>,
    /// `None` when the provider does not report it (Gemini's batch endpoint): 0 is answered.
    pub usage: Option<Usage>,
}

impl Vectors {
    /// One vector per input, as the provider promises: an answer with another count is refused
    /// (it would pair vectors with the wrong inputs).
    pub fn check_count(self, expected: usize) -> Result<Vectors, String> {
        if self.vectors.len() != expected {
            return Err(format!("{} vectors for {expected} inputs", self.vectors.len()));
        }
        Ok(self)
    }
}

/// What the attempt remembers of the request to write the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerShape {
    pub count: usize,
    pub encoding: Encoding,
    /// The provider's model, as OpenAI names the model that made the vectors.
    pub model: String,
}

/// Base64 of the vector's values as little-endian float32, as OpenAI sends `encoding_format: base64`.
pub fn base64_of(vector: &[f64]) -> String {
    use base64::Engine;
    let mut bytes = Vec::with_capacity(vector.len() * 4);
    for value in vector {
        bytes.extend_from_slice(&(*value as f32).to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The vectors in OpenAI's answer.
pub fn openai_answer(vectors: &Vectors, shape: &AnswerShape) -> Vec<u8> {
    let data: Vec<Value> = vectors
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = match shape.encoding {
                Encoding::Float => json!(vector),
                Encoding::Base64 => json!(base64_of(vector)),
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens = vectors.usage.unwrap_or_default().prompt_tokens;
    json!({
        "object": "list",
        "data": data,
        "model": shape.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
    .to_string()
    .into_bytes()
}

/// A list of numbers from a provider's answer, as a vector.
fn numbers(value: &Value) -> Option<Vec<f64>> {
    value.as_array()?.iter().map(Value::as_f64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> Result<EmbeddingsRequest, Invalid> {
        inspect(body.as_bytes())
    }

    #[test]
    fn string_and_array_input_with_dimensions_and_encoding() {
        let one = request(r#"{"model":"embed","input":"hello"}"#).unwrap();
        assert_eq!((one.input.count(), one.encoding, one.dimensions), (1, Encoding::Float, None));
        let many = request(r#"{"model":"embed","input":["a","b"],"dimensions":256,"encoding_format":"base64","user":"u"}"#).unwrap();
        assert_eq!((many.input.count(), many.encoding, many.dimensions), (2, Encoding::Base64, Some(256)));
        assert_eq!(many.input.texts().unwrap(), ["a", "b"]);
        let tokens = request(r#"{"model":"embed","input":[[1,2],[3]]}"#).unwrap();
        assert_eq!(tokens.input.count(), 2);
        assert!(tokens.input.texts().is_err(), "token ids cannot be sent as text");
        assert_eq!(request(r#"{"model":"embed","input":[1,2,3]}"#).unwrap().input, Input::Tokens(vec![1, 2, 3]));
    }

    #[test]
    fn bad_requests_name_their_parameter() {
        let cases = [
            (r#"{"input":"x"}"#, Some("model")),
            (r#"{"model":"","input":"x"}"#, Some("model")),
            (r#"{"model":"e"}"#, Some("input")),
            (r#"{"model":"e","input":""}"#, Some("input")),
            (r#"{"model":"e","input":[]}"#, Some("input")),
            (r#"{"model":"e","input":["a",""]}"#, Some("input")),
            (r#"{"model":"e","input":{"a":1}}"#, Some("input")),
            (r#"{"model":"e","input":"x","dimensions":0}"#, Some("dimensions")),
            (r#"{"model":"e","input":"x","dimensions":"8"}"#, Some("dimensions")),
            (r#"{"model":"e","input":"x","encoding_format":"int8"}"#, Some("encoding_format")),
            ("[1]", None),
            ("{", None),
        ];
        for (body, param) in cases {
            assert_eq!(request(body).unwrap_err().param, param, "{body}");
        }
        let too_many = format!(r#"{{"model":"e","input":[{}]}}"#, vec!["\"x\""; MAX_INPUTS + 1].join(","));
        assert!(request(&too_many).unwrap_err().message.contains("2049"));
    }

    #[test]
    fn base64_is_little_endian_float32_as_openai_sends_it() {
        // 1.0f32 = 0x3f800000, -2.0f32 = 0xc0000000: little-endian bytes 00 00 80 3f 00 00 00 c0.
        assert_eq!(base64_of(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(base64_of(&[]), "");
    }

    #[test]
    fn the_answer_is_openai_s_in_floats_or_base64() {
        let vectors = Vectors { vectors: vec![vec![0.5, -0.25], vec![1.0, 0.0]], usage: Some(Usage { prompt_tokens: 7 }) };
        let shape = AnswerShape { count: 2, encoding: Encoding::Float, model: "m".into() };
        let answer: Value = serde_json::from_slice(&openai_answer(&vectors, &shape)).unwrap();
        assert_eq!(
            answer,
            json!({"object": "list", "model": "m", "usage": {"prompt_tokens": 7, "total_tokens": 7}, "data": [
                {"object": "embedding", "index": 0, "embedding": [0.5, -0.25]},
                {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]},
            ]})
        );
        let base64 = AnswerShape { encoding: Encoding::Base64, ..shape };
        let answer: Value = serde_json::from_slice(&openai_answer(&Vectors { usage: None, ..vectors }, &base64)).unwrap();
        assert_eq!(answer["data"][0]["embedding"], base64_of(&[0.5, -0.25]));
        assert_eq!(answer["usage"], json!({"prompt_tokens": 0, "total_tokens": 0}));
    }

    #[test]
    fn a_vector_count_other_than_the_inputs_is_refused() {
        let vectors = Vectors { vectors: vec![vec![1.0]], usage: None };
        assert!(vectors.clone().check_count(1).is_ok());
        assert_eq!(vectors.check_count(2).unwrap_err(), "1 vectors for 2 inputs");
    }
}
