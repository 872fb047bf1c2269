//! Embeddings at Ollama: `/api/embed` with `input` a string or an array and `dimensions`; the
//! answer's `embeddings` (one array per input) and `prompt_eval_count` for the tokens.

use serde_json::{json, Value};

use super::{numbers, EmbeddingsRequest, Input, Usage, Vectors};
use crate::provider::Unsupported;

pub fn request(request: &EmbeddingsRequest, model: &str) -> Result<Vec<u8>, Unsupported> {
    let texts = request.input.texts()?;
    let input = match &request.input {
        Input::Text(text) => json!(text),
        _ => json!(texts),
    };
    let mut body = json!({"model": model, "input": input});
    if let (Some(dimensions), Some(object)) = (request.dimensions, body.as_object_mut()) {
        object.insert("dimensions".into(), json!(dimensions));
    }
    Ok(body.to_string().into_bytes())
}

pub fn answer(body: &[u8]) -> Result<Vectors, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let embeddings = value.get("embeddings").and_then(Value::as_array).ok_or("no `embeddings` array")?;
    let vectors = embeddings.iter().map(|e| numbers(e).ok_or_else(|| "an embedding that is not an array of numbers".to_string())).collect::<Result<Vec<_>, _>>()?;
    let usage = value.get("prompt_eval_count").and_then(Value::as_u64).map(|prompt_tokens| Usage { prompt_tokens });
    Ok(Vectors { vectors, usage })
}

#[cfg(test)]
mod tests {
    use super::super::{inspect, openai_answer, AnswerShape, Encoding};
    use super::*;

    const REQUEST: &str = include_str!("../fixtures/embeddings/request_texts.openai.json");
    const REQUEST_TRANSLATED: &str = include_str!("../fixtures/embeddings/request_texts.ollama.json");
    const ANSWER: &str = include_str!("../fixtures/embeddings/answer.ollama.json");
    const ANSWER_TRANSLATED: &str = include_str!("../fixtures/embeddings/answer_from_ollama.openai.json");

    fn value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn request_matches_its_golden_fixture() {
        let request = inspect(REQUEST.as_bytes()).unwrap();
        assert_eq!(value(&super::request(&request, "nomic-embed-text").unwrap()), value(REQUEST_TRANSLATED.as_bytes()));
        let one = inspect(br#"{"model":"e","input":"one"}"#).unwrap();
        assert_eq!(value(&super::request(&one, "nomic-embed-text").unwrap()), json!({"model": "nomic-embed-text", "input": "one"}));
    }

    #[test]
    fn answer_matches_its_golden_fixture_in_floats_and_base64() {
        let vectors = answer(ANSWER.as_bytes()).unwrap().check_count(2).unwrap();
        assert_eq!(vectors.usage, Some(Usage { prompt_tokens: 9 }));
        let shape = AnswerShape { count: 2, encoding: Encoding::Float, model: "nomic-embed-text".into() };
        assert_eq!(value(&openai_answer(&vectors, &shape)), value(ANSWER_TRANSLATED.as_bytes()));
        let base64 = value(&openai_answer(&vectors, &AnswerShape { encoding: Encoding::Base64, ..shape }));
        assert_eq!(base64["data"][0]["embedding"], super::super::base64_of(&[0.125, -0.5, 0.75]));
    }

    #[test]
    fn token_ids_and_unreadable_answers_are_refused() {
        let tokens = inspect(br#"{"model":"e","input":[[1],[2]]}"#).unwrap();
        assert!(super::request(&tokens, "m").is_err());
        assert!(answer(br#"{"embedding":[1.0]}"#).is_err());
        assert!(answer(br#"{"embeddings":[[1.0,"x"]]}"#).is_err());
    }
}
