//! Server-sent events and newline-delimited JSON read from chunks that may end anywhere (inside
//! a line, a `\r\n` or a UTF-8 character), and OpenAI-style events written back.

/// One event: its `event:` name, if any, and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

/// Reads events as chunks arrive; an event is complete at the blank line that ends it.
#[derive(Debug, Default)]
pub struct EventReader {
    lines: LineReader,
    name: Option<String>,
    data: Option<String>,
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

    fn take_events(&mut self, lines: Vec<Vec<u8>>) -> Vec<Event> {
        let mut events = Vec::new();
        for line in lines {
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    events.push(Event { name: self.name.take(), data });
                }
                self.name = None;
                continue;
            }
            let line = String::from_utf8_lossy(&line);
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.name = Some(value.to_string()),
                "data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                },
                // Comments (`: ping`), `id:` and `retry:` change nothing we translate.
                _ => {}
            }
        }
        events
    }
}

/// Splits a byte stream into lines ended by `\n`, `\r\n` or `\r`, without their ending.
#[derive(Debug, Default)]
pub struct LineReader {
    pending: Vec<u8>,
}

impl LineReader {
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(chunk);
        let mut lines = Vec::new();
        let mut start = 0;
        let mut i = 0;
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
        lines
    }

    /// What is left once the stream ends: a last line without its ending.
    pub fn finish(&mut self) -> Vec<Vec<u8>> {
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
/// property tests feed every translator a stream cut many ways.
#[cfg(test)]
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
    fn ndjson_lines_across_chunks() {
        let mut reader = LineReader::default();
        assert_eq!(reader.feed(b"{\"a\":1}\n{\"b\""), vec![b"{\"a\":1}".to_vec()]);
        assert_eq!(reader.feed(b":2}\n"), vec![b"{\"b\":2}".to_vec()]);
        assert_eq!(reader.feed(b"{\"c\":3}"), Vec::<Vec<u8>>::new());
        assert_eq!(reader.finish(), vec![b"{\"c\":3}".to_vec()]);
        assert_eq!(reader.finish(), Vec::<Vec<u8>>::new());
    }
}
