"""A nats-py client that keeps TLS when TLS was asked for.

nats-py upgrades a connection to TLS only when the server's INFO says ``tls_required``:
given a ``tls://`` URL (or a TLS context) and a server that does not require TLS, it
sends CONNECT, and the bearer token in it, in clear. :class:`TlsCheckedClient` refuses
that server before CONNECT is written.

nats-py also retries a failed handshake like any network error: with
``max_reconnect_attempts=-1`` a wrong CA, an expired certificate or a wrong host name
retries forever and says nothing to the caller. Here the first connect ends with
:class:`gateway.errors.TlsError` naming the address and the cause; once connected, a
failure while reconnecting is reported (one line) to ``error_cb`` and retried, since a
renewed certificate on the server fixes it without a restart of every client.
"""

from __future__ import annotations

from typing import Any

from nats import errors
from nats.aio.client import Client

from gateway.errors import TlsError
from gateway.tls.failures import describe_tls_failure, tls_failure_in

__all__ = ["TlsCheckedClient", "TlsReconnectFailure"]


class TlsReconnectFailure(errors.Error):
    """A TLS failure while reconnecting: a nats error, so nats-py reports it and retries."""


class TlsCheckedClient(Client):
    def __init__(self, *, trust: str = "the configured ca file") -> None:
        super().__init__()
        self._trust = trust
        self._tls_accepted_once = False

    def _tls_wanted(self) -> bool:
        server = self._current_server
        return "tls" in self.options or (server is not None and server.uri.scheme == "tls")

    def _address(self) -> str:
        server = self._current_server
        if server is None:
            return "nats-server"
        return f"{server.uri.hostname}:{server.uri.port}"  # never the URL's user:password

    def _checked_host(self) -> str:
        server = self._current_server
        return str(self.options.get("tls_hostname")
                   or (server.uri.hostname if server is not None else ""))

    def _failure(self, cause: str) -> Exception:
        message = f"tls to `{self._address()}` failed: {cause}"
        if self._tls_accepted_once:
            return TlsReconnectFailure(f"nats: {message}")
        return TlsError(message)

    def _drop_transport(self) -> None:
        """Abort the socket of a failed handshake. asyncio's ``start_tls`` took it over
        from nats-py's stream writer, whose close would then wait forever (nats-py's own
        retry and ``close()`` both hang there); the next attempt opens a new transport."""
        writer = getattr(self._transport, "_io_writer", None)
        if writer is not None:
            writer.transport.abort()
        self._transport = None

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection and self._tls_wanted() and not info.get("tls_required"):
            raise self._failure("the server does not require tls, and the credential in "
                                "CONNECT would travel in clear")
        await super()._process_info(info, initial_connection)

    async def _process_connect_init(self) -> None:
        try:
            await super()._process_connect_init()
        except (OSError, errors.Error) as exc:
            found = tls_failure_in(exc)
            if found is None:
                raise
            self._drop_transport()
            raise self._failure(describe_tls_failure(found, host=self._checked_host(),
                                                     trust=self._trust)) from None
        self._tls_accepted_once = True
