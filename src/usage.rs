//! What an answer cost and what the provider said about its rate limits: token counts read
//! from a provider's bytes as they pass (any format, streamed or not), and rate-limit headers.

use crate::provider::Format;

/// Reads the last token counts a provider's answer reports, chunk by chunk. Streams repeat
/// or grow their counts (Anthropic's `message_delta`, Gemini's `usageMetadata`); the last wins.
#[derive(Debug)]
pub struct UsageScanner {
    prompt_field: &'static [u8],
    completion_field: &'static [u8],
    tail: Vec<u8>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// Enough to hold a field name, its value and the spaces between, cut by a chunk boundary.
const TAIL_BYTES: usize = 64;

impl UsageScanner {
    pub fn new(format: Format) -> UsageScanner {
        let (prompt_field, completion_field): (&[u8], &[u8]) = match format {
            Format::Openai | Format::AzureOpenai => (b"\"prompt_tokens\"", b"\"completion_tokens\""),
            Format::Anthropic => (b"\"input_tokens\"", b"\"output_tokens\""),
            Format::Gemini => (b"\"promptTokenCount\"", b"\"candidatesTokenCount\""),
            Format::Ollama => (b"\"prompt_eval_count\"", b"\"eval_count\""),
            Format::Bedrock => (b"\"inputTokens\"", b"\"outputTokens\""),
        };
        UsageScanner { prompt_field, completion_field, tail: Vec::new(), prompt_tokens: None, completion_tokens: None }
    }

    /// For the Responses API's answers and `response.completed` (`usage.input_tokens`...).
    pub fn responses() -> UsageScanner {
        UsageScanner { prompt_field: b"\"input_tokens\"", completion_field: b"\"output_tokens\"", tail: Vec::new(), prompt_tokens: None, completion_tokens: None }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut data = std::mem::take(&mut self.tail);
        data.extend_from_slice(chunk);
        if let Some(n) = last_number_after(&data, self.prompt_field) {
            self.prompt_tokens = Some(n);
        }
        if let Some(n) = last_number_after(&data, self.completion_field) {
            self.completion_tokens = Some(n);
        }
        let keep = data.len().saturating_sub(TAIL_BYTES);
        self.tail = data.get(keep..).unwrap_or_default().to_vec();
    }

    pub fn total(&self) -> u64 {
        self.prompt_tokens.unwrap_or(0).saturating_add(self.completion_tokens.unwrap_or(0))
    }

    pub fn found(&self) -> bool {
        self.prompt_tokens.is_some() || self.completion_tokens.is_some()
    }
}

/// The value of the last `"field": <digits>` in `data` (a number cut at the end of `data` is
/// read short, and read again whole with the next chunk).
fn last_number_after(data: &[u8], field: &[u8]) -> Option<u64> {
    let mut found = None;
    let mut from = 0;
    while let Some(at) = find(data.get(from..)?, field) {
        let mut rest = data.get(from + at + field.len()..)?.iter().skip_while(|b| b.is_ascii_whitespace());
        if rest.next() == Some(&b':') {
            let digits: Vec<u8> = rest.skip_while(|b| b.is_ascii_whitespace()).take_while(|b| b.is_ascii_digit()).copied().collect();
            if let Some(n) = std::str::from_utf8(&digits).ok().and_then(|d| d.parse().ok()) {
                found = Some(n);
            }
        }
        from += at + field.len();
    }
    found
}

/// Where `needle` first occurs. Runs over whole answers and streams: a compare at every
/// position cost ~60 instructions a byte in wasm, so it looks for the needle's second byte
/// (its first is always the quote, common in JSON) and compares only there.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let probe = *needle.get(1)?;
    let last_start = haystack.len().checked_sub(needle.len())?;
    let mut at = 0;
    while at <= last_start {
        at += haystack.get(at + 1..=last_start + 1)?.iter().position(|&b| b == probe)?;
        if haystack.get(at..at + needle.len()) == Some(needle) {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// What rate-limit headers say: how much is left and when the window resets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    /// Milliseconds from now until the exhausted window resets, when said.
    pub reset_in_ms: Option<u64>,
}

impl RateLimitHeaders {
    /// Reads OpenAI's `x-ratelimit-*` and Anthropic's `anthropic-ratelimit-*` headers.
    pub fn read(header: impl Fn(&str) -> Option<String>, now_ms: u64) -> RateLimitHeaders {
        let number = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let remaining_requests = number("x-ratelimit-remaining-requests").or_else(|| number("anthropic-ratelimit-requests-remaining"));
        let remaining_tokens = min(
            number("x-ratelimit-remaining-tokens").or_else(|| number("anthropic-ratelimit-tokens-remaining")),
            min(number("anthropic-ratelimit-input-tokens-remaining"), number("anthropic-ratelimit-output-tokens-remaining")),
        );
        let openai_reset = |name: &str| header(name).and_then(|v| parse_openai_reset(&v));
        let anthropic_reset = |name: &str| header(name).and_then(|v| parse_rfc3339_ms(&v)).map(|at| at.saturating_sub(now_ms));
        let reset_in_ms = [
            openai_reset("x-ratelimit-reset-requests"),
            openai_reset("x-ratelimit-reset-tokens"),
            anthropic_reset("anthropic-ratelimit-requests-reset"),
            anthropic_reset("anthropic-ratelimit-tokens-reset"),
        ]
        .into_iter()
        .flatten()
        .max();
        RateLimitHeaders { remaining_requests, remaining_tokens, reset_in_ms }
    }

    /// Whether fewer than the given requests or tokens remain.
    pub fn nearly_spent(&self, min_requests: u64, min_tokens: u64) -> bool {
        self.remaining_requests.is_some_and(|n| n < min_requests) || self.remaining_tokens.is_some_and(|n| n < min_tokens)
    }
}

/// OpenAI's reset durations: `1s`, `6m0s`, `1h2m3.5s`, `120ms`.
fn parse_openai_reset(text: &str) -> Option<u64> {
    let mut total = 0.0f64;
    let mut number = String::new();
    let mut chars = text.trim().chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let value = crate::decimal::parse_f64(&number)?;
        number.clear();
        let unit_ms = match c {
            'h' => 3_600_000.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1.0
            }
            'm' => 60_000.0,
            's' => 1_000.0,
            _ => return None,
        };
        total += value * unit_ms;
        any = true;
    }
    (any && number.is_empty() && total.is_finite()).then_some(total as u64)
}

