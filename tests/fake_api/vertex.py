"""Fakes of Google Vertex AI (Gemini and Claude models of a project at a location) and of
Google's OAuth2 token endpoint, for the end-to-end tests.

    tokens = vertex.TokenEndpoint(key_file, token_uri, lifetime_s=3599)
    token_server.set_default(tokens.responder())            # POST /token, JWT bearer grant
    token = tokens.exchange(vertex.sign_assertion(key_file, token_uri))["access_token"]
    provider.set_default(vertex.gemini_responder("vertex", tokens, "proj", "us-central1"))

The token endpoint verifies the assertion as Google does: its RS256 signature against the
service account's public key, `iss`, `aud`, `scope`, `iat` and `exp`; the tokens it issues
expire after `lifetime_s`. Vertex accepts only a bearer token that endpoint issued and that has
not expired (401 UNAUTHENTICATED otherwise; API keys are refused), at its own paths, host and
project; the body is then checked and answered by the Gemini or Anthropic fake, after Vertex's
own rules (a `role` on every content; Claude's `anthropic_version` in the body, no `model`).
Run this file to self-check (no network).
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import re
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

try:
    from mock_provider import CREDENTIAL_HEADERS, Received
except ImportError:  # run as a script: tests/ is not on the path yet
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mock_provider import CREDENTIAL_HEADERS, Received

from fake_api import anthropic, gemini  # noqa: E402

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ANTHROPIC_VERSION = "vertex-2023-10-16"
# Google allows this much clock skew on `iat`, and an assertion at most an hour long.
CLOCK_SKEW_S = 300
MAX_ASSERTION_S = 3600
TEST_KEY_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "google" / "TEST-ONLY-service-account.json"

_PATH = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/(?P<publisher>google|anthropic)"
    r"/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent|rawPredict|streamRawPredict)$")
_METHODS = {"google": {"generateContent", "streamGenerateContent"}, "anthropic": {"rawPredict", "streamRawPredict"}}


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_key_file(path: Path = TEST_KEY_FILE, token_uri: str | None = None) -> dict:
    key_file = json.loads(path.read_text())
    if token_uri is not None:
        key_file["token_uri"] = token_uri
    return key_file


def sign_assertion(key_file: dict, now: float | None = None, scope: str = SCOPE,
                   lifetime_s: int = 3600) -> str:
    """The JWT assertion a client signs with the service account's key (as google-auth does)."""
    key = serialization.load_pem_private_key(key_file["private_key"].encode(), None)
    iat = int(time.time() if now is None else now)
    header = {"alg": "RS256", "typ": "JWT", "kid": key_file["private_key_id"]}
    claims = {"iss": key_file["client_email"], "scope": scope, "aud": key_file["token_uri"],
              "iat": iat, "exp": iat + lifetime_s}
    signing_input = ".".join(_b64encode(json.dumps(part, separators=(",", ":")).encode())
                             for part in (header, claims))
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64encode(signature)}"


def google_error(code: int, message: str, status: str) -> dict:
    return {"status": code, "body": {"error": {"code": code, "message": message, "status": status}}}


