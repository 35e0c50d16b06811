"""Operator (decentralized JWT) mode against the real nats-server with a memory resolver:
the callout configured in the callout account's JWT, users issued by a target account's
signing key (with issuer_account), the target account chosen per policy."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from gateway.audit.store import DecisionQuery
from gateway.client import oidc_envelope
from gateway.config import GatewaySettings
from gateway.dev.issuer import DevIssuer
from gateway.dev.natsserver import NatsServer
from gateway.keyfiles import (
    CHECKPOINT_FILE,
    ISSUER_FILE,
    USER_FILE,
    XKEY_FILE,
    account_files,
    generate_keys,
    generate_operator_keys,
)
from gateway.natsjwt.nkeys import Prefix, SigningKeyPair
from gateway.operator_setup import write_operator_files
from gateway.runtime import Gateway
from tests.integration.harness import AUDIENCE, WORKER, Violations, assert_publish_scope

pytestmark = pytest.mark.integration


def _policies(issuer: str) -> str:
    return textwrap.dedent(f"""\
        version: 1
        policies:
          - id: loaders
            match: {{oidc: {{issuer: {issuer}, subject: "system:serviceaccount:airflow:*"}}}}
            scopes: [{{dag: etl, tasks: [load, load2]}}]
            permissions:
              publish: {{allow: ["shared.>", "airflow.{{dag_id}}.{{task_id}}.>"]}}
              subscribe: {{allow: ["shared.>"]}}
          - id: ops-extract
            account: OPS
            match: {{oidc: {{issuer: {issuer}, subject: "system:serviceaccount:airflow:*"}}}}
            scopes: [{{dag: etl, tasks: [extract]}}]
            permissions:
              publish: {{allow: ["shared.>"]}}
              subscribe: {{allow: ["shared.>"]}}
        """)


class OperatorStack:
    def __init__(self, tmp: Path, xkey: bool) -> None:
        self.tmp = tmp
        keys = tmp / "keys"
        generate_keys(keys)
        publics = generate_operator_keys(keys, ["APP", "OPS"])
        self.issuer = DevIssuer().start()
        (tmp / "policies").mkdir()
        (tmp / "policies" / "p.yaml").write_text(_policies(self.issuer.issuer))
        accounts = {}
        for name in ("APP", "OPS"):
            account_file, signing_file = account_files(name)
            accounts[name] = {"public_key": publics[account_file],
                              "signing_key_file": str(keys / signing_file)}
        self.data: dict[str, Any] = {
            "nats": {"mode": "operator", "user_seed_file": str(keys / USER_FILE),
                     "user_jwt_file": str(tmp / "nats" / "gateway.jwt"),
                     "target_account": "APP", "accounts": accounts},
            "keys": {"issuer_seed_file": str(keys / ISSUER_FILE),
                     **({"xkey_seed_file": str(keys / XKEY_FILE)} if xkey else {})},
            "policy": {"dir": str(tmp / "policies")},
            "audit": {"url": f"sqlite:///{tmp / 'audit.db'}",
                      "checkpoint_key_file": str(keys / CHECKPOINT_FILE)},
            "api": {"enabled": False},
            "oidc": {"issuers": [{"issuer": self.issuer.issuer, "audiences": [AUDIENCE]}]},
        }
        files = write_operator_files(GatewaySettings.model_validate(self.data), keys,
                                     tmp / "nats", host="127.0.0.1", port=-1)
        self.worker_creds = files.worker_creds
        self.server = NatsServer(files.server_config.read_text(), workdir=tmp / "nats-run")
        self.server.check_config()
        self.server.start()
        self.data["nats"]["url"] = self.server.url
        self.gateway: Gateway | None = None

    async def start_gateway(self) -> Gateway:
        self.gateway = Gateway(GatewaySettings.model_validate(self.data))
        await self.gateway.start()
        return self.gateway

    async def worker(self, task: str, errors: Violations | None = None,
                     token: str | None = None) -> Client:
        nc = Client()
        envelope = oidc_envelope(token or self.issuer.mint(subject=WORKER, audience=AUDIENCE),
                                 dag_id="etl", task_id=task)
        try:
            await nc.connect(self.server.url, user_credentials=str(self.worker_creds),
                             token=envelope, allow_reconnect=False, max_reconnect_attempts=0,
                             error_cb=(errors or Violations()).record)
        except BaseException:
            await nc.close()
            raise
        return nc

    def close(self) -> None:
        self.server.close()
        self.issuer.stop()


@pytest.fixture(params=[True, False], ids=["xkey-on", "xkey-off"])
async def operator(request: pytest.FixtureRequest, tmp_path: Path
                   ) -> AsyncIterator[OperatorStack]:
    stack = OperatorStack(tmp_path, xkey=request.param)
    await stack.start_gateway()
    try:
        yield stack
    finally:
        assert stack.gateway is not None
        await stack.gateway.stop()
        stack.close()


async def test_a_worker_gets_its_scope_in_the_policy_account(operator: OperatorStack) -> None:
    errors = Violations()
    nc = await operator.worker("load", errors)
    try:
        await assert_publish_scope(nc, errors, subscribe="shared.events", own="shared.events",
                                   foreign="airflow.etl.extract.done")
    finally:
        await nc.close()


async def test_accounts_chosen_by_policy_are_isolated(operator: OperatorStack) -> None:
    app_listener = await operator.worker("load")
    app_sender = await operator.worker("load2")
    ops_sender = await operator.worker("extract")
    try:
        inbox = await app_listener.subscribe("shared.events")
        await app_listener.flush()
        await ops_sender.publish("shared.events", b"from OPS")
        await ops_sender.flush()
        await app_sender.publish("shared.events", b"from APP")
        await app_sender.flush()
        first = await inbox.next_msg(timeout=2)
        assert first.data == b"from APP"  # OPS's message never crossed into APP
        with pytest.raises(asyncio.TimeoutError):
            await inbox.next_msg(timeout=0.3)
    finally:
        for nc in (app_listener, app_sender, ops_sender):
            await nc.close()


async def test_a_bad_identity_is_denied_and_audited(operator: OperatorStack) -> None:
    bad = operator.issuer.mint(subject=WORKER, audience="someone-else")
    with pytest.raises(Exception, match=r"[Aa]uthorization"):
        await operator.worker("load", token=bad)
    assert operator.gateway is not None
    records = operator.gateway.store.query(DecisionQuery())
    assert [r.reason_code for r in records if r.decision == "deny"] == ["wrong_audience"]


def test_user_jwts_name_the_account_they_are_issued_for() -> None:
    """A user signed by an account's signing key carries issuer_account (the account)."""
    from gateway.natsjwt.claims import Permissions, UserGrant, user_claims

    user = SigningKeyPair.generate(Prefix.USER).public_key
    claims = user_claims(UserGrant(user, "AAPP", "n", Permissions(), expires=10,
                                   issuer_account="AAPP"))
    assert claims["nats"]["issuer_account"] == "AAPP"
