"""Encode, sign, decode and verify NATS JWTs (header ``{"typ":"JWT","alg":"ed25519-nkey"}``).

The format is nats-io/jwt v2: three base64url (unpadded) segments; the signature is
the issuer's ed25519 signature over ``header.payload``; the issuer is the ``iss``
claim, a public nkey whose type the caller names. Decoding verifies the signature
before anything in the payload is trusted. ``jti`` is base32 (unpadded) of SHA-512/256
over the standard claims without ``jti``, as nats-io/jwt computes it (the server does
not check it). No I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes

from gateway.natsjwt.nkeys import InvalidNkey, Prefix, SigningKeyPair, decode_public
from gateway.natsjwt.nkeys import verify_signature as _verify

__all__ = [
    "ALGORITHM",
    "JwtError",
    "UnverifiedJwt",
    "VerifiedJwt",
    "decode_unverified",
    "decode_verified",
    "encode_signed",
    "jwt_id",
]

ALGORITHM = "ed25519-nkey"
_HEADER = {"typ": "JWT", "alg": ALGORITHM}
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")
# Field order of nats-io/jwt's ClaimsData, which fixes the bytes that jti hashes.
_STANDARD_CLAIMS = ("aud", "exp", "iat", "iss", "name", "nbf", "sub")


class JwtError(ValueError):
    """A NATS JWT is malformed, uses another algorithm, or its signature does not verify."""


@dataclass(frozen=True)
class UnverifiedJwt:
    """A JWT split and parsed, its signature not checked yet (see :func:`verify`): read
    it only for choices that can drop work, never grant anything."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


@dataclass(frozen=True)
class VerifiedJwt:
    """A JWT whose signature verified against the public key in its ``iss`` claim."""

    header: dict[str, Any]
    claims: dict[str, Any]
    issuer: str


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64decode(segment: str, what: str) -> bytes:
    if not _SEGMENT.match(segment):
        raise JwtError(f"{what} is not base64url text")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JwtError(f"{what} is not base64url text") from exc


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise JwtError(f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise JwtError(f"{what} is not a JSON object")
    return value


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def jwt_id(claims: dict[str, Any]) -> str:
    digest = hashes.Hash(hashes.SHA512_256())
    digest.update(_compact({k: claims[k] for k in _STANDARD_CLAIMS if claims.get(k)}))
    return base64.b32encode(digest.finalize()).decode("ascii").rstrip("=")


def encode_signed(claims: dict[str, Any], signer: SigningKeyPair, *, issued_at: int) -> str:
    """Sign ``claims`` with ``signer``; sets ``iss``, ``iat`` and ``jti``."""
    body = dict(claims)
    body["iss"] = signer.public_key
    body["iat"] = issued_at
    body.pop("jti", None)
    body["jti"] = jwt_id(body)
    signing_input = f"{_b64encode(_compact(_HEADER))}.{_b64encode(_compact(body))}"
    signature = signer.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64encode(signature)}"


def decode_unverified(token: str, *, max_length: int) -> UnverifiedJwt:
    """Split and parse ``token``; JwtError when it is oversize or not three base64url
    segments with JSON objects for header and payload. Nothing is verified yet."""
    if len(token) > max_length:
        raise JwtError(f"jwt is {len(token)} bytes, over the {max_length} byte limit")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("jwt does not have three segments")
    header = _json_object(_b64decode(parts[0], "jwt header"), "jwt header")
    claims = _json_object(_b64decode(parts[1], "jwt payload"), "jwt payload")
    signature = _b64decode(parts[2], "jwt signature")
    return UnverifiedJwt(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def verify(jwt: UnverifiedJwt, issuer_type: Prefix) -> VerifiedJwt:
    """Check that ``jwt`` was signed by its ``iss``, a public key of ``issuer_type``.

    Raises JwtError for anything else: another ``alg`` (``none`` included), an issuer of
    another key type, or a signature that does not verify.
    """
    header, claims = jwt.header, jwt.claims
    if header.get("alg") != ALGORITHM or str(header.get("typ", "")).upper() != "JWT":
        raise JwtError(f"jwt header must be typ `JWT` and alg `{ALGORITHM}`")
    issuer = claims.get("iss")
    if not isinstance(issuer, str):
        raise JwtError("jwt has no issuer")
    try:
        decode_public(issuer, issuer_type)
    except InvalidNkey as exc:
        raise JwtError(f"jwt issuer is not a {issuer_type.name.lower()} key") from exc
    if not _verify(issuer, issuer_type, jwt.signing_input, jwt.signature):
        raise JwtError("jwt signature does not verify")
    return VerifiedJwt(header=header, claims=claims, issuer=issuer)


def decode_verified(token: str, issuer_type: Prefix, *, max_length: int) -> VerifiedJwt:
    """Parse ``token`` and verify it was signed by its ``iss``, a public key of
    ``issuer_type`` (:func:`decode_unverified`, then :func:`verify`)."""
    return verify(decode_unverified(token, max_length=max_length), issuer_type)
