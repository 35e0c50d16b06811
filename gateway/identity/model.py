"""The one value every identity method produces, and the fingerprint of a proof."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.untrusted import safe_text

__all__ = ["MAX_PRINCIPAL", "Identity", "fingerprint"]

MAX_PRINCIPAL = 512


def fingerprint(proof: str) -> str:
    """A stable, non-reversible name for a secret proof: what logs and audit records keep."""
    # surrogatepass: a JSON-escaped lone surrogate is a valid string here and must hash,
    # not crash, so that it is refused as malformed like any other garbage.
    return "sha256:" + hashlib.sha256(proof.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Identity:
    """Who the worker proved to be.

    ``principal`` is the audit name (``issuer#subject`` for OIDC), bounded and escaped
    (the IdP signs ``sub``, but its text can come from a user: a repository or job name);
    ``claims`` are what policies may match on, raw; ``expires`` bounds every grant made
    for this identity.
    """

    method: str
    issuer: str
    subject: str
    expires: int
    fingerprint: str
    issuer_name: str = ""
    claims: Mapping[str, Any] = field(default_factory=dict)

    # Computed once per object: a cached token serves the same Identity on every connect.
    @functools.cached_property
    def principal(self) -> str:
        return safe_text(f"{self.issuer}#{self.subject}", MAX_PRINCIPAL)

    @functools.cached_property
    def match_key(self) -> Hashable:
        """Everything policy matching reads from this identity, hashable (the decision
        cache's key): method, issuer, its name, subject and the claims."""
        claims = json.dumps(self.claims, sort_keys=True, separators=(",", ":"), default=str)
        return (self.method, self.issuer, self.issuer_name, self.subject, claims)
