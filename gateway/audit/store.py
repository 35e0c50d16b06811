"""The audit store: one SQL table through SQLAlchemy Core (SQLite default, any URL).

SQLite runs in WAL mode with ``synchronous=FULL``: a committed record survives a power
cut, which is the promise made before a grant leaves. Reads (the API) and the writer
thread use separate connections from the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.audit.record import AuditRecord
from gateway.errors import AuditUnavailable

__all__ = ["AuditStore", "DecisionQuery"]

metadata = MetaData()
decisions = Table(
    "decisions", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("decision_id", String(64), nullable=False, unique=True),
    Column("decided_at", Float, nullable=False, index=True),
    Column("decision", String(8), nullable=False),
    Column("reason_code", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("method", String(16), nullable=False),
    Column("principal", Text, nullable=False, index=True),
    Column("identity_fingerprint", String(80), nullable=False),
    Column("dag_id", String(250), nullable=False, index=True),
    Column("task_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("client_host", String(64), nullable=False),
    Column("client_id", Integer, nullable=False),
    Column("client_name", Text, nullable=False),
    Column("client_lang", String(32), nullable=False),
    Column("client_version", String(32), nullable=False),
    Column("server_id", String(64), nullable=False),
    Column("server_name", Text, nullable=False),
    Column("user_nkey", String(64), nullable=False),
    Column("permissions", Text, nullable=False),
    Column("expires_at", Integer, nullable=True),
    Column("policy_ids", Text, nullable=False),
    Column("policy_set_hash", String(80), nullable=False),
    Column("gateway_instance", String(128), nullable=False),
    Column("latency_ms", Float, nullable=False),
)


@dataclass(frozen=True)
class DecisionQuery:
    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    decision: str | None = None
    method: str | None = None
    principal: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class AuditStore:
    """Create, append to and read the decisions table."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)

    def create_schema(self) -> None:
        try:
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"cannot create the audit schema: {type(exc).__name__}",
                                   code="audit_unavailable") from exc

    def append(self, records: Sequence[AuditRecord]) -> None:
        """Insert records in one transaction; raises AuditUnavailable if not committed."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(decisions), [r.as_row() for r in records])
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"audit store write failed: {type(exc).__name__}",
                                   code="audit_unavailable") from exc

    def query(self, q: DecisionQuery) -> list[AuditRecord]:
        stmt = select(decisions).order_by(decisions.c.seq.desc()).limit(q.limit)
        for column, value in (
            (decisions.c.dag_id, q.dag_id), (decisions.c.task_id, q.task_id),
            (decisions.c.run_id, q.run_id), (decisions.c.decision, q.decision),
            (decisions.c.method, q.method), (decisions.c.principal, q.principal),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if q.since is not None:
            stmt = stmt.where(decisions.c.decided_at >= q.since)
        if q.until is not None:
            stmt = stmt.where(decisions.c.decided_at < q.until)
        with self.engine.connect() as conn:
            return [AuditRecord.from_row(dict(row._mapping)) for row in conn.execute(stmt)]

    def get(self, decision_id: str) -> AuditRecord | None:
        stmt = select(decisions).where(decisions.c.decision_id == decision_id)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else AuditRecord.from_row(dict(row._mapping))

    def count(self, decision: str | None = None) -> int:
        stmt = select(func.count()).select_from(decisions)
        if decision is not None:
            stmt = stmt.where(decisions.c.decision == decision)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def close(self) -> None:
        self.engine.dispose()
