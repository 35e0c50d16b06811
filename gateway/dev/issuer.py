"""A real, minimal OpenID Connect issuer on loopback, for `nats-gateway dev` and the tests.

It serves a discovery document, a JWKS and an OAuth2 client-credentials token endpoint
over HTTP, with keys it generates at start. Tests mint tokens through :meth:`DevIssuer.mint`
(including broken ones: expired, other audience, foreign key, ``alg: none``) and the
gateway verifies them over real HTTP, exactly as against a production IdP; nothing in the
verifier is patched. Loopback and development only: keys live in memory and the client
secret is random per process unless one is given.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = ["DevIssuer"]

_log = logging.getLogger(__name__)

_ALGORITHMS = ("RS256", "ES256")
_MAX_BODY = 8 * 1024
_TOKEN_LIFETIME = 600
_DEFAULT_AUDIENCE = "nats-gateway"
_EXTRA_CLAIMS = ("dag_id", "task_id")
_DISCOVERY_PATH = "/.well-known/openid-configuration"
_JWKS_PATH = "/jwks"
_TOKEN_PATH = "/token"  # noqa: S105 - a URL path, not a secret

_PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_Response = tuple[int, dict[str, Any]]


def _checked_algorithm(algorithm: str) -> str:
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(_ALGORITHMS)}, not {algorithm!r}")
    return algorithm


def _new_key(algorithm: str) -> _PrivateKey:
    if _checked_algorithm(algorithm) == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _json_segment(value: Mapping[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _constant_time_equal(given: str, expected: str) -> bool:
    # Constant time, on bytes: compare_digest refuses non-ASCII str.
    return hmac.compare_digest(given.encode(), expected.encode())


class DevIssuer:
    """An OIDC issuer with in-memory keys, served by a stdlib HTTP server in a daemon thread.

    ``available`` set to False makes every endpoint answer 503 (the IdP is down);
    ``jwks_requests`` counts JWKS GETs served, whatever their status.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        algorithm: str = "RS256",
        client_id: str = "airflow-worker",
        client_secret: str | None = None,
        public_url: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._tls = tls  # a server context: serve https (the issuer URL names `localhost`)
        self._public_url = public_url.rstrip("/") if public_url else None
        self.algorithm = _checked_algorithm(algorithm)
        self.client_id = client_id
        self._client_secret = (
            secrets.token_urlsafe(32) if client_secret is None else client_secret
        )
        # Handler threads read the keys and bump the counter while tests rotate keys.
        self._lock = threading.Lock()
        self._keys: dict[str, _PrivateKey] = {}
        self._current_kid = ""
        self.available = True
        self.jwks_requests = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url = ""
        self.rotate_key()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> DevIssuer:
        """Bind (port 0 picks a free port) and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("the dev issuer is already running")
        server = _Server((self._host, self._port), _handler_for(self))
        port = server.server_address[1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "http"
        if self._tls is not None:
            # The handshake runs at the handler thread's first read, not in accept().
            server.socket = self._tls.wrap_socket(server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
            scheme, host = "https", "localhost"
        self._url = self._public_url or f"{scheme}://{host}:{port}"
        # stop() waits up to one poll interval; the default 0.5 s adds up over a test suite.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name="dev-oidc-issuer",
        )
        self._server = server
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; the issuer URL stays valid for minting."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> DevIssuer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def issuer(self) -> str:
        """``http://<host>:<port>``, without a trailing slash."""
        if not self._url:
            raise RuntimeError("start() the dev issuer first: its URL holds the bound port")
        return self._url

    @property
    def jwks_uri(self) -> str:
        return self.issuer + _JWKS_PATH

    @property
    def client_secret(self) -> str:
        return self._client_secret

    # -- keys ------------------------------------------------------------------------

    def rotate_key(self) -> str:
        """Add a signing key and make it current; older keys stay in the JWKS."""
        key = _new_key(self.algorithm)
        kid = uuid.uuid4().hex[:16]
        with self._lock:
            self._keys[kid] = key
            self._current_kid = kid
        return kid

    def remove_key(self, kid: str) -> None:
        """Take a key out of the JWKS, as an IdP does after a compromise (the current
        key cannot be removed: rotate first)."""
        with self._lock:
            if kid == self._current_kid:
                raise ValueError("rotate before removing the current key")
            del self._keys[kid]

    def public_jwk(self) -> dict[str, Any]:
        """The current public key as a JWK (kty, kid, use, alg and the key parameters)."""
        with self._lock:
            kid = self._current_kid
            key = self._keys[kid]
        return self._jwk(kid, key)

    @staticmethod
    def foreign_private_key(algorithm: str = "RS256") -> Any:
        """A fresh private key that no JWKS of any issuer holds."""
        return _new_key(algorithm)

    def _jwk(self, kid: str, key: _PrivateKey) -> dict[str, Any]:
        public = key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk: dict[str, Any] = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": kid, "use": "sig", "alg": self.algorithm}

    def _jwks_document(self) -> dict[str, Any]:
        with self._lock:
            keys = list(self._keys.items())
        return {"keys": [self._jwk(kid, key) for kid, key in keys]}

    # -- tokens ----------------------------------------------------------------------

    def mint(
        self,
        *,
        subject: str,
        audience: str | list[str],
        lifetime: int = 300,
        claims: Mapping[str, Any] | None = None,
        now: int | None = None,
        issuer: str | None = None,
        headers: Mapping[str, Any] | None = None,
        key: Any = None,
        algorithm: str | None = None,
        kid: str | None = None,
    ) -> str:
        """A signed token, by default with the current key and its kid.

        ``claims`` add to or override the standard ones; a claim given as None is removed
        (a token without ``exp``, ...). ``key`` signs with a foreign private key, or a
        bytes secret with ``algorithm="HS256"`` (PyJWT warns below 32 bytes), while the
        header still names the current kid unless ``kid`` says otherwise. ``headers``
        are applied last, so they can replace ``kid`` or ``alg`` in the header.
        """
        issued = int(time.time()) if now is None else now
        payload: dict[str, Any] = {
            "iss": self.issuer if issuer is None else issuer,
            "sub": subject,
            "aud": audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
            "jti": uuid.uuid4().hex,
        }
        for name, value in (claims or {}).items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        with self._lock:
            current_kid = self._current_kid
            current_key = self._keys[current_kid]
        header = {"kid": current_kid if kid is None else kid, **(headers or {})}
        return jwt.encode(
            payload,
            current_key if key is None else key,
            algorithm=algorithm or self.algorithm,
            headers=header,
        )

    def mint_unsigned(self, *, subject: str, audience: str, lifetime: int = 300) -> str:
        """An ``alg: none`` token with an empty signature, built by hand.

        PyJWT's own "none" support is not used so the token is exactly what an attacker
        would send, whatever the library version.
        """
        now = int(time.time())
        with self._lock:
            kid = self._current_kid
        header = {"alg": "none", "typ": "JWT", "kid": kid}
        payload = {
            "iss": self.issuer, "sub": subject, "aud": audience,
            "iat": now, "nbf": now, "exp": now + lifetime, "jti": uuid.uuid4().hex,
        }
        return f"{_json_segment(header)}.{_json_segment(payload)}."

    # -- endpoints -------------------------------------------------------------------

    def _discovery_document(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "token_endpoint": self.issuer + _TOKEN_PATH,
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.algorithm],
            "grant_types_supported": ["client_credentials"],
        }

    def _token_response(
        self, form: Mapping[str, str], basic: tuple[str, str] | None
    ) -> _Response:
        """RFC 6749 section 4.4: a client-credentials grant, client secret in Basic or form."""
        # Every candidate compared in full, so the answer time does not tell what was wrong.
        matches = [self._is_client(client_id, secret)
                   for client_id, secret in _client_credentials(form, basic)]
        if not any(matches):
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        token = self.mint(
            subject=form.get("subject", self.client_id),
            audience=form.get("audience", _DEFAULT_AUDIENCE),
            lifetime=_TOKEN_LIFETIME,
            claims={name: form[name] for name in _EXTRA_CLAIMS if name in form},
        )
        return 200, {"access_token": token, "token_type": "Bearer",
                     "expires_in": _TOKEN_LIFETIME}

    def _is_client(self, client_id: str, secret: str) -> bool:
        id_ok = _constant_time_equal(client_id, self.client_id)
        secret_ok = _constant_time_equal(secret, self._client_secret)
        return id_ok and secret_ok

    def _count_jwks_request(self) -> None:
        with self._lock:
            self.jwks_requests += 1


