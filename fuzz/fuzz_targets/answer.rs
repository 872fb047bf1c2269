//! A provider's whole answer or error body, translated back to OpenAI's shape, as a chat answer
//! and as an embeddings answer. The first byte picks the format and the status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_failover::inbound::embeddings::{self, AnswerShape, Encoding};
use llm_failover::provider::openai::AnswerContext;
use llm_failover::provider::Format;

const FORMATS: [Format; 6] = [Format::Openai, Format::AzureOpenai, Format::Anthropic, Format::Gemini, Format::Ollama, Format::Bedrock];
/// Bedrock's `x-amzn-ErrorType`, or none.
const ERROR_TYPES: [Option<&str>; 3] = [None, Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"), Some("")];
const STATUSES: [u16; 8] = [200, 400, 401, 403, 404, 429, 500, 529];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else { return };
    let format = FORMATS[usize::from(pick) % FORMATS.len()];
    let status = STATUSES[usize::from(pick / 8) % STATUSES.len()];
    let context = AnswerContext { id: "chatcmpl-fuzz".into(), created: 1, model: "m".into(), include_usage: pick & 1 == 1 };
    let _ = format.answer(body, &context);
    let _ = llm_failover::provider::openai::check_answer(body);
    let _ = format.error(status, body, ERROR_TYPES[usize::from(pick / 64) % ERROR_TYPES.len()]);
    let _ = format.error_status(status, body);
    let shape = AnswerShape { count: usize::from(pick % 4), encoding: if pick & 2 == 2 { Encoding::Base64 } else { Encoding::Float }, model: "m".into() };
    let read = if format == Format::Gemini { embeddings::gemini::answer(body) } else { embeddings::ollama::answer(body) };
    if let Ok(vectors) = read.and_then(|v| v.check_count(shape.count)) {
        let _ = embeddings::openai_answer(&vectors, &shape);
    }
});
