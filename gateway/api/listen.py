"""The audit API's listening socket, bound before the gateway takes any auth request.

Binding here rather than inside uvicorn turns "address already in use" into one
ConfigError naming the address, raised before the gateway joins the queue group;
uvicorn's own bind exits the process with ``SystemExit(3)`` from inside a task.
"""

from __future__ import annotations

import socket

from gateway.errors import ConfigError

__all__ = ["listen_socket"]


def listen_socket(host: str, port: int, what: str = "audit api") -> socket.socket:
    """A bound TCP socket for ``host:port`` (port 0: any free port), ready for uvicorn;
    ``what`` names the listener in the error (the API, or its separate /metrics)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise _cannot_listen(what, host, port, exc) from exc
    try:
        # As uvicorn does: a restart may bind while the last run's connections linger in
        # TIME_WAIT. A socket listening on the port still refuses the bind.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise _cannot_listen(what, host, port, exc) from exc
    return sock


def _cannot_listen(what: str, host: str, port: int, exc: OSError) -> ConfigError:
    reason = (exc.strerror or str(exc)).lower()
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address
    return ConfigError(f"{what} cannot listen on `{shown}:{port}`: {reason}")
