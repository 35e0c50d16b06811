"""``/v1/grants``: the decisions on record, newest first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from gateway.api.deps import Authenticated, Store
from gateway.audit.record import AuditRecord
from gateway.audit.store import DecisionQuery

router = APIRouter(prefix="/v1/grants", tags=["audit"])


class DecisionOut(BaseModel):
    decision_id: str
    decided_at: datetime
    decision: str
    reason_code: str
    reason: str
    method: str
    principal: str
    identity_fingerprint: str
    dag_id: str
    task_id: str
    run_id: str
    client: dict[str, Any]
    server_id: str
    server_name: str
    user_nkey: str
    permissions: dict[str, Any]
    expires_at: datetime | None
    policy_ids: list[str]
    policy_set_hash: str
    gateway_instance: str
    latency_ms: float

    @classmethod
    def of(cls, r: AuditRecord) -> DecisionOut:
        return cls(
            decision_id=r.decision_id, decided_at=datetime.fromtimestamp(r.decided_at, UTC),
            decision=r.decision, reason_code=r.reason_code, reason=r.reason, method=r.method,
            principal=r.principal, identity_fingerprint=r.identity_fingerprint,
            dag_id=r.dag_id, task_id=r.task_id, run_id=r.run_id,
            client={"host": r.client_host, "id": r.client_id, "name": r.client_name,
                    "lang": r.client_lang, "version": r.client_version},
            server_id=r.server_id, server_name=r.server_name, user_nkey=r.user_nkey,
            permissions=r.permissions,
            expires_at=None if r.expires_at is None
            else datetime.fromtimestamp(r.expires_at, UTC),
            policy_ids=list(r.policy_ids), policy_set_hash=r.policy_set_hash,
            gateway_instance=r.gateway_instance, latency_ms=round(r.latency_ms, 3),
        )


class DecisionList(BaseModel):
    items: list[DecisionOut]


@router.get("", response_model=DecisionList)
def list_grants(
    store: Store, _: Authenticated,
    dag: str | None = None, task: str | None = None, run: str | None = None,
    decision: Literal["grant", "deny"] | None = None, method: str | None = None,
    principal: str | None = None,
    since: datetime | None = None, until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DecisionList:
    query = DecisionQuery(
        dag_id=dag, task_id=task, run_id=run, decision=decision, method=method,
        principal=principal, since=since.timestamp() if since else None,
        until=until.timestamp() if until else None, limit=limit,
    )
    return DecisionList(items=[DecisionOut.of(r) for r in store.query(query)])


@router.get("/{decision_id}", response_model=DecisionOut)
def get_grant(decision_id: str, store: Store, _: Authenticated) -> DecisionOut:
    record = store.get(decision_id)
    if record is None:
        raise HTTPException(404, f"no decision `{decision_id[:64]}`")
    return DecisionOut.of(record)
