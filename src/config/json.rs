//! The plugin config's JSON read by hand: one small tree type that keeps key order (a failover
//! order) and repeated keys, and readers whose every error names the field as the operator wrote it.
//!
//! It replaces serde derives on the config types: each derive is code in the module for every
//! type, and tracking the path through them took as much again (docs/benchmarks.md).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{invalid, ConfigError};

/// A JSON value with the object's entries in the order written.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    F64(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::U64(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(if v >= 0 { Json::U64(v.unsigned_abs()) } else { Json::I64(v) })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::F64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}

/// The whole document; a syntax error has no field, and says where it is.
pub fn parse(bytes: &[u8]) -> Result<Json, ConfigError> {
    serde_json::from_slice(bytes).map_err(|e| invalid("", e.to_string()))
}

impl Json {
    /// serde's words for a value, so that type errors read as they did with derives.
    fn unexpected(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => format!("boolean `{b}`"),
            Json::U64(n) => format!("integer `{n}`"),
            Json::I64(n) => format!("integer `{n}`"),
            Json::F64(n) => format!("floating point `{n}`"),
            Json::Str(s) => format!("string {s:?}"),
            Json::Array(_) => "sequence".into(),
            Json::Object(_) => "map".into(),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A value and the field it is at.
#[derive(Clone, Copy)]
pub struct Field<'a> {
    pub value: &'a Json,
    pub path: &'a str,
}

/// A value whose path is owned (an array item's, a map entry's).
pub struct Owned<'a> {
    pub value: &'a Json,
    pub path: String,
}

impl Owned<'_> {
    pub fn field(&self) -> Field<'_> {
        Field { value: self.value, path: &self.path }
    }
}

impl<'a> Field<'a> {
    pub fn root(value: &'a Json) -> Field<'a> {
        Field { value, path: "" }
    }

    fn wrong(&self, expected: &str) -> ConfigError {
        invalid(self.path, format!("invalid type: {}, expected {expected}", self.value.unexpected()))
    }

    pub fn string(&self) -> Result<String, ConfigError> {
        match self.value {
            Json::Str(s) => Ok(s.clone()),
            _ => Err(self.wrong("a string")),
        }
    }

    pub fn u64(&self) -> Result<u64, ConfigError> {
        match self.value {
            Json::U64(n) => Ok(*n),
            Json::I64(n) => Err(invalid(self.path, format!("invalid value: integer `{n}`, expected u64"))),
            _ => Err(self.wrong("u64")),
        }
    }

    pub fn u32(&self) -> Result<u32, ConfigError> {
        match self.value {
            Json::U64(n) => u32::try_from(*n).map_err(|_| invalid(self.path, format!("invalid value: integer `{n}`, expected u32"))),
            Json::I64(n) => Err(invalid(self.path, format!("invalid value: integer `{n}`, expected u32"))),
            _ => Err(self.wrong("u32")),
        }
    }

    pub fn f64(&self) -> Result<f64, ConfigError> {
        match self.value {
            Json::U64(n) => Ok(*n as f64),
            Json::I64(n) => Ok(*n as f64),
            Json::F64(n) => Ok(*n),
            _ => Err(self.wrong("f64")),
        }
    }

    pub fn bool(&self) -> Result<bool, ConfigError> {
        match self.value {
            Json::Bool(b) => Ok(*b),
            _ => Err(self.wrong("a boolean")),
        }
    }

    /// An array's items, each at `path[i]`.
    pub fn items(&self) -> Result<Vec<Owned<'a>>, ConfigError> {
        match self.value {
            Json::Array(items) => {
                Ok(items.iter().enumerate().map(|(i, value)| Owned { value, path: format!("{}[{i}]", self.path) }).collect())
            }
            _ => Err(self.wrong("a sequence")),
        }
    }

    pub fn strings(&self) -> Result<Vec<String>, ConfigError> {
        self.items()?.iter().map(|item| item.field().string()).collect()
    }

    /// An object's entries in the order written, repeated keys kept, each at `path.key`.
    pub fn entries(&self) -> Result<Vec<(&'a str, Owned<'a>)>, ConfigError> {
        match self.value {
            Json::Object(entries) => {
                Ok(entries.iter().map(|(key, value)| (key.as_str(), Owned { value, path: join(self.path, key) })).collect())
            }
            _ => Err(self.wrong("a map")),
        }
    }

    /// An object as a sorted map of what `read` makes of each value (a key given twice: the last).
    /// Inserted one by one: collecting into a `BTreeMap` sorts, with a sort per call site.
    pub fn map<T>(&self, read: impl Fn(Field) -> Result<T, ConfigError>) -> Result<std::collections::BTreeMap<String, T>, ConfigError> {
        let mut map = std::collections::BTreeMap::new();
        for (key, value) in self.entries()? {
            map.insert(key.to_string(), read(value.field())?);
        }
        Ok(map)
    }

    /// An object with these fields and no others, each at most once.
    pub fn object(&self, known: &'static [&'static str]) -> Result<Object<'a>, ConfigError> {
        let Json::Object(entries) = self.value else {
            return Err(self.wrong("an object"));
        };
        for (i, (key, _)) in entries.iter().enumerate() {
            if !known.contains(&key.as_str()) {
                let expected = if known.is_empty() {
                    "there are no fields".to_string()
                } else {
                    let names: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
                    format!("expected one of {}", names.join(", "))
                };
                return Err(invalid(join(self.path, key), format!("unknown field `{key}`, {expected}")));
            }
            if entries.iter().take(i).any(|(k, _)| k == key) {
                return Err(invalid(join(self.path, key), format!("duplicate field `{key}`")));
            }
        }
        Ok(Object { entries, path: self.path })
    }

    /// One of an enum's names (`kebab-case` in the config).
    pub fn variant<T: Copy>(&self, variants: &[(&str, T)]) -> Result<T, ConfigError> {
        let name = match self.value {
            Json::Str(s) => s,
            _ => return Err(self.wrong("a variant name")),
        };
        if let Some((_, value)) = variants.iter().find(|(n, _)| *n == name) {
            return Ok(*value);
        }
        let names: Vec<String> = variants.iter().map(|(n, _)| format!("`{n}`")).collect();
        Err(invalid(self.path, format!("unknown variant `{name}`, expected one of {}", names.join(", "))))
    }
}

