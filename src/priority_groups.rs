//! The per-request provider order, in the form Envoy's priority-group cluster specifier reads
//! it: a `google.protobuf.Value` list of `{name}` structs, base64 in a header that
//! `header_to_metadata` (type PROTOBUF_VALUE, encode BASE64) turns into dynamic metadata.

use base64::Engine;

/// Proto3 wire encoding, written by hand: the message is fixed and tiny.
fn length_delimited(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field << 3 | 2);
    let mut len = bytes.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(bytes);
}

// google.protobuf.Value fields: string_value = 3, struct_value = 5, list_value = 6.
// Struct.fields = 1 (map entries: key = 1, value = 2); ListValue.values = 1.
fn group(name: &str) -> Vec<u8> {
    let mut string_value = Vec::new();
    length_delimited(&mut string_value, 3, name.as_bytes());
    let mut entry = Vec::new();
    length_delimited(&mut entry, 1, b"name");
    length_delimited(&mut entry, 2, &string_value);
    let mut fields = Vec::new();
    length_delimited(&mut fields, 1, &entry);
    let mut value = Vec::new();
    length_delimited(&mut value, 5, &fields);
    value
}

pub fn encode(order: &[&str]) -> Vec<u8> {
    let mut list = Vec::new();
    for name in order {
        length_delimited(&mut list, 1, &group(name));
    }
    let mut value = Vec::new();
    length_delimited(&mut value, 6, &list);
    value
}

pub fn header_value(order: &[&str]) -> String {
    base64::engine::general_purpose::STANDARD.encode(encode(order))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_list_of_name_structs() {
        // Value{list_value{values:[Value{struct_value{fields{"name": Value{string_value:"p1"}}}}]}}
        let expected: Vec<u8> = vec![
            0x32, 0x14, // list_value, 20 bytes
            0x0a, 0x12, // values[0], 18 bytes
            0x2a, 0x10, // struct_value, 16 bytes
            0x0a, 0x0e, // fields entry, 14 bytes
            0x0a, 0x04, b'n', b'a', b'm', b'e', // key
            0x12, 0x06, 0x1a, 0x04, b'p', b'1', b'x', b'y', // value: string_value "p1xy"
        ];
        assert_eq!(encode(&["p1xy"]), expected);
    }

    #[test]
    fn long_names_use_multi_byte_lengths() {
        let name = "n".repeat(200);
        let bytes = encode(&[&name, "b"]);
        assert!(bytes.windows(name.len()).any(|w| w == name.as_bytes()));
        assert_eq!(&bytes[..3], &[0x32, 0xee, 0x01]); // 238 = 221 + 17
    }

    #[test]
    fn header_value_is_standard_base64() {
        assert_eq!(header_value(&["p1xy"]), "MhQKEioQCg4KBG5hbWUSBhoEcDF4eQ==");
    }
}
