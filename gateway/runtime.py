"""Assemble and run a gateway from settings: keys, identity, policy, audit, NATS, API.

The only module that wires parts together; each part stays ignorant of the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client

from gateway.api.app import create_app
from gateway.api.auth import ApiAuthenticator, token_digest
from gateway.api.listen import listen_socket
from gateway.api.metrics import create_metrics_app
from gateway.audit.anchors import AnchorPublisher, AnchorSink, DirectoryAnchor, JetStreamAnchor
from gateway.audit.chain import CheckpointSigner
from gateway.audit.record import AuditRecord
from gateway.audit.retention import purge
from gateway.audit.store import AuditStore
from gateway.audit.verify import TrustedKey
from gateway.audit.writer import COMMIT_BUDGET_SECONDS, DECISION_MARGIN_SECONDS, AuditWriter
from gateway.callout.handler import AccountSigner, CalloutHandler, HandlerSettings
from gateway.callout.service import CalloutService
from gateway.config import GatewaySettings, TrustedKeySettings, read_seed
from gateway.console import mount_console
from gateway.envelope import CredentialEnvelope
from gateway.errors import ConfigError, CredentialError
from gateway.identity.aws_sts import StsVerifier
from gateway.identity.model import Identity
from gateway.identity.oidc import OidcVerifier
from gateway.identity.oidc_config import OidcIssuerConfig
from gateway.metrics import Metrics, StateCollector
from gateway.natsjwt.nkeys import CurveKeyPair, InvalidNkey, Prefix, SigningKeyPair
from gateway.policy.cache import DecisionCache
from gateway.policy.reload import PolicyHolder, watch_policies
from gateway.supervisor import WORKER_ENV
from gateway.tls import check_server_files
from gateway.tls.http import HttpClients
from gateway.tls.natsclient import TlsCheckedClient

__all__ = ["Gateway", "GatewayKeys", "load_keys"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, repr=False)
class GatewayKeys:
    issuer: SigningKeyPair
    auth_user: SigningKeyPair
    xkey: CurveKeyPair | None


def load_checkpoint_signer(settings: GatewaySettings) -> CheckpointSigner | None:
    path = settings.audit.checkpoint_key_file
    if path is None:
        return None
    try:
        return CheckpointSigner.from_seed_hex(read_seed(path, "audit checkpoint"))
    except ValueError as exc:
        raise ConfigError(f"audit checkpoint key `{path}`: {exc}") from exc


def _trusted_key(entry: str | TrustedKeySettings) -> TrustedKey:
    if isinstance(entry, str):
        return TrustedKey(entry)
    return TrustedKey(entry.key,
                      entry.not_before.timestamp() if entry.not_before else None,
                      entry.not_after.timestamp() if entry.not_after else None)


def trusted_checkpoint_keys(settings: GatewaySettings) -> tuple[TrustedKey, ...]:
    """The signing key's public half (unless listed with its own window) and the listed
    ones: a rotated-out key stays trusted for what it signed inside its window."""
    listed = tuple(_trusted_key(k) for k in settings.audit.trusted_checkpoint_keys)
    signer = load_checkpoint_signer(settings)
    if signer is None or any(k.public_key == signer.public_key for k in listed):
        return listed
    return (TrustedKey(signer.public_key), *listed)


def instance_name(settings: GatewaySettings, env: dict[str, str] | None = None) -> str:
    """This process's chain name: a configured ``instance`` (per worker under
    ``serve --workers N``: two processes must never share a chain), else host:pid."""
    worker = (os.environ if env is None else env).get(WORKER_ENV)
    if settings.instance:
        return settings.instance if worker is None else f"{settings.instance}/w{worker}"
    return f"{socket.gethostname()}:{os.getpid()}"


def anchor_publisher(settings: GatewaySettings,
                     signer: CheckpointSigner | None) -> AnchorPublisher | None:
    """The sinks every signed checkpoint also goes to (docs/audit.md), or None."""
    audit = settings.audit
    sinks: list[AnchorSink] = []
    if audit.anchor_dir is not None:
        sinks.append(DirectoryAnchor(audit.anchor_dir))
    if audit.anchor_stream is not None:
        sinks.append(JetStreamAnchor(anchor_connect(settings), stream=audit.anchor_stream,
                                     subject=audit.anchor_subject,
                                     create=audit.anchor_stream_create,
                                     replicas=audit.anchor_stream_replicas))
    if not sinks:
        return None
    if signer is None:
        raise ConfigError("audit anchors need audit.checkpoint_key_file: only signed "
                          "checkpoints are anchored")
    return AnchorPublisher(sinks, stale_seconds=2 * audit.checkpoint_interval_seconds)


def anchor_connect(settings: GatewaySettings,
                   url: str | None = None) -> Callable[[], Awaitable[Client]]:
    """A connection of its own as the gateway's user (the anchor stream's writer, and
    `audit verify --anchors-stream`): it outlives the callout subscription long enough
    to anchor the final checkpoint."""
    nats_settings = settings.nats

    async def connect() -> Client:
        auth: dict[str, Any] = (
            {"user_credentials": (str(nats_settings.user_jwt_file),
                                  str(nats_settings.user_seed_file))}
            if nats_settings.mode == "operator"
            else {"nkeys_seed_str": read_seed(nats_settings.user_seed_file, "nats user")})
        client = TlsCheckedClient(trust=nats_trust(settings))
        await client.connect(url or nats_settings.url, name="nats-gateway-anchor",
                             connect_timeout=2, max_reconnect_attempts=2,
                             allow_reconnect=True, **auth, **nats_settings.tls_options())
        return client

    return connect


def nats_trust(settings: GatewaySettings) -> str:
    """What the NATS TLS context trusts, as TLS error messages name it."""
    return settings.nats.tls.files().trust


def oidc_issuers(issuers: Sequence[OidcIssuerConfig],
                 default_ca: Path | None) -> tuple[OidcIssuerConfig, ...]:
    """Each issuer with the CA bundle it is fetched with (its own, else `oidc.ca_file`)."""
    return tuple(i if i.ca_file is not None or default_ca is None
                 else i.model_copy(update={"ca_file": default_ca}) for i in issuers)


def load_operator_accounts(settings: GatewaySettings) -> dict[str, AccountSigner]:
    """Operator mode: each target account's public key and the key signing its users."""
    if settings.nats.mode != "operator":
        return {}
    accounts = {}
    for name, account in settings.nats.accounts.items():
        assert account.signing_key_file is not None  # enforced by the settings model
        try:
            signer = SigningKeyPair.from_seed(
                read_seed(account.signing_key_file, f"account {name} signing"), Prefix.ACCOUNT)
        except InvalidNkey as exc:
            raise ConfigError(f"account {name}: signing key is not an account seed") from exc
        accounts[name] = AccountSigner(account.public_key or signer.public_key, signer)
    return accounts


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

    def cached(self, envelope: CredentialEnvelope) -> Identity | None:
        """An OIDC identity verified before (IAM proofs are single use: never cached)."""
        return self._oidc.cached(envelope.proof) if envelope.method == "oidc" else None


