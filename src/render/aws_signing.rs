//! Envoy's own SigV4 signer for the providers whose auth is `aws-sigv4`: one signing filter per
//! signed host, after the attempt role in the order clusters, scoped by a matcher to that host.

use serde_json::{json, Value};

use crate::config::{ConfigError, Deployment};
use crate::provider::AwsScope;

/// Headers the signer leaves out of the signature: proxies and Envoy may add or change them
/// after it signs, and AWS's SDKs do not sign `user-agent` either.
const UNSIGNED_HEADERS: &[(&str, &str)] = &[("prefix", "x-envoy-"), ("prefix", "x-forwarded-"), ("exact", "x-request-id"), ("exact", "user-agent")];

/// The signing filters, one per signed host. The attempt role has set `:authority` to the
/// provider's host by the time the signer runs, so the signer signs only that provider's
/// attempts: a host that is also another, unsigned provider's is refused.
pub fn filters(deployment: &Deployment) -> Result<Vec<Value>, ConfigError> {
    let mut signed: Vec<(&str, &AwsScope)> = Vec::new();
    for (i, attempt) in deployment.attempts.iter().enumerate() {
        let provider = &attempt.provider;
        let Some(scope) = &provider.auth.aws else { continue };
        let conflicts = |a: &&crate::config::AttemptConfig| a.provider.host == provider.host && a.provider.auth.aws.as_ref() != Some(scope);
        if let Some(other) = deployment.attempts.iter().find(conflicts) {
            return Err(ConfigError {
                field: format!("filter.providers[{i}].host"),
                reason: format!("`{}` is also provider `{}`'s host, which is not signed for the same region and service: Envoy's signer tells providers apart by host", provider.host, other.provider.name),
            });
        }
        if !signed.iter().any(|(host, _)| *host == provider.host) {
            signed.push((&provider.host, scope));
        }
    }
    Ok(signed.into_iter().map(|(host, scope)| filter(host, scope)).collect())
}

fn filter(host: &str, scope: &AwsScope) -> Value {
    let excluded: Vec<Value> = UNSIGNED_HEADERS.iter().map(|(how, name)| json!({ *how: name })).collect();
    json!({
        "name": format!("llm_failover.aws_sigv4~{host}"),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": {
                "name": "envoy.filters.http.aws_request_signing",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning",
                    "service_name": scope.service,
                    "region": scope.region,
                    // The signature covers the translated body: the filter buffers it.
                    "use_unsigned_payload": false,
                    "match_excluded_headers": excluded,
                },
            },
            "xds_matcher": {"matcher_list": {"matchers": [{
                "predicate": {"not_matcher": {"single_predicate": {
                    "input": {"name": "authority", "typed_config": {
                        "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                        "header_name": ":authority"}},
                    "value_match": {"exact": host},
                }}},
                "on_match": {"action": {"name": "skip", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"}}},
            }]}},
        },
    })
}
