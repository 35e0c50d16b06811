"""The NATS side of the callout: subscribe to ``$SYS.REQ.USER.AUTH`` and answer.

Replicas share the queue group, so nats-server spreads requests over them. A fixed pool
of ``max_in_flight`` workers decides requests, newest first (:class:`_Backlog`), so a
reconnect storm queues in bounded memory and nats-py's reader is never blocked. A request
that queued past the point where its record could still be committed before nats-server's
auth timeout is dropped unanswered (shed) rather than decided too late.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import re
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from gateway.callout.handler import CalloutHandler
from gateway.errors import TlsError
from gateway.metrics import Metrics
from gateway.natsjwt.nkeys import Prefix, SigningKeyPair
from gateway.tls.natsclient import TlsCheckedClient

__all__ = ["AUTH_SUBJECT", "CalloutService", "shown_url"]

log = logging.getLogger(__name__)
AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"


_Request = tuple[Msg, float]  # (message, monotonic arrival time)


class _Backlog:
    """Auth requests waiting for a worker, handed out newest first.

    Under overload, first-in-first-out makes every request wait for the whole queue,
    so all of them reach nats-server's timeout together and nothing useful is done;
    newest-first serves the requests that can still make it and lets old ones age out
    (they are shed when reached, or dropped from the bottom when the backlog is full).
    Without a backlog the order makes no difference."""

    def __init__(self, limit: int) -> None:
        self._items: collections.deque[_Request] = collections.deque()
        self._idle: collections.deque[asyncio.Future[_Request]] = collections.deque()
        self._limit = limit
        self.handed = 0  # given to a waiting worker that has not resumed yet

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: _Request) -> _Request | None:
        """Hand ``item`` to an idle worker, or keep it; returns the oldest request if it
        had to make room."""
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():  # a cancelled worker leaves a cancelled future
                waiter.set_result(item)
                self.handed += 1
                return None
        self._items.append(item)
        return self._items.popleft() if len(self._items) > self._limit else None

    def clear(self) -> int:
        """Forget every waiting request (they were not decided); how many there were."""
        count = len(self._items)
        self._items.clear()
        return count

    async def get(self) -> _Request:
        if self._items:
            return self._items.pop()
        waiter: asyncio.Future[_Request] = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        try:
            return await waiter
        finally:
            if waiter.done() and not waiter.cancelled():
                self.handed -= 1


def shown_url(url: str) -> str:
    """``url`` without user or password, fit for a log line."""
    return re.sub(r"//[^/@]*@", "//", url)


class CalloutService:
    def __init__(
        self, handler: CalloutHandler, *, url: str, user_seed: str,
        queue_group: str = "nats-gateway", max_in_flight: int = 256,
        name: str = "nats-gateway", metrics: Metrics | None = None,
        user_credentials: tuple[str, str] | None = None, shed_after_seconds: float = 0.8,
        tls: dict[str, Any] | None = None, tls_trust: str = "the system's ca store",
    ) -> None:
        # nats-py TLS options (`tls` context, `tls_hostname`) and what the context trusts.
        self._tls = tls or {}
        self._tls_trust = tls_trust
        # Operator mode: (user JWT file, seed file); config mode: the nkey seed alone.
        self._credentials = user_credentials
        self._metrics = metrics
        self._handler = handler
        self._url = url
        self._seed = user_seed
        self._queue = queue_group
        self._name = name
        self._backlog = _Backlog(limit=max(1024, 64 * max_in_flight))
        handler.nothing_queued = self._nothing_queued
        self._workers: list[asyncio.Task[None]] = []
        self._pool_size = max_in_flight
        self._busy = 0
        self._idle = asyncio.Event()  # set whenever no request is being decided
        self._idle.set()
        self._nc: Client | None = None
        self._sub: Subscription | None = None
        self._subscribed = False
        self.handled = 0
        self.shed = 0
        self._shed_after = shed_after_seconds
        self._last_shed_log = 0.0
        self._stopping = False
        self._waiting = False  # connecting for the first time
        self._said_waiting = False

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def subscribed(self) -> bool:
        # nats-py resubscribes by itself after a reconnect; while away, nothing is served.
        return self.connected and self._subscribed

    async def start(self) -> None:
        """Connect, retrying until nats-server answers (cancel to give up: a signal during
        the wait must still stop the process), then subscribe. A TLS failure (untrusted,
        expired or misnamed certificate; a server without TLS when TLS is configured)
        ends the wait with TlsError: retrying would not fix it."""
        auth: dict[str, Any] = (self._jwt_auth(self._credentials[0]) if self._credentials
                                else {"nkeys_seed_str": self._seed})
        self._nc = TlsCheckedClient(trust=self._tls_trust)
        self._waiting = True
        try:
            # nats-py annotates the wait as int but sleeps for it: half a second is fine.
            await self._nc.connect(
                self._url, name=self._name, **auth,
                max_reconnect_attempts=-1, reconnect_time_wait=0.5,  # type: ignore[arg-type]
                error_cb=self._on_error, disconnected_cb=self._on_disconnect,
                reconnected_cb=self._on_reconnect, **self._tls,
            )
        except (asyncio.CancelledError, TlsError):
            await self._abandon()
            raise
        self._waiting = False
        log.info("connected to nats at %s", shown_url(self._url))
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._pool_size)]
        self._sub = await self._nc.subscribe(AUTH_SUBJECT, queue=self._queue,
                                             cb=self._on_message)
        await self._nc.flush()
        self._subscribed = True
        log.info("subscribed to %s in queue group %s", AUTH_SUBJECT, self._queue)

    async def _abandon(self) -> None:
        """Give up a connect still retrying: close whatever it had opened."""
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.close()
            except Exception:  # nothing was connected; there is nothing left to release
                log.debug("closing an unfinished nats connection failed", exc_info=True)

    def _jwt_auth(self, jwt_file: str) -> dict[str, Any]:
        """Operator mode: present the user JWT (re-read at every connect, so a renewed one
        is picked up) and sign the server's nonce with the seed."""
        pair = SigningKeyPair.from_seed(self._seed, Prefix.USER)

        def user_jwt() -> bytearray:
            return bytearray(Path(jwt_file).read_text().strip().encode())

        def sign_nonce(nonce: str) -> bytes:
            return base64.b64encode(pair.sign(nonce.encode()))

        return {"user_jwt_cb": user_jwt, "signature_cb": sign_nonce}

    def _nothing_queued(self) -> bool:
        """No other request is being decided or waits to be: neither in the backlog, nor
        handed to a worker that has not started, nor read by nats-py and not yet ours."""
        return (self._busy <= 1 and not self._backlog and not self._backlog.handed
                and (self._sub is None or not self._sub.pending_msgs))

    async def _on_message(self, msg: Msg) -> None:
        dropped = self._backlog.put((msg, time.monotonic()))
        if dropped is not None:
            self._shed(time.monotonic() - dropped[1])

    async def _work(self) -> None:
        while True:
            msg, arrived = await self._backlog.get()
            self._busy += 1
            self._idle.clear()
            try:
                await self._serve(msg, arrived)
            finally:
                self._busy -= 1
                if not self._busy:
                    self._idle.set()

    async def _serve(self, msg: Msg, arrived: float) -> None:
        waited = time.monotonic() - arrived
        if waited >= self._shed_after:
            self._shed(waited)
            return
        if self._metrics is not None:
            self._metrics.in_flight.inc()
        try:
            await self._handler.answer(msg.data, msg.headers, msg.respond,
                                       queued_seconds=waited)
            self.handled += 1
        except Exception:  # one request must never take the service down
            log.exception("failed to answer an auth request")
        finally:
            if self._metrics is not None:
                self._metrics.in_flight.dec()

    def _shed(self, waited: float) -> None:
        """Drop a request that queued too long to be decided and recorded before
        nats-server's auth timeout: its record would be refused as late anyway, so
        deciding it would only delay the requests behind it. Unanswered, it is denied by
        nats-server at the timeout and the client retries (a reconnect storm converges
        instead of every request expiring in the queue). Not a decision: counted, not
        audited."""
        self.shed += 1
        if self._metrics is not None:
            self._metrics.shed.inc()
        now = time.monotonic()
        if now - self._last_shed_log >= 1.0:  # one line a second, however many are shed
            self._last_shed_log = now
            log.warning("overloaded: dropping auth requests that queued %.2fs or more "
                        "(%d so far); nats-server denies them at its timeout and clients "
                        "retry", waited, self.shed)

    async def publish(self, subject: str, payload: bytes) -> None:
        """Publish on the gateway's own connection (audit streaming); dropped when down."""
        if self._nc is not None and self._nc.is_connected:
            await self._nc.publish(subject, payload)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop taking requests, answer every request already being decided, then close.

        The order matters: closing first (nats-py's drain closes as soon as the
        subscription is drained, and ours hands messages to the backlog at once) would
        commit "grant" records for answers that can no longer leave. Requests still
        waiting in the backlog were not decided: they are dropped unanswered and
        unrecorded, as shedding does; nats-server denies them at its timeout and the
        clients retry, on another replica or on this one once it is back."""
        if self._nc is None:
            return
        self._stopping = True
        self._subscribed = False
        await self._unsubscribe()
        dropped = self._backlog.clear()
        if dropped:
            log.warning("stopping: %d auth request(s) not yet decided dropped unanswered",
                        dropped)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.error("stopping with %d decision(s) still in flight after %.1fs",
                      self._busy, timeout)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        await self._close()

    async def _unsubscribe(self) -> None:
        if self._sub is None:
            return
        try:
            await self._sub.unsubscribe()
        except Exception:  # already closed or disconnected: nothing more arrives either way
            log.debug("unsubscribe failed", exc_info=True)
        self._sub = None

    async def _close(self) -> None:
        assert self._nc is not None
        try:
            if self._nc.is_connected:
                await self._nc.flush(timeout=1)  # the last answers, before the socket goes
        except Exception:
            log.debug("flush before close failed", exc_info=True)
        if not self._nc.is_closed:
            await self._nc.close()
        self._nc = None

    async def _on_error(self, exc: Any) -> None:
        if self._waiting:
            # nats-py reports every failed attempt (two a second): say once that we wait.
            if not self._said_waiting:
                self._said_waiting = True
                log.warning("waiting for nats at %s: %s; retrying every 0.5s",
                            shown_url(self._url), exc)
            return
        log.warning("nats error: %s", exc)

    async def _on_disconnect(self) -> None:
        if not self._stopping and not self._waiting:  # never connected: nothing was lost
            log.warning("disconnected from nats, reconnecting")

    async def _on_reconnect(self) -> None:
        log.info("reconnected to nats")
