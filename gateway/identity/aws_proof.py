"""The AWS IAM proof: a SigV4-signed ``sts:GetCallerIdentity`` request, checked before use.

The worker signs (never sends) ``POST / Action=GetCallerIdentity&Version=2011-06-15`` for
the gateway's configured STS endpoint, with an ``X-Nats-Gateway-Id`` header inside
``SignedHeaders``, and puts the headers and body in the envelope (docs/envelope.md):

    {"headers": {"Authorization": "...", "X-Amz-Date": "...", ...}, "body": "Action=..."}

The gateway keeps only allowlisted headers, refuses anything else (unknown ``X-Amz-*``
headers, query strings, other actions, duplicate parameters or headers, a date outside
the signing window, a gateway id that is not ours) and rebuilds the request itself for
its own endpoint: the client never chooses where the gateway sends it. The lessons of
Vault CVE-2020-16250/16251 (unchecked server id header, attacker-chosen host) and
aws-iam-authenticator CVE-2022-2385 (duplicate parameters) are why.

The proof is attacker text checked on the event loop, so its size, key count and nesting
are bounded before the JSON parser runs, and every step after is linear in its length
(issue 18: ~1,600 distinct keys once held the loop for 70-330 ms). Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.errors import CredentialError
from gateway.untrusted import safe_text

__all__ = ["GATEWAY_ID_HEADER", "MAX_CLOCK_SKEW_SECONDS", "NONCE_HEADER", "STS_BODY",
           "CheckedProof", "check_proof", "regional_sts_endpoint"]

GATEWAY_ID_HEADER = "x-nats-gateway-id"
# SigV4 is deterministic: two proofs signed in the same second would be identical, and the
# second refused as a replay. The client adds a random, signed nonce to every proof.
NONCE_HEADER = "x-nats-gateway-nonce"
STS_BODY = "Action=GetCallerIdentity&Version=2011-06-15"


def regional_sts_endpoint(region: str) -> str:
    """The STS endpoint both sides use unless configured otherwise: the client presigns
    for it, the gateway replays there (a signature for another host is refused by STS)."""
    return f"https://sts.{region}.amazonaws.com"

SIGNING_WINDOW_SECONDS = 15 * 60
# How far in the future X-Amz-Date may be: clock skew, not a second signing window. A
# later date would keep a proof alive (and in the replay cache) past the 15 minutes.
MAX_CLOCK_SKEW_SECONDS = 60
_FORWARDED = ("authorization", "x-amz-date", "x-amz-security-token", GATEWAY_ID_HEADER,
              NONCE_HEADER, "content-type")
_NONCE = re.compile(r"[0-9a-f]{16,64}")
_ALLOWED = frozenset({*_FORWARDED, "host", "content-length", "user-agent"})
_REQUIRED_SIGNED = frozenset({"host", "x-amz-date", GATEWAY_ID_HEADER})
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]{16,128})/(?P<date>[0-9]{8})/"
    r"(?P<region>[a-z0-9-]{1,32})/(?P<service>[a-z0-9-]+)/aws4_request, ?"
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), ?Signature=(?P<signature>[0-9a-f]{64})")
_CONTENT_TYPE = re.compile(r"application/x-www-form-urlencoded(; ?charset=utf-8)?", re.I)
_MAX_HEADER = 4096
# Bounds on the raw text, checked before parsing (issue 18). A real proof is one object
# of `headers` and `body`, `headers` holding only allowlisted names: about 1 KiB plus the
# session token (itself at most _MAX_HEADER), 2 objects, at most 2 + len(_ALLOWED) keys.
_MAX_PROOF_CHARS = 8 * 1024
_MAX_KEYS = 2 + len(_ALLOWED)
# Every object member is followed by a `:` and every container opens with `{` or `[`, so
# str.count (C speed, linear, no backtracking) bounds keys and nesting without parsing.
# Those characters inside strings only add to the count: a real proof's values hold a few
# `:` (a host's port) and no brackets, hence the slack.
_MAX_COLONS = 4 * _MAX_KEYS
_MAX_CONTAINERS = 2


@dataclass(frozen=True, repr=False)
class CheckedProof:
    """Headers to forward (lowercase names) and facts checked from them."""

    headers: dict[str, str]
    signed_at: datetime
    region: str
    signature: str

    def __repr__(self) -> str:  # never show the signature or the session token
        return f"CheckedProof(region={self.region!r}, signed_at={self.signed_at.isoformat()})"


def _refuse(message: str) -> CredentialError:
    return CredentialError(f"aws proof: {message}", code="bad_aws_proof")


def _shown(name: str) -> str:
    """Attacker text fit for a one-line message: short, escaped (gateway/untrusted.py)."""
    return safe_text(name, 40)


def _oversized(message: str) -> CredentialError:
    return CredentialError(f"aws proof: {message}", code="oversized_aws_proof")


def _check_bounds(proof: str) -> None:
    """Refuse a proof too long, with too many keys or nested too deep, before parsing."""
    if len(proof) > _MAX_PROOF_CHARS:
        raise _oversized(f"longer than {_MAX_PROOF_CHARS} characters")
    if proof.count(":") > _MAX_COLONS:
        raise _oversized(f"more than {_MAX_COLONS} `:` (too many keys)")
    if proof.count("{") + proof.count("[") > _MAX_CONTAINERS:
        raise _oversized(f"more than {_MAX_CONTAINERS} objects or arrays (nested too deep)")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > _MAX_KEYS:
        raise _oversized(f"an object has more than {_MAX_KEYS} keys")
    seen: dict[str, Any] = {}
    lowered: set[str] = set()  # one set for the object: the duplicate test stays O(1)
    for key, value in pairs:
        folded = key.lower()
        if folded in lowered:
            raise _refuse(f"duplicate field `{_shown(key)}`")
        lowered.add(folded)
        seen[key] = value
    return seen


# One decoder for every proof: json.loads with a hook builds a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_pairs)


def _load(proof: str) -> tuple[dict[str, str], str]:
    _check_bounds(proof)
    try:
        obj = _DECODER.decode(proof)
    except CredentialError:
        raise
    except (ValueError, RecursionError):
        raise _refuse("not a JSON object") from None
    # Only a `\u` escape can decode to a lone surrogate (the text itself is valid): skip
    # the re-encoding for the usual proof that has none.
    if "\\u" in proof:
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _refuse("holds an invalid unicode escape") from None
    if not isinstance(obj, dict) or set(obj) != {"headers", "body"}:
        raise _refuse("must be an object with exactly `headers` and `body`")
    headers, body = obj["headers"], obj["body"]
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise _refuse("`headers` must map names to strings")
    if not isinstance(body, str):
        raise _refuse("`body` must be a string")
    return {k.lower(): v for k, v in headers.items()}, body


def _check_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        if name not in _ALLOWED:
            kind = "amz header" if name.startswith("x-amz-") else "header"
            raise _refuse(f"{kind} `{_shown(name)}` is not allowed")
        if len(value) > _MAX_HEADER or any(c in value for c in "\r\n\0"):
            raise _refuse(f"header `{name}` is malformed")
    for name in ("authorization", "x-amz-date", GATEWAY_ID_HEADER):
        if name not in headers:
            raise _refuse(f"header `{name}` is missing")
    if not _CONTENT_TYPE.fullmatch(headers.get("content-type", "")):
        raise _refuse("content-type must be application/x-www-form-urlencoded")
    if NONCE_HEADER in headers and not _NONCE.fullmatch(headers[NONCE_HEADER]):
        raise _refuse(f"{NONCE_HEADER} must be 16-64 lowercase hex digits")


def _signed_at(value: str, now: datetime, max_skew: int) -> datetime:
    try:
        signed = datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise _refuse("x-amz-date is not YYYYMMDDTHHMMSSZ") from None
    age = (now - signed).total_seconds()
    if age > SIGNING_WINDOW_SECONDS:
        raise CredentialError("aws proof was signed outside the 15-minute window",
                              code="stale_aws_proof")
    if -age > max_skew:
        raise CredentialError(f"aws proof is dated more than {max_skew} s in the future "
                              "(x-amz-date)", code="future_aws_proof")
    return signed


def check_proof(proof: str, *, gateway_id: str, host: str, now: datetime,
                max_clock_skew_seconds: int = MAX_CLOCK_SKEW_SECONDS) -> CheckedProof:
    """Validate the proof's shape and binding; CredentialError says what is wrong."""
    headers, body = _load(proof)
    if body != STS_BODY:
        raise _refuse(f"body must be exactly `{STS_BODY}`")
    _check_headers(headers)
    if "host" in headers and headers["host"].lower() != host.lower():
        raise _refuse("signed for another host than this gateway's sts endpoint")
    if headers[GATEWAY_ID_HEADER] != gateway_id:
        raise CredentialError("aws proof is for another gateway (x-nats-gateway-id)",
                              code="wrong_gateway_id")
    match = _AUTHORIZATION.fullmatch(headers["authorization"])
    if match is None:
        raise _refuse("authorization is not an AWS4-HMAC-SHA256 signature")
    if match["service"] != "sts":
        raise _refuse("signature is not for sts")
    signed_headers = set(match["signed"].split(";"))
    required = _REQUIRED_SIGNED | ({NONCE_HEADER} if NONCE_HEADER in headers else set())
    missing = sorted(required - signed_headers)
    if missing:
        raise _refuse(f"{', '.join(missing)} must be in SignedHeaders")
    signed_at = _signed_at(headers["x-amz-date"], now, max_clock_skew_seconds)
    if match["date"] != headers["x-amz-date"][:8]:
        raise _refuse("credential date does not match x-amz-date")
    forwarded = {name: headers[name] for name in _FORWARDED if name in headers}
    return CheckedProof(forwarded, signed_at, match["region"], match["signature"])
