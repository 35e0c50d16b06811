"""Assemble and run a gateway from settings: keys, identity, policy, audit, NATS, API.

The only module that wires parts together; each part stays ignorant of the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from dataclasses import dataclass

import httpx
import uvicorn

from gateway.api.app import create_app
from gateway.audit.store import AuditStore
from gateway.audit.writer import AuditWriter
from gateway.callout.handler import CalloutHandler, HandlerSettings
from gateway.callout.service import CalloutService
from gateway.config import GatewaySettings, read_seed
from gateway.envelope import CredentialEnvelope
from gateway.errors import ConfigError, CredentialError
from gateway.identity.aws_sts import StsVerifier
from gateway.identity.model import Identity
from gateway.identity.oidc import OidcVerifier
from gateway.natsjwt.nkeys import CurveKeyPair, InvalidNkey, Prefix, SigningKeyPair
from gateway.policy.reload import PolicyHolder, watch_policies

__all__ = ["Gateway", "GatewayKeys", "load_keys"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class GatewayKeys:
    issuer: SigningKeyPair
    auth_user: SigningKeyPair
    xkey: CurveKeyPair | None


def load_keys(settings: GatewaySettings) -> GatewayKeys:
    def signing(path_seed: str, prefix: Prefix, what: str) -> SigningKeyPair:
        try:
            return SigningKeyPair.from_seed(path_seed, prefix)
        except InvalidNkey as exc:
            raise ConfigError(f"{what} seed is not a valid {prefix.name.lower()} seed") from exc

    issuer = signing(read_seed(settings.keys.issuer_seed_file, "issuer"), Prefix.ACCOUNT,
                     "issuer")
    user = signing(read_seed(settings.nats.user_seed_file, "nats user"), Prefix.USER,
                   "nats user")
    xkey = None
    if settings.keys.xkey_seed_file is not None:
        try:
            xkey = CurveKeyPair.from_seed(read_seed(settings.keys.xkey_seed_file, "xkey"))
        except InvalidNkey as exc:
            raise ConfigError("xkey seed is not a valid curve seed") from exc
    return GatewayKeys(issuer=issuer, auth_user=user, xkey=xkey)


class _Identities:
    """Dispatch an envelope to the verifier of its method."""

    def __init__(self, oidc: OidcVerifier, aws: StsVerifier | None) -> None:
        self._oidc = oidc
        self._aws = aws

    async def verify(self, envelope: CredentialEnvelope) -> Identity:
        if envelope.method == "oidc":
            return await self._oidc.verify(envelope.proof)
        if envelope.method == "aws_iam" and self._aws is not None:
            return await self._aws.verify(envelope.proof)
        raise CredentialError(f"method `{envelope.method}` is not enabled on this gateway",
                              code="method_not_enabled")


class Gateway:
    """One gateway process: the callout service and the audit API on one event loop."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.keys = load_keys(settings)
        self.policies = PolicyHolder(settings.policy.dir)
        self.store = AuditStore(settings.audit.url)
        self.store.create_schema()
        self.writer = AuditWriter(self.store)
        self._http = httpx.AsyncClient(follow_redirects=False)
        self.oidc = OidcVerifier(settings.oidc.issuers, self._http)
        self.aws = StsVerifier(settings.aws, self._http) if settings.aws.enabled else None
        instance = settings.instance or f"{socket.gethostname()}:{os.getpid()}"
        self.handler = CalloutHandler(
            issuer=self.keys.issuer, xkey=self.keys.xkey,
            verify_identity=_Identities(self.oidc, self.aws).verify,
            policies=self.policies.current, audit=self.writer.write,
            settings=HandlerSettings(
                target_account=settings.nats.target_account,
                identity_timeout_seconds=settings.oidc.identity_timeout_seconds,
                instance=instance),
        )
        self.service = CalloutService(
            self.handler, url=settings.nats.url, user_seed=self.keys.auth_user.seed,
            queue_group=settings.nats.queue_group, max_in_flight=settings.nats.max_in_flight)
        self._api: uvicorn.Server | None = None
        self._api_task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.oidc.warm()
        await self.service.start()
        if self.settings.api.enabled:
            await self._start_api()
        interval = self.settings.policy.reload_interval_seconds
        if interval > 0:
            self._watcher = asyncio.create_task(watch_policies(self.policies, interval))
        current = self.policies.current()
        log.info("gateway started: %d policies (%s), issuer %s", len(current.policies),
                 current.content_hash[:19], self.keys.issuer.public_key)

    def reload_policies_on_sighup(self) -> None:
        """Reload the policy directory on SIGHUP (main thread only, as asyncio requires)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)

    def _reload_soon(self) -> None:
        # Off the event loop: reading and validating files must not stall live decisions.
        asyncio.get_running_loop().run_in_executor(None, self.policies.reload, "SIGHUP")

    async def _start_api(self) -> None:
        api = self.settings.api
        app = create_app(self.store, admin_token_sha256=api.admin_token_sha256,
                         policies=self.policies, oidc_issuers=self.settings.oidc.issuers)
        config = uvicorn.Config(app, host=api.host, port=api.port, log_level="warning",
                                lifespan="off")
        self._api = uvicorn.Server(config)
        self._api_task = asyncio.create_task(self._api.serve())
        while not self._api.started:
            if self._api_task.done():
                raise ConfigError(f"audit api could not bind {api.host}:{api.port}")
            await asyncio.sleep(0.02)

    @property
    def api_port(self) -> int:
        if self._api is None or not self._api.servers:
            return 0
        port: int = self._api.servers[0].sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        await self.service.stop()
        if self._api is not None and self._api_task is not None:
            self._api.should_exit = True
            await self._api_task
        await self._http.aclose()
        self.writer.close()
        self.store.close()

    async def run_until(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
