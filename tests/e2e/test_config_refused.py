"""A bad plugin config makes Envoy refuse to start, with a log line naming the field."""

from __future__ import annotations

import json

import pytest

import harness
from envoy_config import Provider, render

ROUTER_OK = {"role": "router", "providers": ["a", "b"], "chains": {"default": ["a", "b"]}}


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
])
def test_bad_router_config_is_refused_with_the_field(tmp_path, router, field_and_reason):
    output = refused_with(tmp_path, router_config=router)
    assert f"llm-failover: plugin configuration refused: {field_and_reason}" in output


@pytest.mark.parametrize("attempt, field_and_reason", [
    ({"role": "attempt", "provider": {"name": "a", "format": "cohere", "host": "h"}},
     "field `provider.format`: unknown variant `cohere`"),
    ({"role": "attempt", "provider": {"name": "a", "format": "openai", "host": "h"},
      "cooldowns": {"authFailure": "1 hour"}},
     "field `cooldowns.authFailure`: `1 hour` has unknown unit"),
    ({"role": "attempt", "provider": {"name": "a", "format": "openai", "host": "h",
                                      "auth": {"apiKeyEnv": "NOT_IN_THE_VM"}}},
     "field `provider.auth.apiKeyEnv`: environment variable `NOT_IN_THE_VM` is not set in the VM"),
])
def test_bad_attempt_config_is_refused_with_the_field(tmp_path, attempt, field_and_reason):
    output = refused_with(tmp_path, attempt_configs={"a": attempt})
    assert f"llm-failover: plugin configuration refused: {field_and_reason}" in output


def test_a_good_config_starts(tmp_path, mock):
    a = mock("a")
    listener, admin = harness.free_port(), harness.free_port()
    text = render(listener_port=listener, admin_port=admin, providers=[Provider("a", a.port)],
                  chains={"default": ["a"]}, router_config=json.dumps(ROUTER_OK | {"providers": ["a"], "chains": {"default": ["a"]},
                                                                       "defaultChain": "default"}))
    envoy = harness.Envoy(text, tmp_path, admin_port=admin, listener_ports=[listener]).start()
    assert envoy.post_json("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]}).status == 200
