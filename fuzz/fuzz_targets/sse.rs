//! The SSE and NDJSON readers, fed at arbitrary boundaries: the same events or lines as the
//! whole input at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_failover::sse::{random_split, EventReader, LineReader};

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else { return };
    let mut whole = EventReader::default();
    let mut events = whole.feed(input);
    events.extend(whole.finish());
    let mut pieces = EventReader::default();
    let mut chunked = Vec::new();
    for piece in random_split(input, u64::from(seed)) {
        chunked.extend(pieces.feed(piece));
    }
    chunked.extend(pieces.finish());
    assert_eq!(events, chunked);

    let mut lines = LineReader::with_limit(usize::from(seed) * 4 + 1);
    let mut read = Vec::new();
    for piece in random_split(input, u64::from(seed) + 1) {
        read.extend(lines.feed(piece));
    }
    read.extend(lines.finish());
    let _ = lines.overflowed();
});
