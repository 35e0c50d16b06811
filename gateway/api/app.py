"""The FastAPI application factory; no module-level app, settings passed in."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.api.routes import grants, health
from gateway.audit.store import AuditStore

__all__ = ["create_app"]


def create_app(store: AuditStore, *, admin_token_sha256: tuple[str, ...]) -> FastAPI:
    app = FastAPI(title="nats-gateway audit API", version="1")
    app.state.store = store
    app.state.admin_token_sha256 = admin_token_sha256
    app.include_router(health.router)
    app.include_router(grants.router)
    return app
