//! The per-request provider order, in the form Envoy's priority-group cluster specifier reads
//! it: a `google.protobuf.Value` list of `{name}` structs, base64 in a header that
//! `header_to_metadata` (type PROTOBUF_VALUE, encode BASE64) turns into dynamic metadata.
//! A group may also name its cluster (`{name, clusters: [{cluster_name, weight}]}`, the field
//! names Envoy 1.40 reads): a hedged request goes to the aggregate cluster of its providers.

use base64::Engine;

/// One attempt's group: the provider, and the cluster when it is not the provider's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group<'a> {
    pub provider: &'a str,
    pub cluster: Option<&'a str>,
}

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

// google.protobuf.Value fields: number_value = 2, string_value = 3, struct_value = 5,
// list_value = 6. Struct.fields = 1 (map entries: key = 1, value = 2); ListValue.values = 1.
fn string_value(text: &str) -> Vec<u8> {
    let mut value = Vec::new();
    length_delimited(&mut value, 3, text.as_bytes());
    value
}

fn number_value(number: f64) -> Vec<u8> {
    let mut value = vec![2 << 3 | 1];
    value.extend_from_slice(&number.to_le_bytes());
    value
}

/// Keys in sorted order, as protobuf's deterministic serialization writes a map.
fn struct_value(fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut sorted: Vec<&(&str, Vec<u8>)> = fields.iter().collect();
    sorted.sort_by_key(|(key, _)| *key);
    let mut entries = Vec::new();
    for (key, value) in sorted {
        let mut entry = Vec::new();
        length_delimited(&mut entry, 1, key.as_bytes());
        length_delimited(&mut entry, 2, value);
        length_delimited(&mut entries, 1, &entry);
    }
    let mut value = Vec::new();
    length_delimited(&mut value, 5, &entries);
    value
}

fn list_value(values: &[Vec<u8>]) -> Vec<u8> {
    let mut list = Vec::new();
    for item in values {
        length_delimited(&mut list, 1, item);
    }
    let mut value = Vec::new();
    length_delimited(&mut value, 6, &list);
    value
}

fn group(group: &Group) -> Vec<u8> {
    let mut fields = vec![("name", string_value(group.provider))];
    if let Some(cluster) = group.cluster {
        let only = struct_value(&[("cluster_name", string_value(cluster)), ("weight", number_value(1.0))]);
        fields.push(("clusters", list_value(&[only])));
    }
    struct_value(&fields)
}

pub fn encode(groups: &[Group]) -> Vec<u8> {
    list_value(&groups.iter().map(group).collect::<Vec<_>>())
}

/// The order as groups, each through `cluster` when there is one: a hedged request's attempts
/// all go to its hedge cluster, whether or not Envoy picks the cluster again for an attempt.
pub fn groups<'a>(order: &[&'a str], cluster: Option<&'a str>) -> Vec<Group<'a>> {
    order.iter().map(|provider| Group { provider, cluster }).collect()
}

pub fn header_value(groups: &[Group]) -> String {
    base64::engine::general_purpose::STANDARD.encode(encode(groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(order: &[&'static str]) -> Vec<Group<'static>> {
        groups(order, None)
    }

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
        assert_eq!(encode(&named(&["p1xy"])), expected);
    }

    #[test]
    fn a_group_may_name_its_cluster_with_weight_one() {
        // [{name: "a", clusters: [{cluster_name: "hedge_ab", weight: 1}]}, {name: "b"}], serialized by
        // the protobuf library (python, `deterministic=True`: map keys sorted).
        let only_ab = [Group { provider: "a", cluster: Some("hedge_ab") }, Group { provider: "b", cluster: None }];
        let reference = "32670a542a520a430a08636c757374657273123732350a332a310a1a0a0c636c75737465725f6e616d65120a1a086865\
                         6467655f61620a130a06776569676874120911000000000000f03f0a0b0a046e616d6512031a01610a0f2a0d0a0b0a046e616d6512031a0162";
        let hex: String = encode(&only_ab).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, reference);
    }

    #[test]
    fn a_cluster_goes_with_every_group() {
        let groups = groups(&["a", "b", "c"], Some("hedge_abc"));
        let pairs: Vec<(&str, Option<&str>)> = groups.iter().map(|g| (g.provider, g.cluster)).collect();
        assert_eq!(pairs, [("a", Some("hedge_abc")), ("b", Some("hedge_abc")), ("c", Some("hedge_abc"))]);
    }

    #[test]
    fn long_names_use_multi_byte_lengths() {
        let name = "n".repeat(200);
        let bytes = encode(&[Group { provider: &name, cluster: None }, Group { provider: "b", cluster: None }]);
        assert!(bytes.windows(name.len()).any(|w| w == name.as_bytes()));
        assert_eq!(&bytes[..3], &[0x32, 0xee, 0x01]); // 238 = 221 + 17
    }

    #[test]
    fn header_value_is_standard_base64() {
        assert_eq!(header_value(&named(&["p1xy"])), "MhQKEioQCg4KBG5hbWUSBhoEcDF4eQ==");
    }
}