class _Server(ThreadingHTTPServer):
    """The stdlib server, IPv6-aware, and quiet about clients that hang up mid-answer."""

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]
    ) -> None:
        # The family must be chosen before the base class creates the socket.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr, which would litter `dev` and test output.
        _log.debug("dev issuer: error serving %s", client_address, exc_info=True)


def _parse_form(body: bytes) -> dict[str, str] | None:
    """The urlencoded form, or None when a parameter repeats (RFC 6749 section 3.2)."""
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    if any(len(values) > 1 for values in fields.values()):
        return None
    return {name: values[0] for name, values in fields.items()}


def _basic_auth(headers: Message) -> tuple[str, str] | None:
    """Client id and secret from an ``Authorization: Basic`` header, if there is one."""
    value = headers.get("Authorization", "")
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return user, password


def _client_credentials(
    form: Mapping[str, str], basic: tuple[str, str] | None
) -> list[tuple[str, str]]:
    """The (client id, secret) readings to try: from Basic if present, else the form."""
    if basic is None:
        return [(form.get("client_id", ""), form.get("client_secret", ""))]
    user, password = basic
    # RFC 6749 section 2.3.1 form-encodes both before base64; Authlib, our own client,
    # does not. Trying both keeps a secret with `+` or `%` usable by either kind.
    return [(user, password), (unquote_plus(user), unquote_plus(password))]


