"""`connect(...)`: a nats-py client that presents a fresh credential on every (re)connect.

nats-server disconnects a user when its JWT expires (the grant's TTL). The client then
reconnects by itself: nats-py calls the token callback again, which builds a new
envelope from the credential source, so the gateway decides again on a fresh proof and
subscriptions are restored. The caller does nothing.

nats-py (2.16) closes the client on the server's ``-ERR 'User Authentication Expired'``
instead of reconnecting; the Go client reconnects. :class:`_GatewayClient` makes that
error a reconnect, as in Go. It does the same with ``Authorization Violation`` once the
client has been connected: after a nats-server restart, thousands of workers come back at
once, and a request that timed out in that storm is reported exactly as a deny is, so
closing on the first one would strand healthy workers (measured in the reconnect-storm
benchmark).

Refusals are bounded (:mod:`gateway.client.refusal`): nats-py retries a refused first
connect forever with ``max_reconnect_attempts=-1`` (and ``0`` does not stop it), and
after a connect it retries refusals as fast as any other failure. Here the first connect
raises :class:`GatewayRefused` after a few refusals, and once connected the client waits
longer after each refusal and closes after a bounded number of them, so a worker whose
rights were revoked does not write deny records forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from nats import errors
from nats.aio.client import Client

from gateway.client.airflow import scope_from_airflow
from gateway.client.refusal import (
    UNREACHABLE_CAP_SECONDS,
    GatewayRefused,
    RefusalPolicy,
    backoff_delay,
)
from gateway.client.sources import CredentialSource
from gateway.client.subjects import inbox_prefix
from gateway.envelope import Scope, build_envelope
from gateway.tls.context import TlsFiles
from gateway.tls.natsclient import TlsCheckedClient

__all__ = ["connect"]

log = logging.getLogger(__name__)
_EXPIRED = "authentication expired"
_DENIED = "authorization violation"


class _GaveUp(GatewayRefused, errors.NoServersError):
    """A :class:`GatewayRefused` that nats-py's reconnect loop takes as "no servers left":
    it stores it as ``last_error`` and closes the client, running the closed callback."""


class _GatewayClient(TlsCheckedClient):
    def __init__(self, scope: Scope, refusals: RefusalPolicy, *, trust: str) -> None:
        super().__init__(trust=trust)
        self._scope = scope
        self._refusals = refusals
        self._refused = 0  # refusals since the last accepted CONNECT
        self._accepted_once = False  # nats-py's `did_connect` is set on reconnects only
        self._first_connect_wait = 0.0

    async def _process_err(self, err_msg: str) -> None:
        text = err_msg.lower()
        if _EXPIRED in text or (_DENIED in text and self._accepted_once):
            # Expired grant, or refused (or timed out) while coming back: try again with a
            # fresh credential instead of closing for good.
            await self._process_op_err(errors.Error(f"nats: {err_msg.strip(chr(39))}"))
            return
        await super()._process_err(err_msg)

    async def _process_connect_init(self) -> None:
        # nats-py sends CONNECT and PING here; a refusal comes back instead of the PONG.
        try:
            await super()._process_connect_init()
        except errors.Error as exc:
            if _DENIED in str(exc).lower():
                await self._count_refusal()
            raise
        self._refused = 0
        self._accepted_once = True

    async def _count_refusal(self) -> None:
        self._refused += 1
        if not self._accepted_once:
            if self._refused >= self._refusals.connect_attempts:
                # Not a nats error: nats-py's connect loop lets it through to the caller.
                raise GatewayRefused(self._scope, self._refused, reconnecting=False)
            self._first_connect_wait = self._base() + backoff_delay(
                self._refused, self._base(), self._refusals.backoff_cap_seconds)
            return
        if self._refused >= self._refusals.give_up_after:
            gave_up = _GaveUp(self._scope, self._refused, reconnecting=True)
            await self._error_cb(gave_up)
            raise gave_up

    async def _select_next_server(self) -> None:
        # Used by the first connect: after a refusal, wait reconnect_time_wait plus a
        # jittered extra (never shorter than nats-py's own wait, so it adds none).
        wait, self._first_connect_wait = self._first_connect_wait, 0.0
        if wait:
            await asyncio.sleep(wait)
        await super()._select_next_server()

    def choose_server(self, servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        """nats-py ``reconnect_to_server_handler``: before the n-th attempt since the last
        success, a random wait up to ``reconnect_time_wait * 2**n``, capped at 8 s while
        nats-server is unreachable (a restart: come back soon) and at the policy's cap
        once the gateway has refused (a revoked worker should not hammer it)."""
        server = min(servers, key=lambda s: s.reconnects)
        cap = self._refusals.backoff_cap_seconds if self._refused else UNREACHABLE_CAP_SECONDS
        return server, backoff_delay(server.reconnects, self._base(), cap)

    def refusal(self) -> GatewayRefused | None:
        """The refusal to report if the connect failed after the gateway refused it."""
        if not self._refused:
            return None
        return GatewayRefused(self._scope, self._refused, reconnecting=False)

    def _base(self) -> float:
        return float(self.options.get("reconnect_time_wait", 0.5))


async def _refresh_forever(source: CredentialSource, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await source.refresh()
        except Exception as exc:  # keep the last good proof; the next attempt may work
            log.warning("credential refresh failed: %s", type(exc).__name__)


async def connect(servers: str | list[str], source: CredentialSource, *,
                  scope: Scope | None = None, context: Mapping[str, Any] | None = None,
                  refresh_seconds: float = 60.0, refusals: RefusalPolicy | None = None,
                  tls_ca_file: str | Path | None = None, tls_cert_file: str | Path | None = None,
                  tls_key_file: str | Path | None = None, **options: Any) -> Client:
    """Connect through the gateway as ``scope`` (default: from Airflow's task context).

    ``options`` go to ``nats.aio.client.Client.connect``; reconnecting forever is the
    default, as a worker should come back after every expiry or server restart, with
    jittered exponential backoff from ``reconnect_time_wait``. ``refusals`` bounds what
    the gateway's refusals cost (:class:`RefusalPolicy`): the first connect raises
    :class:`GatewayRefused`; later, the client gives up, reports it to ``error_cb`` and
    closes.

    TLS: a ``tls://`` URL, or any ``tls_*`` file, connects over TLS, verifying the
    server's certificate against ``tls_ca_file`` (default: the system's CA store) and its
    host name (``tls_hostname`` to check another name); ``tls_cert_file`` and
    ``tls_key_file`` present a client certificate (mutual TLS). A server that does not
    require TLS is then refused, and a certificate failure raises :class:`TlsError`
    naming the address and the cause, instead of nats-py retrying it forever.

    Replies (requests, JetStream PubAcks and pull deliveries) come to the scope's private
    inbox ``_INBOX.<dag>.<task>`` (:func:`gateway.client.subjects.inbox_prefix`), the
    only inbox a policy grants; pass ``inbox_prefix`` to override. Without the grant a
    request's reply subscription is refused, as the default ``_INBOX.<nuid>`` would be.
    """
    requested = scope or scope_from_airflow(context)
    files = TlsFiles(ca_file=_path(tls_ca_file), cert_file=_path(tls_cert_file),
                     key_file=_path(tls_key_file))
    if files.ca_file or files.cert_file:
        options.setdefault("tls", files.context())
    await source.refresh()

    def envelope() -> str:
        return build_envelope(source.method, source.proof(), requested)

    refresher = asyncio.create_task(_refresh_forever(source, refresh_seconds))
    user_closed: Callable[[], Awaitable[None]] | None = options.pop("closed_cb", None)

    async def closed() -> None:
        refresher.cancel()
        if user_closed is not None:
            await user_closed()

    client = _GatewayClient(requested, refusals or RefusalPolicy(), trust=files.trust)
    options.setdefault("inbox_prefix", inbox_prefix(requested))
    options.setdefault("max_reconnect_attempts", -1)
    options.setdefault("reconnect_time_wait", 0.5)
    options.setdefault("reconnect_to_server_handler", client.choose_server)
    try:
        await client.connect(servers, token=envelope, closed_cb=closed, **options)
    except errors.NoServersError as exc:
        # max_reconnect_attempts ran out; if the last failures were refusals, say so.
        await _abandon(client, refresher)
        refused = client.refusal()
        if refused is None:
            raise
        raise refused from exc
    except BaseException:
        await _abandon(client, refresher)
        raise
    return client


def _path(value: str | Path | None) -> Path | None:
    return None if value is None or value == "" else Path(value)


async def _abandon(client: Client, refresher: asyncio.Task[None]) -> None:
    refresher.cancel()
    with contextlib.suppress(Exception):
        await client.close()
