//! Errors in the shape OpenAI clients and SDKs parse: `{"error": {message, type, param, code}}`.

use serde_json::json;

pub fn body(message: &str, kind: &str, code: &str, param: Option<&str>) -> Vec<u8> {
    with_code(message, kind, Some(code), param)
}

/// The same, for errors that may have no code (a provider's, translated).
pub fn with_code(message: &str, kind: &str, code: Option<&str>, param: Option<&str>) -> Vec<u8> {
    let value = json!({
        "error": { "message": message, "type": kind, "param": param, "code": code }
    });
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_message() {
        let out = body("bad \"x\"", "invalid_request_error", "bad_request", Some("model"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "bad \"x\"");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "bad_request");
    }
}
