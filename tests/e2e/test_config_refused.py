"""A bad plugin config makes Envoy refuse to start, with a log line naming the field."""

from __future__ import annotations

import json

import pytest

import harness
from envoy_config import Provider, RenderRefused, envoy_version, reads_error_answers, render

A = {"name": "a", "format": "openai", "host": "a.test"}
ROUTER_OK = {"role": "router", "providers": [A, {"name": "b", "format": "openai", "host": "b.test"}],
             "chains": {"default": ["a", "b"]}}


def refused_with(tmp_path, **kwargs) -> str:
    providers = [Provider("a", harness.free_port()), Provider("b", harness.free_port())]
    text = render(listener_port=harness.free_port(), admin_port=harness.free_port(),
                  providers=providers, chains={"default": ["a", "b"]}, **kwargs)
    output = harness.run_envoy_expect_failure(text, tmp_path)
    assert output.refused, f"Envoy accepted a bad plugin config:\n{harness.tail(output)}"
    return output


@pytest.mark.parametrize("router, field_and_reason", [
    ({**ROUTER_OK, "chains": {"default": ["a", "ghost"]}},
     "field `chains.default[1]`: provider `ghost` is not in `providers`"),
    ({**ROUTER_OK, "models": {"gpt-4o": "nope"}}, "field `models.gpt-4o`: chain `nope` is not in `chains`"),
    ({**ROUTER_OK, "maxRequestBytes": "1MB"}, "field `maxRequestBytes`: invalid type"),
    ({**ROUTER_OK, "retries": 2}, "field `retries`: unknown field `retries`"),
    ("{not json", "key must be a string at line 1 column 2"),
    ({**ROUTER_OK, "providers": [{**A, "format": "cohere"}]}, "field `providers[0].format`: unknown variant `cohere`"),
    ({**ROUTER_OK, "providers": [{**A, "cooldowns": {"authFailure": "1 hour"}}]},
     "field `providers[0].cooldowns.authFailure`: `1 hour` has unknown unit"),
    ({**ROUTER_OK, "providers": [{**A, "auth": {"apiKeyEnv": "NOT_IN_THE_VM"}}]},
     "field `providers[0].auth.apiKeyEnv`: environment variable `NOT_IN_THE_VM` is not set in the VM"),
    ({"role": "attempt", "provider": "a"}, "field `provider`: unknown field `provider`"),
    ({**ROUTER_OK, "providers": [{**A, "auth": {"kind": "token-exchange", "tokenUrl": "https://api.github.com/x",
                                                "tokenEnv": "NOT_IN_THE_VM"}}]},
     "field `providers[0].auth.tokenEnv`: environment variable `NOT_IN_THE_VM` is not set in the VM"),
    ({**ROUTER_OK, "providers": [{**A, "auth": {"kind": "oauth2-client-credentials", "tokenUrl": "http://login.example.com/t"}}]},
     "field `providers[0].auth.tokenUrl`: `http://login.example.com/t` must use https"),
    ({**ROUTER_OK, "providers": [{**A, "format": "gemini", "vertex": {"project": "p", "location": "US Central"}}]},
     "field `providers[0].vertex.location`: `US Central` is not a Vertex AI location"),
])
@pytest.mark.core
def test_bad_plugin_config_is_refused_with_the_field(tmp_path, router, field_and_reason):
    output = refused_with(tmp_path, router_config=router)
    assert f"llm-failover: plugin configuration refused: {field_and_reason}" in output


@pytest.mark.core
@pytest.mark.skipif(reads_error_answers(), reason="only Envoy 1.36 cannot retry after a held error answer")
def test_envoy_136_refuses_error_answers_read_and_names_the_version_needed(tmp_path):
    output = refused_with(tmp_path, router_config={**ROUTER_OK, "errorAnswers": "read"})
    assert ("llm-failover: plugin configuration refused: field `errorAnswers`: `read` (error-aware failover, "
            "translated error bodies, context-length replay, stream-start checks) needs Envoy 1.37 or later") in output


def test_the_render_refuses_what_the_filter_would_with_the_same_field():
    with pytest.raises(RenderRefused, match=r"field `filter.chains.default\[1\]`: provider `ghost` is not in `providers`"):
        render(listener_port=1, admin_port=2, providers=[Provider("a", 3)], chains={"default": ["a", "ghost"]})


@pytest.mark.core
def test_a_good_config_starts(tmp_path, mock):
    a = mock("a")
    listener, admin = harness.free_port(), harness.free_port()
    text = render(listener_port=listener, admin_port=admin, providers=[Provider("a", a.port)],
                  chains={"default": ["a"]}, router_config=json.dumps(ROUTER_OK | {"providers": [A], "chains": {"default": ["a"]},
                                                                       "defaultChain": "default"}
                                                                      | ({} if reads_error_answers() else {"errorAnswers": "pass"})))
    envoy = harness.Envoy(text, tmp_path, admin_port=admin, listener_ports=[listener]).start()
    assert envoy.post_json("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]}).status == 200


@pytest.mark.core
@pytest.mark.skipif(envoy_version() >= (1, 38), reason="Envoy 1.38 and later retry bodies over 1 MiB")
def test_envoy_before_138_refuses_max_request_bytes_over_a_mebibyte(tmp_path):
    router = {**ROUTER_OK, "maxRequestBytes": 4 << 20, **({} if reads_error_answers() else {"errorAnswers": "pass"})}
    output = refused_with(tmp_path, router_config=router)
    assert ("llm-failover: plugin configuration refused: field `maxRequestBytes`: above 1048576 needs Envoy 1.38 "
            "or later") in output


USER_CREDENTIAL = {"type": "authorized_user", "client_id": "764086051850-x.apps.googleusercontent.com",
                   "client_secret": "d-FL95Q19q7MQmFpd7hHD0Ty", "refresh_token": "1//0gREFRESHtokenSECRET"}


@pytest.mark.core
@pytest.mark.parametrize("env, field_and_reason", [
    ({}, "field `providers[0].auth.keyEnv`: environment variable `GOOGLE_SA` is not set in the VM"),
    ({"GOOGLE_SA": json.dumps(USER_CREDENTIAL)},
     "field `providers[0].auth.keyEnv`: environment variable `GOOGLE_SA`: service-account key: `type` is not \"service_account\""),
    ({"GOOGLE_SA": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw\n-----END PRIVATE KEY-----\n"},
     "field `providers[0].auth.keyEnv`: environment variable `GOOGLE_SA`: service-account key: not a key file JSON object"),
], ids=["unset", "not-a-service-account", "a-bare-pem"])
def test_a_bad_google_service_account_key_is_refused_naming_the_variable_never_the_key(tmp_path, env, field_and_reason):
    vertex = {"name": "a", "format": "gemini", "vertex": {"project": "p", "location": "us-central1"},
              "auth": {"kind": "google-service-account", "keyEnv": "GOOGLE_SA"}}
    output = refused_with(tmp_path, router_config={**ROUTER_OK, "providers": [vertex]}, extra_env=env)
    assert f"llm-failover: plugin configuration refused: {field_and_reason}" in output
    for secret in ["d-FL95Q19q7MQmFpd7hHD0Ty", "1//0gREFRESH", "MIIEvQIBADAN"]:
        assert secret not in str(output), "the key reached Envoy's log"
