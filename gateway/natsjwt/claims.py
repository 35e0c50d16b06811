"""Typed NATS auth callout claims: the authorization request, the user JWT, the response.

The shapes follow nats-server's ``auth_callout.go`` and nats-io/jwt v2, which win over
ADR-26's examples:

- request: ``iss`` = server public key (``N...``) and equal to ``nats.server_id.id``;
  ``aud`` = ``nats-authorization-request``; ``sub`` = the configured issuer account
  (config mode); ``exp`` = now + the server's auth timeout; ``nats.user_nkey`` is a
  fresh user key per connection attempt and is what binds the response.
- user JWT: ``sub`` = user nkey, ``iss`` = issuer account, ``aud`` = target account
  (config mode), ``nats.resp.ttl`` in nanoseconds, limits ``-1`` for unlimited.
- response: ``sub`` = user nkey, ``aud`` = server id, exactly one of ``nats.jwt`` and
  ``nats.error``.
No I/O; time is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import RequestError
from gateway.natsjwt.codec import (
    JwtError,
    UnverifiedJwt,
    decode_unverified,
    encode_signed,
    verify,
)
from gateway.natsjwt.nkeys import Prefix, SigningKeyPair, is_valid_public
from gateway.untrusted import safe_text

__all__ = [
    "REQUEST_AUDIENCE",
    "AuthorizationRequest",
    "ClientInfo",
    "ConnectOptions",
    "Permissions",
    "ServerId",
    "UserGrant",
    "encode_error_response",
    "encode_grant_response",
    "encode_user_jwt",
    "parse_authorization_request",
    "verify_authorization_request",
]

REQUEST_AUDIENCE = "nats-authorization-request"
REQUEST_TYPE = "authorization_request"
RESPONSE_TYPE = "authorization_response"
MAX_REQUEST_JWT = 256 * 1024
_NO_LIMIT = -1
# Bounds on the text a client chooses (CONNECT fields) and on the server's descriptive
# fields: each fits its audit column on SQLite and PostgreSQL (audit/schema.py).
MAX_CLIENT_NAME = 256
MAX_CLIENT_LANG = 32
MAX_CLIENT_VERSION = 32
MAX_CLIENT_USER = 128
MAX_HOST = 64
MAX_SERVER_TEXT = 256
MAX_KIND = 32


@dataclass(frozen=True)
class ServerId:
    id: str
    name: str = ""
    host: str = ""
    version: str = ""
    cluster: str = ""
    xkey: str = ""


@dataclass(frozen=True)
class ClientInfo:
    host: str = ""
    id: int = 0
    user: str = ""
    name: str = ""
    kind: str = ""
    type: str = ""


@dataclass(frozen=True, repr=False)
class ConnectOptions:
    """The client's CONNECT options. ``repr`` never shows the token or password."""

    auth_token: str = ""
    user: str = ""
    password: str = ""
    name: str = ""
    lang: str = ""
    version: str = ""
    protocol: int = 0

    def __repr__(self) -> str:
        return (
            f"ConnectOptions(name={self.name!r}, lang={self.lang!r}, version={self.version!r}, "
            f"auth_token=<{len(self.auth_token)} bytes>)"
        )


@dataclass(frozen=True)
class AuthorizationRequest:
    server: ServerId
    user_nkey: str
    client: ClientInfo
    connect: ConnectOptions
    expires: int
    tls: bool


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise RequestError(f"request field `{key}` is not a string")
    return value


def _text(obj: Mapping[str, Any], key: str, limit: int) -> str:
    """A descriptive string field, made safe at this edge: it reaches records and logs."""
    return safe_text(_str(obj, key), limit)


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"request field `{key}` is not an integer")
    return value


def _obj(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key, {})
    if not isinstance(value, dict):
        raise RequestError(f"request field `{key}` is not an object")
    return value


def parse_authorization_request(token: str) -> UnverifiedJwt:
    """A request JWT parsed but not verified; RequestError when it is not a JWT at all."""
    try:
        return decode_unverified(token, max_length=MAX_REQUEST_JWT)
    except JwtError as exc:
        raise RequestError(f"request jwt rejected: {exc}", code="bad_request_jwt") from exc


