"""Where a worker's proof comes from, fresh for every (re)connect.

nats-py calls the token callback synchronously on the event loop at every connect and
reconnect, so :meth:`proof` must be quick: sources that need network I/O (an OAuth2
token endpoint, refreshing AWS credentials) do it in :meth:`refresh`, which the
:func:`gateway.client.connect` helper runs in the background, and serve a cached value.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Protocol

from gateway.client.aws import aws_iam_proof
from gateway.client.credentials import fetch_client_credentials_token

__all__ = ["AwsIamCredentials", "ClientCredentialsToken", "CredentialSource", "OidcToken",
           "OidcTokenFile"]


class CredentialSource(Protocol):
    method: str

    def proof(self) -> str:
        """The proof to present now (called on the event loop: must not block)."""
        ...

    async def refresh(self) -> None:
        """Prepare the next proof ahead of time (network I/O goes here)."""
        ...


class OidcToken:
    """A token string the caller already has (and replaces with :attr:`token`)."""

    method = "oidc"

    def __init__(self, token: str) -> None:
        self.token = token

    def proof(self) -> str:
        return self.token

    async def refresh(self) -> None:
        return None


class OidcTokenFile:
    """A token file re-read at every connect: Kubernetes projected service-account tokens
    are rotated in place by the kubelet, so a reconnect always presents the current one."""

    method = "oidc"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def proof(self) -> str:
        token = self.path.read_text().strip()
        if not token:
            raise ValueError(f"token file {self.path} is empty")
        return token

    async def refresh(self) -> None:
        return None


class ClientCredentialsToken:
    """An OAuth2 client-credentials token (authlib), fetched in the background and
    refetched before it expires."""

    method = "oidc"

    def __init__(self, token_endpoint: str, client_id: str, client_secret: str, *,
                 lifetime_seconds: float = 300, **params: str) -> None:
        self._args = (token_endpoint, client_id, client_secret)
        self._params = params
        self._lifetime = lifetime_seconds
        self._token = ""
        self._fetched = 0.0

    def proof(self) -> str:
        if not self._token:
            raise RuntimeError("no token yet: await refresh() first (connect() does)")
        return self._token

    async def refresh(self) -> None:
        if self._token and time.monotonic() - self._fetched < self._lifetime / 2:
            return
        endpoint, client_id, secret = self._args
        params: dict[str, Any] = dict(self._params)
        self._token = await asyncio.to_thread(
            lambda: fetch_client_credentials_token(endpoint, client_id, secret, **params))
        self._fetched = time.monotonic()


class AwsIamCredentials:
    """A fresh signed sts:GetCallerIdentity proof per connect (proofs are single use).
    Signing is local; refreshing the session's temporary credentials (IRSA, ECS, instance
    profile) may call AWS, so :meth:`refresh` does that off the event loop."""

    method = "aws_iam"

    def __init__(self, *, gateway_id: str, region: str, sts_endpoint: str | None = None,
                 session: Any = None) -> None:
        import boto3

        self._session = session or boto3.Session()
        self._gateway_id, self._region, self._endpoint = gateway_id, region, sts_endpoint

    def proof(self) -> str:
        return aws_iam_proof(gateway_id=self._gateway_id, region=self._region,
                             sts_endpoint=self._endpoint, session=self._session)

    async def refresh(self) -> None:
        credentials = self._session.get_credentials()
        if credentials is not None:
            await asyncio.to_thread(credentials.get_frozen_credentials)
