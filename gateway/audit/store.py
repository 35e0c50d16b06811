"""The audit store over SQLAlchemy Core: SQLite (embedded default) or PostgreSQL by URL.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed record survives a power
cut, which is the promise made before a grant leaves. Failures are quick rather than
long waits, so a decision whose record cannot be committed becomes a deny inside the
NATS auth timeout: SQLite waits at most 1 s for a lock, PostgreSQL connects within 2 s
(libpq's minimum) and runs statements within 1 s. ``pool_pre_ping`` makes the pool
recover by itself when the database comes back.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Select,
    Table,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.audit.migrate import migrate
from gateway.audit.record import AuditRecord
from gateway.audit.schema import audit_meta, checkpoints, decisions
from gateway.errors import AuditUnavailable

__all__ = ["MAX_CURSOR_SEQ", "Appender", "AuditStore", "CheckpointRow", "DecisionPage",
           "DecisionQuery", "decode_cursor", "encode_cursor"]


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecisionQuery:
    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    decision: str | None = None
    method: str | None = None
    principal: str | None = None
    policy_id: str | None = None
    reason_code: str | None = None
    since: float | None = None
    until: float | None = None
    # Grants still in force at this time (who-could): expiring then or later, or never.
    expires_from: float | None = None
    before_seq: int | None = None
    limit: int = 100


@dataclass(frozen=True)
class DecisionPage:
    items: list[AuditRecord]
    next_before_seq: int | None


@dataclass(frozen=True)
class CheckpointRow:
    gateway_instance: str
    kind: str
    chain_seq: int
    record_hash: str
    created_at: float
    detail: str
    public_key: str
    signature: str

    def as_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


# The largest position a cursor may name: no store numbers past a signed 64-bit integer,
# and drivers refuse a larger one with an overflow error rather than match no rows.
MAX_CURSOR_SEQ = 2**63 - 1
# The largest `seq` each store's column holds: INTEGER is 32-bit on PostgreSQL, 64-bit
# on SQLite.
_SEQ_MAX = {"postgresql": 2**31 - 1}
_MAX_CURSOR = 32  # characters: encode_cursor(MAX_CURSOR_SEQ) is 31


def decode_cursor(cursor: str) -> int:
    """The position a cursor stands for; ValueError for anything we did not issue."""
    if len(cursor) > _MAX_CURSOR:
        raise ValueError("invalid cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise ValueError("invalid cursor") from None
    kind, _, number = raw.partition(":")
    # Decoded as ASCII: isdigit() alone also takes superscripts and other scripts' digits.
    if kind != "seq" or not number.isdigit():
        raise ValueError("invalid cursor")
    seq = int(number)
    if seq > MAX_CURSOR_SEQ:
        raise ValueError("invalid cursor")
    return seq


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=1000")
    cursor.close()


def _engine(url: str) -> Engine:
    if url.startswith("postgresql"):
        return create_engine(url, pool_pre_ping=True, connect_args={
            "connect_timeout": 2, "options": "-c statement_timeout=1000"})
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _unavailable(action: str, exc: Exception, sqlite_file: Path | None = None) -> AuditUnavailable:
    if sqlite_file is not None:  # SQLite's message names no credential, and says why
        cause = getattr(exc, "orig", None) or exc
        return AuditUnavailable(f"audit store `{sqlite_file}` {action} failed: "
                                f"{type(exc).__name__}: {cause}", code="audit_unavailable")
    # The driver's message can hold connection details; the type is enough to act on.
    return AuditUnavailable(f"audit store {action} failed: {type(exc).__name__}",
                            code="audit_unavailable")


def _sqlite_file(engine: Engine) -> Path | None:
    """The file of a SQLite store; None for PostgreSQL or an in-memory database."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


