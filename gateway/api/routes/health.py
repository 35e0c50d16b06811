"""``/healthz`` (alive), ``/readyz`` (able to take requests) and ``/metrics``.

None needs authentication, so none shows more than status: checks, counts and hashes;
no policy contents, error text or identities (those are on the authenticated
``GET /v1/policies`` and in the log). ``/readyz`` answers 503 unless the gateway is
connected to NATS and subscribed, has a policy set, and can write its audit store;
``"reason"`` then says which in fixed words (``waiting for nats`` while it starts or
nats-server is away; the address is in the log, not on this public endpoint). An
invalid policy edit does not make it unready: the last good set stays in force, and
``"status": "degraded"`` with the failure count says so; taking the gateway out of
service would deny every worker over one typo.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import Policies

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


# Why the gateway is not ready: the first failing check, in the order start needs them.
_NOT_READY = {
    "nats_connected": "waiting for nats",
    "subscribed": "not subscribed to auth requests",
    "policies_loaded": "no policy set loaded",
    "audit_store_writable": "audit store not writable",
}


@router.get("/readyz")
async def readyz(request: Request, response: Response, holder: Policies) -> dict[str, Any]:
    readiness = request.app.state.readiness
    checks: dict[str, bool] = await readiness() if readiness is not None else {}
    status = holder.status()
    error = status["last_error"]
    ready = all(checks.values())
    if not ready:
        response.status_code = 503
    return {
        "status": "not_ready" if not ready else "ready" if error is None else "degraded",
        "checks": checks,
        "reason": next((_NOT_READY.get(name, name) for name, ok in checks.items() if not ok),
                       None),
        "policy": {
            "status": status["status"],
            "content_hash": status["content_hash"],
            "policies": len(status["policies"]),
            "reloads": status["reloads"],
            "reload_failures": status["reload_failures"],
            "last_error": None if error is None else {
                "at": error["at"], "trigger": error["trigger"],
                "problems": len(error["problems"]),
            },
        },
    }


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    if registry is None:
        return Response(status_code=404)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
