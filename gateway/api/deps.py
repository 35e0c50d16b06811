"""Shared API dependencies: the store and bearer-token authentication.

Admin tokens are kept only as SHA-256 digests and compared in constant time; a missing
or wrong token is a 401 that says which, never echoing the token.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.audit.store import AuditStore
from gateway.policy.reload import PolicyHolder

__all__ = ["Authenticated", "Policies", "Store", "token_digest"]

_bearer = HTTPBearer(auto_error=False)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def get_store(request: Request) -> AuditStore:
    store: AuditStore = request.app.state.store
    return store


def get_policies(request: Request) -> PolicyHolder:
    holder: PolicyHolder = request.app.state.policies
    return holder


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "bearer token required",
                            headers=challenge)
    digest = token_digest(credentials.credentials)
    known: tuple[str, ...] = request.app.state.admin_token_sha256
    if not any(hmac.compare_digest(digest, candidate) for candidate in known):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token", headers=challenge)
    return "admin"


Store = Annotated[AuditStore, Depends(get_store)]
Policies = Annotated[PolicyHolder, Depends(get_policies)]
Authenticated = Annotated[str, Depends(require_token)]
