"""Group commit into a hash chain: concurrent decisions share one transaction.

Records written during one turn of the event loop are handed to a dedicated thread as
one batch; the thread chains everything waiting (up to ``max_batch`` per transaction)
onto this instance's chain, appends it (with a signed checkpoint when one is due) and
then resolves each caller's future: a caller is released only after its record is
committed, and gets AuditUnavailable if the commit failed, so the decision becomes a deny
(fail closed, as Vault refuses requests it cannot audit). After a failure the chain head
is re-read from the store before the next batch, so a commit whose outcome was lost
cannot fork the chain; when the store comes back, writing resumes by itself.

Handing records over once per loop turn, not one by one, is what makes batches form: a
thread woken per record takes the GIL at the next chance and commits that record alone,
so under load nearly every decision paid a whole commit (measured in docs/benchmarks.md).
The commit itself never runs on the event loop: a store that waits on a lock or a
network must not stall every other connect.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gateway.audit.chain import GENESIS, CheckpointSigner, checkpoint_payload, record_hash
from gateway.audit.record import AuditRecord
from gateway.audit.store import AuditStore, CheckpointRow
from gateway.errors import AuditUnavailable

__all__ = ["COMMIT_BUDGET_SECONDS", "AuditWriter"]

log = logging.getLogger(__name__)
# A record must be able to start its commit this long before its deadline (see write()).
COMMIT_BUDGET_SECONDS = 1.2
_Item = tuple[AuditRecord, float | None, asyncio.Future[None], asyncio.AbstractEventLoop]


class AuditWriter:
    def __init__(
        self, store: AuditStore, *, instance: str, signer: CheckpointSigner | None = None,
        max_batch: int = 256, checkpoint_every: int = 1000,
        commit_budget_seconds: float = COMMIT_BUDGET_SECONDS,
        checkpoint_interval_seconds: float = 60.0,
        on_commit: Callable[[Sequence[AuditRecord]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._instance = instance
        self._signer = signer
        self._max_batch = max_batch
        self._commit_budget = commit_budget_seconds
        self._checkpoint_every = checkpoint_every
        self._checkpoint_interval = checkpoint_interval_seconds
        self._on_commit = on_commit
        self._clock = clock
        self._head: tuple[int, str] | None = None
        self._last_checkpoint = (0, clock())
        self._queue: queue.Queue[list[_Item] | None] = queue.Queue()
        # Written during this turn of each caller's loop, not yet handed to the thread.
        self._pending: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        self._pending_lock = threading.Lock()
        self._appender = store.appender()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._closed = False
        self.commits = 0
        self.records = 0
        self.failures = 0
        self.checkpoints = 0
        self._last_ok = True
        self._thread.start()

    @property
    def healthy(self) -> bool:
        """False from a failed commit until the next successful one."""
        return self._last_ok

    def write(self, record: AuditRecord, deadline: float | None = None) -> asyncio.Future[None]:
        """Queue ``record`` now; the future resolves once it is committed, or raises
        AuditUnavailable.

        With a ``deadline`` (epoch seconds), a record whose commit could not start with
        ``commit_budget_seconds`` to spare is refused instead of written late: the store's
        own timeouts (SQLite lock wait 1 s, PostgreSQL statements 1 s) fit in the budget,
        so a "grant" is never recorded after the answer could still matter."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self._closed:
            future.set_exception(AuditUnavailable("audit writer is closed",
                                                  code="audit_unavailable"))
        elif record.gateway_instance != self._instance:
            future.set_exception(AuditUnavailable("record is for another gateway instance",
                                                  code="audit_unavailable"))
        else:
            with self._pending_lock:
                waiting = self._pending.setdefault(loop, [])
                waiting.append((record, deadline, future, loop))
                first = len(waiting) == 1
            if first:  # handed over once this turn's ready decisions have all written
                loop.call_soon(self._hand_off, loop)
        return future

    def _hand_off(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._pending_lock:
            batch = self._pending.pop(loop, [])
        if batch:
            self._queue.put(batch)

    def _next_batch(self) -> list[_Item] | None:
        """What is queued, at least one hand-off (waiting for it); None to stop."""
        first = self._queue.get()
        if first is None:
            return None
        batch = list(first)
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._queue.put(None)  # finish this batch, then stop
                break
            batch.extend(more)
        return batch

    def _chain(self, records: Sequence[AuditRecord]) -> list[dict[str, Any]]:
        """The records' stored rows, linked onto this instance's chain."""
        if self._head is None:
            self._head = self._store.chain_head(self._instance) or (0, GENESIS)
        seq, previous = self._head
        rows = []
        for record in records:
            seq += 1
            row = record.as_row()
            row["chain_seq"], row["prev_hash"] = seq, previous
            previous = row["record_hash"] = record_hash(row)  # the hash leaves itself out
            rows.append(row)
        return rows

    def _checkpoint(self, head: tuple[int, str], *, force: bool = False) -> CheckpointRow | None:
        seq, head_hash = head
        last_seq, last_at = self._last_checkpoint
        now = self._clock()
        if self._signer is None or seq == last_seq or seq == 0:
            return None
        if not force and seq - last_seq < self._checkpoint_every and (
                now - last_at < self._checkpoint_interval):
            return None
        payload = checkpoint_payload(instance=self._instance, kind="checkpoint",
                                     chain_seq=seq, record_hash=head_hash, created_at=now,
                                     detail="")
        return CheckpointRow(self._instance, "checkpoint", seq, head_hash, now, "",
                             self._signer.public_key, self._signer.sign(payload))

    def _commit(self, records: Sequence[AuditRecord]) -> None:
        rows = self._chain(records)
        head = (int(rows[-1]["chain_seq"]), str(rows[-1]["record_hash"]))
        checkpoint = self._checkpoint(head)
        self._appender.append(rows, checkpoint)
        self._head = head
        self.commits += 1
        self.records += len(rows)
        if checkpoint is not None:
            self._last_checkpoint = (checkpoint.chain_seq, checkpoint.created_at)
            self.checkpoints += 1
        if self._on_commit is not None:
            try:
                self._on_commit([_chained(record, row) for record, row in zip(
                    records, rows, strict=True)])
            except Exception:  # streaming is best effort; the record is already durable
                log.exception("audit on_commit hook failed")

    def _refuse_late(self, batch: list[_Item]) -> tuple[list[_Item], list[_Item]]:
        """(live, late): late grants could not finish their commit before their deadline
        and are refused (the caller denies instead). A late deny is kept, marked late: it
        gives nothing away, and dropping it would leave a decision out of the log."""
        now = self._clock()
        live: list[_Item] = []
        late: list[_Item] = []
        for item in batch:
            record, deadline, future, loop = item
            if deadline is None or deadline - now >= self._commit_budget:
                live.append(item)
            elif record.decision == "grant":
                late.append(item)
            else:
                live.append((_marked_late(record), deadline, future, loop))
        if late:
            self.failures += len(late)
            log.error("audit: %d grant record(s) refused, too late to commit before their "
                      "deadline (the store is slow or down); answered as denials",
                      len(late))
        return live, late

    def _commit_live(self, records: Sequence[AuditRecord]) -> AuditUnavailable | None:
        error: AuditUnavailable | None = None
        try:
            self._commit(records)
        except AuditUnavailable as exc:
            error = exc
        except Exception as exc:  # the writer must survive anything a record or driver raises
            log.exception("unexpected audit store error")
            error = AuditUnavailable(f"audit store error: {type(exc).__name__}",
                                     code="audit_unavailable")
            error.__cause__ = exc
        self._last_ok = error is None
        if error is not None:
            self._head = None  # re-read before the next batch: the commit may have landed
        return error

    def _write(self, items: list[_Item]) -> None:
        live, late = self._refuse_late(items)
        if late:
            _report(late, AuditUnavailable("audit store could not commit in time",
                                           code="audit_timeout"))
        if not live:
            return
        error = self._commit_live([record for record, _, _, _ in live])
        if error is None:
            _report(live, None)
        elif len(live) > 1 and not _store_down(error):
            # One record the store refuses must not fail the others' decisions.
            log.error("audit batch of %d record(s) failed (%s); retrying one by one",
                      len(live), error.description)
            self._write_one_by_one(live)
        else:
            self._failed(live, error)

    def _write_one_by_one(self, items: list[_Item]) -> None:
        for index, item in enumerate(items):
            record = item[0]
            error = self._commit_live([record])
            if error is not None and not _store_down(error) and record.decision != "grant":
                # A deny is kept in the log at least by its safe fields; a grant that
                # cannot be stored is refused, and its caller records the deny instead.
                log.error("audit record %s refused by the store (%s); storing its safe "
                          "fields", record.decision_id, error.description)
                error = self._commit_live([_reduced(record, error)])
            if error is not None and _store_down(error):
                self._failed(items[index:], error)
                return
            if error is None:
                _report([item], None)
            else:
                self._failed([item], error)

    def _failed(self, items: list[_Item], error: AuditUnavailable) -> None:
        self.failures += len(items)
        log.error("audit write of %d record(s) failed: %s", len(items), error.description)
        _report(items, error)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            for start in range(0, len(batch), self._max_batch):
                self._write(batch[start:start + self._max_batch])
        self._final_checkpoint()
        self._appender.close()

    def _final_checkpoint(self) -> None:
        """On shutdown, sign the chain's end, so a later truncation is detectable."""
        if self._head is None:
            return
        checkpoint = self._checkpoint(self._head, force=True)
        if checkpoint is None:
            return
        try:
            self._appender.append([], checkpoint)
            self.checkpoints += 1
        except AuditUnavailable as exc:
            log.warning("final audit checkpoint not written: %s", exc.description)

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued, write a final checkpoint, then stop the thread."""
        if not self._closed:
            self._closed = True
            for loop in list(self._pending):  # written this loop turn: still committed
                self._hand_off(loop)
            self._queue.put(None)
            self._thread.join(timeout)


LATE_MARK = "recorded late, after its deadline: "


def _marked_late(record: AuditRecord) -> AuditRecord:
    return replace(record, reason=LATE_MARK + record.reason)


def _store_down(error: AuditUnavailable) -> bool:
    """Whether the store itself failed (connection, lock, timeout: DB-API's
    OperationalError and InterfaceError), rather than refusing these records' data."""
    cause = error.__cause__
    if cause is None:  # nothing says the data was at fault: treat it as the store
        return True
    return any(kind.__name__ in ("OperationalError", "InterfaceError")
               for kind in type(cause).__mro__)


def _reduced(record: AuditRecord, error: AuditUnavailable) -> AuditRecord:
    """A deny the store refused, reduced to fields that are ours and cannot fail: ids,
    time, the reason code and the fingerprints."""
    return AuditRecord(
        decision_id=record.decision_id, decided_at=record.decided_at, decision="deny",
        reason_code=record.reason_code,
        reason=f"record reduced to its safe fields: the store refused it "
               f"({type(error.__cause__).__name__})",
        gateway_instance=record.gateway_instance, latency_ms=record.latency_ms,
        identity_fingerprint=record.identity_fingerprint, user_nkey=record.user_nkey,
        server_id=record.server_id)


def _chained(record: AuditRecord, row: Mapping[str, Any]) -> AuditRecord:
    return replace(record, chain_seq=row["chain_seq"], prev_hash=row["prev_hash"],
                   record_hash=row["record_hash"])


def _report(items: Sequence[_Item], error: AuditUnavailable | None) -> None:
    """Settle the callers' futures, one wake-up per event loop (not one per record)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, _, future, loop in items:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle_all, futures, error)
        except RuntimeError:  # the caller's loop is gone; nobody waits any more
            log.warning("audit caller loop closed before its commit was reported")


def _settle_all(futures: list[asyncio.Future[None]], error: AuditUnavailable | None) -> None:
    for future in futures:
        _settle(future, error)


def _settle(future: asyncio.Future[None], error: AuditUnavailable | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
