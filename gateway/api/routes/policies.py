"""``GET /v1/policies`` (the loaded set and any reload error) and ``POST /v1/explain``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from gateway.api.deps import Auditor, Policies
from gateway.errors import GatewayError
from gateway.identity.oidc_config import OidcIssuerConfig
from gateway.policy.explain import ExplainRequest, explain, explanation_dict

router = APIRouter(prefix="/v1", tags=["policies"])


@router.get("/policies")
def policies(_: Auditor, holder: Policies) -> dict[str, Any]:
    """The policy set in force, its content hash, and the last reload error if any."""
    return holder.status()


@router.post("/explain")
def explain_request(body: ExplainRequest, request: Request, _: Auditor,
                    holder: Policies) -> dict[str, Any]:
    """Which policies would match this identity and scope, why the others would not, and
    the exact permissions and TTL the gateway would grant. Nothing is granted or audited."""
    issuers: tuple[OidcIssuerConfig, ...] = request.app.state.oidc_issuers
    try:
        identity, evaluation, now = explain(holder.current(), body, issuers)
    except GatewayError as exc:
        raise HTTPException(422,
                            f"{exc.code}: {exc.description}") from exc
    return explanation_dict(identity, evaluation, now)
