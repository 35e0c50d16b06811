"""The FastAPI application factory; no module-level app, settings passed in."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI

from gateway.api.routes import grants, health
from gateway.api.routes import policies as policy_routes
from gateway.audit.store import AuditStore
from gateway.identity.oidc_config import OidcIssuerConfig
from gateway.policy.reload import PolicyHolder

__all__ = ["create_app"]


def create_app(store: AuditStore, *, admin_token_sha256: tuple[str, ...],
               policies: PolicyHolder,
               oidc_issuers: Sequence[OidcIssuerConfig] = ()) -> FastAPI:
    app = FastAPI(title="nats-gateway audit API", version="1")
    app.state.store = store
    app.state.admin_token_sha256 = admin_token_sha256
    app.state.policies = policies
    app.state.oidc_issuers = tuple(oidc_issuers)
    app.include_router(health.router)
    app.include_router(grants.router)
    app.include_router(policy_routes.router)
    return app
