"""Group commit into a hash chain: concurrent decisions share one transaction.

Records written during one turn of the event loop are handed to a dedicated thread as
one batch; the thread chains everything waiting (up to ``max_batch`` per transaction)
onto this instance's chain, appends it (with a signed checkpoint when one is due) and
then resolves each caller's future: a caller is released only after its record is
committed, and gets AuditUnavailable if the commit failed, so the decision becomes a deny
(fail closed, as Vault refuses requests it cannot audit). After a failure the chain head
is re-read from the store before the next batch, so a commit whose outcome was lost
cannot fork the chain; when the store comes back, writing resumes by itself.

With a checkpoint key the chain is anchored from its first record to its last
(``checkpoints.py``): a signed genesis (or start) checkpoint before the first record of
this run, heartbeat checkpoints while idle (the thread wakes for them), and a final one
on close. A name still held by another live writer (fresh heartbeat) is refused at start.
Each signed checkpoint is also handed to ``on_checkpoint`` (the anchor sinks), after its
commit and without waiting: an anchor never gates a decision.

Handing records over once per loop turn, not one by one, is what makes batches form: a
thread woken per record takes the GIL at the next chance and commits that record alone,
so under load nearly every decision paid a whole commit (measured in docs/benchmarks.md).

One exception saves the two thread hand-offs where they cost most, a connect that is
alone (``write(..., alone=True)``): when the caller is the only decision in flight and
the writer is idle, a SQLite record is committed on the calling thread, with a lock wait
of zero. A store that is locked (another process writing) hands the record to the thread
at once, which waits for the lock as always; a commit that took longer than
``_INLINE_SLOW_SECONDS`` (a slow disk) turns the shortcut off for a while, so the event
loop is never held up by the store more than once per ``_INLINE_PAUSE_SECONDS``. A
PostgreSQL commit always goes through the thread: it waits on the network.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from gateway.audit.chain import GENESIS, CheckpointSigner, record_hash
from gateway.audit.checkpoints import (
    CheckpointSchedule,
    RunInfo,
    lease_holder,
    run_info,
    sign_checkpoint,
)
from gateway.audit.record import AuditRecord
from gateway.audit.store import Appender, AuditStore, CheckpointRow
from gateway.errors import AuditUnavailable, ConfigError

__all__ = ["COMMIT_BUDGET_SECONDS", "DECISION_MARGIN_SECONDS", "AuditWriter"]

log = logging.getLogger(__name__)
# A record must be able to start its commit this long before its deadline (see write()).
COMMIT_BUDGET_SECONDS = 1.2
# A request is decided only with this much more than the commit budget left, by its own
# expiry and by its wait in the gateway's backlog: a decision that starts in time must
# still find its budget when its record reaches the writer (under a storm, a turn of the
# loop and a batch ahead of it). Without it a grant started with just the budget left
# was refused at its commit: a deny for an entitled worker (hundreds in a storm of
# 10,000 reconnecting workers, docs/benchmarks.md); now such a request is shed instead.
DECISION_MARGIN_SECONDS = 0.3
_Item = tuple[AuditRecord, float | None, asyncio.Future[None], asyncio.AbstractEventLoop]


class _Queued(enum.Enum):
    QUEUED = "queued"


QUEUED = _Queued.QUEUED  # an inline commit was not made: the record goes to the thread
# After a failed genesis or heartbeat, try again this soon (the store is likely down).
_CHECKPOINT_RETRY_SECONDS = 1.0
# An inline commit slower than this (the loop was held) pauses inline commits this long.
_INLINE_SLOW_SECONDS = 0.01
_INLINE_PAUSE_SECONDS = 10.0
# After an inline commit found the store locked or failing, leave it to the thread.
_INLINE_BUSY_PAUSE_SECONDS = 1.0
# SQLite's primary result codes for "another connection holds the lock".
_SQLITE_BUSY_CODES = frozenset({5, 6})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class AuditWriter:
    def __init__(
        self, store: AuditStore, *, instance: str, signer: CheckpointSigner | None = None,
        max_batch: int = 256, checkpoint_every: int = 1000,
        commit_budget_seconds: float = COMMIT_BUDGET_SECONDS,
        checkpoint_interval_seconds: float = 60.0,
        on_commit: Callable[[Sequence[AuditRecord]], None] | None = None,
        on_checkpoint: Callable[[CheckpointRow], None] | None = None,
        clock: Callable[[], float] = time.time,
        host: str | None = None, pid_alive: Callable[[int], bool] = _pid_alive,
    ) -> None:
        self._store = store
        self._instance = instance
        self._signer = signer
        self._max_batch = max_batch
        self._commit_budget = commit_budget_seconds
        self._on_commit = on_commit
        self._on_checkpoint = on_checkpoint
        self._clock = clock
        self._head: tuple[int, str] | None = None
        self._schedule = CheckpointSchedule(every=checkpoint_every,
                                            interval=checkpoint_interval_seconds, now=clock())
        self._run_info = RunInfo.new(host=host or socket.gethostname(), pid=os.getpid(),
                                     interval=checkpoint_interval_seconds)
        self._retry_at = 0.0
        self._queue: queue.Queue[list[_Item] | None] = queue.Queue()
        # Written during this turn of each caller's loop, not yet handed to the thread.
        self._pending: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        self._pending_lock = threading.Lock()
        self._appender = store.appender()
        # Inline commits (see the module doc): their own connection, which never waits
        # for a lock; the chain head and the appenders are the commit lock's.
        self._inline = store.appender(lock_wait_ms=0) if store.backend == "sqlite" else None
        self._inline_paused_until = 0.0
        self._commit_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._closed = False
        self.commits = 0
        self.records = 0
        self.failures = 0
        self.checkpoints = 0
        self.checkpoint_failures = 0
        self.inline_commits = 0
        self._last_ok = True
        if signer is not None:
            self._claim(pid_alive)
        self._thread.start()

    def _claim(self, pid_alive: Callable[[int], bool]) -> None:
        """Refuse to start a second live writer on this chain (two processes given the
        same ``instance`` would interleave one chain). Not a lock: two starting at the
        same instant both pass, and verify reports the interleaving (``interleaved``)."""
        try:
            latest = self._store.latest_checkpoint(self._instance)
        except AuditUnavailable as exc:
            log.warning("audit: could not check whether instance `%s` is in use: %s",
                        self._instance, exc.description)
            return
        alive = latest is not None and _holder_alive(latest, pid_alive)
        holder = lease_holder(latest, now=self._clock(), host=self._run_info.host, alive=alive)
        if holder is not None:
            raise ConfigError(f"audit instance `{self._instance}` is in use by pid "
                              f"{holder.pid} on `{holder.host}` (fresh heartbeat): give each "
                              "process its own `instance`", code="instance_in_use")

    @property
    def run(self) -> RunInfo:
        """This process's run (its nonce is in every checkpoint it signs)."""
        return self._run_info

    def wake(self) -> None:
        """Make the thread look at the checkpoint schedule now (tests with a fake clock)."""
        self._queue.put([])

    @property
    def healthy(self) -> bool:
        """False from a failed commit until the next successful one."""
        return self._last_ok

    def write(self, record: AuditRecord, deadline: float | None = None, *,
              alone: bool = False) -> asyncio.Future[None]:
        """Queue ``record`` now; the future resolves once it is committed, or raises
        AuditUnavailable.

        With a ``deadline`` (epoch seconds), a record whose commit could not start with
        ``commit_budget_seconds`` to spare is refused instead of written late: the store's
        own timeouts (SQLite lock wait 1 s, PostgreSQL statements 1 s) fit in the budget,
        so a "grant" is never recorded after the answer could still matter.

        ``alone``: the caller is the only decision in flight, so nothing would share the
        commit; the record may then be committed before this returns (the future is
        already done), see the module doc."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        outcome = self._commit_inline(record, deadline) if alone else QUEUED
        if outcome is not QUEUED:
            _settle(future, outcome)
        elif self._closed:
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

    def write_alone(self, record: AuditRecord,
                    deadline: float | None = None) -> asyncio.Future[None]:
        """:meth:`write` for a caller that is the only decision in flight."""
        return self.write(record, deadline, alone=True)

    def _commit_inline(self, record: AuditRecord,
                       deadline: float | None) -> AuditUnavailable | _Queued | None:
        """Commit ``record`` on the calling thread if that is safe and cheap now: None when
        committed, the error when the store failed it; ``QUEUED`` leaves it to the thread
        (not idle, locked by another writer, or close to its deadline: the thread also
        handles every late case)."""
        if not self._inline_ready(record, deadline) or not self._commit_lock.acquire(
                blocking=False):
            return QUEUED
        healthy = self._last_ok
        try:
            started = time.monotonic()
            error = self._commit_live([record], self._inline)
            busy = error is not None and _store_busy(error)
            if busy:
                self._last_ok = healthy  # locked by another writer, not failing
        finally:
            self._commit_lock.release()
        elapsed = time.monotonic() - started
        if error is not None:
            self._inline_paused_until = time.monotonic() + _INLINE_BUSY_PAUSE_SECONDS
            if busy:
                return QUEUED  # a locked store fails before its first insert: not written
            self.failures += 1
            log.error("audit write of 1 record failed: %s", error.description)
            return error
        self.inline_commits += 1
        if elapsed > _INLINE_SLOW_SECONDS:
            self._inline_paused_until = time.monotonic() + _INLINE_PAUSE_SECONDS
            log.warning("audit: a commit held the event loop for %.0f ms; committing "
                        "through the writer thread for the next %.0f s", elapsed * 1000,
                        _INLINE_PAUSE_SECONDS)
        return None

    def _inline_ready(self, record: AuditRecord, deadline: float | None) -> bool:
        if (self._inline is None or self._closed or time.monotonic() < self._inline_paused_until
                or record.gateway_instance != self._instance):
            return False
        if self._pending or not self._queue.empty():
            return False  # others are waiting: they share the thread's next commit
        if self._signer is not None and not self._schedule.opened:
            return False  # the thread opens the chain (genesis) first
        return deadline is None or deadline - self._clock() >= self._commit_budget

    def _hand_off(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._pending_lock:
            batch = self._pending.pop(loop, [])
        if batch:
            self._queue.put(batch)

    def _next_batch(self) -> list[_Item] | None:
        """What is queued, at least one hand-off (waiting for it); None to stop. While
        waiting, wakes for the heartbeat checkpoints; the chain is opened (genesis or
        start checkpoint) before its first batch is returned."""
        while True:
            try:
                first = self._queue.get(timeout=self._heartbeat_wait())
            except queue.Empty:
                first = []
            if first is None:
                return None
            if not first:
                with self._commit_lock:
                    self._heartbeat()
                continue
            batch = self._drain(list(first))
            with self._commit_lock:
                opened = self._opened_for(batch)
            if opened:
                return batch

    def _drain(self, batch: list[_Item]) -> list[_Item]:
        """``batch`` and every hand-off already queued behind it."""
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

    def _heartbeat_wait(self) -> float | None:
        if self._signer is None:
            return None
        now = self._clock()
        due = self._schedule.last[1] + self._schedule.interval if self._schedule.opened else now
        return max(0.0, max(due, self._retry_at) - now)

    def _heartbeat(self) -> None:
        """Open the chain if not yet done, else sign the head when the interval is up."""
        if self._signer is None or self._clock() < self._retry_at:
            return
        if not self._schedule.opened:
            self._open_chain()
            return
        try:
            if self._head is None:
                self._head = self._store.chain_head(self._instance) or (0, GENESIS)
            checkpoint = self._checkpoint(self._head)
            if checkpoint is not None:
                self._appender.append([], checkpoint)
                self._checkpointed(checkpoint)
        except AuditUnavailable as exc:
            self._checkpoint_failed("heartbeat", exc)

    def _open_chain(self) -> bool:
        """Sign and commit this run's first checkpoint: genesis for a new chain, start
        for one continued after a restart (it signs the head found)."""
        assert self._signer is not None
        try:
            found = self._store.chain_head(self._instance)
            head = found or (0, GENESIS)
            checkpoint = sign_checkpoint(
                self._signer, instance=self._instance,
                kind=self._schedule.opening_kind(found), head=head, now=self._clock(),
                run=self._run_info)
            self._appender.append([], checkpoint)
        except AuditUnavailable as exc:
            self._checkpoint_failed("genesis", exc)
            return False
        self._head = head
        self._checkpointed(checkpoint)
        return True

    def _opened_for(self, batch: list[_Item]) -> bool:
        """No record before the run's first checkpoint: a chain without its signed start
        could be anyone's. If it cannot be written, the batch is refused (fail closed)."""
        if self._signer is None or self._schedule.opened or self._open_chain():
            return True
        self.failures += len(batch)
        _report(batch, AuditUnavailable("audit chain could not be opened",
                                        code="audit_unavailable"))
        return False

    def _checkpoint_failed(self, what: str, exc: AuditUnavailable) -> None:
        self._head = None  # re-read: the commit's outcome is unknown
        self._retry_at = self._clock() + _CHECKPOINT_RETRY_SECONDS
        self.checkpoint_failures += 1
        log.error("audit %s checkpoint not written: %s", what, exc.description)

    def _checkpointed(self, checkpoint: CheckpointRow | None) -> None:
        """Bookkeeping after a checkpoint committed, and its hand-off to the anchors."""
        if checkpoint is None:
            return
        self._schedule.signed(checkpoint)
        self.checkpoints += 1
        if self._on_checkpoint is not None:
            try:
                self._on_checkpoint(checkpoint)
            except Exception:  # anchoring is retried by its own sink; never fails a commit
                log.exception("audit on_checkpoint hook failed")

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

    def _checkpoint(self, head: tuple[int, str], *, kind: str = "checkpoint",
                    force: bool = False) -> CheckpointRow | None:
        """A signed checkpoint of ``head`` if one is due (heartbeats sign an unchanged
        head too: their absence is what shows a gap)."""
        now = self._clock()
        if self._signer is None or not self._schedule.opened:
            return None
        if not force and not self._schedule.due(head[0], now):
            return None
        return sign_checkpoint(self._signer, instance=self._instance, kind=kind, head=head,
                               now=now, run=self._run_info)

    def _commit(self, records: Sequence[AuditRecord], appender: Appender) -> None:
        rows = self._chain(records)
        head = (int(rows[-1]["chain_seq"]), str(rows[-1]["record_hash"]))
        checkpoint = self._checkpoint(head)
        appender.append(rows, checkpoint)
        self._head = head
        self.commits += 1
        self.records += len(rows)
        self._checkpointed(checkpoint)
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

    def _commit_live(self, records: Sequence[AuditRecord],
                     appender: Appender | None = None) -> AuditUnavailable | None:
        error: AuditUnavailable | None = None
        try:
            self._commit(records, appender or self._appender)
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

    def _commit_locked(self, records: Sequence[AuditRecord]) -> AuditUnavailable | None:
        """The thread's commit. The lock is held for the commit only: callers are
        released after it, so a lone decision they go on to make finds the writer idle
        (it would otherwise race the thread for the lock and fall back to the thread)."""
        with self._commit_lock:
            return self._commit_live(records)

    def _write(self, items: list[_Item]) -> None:
        live, late = self._refuse_late(items)
        if late:
            _report(late, AuditUnavailable("audit store could not commit in time",
                                           code="audit_timeout"))
        if not live:
            return
        error = self._commit_locked([record for record, _, _, _ in live])
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
            error = self._commit_locked([record])
            if error is not None and not _store_down(error) and record.decision != "grant":
                # A deny is kept in the log at least by its safe fields; a grant that
                # cannot be stored is refused, and its caller records the deny instead.
                log.error("audit record %s refused by the store (%s); storing its safe "
                          "fields", record.decision_id, error.description)
                error = self._commit_locked([_reduced(record, error)])
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
        with self._commit_lock:
            self._final_checkpoint()
            self._appender.close()
            if self._inline is not None:
                self._inline.close()

    def _final_checkpoint(self) -> None:
        """On shutdown, sign the chain's end as final: a later truncation, or any record
        appended after it, is detectable."""
        if self._signer is None or not self._schedule.opened:
            return
        try:
            if self._head is None:
                self._head = self._store.chain_head(self._instance) or (0, GENESIS)
            checkpoint = self._checkpoint(self._head, kind="final", force=True)
            if checkpoint is not None:
                self._appender.append([], checkpoint)
                self._checkpointed(checkpoint)
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


def _store_busy(error: AuditUnavailable) -> bool:
    """Whether SQLite refused the write because another connection holds its lock."""
    cause = error.__cause__
    code = getattr(getattr(cause, "orig", None) or cause, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _SQLITE_BUSY_CODES


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


def _holder_alive(latest: CheckpointRow, pid_alive: Callable[[int], bool]) -> bool:
    info = run_info(latest)
    return info is not None and pid_alive(info.pid)


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