class TokenEndpoint:
    """Google's OAuth2 token endpoint for one service account, and the tokens it issued."""

    def __init__(self, key_file: dict, lifetime_s: float = 3599):
        private_key = serialization.load_pem_private_key(key_file["private_key"].encode(), None)
        self.public_key = private_key.public_key()
        self.client_email = key_file["client_email"]
        self.key_id = key_file["private_key_id"]
        self.token_uri = key_file["token_uri"]
        self.lifetime_s = lifetime_s
        self._issued: dict[str, float] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self.refused: list[str] = []
        # Why Vertex refused a bearer token (401s), never the token itself.
        self.unauthorized: list[str] = []

    def assertion_problem(self, assertion: str, now: float | None = None) -> str | None:
        """Why Google would refuse `assertion` (`invalid_grant`'s description), or None."""
        now = time.time() if now is None else now
        parts = assertion.split(".")
        if len(parts) != 3:
            return "Invalid JWT: not three base64url parts"
        try:
            header, claims = (json.loads(_b64decode(part)) for part in parts[:2])
            signature = _b64decode(parts[2])
        except (ValueError, UnicodeDecodeError):
            return "Invalid JWT: a part is not base64url JSON"
        if header.get("alg") != "RS256" or header.get("typ", "JWT") != "JWT":
            return f"Invalid JWT: alg {header.get('alg')!r} is not RS256"
        if header.get("kid") not in (None, self.key_id):
            return "Invalid JWT Signature: unknown key id"
        try:
            self.public_key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return "Invalid JWT Signature."
        if claims.get("iss") != self.client_email:
            return "Invalid JWT: iss is not the service account"
        if claims.get("aud") != self.token_uri:
            return f"Invalid JWT: aud {claims.get('aud')!r} is not {self.token_uri!r}"
        if SCOPE not in str(claims.get("scope", "")).split(" "):
            return "Invalid OAuth scope or ID token audience provided."
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            return "Invalid JWT: iat and exp must be integers"
        if iat > now + CLOCK_SKEW_S or exp < now - CLOCK_SKEW_S:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
        if exp - iat > MAX_ASSERTION_S or exp <= iat:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
        return None

    def exchange(self, assertion: str, now: float | None = None) -> dict:
        """The answer to a valid assertion: a new access token (raises on an invalid one)."""
        problem = self.assertion_problem(assertion, now)
        if problem:
            raise ValueError(problem)
        return self._issue()

    def _issue(self) -> dict:
        with self._lock:
            token = f"ya29.fake-{next(self._numbers):04d}-{_b64encode(bytes(range(8)))}"
            self._issued[token] = time.monotonic() + self.lifetime_s
        return {"access_token": token, "expires_in": int(self.lifetime_s), "token_type": "Bearer"}

    def expires_at(self, token: str) -> float | None:
        """When (time.monotonic) an issued token stops being accepted."""
        with self._lock:
            return self._issued.get(token)

    def issued(self) -> list[str]:
        with self._lock:
            return list(self._issued)

    def revoke_all(self) -> None:
        """Every token issued so far stops being accepted (a key deleted, tokens revoked)."""
        with self._lock:
            self._issued = dict.fromkeys(self._issued, 0.0)

    def valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._issued.get(token)
        return expiry is not None and time.monotonic() < expiry

    def responder(self) -> Callable[[Received], dict]:
        """A MockProvider spec callable answering at the token URI as Google does."""
        path = urllib.parse.urlsplit(self.token_uri).path

        def respond(request: Received) -> dict:
            def refuse(error: str, description: str, status: int = 400) -> dict:
                self.refused.append(description)
                return {"status": status, "body": {"error": error, "error_description": description}}

            if request.method != "POST" or request.path != path:
                return {"status": 404, "body": {"error": "not_found", "error_description": request.path}}
            if (request.header("content-type") or "").split(";")[0].strip() != "application/x-www-form-urlencoded":
                return refuse("invalid_request", "content-type must be application/x-www-form-urlencoded")
            form = urllib.parse.parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
            if form.get("grant_type") != [JWT_BEARER]:
                return refuse("unsupported_grant_type", "Invalid grant_type: " + ",".join(form.get("grant_type", [])))
            assertions = form.get("assertion", [])
            if len(assertions) != 1:
                return refuse("invalid_request", "Missing required parameter: assertion")
            problem = self.assertion_problem(assertions[0])
            if problem:
                return refuse("invalid_grant", problem)
            return {"status": 200, "body": self._issue()}

        return respond


def _expected_host(location: str) -> str:
    return "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"