class _ApiServer(uvicorn.Server):
    """uvicorn without its signal handling: SIGTERM and SIGINT belong to the gateway,
    which stops taking auth requests before the API goes (uvicorn would stop the API on
    its own, then raise the signal again)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_http(app: FastAPI, sock: socket.socket, cert_file: Path | None,
                      key_file: Path | None, what: str, *,
                      trusted_proxies: tuple[str, ...] = ()) -> tuple[uvicorn.Server,
                                                                      asyncio.Task[None]]:
    """Serve ``app`` on a bound socket (HTTPS when ``cert_file`` is set); returns once it
    accepts connections, or raises what stopped it. Forwarded headers are believed only
    from ``trusted_proxies``: uvicorn's default trusts 127.0.0.1, or whatever the
    FORWARDED_ALLOW_IPS variable says, which no gateway setting would show."""
    config = uvicorn.Config(app, log_level="warning", lifespan="off",
                            ssl_certfile=cert_file, ssl_keyfile=key_file,
                            proxy_headers=bool(trusted_proxies),
                            forwarded_allow_ips=list(trusted_proxies) or None)
    server = _ApiServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise ConfigError(f"{what} stopped at start")
        await asyncio.sleep(0.02)
    host, port = sock.getsockname()[:2]
    scheme = "https" if cert_file is not None else "http"
    log.info("%s listening on %s://%s:%d", what, scheme,
             f"[{host}]" if ":" in host else host, port)
    return server, task


class Gateway:
    """One gateway process: the callout service and the audit API on one event loop."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.keys = load_keys(settings)
        self.policies = PolicyHolder(settings.policy.dir)
        self.store = AuditStore(settings.audit.url)
        if settings.audit.migrate_on_start:
            self.store.migrate()
        instance = instance_name(settings)
        self.signer = load_checkpoint_signer(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.anchors = anchor_publisher(settings, self.signer)
        self.writer = AuditWriter(
            self.store, instance=instance, signer=self.signer,
            max_batch=settings.audit.group_commit_max,
            checkpoint_every=settings.audit.checkpoint_every,
            checkpoint_interval_seconds=settings.audit.checkpoint_interval_seconds,
            on_commit=self._stream if settings.audit.stream_subject else None,
            on_checkpoint=self.anchors.submit if self.anchors is not None else None)
        self._http = HttpClients()
        self.oidc = OidcVerifier(oidc_issuers(settings.oidc.issuers, settings.oidc.ca_file),
                                 self._http_for, token_cache_size=settings.oidc.token_cache_size)
        self.aws = (StsVerifier(settings.aws, self._http.for_ca(settings.aws.ca_file),
                                metrics=self.metrics)
                    if settings.aws.enabled else None)
        identities = _Identities(self.oidc, self.aws)
        self.handler = CalloutHandler(
            issuer=self.keys.issuer, xkey=self.keys.xkey,
            verify_identity=identities.verify, cached_identity=identities.cached,
            policies=self.policies.current, audit=self.writer.write,
            audit_alone=self.writer.write_alone,
            settings=HandlerSettings(
                target_account=settings.nats.target_account,
                account_names=settings.nats.account_names,
                operator_accounts=load_operator_accounts(settings),
                identity_timeout_seconds=settings.oidc.identity_timeout_seconds,
                auth_timeout_seconds=settings.nats.auth_timeout_seconds,
                instance=instance),
            metrics=self.metrics,
            decisions=DecisionCache(settings.policy.decision_cache_size),
        )
        self.service = CalloutService(
            self.handler, url=settings.nats.url, user_seed=self.keys.auth_user.seed,
            queue_group=settings.nats.queue_group, max_in_flight=settings.nats.max_in_flight,
            metrics=self.metrics,
            shed_after_seconds=max(0.1, settings.nats.auth_timeout_seconds - COMMIT_BUDGET_SECONDS
                                   - DECISION_MARGIN_SECONDS),
            user_credentials=(str(settings.nats.user_jwt_file), str(settings.nats.user_seed_file))
            if settings.nats.mode == "operator" else None,
            tls=settings.nats.tls_options(), tls_trust=nats_trust(settings))
        self.metrics.registry.register(StateCollector(self))
        self._api: uvicorn.Server | None = None
        self._api_task: asyncio.Task[None] | None = None
        self._metrics_api: uvicorn.Server | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None

    def _http_for(self, issuer: OidcIssuerConfig) -> httpx.AsyncClient:
        return self._http.for_ca(issuer.ca_file)

    def _stream(self, records: Sequence[AuditRecord]) -> None:
        """Called in the writer thread after a commit: hand the records to the loop."""
        loop, subject = self._loop, self.settings.audit.stream_subject
        if loop is None or subject is None:
            return
        payloads = [json.dumps(r.as_row(), sort_keys=True).encode() for r in records]
        for payload in payloads:
            asyncio.run_coroutine_threadsafe(self.service.publish(subject, payload), loop)

    async def _retain(self, every_seconds: float = 3600.0) -> None:
        days = self.settings.audit.retention_days
        while True:
            if self.signer is None:
                log.error("audit retention is set but no checkpoint key: nothing purged")
                return
            try:
                await asyncio.to_thread(purge, self.store, self.signer,
                                        older_than_seconds=days * 86400, now=time.time())
            except Exception:
                log.exception("audit purge failed; retrying in an hour")
            await asyncio.sleep(every_seconds)

    async def start(self) -> None:
        """API first (it must answer /healthz and say why /readyz fails while nats-server
        is away, and a port clash must stop us before we take any auth request), then
        NATS, retried until it answers: cancel this to give up."""
        self._loop = asyncio.get_running_loop()
        if self.settings.api.enabled:
            await self._start_api()
        if self.anchors is not None:
            await self._start_anchors(self.anchors)
        await self.oidc.warm()
        await self.service.start()
        interval = self.settings.policy.reload_interval_seconds
        if interval > 0:
            self._watcher = asyncio.create_task(watch_policies(self.policies, interval))
        if self.settings.audit.retention_days > 0:
            self._retention = asyncio.create_task(self._retain())
        current = self.policies.current()
        log.info("gateway started: %d policies (%s), issuer %s", len(current.policies),
                 current.content_hash[:19], self.keys.issuer.public_key)

    async def _start_anchors(self, anchors: AnchorPublisher) -> None:
        """A stream that exists but is not append-only is refused here (fail closed)."""
        for sink in anchors.sinks:
            if isinstance(sink, JetStreamAnchor):
                await sink.open()
        anchors.start()

    def reload_policies_on_sighup(self) -> None:
        """Reload the policy directory on SIGHUP (main thread only, as asyncio requires)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)

    def _reload_soon(self) -> None:
        # Off the event loop: reading and validating files must not stall live decisions.
        asyncio.get_running_loop().run_in_executor(None, self.policies.reload, "SIGHUP")

    async def _start_api(self) -> None:
        """The audit API (HTTPS with `api.tls`), and /metrics on its own plain-HTTP
        listener when `api.metrics_port` is set. Sockets are bound first: a taken port
        ends the start here, before the gateway takes any auth request."""
        api = self.settings.api
        if api.tls.cert_file is not None:
            check_server_files(api.tls.cert_file, api.tls.key_file, what="audit api")
        sock = listen_socket(api.host, api.port)
        metrics_sock = None
        try:
            if api.metrics_port is not None:
                metrics_sock = listen_socket(api.metrics_host, api.metrics_port,
                                             what="metrics listener")
            app = await self._api_app()
        except BaseException:
            sock.close()
            if metrics_sock is not None:
                metrics_sock.close()
            raise
        self._api, self._api_task = await _serve_http(
            app, sock, api.tls.cert_file, api.tls.key_file, "audit api",
            trusted_proxies=api.trusted_proxies)
        if metrics_sock is not None:
            self._metrics_api, self._metrics_task = await _serve_http(
                create_metrics_app(self.metrics.registry), metrics_sock, None, None,
                "metrics listener")

    async def _api_app(self) -> FastAPI:
        api = self.settings.api
        api_verifier = None
        if api.oidc is not None:
            api_verifier = OidcVerifier(
                oidc_issuers((api.oidc.issuer,), self.settings.oidc.ca_file), self._http_for)
            await api_verifier.warm()
        admin_digests = api.admin_token_sha256
        if api.admin_token_file is not None:
            admin_digests += (token_digest(read_seed(api.admin_token_file, "admin token")),)
        authenticator = ApiAuthenticator(
            admin_digests=admin_digests, auditor_digests=api.auditor_token_sha256,
            oidc=api.oidc, verifier=api_verifier)
        app = create_app(self.store, authenticator=authenticator, policies=self.policies,
                         readiness=self.readiness,
                         # /metrics on the API unless it has a listener of its own
                         metrics=self.metrics.registry if api.metrics_port is None else None,
                         oidc_issuers=self.settings.oidc.issuers,
                         checkpoint_signer=self.signer,
                         trusted_checkpoint_keys=trusted_checkpoint_keys(self.settings))
        if api.console.enabled:
            mount_console(app, api.console,
                          oidc_issuer=api.oidc.issuer.issuer if api.oidc else None,
                          anchor_dir=self.settings.audit.anchor_dir)
        return app

    async def readiness(self) -> dict[str, bool]:
        """What /readyz reports: each check must hold for the gateway to take requests."""
        store_ok = await asyncio.to_thread(self.store.ping)
        checks = {
            "nats_connected": self.service.connected,
            "subscribed": self.service.subscribed,
            "policies_loaded": self.policies.current() is not None,
            "audit_store_writable": store_ok and self.writer.healthy,
        }
        if self.anchors is not None:  # decisions go on; the operator must see the lag
            checks["audit_anchors_current"] = self.anchors.current
        return checks

    @property
    def api_port(self) -> int:
        if self._api is None or not self._api.servers:
            return 0
        port: int = self._api.servers[0].sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        for task in (self._watcher, self._retention):
            if task is not None:
                task.cancel()
        await self.service.stop()
        for server, task in ((self._api, self._api_task),
                             (self._metrics_api, self._metrics_task)):
            if server is not None and task is not None:
                server.should_exit = True
                await task
        await self._http.aclose()
        await asyncio.to_thread(self.writer.close)  # signs the final checkpoint
        if self.anchors is not None:
            await self.anchors.close()
        self.store.close()

    async def run_until(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
