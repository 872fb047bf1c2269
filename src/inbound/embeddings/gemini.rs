//! Embeddings at Gemini: `models/{model}:batchEmbedContents`, one request per input (each naming
//! the model, as Gemini requires), `outputDimensionality` for `dimensions`; the answer's
//! `embeddings[].values`. Gemini's batch endpoint reports no token count.

use serde_json::{json, Value};

use super::{numbers, EmbeddingsRequest, Vectors};
use crate::provider::Unsupported;

pub fn request(request: &EmbeddingsRequest, model: &str) -> Result<Vec<u8>, Unsupported> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let requests: Vec<Value> = request
        .input
        .texts()?
        .into_iter()
        .map(|text| {
            let mut one = json!({"model": format!("models/{model}"), "content": {"parts": [{"text": text}]}});
            if let (Some(dimensions), Some(object)) = (request.dimensions, one.as_object_mut()) {
                object.insert("outputDimensionality".into(), json!(dimensions));
            }
            one
        })
        .collect();
    Ok(json!({"requests": requests}).to_string().into_bytes())
}

pub fn answer(body: &[u8]) -> Result<Vectors, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let embeddings = value.get("embeddings").and_then(Value::as_array).ok_or("no `embeddings` array")?;
    let vectors = embeddings
        .iter()
        .map(|e| e.get("values").and_then(numbers).ok_or_else(|| "an embedding without `values` numbers".to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Vectors { vectors, usage: None })
}

#[cfg(test)]
mod tests {
    use super::super::{inspect, openai_answer, AnswerShape, Encoding};
    use super::*;

    const REQUEST: &str = include_str!("../fixtures/embeddings/request_texts.openai.json");
    const REQUEST_TRANSLATED: &str = include_str!("../fixtures/embeddings/request_texts.gemini.json");
    const ANSWER: &str = include_str!("../fixtures/embeddings/answer.gemini.json");
    const ANSWER_TRANSLATED: &str = include_str!("../fixtures/embeddings/answer_from_gemini.openai.json");

    fn value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn request_matches_its_golden_fixture() {
        let request = inspect(REQUEST.as_bytes()).unwrap();
        let translated = super::request(&request, "gemini-embedding-001").unwrap();
        assert_eq!(value(&translated), value(REQUEST_TRANSLATED.as_bytes()));
        // The full name means the same model; without `dimensions` Gemini's default size is kept.
        let plain = inspect(br#"{"model":"e","input":"one"}"#).unwrap();
        let translated = value(&super::request(&plain, "models/text-embedding-004").unwrap());
        assert_eq!(translated, json!({"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "one"}]}}]}));
    }

    #[test]
    fn answer_matches_its_golden_fixture_in_floats_and_base64() {
        let vectors = answer(ANSWER.as_bytes()).unwrap().check_count(2).unwrap();
        let shape = AnswerShape { count: 2, encoding: Encoding::Float, model: "gemini-embedding-001".into() };
        assert_eq!(value(&openai_answer(&vectors, &shape)), value(ANSWER_TRANSLATED.as_bytes()));
        let base64 = value(&openai_answer(&vectors, &AnswerShape { encoding: Encoding::Base64, ..shape }));
        assert_eq!(base64["data"][1]["embedding"], super::super::base64_of(&[0.5, 0.25, -1.0]));
    }

    #[test]
    fn token_ids_and_unreadable_answers_are_refused() {
        let tokens = inspect(br#"{"model":"e","input":[1,2]}"#).unwrap();
        assert!(super::request(&tokens, "m").is_err());
        assert!(answer(b"{}").is_err());
        assert!(answer(br#"{"embeddings":[{"values":["x"]}]}"#).is_err());
        assert!(answer(b"<html>").is_err());
    }
}
