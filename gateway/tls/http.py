"""One httpx client per CA bundle, for the identity providers and STS.

httpx fixes ``verify`` per client, not per request, so issuers with a private CA each get
a client built for it; issuers on public CAs share one (httpx's default: certifi's
bundle). Redirects are never followed (jwks.py, aws_sts.py say why).
"""

from __future__ import annotations

from pathlib import Path

import httpx

from gateway.tls.context import TlsFiles, client_context

__all__ = ["HttpClients"]


class HttpClients:
    def __init__(self) -> None:
        self._clients: dict[Path | None, httpx.AsyncClient] = {}

    def for_ca(self, ca_file: Path | None) -> httpx.AsyncClient:
        """The client that trusts ``ca_file`` (None: the public CAs); TlsError names a
        file that cannot be loaded."""
        client = self._clients.get(ca_file)
        if client is None:
            verify = True if ca_file is None else client_context(TlsFiles(ca_file=ca_file))
            client = httpx.AsyncClient(follow_redirects=False, verify=verify)
            self._clients[ca_file] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