def _auth_failure(request: Received, tokens: TokenEndpoint) -> dict | None:
    others = sorted(name for name in CREDENTIAL_HEADERS if name != "authorization" and request.header(name) is not None)
    if "x-goog-api-key" in others:
        return google_error(401, "API keys are not supported by this API. Expected OAuth2 access token or other "
                                 "authentication credentials that assert a principal.", "UNAUTHENTICATED")
    if others:
        return google_error(401, f"credential header(s) {others} sent to Vertex AI", "UNAUTHENTICATED")
    authorization = request.header("authorization")
    if authorization is None:
        return google_error(401, "Request is missing required authentication credential. Expected OAuth 2 access "
                                 "token, login cookie or other valid authentication credential.", "UNAUTHENTICATED")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not tokens.valid(token):
        tokens.unauthorized.append("expired" if tokens.expires_at(token) is not None else "unknown token")
        return google_error(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                                 "login cookie or other valid authentication credential.", "UNAUTHENTICATED")
    return None


def _route(request: Received, project: str, location: str, publisher: str) -> tuple[dict | None, dict | None]:
    """(the path's parts, an error spec): Vertex's checks of method, path and host."""
    match = _PATH.match(request.path)
    if request.method != "POST" or not match or match["method"] not in _METHODS[match["publisher"]]:
        return None, google_error(404, f"{request.method} {request.path} is not a Vertex AI method", "NOT_FOUND")
    if match["publisher"] != publisher:
        return None, google_error(404, f"Publisher Model `{match['model']}` of `{match['publisher']}` not found.",
                                  "NOT_FOUND")
    if match["project"] != project:
        return None, google_error(403, f"Permission 'aiplatform.endpoints.predict' denied on resource "
                                       f"'projects/{match['project']}' (or it may not exist).", "PERMISSION_DENIED")
    host = (request.header("host") or "").rsplit(":", 1)[0]
    if match["location"] != location or host != _expected_host(location):
        return None, google_error(400, f"location {match['location']!r} is not served at host {host!r} "
                                       f"(expected {_expected_host(location)!r})", "FAILED_PRECONDITION")
    return match.groupdict(), None


def problems(request: Received, tokens: TokenEndpoint, project: str, location: str) -> list[str]:
    """Everything Vertex would refuse in a Gemini or Claude request."""
    publisher = "anthropic" if ":" in request.path and "Predict" in request.path else "google"
    found = []
    auth = _auth_failure(request, tokens)
    if auth:
        found.append("auth: " + auth["body"]["error"]["message"])
    route, error = _route(request, project, location, publisher)
    if error:
        return found + ["route: " + error["body"]["error"]["message"]]
    inner = _as_anthropic(request, route) if publisher == "anthropic" else _as_gemini(request, route)
    if isinstance(inner, dict):
        return found + ["body: " + json.dumps(inner["body"])]
    if publisher == "anthropic":
        return found + anthropic.problems(inner, "vertex-inner-key")
    return found + gemini.problems(inner, "vertex-inner-key")


def _inner_headers(request: Received, credential: dict[str, str]) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k not in CREDENTIAL_HEADERS}
    headers.update(credential)
    return headers


def _as_gemini(request: Received, route: dict) -> Received | dict:
    """The request as the Gemini API fake takes it, or Vertex's own refusal."""
    body = request.json
    if isinstance(body, dict):
        for i, content in enumerate(body.get("contents") or []):
            if isinstance(content, dict) and content.get("role") not in ("user", "model"):
                return gemini.error_spec(400, f"contents[{i}]: Please use a valid role: user, model.")
    path = f"{gemini.BASE_PATH}/models/{route['model']}:{route['method']}"
    return dataclasses.replace(request, path=path, headers=_inner_headers(request, {"x-goog-api-key": "vertex-inner-key"}))


def _chunked_refusal(request: Received) -> dict | None:
    """Claude on Vertex answers a chunked request body (no content-length) with a 400 that says
    nothing useful (envoyproxy/ai-gateway issue #721)."""
    chunked = "chunked" in (request.header("transfer-encoding") or "").lower()
    length = request.header("content-length")
    if chunked or length is None or length.strip() != str(len(request.body)):
        return google_error(400, "Prediction on deployed model failed with error: \"Bad Request\".", "INVALID_ARGUMENT")
    return None


