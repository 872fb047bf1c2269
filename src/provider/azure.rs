//! Azure OpenAI: the OpenAI body, but the deployment is in the path, the API version in the
//! query and the key in an `api-key` header.

use super::Provider;

pub const DEFAULT_BASE_PATH: &str = "/openai";

pub fn chat_path(provider: &Provider, deployment: &str) -> String {
    format!(
        "{}/deployments/{}/chat/completions?api-version={}",
        provider.base_path,
        super::path_segment(deployment),
        provider.api_version.as_deref().unwrap_or_default()
    )
}

pub fn embeddings_path(provider: &Provider, deployment: &str) -> String {
    format!(
        "{}/deployments/{}/embeddings?api-version={}",
        provider.base_path,
        super::path_segment(deployment),
        provider.api_version.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::super::path_segment;

    #[test]
    fn client_model_cannot_leave_its_segment() {
        assert_eq!(path_segment("gpt-4o"), "gpt-4o");
        assert_eq!(path_segment("../x?y"), "..%2Fx%3Fy");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("gpt-3.5"), "gpt-3.5");
    }
}
