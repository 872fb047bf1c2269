//! What the filter needs from an OpenAI chat request body, read without building a JSON tree:
//! the model, whether it streams, and that it has messages. Rewrites touch only the model value.

use std::borrow::Cow;
use std::ops::Range;

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
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
    TooDeep,
    NotAnObject,
    NoMessages,
    NoModel,
    /// Anthropic Messages requires it.
    NoMaxTokens,
}

impl BadRequest {
    pub fn message(&self) -> String {
        match self {
            BadRequest::NotJson(why) => format!("request body is not valid JSON: {why}"),
            BadRequest::TooDeep => format!("request body nests deeper than {MAX_NESTING} levels"),
            BadRequest::NotAnObject => "request body must be a JSON object".into(),
            BadRequest::NoMessages => "`messages` must be a non-empty array".into(),
            BadRequest::NoModel => "you must provide a `model` string".into(),
            BadRequest::NoMaxTokens => "`max_tokens` must be a positive integer".into(),
        }
    }

    pub fn param(&self) -> Option<&'static str> {
        match self {
            BadRequest::NoMessages => Some("messages"),
            BadRequest::NoModel => Some("model"),
            BadRequest::NoMaxTokens => Some("max_tokens"),
            _ => None,
        }
    }
}

/// The top-level fields the filter reads. Every other value is walked only to check that it
/// nests no deeper than serde_json's recursion limit (127 levels), which the translations parse with:
/// a body that one provider's translation would refuse is refused for every provider.
#[derive(Default)]
struct TopLevel<'a> {
    model: Option<&'a RawValue>,
    /// How many messages, when `messages` is an array.
    messages: Option<usize>,
    stream: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel<'de>, A::Error> {
        let mut top = TopLevel::default();
        let mut seen_messages = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let duplicate = match key.as_ref() {
                "model" => top.model.replace(map.next_value()?).is_some(),
                "stream" => top.stream.replace(map.next_value()?).is_some(),
                "messages" => {
                    top.messages = map.next_value::<Walked>()?.elements;
                    std::mem::replace(&mut seen_messages, true)
                }
                _ => {
                    map.next_value::<Walked>()?;
                    false
                }
            };
            if duplicate {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
        }
        Ok(top)
    }
}

/// Any JSON value, walked without keeping it; `elements` counts an array's.
struct Walked {
    elements: Option<usize>,
}

impl<'de> Deserialize<'de> for Walked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WalkedVisitor)
    }
}

struct WalkedVisitor;

