//! Azure OpenAI: the OpenAI body, but the deployment is in the path, the API version in the
//! query and the key in an `api-key` header.

use super::Provider;

pub const DEFAULT_BASE_PATH: &str = "/openai";

pub fn chat_path(provider: &Provider, deployment: &str) -> String {
    format!(
        "{}/deployments/{}/chat/completions?api-version={}",
        provider.base_path,
        path_segment(deployment),
        provider.api_version.as_deref().unwrap_or_default()
    )
}

/// A client-chosen model name must not be able to escape its path segment.
fn path_segment(text: &str) -> String {
    if text == "." || text == ".." {
        return text.replace('.', "%2E");
    }
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_model_cannot_leave_its_segment() {
        assert_eq!(path_segment("gpt-4o"), "gpt-4o");
        assert_eq!(path_segment("../x?y"), "..%2Fx%3Fy");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("gpt-3.5"), "gpt-3.5");
    }
}
