"""The FastAPI application factory; no module-level app, settings passed in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry

from gateway.api.auth import ApiAuthenticator
from gateway.api.problems import validation_problem
from gateway.api.routes import audit, grants, health, who_could
from gateway.api.routes import policies as policy_routes
from gateway.audit.chain import CheckpointSigner
from gateway.audit.store import AuditStore
from gateway.audit.verify import TrustedKey
from gateway.identity.oidc_config import OidcIssuerConfig
from gateway.policy.reload import PolicyHolder

__all__ = ["create_app"]


def create_app(store: AuditStore, *, authenticator: ApiAuthenticator, policies: PolicyHolder,
               oidc_issuers: tuple[OidcIssuerConfig, ...] = (),
               checkpoint_signer: CheckpointSigner | None = None,
               trusted_checkpoint_keys: tuple[str | TrustedKey, ...] = (),
               readiness: Callable[[], Awaitable[dict[str, bool]]] | None = None,
               metrics: CollectorRegistry | None = None) -> FastAPI:
    app = FastAPI(title="nats-gateway audit API", version="1",
                  description="Decisions on record, their integrity, and the policies in "
                              "force. Bearer tokens: API tokens or OIDC; roles auditor "
                              "(read) and admin.")
    app.state.store = store
    app.state.authenticator = authenticator
    app.state.policies = policies
    app.state.oidc_issuers = oidc_issuers
    app.state.checkpoint_signer = checkpoint_signer
    app.state.trusted_checkpoint_keys = trusted_checkpoint_keys
    app.state.readiness = readiness
    app.state.metrics = metrics
    app.add_exception_handler(RequestValidationError, validation_problem)  # type: ignore[arg-type]
    app.include_router(health.router)
    app.include_router(who_could.router)  # before grants: its `/{decision_id}` would match
    app.include_router(grants.router)
    app.include_router(audit.router)
    app.include_router(policy_routes.router)
    return app
