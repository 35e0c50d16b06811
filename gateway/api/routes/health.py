"""``/healthz`` (the process is alive) and ``/readyz`` (what the gateway is serving with).

Neither needs authentication, so neither shows more than status: counts and hashes, no
policy contents, error text or identities (those are on the authenticated
``GET /v1/policies`` and in the log). ``/readyz`` answers 200 while a good policy set is in
force, with ``"status": "degraded"`` and the reload error when a newer edit was refused:
the gateway keeps deciding with the last good set, and taking it out of service would
deny every worker for an operator's typo.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.api.deps import Policies

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(holder: Policies) -> dict[str, Any]:
    status = holder.status()
    error = status["last_error"]
    return {
        "status": "ready" if error is None else "degraded",
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
