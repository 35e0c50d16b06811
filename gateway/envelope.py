"""The credential envelope: what a worker sends as the CONNECT ``auth_token``.

One versioned JSON object (docs/envelope.md)::

    {"v": 1, "method": "oidc", "token": "<jwt>",
     "scope": {"dag_id": "etl", "task_id": "load", "run_id": "manual__2026-11-24"}}

Both sides use this module: the gateway parses with :func:`parse_envelope`, the client
builds with :func:`build_envelope`. Parsing is strict: unknown fields, wrong types,
oversized input and ids outside Airflow's character set are refused, so nothing a worker
sends can reach the policy engine or a subject template in an unexpected shape.
The requested scope is a *request*, never proof (DESIGN.md section 3). No I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.errors import CredentialError

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_ENVELOPE_BYTES",
    "METHODS",
    "CredentialEnvelope",
    "Scope",
    "build_envelope",
    "parse_envelope",
    "parse_scope",
]

ENVELOPE_VERSION = 1
# Bounded well below nats-server's max_control_line as generated (32 KiB): a 4 KB OIDC
# token plus scope fits many times over, a pathological claim set does not.
MAX_ENVELOPE_BYTES = 16 * 1024
MAX_PROOF_BYTES = 12 * 1024
METHODS = frozenset({"oidc", "aws_iam"})
# Airflow's own KEY_REGEX for dag_id/task_id: letters, digits, `_`, `-`, `.`; 250 chars.
_AIRFLOW_ID = re.compile(r"[A-Za-z0-9_.\-]{1,250}")
# run_id is freer in Airflow (it may hold `:` and `+` of timestamps) but never spaces,
# control characters or NATS wildcards.
_RUN_ID = re.compile(r"[A-Za-z0-9_.\-:+~]{1,250}")
_TOP_LEVEL = frozenset({"v", "method", "token", "scope"})
_SCOPE_FIELDS = frozenset({"dag_id", "task_id", "run_id"})


@dataclass(frozen=True)
class Scope:
    """The DAG/task/run a connection asks to act for."""

    dag_id: str
    task_id: str
    run_id: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"dag_id": self.dag_id, "task_id": self.task_id}
        if self.run_id is not None:
            out["run_id"] = self.run_id
        return out


@dataclass(frozen=True, repr=False)
class CredentialEnvelope:
    method: str
    proof: str
    scope: Scope

    def __repr__(self) -> str:
        return f"CredentialEnvelope(method={self.method!r}, scope={self.scope!r}, proof=<hidden>)"


def _checked_id(value: object, field: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str):
        raise CredentialError(f"scope `{field}` must be a string", code="bad_scope")
    if not pattern.fullmatch(value):
        raise CredentialError(
            f"scope `{field}` must be 1-250 characters of letters, digits, `_`, `-` or `.`",
            code="bad_scope",
        )
    return value


def parse_scope(raw: object) -> Scope:
    """A Scope from its JSON object form, checked as in the envelope; CredentialError."""
    if not isinstance(raw, dict):
        raise CredentialError("envelope `scope` must be an object", code="bad_scope")
    unknown = sorted(set(raw) - _SCOPE_FIELDS)
    if unknown:
        raise CredentialError(f"envelope scope has unknown field `{unknown[0]}`", code="bad_scope")
    run_id = raw.get("run_id")
    return Scope(
        dag_id=_checked_id(raw.get("dag_id"), "dag_id", _AIRFLOW_ID),
        task_id=_checked_id(raw.get("task_id"), "task_id", _AIRFLOW_ID),
        run_id=None if run_id is None else _checked_id(run_id, "run_id", _RUN_ID),
    )


def _load_object(text: str) -> dict[str, Any]:
    if not text:
        raise CredentialError("no credential: connect with the envelope as auth_token",
                              code="missing_credential")
    if len(text) > MAX_ENVELOPE_BYTES:  # characters first: cheap, before any encoding
        raise CredentialError(f"envelope exceeds {MAX_ENVELOPE_BYTES} bytes",
                              code="oversized_credential")
    size = len(_utf8(text, "envelope"))
    if size > MAX_ENVELOPE_BYTES:
        raise CredentialError(f"envelope exceeds {MAX_ENVELOPE_BYTES} bytes",
                              code="oversized_credential")
    try:
        obj = _DECODER.decode(text)
    except CredentialError:
        raise
    except (ValueError, RecursionError) as exc:
        raise CredentialError("envelope is not valid json") from exc
    if not isinstance(obj, dict):
        raise CredentialError("envelope must be a json object")
    # A `\ud800` escape decodes to a lone surrogate, which no later step could encode.
    # Only a `\u` escape can make one (the text itself encoded above), so the re-encode
    # is skipped for the usual envelope that has none.
    if "\\u" in text:
        _utf8(json.dumps(obj, ensure_ascii=False), "envelope content")
    return obj


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two `token` or `dag_id` fields would mean whatever a parser picks: refuse instead.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise CredentialError(f"envelope repeats field `{key[:40]}`")
        obj[key] = value
    return obj


# One decoder for every request: json.loads with a hook builds a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CredentialError(f"{what} is not valid unicode (lone surrogate)") from None


def parse_envelope(text: str) -> CredentialEnvelope:
    """Parse and validate an envelope, raising CredentialError with a readable reason."""
    obj = _load_object(text)
    unknown = sorted(set(obj) - _TOP_LEVEL)
    if unknown:
        raise CredentialError(f"envelope has unknown field `{unknown[0]}`")
    if obj.get("v") != ENVELOPE_VERSION or isinstance(obj.get("v"), bool):
        raise CredentialError(f"envelope version must be {ENVELOPE_VERSION}",
                              code="unsupported_version")
    method = obj.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise CredentialError("envelope method must be one of `oidc`, `aws_iam`",
                              code="unsupported_method")
    proof = obj.get("token")
    if not isinstance(proof, str) or not proof:
        raise CredentialError("envelope `token` must be a non-empty string")
    if len(proof) > MAX_PROOF_BYTES:
        raise CredentialError(f"envelope token exceeds {MAX_PROOF_BYTES} bytes",
                              code="oversized_credential")
    return CredentialEnvelope(method=method, proof=proof, scope=parse_scope(obj.get("scope")))


def build_envelope(method: str, proof: str, scope: Scope) -> str:
    """The client side: serialise compactly, validating with the same rules as the gateway."""
    text = json.dumps(
        {"v": ENVELOPE_VERSION, "method": method, "token": proof, "scope": scope.as_dict()},
        separators=(",", ":"),
    )
    parse_envelope(text)
    return text
