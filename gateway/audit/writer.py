"""Group commit: many concurrent decisions share one transaction, each waits for it.

A dedicated thread drains a queue, appends everything waiting (up to ``max_batch``) in
one transaction, and then resolves each caller's future: a caller is released only
after its record is committed, and gets AuditUnavailable if the commit failed, so the
decision becomes a deny (fail closed, as Vault refuses requests it cannot audit).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading

from gateway.audit.record import AuditRecord
from gateway.audit.store import AuditStore
from gateway.errors import AuditUnavailable

__all__ = ["AuditWriter"]

log = logging.getLogger(__name__)
_Item = tuple[AuditRecord, asyncio.Future[None], asyncio.AbstractEventLoop]


class AuditWriter:
    def __init__(self, store: AuditStore, *, max_batch: int = 256) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._closed = False
        self.commits = 0
        self.failures = 0
        self._thread.start()

    async def write(self, record: AuditRecord) -> None:
        """Return once ``record`` is committed; raise AuditUnavailable otherwise."""
        if self._closed:
            raise AuditUnavailable("audit writer is closed", code="audit_unavailable")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((record, future, loop))
        await future

    def _next_batch(self) -> list[_Item] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # finish this batch, then stop
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            error: AuditUnavailable | None = None
            try:
                self._store.append([record for record, _, _ in batch])
                self.commits += 1
            except AuditUnavailable as exc:
                error = exc
            except Exception as exc:  # the writer must survive anything a driver raises
                log.exception("unexpected audit store error")
                error = AuditUnavailable(f"audit store error: {type(exc).__name__}",
                                         code="audit_unavailable")
            if error is not None:
                self.failures += len(batch)
            for _, future, loop in batch:
                try:
                    loop.call_soon_threadsafe(_settle, future, error)
                except RuntimeError:  # the caller's loop is gone; nobody waits any more
                    log.warning("audit caller loop closed before its commit was reported")

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout)


def _settle(future: asyncio.Future[None], error: AuditUnavailable | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
