"""The JWKS cache: the only OIDC network code.

PyJWT's ``PyJWKClient`` refetches on every unknown ``kid`` without a cooldown and drops
its cache when a fetch fails (DESIGN.md section 5), so a flood of forged ``kid`` values
becomes a flood against the IdP, and an IdP outage locks everyone out. This cache:

- discovers ``jwks_uri`` (OIDC Discovery 1.0; the document's ``issuer`` must equal the
  configured one) unless it is configured;
- refreshes keys when older than ``jwks_refresh_seconds`` in the background, serving the
  keys it has meanwhile;
- refetches for an unknown ``kid`` at most once per ``jwks_refetch_cooldown_seconds``;
- shares one in-flight fetch between concurrent requests;
- keeps serving known keys when the issuer is down;
- never follows redirects, bounds time and response size.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.oidc.discovery import get_well_known_url

from gateway.errors import IdentityError, IdentityUnavailable
from gateway.identity.oidc_config import OidcIssuerConfig, is_loopback_url
from gateway.tls.failures import describe_tls_failure, tls_failure_in

__all__ = ["MAX_DOCUMENT_BYTES", "JwksCache"]

log = logging.getLogger(__name__)
MAX_DOCUMENT_BYTES = 512 * 1024


class JwksCache:
    """Keys of one issuer, by ``kid``."""

    def __init__(
        self, config: OidcIssuerConfig, http: httpx.AsyncClient, *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._http = http
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        self._jwks_uri = config.jwks_uri
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        self.fetches = 0
        self.failures = 0

    @property
    def issuer(self) -> str:
        return self._config.issuer

    async def get(self, kid: str | None) -> dict[str, Any]:
        """The JWK for ``kid``; refreshes as the rules above allow."""
        if self._fetched_at is None:
            await self._refresh(required=True)
        elif self._is_stale():
            self._start_background_refresh()
        key = self._lookup(kid)
        if key is None and self._may_refetch():
            await self._refresh(required=False)
            key = self._lookup(kid)
        if key is None:
            raise IdentityError(f"no key `{kid}` in the jwks of `{self.issuer}`",
                                code="unknown_key")
        return key

    def is_current(self, kid: str | None, jwk: dict[str, Any]) -> bool:
        """Whether ``jwk`` is still what the issuer publishes for ``kid`` (for a cached
        token); a stale set is refreshed in the background, as :meth:`get` does."""
        if self._is_stale():
            self._start_background_refresh()
        return self._lookup(kid) == jwk

    async def warm(self) -> None:
        """Fetch once at start; failure is logged, requests will retry."""
        try:
            await self._refresh(required=True)
        except IdentityUnavailable as exc:
            log.warning("jwks of %s not available at start: %s", self.issuer, exc.description)

    def _lookup(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            # A token without kid is only unambiguous when the issuer publishes one key.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _is_stale(self) -> bool:
        return (self._fetched_at is not None
                and self._clock() - self._fetched_at > self._config.jwks_refresh_seconds)

    def _may_refetch(self) -> bool:
        if self._attempted_at is None:
            return True
        return self._clock() - self._attempted_at >= self._config.jwks_refetch_cooldown_seconds

    def _start_background_refresh(self) -> None:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch_logged())

    async def _fetch_logged(self) -> None:
        try:
            await self._fetch()
        except IdentityUnavailable as exc:
            log.warning("jwks refresh of %s failed, keeping %d cached keys: %s",
                        self.issuer, len(self._keys), exc.description)

    async def _refresh(self, *, required: bool) -> None:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch())
        try:
            # shield: one caller timing out must not cancel the fetch others wait on
            await asyncio.shield(self._inflight)
        except IdentityUnavailable:
            if required and not self._keys:
                raise
            log.warning("jwks of %s unreachable, using %d cached keys", self.issuer,
                        len(self._keys))

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        self.fetches += 1
        try:
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover()
            document = await self._get_json(self._jwks_uri)
            self._keys = _parse_jwks(document, self.issuer)
            self._fetched_at = self._clock()
        except IdentityUnavailable:
            self.failures += 1
            raise

    async def _discover(self) -> str:
        document = await self._get_json(get_well_known_url(self.issuer, external=True))
        if document.get("issuer") != self.issuer:
            raise IdentityUnavailable(
                f"discovery document of `{self.issuer}` names another issuer",
                code="bad_discovery")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not (
            jwks_uri.startswith("https://") or is_loopback_url(jwks_uri)
        ):
            raise IdentityUnavailable(f"discovery document of `{self.issuer}` has no https "
                                      "jwks_uri", code="bad_discovery")
        return jwks_uri

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._http.stream(
                "GET", url, timeout=self._config.http_timeout_seconds,
                follow_redirects=False, headers={"Accept": "application/json"},
            ) as response:
                body = await _read_bounded(response)
        except httpx.HTTPError as exc:
            raise _unreachable(url, exc, self._config.ca_file) from exc
        if response.status_code != 200:
            raise IdentityUnavailable(f"`{url}` answered {response.status_code}",
                                      code="idp_unreachable")
        try:
            document = httpx.Response(200, content=body).json()
        except ValueError as exc:
            raise IdentityUnavailable(f"`{url}` did not return json",
                                      code="idp_unreachable") from exc
        if not isinstance(document, dict):
            raise IdentityUnavailable(f"`{url}` did not return a json object",
                                      code="idp_unreachable")
        return document


def _unreachable(url: str, exc: httpx.HTTPError, ca_file: Path | None) -> IdentityUnavailable:
    """A failed fetch; a certificate failure says why, under its own code, so that the
    audit record and the log tell a TLS misconfiguration from an outage."""
    failure = tls_failure_in(exc)
    if failure is None:
        return IdentityUnavailable(f"cannot reach `{url}`: {type(exc).__name__}",
                                   code="idp_unreachable")
    host = urlsplit(url).hostname or url
    trust = f"`{ca_file}`" if ca_file else "the public ca bundle"
    return IdentityUnavailable(
        f"tls to `{url}` failed: {describe_tls_failure(failure, host=host, trust=trust)}",
        code="identity_provider_tls")


async def _read_bounded(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_DOCUMENT_BYTES:
            raise IdentityUnavailable("identity provider document is too large",
                                      code="idp_unreachable")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_jwks(document: dict[str, Any], issuer: str) -> dict[str, dict[str, Any]]:
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise IdentityUnavailable(f"jwks of `{issuer}` has no `keys` list", code="bad_jwks")
    parsed: dict[str, dict[str, Any]] = {}
    for index, key in enumerate(keys):
        if not isinstance(key, dict) or key.get("use", "sig") != "sig":
            continue
        kid = key.get("kid")
        parsed[kid if isinstance(kid, str) else f"#{index}"] = key
    return parsed
