"""A real, minimal OpenID Connect issuer on loopback, for `nats-gateway dev` and the tests.

It serves a discovery document, a JWKS and an OAuth2 client-credentials token endpoint
over HTTP, with keys it generates at start. Tests mint tokens through :meth:`mint`
(including broken ones: expired, other audience, foreign key, ``alg: none``) and the
gateway verifies them over real HTTP, exactly as against a production IdP.
Loopback and development only: the client secret is random per process.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = ["DevIssuer"]

_MAX_BODY = 8 * 1024
_PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _new_key(algorithm: str) -> _PrivateKey:
    if algorithm.startswith("ES"):
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class DevIssuer:
    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, algorithm: str = "RS256",
        client_id: str = "airflow-worker", client_secret: str | None = None,
    ) -> None:
        self._host, self._port = host, port
        self.algorithm = algorithm
        self.client_id = client_id
        self._client_secret = client_secret or secrets.token_urlsafe(24)
        self._keys: dict[str, _PrivateKey] = {}
        self._current_kid = ""
        self.rotate_key()
        self.available = True
        self.jwks_requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._url = ""

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> DevIssuer:
        self._server = ThreadingHTTPServer((self._host, self._port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="dev-oidc-issuer")
        self._thread.start()
        self._url = f"http://{self._host}:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> DevIssuer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def issuer(self) -> str:
        assert self._url, "start() the issuer first"
        return self._url

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/jwks"

    @property
    def client_secret(self) -> str:
        return self._client_secret

    # -- keys ------------------------------------------------------------------------

    def rotate_key(self) -> str:
        kid = uuid.uuid4().hex[:16]
        self._keys[kid] = _new_key(self.algorithm)
        self._current_kid = kid
        return kid

    def _jwk(self, kid: str) -> dict[str, Any]:
        public = self._keys[kid].public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk: dict[str, Any] = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": kid, "use": "sig", "alg": self.algorithm}

    def public_jwk(self) -> dict[str, Any]:
        return self._jwk(self._current_kid)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._jwk(kid) for kid in self._keys]}

    @staticmethod
    def foreign_private_key(algorithm: str = "RS256") -> Any:
        return _new_key(algorithm)

    # -- tokens ----------------------------------------------------------------------

    def mint(
        self, *, subject: str, audience: str | list[str], lifetime: int = 300,
        claims: Mapping[str, Any] | None = None, now: int | None = None,
        issuer: str | None = None, headers: Mapping[str, Any] | None = None,
        key: Any = None, algorithm: str | None = None, kid: str | None = None,
    ) -> str:
        """A signed token; a claim given as None in ``claims`` is removed."""
        issued = int(time.time()) if now is None else now
        payload: dict[str, Any] = {
            "iss": issuer or self.issuer, "sub": subject, "aud": audience,
            "iat": issued, "nbf": issued, "exp": issued + lifetime, "jti": uuid.uuid4().hex,
        }
        for name, value in (claims or {}).items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        header = {"kid": kid or self._current_kid, **(headers or {})}
        signing_key = key if key is not None else self._keys[self._current_kid]
        return jwt.encode(payload, signing_key, algorithm=algorithm or self.algorithm,
                          headers=header)

    def mint_unsigned(self, *, subject: str, audience: str, lifetime: int = 300) -> str:
        now = int(time.time())
        header = {"alg": "none", "typ": "JWT", "kid": self._current_kid}
        payload = {"iss": self.issuer, "sub": subject, "aud": audience, "iat": now,
                   "exp": now + lifetime}
        return ".".join([_b64url(json.dumps(header).encode()),
                         _b64url(json.dumps(payload).encode()), ""])

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer, "jwks_uri": self.jwks_uri,
            "token_endpoint": self.issuer + "/token",
            "response_types_supported": ["token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.algorithm],
            "grant_types_supported": ["client_credentials"],
        }

    def issue_for_client(self, form: Mapping[str, str], basic: tuple[str, str] | None
                         ) -> tuple[int, dict[str, Any]]:
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if client_id != self.client_id or not hmac.compare_digest(
                secret.encode(), self._client_secret.encode()):
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        extra = {k: form[k] for k in ("dag_id", "task_id") if k in form}
        lifetime = 600
        token = self.mint(subject=form.get("subject", client_id),
                          audience=form.get("audience", "nats-gateway"),
                          lifetime=lifetime, claims=extra)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": lifetime}


def _handler_for(issuer: DevIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # tests and `dev` must stay quiet; the gateway logs what matters

        def _send(self, status: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path == "/jwks":
                issuer.jwks_requests += 1
            if not issuer.available:
                self._send(503, {"error": "temporarily_unavailable"})
            elif self.path == "/.well-known/openid-configuration":
                self._send(200, issuer.discovery())
            elif self.path == "/jwks":
                self._send(200, issuer.jwks())
            else:
                self._send(404, {"error": "not_found"})

        def do_POST(self) -> None:
            if not issuer.available:
                self._send(503, {"error": "temporarily_unavailable"})
                return
            if self.path != "/token":
                self._send(404, {"error": "not_found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                self._send(413, {"error": "invalid_request"})
                return
            form = {k: v[0] for k, v in
                    parse_qs(self.rfile.read(length).decode(errors="replace")).items()}
            status, body = issuer.issue_for_client(form, _basic_auth(self.headers))
            self._send(status, body)

    return Handler


def _basic_auth(headers: Any) -> tuple[str, str] | None:
    value = headers.get("Authorization", "")
    if not value.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
    except ValueError:
        return None
    return unquote_plus(user), unquote_plus(password)