def _create_directory(directory: Path, store: Path) -> None:
    """Create a store's missing directories owner-only, as a service's first start would
    (SQLite creates the file, never its directory)."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    try:
        for parent in reversed(missing):
            parent.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise AuditUnavailable(f"audit store `{store}`: cannot create directory "
                               f"`{exc.filename or directory}`: {reason}",
                               code="audit_unavailable") from exc


def _driver_insert(engine: Engine, table: Table) -> tuple[str, tuple[str, ...] | None]:
    """The INSERT for ``table`` (its row id left to the database) in the driver's own
    parameter style, and the column order when that style is positional."""
    names = [c.name for c in table.c if not (c.primary_key and c.autoincrement is True)]
    compiled = insert(table).values({n: bindparam(n) for n in names}).compile(
        dialect=engine.dialect)
    order = compiled.positiontup
    return str(compiled), tuple(order) if order is not None else None


class Appender:
    """How records are written: one long-lived DB-API connection and driver-level
    ``executemany``, so a commit costs the database's work and little Python (a
    SQLAlchemy Core transaction costs a pool checkout, a ping and statement handling).
    One transaction per batch; any failure is AuditUnavailable, the connection is
    dropped and a new one is opened for the next batch."""

    def __init__(self, engine: Engine, lock_wait_ms: int | None = None) -> None:
        self._engine = engine
        # SQLite only: how long a write waits for another connection's lock (None: the
        # store's default, 1 s); 0 fails at once, so the caller can go another way.
        self._lock_wait_ms = lock_wait_ms
        self._decisions = _driver_insert(engine, decisions)
        self._checkpoints = _driver_insert(engine, checkpoints)
        self._conn: Any = None

    def append(self, rows: Sequence[Mapping[str, Any]],
               checkpoint: CheckpointRow | None = None) -> None:
        """Insert stored-form rows (and a checkpoint) in one transaction."""
        try:
            if self._conn is None:
                self._conn = self._connect()
            cursor = self._conn.cursor()
            try:
                if rows:
                    cursor.executemany(*_params(self._decisions, rows))
                if checkpoint is not None:
                    cursor.executemany(*_params(self._checkpoints, [checkpoint.as_row()]))
                self._conn.commit()
            finally:
                cursor.close()
        except Exception as exc:  # any driver error: the batch is not committed
            self._discard()
            raise _unavailable("write", exc) from exc

    def _connect(self) -> Any:
        conn = self._engine.raw_connection()
        if self._lock_wait_ms is not None and self._engine.dialect.name == "sqlite":
            cursor = conn.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout={int(self._lock_wait_ms)}")
            finally:
                cursor.close()
        return conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()  # rolls back what the failed batch left open, if anything
            except Exception:  # the connection is already broken; it goes either way
                log.debug("discarding the audit connection failed", exc_info=True)

    def close(self) -> None:
        if self._conn is not None:
            if self._lock_wait_ms is not None:
                self._discard()  # never back to the pool: its lock wait is not the default
            else:
                self._conn.close()
            self._conn = None


def _params(insert_sql: tuple[str, tuple[str, ...] | None],
            rows: Sequence[Mapping[str, Any]]) -> tuple[str, list[Any]]:
    sql, order = insert_sql
    if order is None:
        return sql, list(rows)
    return sql, [tuple(row[name] for name in order) for row in rows]


class AuditStore:
    """Append decisions and checkpoints; read them for the API, export and verify."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = _engine(url)
        self._seq_max = _SEQ_MAX.get(self.backend, MAX_CURSOR_SEQ)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> str | None:
        sqlite_file = _sqlite_file(self.engine)
        if sqlite_file is not None:
            _create_directory(sqlite_file.parent, sqlite_file)
        try:
            return migrate(self.engine)
        except SQLAlchemyError as exc:
            raise _unavailable("migration", exc, sqlite_file) from exc

    def appender(self, lock_wait_ms: int | None = None) -> Appender:
        """A connection of its own for :meth:`Appender.append` (one user at a time);
        ``lock_wait_ms`` (SQLite) overrides how long a write waits for a lock."""
        return Appender(self.engine, lock_wait_ms)

    def chain_head(self, instance: str) -> tuple[int, str] | None:
        """The last (chain_seq, record_hash) of ``instance``, or None for a new chain."""
        stmt = (select(decisions.c.chain_seq, decisions.c.record_hash)
                .where(decisions.c.gateway_instance == instance,
                       decisions.c.chain_seq.is_not(None))
                .order_by(decisions.c.chain_seq.desc()).limit(1))
        anchor = (select(checkpoints.c.chain_seq, checkpoints.c.record_hash)
                  .where(checkpoints.c.gateway_instance == instance,
                         checkpoints.c.kind == "purge")
                  .order_by(checkpoints.c.chain_seq.desc()).limit(1))
        try:
            with self.engine.connect() as conn:
                row = conn.execute(stmt).first() or conn.execute(anchor).first()
        except SQLAlchemyError as exc:
            raise _unavailable("read", exc) from exc
        return None if row is None else (int(row[0]), str(row[1]))

    def latest_checkpoint(self, instance: str) -> CheckpointRow | None:
        """The newest checkpoint of ``instance`` (by time): who last held the name."""
        stmt = (select(checkpoints).where(checkpoints.c.gateway_instance == instance)
                .order_by(checkpoints.c.created_at.desc(), checkpoints.c.id.desc()).limit(1))
        try:
            with self.engine.connect() as conn:
                row = conn.execute(stmt).first()
        except SQLAlchemyError as exc:
            raise _unavailable("read", exc) from exc
        if row is None:
            return None
        return CheckpointRow(**{k: v for k, v in row._mapping.items() if k != "id"})

    def _filtered(self, q: DecisionQuery) -> Select[Any]:
        stmt = select(decisions)
        for column, value in (
            (decisions.c.dag_id, q.dag_id), (decisions.c.task_id, q.task_id),
            (decisions.c.run_id, q.run_id), (decisions.c.decision, q.decision),
            (decisions.c.method, q.method), (decisions.c.principal, q.principal),
            (decisions.c.reason_code, q.reason_code),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if q.policy_id is not None:
            stmt = stmt.where(decisions.c.policy_ids.contains(f'"{q.policy_id}"',
                                                              autoescape=True))
        if q.since is not None:
            stmt = stmt.where(decisions.c.decided_at >= q.since)
        if q.until is not None:
            stmt = stmt.where(decisions.c.decided_at < q.until)
        if q.expires_from is not None:
            stmt = stmt.where(or_(decisions.c.expires_at.is_(None),
                                  decisions.c.expires_at >= q.expires_from))
        # `seq < before` with a `before` past the column's range holds for every row; the
        # driver would refuse the number instead of answering that.
        if q.before_seq is not None and q.before_seq <= self._seq_max:
            stmt = stmt.where(decisions.c.seq < q.before_seq)
        return stmt

    def page(self, q: DecisionQuery) -> DecisionPage:
        """Newest first (by store order, stable under concurrent writes), ``limit`` per
        page; ``next_before_seq`` continues after the last item, None at the end."""
        stmt = self._filtered(q).order_by(decisions.c.seq.desc()).limit(q.limit + 1)
        with self.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(stmt)]
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        return DecisionPage([AuditRecord.from_row(r) for r in rows],
                            int(rows[-1]["seq"]) if more else None)

    def query(self, q: DecisionQuery) -> list[AuditRecord]:
        return self.page(q).items

    def iterate(self, q: DecisionQuery, batch: int = 500) -> Iterator[AuditRecord]:
        """Every matching record, newest first, fetched a page at a time (exports)."""
        before = q.before_seq
        while True:
            page = self.page(DecisionQuery(**{**q.__dict__, "before_seq": before,
                                              "limit": batch}))
            yield from page.items
            if page.next_before_seq is None:
                return
            before = page.next_before_seq

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

    def summary(self, q: DecisionQuery) -> list[dict[str, Any]]:
        """Counts per day, DAG, task and decision for the filtered records."""
        base = self._filtered(q).subquery()
        stmt = (select(base.c.decided_day, base.c.dag_id, base.c.task_id, base.c.decision,
                       func.count().label("count"))
                .group_by(base.c.decided_day, base.c.dag_id, base.c.task_id,
                          base.c.decision)
                .order_by(base.c.decided_day, base.c.dag_id, base.c.task_id,
                          base.c.decision))
        with self.engine.connect() as conn:
            return [{"day": r[0], "dag_id": r[1], "task_id": r[2], "decision": r[3],
                     "count": int(r[4])} for r in conn.execute(stmt)]

    # -- verification and retention -----------------------------------------------------

    def chain_rows(self) -> Iterator[dict[str, Any]]:
        """Every chained row in (instance, chain_seq) order, streamed."""
        stmt = (select(decisions).where(decisions.c.chain_seq.is_not(None))
                .order_by(decisions.c.gateway_instance, decisions.c.chain_seq)
                .execution_options(yield_per=1000))
        with self.engine.connect() as conn:
            for row in conn.execute(stmt):
                yield dict(row._mapping)

    def instance_heads(self) -> list[dict[str, Any]]:
        """Per instance: chained records, the last position and when it was decided."""
        stmt = (select(decisions.c.gateway_instance, func.count().label("records"),
                       func.max(decisions.c.chain_seq).label("last_seq"),
                       func.max(decisions.c.decided_at).label("last_at"))
                .where(decisions.c.chain_seq.is_not(None))
                .group_by(decisions.c.gateway_instance)
                .order_by(decisions.c.gateway_instance))
        with self.engine.connect() as conn:
            return [{"instance": str(r[0]), "records": int(r[1]), "last_seq": int(r[2]),
                     "last_at": float(r[3])} for r in conn.execute(stmt)]

    def unchained_rows(self) -> list[dict[str, Any]]:
        stmt = select(decisions.c.seq, decisions.c.decision_id).where(
            decisions.c.chain_seq.is_(None))
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(stmt)]

    def checkpoint_rows(self) -> list[CheckpointRow]:
        stmt = select(checkpoints).order_by(checkpoints.c.gateway_instance,
                                            checkpoints.c.chain_seq, checkpoints.c.id)
        with self.engine.connect() as conn:
            return [CheckpointRow(**{k: v for k, v in row._mapping.items() if k != "id"})
                    for row in conn.execute(stmt)]

    def legacy_max_seq(self) -> int:
        stmt = select(audit_meta.c.value).where(audit_meta.c.key == "legacy_max_seq")
        with self.engine.connect() as conn:
            value = conn.execute(stmt).scalar_one_or_none()
        return int(value) if value is not None else 0

    def purge_through(self, anchors: Sequence[CheckpointRow]) -> int:
        """Delete each anchor's instance's records up to its chain_seq, and record the
        signed anchors, in one transaction; returns the number of records deleted."""
        deleted = 0
        try:
            with self.engine.begin() as conn:
                for anchor in anchors:
                    result = conn.execute(delete(decisions).where(and_(
                        decisions.c.gateway_instance == anchor.gateway_instance,
                        decisions.c.chain_seq <= anchor.chain_seq)))
                    deleted += result.rowcount or 0
                    conn.execute(insert(checkpoints), [anchor.as_row()])
        except SQLAlchemyError as exc:
            raise _unavailable("purge", exc) from exc
        return deleted

    def last_before(self, cutoff: float) -> list[tuple[str, int, str]]:
        """Per instance, the last chained record decided before ``cutoff``."""
        inner = (select(decisions.c.gateway_instance,
                        func.max(decisions.c.chain_seq).label("chain_seq"))
                 .where(decisions.c.decided_at < cutoff, decisions.c.chain_seq.is_not(None))
                 .group_by(decisions.c.gateway_instance).subquery())
        stmt = select(decisions.c.gateway_instance, decisions.c.chain_seq,
                      decisions.c.record_hash).join(inner, and_(
                          decisions.c.gateway_instance == inner.c.gateway_instance,
                          decisions.c.chain_seq == inner.c.chain_seq))
        with self.engine.connect() as conn:
            return [(str(r[0]), int(r[1]), str(r[2])) for r in conn.execute(stmt)]

    def ping(self) -> bool:
        """Is the store reachable right now? (For readiness; never raises.)"""
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError:
            return False
        return True

    def close(self) -> None:
        self.engine.dispose()
