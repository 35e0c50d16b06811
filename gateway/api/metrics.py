"""`/metrics` alone, for its own listener (`api.metrics_port`): Prometheus scrapes a
private address in plain HTTP while the audit API, with its bearer tokens, is served
over HTTPS elsewhere. Unauthenticated, like `/metrics` on the API: no secrets in it."""

from __future__ import annotations

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["create_metrics_app"]


def create_metrics_app(registry: CollectorRegistry) -> FastAPI:
    app = FastAPI(title="nats-gateway metrics", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
