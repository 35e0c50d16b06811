"""Who is calling the audit API, and with which role.

Two kinds of bearer token: API tokens, stored only as SHA-256 digests and compared in
constant time, each configured as ``admin`` or ``auditor``; and OIDC tokens from one
configured issuer, verified like worker tokens, whose role comes from a claim (a JSON
pointer, e.g. ``/groups``) holding one of the configured values. ``admin`` includes
``auditor``. No credentials or a bad one: 401. A valid one without the role: 403.
Tokens are never echoed or logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config import ApiOidcSettings
from gateway.errors import GatewayError
from gateway.identity.oidc import OidcVerifier
from gateway.policy.match import MISSING, resolve_pointer

__all__ = ["ROLES", "ApiAuthenticator", "Caller", "token_digest"]

ROLES = ("auditor", "admin")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    name: str
    role: str
    # When the credential stops being valid (an OIDC token's `exp`); None: no end. The
    # console ends a session then at the latest.
    expires: float | None = None

    def has(self, role: str) -> bool:
        return self.role in ROLES and ROLES.index(self.role) >= ROLES.index(role)


class NotAuthenticated(Exception):
    pass


class ApiAuthenticator:
    def __init__(self, *, admin_digests: Sequence[str], auditor_digests: Sequence[str],
                 oidc: ApiOidcSettings | None = None,
                 verifier: OidcVerifier | None = None) -> None:
        self._digests = [(d, "admin") for d in admin_digests] + [
            (d, "auditor") for d in auditor_digests]
        self._oidc = oidc
        self._verifier = verifier

    async def authenticate(self, token: str) -> Caller:
        digest = token_digest(token)
        role = None
        for candidate, candidate_role in self._digests:  # no early exit: constant work
            if hmac.compare_digest(digest, candidate) and role is None:
                role = candidate_role
        if role is not None:
            return Caller(f"api-token:{digest[:12]}", role)
        if self._oidc is None or self._verifier is None or token.count(".") != 2:
            raise NotAuthenticated("invalid token")
        try:
            identity = await self._verifier.verify(token)
        except GatewayError as exc:
            raise NotAuthenticated(exc.code) from None
        return Caller(identity.principal, self._role_from(identity.claims),
                      expires=float(identity.expires))

    def _role_from(self, claims: object) -> str:
        assert self._oidc is not None
        value = resolve_pointer(claims, self._oidc.roles_claim)  # type: ignore[arg-type]
        values = [] if value is MISSING else value if isinstance(value, list) else [value]
        names = {v for v in values if isinstance(v, str)}
        if names & set(self._oidc.admin_values):
            return "admin"
        if names & set(self._oidc.auditor_values):
            return "auditor"
        return "none"
