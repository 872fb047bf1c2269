//! The filter's plain-Rust hot paths over fixed inputs (those of `bench/run.py`), for counting
//! instructions with `valgrind --tool=callgrind`, which the shared bench machine's noise does not
//! move (docs/benchmarks.md). Not a test: it asserts nothing about speed.
//!
//!   cargo build --release --example hot_paths
//!   valgrind --tool=callgrind target/release/examples/hot_paths request-32k 100

use llm_failover::config::{self, Config, Environment};
use llm_failover::health::{Health, HealthTable};
use llm_failover::provider::openai::{AnswerContext, ChatRequest};
use llm_failover::provider::Format;

struct NoEnv;
impl Environment for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

const FILLER: &str = "The quarterly report shows revenue growth across all regions. ";

/// `bench/run.py`'s `chat_body`: an OpenAI request padded to `size` bytes in its user message.
fn chat_body(size: usize) -> Vec<u8> {
    let build = |content: &str| {
        format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"You are a concise assistant."}},{{"role":"user","content":"{content}"}}],"temperature":0.2,"max_tokens":256}}"#
        )
    };
    let need = size - build("").len();
    let content: String = FILLER.chars().cycle().take(need).collect();
    build(&content).into_bytes()
}

/// `bench/run.py`'s `anthropic_stream`: 24 text deltas, one SSE event per chunk.
fn anthropic_events(words: usize) -> Vec<String> {
    let mut events = vec![
        r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_bench0002","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":231,"output_tokens":1}}}

"#
        .to_string(),
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_string(),
        "event: ping\ndata: {\"type\":\"ping\"}\n\n".to_string(),
    ];
    for i in 0..words {
        events.push(format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" word{i}\"}}}}\n\n"
        ));
    }
    events.push("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".to_string());
    events.push(format!(
        "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{words}}}}}\n\n"
    ));
    events.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_string());
    events
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("request-32k");
    let times: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100);
    let router = br#"{"role":"router","providers":[{"name":"c","format":"anthropic","host":"c"}],"chains":{"d":["c"]}}"#;
    let Ok(Config::Router(deployment)) = config::parse(router, &NoEnv) else { return };
    let Some(attempt) = deployment.attempt("c") else { return };
    let provider = &attempt.provider;
    let mut sink = 0usize;
    match what {
        "request-1k" | "request-32k" => {
            let body = chat_body(if what == "request-1k" { 1024 } else { 32 * 1024 });
            for _ in 0..times {
                let Ok(request) = ChatRequest::parse(&body) else { return };
                let target = provider.target_model(&request.model).to_string();
                sink += provider.translate_request(&request, &target).map(|b| b.len()).unwrap_or(0);
            }
        }
        "stream" => {
            let events = anthropic_events(24);
            for _ in 0..times {
                let context = AnswerContext { id: "chatcmpl-x".into(), created: 1_700_000_000, model: "claude".into(), include_usage: false };
                let Some(mut stream) = Format::Anthropic.stream(context) else { return };
                for event in &events {
                    sink += stream.feed(event.as_bytes()).len();
                }
                sink += stream.finish().len();
            }
        }
        "health" => {
            let mut bytes = Vec::new();
            for name in ["openai", "anthropic", "gemini", "openrouter"] {
                bytes.extend_from_slice(name.as_bytes());
                bytes.push(b' ');
                bytes.extend_from_slice(&Health::default().encode());
                bytes.push(b'\n');
            }
            for _ in 0..times {
                sink += HealthTable::decode(&bytes).records().len();
            }
        }
        _ => eprintln!("request-1k | request-32k | stream | health"),
    }
    println!("{sink}");
}
