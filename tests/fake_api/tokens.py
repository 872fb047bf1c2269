"""Fake token endpoints and the APIs that take their short-lived tokens, for end-to-end tests of
credentials the filter renews itself.

- `entra_responder`: Microsoft Entra ID's OAuth2 token endpoint
  (`POST /{tenant}/oauth2/v2.0/token`, form `grant_type=client_credentials&client_id=..&
  client_secret=..&scope=..`), answering `{"token_type":"Bearer","expires_in":N,"access_token":..}`
  or an OAuth2 error (`invalid_client`, `unsupported_grant_type`, `invalid_scope`).
- `exchange_responder`: GitHub Copilot's token exchange (`GET /copilot_internal/v2/token` with
  `Authorization: token <long-lived>` and a User-Agent), answering
  `{"token":..,"expires_at":<unix s>,"refresh_in":<s>}` or 401 `Bad credentials`.
- `azure_responder`: Azure OpenAI chat completions
  (`/openai/deployments/{deployment}/chat/completions?api-version=..`) that takes only a bearer
  token the issuer gave and has not expired, and no `api-key`.
- `copilot_responder`: an OpenAI-compatible API at `/chat/completions` (as
  `api.githubcopilot.com`) taking only a current bearer token.

Tokens expire after `lifetime` seconds: a token used late is refused with 401, as the real
services do. Run this file to check the fakes themselves: `python3 tests/fake_api/tokens.py`.
"""

from __future__ import annotations

import itertools
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs

try:
    from mock_provider import CREDENTIAL_HEADERS, Received
except ImportError:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mock_provider import CREDENTIAL_HEADERS, Received

from fake_api import openai  # noqa: E402

ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
EXCHANGE_PATH = "/copilot_internal/v2/token"


class Issuer:
    """The tokens a token endpoint gave, and until when each is good."""

    def __init__(self, lifetime: float, prefix: str):
        self.lifetime = lifetime
        self.prefix = prefix
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}
        self.refused: list[str] = []    # why each refused API request was refused

    def issue(self) -> tuple[str, float]:
        token = f"{self.prefix}{secrets.token_hex(12)}"
        expires = time.time() + self.lifetime
        with self.lock:
            self.tokens[token] = expires
        return token, expires

    def revoke_all(self) -> None:
        with self.lock:
            self.tokens.clear()

    def issued(self) -> list[str]:
        with self.lock:
            return list(self.tokens)

    def check(self, token: str | None) -> str | None:
        """Why `token` is refused now, or None."""
        with self.lock:
            expires = self.tokens.get(token or "")
        if expires is None:
            return "unknown or revoked token"
        if time.time() >= expires:
            return "token expired"
        return None


def _oauth_error(status: int, code: str, description: str) -> dict:
    return {"status": status, "body": {"error": code, "error_description": description,
                                       "error_codes": [7000215], "trace_id": "fake"}}


def entra_responder(issuer: Issuer, tenant: str, client_id: str, client_secret: str,
                    scope: str = ENTRA_SCOPE) -> Callable[[Received], dict]:
    def respond(request: Received) -> dict:
        if request.method != "POST" or request.path != f"/{tenant}/oauth2/v2.0/token":
            return {"status": 404, "body": {"error": "invalid_request", "error_description": "no such endpoint"}}
        if not (request.header("content-type") or "").startswith("application/x-www-form-urlencoded"):
            return _oauth_error(400, "invalid_request", "AADSTS900144: body must be form-encoded")
        form = {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "AADSTS70003: unsupported grant type")
        if form.get("client_id") != client_id or form.get("client_secret") != client_secret:
            return _oauth_error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        if form.get("scope") != scope:
            return _oauth_error(400, "invalid_scope", "AADSTS70011: The provided value for scope is not valid.")
        token, _ = issuer.issue()
        lifetime = int(issuer.lifetime)
        return {"status": 200, "body": {"token_type": "Bearer", "expires_in": lifetime,
                                        "ext_expires_in": lifetime, "access_token": token}}
    return respond


def _missing(request: Received, required: dict[str, str] | None) -> list[str]:
    return [f"{name}: {value!r} is required" for name, value in (required or {}).items()
            if request.header(name) != value]


