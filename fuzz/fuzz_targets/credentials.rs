//! What the token renewals read from outside: token endpoints' answers, a service-account key
//! file and the RSA key inside it (DER), and token URLs. The first byte picks the reader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_failover::credentials::{exchange, google, oauth2, TokenUrl};
use llm_failover::google_auth::{self, RsaKey, ServiceAccount};

const NOW_MS: u64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    match pick % 4 {
        0 => {
            let _ = oauth2::parse(rest, NOW_MS);
            let _ = exchange::parse(rest, NOW_MS);
            let _ = google::parse(rest, NOW_MS);
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            if let Ok(account) = ServiceAccount::from_json(text) {
                let _ = account.assertion(google_auth::DEFAULT_SCOPE, NOW_MS / 1000);
            }
        }
        2 => {
            // Signing is the slow part: keys the size Google hands out (2048 bits) or smaller.
            for key in [RsaKey::from_pkcs8_der(rest), RsaKey::from_pkcs1_der(rest)].into_iter().flatten() {
                if key.bits() <= 2048 {
                    let _ = key.sign_sha256(b"header.claims");
                }
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = TokenUrl::parse(text);
            }
        }
    }
});
