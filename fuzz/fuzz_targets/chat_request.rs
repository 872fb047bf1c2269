//! A client's chat request: the router's inspection of the body, the model rewrite, and the
//! request translation to every provider format. The same bytes as an embeddings request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_failover::chat;
use llm_failover::inbound::embeddings;
use llm_failover::provider::{anthropic, gemini, ollama, openai, FormatOptions};

fuzz_target!(|data: &[u8]| {
    let _ = chat::inspect(data);
    let _ = chat::requested_model(data);
    let _ = chat::with_model(data, "fuzz-model");
    if let Ok(request) = openai::ChatRequest::parse(data) {
        let options = FormatOptions::default();
        let _ = anthropic::request(&request, "claude-fuzz", &options);
        let _ = gemini::request(&request, "gemini-fuzz", &options);
        let _ = ollama::request(&request, "llama-fuzz", &options);
        let _ = request.max_output_tokens();
        let _ = request.include_usage();
    }
    if let Ok(request) = embeddings::inspect(data) {
        let _ = embeddings::gemini::request(&request, "gemini-embedding-fuzz");
        let _ = embeddings::ollama::request(&request, "embed-fuzz");
    }
});
