"""``/v1/grants``: the decisions on record, newest first, with filters, cursor paging,
streaming export (CSV, JSON Lines) and a per-day summary. Role: auditor."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from gateway.api.csv_export import csv_lines
from gateway.api.deps import Auditor, Store
from gateway.api.params import DecisionId, Filter, When
from gateway.audit.record import AuditRecord
from gateway.audit.store import DecisionQuery, decode_cursor, encode_cursor

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
    chain_seq: int | None
    record_hash: str | None

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
            chain_seq=r.chain_seq, record_hash=r.record_hash,
        )


class DecisionList(BaseModel):
    items: list[DecisionOut]
    next_cursor: str | None


class SummaryRow(BaseModel):
    day: str | None
    dag_id: str
    task_id: str
    decision: str
    count: int


class Summary(BaseModel):
    rows: list[SummaryRow]


def _query(dag: str | None, task: str | None, run: str | None, decision: str | None,
           method: str | None, principal: str | None, policy: str | None,
           since: datetime | None, until: datetime | None, limit: int = 100,
           cursor: str | None = None, reason: str | None = None) -> DecisionQuery:
    try:
        before = decode_cursor(cursor) if cursor else None
    except ValueError:
        raise HTTPException(400, "invalid cursor: pass a `next_cursor` you got") from None
    return DecisionQuery(
        dag_id=dag, task_id=task, run_id=run, decision=decision, method=method,
        principal=principal, policy_id=policy, reason_code=reason,
        since=since.timestamp() if since else None,
        until=until.timestamp() if until else None, before_seq=before, limit=limit)


Decision = Literal["grant", "deny"]


@router.get("", response_model=DecisionList)
def list_grants(
    store: Store, _: Auditor,
    dag: Filter = None, task: Filter = None, run: Filter = None,
    decision: Decision | None = None, method: Filter = None,
    principal: Filter = None, policy: Filter = None, reason: Filter = None,
    since: When = None, until: When = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> DecisionList:
    """Decisions newest first; follow `next_cursor` for the next page (stable while new
    decisions arrive: they never shift a page)."""
    page = store.page(_query(dag, task, run, decision, method, principal, policy, since,
                             until, limit, cursor, reason))
    return DecisionList(
        items=[DecisionOut.of(r) for r in page.items],
        next_cursor=None if page.next_before_seq is None
        else encode_cursor(page.next_before_seq))


def _started(records: Iterator[AuditRecord]) -> Iterator[AuditRecord]:
    """Run the export's first query before the response starts: once a 200 is sent, a
    failing query can only cut the stream short, which reads like a complete export."""
    first = next(records, None)
    return iter(()) if first is None else itertools.chain([first], records)


def _json_lines(records: Iterator[AuditRecord]) -> Iterator[str]:
    for record in records:
        yield DecisionOut.of(record).model_dump_json() + "\n"


@router.get("/export")
def export_grants(
    store: Store, _: Auditor, format: Literal["csv", "jsonl"] = "jsonl",
    dag: Filter = None, task: Filter = None, run: Filter = None,
    decision: Decision | None = None, method: Filter = None,
    principal: Filter = None, policy: Filter = None, reason: Filter = None,
    since: When = None, until: When = None,
) -> StreamingResponse:
    """Every matching decision, streamed (no size limit, constant memory)."""
    return export_response(store.iterate(_query(dag, task, run, decision, method, principal,
                                                policy, since, until, reason=reason)), format)


def export_response(records: Iterator[AuditRecord],
                    format: Literal["csv", "jsonl"]) -> StreamingResponse:
    """The streamed export of ``records`` (shared with the console's export links)."""
    started = _started(records)
    if format == "csv":
        return StreamingResponse(csv_lines(started), media_type="text/csv",
                                 headers={"Content-Disposition": "attachment; "
                                          "filename=decisions.csv"})
    return StreamingResponse(_json_lines(started), media_type="application/x-ndjson",
                             headers={"Content-Disposition": "attachment; "
                                      "filename=decisions.jsonl"})


@router.get("/summary", response_model=Summary)
def summarise(
    store: Store, _: Auditor,
    dag: Filter = None, task: Filter = None, decision: Decision | None = None,
    method: Filter = None, principal: Filter = None, policy: Filter = None,
    since: When = None, until: When = None,
) -> Summary:
    """Counts per day (UTC), DAG, task and decision."""
    rows = store.summary(_query(dag, task, None, decision, method, principal, policy, since,
                                until))
    return Summary(rows=[SummaryRow(**row) for row in rows])


@router.get("/{decision_id}", response_model=DecisionOut)
def get_grant(decision_id: DecisionId, store: Store, _: Auditor) -> DecisionOut:
    record = store.get(decision_id)
    if record is None:
        raise HTTPException(404, f"no decision `{json.dumps(decision_id[:64])}`")
    return DecisionOut.of(record)