def _handler_for(issuer: DevIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0 closes every connection after its answer: no keep-alive thread can go
        # on serving once stop() has closed the listening socket.
        protocol_version = "HTTP/1.0"
        # A client that declares more body than it sends must not pin a thread forever.
        timeout = 10

        def log_message(self, format: str, *args: Any) -> None:
            pass  # tests and `dev` stay quiet; the gateway logs what matters

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == _JWKS_PATH:
                issuer._count_jwks_request()
            if not issuer.available:
                self._send(503, {"error": "temporarily_unavailable"})
            elif path == _DISCOVERY_PATH:
                self._send(200, issuer._discovery_document())
            elif path == _JWKS_PATH:
                self._send(200, issuer._jwks_document())
            else:
                self._send(404, {"error": "not_found"})

        def do_POST(self) -> None:
            if not issuer.available:
                self._send(503, {"error": "temporarily_unavailable"})
            elif urlsplit(self.path).path != _TOKEN_PATH:
                self._send(404, {"error": "not_found"})
            else:
                self._send(*self._token())

        def _token(self) -> _Response:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return 400, {"error": "invalid_request"}
            if length < 0:
                return 400, {"error": "invalid_request"}
            if length > _MAX_BODY:
                return 413, {"error": "invalid_request"}
            form = _parse_form(self.rfile.read(length))
            if form is None:
                return 400, {"error": "invalid_request"}
            return issuer._token_response(form, _basic_auth(self.headers))

        def _send(self, status: int, body: Mapping[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            # Token answers must not be cached (RFC 6749 section 5.1); the rest is cheap.
            self.send_header("Cache-Control", "no-store")
            if status == 401 and "Authorization" in self.headers:
                self.send_header("WWW-Authenticate", 'Basic realm="dev-oidc-issuer"')
            self.end_headers()
            self.wfile.write(raw)

    return Handler
