//! The model list (`GET /v1/models`, `GET /v1/models/{id}`), answered by the router role from
//! the configuration: the model aliases and the names providers' model maps know. No provider
//! is asked. OpenAI's shape, or Anthropic's when the client sends `anthropic-version`.

use serde_json::{json, Value};

/// Every listed model says it was created at this time: the gateway does not know when.
const CREATED_AT: &str = "1970-01-01T00:00:00Z";

/// Anthropic lists 20 models a page unless asked for another number (1 to 1000).
const ANTHROPIC_PAGE: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Openai,
    Anthropic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelsRequest {
    /// The list; the query (Anthropic's `limit`, `after_id`, `before_id`) without its `?`.
    List { query: String },
    One { id: String },
}

/// The models paths: for each chat or Messages path, its prefix with `models` (`/v1/models`).
pub fn paths<'a>(api_paths: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut paths: Vec<String> = api_paths
        .filter_map(|path| path.rfind("/chat/completions").or_else(|| path.rfind("/messages")).map(|at| path.get(..at).unwrap_or_default()))
        .map(|prefix| format!("{prefix}/models"))
        .collect();
    crate::sort::stable_sort_by(&mut paths, |a, b| a < b);
    paths.dedup();
    paths
}

/// Which models request `path` (query included) is, when it is one.
pub fn parse(models_paths: &[String], path: &str) -> Option<ModelsRequest> {
    let (plain, query) = path.split_once('?').unwrap_or((path, ""));
    for models in models_paths {
        let Some(rest) = plain.strip_prefix(models.as_str()) else {
            continue;
        };
        if rest.is_empty() || rest == "/" {
            return Some(ModelsRequest::List { query: query.to_string() });
        }
        if let Some(id) = rest.strip_prefix('/').filter(|id| !id.is_empty()) {
            return Some(ModelsRequest::One { id: percent_decoded(id) });
        }
    }
    None
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let hex = bytes.get(at + 1..at + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (byte, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                at += 3;
            }
            _ => {
                out.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn entry(id: &str, shape: Shape) -> Value {
    match shape {
        Shape::Openai => json!({"id": id, "object": "model", "created": 0, "owned_by": "llm-failover"}),
        Shape::Anthropic => json!({"type": "model", "id": id, "display_name": id, "created_at": CREATED_AT}),
    }
}

fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(key, _)| *key == name).map(|(_, value)| value)
}

/// The list, in the client's shape. Anthropic's is paged (`limit`, `after_id`, `before_id`).
pub fn list(ids: &[String], shape: Shape, query: &str) -> Vec<u8> {
    let body = match shape {
        Shape::Openai => json!({"object": "list", "data": ids.iter().map(|id| entry(id, shape)).collect::<Vec<_>>()}),
        Shape::Anthropic => {
            let limit = query_param(query, "limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(ANTHROPIC_PAGE).clamp(1, 1000);
            let after = query_param(query, "after_id").map(percent_decoded);
            let before = query_param(query, "before_id").map(percent_decoded);
            let start = after.and_then(|a| ids.iter().position(|id| *id == a)).map_or(0, |at| at + 1);
            let end = before.and_then(|b| ids.iter().position(|id| *id == b)).unwrap_or(ids.len()).max(start);
            let window = ids.get(start..end).unwrap_or_default();
            // With `before_id` the page is the last `limit` before it, as Anthropic pages backwards.
            let page: &[String] = if query_param(query, "before_id").is_some() {
                window.get(window.len().saturating_sub(limit)..).unwrap_or_default()
            } else {
                window.get(..limit.min(window.len())).unwrap_or_default()
            };
            json!({
                "data": page.iter().map(|id| entry(id, shape)).collect::<Vec<_>>(),
                "has_more": page.len() < window.len(),
                "first_id": page.first(),
                "last_id": page.last(),
            })
        }
    };
    body.to_string().into_bytes()
}

/// One model: 200 and its entry, or 404 in the client's shape.
pub fn one(ids: &[String], id: &str, shape: Shape) -> (u16, Vec<u8>) {
    if ids.iter().any(|known| known == id) {
        return (200, entry(id, shape).to_string().into_bytes());
    }
    let body = match shape {
        Shape::Openai => crate::openai_error::body(
            &format!("The model `{id}` does not exist or no provider chain serves it"),
            "invalid_request_error",
            "model_not_found",
            Some("model"),
        ),
        Shape::Anthropic => super::anthropic::error_body("not_found_error", &format!("model: {id}")),
    };
    (404, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<String> {
        ["claude-sonnet-4-5", "gpt-4o", "openai/gpt-4o"].iter().map(|s| s.to_string()).collect()
    }

    fn value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn the_models_path_sits_beside_each_api_path() {
        let api = ["/v1/chat/completions".to_string(), "/llm/v1/chat/completions".to_string(), "/v1/messages".to_string()];
        assert_eq!(paths(api.iter()), vec!["/llm/v1/models", "/v1/models"]);
        let models = paths(api.iter());
        assert_eq!(parse(&models, "/v1/models"), Some(ModelsRequest::List { query: String::new() }));
        assert_eq!(parse(&models, "/v1/models?limit=2"), Some(ModelsRequest::List { query: "limit=2".into() }));
        assert_eq!(parse(&models, "/v1/models/gpt-4o"), Some(ModelsRequest::One { id: "gpt-4o".into() }));
        assert_eq!(parse(&models, "/v1/models/openai/gpt-4o"), Some(ModelsRequest::One { id: "openai/gpt-4o".into() }));
        assert_eq!(parse(&models, "/v1/models/openai%2Fgpt-4o"), Some(ModelsRequest::One { id: "openai/gpt-4o".into() }));
        assert_eq!(parse(&models, "/v1/modelsx"), None);
        assert_eq!(parse(&models, "/v1/chat/completions"), None);
    }

    #[test]
    fn openai_shape_lists_every_model() {
        let listed = value(&list(&ids(), Shape::Openai, ""));
        assert_eq!(listed["object"], "list");
        assert_eq!(listed["data"][1], json!({"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "llm-failover"}));
        assert_eq!(listed["data"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn anthropic_shape_pages_with_first_and_last_ids() {
        let listed = value(&list(&ids(), Shape::Anthropic, ""));
        assert_eq!(listed["data"][0], json!({"type": "model", "id": "claude-sonnet-4-5", "display_name": "claude-sonnet-4-5", "created_at": CREATED_AT}));
        assert_eq!((listed["has_more"].clone(), listed["first_id"].clone(), listed["last_id"].clone()), (json!(false), json!("claude-sonnet-4-5"), json!("openai/gpt-4o")));
        let page = value(&list(&ids(), Shape::Anthropic, "limit=1&after_id=claude-sonnet-4-5"));
        assert_eq!((page["data"][0]["id"].clone(), page["has_more"].clone()), (json!("gpt-4o"), json!(true)));
        let back = value(&list(&ids(), Shape::Anthropic, "limit=1&before_id=openai%2Fgpt-4o"));
        assert_eq!((back["first_id"].clone(), back["has_more"].clone()), (json!("gpt-4o"), json!(true)));
        let empty = value(&list(&[], Shape::Anthropic, ""));
        assert_eq!(empty, json!({"data": [], "has_more": false, "first_id": null, "last_id": null}));
    }

    #[test]
    fn one_model_or_a_404_in_the_clients_shape() {
        assert_eq!(one(&ids(), "gpt-4o", Shape::Openai).0, 200);
        assert_eq!(value(&one(&ids(), "gpt-4o", Shape::Anthropic).1)["type"], "model");
        let (status, body) = one(&ids(), "nope", Shape::Openai);
        assert_eq!((status, value(&body)["error"]["code"].clone()), (404, json!("model_not_found")));
        let (status, body) = one(&ids(), "nope", Shape::Anthropic);
        assert_eq!((status, value(&body)), (404, json!({"type": "error", "error": {"type": "not_found_error", "message": "model: nope"}})));
    }
}