/// An object whose fields were checked against the known ones.
pub struct Object<'a> {
    entries: &'a [(String, Json)],
    path: &'a str,
}

impl<'a> Object<'a> {
    /// A field given, `null` included (which only an optional field takes as absent).
    pub fn get(&self, key: &str) -> Option<Owned<'a>> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, value)| Owned { value, path: join(self.path, key) })
    }

    /// An optional field: absent or `null` is `None`.
    pub fn opt(&self, key: &str) -> Option<Owned<'a>> {
        self.get(key).filter(|f| *f.value != Json::Null)
    }

    pub fn required(&self, key: &str) -> Result<Owned<'a>, ConfigError> {
        self.get(key).ok_or_else(|| invalid(self.path, format!("missing field `{key}`")))
    }

    /// Reads an optional field with `read`.
    pub fn opt_with<T>(&self, key: &str, read: impl Fn(Field) -> Result<T, ConfigError>) -> Result<Option<T>, ConfigError> {
        self.opt(key).map(|f| read(f.field())).transpose()
    }

    /// Reads a field that has a default when absent (`null` is a type error, as with serde).
    pub fn or_else<T>(
        &self,
        key: &str,
        read: impl Fn(Field) -> Result<T, ConfigError>,
        default: impl FnOnce() -> T,
    ) -> Result<T, ConfigError> {
        match self.get(key) {
            Some(f) => read(f.field()),
            None => Ok(default()),
        }
    }

    pub fn opt_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.opt_with(key, |f| f.string())
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        self.opt_with(key, |f| f.u64())
    }

    pub fn string(&self, key: &str) -> Result<String, ConfigError> {
        self.required(key)?.field().string()
    }

    /// An object of strings, as a sorted map (a key given twice: the last one).
    pub fn string_map(&self, key: &str) -> Result<std::collections::BTreeMap<String, String>, ConfigError> {
        self.or_else(key, |f| f.map(|v| v.string()), Default::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Json {
        parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn objects_keep_their_order_and_repeated_keys() {
        let json = read(r#"{"b":1,"a":[true,null,-2,1.5,"x"],"b":2}"#);
        let Json::Object(entries) = &json else { panic!("{json:?}") };
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a", "b"]);
        assert_eq!(
            entries[1].1,
            Json::Array(vec![Json::Bool(true), Json::Null, Json::I64(-2), Json::F64(1.5), Json::Str("x".into())])
        );
    }

    #[test]
    fn errors_name_the_field_in_serde_words() {
        let json = read(r#"{"n":"1MB","list":[1,"x"],"inner":{"m":-1,"big":5000000000,"f":"fast"}}"#);
        let root = Field::root(&json);
        let top = root.object(&["n", "list", "inner"]).unwrap();
        let err = top.required("n").unwrap().field().u64().unwrap_err();
        assert_eq!((err.field.as_str(), err.reason.as_str()), ("n", "invalid type: string \"1MB\", expected u64"));
        let err = top.required("list").unwrap().field().strings().unwrap_err();
        assert_eq!((err.field.as_str(), err.reason.as_str()), ("list[0]", "invalid type: integer `1`, expected a string"));
        let inner = top.required("inner").unwrap();
        let inner = inner.field().object(&["m", "big", "f"]).unwrap();
        assert_eq!(inner.required("m").unwrap().field().u64().unwrap_err().reason, "invalid value: integer `-1`, expected u64");
        let err = inner.required("big").unwrap().field().u32().unwrap_err();
        assert_eq!((err.field.as_str(), err.reason.as_str()), ("inner.big", "invalid value: integer `5000000000`, expected u32"));
        let err = inner.required("f").unwrap().field().variant(&[("slow", 1), ("quick", 2)]).unwrap_err();
        assert_eq!(err.reason, "unknown variant `fast`, expected one of `slow`, `quick`");
        let err = inner.required("nope").err().unwrap();
        assert_eq!((err.field.as_str(), err.reason.as_str()), ("inner", "missing field `nope`"));
        let err = root.object(&["n", "list"]).err().unwrap();
        assert_eq!((err.field.as_str(), err.reason.as_str()), ("inner", "unknown field `inner`, expected one of `n`, `list`"));
        let err = Field::root(&read(r#"{"a":1,"a":2}"#)).object(&["a"]).err().unwrap();
        assert_eq!((err.field.as_str(), err.reason.as_str()), ("a", "duplicate field `a`"));
        assert!(parse(b"{not json").unwrap_err().reason.contains("line 1 column 2"));
    }

    #[test]
    fn null_is_absent_only_for_optional_fields() {
        let json = read(r#"{"a":null}"#);
        let object = Field::root(&json).object(&["a"]).unwrap();
        assert_eq!(object.opt_string("a").unwrap(), None);
        let err = object.or_else("a", |f| f.u64(), || 7).unwrap_err();
        assert_eq!(err.reason, "invalid type: null, expected u64");
        assert_eq!(object.or_else("b", |f| f.u64(), || 7).unwrap(), 7);
    }
}