def _as_anthropic(request: Received, route: dict) -> Received | dict:
    refused = _chunked_refusal(request)
    if refused:
        return refused
    body = request.json

    def refuse(message: str) -> dict:
        return {"status": 400, "body": {"type": "error", "error": {"type": "invalid_request_error", "message": message}}}

    if not isinstance(body, dict):
        return refuse("the body is not a JSON object")
    if "model" in body:
        return refuse("model: Extra inputs are not permitted")
    if body.get("anthropic_version") != ANTHROPIC_VERSION:
        return refuse(f"anthropic_version: Input should be '{ANTHROPIC_VERSION}'")
    if route["method"] == "streamRawPredict" and body.get("stream") is not True:
        return refuse("streamRawPredict takes `\"stream\": true`")
    inner = {k: v for k, v in body.items() if k != "anthropic_version"}
    inner["model"] = route["model"]
    raw = json.dumps(inner).encode()
    headers = _inner_headers(request, {"x-api-key": "vertex-inner-key", "anthropic-version": "2023-06-01"})
    headers["content-length"] = str(len(raw))
    return dataclasses.replace(request, path=anthropic.PATH, headers=headers, body=raw, json=inner)


def gemini_responder(name: str, tokens: TokenEndpoint, project: str, location: str,
                     text: str | None = None) -> Callable[[Received], dict]:
    """Gemini on Vertex AI: Vertex's checks, then the Gemini fake's checks and answers."""
    inner = gemini.responder(name, "vertex-inner-key", text)

    def respond(request: Received) -> dict:
        failure = _auth_failure(request, tokens)
        route, error = (None, failure) if failure else _route(request, project, location, "google")
        if error:
            return error
        converted = _as_gemini(request, route)
        return converted if isinstance(converted, dict) else inner(converted)

    return respond


def anthropic_responder(name: str, tokens: TokenEndpoint, project: str, location: str,
                        text: str | None = None) -> Callable[[Received], dict]:
    """Claude on Vertex AI: Vertex's checks, then the Anthropic fake's checks and answers."""
    inner = anthropic.responder(name, "vertex-inner-key", text)

    def respond(request: Received) -> dict:
        failure = _auth_failure(request, tokens)
        route, error = (None, failure) if failure else _route(request, project, location, "anthropic")
        if error:
            return error
        converted = _as_anthropic(request, route)
        return converted if isinstance(converted, dict) else inner(converted)

    return respond


# ---------------------------------------------------------------- self-check