def exchange_responder(issuer: Issuer, long_lived: str, required: dict[str, str] | None = None) -> Callable[[Received], dict]:
    """`required`: headers the exchange needs besides the token (Copilot's editor headers)."""
    def respond(request: Received) -> dict:
        if request.method != "GET" or request.path != EXCHANGE_PATH:
            return {"status": 404, "body": {"message": "Not Found"}}
        if not request.header("user-agent"):
            return {"status": 403, "body": {"message": "Request forbidden by administrative rules. Please make sure your request has a User-Agent header"}}
        if request.header("authorization") != f"token {long_lived}":
            return {"status": 401, "body": {"message": "Bad credentials"}}
        if _missing(request, required):
            return {"status": 400, "body": {"message": "; ".join(_missing(request, required))}}
        token, expires = issuer.issue()
        return {"status": 200, "body": {"token": token, "expires_at": int(expires),
                                        "refresh_in": max(1, int(issuer.lifetime) // 2),
                                        "endpoints": {"api": "https://api.githubcopilot.com"}}}
    return respond


def _bearer_problems(request: Received, issuer: Issuer) -> list[str]:
    found = [f"{name}: a credential for another provider" for name in CREDENTIAL_HEADERS
             if name != "authorization" and request.header(name) is not None]
    auth = request.header("authorization") or ""
    if not auth.startswith("Bearer "):
        return found + ["authorization: a bearer token is required"]
    why = issuer.check(auth.removeprefix("Bearer "))
    return found + ([f"authorization: {why}"] if why else [])


def _answer(request: Received, name: str, number: int) -> dict:
    body = request.json
    completion_id = f"chatcmpl-{name}{number:04d}"
    if body.get("stream") is True:
        usage = (body.get("stream_options") or {}).get("include_usage") is True
        return {"status": 200, "sse": openai.stream_events(completion_id, body["model"], f"hello from {name}", None, usage)}
    return {"status": 200, "body": openai.completion(completion_id, body["model"], f"hello from {name}", None)}


def _chat_responder(issuer: Issuer, name: str, path_ok: Callable[[Received], list[str]],
                    required: dict[str, str] | None = None) -> Callable[[Received], dict]:
    numbers = itertools.count(1)

    def respond(request: Received) -> dict:
        number = next(numbers)
        auth = _bearer_problems(request, issuer)
        if auth:
            issuer.refused.append("; ".join(auth))
            return openai.error_spec(401, "invalid_request_error", "; ".join(auth), "invalid_api_key")
        body = request.json
        found = path_ok(request) + _missing(request, required) + (openai.body_problems(body) if isinstance(body, dict) else ["body: not a JSON object"])
        if found:
            return openai.error_spec(400, "invalid_request_error", "; ".join(found), None)
        return _answer(request, name, number)
    return respond


def azure_responder(issuer: Issuer, deployment: str, api_version: str, name: str = "azure") -> Callable[[Received], dict]:
    def path_ok(request: Received) -> list[str]:
        found = []
        if request.path != f"/openai/deployments/{deployment}/chat/completions":
            found.append(f"path {request.path}: DeploymentNotFound")
        if request.query != f"api-version={api_version}":
            found.append(f"query {request.query}: api-version={api_version} is required")
        return found
    return _chat_responder(issuer, name, path_ok)


def copilot_responder(issuer: Issuer, name: str = "copilot", required: dict[str, str] | None = None) -> Callable[[Received], dict]:
    """`required`: headers the API needs besides the token (`Copilot-Integration-Id`...)."""
    def path_ok(request: Received) -> list[str]:
        return [] if request.path == "/chat/completions" else [f"path {request.path}: not /chat/completions"]
    return _chat_responder(issuer, name, path_ok, required)


# ---------------------------------------------------------------- self-check

def _received(method: str, path: str, headers: dict, body: bytes = b"", query: str = "") -> Received:
    import json
    headers = {k.lower(): v for k, v in headers.items()}
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return Received(method=method, path=path, query=query, headers=headers, body=body, json=parsed, at=0.0,
                    header_list=list(headers.items()))


def _self_check() -> None:
    import json
    issuer = Issuer(0.3, "eyJ")
    entra = entra_responder(issuer, "contoso", "app", "s3cret")
    form = {"content-type": "application/x-www-form-urlencoded"}
    good = b"grant_type=client_credentials&client_id=app&client_secret=s3cret&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default"
    answer = entra(_received("POST", "/contoso/oauth2/v2.0/token", form, good))
    assert answer["status"] == 200 and answer["body"]["token_type"] == "Bearer", answer
    token = answer["body"]["access_token"]
    assert entra(_received("POST", "/contoso/oauth2/v2.0/token", form, good.replace(b"s3cret", b"wrong")))["body"]["error"] == "invalid_client"
    assert entra(_received("POST", "/contoso/oauth2/v2.0/token", form, good.replace(b"client_credentials", b"password")))["status"] == 400
    assert entra(_received("POST", "/contoso/oauth2/v2.0/token", {"content-type": "application/json"}, good))["status"] == 400
    chat = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    azure = azure_responder(issuer, "dep", "2024-10-21")
    path, query = "/openai/deployments/dep/chat/completions", "api-version=2024-10-21"
    assert azure(_received("POST", path, {"authorization": f"Bearer {token}", "content-type": "application/json"}, chat, query))["status"] == 200
    assert azure(_received("POST", path, {"authorization": f"Bearer {token}", "api-key": "k"}, chat, query))["status"] == 401
    assert azure(_received("POST", path, {"api-key": token}, chat, query))["status"] == 401
    time.sleep(0.35)
    assert azure(_received("POST", path, {"authorization": f"Bearer {token}"}, chat, query))["status"] == 401, "expired"
    exchange = exchange_responder(issuer, "gho_long", {"editor-version": "vscode/1"})
    assert exchange(_received("GET", EXCHANGE_PATH, {"authorization": "token gho_long", "user-agent": "x"}))["status"] == 400
    answer = exchange(_received("GET", EXCHANGE_PATH, {"authorization": "token gho_long", "user-agent": "x", "editor-version": "vscode/1"}))
    assert answer["status"] == 200 and answer["body"]["expires_at"] <= time.time() + 1, answer
    assert exchange(_received("GET", EXCHANGE_PATH, {"authorization": "token nope", "user-agent": "x"}))["status"] == 401
    assert exchange(_received("GET", EXCHANGE_PATH, {"authorization": "token gho_long"}))["status"] == 403
    copilot = copilot_responder(issuer, required={"copilot-integration-id": "vscode-chat"})
    fresh = answer["body"]["token"]
    assert copilot(_received("POST", "/chat/completions", {"authorization": f"Bearer {fresh}"}, chat))["status"] == 400
    assert copilot(_received("POST", "/chat/completions", {"authorization": f"Bearer {fresh}", "copilot-integration-id": "vscode-chat"}, chat))["status"] == 200
    issuer.revoke_all()
    assert copilot(_received("POST", "/chat/completions", {"authorization": f"Bearer {fresh}", "copilot-integration-id": "vscode-chat"}, chat))["status"] == 401
    print("tokens fakes: ok")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    _self_check()
