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
closing on it would strand healthy workers (measured in the reconnect-storm benchmark).
A worker that is really denied keeps retrying every ``reconnect_time_wait`` and each
attempt is audited; the first connect still raises to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from nats import errors
from nats.aio.client import Client

from gateway.client.airflow import scope_from_airflow
from gateway.client.sources import CredentialSource
from gateway.envelope import Scope, build_envelope

__all__ = ["connect"]

log = logging.getLogger(__name__)
_EXPIRED = "authentication expired"
_DENIED = "authorization violation"


class _GatewayClient(Client):
    async def _process_err(self, err_msg: str) -> None:
        text = err_msg.lower()
        if _EXPIRED in text or (_DENIED in text and self._has_connected()):
            # Expired grant, or refused (or timed out) while coming back: try again with a
            # fresh credential instead of closing for good.
            await self._process_op_err(errors.Error(f"nats: {err_msg.strip(chr(39))}"))
            return
        await super()._process_err(err_msg)

    def _has_connected(self) -> bool:
        return any(server.did_connect for server in self._server_pool)


async def _refresh_forever(source: CredentialSource, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await source.refresh()
        except Exception as exc:  # keep the last good proof; the next attempt may work
            log.warning("credential refresh failed: %s", type(exc).__name__)


def jittered_backoff(base: float, cap: float) -> Callable[[list[Any], dict[str, Any]], tuple[
        Any, float]]:
    """nats-py ``reconnect_to_server_handler``: before the n-th attempt since the last
    success, wait a random time in [0, min(cap, base * 2**n)] ("full jitter"). When
    nats-server restarts, thousands of workers lose it at the same instant; spreading
    their returns lets the gateway answer them instead of all timing out together."""
    def choose(servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        server = min(servers, key=lambda s: s.reconnects)
        ceiling = min(cap, base * 2 ** min(server.reconnects, 16))
        return server, random.uniform(0, ceiling)  # noqa: S311 - spreading load, not secrecy

    return choose


async def connect(servers: str | list[str], source: CredentialSource, *,
                  scope: Scope | None = None, context: Mapping[str, Any] | None = None,
                  refresh_seconds: float = 60.0, **options: Any) -> Client:
    """Connect through the gateway as ``scope`` (default: from Airflow's task context).

    ``options`` go to ``nats.aio.client.Client.connect``; reconnecting forever is the
    default, as a worker should come back after every expiry or server restart, with
    jittered exponential backoff from ``reconnect_time_wait`` up to 8 s between attempts.
    """
    requested = scope or scope_from_airflow(context)
    await source.refresh()

    def envelope() -> str:
        return build_envelope(source.method, source.proof(), requested)

    refresher = asyncio.create_task(_refresh_forever(source, refresh_seconds))
    user_closed: Callable[[], Awaitable[None]] | None = options.pop("closed_cb", None)

    async def closed() -> None:
        refresher.cancel()
        if user_closed is not None:
            await user_closed()

    options.setdefault("max_reconnect_attempts", -1)
    options.setdefault("reconnect_time_wait", 0.5)
    options.setdefault("reconnect_to_server_handler",
                       jittered_backoff(options["reconnect_time_wait"], cap=8.0))
    client = _GatewayClient()
    try:
        await client.connect(servers, token=envelope, closed_cb=closed, **options)
    except BaseException:
        refresher.cancel()
        with contextlib.suppress(Exception):
            await client.close()
        raise
    return client