def verify_authorization_request(
    token: str | UnverifiedJwt, *, expected_subject: str, now: int, leeway: int = 2
) -> AuthorizationRequest:
    """Verify a request JWT from nats-server (as text, or already parsed by
    :func:`parse_authorization_request`) and return its typed content.

    Checks, each rejecting with RequestError: the signature by a server key (``N``);
    ``iss`` equals ``server_id.id``; ``aud`` and ``nats.type``; ``sub`` is the issuer we
    serve; ``exp`` present and not passed; ``user_nkey`` is a user public key.
    """
    parsed = parse_authorization_request(token) if isinstance(token, str) else token
    try:
        verified = verify(parsed, Prefix.SERVER)
    except JwtError as exc:
        raise RequestError(f"request jwt rejected: {exc}", code="bad_request_jwt") from exc
    claims = verified.claims
    nats = _obj(claims, "nats")
    server = _obj(nats, "server_id")
    if _str(server, "id") != verified.issuer:
        raise RequestError("request jwt issuer is not the server id", code="bad_request_jwt")
    if claims.get("aud") != REQUEST_AUDIENCE:
        raise RequestError("request jwt audience is wrong", code="bad_request_jwt")
    if nats.get("type") != REQUEST_TYPE:
        raise RequestError("request jwt is not an authorization request", code="bad_request_jwt")
    if claims.get("sub") != expected_subject:
        raise RequestError("request jwt is for another issuer", code="bad_request_jwt")
    expires = _int(claims, "exp")
    if expires <= 0 or now > expires + leeway:
        raise RequestError("request jwt is expired", code="expired_request")
    user_nkey = _str(nats, "user_nkey")
    if not is_valid_public(user_nkey, Prefix.USER):
        raise RequestError("request user_nkey is not a user public key", code="bad_request_jwt")
    client = _obj(nats, "client_info")
    connect = _obj(nats, "connect_opts")
    return AuthorizationRequest(
        server=ServerId(
            id=verified.issuer,
            name=_text(server, "name", MAX_SERVER_TEXT),
            host=_text(server, "host", MAX_HOST),
            version=_text(server, "version", MAX_KIND),
            cluster=_text(server, "cluster", MAX_SERVER_TEXT),
            xkey=_str(server, "xkey"),  # compared exactly, never stored
        ),
        user_nkey=user_nkey,
        client=ClientInfo(
            host=_text(client, "host", MAX_HOST),
            id=_int(client, "id"),
            user=_text(client, "user", MAX_CLIENT_USER),
            name=_text(client, "name", MAX_CLIENT_NAME),
            kind=_text(client, "kind", MAX_KIND),
            type=_text(client, "type", MAX_KIND),
        ),
        # The credential fields stay raw: they are parsed or fingerprinted, never stored.
        connect=ConnectOptions(
            auth_token=_str(connect, "auth_token"),
            user=_text(connect, "user", MAX_CLIENT_USER),
            password=_str(connect, "pass"),
            name=_text(connect, "name", MAX_CLIENT_NAME),
            lang=_text(connect, "lang", MAX_CLIENT_LANG),
            version=_text(connect, "version", MAX_CLIENT_VERSION),
            protocol=_int(connect, "protocol"),
        ),
        expires=expires,
        tls="client_tls" in nats,
    )


@dataclass(frozen=True)
class Permissions:
    """Publish/subscribe permissions of a user JWT. An empty allow list is *not* "nothing"
    to nats-server (it means "everything"), so the encoder turns it into ``deny: [">"]``."""

    pub_allow: tuple[str, ...] = ()
    pub_deny: tuple[str, ...] = ()
    sub_allow: tuple[str, ...] = ()
    sub_deny: tuple[str, ...] = ()
    resp_max: int | None = None
    resp_ttl_seconds: float | None = None
    max_subscriptions: int = _NO_LIMIT
    max_payload_bytes: int = _NO_LIMIT
    max_data_bytes: int = _NO_LIMIT
    connection_types: tuple[str, ...] = ()
    source_networks: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "pub": {"allow": list(self.pub_allow), "deny": list(self.pub_deny)},
            "sub": {"allow": list(self.sub_allow), "deny": list(self.sub_deny)},
            "resp": None
            if self.resp_max is None
            else {"max": self.resp_max, "ttl_seconds": self.resp_ttl_seconds},
            "limits": {"subs": self.max_subscriptions, "payload": self.max_payload_bytes,
                       "data": self.max_data_bytes},
            "connection_types": list(self.connection_types),
            "source_networks": list(self.source_networks),
        }


@dataclass(frozen=True)
class UserGrant:
    user_nkey: str
    account: str
    name: str
    permissions: Permissions
    expires: int
    # Operator mode, signed by one of the account's signing keys: the account itself.
    issuer_account: str | None = None


def _direction(allow: tuple[str, ...], deny: tuple[str, ...]) -> dict[str, list[str]]:
    if not allow:
        # Nothing allowed must be said as "deny everything": an absent allow list means all.
        return {"deny": [">"]}
    out: dict[str, list[str]] = {"allow": list(allow)}
    if deny:
        out["deny"] = list(deny)
    return out


def user_claims(grant: UserGrant) -> dict[str, Any]:
    perms = grant.permissions
    nats: dict[str, Any] = {
        "pub": _direction(perms.pub_allow, perms.pub_deny),
        "sub": _direction(perms.sub_allow, perms.sub_deny),
        "subs": perms.max_subscriptions,
        "data": perms.max_data_bytes,
        "payload": perms.max_payload_bytes,
        "type": "user",
        "version": 2,
    }
    if perms.connection_types:
        nats["allowed_connection_types"] = list(perms.connection_types)
    if perms.source_networks:
        nats["src"] = list(perms.source_networks)
    if grant.issuer_account:
        nats["issuer_account"] = grant.issuer_account
    if perms.resp_max is not None:
        ttl_ns = int((perms.resp_ttl_seconds or 0) * 1_000_000_000)
        nats["resp"] = {"max": perms.resp_max, "ttl": ttl_ns}
    return {
        "aud": grant.account,
        "exp": grant.expires,
        "name": grant.name,
        "sub": grant.user_nkey,
        "nats": nats,
    }


def encode_user_jwt(grant: UserGrant, signer: SigningKeyPair, *, now: int) -> str:
    if signer.prefix is not Prefix.ACCOUNT:
        raise ValueError("user jwts are signed by an account key")
    return encode_signed(user_claims(grant), signer, issued_at=now)


def _response(
    user_nkey: str, server_id: str, payload: dict[str, Any], signer: SigningKeyPair, now: int
) -> str:
    claims = {
        "aud": server_id,
        "sub": user_nkey,
        "nats": {**payload, "type": RESPONSE_TYPE, "version": 2},
    }
    return encode_signed(claims, signer, issued_at=now)


def encode_grant_response(
    *, user_nkey: str, server_id: str, user_jwt: str, signer: SigningKeyPair, now: int
) -> str:
    return _response(user_nkey, server_id, {"jwt": user_jwt}, signer, now)


def encode_error_response(
    *, user_nkey: str, server_id: str, error: str, signer: SigningKeyPair, now: int
) -> str:
    return _response(user_nkey, server_id, {"error": error}, signer, now)