/// `2026-11-23T10:00:30Z` (Anthropic's reset times) as Unix milliseconds.
fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let (date, time) = text.trim().split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (time, offset_s) = if let Some(t) = time.strip_suffix('Z') {
        (t, 0)
    } else {
        let split = time.rfind(['+', '-'])?;
        let (t, offset) = (time.get(..split)?, time.get(split..)?);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (h, m) = offset.get(1..)?.split_once(':')?;
        (t, sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60))
    };
    let mut t = time.split(':');
    let (hour, minute) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let second = crate::decimal::parse_f64(t.next()?)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = crate::http_date::days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 - offset_s;
    let ms = secs as f64 * 1000.0 + second * 1000.0;
    (ms >= 0.0).then_some(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::random_split;

    #[test]
    fn find_agrees_with_a_compare_at_every_position() {
        let naive = |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).position(|w| w == needle);
        let needles: [&[u8]; 3] = [b"\"prompt_tokens\"", b"\"pp\"", b"ab"];
        let mut seed = 7u64;
        for _ in 0..2000 {
            let len = (seed % 40) as usize;
            let haystack: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    b"\"prompt_tokens:ab "[(seed >> 33) as usize % 18]
                })
                .collect();
            for needle in needles {
                assert_eq!(find(&haystack, needle), naive(&haystack, needle), "{:?} in {:?}", needle, String::from_utf8_lossy(&haystack));
            }
        }
        assert_eq!(find(b"", b"\"a"), None);
        assert_eq!(find(b"x\"prompt_tokens\":3", b"\"prompt_tokens\""), Some(1));
    }

    #[test]
    fn token_counts_in_every_format_whatever_the_chunking() {
        let cases: [(Format, &str, (u64, u64)); 4] = [
            (Format::Openai, r#"{"id":"x","usage":{"prompt_tokens":231,"completion_tokens":24,"total_tokens":255}}"#, (231, 24)),
            (
                Format::Anthropic,
                "event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"usage\":{\"output_tokens\": 15}}\n\n",
                (25, 15),
            ),
            (Format::Gemini, r#"data: {"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":3}}
data: {"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":12345,"totalTokenCount":12353}}"#, (8, 12345)),
            (Format::Ollama, "{\"done\":false}\n{\"done\":true,\"prompt_eval_count\":26,\"eval_count\":298}\n", (26, 298)),
        ];
        for (format, body, expected) in cases {
            for seed in 0..200 {
                let mut scanner = UsageScanner::new(format);
                for piece in random_split(body.as_bytes(), seed) {
                    scanner.feed(piece);
                }
                assert_eq!((scanner.prompt_tokens, scanner.completion_tokens), (Some(expected.0), Some(expected.1)), "{format:?} seed {seed}");
                assert_eq!(scanner.total(), expected.0 + expected.1);
            }
        }
        let mut none = UsageScanner::new(Format::Openai);
        none.feed(b"data: {\"choices\":[]}\n\n");
        assert!(!none.found());
    }

    #[test]
    fn rate_limit_headers_of_openai_and_anthropic() {
        let now = 1_763_892_000_000; // 2025-11-23T10:00:00Z
        let openai = [("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-remaining-tokens", "1200"), ("x-ratelimit-reset-requests", "6m0s"), ("x-ratelimit-reset-tokens", "120ms")];
        let read = |pairs: &[(&str, &str)]| {
            RateLimitHeaders::read(|name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()), now)
        };
        let h = read(&openai);
        assert_eq!(h, RateLimitHeaders { remaining_requests: Some(0), remaining_tokens: Some(1200), reset_in_ms: Some(360_000) });
        assert!(h.nearly_spent(1, 1));
        assert!(!read(&[("x-ratelimit-remaining-requests", "5")]).nearly_spent(1, 1));
        let anthropic = [
            ("anthropic-ratelimit-requests-remaining", "40"),
            ("anthropic-ratelimit-input-tokens-remaining", "10"),
            ("anthropic-ratelimit-output-tokens-remaining", "9000"),
            ("anthropic-ratelimit-tokens-reset", "2025-11-23T10:00:30Z"),
        ];
        let h = read(&anthropic);
        assert_eq!(h, RateLimitHeaders { remaining_requests: Some(40), remaining_tokens: Some(10), reset_in_ms: Some(30_000) });
        assert!(h.nearly_spent(1, 100));
        assert_eq!(read(&[]), RateLimitHeaders::default());
    }

    #[test]
    fn reset_formats() {
        assert_eq!(parse_openai_reset("1s"), Some(1000));
        assert_eq!(parse_openai_reset("1h2m3.5s"), Some(3_723_500));
        assert_eq!(parse_openai_reset("17ms"), Some(17));
        assert_eq!(parse_openai_reset("soon"), None);
        assert_eq!(parse_openai_reset("5"), None);
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_rfc3339_ms("1970-01-01T09:00:00+09:00"), Some(0));
        assert_eq!(parse_rfc3339_ms("2025-11-23T10:00:30.5Z"), Some(1_763_892_030_500));
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
