//! Google Vertex AI: Gemini and Claude models of a project at a location, reached with a Google
//! OAuth2 access token. The bodies are the Gemini API's and Anthropic's Messages; Vertex puts
//! the model in the path and, for Claude, Anthropic's version in the body.

use serde_json::Value;

use super::{path_segment, Format};

pub const DEFAULT_BASE_PATH: &str = "/v1";
/// The `anthropic_version` Vertex takes in the body instead of the `anthropic-version` header.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vertex {
    pub project: String,
    pub location: String,
}

impl Vertex {
    /// Vertex's regional endpoint for the location; `global` has none of its own.
    pub fn default_host(&self) -> String {
        match self.location.as_str() {
            "global" => "aiplatform.googleapis.com".to_string(),
            location => format!("{location}-aiplatform.googleapis.com"),
        }
    }

    pub fn chat_path(&self, base_path: &str, format: Format, model: &str, stream: bool) -> String {
        let (publisher, method) = match (format, stream) {
            (Format::Anthropic, false) => ("anthropic", "rawPredict"),
            (Format::Anthropic, true) => ("anthropic", "streamRawPredict"),
            (_, false) => ("google", "generateContent"),
            (_, true) => ("google", "streamGenerateContent?alt=sse"),
        };
        // Gemini names models `models/<id>`, Vertex `publishers/google/models/<id>`.
        let model = model.rsplit_once("models/").map_or(model, |(_, id)| id);
        format!(
            "{base_path}/projects/{}/locations/{}/publishers/{publisher}/models/{}:{method}",
            path_segment(&self.project),
            path_segment(&self.location),
            model_segment(model)
        )
    }
}

/// Claude's model ids on Vertex carry their version after an `@`, which a path may hold as it is.
fn model_segment(model: &str) -> String {
    model.split('@').map(path_segment).collect::<Vec<_>>().join("@")
}

/// An Anthropic Messages body as Vertex takes it: the model is in the path, the version in the
/// body. Whether the client asked for a stream, which picks the path.
pub fn anthropic_body(body: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    object.remove("model");
    object.insert("anthropic_version".into(), Value::from(ANTHROPIC_VERSION));
    let stream = object.get("stream").and_then(Value::as_bool).unwrap_or(false);
    Some((serde_json::to_vec(&value).ok()?, stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vertex(location: &str) -> Vertex {
        Vertex { project: "my-project".into(), location: location.into() }
    }

    #[test]
    fn hosts_and_paths() {
        assert_eq!(vertex("us-central1").default_host(), "us-central1-aiplatform.googleapis.com");
        assert_eq!(vertex("global").default_host(), "aiplatform.googleapis.com");
        let v = vertex("europe-west4");
        assert_eq!(
            v.chat_path("/v1", Format::Gemini, "gemini-2.5-flash", false),
            "/v1/projects/my-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            v.chat_path("/v1", Format::Gemini, "models/gemini-2.5-flash", true),
            "/v1/projects/my-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            v.chat_path("/v1", Format::Anthropic, "claude-sonnet-4@20250514", true),
            "/v1/projects/my-project/locations/europe-west4/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"
        );
        assert_eq!(
            v.chat_path("/v1", Format::Gemini, "x/../../y?z", false),
            "/v1/projects/my-project/locations/europe-west4/publishers/google/models/x%2F..%2F..%2Fy%3Fz:generateContent"
        );
    }

    #[test]
    fn anthropic_body_drops_the_model_and_carries_the_version() {
        let body = json!({"model": "claude", "max_tokens": 5, "stream": true, "messages": []}).to_string();
        let (sent, stream) = anthropic_body(body.as_bytes()).unwrap();
        let sent: Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(sent, json!({"max_tokens": 5, "stream": true, "messages": [], "anthropic_version": "vertex-2023-10-16"}));
        assert!(stream);
        assert!(!anthropic_body(br#"{"max_tokens":5}"#).unwrap().1);
        assert!(anthropic_body(b"[1]").is_none());
    }
}
