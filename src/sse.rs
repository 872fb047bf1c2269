//! Server-sent events and newline-delimited JSON read from chunks that may end anywhere (inside
//! a line, a `\r\n` or a UTF-8 character), and OpenAI-style events written back.

/// One event: its `event:` name, if any, and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

/// The longest line (and the longest event's data) a stream may carry. Past it the stream is
/// broken off rather than held: its bytes would stay in the VM's memory, and no provider sends
/// an event this large.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Reads events as chunks arrive; an event is complete at the blank line that ends it.
#[derive(Debug, Default)]
pub struct EventReader {
    lines: LineReader,
    name: Option<String>,
    data: Option<String>,
    overflowed: bool,
}

impl EventReader {
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        let lines = self.lines.feed(chunk);
        self.take_events(lines)
    }

    /// The events left when the stream ends, including one that lacked its final blank line.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut lines = self.lines.finish();
        lines.push(Vec::new());
        self.take_events(lines)
    }

    /// A line or an event was longer than the limit: nothing more is read.
    pub fn overflowed(&self) -> bool {
        self.overflowed || self.lines.overflowed()
    }

    fn take_events(&mut self, lines: Vec<Vec<u8>>) -> Vec<Event> {
        let mut events = Vec::new();
        for line in lines {
            if self.overflowed {
                break;
            }
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    events.push(Event { name: self.name.take(), data });
                }
                self.name = None;
                continue;
            }
            // Read as bytes: the field is ASCII, and the value's own buffer becomes the name or
            // the data. Only a value that is not UTF-8 is read lossily (as the line was before).
            let mut line = line;
            let (field_end, value_start) = match line.iter().position(|&b| b == b':') {
                Some(colon) => (colon, if line.get(colon + 1) == Some(&b' ') { colon + 2 } else { colon + 1 }),
                None => (line.len(), line.len()),
            };
            match line.get(..field_end).unwrap_or_default() {
                b"event" => {
                    line.drain(..value_start);
                    self.name = Some(utf8(line));
                }
                b"data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        let value = line.get(value_start..).unwrap_or_default();
                        match std::str::from_utf8(value) {
                            Ok(value) => data.push_str(value),
                            Err(_) => data.push_str(&String::from_utf8_lossy(value)),
                        }
                    }
                    None => {
                        line.drain(..value_start);
                        self.data = Some(utf8(line));
                    }
                },
                // Comments (`: ping`), `id:` and `retry:` change nothing we translate.
                _ => {}
            }
            if self.data.as_ref().is_some_and(|data| data.len() > self.lines.limit) {
                self.overflowed = true;
                self.data = None;
            }
        }
        events
    }
}

/// Bytes as text, without a copy when they are UTF-8.
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Splits a byte stream into lines ended by `\n`, `\r\n` or `\r`, without their ending. A line
/// longer than its limit breaks the stream off (`overflowed`): it is never held whole.
#[derive(Debug)]
pub struct LineReader {
    pending: Vec<u8>,
    /// How far `pending` has been searched for a line ending: a long line is scanned once.
    scanned: usize,
    limit: usize,
    overflowed: bool,
}

impl Default for LineReader {
    fn default() -> Self {
        LineReader::with_limit(MAX_LINE_BYTES)
    }
}

impl LineReader {
    pub fn with_limit(limit: usize) -> LineReader {
        LineReader { pending: Vec::new(), scanned: 0, limit, overflowed: false }
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        if self.overflowed {
            return Vec::new();
        }
        self.pending.extend_from_slice(chunk);
        let mut lines = Vec::new();
        let mut start = 0;
        let mut i = self.scanned;
        while let Some(&byte) = self.pending.get(i) {
            match byte {
                b'\n' => {
                    lines.push(self.pending.get(start..i).unwrap_or_default().to_vec());
                    i += 1;
                    start = i;
                }
                b'\r' => match self.pending.get(i + 1) {
                    // A `\r` last in the chunk may be the first half of `\r\n`: wait.
                    None => break,
                    Some(next) => {
                        lines.push(self.pending.get(start..i).unwrap_or_default().to_vec());
                        i += if *next == b'\n' { 2 } else { 1 };
                        start = i;
                    }
                },
                _ => i += 1,
            }
        }
        self.pending.drain(..start.min(self.pending.len()));
        self.scanned = i.saturating_sub(start);
        if self.pending.len() > self.limit {
            self.overflowed = true;
            self.pending = Vec::new();
            self.scanned = 0;
        }
        lines
    }

