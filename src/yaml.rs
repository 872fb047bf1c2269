//! Writes a JSON value as block-style YAML for a person to read: multi-line strings as literal
//! blocks, and a subtree that repeats as a YAML anchor and its aliases.

use std::fmt::Write;

use serde_json::Value;

/// `anchors`: names for subtrees written once and referred to after (`&name`, then `*name`).
/// A subtree that stands only once is written as it is.
pub fn to_yaml(value: &Value, anchors: &[(&str, &Value)]) -> String {
    let repeated: Vec<(&str, &Value)> = anchors.iter().copied().filter(|(_, v)| occurrences(value, v) > 1).collect();
    let mut writer = Writer { out: String::new(), anchors: &repeated, written: vec![false; repeated.len()] };
    writer.node(value, 0, Place::Root);
    writer.out
}

fn occurrences(tree: &Value, subtree: &Value) -> usize {
    if tree == subtree {
        return 1;
    }
    match tree {
        Value::Object(map) => map.values().map(|v| occurrences(v, subtree)).sum(),
        Value::Array(items) => items.iter().map(|v| occurrences(v, subtree)).sum(),
        _ => 0,
    }
}

struct Writer<'a> {
    out: String,
    anchors: &'a [(&'a str, &'a Value)],
    written: Vec<bool>,
}

#[derive(Clone, Copy, PartialEq)]
enum Place {
    Root,
    /// After `key:` on the same line.
    Key,
    /// After `- ` on the same line.
    Item,
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}

impl Writer<'_> {
    fn node(&mut self, value: &Value, indent: usize, place: Place) {
        if let Some(i) = self.anchors.iter().position(|(_, v)| *v == value) {
            let name = self.anchors.get(i).map_or("", |(n, _)| *n);
            if self.written.get(i) == Some(&true) {
                let _ = writeln!(self.out, " *{name}");
                return;
            }
            if let Some(done) = self.written.get_mut(i) {
                *done = true;
            }
            let _ = write!(self.out, " &{name}");
            if is_block(value) {
                self.out.push('\n');
                self.block(value, indent, Place::Root);
                return;
            }
        }
        self.block(value, indent, place);
    }

    fn block(&mut self, value: &Value, indent: usize, place: Place) {
        let pad = " ".repeat(indent);
        match value {
            Value::Object(map) if !map.is_empty() => {
                if place == Place::Key {
                    self.out.push('\n');
                }
                // `@type` and `name` say what a block is: they come first.
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by_key(|(key, _)| match key.as_str() {
                    "@type" => 0,
                    "name" => 1,
                    _ => 2,
                });
                for (i, (key, item)) in entries.into_iter().enumerate() {
                    // The first key of a list item shares the `- ` line.
                    if !(place == Place::Item && i == 0) {
                        self.out.push_str(&pad);
                    }
                    let _ = write!(self.out, "{}:", scalar_key(key));
                    self.child(item, indent + 2, indent);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                if place == Place::Key {
                    self.out.push('\n');
                }
                for (i, item) in items.iter().enumerate() {
                    if !(place == Place::Item && i == 0) {
                        self.out.push_str(&pad);
                    }
                    self.out.push('-');
                    if is_block(item) && !self.is_anchor(item) {
                        self.out.push(' ');
                        self.block(item, indent + 2, Place::Item);
                    } else {
                        self.node(item, indent + 2, Place::Item);
                    }
                }
            }
            Value::String(text) if text.contains('\n') => {
                let _ = writeln!(self.out, " |");
                for line in text.trim_end_matches('\n').lines() {
                    if line.is_empty() {
                        self.out.push('\n');
                    } else {
                        let _ = writeln!(self.out, "{pad}{line}");
                    }
                }
            }
            scalar => {
                let _ = writeln!(self.out, " {}", scalar_text(scalar));
            }
        }
    }

    /// A map's value: nested blocks go one level in (lists stay at the key's indent).
    fn child(&mut self, item: &Value, inner: usize, key_indent: usize) {
        let indent = if matches!(item, Value::Array(a) if !a.is_empty()) && !self.is_anchor(item) { key_indent } else { inner };
        self.node(item, indent, Place::Key);
    }

    fn is_anchor(&self, value: &Value) -> bool {
        self.anchors.iter().any(|(_, v)| *v == value)
    }
}

fn plain(text: &str) -> bool {
    let reserved = ["true", "false", "null", "yes", "no", "on", "off", "~", ""];
    !reserved.contains(&text.to_ascii_lowercase().as_str())
        && text.parse::<f64>().is_err()
        && text.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '/' || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "_-./~".contains(c))
}

fn quoted(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

fn scalar_key(key: &str) -> String {
    if plain(key) {
        key.to_string()
    } else {
        quoted(key)
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) if plain(text) => text.clone(),
        Value::String(text) => quoted(text),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_nested_maps_lists_and_blocks() {
        let value = json!({"a": {"b": 1, "@type": "x.y/z"}, "list": [{"k": "v", "n": [1, 2]}, "s p"], "text": "{\n  \"x\": 1\n}\n", "e": {}, "t": "true"});
        let yaml = to_yaml(&value, &[]);
        // serde_json's map is sorted (`a`, `e`, `list`, `t`, `text`); `@type` comes first.
        let expected = "a:\n  \"@type\": x.y/z\n  b: 1\ne: {}\nlist:\n- k: v\n  n:\n  - 1\n  - 2\n- \"s p\"\nt: \"true\"\ntext: |\n  {\n    \"x\": 1\n  }\n";
        assert_eq!(yaml, expected);
    }

    #[test]
    fn a_repeated_subtree_is_an_anchor_then_aliases() {
        let vm = json!({"vm_id": "x", "code": 1});
        let value = json!({"one": {"vm": vm}, "two": {"vm": vm}, "list": [vm]});
        let yaml = to_yaml(&value, &[("vm", &vm)]);
        assert_eq!(yaml, "list:\n- &vm\n  code: 1\n  vm_id: x\none:\n  vm: *vm\ntwo:\n  vm: *vm\n");
    }
}
