"""The audit writer keeps one bad record from failing the others, and loses no deny.

Records are built here by hand, past the edge that makes client text safe, to prove the
writer's own defence: a record the store refuses (a lone surrogate no encoder takes, NUL
that PostgreSQL refuses in text) is retried alone; a deny that still cannot be stored
is kept by its safe fields, a grant is refused (its caller denies instead). Against
SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from gateway.audit.record import AuditRecord
from gateway.audit.store import AuditStore, DecisionQuery
from gateway.audit.verify import verify_store
from gateway.audit.writer import LATE_MARK, AuditWriter
from gateway.errors import AuditUnavailable

pytestmark = pytest.mark.integration

INSTANCE = "gw-faults"


def record(decision_id: str, decision: str = "grant", **fields: object) -> AuditRecord:
    base = AuditRecord(decision_id=decision_id, decided_at=time.time(), decision=decision,
                       reason_code="granted" if decision == "grant" else "policy_denied",
                       reason="test", gateway_instance=INSTANCE, latency_ms=1.0,
                       identity_fingerprint="sha256:" + "ab" * 32)
    return replace(base, **fields)  # type: ignore[arg-type]


async def _settle(writer: AuditWriter, *records: AuditRecord,
                  deadline: float | None = None) -> list[BaseException | None]:
    futures = [writer.write(r, deadline) for r in records]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    return [o if isinstance(o, BaseException) else None for o in outcomes]


# A lone surrogate cannot be encoded (the chain's hash fails on SQLite and PostgreSQL);
# NUL is refused by PostgreSQL in text and stored by SQLite.
@pytest.mark.parametrize("poison", ["\ud800", "\x00"], ids=["surrogate", "nul"])
async def test_one_bad_record_fails_no_other_decision(store: AuditStore, poison: str) -> None:
    writer = AuditWriter(store, instance=INSTANCE)
    try:
        outcomes = await _settle(
            writer, record("good-1"), record("bad-deny", "deny", client_name=f"x{poison}"),
            record("good-2"), record("bad-grant", client_name=f"y{poison}"), record("good-3"))
    finally:
        writer.close()
    stored = {r.decision_id: r for r in store.query(DecisionQuery(limit=100))}
    for good in ("good-1", "good-2", "good-3"):
        assert stored[good].decision == "grant"
    assert outcomes[0] is None and outcomes[2] is None and outcomes[4] is None
    assert outcomes[1] is None, "a deny must be kept"
    assert stored["bad-deny"].decision == "deny"
    if "bad-grant" in stored:  # SQLite takes NUL: then the grant stood as it was
        assert poison == "\x00" and store.backend == "sqlite" and outcomes[3] is None
    else:
        assert isinstance(outcomes[3], AuditUnavailable), "a grant must not be kept reduced"
        assert "reduced to its safe fields" in stored["bad-deny"].reason
        assert stored["bad-deny"].identity_fingerprint == "sha256:" + "ab" * 32
    assert verify_store(store, ()).ok


async def test_a_late_deny_is_written_marked_a_late_grant_is_refused(
        store: AuditStore) -> None:
    writer = AuditWriter(store, instance=INSTANCE)
    passed = time.time() - 1
    try:
        outcomes = await _settle(writer, record("late-grant"),
                                 record("late-deny", "deny"), deadline=passed)
    finally:
        writer.close()
    assert isinstance(outcomes[0], AuditUnavailable) and outcomes[0].code == "audit_timeout"
    assert outcomes[1] is None
    stored = {r.decision_id: r for r in store.query(DecisionQuery(limit=100))}
    assert "late-grant" not in stored
    assert stored["late-deny"].reason.startswith(LATE_MARK)