impl<'de> Visitor<'de> for WalkedVisitor {
    type Value = Walked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Walked, E> {
        Ok(Walked { elements: None })
    }
    fn visit_i64<E>(self, _: i64) -> Result<Walked, E> {
        Ok(Walked { elements: None })
    }
    fn visit_u64<E>(self, _: u64) -> Result<Walked, E> {
        Ok(Walked { elements: None })
    }
    fn visit_f64<E>(self, _: f64) -> Result<Walked, E> {
        Ok(Walked { elements: None })
    }
    fn visit_str<E>(self, _: &str) -> Result<Walked, E> {
        Ok(Walked { elements: None })
    }
    fn visit_unit<E>(self) -> Result<Walked, E> {
        Ok(Walked { elements: None })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Walked, A::Error> {
        let mut elements = 0;
        while seq.next_element::<Walked>()?.is_some() {
            elements += 1;
        }
        Ok(Walked { elements: Some(elements) })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Walked, A::Error> {
        while map.next_entry::<de::IgnoredAny, Walked>()?.is_some() {}
        Ok(Walked { elements: None })
    }
}

/// serde_json's recursion limit: the deepest a value may sit, the body's object being level 1.
pub const MAX_NESTING: usize = 127;

fn not_json(error: serde_json::Error) -> BadRequest {
    let why = error.to_string();
    if why.starts_with("recursion limit exceeded") {
        BadRequest::TooDeep
    } else {
        BadRequest::NotJson(why)
    }
}

fn top_level(body: &[u8]) -> Result<TopLevel<'_>, BadRequest> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some() && first != Some(&b'{') {
        return match serde_json::from_slice::<Walked>(body) {
            Ok(_) => Err(BadRequest::NotAnObject),
            Err(e) => Err(not_json(e)),
        };
    }
    serde_json::from_slice(body).map_err(not_json)
}

pub fn inspect(body: &[u8]) -> Result<ChatRequest<'_>, BadRequest> {
    let top = top_level(body)?;
    if top.messages.unwrap_or(0) == 0 {
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
    replaced(body, range, &current, model)
}

/// The model the body names (empty if none), the one `target` maps it to, and the body naming
/// that one when it differs: one read of the body where `requested_model` and `with_model`
/// would take two.
pub fn retarget(body: &[u8], target: impl FnOnce(&str) -> String) -> (String, String, Option<Vec<u8>>) {
    match model_value(body) {
        Some((range, requested)) => {
            let target = target(&requested);
            let rewritten = replaced(body, range, &requested, &target);
            (requested.into_owned(), target, rewritten)
        }
        None => (String::new(), target(""), None),
    }
}

fn replaced(body: &[u8], range: Range<usize>, current: &str, model: &str) -> Option<Vec<u8>> {
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
    fn nesting_deeper_than_the_translations_parse_is_refused_anywhere_in_the_body() {
        // 127 levels is serde_json's limit, which the translations parse with: deeper would be
        // served by one provider and refused by another. Nothing overflows the stack.
        // `levels`: how deep the deepest value sits, the body's own object being the first.
        let nested = |levels: usize, field: &str| {
            let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
            match field {
                "messages" => format!(r#"{{"model":"m","messages":[{{"content":{}}}]}}"#, deep(levels - 3)),
                _ => format!(r#"{{"model":"m","{field}":{},"messages":[{{"role":"user","content":"hi"}}]}}"#, deep(levels - 1)),
            }
        };
        for field in ["messages", "tools", "x"] {
            assert!(inspect(nested(MAX_NESTING, field).as_bytes()).is_ok(), "{field}");
            assert_eq!(inspect(nested(MAX_NESTING + 1, field).as_bytes()), Err(BadRequest::TooDeep), "{field}");
            assert_eq!(inspect(nested(100_000, field).as_bytes()), Err(BadRequest::TooDeep), "{field}");
        }
        let deep_object = format!(r#"{{"model":"m","messages":[{{}}],"x":{}1{}}}"#, "{\"a\":".repeat(200), "}".repeat(200));
        assert_eq!(inspect(deep_object.as_bytes()), Err(BadRequest::TooDeep));
        assert_eq!(BadRequest::TooDeep.message(), "request body nests deeper than 127 levels");
        let unbalanced = format!(r#"{{"model":"m","messages":[{}]}}"#, "[".repeat(100_000));
        assert_eq!(inspect(unbalanced.as_bytes()), Err(BadRequest::TooDeep));
        assert!(matches!(inspect(br#"{"model":"m","messages":[[[{}]]}"#), Err(BadRequest::NotJson(_))));
        let translated = crate::provider::openai::ChatRequest::parse(nested(MAX_NESTING, "x").as_bytes());
        assert!(translated.is_ok(), "what the router passes, the translations read");
    }

    #[test]
    fn duplicate_fields_are_refused_whichever_they_are() {
        for field in ["model", "messages", "stream"] {
            let body = format!(r#"{{"model":"m","messages":[{{}}],"stream":false,"{field}":"again"}}"#);
            let Err(BadRequest::NotJson(why)) = inspect(body.as_bytes()) else { panic!("{field}") };
            assert!(why.starts_with(&format!("duplicate field `{field}`")), "{why}");
        }
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
    fn retarget_reads_once_what_requested_model_and_with_model_read() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
        let (requested, target, rewritten) = retarget(body, |m| format!("{m}-mini"));
        assert_eq!((requested.as_str(), target.as_str()), ("gpt-4o", "gpt-4o-mini"));
        assert_eq!(rewritten, with_model(body, "gpt-4o-mini"));
        assert_eq!(retarget(body, str::to_string), ("gpt-4o".into(), "gpt-4o".into(), None));
        let none = br#"{"messages":[]}"#;
        assert_eq!(retarget(none, |m| format!("[{m}]")), (String::new(), "[]".into(), None));
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