    /// What is left once the stream ends: a last line without its ending.
    pub fn finish(&mut self) -> Vec<Vec<u8>> {
        self.scanned = 0;
        let mut rest = std::mem::take(&mut self.pending);
        if rest.last() == Some(&b'\r') {
            rest.pop();
        }
        if rest.is_empty() {
            Vec::new()
        } else {
            vec![rest]
        }
    }
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// `data: <json>` and the blank line that ends the event.
pub fn data_event(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out
}

/// Cuts `bytes` into random pieces (1 to 17 bytes, some empty), the same for the same seed: the
/// property tests and the fuzz targets feed every translator a stream cut many ways.
pub fn random_split(bytes: &[u8], seed: u64) -> Vec<&[u8]> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut pieces = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = ((state % 18) as usize).min(rest.len());
        let (piece, tail) = rest.split_at(len);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: Option<&str>, data: &str) -> Event {
        Event { name: name.map(str::to_string), data: data.into() }
    }

    #[test]
    fn named_events_multiline_data_and_comments() {
        let stream = "event: message_start\ndata: {\"a\":1}\n\n: ping\n\ndata: one\ndata: two\n\nevent: x\r\ndata:no-space\r\n\r\n";
        let mut reader = EventReader::default();
        let mut events = reader.feed(stream.as_bytes());
        events.extend(reader.finish());
        assert_eq!(
            events,
            vec![event(Some("message_start"), "{\"a\":1}"), event(None, "one\ntwo"), event(Some("x"), "no-space")]
        );
    }

    #[test]
    fn an_unterminated_last_event_is_kept_at_the_end() {
        let mut reader = EventReader::default();
        assert!(reader.feed(b"data: [DONE]").is_empty());
        assert_eq!(reader.finish(), vec![event(None, "[DONE]")]);
    }

    #[test]
    fn every_split_of_a_stream_reads_the_same() {
        // Multi-byte characters, CRLF and lone CR endings: any cut point gives the same events.
        let stream = "event: a\r\ndata: h\u{e9}llo \u{d55c}\u{ae00} \u{1f600}\r\n\r\ndata: x\rdata: y\r\r: c\n\nevent: b\ndata: {}\n\n";
        let bytes = stream.as_bytes();
        let whole = {
            let mut r = EventReader::default();
            let mut e = r.feed(bytes);
            e.extend(r.finish());
            e
        };
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0], event(Some("a"), "h\u{e9}llo \u{d55c}\u{ae00} \u{1f600}"));
        assert_eq!(whole[1], event(None, "x\ny"));
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut r = EventReader::default();
                let mut e = r.feed(&bytes[..i]);
                e.extend(r.feed(&bytes[i..j]));
                e.extend(r.feed(&bytes[j..]));
                e.extend(r.finish());
                assert_eq!(e, whole, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn random_splits_cover_the_bytes_in_order() {
        let bytes: Vec<u8> = (0..=255).collect();
        for seed in 0..50 {
            assert_eq!(random_split(&bytes, seed).concat(), bytes);
        }
        assert_ne!(random_split(&bytes, 1), random_split(&bytes, 2));
    }

    #[test]
    fn a_line_longer_than_the_limit_breaks_the_stream_off_without_holding_it() {
        let mut reader = LineReader::with_limit(64);
        assert_eq!(reader.feed(b"short\n"), vec![b"short".to_vec()]);
        for _ in 0..4 {
            assert!(reader.feed(&[b'x'; 20]).is_empty());
        }
        assert!(reader.overflowed(), "80 bytes without an ending");
        assert!(reader.pending.is_empty(), "the long line is not kept");
        assert!(reader.feed(b"\nmore\n").is_empty(), "nothing is read after it");
        let mut within = LineReader::with_limit(64);
        assert_eq!(within.feed(&[b'y'; 64]), Vec::<Vec<u8>>::new());
        assert_eq!(within.feed(b"\n"), vec![vec![b'y'; 64]]);
        assert!(!within.overflowed());
    }

    #[test]
    fn lines_complete_before_the_overflow_in_the_same_chunk_are_read() {
        let mut reader = LineReader::with_limit(8);
        let chunk = [&b"a\nb\n"[..], &[b'z'; 9]].concat();
        assert_eq!(reader.feed(&chunk), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(reader.overflowed());
    }

    #[test]
    fn an_event_whose_data_lines_add_up_past_the_limit_overflows() {
        let mut reader = EventReader { lines: LineReader::with_limit(32), ..EventReader::default() };
        assert_eq!(reader.feed(b"data: ok\n\n"), vec![event(None, "ok")]);
        assert!(reader.feed(b"data: 0123456789ab\ndata: 0123456789ab\n").is_empty(), "12 + 1 + 12 bytes");
        assert!(!reader.overflowed());
        assert!(reader.feed(b"data: 0123456789ab\n").is_empty());
        assert!(reader.overflowed());
        assert!(reader.feed(b"\ndata: late\n\n").is_empty());
        assert!(reader.finish().is_empty());
    }

    #[test]
    fn a_long_line_in_many_chunks_is_scanned_once() {
        let mut reader = LineReader::default();
        for _ in 0..1000 {
            assert!(reader.feed(&[b'q'; 1000]).is_empty());
            assert_eq!(reader.scanned, reader.pending.len(), "only the new bytes are searched next time");
        }
        assert_eq!(reader.feed(b"\r"), Vec::<Vec<u8>>::new());
        assert_eq!(reader.scanned, 1_000_000, "a trailing \\r waits for its \\n");
        assert_eq!(reader.feed(b"\n").first().map(Vec::len), Some(1_000_000));
    }

    #[test]
    fn ndjson_lines_across_chunks() {
        let mut reader = LineReader::default();
        assert_eq!(reader.feed(b"{\"a\":1}\n{\"b\""), vec![b"{\"a\":1}".to_vec()]);
        assert_eq!(reader.feed(b":2}\n"), vec![b"{\"b\":2}".to_vec()]);
        assert_eq!(reader.feed(b"{\"c\":3}"), Vec::<Vec<u8>>::new());
        assert_eq!(reader.finish(), vec![b"{\"c\":3}".to_vec()]);
        assert_eq!(reader.finish(), Vec::<Vec<u8>>::new());
    }
}
