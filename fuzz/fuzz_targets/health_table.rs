//! The shared health table as any VM may have left it: decoding never fails, and what it
//! reads encodes back to a table that reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_failover::health::{Health, HealthTable};

fuzz_target!(|data: &[u8]| {
    let table = HealthTable::decode(data);
    assert_eq!(HealthTable::decode(&table.encode()), table);
    if let Some(health) = Health::decode(data) {
        assert_eq!(Health::decode(&health.encode()), Some(health));
    }
});
