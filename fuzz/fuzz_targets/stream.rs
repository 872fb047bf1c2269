//! A provider's stream, translated chunk by chunk at arbitrary boundaries. Besides not
//! crashing, any chunking must give the same bytes as the whole stream at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_failover::provider::openai::AnswerContext;
use llm_failover::provider::Format;
use llm_failover::provider::translate_in_pieces;

const FORMATS: [Format; 4] = [Format::Anthropic, Format::Gemini, Format::Ollama, Format::Bedrock];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stream)) = data.split_first() else { return };
    let format = FORMATS[usize::from(pick) % FORMATS.len()];
    let context = AnswerContext { id: "chatcmpl-fuzz".into(), created: 1, model: "m".into(), include_usage: pick & 1 == 1 };
    let (Some(mut whole), Some(mut pieces)) = (format.stream(context.clone()), format.stream(context)) else { return };
    let mut at_once = whole.feed(stream);
    at_once.extend(whole.finish());
    let chunked = translate_in_pieces(pieces.as_mut(), stream, u64::from(pick));
    if format == Format::Bedrock {
        let _ = llm_failover::provider::bedrock::stream_start(stream);
    }
    assert_eq!(at_once, chunked, "{format:?}: the chunking changed the translation");
});