def _self_check() -> None:
    token_uri = "http://127.0.0.1:9/token"
    key_file = load_key_file(token_uri=token_uri)
    tokens = TokenEndpoint(key_file, lifetime_s=2)
    respond_token = tokens.responder()

    def received(path: str, body: Any, headers: dict, raw: bytes | None = None) -> Received:
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"content-length": str(len(data)), **headers}
        return Received(method="POST", path=path, query="", headers=headers, body=data,
                        json=body if raw is None else None, at=time.monotonic())

    form = {"content-type": "application/x-www-form-urlencoded"}

    def grant(assertion: str, grant_type: str = JWT_BEARER) -> dict:
        body = urllib.parse.urlencode({"grant_type": grant_type, "assertion": assertion}).encode()
        return respond_token(received("/token", None, form, raw=body))

    # The assertion src/google_auth.rs signs (its unit test checks it is byte for byte this one).
    rust_made = (TEST_KEY_FILE.parent / "TEST-ONLY-assertion-iat-1700000000.jwt").read_text().strip()
    rust_tokens = TokenEndpoint(load_key_file())
    assert rust_tokens.assertion_problem(rust_made, now=1_700_000_100) is None
    assert rust_tokens.assertion_problem(rust_made, now=1_700_010_000) is not None, "an expired assertion"
    head, claims, signature = rust_made.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert rust_tokens.assertion_problem(f"{head}.{claims}.{flipped}", now=1_700_000_100) == "Invalid JWT Signature."

    answer = grant(sign_assertion(key_file))
    assert answer["status"] == 200, answer
    token = answer["body"]["access_token"]
    assert answer["body"]["token_type"] == "Bearer" and tokens.valid(token)
    for bad, why in [
        (sign_assertion(key_file, scope="https://www.googleapis.com/auth/drive"), "scope"),
        (sign_assertion({**key_file, "token_uri": "https://elsewhere/token"}), "aud"),
        (sign_assertion({**key_file, "client_email": "x@y"}), "iss"),
        (sign_assertion(key_file, now=time.time() - 7200), "Token must be a short-lived"),
        (sign_assertion(key_file, lifetime_s=7200), "Token must be a short-lived"),
        ("a.b", "three"),
    ]:
        refused = grant(bad)
        assert refused["status"] == 400 and refused["body"]["error"] == "invalid_grant", (why, refused)
    assert grant(sign_assertion(key_file), grant_type="client_credentials")["body"]["error"] == "unsupported_grant_type"

    project, location = "proj-1", "us-central1"
    host = {"host": "us-central1-aiplatform.googleapis.com", "content-type": "application/json",
            "authorization": f"Bearer {token}"}
    simple = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    base = f"/v1/projects/{project}/locations/{location}/publishers"
    respond = gemini_responder("vertex", tokens, project, location)
    ok = respond(received(f"{base}/google/models/gemini-2.5-flash:generateContent", simple, host))
    assert ok["status"] == 200, ok
    assert problems(received(f"{base}/google/models/gemini-2.5-flash:generateContent", simple, host),
                    tokens, project, location) == []
    no_role = {"contents": [{"parts": [{"text": "hi"}]}]}
    assert respond(received(f"{base}/google/models/m:generateContent", no_role, host))["status"] == 400
    wrong_project = f"/v1/projects/other/locations/{location}/publishers/google/models/m:generateContent"
    assert respond(received(wrong_project, simple, host))["status"] == 403
    assert respond(received(f"{base}/google/models/m:generateContent", simple,
                            {**host, "host": "europe-west4-aiplatform.googleapis.com"}))["status"] == 400
    assert respond(received(f"{base}/google/models/m:rawPredict", simple, host))["status"] == 404
    assert respond(received(f"{base}/google/models/m:generateContent", simple,
                            {**host, "x-goog-api-key": "k"}))["status"] == 401
    assert respond(received(f"{base}/google/models/m:generateContent", simple,
                            {**host, "authorization": "Bearer ya29.forged"}))["status"] == 401
    no_auth = {k: v for k, v in host.items() if k != "authorization"}
    assert respond(received(f"{base}/google/models/m:generateContent", simple, no_auth))["status"] == 401

    claude = anthropic_responder("vertex-claude", tokens, project, location)
    messages = {"anthropic_version": ANTHROPIC_VERSION, "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi"}]}
    ok = claude(received(f"{base}/anthropic/models/claude-sonnet-4-5@20250929:rawPredict", messages, host))
    assert ok["status"] == 200 and ok["body"]["model"] == "claude-sonnet-4-5@20250929", ok
    chunked = received(f"{base}/anthropic/models/c:rawPredict", messages, host)
    chunked.headers.pop("content-length")
    chunked.headers["transfer-encoding"] = "chunked"
    assert claude(chunked)["status"] == 400, "Vertex refuses a chunked body to Claude"
    with_model = {**messages, "model": "claude"}
    assert claude(received(f"{base}/anthropic/models/c:rawPredict", with_model, host))["status"] == 400
    no_version = {k: v for k, v in messages.items() if k != "anthropic_version"}
    assert claude(received(f"{base}/anthropic/models/c:rawPredict", no_version, host))["status"] == 400
    assert claude(received(f"{base}/anthropic/models/c:streamRawPredict", messages, host))["status"] == 400
    streamed = claude(received(f"{base}/anthropic/models/c:streamRawPredict", {**messages, "stream": True}, host))
    assert streamed["status"] == 200 and ("sse" in streamed or "sse_raw" in streamed), streamed

    time.sleep(2.1)
    assert not tokens.valid(token), "issued tokens expire"
    assert respond(received(f"{base}/google/models/m:generateContent", simple, host))["status"] == 401
    print("vertex fake: self-check passed")


if __name__ == "__main__":
    _self_check()
