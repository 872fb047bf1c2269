//! The task classifier's reading of a request body: the last user message's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_failover::classifier::last_user_text;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, body)) = data.split_first() else { return };
    if let Some(text) = last_user_text(body, usize::from(limit) * 64) {
        assert!(text.len() <= usize::from(limit) * 64 + 4, "the text is cut to the limit");
    }
});
