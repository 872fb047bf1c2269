//! What the filter needs from an OpenAI chat request body, read without building a JSON tree:
//! the model, whether it streams, and that it has messages. Rewrites touch only the model value.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, PartialEq, Eq)]
pub struct ChatRequest<'a> {
    pub model: Cow<'a, str>,
    pub stream: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum BadRequest {
    NotJson(String),
    NotAnObject,
    NoMessages,
    NoModel,
}

impl BadRequest {
    pub fn message(&self) -> String {
        match self {
            BadRequest::NotJson(why) => format!("request body is not valid JSON: {why}"),
            BadRequest::NotAnObject => "request body must be a JSON object".into(),
            BadRequest::NoMessages => "`messages` must be a non-empty array".into(),
            BadRequest::NoModel => "you must provide a `model` string".into(),
        }
    }

    pub fn param(&self) -> Option<&'static str> {
        match self {
            BadRequest::NoMessages => Some("messages"),
            BadRequest::NoModel => Some("model"),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct TopLevel<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
}

fn top_level(body: &[u8]) -> Result<TopLevel<'_>, BadRequest> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some() && first != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err(BadRequest::NotAnObject),
            Err(e) => Err(BadRequest::NotJson(e.to_string())),
        };
    }
    serde_json::from_slice(body).map_err(|e| BadRequest::NotJson(e.to_string()))
}

pub fn inspect(body: &[u8]) -> Result<ChatRequest<'_>, BadRequest> {
    let top = top_level(body)?;
    let non_empty_array = top.messages.map(|m| {
        let text = m.get();
        text.starts_with('[') && text[1..text.len() - 1].trim() != ""
    });
    if non_empty_array != Some(true) {
        return Err(BadRequest::NoMessages);
    }
    let model: Cow<str> = match top.model {
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| BadRequest::NoModel)?,
        None => return Err(BadRequest::NoModel),
    };
    if model.is_empty() {
        return Err(BadRequest::NoModel);
    }
    let stream = top.stream.is_some_and(|s| s.get() == "true");
    Ok(ChatRequest { model, stream })
}

/// The byte range of the top-level `model` value (quotes included) and the model it names.
fn model_value(body: &[u8]) -> Option<(Range<usize>, Cow<'_, str>)> {
    let top = top_level(body).ok()?;
    let raw = top.model?;
    let model: Cow<str> = serde_json::from_str(raw.get()).ok()?;
    // RawValue borrows from `body`, so its position is where it points.
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    Some((start..start + raw.get().len(), model))
}

pub fn requested_model(body: &[u8]) -> Option<Cow<'_, str>> {
    model_value(body).map(|(_, model)| model)
}

/// The body with its `model` replaced by `model`, every other byte as it was; `None` when the
/// body already names that model (or names none).
pub fn with_model(body: &[u8], model: &str) -> Option<Vec<u8>> {
    let (range, current) = model_value(body)?;
    if current == model {
        return None;
    }
    let quoted = serde_json::to_string(model).ok()?;
    let mut out = Vec::with_capacity(body.len() + quoted.len());
    out.extend_from_slice(body.get(..range.start)?);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(body.get(range.end..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_stream_and_messages() {
        let body = br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(inspect(body), Ok(ChatRequest { model: "gpt-4o".into(), stream: true }));
        let body = br#" {"messages":[{"role":"user","content":"hi"}], "model" : "a\u00e9" } "#;
        assert_eq!(inspect(body), Ok(ChatRequest { model: "aé".into(), stream: false }));
    }

    #[test]
    fn bad_bodies_get_the_reason() {
        let cases: &[(&[u8], BadRequest)] = &[
            (b"", BadRequest::NotJson("EOF while parsing a value at line 1 column 0".into())),
            (b"[1,2]", BadRequest::NotAnObject),
            (b"\"text\"", BadRequest::NotAnObject),
            (br#"{"model":"m"}"#, BadRequest::NoMessages),
            (br#"{"model":"m","messages":[]}"#, BadRequest::NoMessages),
            (br#"{"model":"m","messages":[ ]}"#, BadRequest::NoMessages),
            (br#"{"model":"m","messages":"hi"}"#, BadRequest::NoMessages),
            (br#"{"messages":[{}]}"#, BadRequest::NoModel),
            (br#"{"model":7,"messages":[{}]}"#, BadRequest::NoModel),
            (br#"{"model":"","messages":[{}]}"#, BadRequest::NoModel),
        ];
        for (body, expected) in cases {
            assert_eq!(inspect(body).as_ref().unwrap_err(), expected, "{}", String::from_utf8_lossy(body));
        }
        assert!(matches!(inspect(br#"{"model":"m","messages":[{}]"#), Err(BadRequest::NotJson(_))));
        assert!(matches!(inspect(b"not json"), Err(BadRequest::NotJson(_))));
        assert!(matches!(inspect(b"{\"model\":\"m\",\"messages\":[{}]}\xff"), Err(BadRequest::NotJson(_))));
        assert!(matches!(inspect(br#"{"model":"a","model":"b","messages":[{}]}"#), Err(BadRequest::NotJson(_))));
    }

    #[test]
    fn absurd_nesting_is_read_without_recursion() {
        // Skipped raw values are walked iteratively: deep but balanced is valid JSON, passed on
        // for the provider to judge; unbalanced is a bad request. Neither overflows the stack.
        let deep = format!(r#"{{"model":"m","messages":[{}{}]}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(inspect(deep.as_bytes()).map(|r| r.model), Ok("m".into()));
        assert_eq!(requested_model(deep.as_bytes()).as_deref(), Some("m"));
        let unbalanced = format!(r#"{{"model":"m","messages":[{}]}}"#, "[".repeat(100_000));
        assert!(matches!(inspect(unbalanced.as_bytes()), Err(BadRequest::NotJson(_))));
    }

    #[test]
    fn model_rewrite_keeps_every_other_byte() {
        let body = br#"{ "temperature": 1.50, "model" : "smart", "messages":[{"role":"user","content":"model \"smart\""}] }"#;
        let out = with_model(body, "gpt-4o").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "temperature": 1.50, "model" : "gpt-4o", "messages":[{"role":"user","content":"model \"smart\""}] }"#
        );
    }

    #[test]
    fn model_rewrite_escapes_and_skips_when_unchanged() {
        let body = br#"{"model":"smart","messages":[{}]}"#;
        assert_eq!(with_model(body, "smart"), None);
        let out = with_model(body, "we\"ird").unwrap();
        assert_eq!(requested_model(&out).as_deref(), Some("we\"ird"));
        assert_eq!(with_model(br#"{"messages":[{}]}"#, "x"), None);
    }

    #[test]
    fn nested_model_fields_are_not_the_model() {
        let body = br#"{"metadata":{"model":"inner"},"model":"outer","messages":[{"model":"x"}]}"#;
        assert_eq!(requested_model(body).as_deref(), Some("outer"));
        let out = with_model(body, "new").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"metadata":{"model":"inner"},"model":"new","messages":[{"model":"x"}]}"#
        );
    }
}
