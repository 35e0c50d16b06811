"""SSL contexts from files, with one-line errors that name the file and never its content.

A client context always verifies the peer and its host name (``ssl.create_default_context``):
there is no setting that turns verification off. ``ca_file`` replaces the system's CA
store (a private CA); a client certificate is for servers that require one (mutual TLS).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError, TlsError

__all__ = ["TlsFiles", "check_server_files", "client_context"]


@dataclass(frozen=True)
class TlsFiles:
    """What a TLS client trusts and presents. ``key_file`` None: the key is in
    ``cert_file``. ``server_name``: the host name to check the server's certificate
    against when it differs from the address connected to (an IP address, a load
    balancer's name)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if self.key_file is not None and self.cert_file is None:
            raise TlsError("a tls key_file needs its cert_file")

    @property
    def trust(self) -> str:
        """Which CAs are trusted, as error messages say it."""
        return f"`{self.ca_file}`" if self.ca_file else "the system's ca store"

    def context(self) -> ssl.SSLContext:
        return client_context(self)


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        if exc.reason == "KEY_VALUES_MISMATCH":
            return "the key does not match the certificate"
        return f"not a usable pem file ({(exc.reason or 'unknown').lower()})"
    return (exc.strerror or type(exc).__name__).lower()


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """A verifying client context; TlsError names the file that cannot be loaded."""
    try:
        context = ssl.create_default_context(
            cafile=str(files.ca_file) if files.ca_file else None)
    except OSError as exc:
        raise TlsError(f"cannot load tls ca_file `{files.ca_file}`: {_reason(exc)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.cert_file is not None:
        try:
            context.load_cert_chain(files.cert_file, files.key_file)
        except OSError as exc:
            shown = f"`{files.cert_file}`" + (f" / `{files.key_file}`" if files.key_file else "")
            raise TlsError(f"cannot load tls client certificate {shown}: "
                           f"{_reason(exc)}") from None
    return context


def check_server_files(cert_file: Path, key_file: Path | None, *, what: str) -> None:
    """Load a server certificate and key once, so that a bad file stops the start with one
    line naming it (uvicorn would fail later, inside a task, with a traceback)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except OSError as exc:
        shown = f"`{cert_file}`" + (f" / `{key_file}`" if key_file else "")
        raise ConfigError(f"{what} cannot load its tls certificate {shown}: "
                          f"{_reason(exc)}") from None
