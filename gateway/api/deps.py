"""Shared API dependencies: the store, the policies, and the caller's role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.api.auth import ApiAuthenticator, Caller, NotAuthenticated
from gateway.audit.store import AuditStore
from gateway.policy.reload import PolicyHolder

__all__ = ["Admin", "Auditor", "Policies", "Store"]

_bearer = HTTPBearer(auto_error=False)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_store(request: Request) -> AuditStore:
    store: AuditStore = request.app.state.store
    return store


def get_policies(request: Request) -> PolicyHolder:
    holder: PolicyHolder = request.app.state.policies
    return holder


def _require(role: str) -> Callable[..., Awaitable[Caller]]:
    async def caller_with_role(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "bearer token required",
                                headers=_CHALLENGE)
        authenticator: ApiAuthenticator = request.app.state.authenticator
        try:
            caller = await authenticator.authenticate(credentials.credentials)
        except NotAuthenticated:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token",
                                headers=_CHALLENGE) from None
        if not caller.has(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"the `{role}` role is required")
        return caller

    return caller_with_role


Store = Annotated[AuditStore, Depends(get_store)]
Policies = Annotated[PolicyHolder, Depends(get_policies)]
Auditor = Annotated[Caller, Depends(_require("auditor"))]
Admin = Annotated[Caller, Depends(_require("admin"))]
