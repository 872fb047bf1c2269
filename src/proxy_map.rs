//! Proxy-wasm's serialized header maps, read and written without trusting their bytes: a
//! header value may be any octets (obs-text), and a malformed map must not panic the VM.
//!
//! Layout: pair count (u32 LE), then each pair's key and value sizes (u32 LE each), then each
//! key and value, every one followed by a NUL.

use std::ops::Range;

pub fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size: usize = pairs.iter().map(|(k, v)| 8 + k.len() + v.len() + 2).sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// A header map as the host handed it over, read in one host call.
#[derive(Debug, Default)]
pub struct HeaderPairs {
    bytes: Vec<u8>,
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl HeaderPairs {
    /// Keeps every well-formed pair; stops at the first that runs past the end.
    pub fn parse(bytes: Vec<u8>) -> HeaderPairs {
        let mut entries = Vec::new();
        let word = |at: usize| -> Option<usize> {
            let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
            Some(u32::from_le_bytes(word) as usize)
        };
        if let Some(count) = word(0) {
            let mut data = 4usize.saturating_add(count.saturating_mul(8));
            for n in 0..count {
                let (Some(key_len), Some(value_len)) = (word(4 + n * 8), word(8 + n * 8)) else {
                    break;
                };
                let key = data..data.saturating_add(key_len);
                let value_start = key.end.saturating_add(1);
                let value = value_start..value_start.saturating_add(value_len);
                // Each value is followed by a NUL, which must still be inside the buffer.
                if value.end >= bytes.len() {
                    break;
                }
                data = value.end.saturating_add(1);
                entries.push((key, value));
            }
        }
        HeaderPairs { bytes, entries }
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(key, _)| self.bytes.get(key.clone()) == Some(name.as_bytes()))
            .and_then(|(_, value)| self.bytes.get(value.clone()))
    }

    /// The value as text, or `None` when it is absent or not UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_serialize_writes() {
        let map = HeaderPairs::parse(serialize(&[(":path", "/v1/chat"), ("x-empty", ""), ("retry-after", "7")]));
        assert_eq!(map.get_str(":path"), Some("/v1/chat"));
        assert_eq!(map.get_str("x-empty"), Some(""));
        assert_eq!(map.get_str("retry-after"), Some("7"));
        assert_eq!(map.get("missing"), None);
    }

    #[test]
    fn non_utf8_values_are_bytes_not_panics() {
        let mut bytes = serialize(&[("retry-after", "ab")]);
        let at = bytes.len() - 3;
        bytes[at] = 0xff;
        let map = HeaderPairs::parse(bytes);
        assert_eq!(map.get("retry-after"), Some(&[0xff, b'b'][..]));
        assert_eq!(map.get_str("retry-after"), None);
        assert!(map.contains("retry-after"));
    }

    #[test]
    fn malformed_maps_keep_what_is_whole() {
        let whole = serialize(&[("a", "1"), ("b", "2")]);
        for cut in 0..whole.len() {
            let map = HeaderPairs::parse(whole[..cut].to_vec());
            if let Some(v) = map.get("b") {
                assert_eq!(v, b"2");
            }
        }
        let mut lying = whole.clone();
        lying[0] = 200;
        let map = HeaderPairs::parse(lying);
        assert_eq!(map.get("a"), None);
        assert!(HeaderPairs::parse(vec![0xff; 3]).get("a").is_none());
    }
}
