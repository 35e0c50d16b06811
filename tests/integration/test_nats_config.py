"""`nats-gateway nats-config` output against the real nats-server: the whole config listens
where `nats.url` points, and merge mode adds the callout to an existing config without
touching its accounts (the JetStream account stays JetStream-enabled), and a worker still
connects through the callout. Runtime permission violations are nats-server's to log."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client

from gateway.client import oidc_envelope
from gateway.config import GatewaySettings
from gateway.dev.issuer import DevIssuer
from gateway.dev.natsserver import NatsServer, find_nats_server
from gateway.keyfiles import generate_keys
from gateway.natsconf import MERGE_ACCOUNTS_FILE, MERGE_AUTHORIZATION_FILE
from gateway.runtime import Gateway
from tests.integration.harness import (
    AUDIENCE,
    WORKER,
    Violations,
    assert_publish_scope,
    connect,
    policy_yaml,
    settings_dict,
)

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "gateway.cli"]
ADMIN_TOKEN = "sample-admin-token-for-this-test-only"

# An operator's config from before the gateway: its own accounts, JetStream on one.
EXISTING = """\
listen: "127.0.0.1:-1"
http: "127.0.0.1:-1"
jetstream { store_dir: "{store}" }
accounts {
  APP { jetstream: enabled }
  OPS { users: [ { user: ops, password: ops-sample-password } ] }
  include "nats-gateway-accounts.conf"
}
include "nats-gateway-authorization.conf"
"""


def _gateway_toml(tmp: Path, nats_url: str) -> Path:
    keys = tmp / "keys"
    generate_keys(keys)
    path = tmp / "gateway.toml"
    path.write_text(textwrap.dedent(f"""\
        [nats]
        url = "{nats_url}"
        user_seed_file = "{keys / 'auth-user.nk'}"
        [keys]
        issuer_seed_file = "{keys / 'issuer.nk'}"
        xkey_seed_file = "{keys / 'xkey.nk'}"
        """))
    return path


def _nats_config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "nats-config", *args], capture_output=True, text=True,
                          timeout=60, check=True)


def _check(config: Path) -> None:
    checked = subprocess.run([find_nats_server(), "-t", "-c", str(config)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_the_whole_config_listens_where_nats_url_points(tmp_path: Path) -> None:
    config = _gateway_toml(tmp_path, "nats://127.0.0.1:14999")
    printed = _nats_config("--config", str(config)).stdout
    assert 'listen: "127.0.0.1:14999"' in printed
    assert "system_account: SYS" in printed and "auth_callout" in printed
    (tmp_path / "server.conf").write_text(printed)
    _check(tmp_path / "server.conf")

    moved = _nats_config("--config", str(config), "--listen", "0.0.0.0:4222",
                         "--monitor-port", "8222").stdout
    assert 'listen: "0.0.0.0:4222"' in moved and 'http: "0.0.0.0:8222"' in moved
    (tmp_path / "moved.conf").write_text(moved)
    _check(tmp_path / "moved.conf")


def test_the_whole_config_can_enable_jetstream_for_the_target_account(
        tmp_path: Path) -> None:
    config = _gateway_toml(tmp_path, "nats://127.0.0.1:14999")
    printed = _nats_config("--config", str(config), "--jetstream",
                           str(tmp_path / "js")).stdout
    assert f'jetstream {{ store_dir: "{tmp_path / "js"}" }}' in printed
    assert "APP { jetstream: enabled }" in printed
    assert "SYS { }" in printed  # only the target account gets JetStream
    (tmp_path / "server.conf").write_text(printed)
    _check(tmp_path / "server.conf")
    refused = subprocess.run([*CLI, "nats-config", "--config", str(config), "--mode",
                              "merge", "--out", str(tmp_path / "m"), "--jetstream", "x"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--jetstream is for a whole" in refused.stderr


def test_merge_mode_needs_a_directory(tmp_path: Path) -> None:
    config = _gateway_toml(tmp_path, "nats://127.0.0.1:4222")
    refused = subprocess.run([*CLI, "nats-config", "--config", str(config), "--mode", "merge"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "pass --out DIR" in refused.stderr


def _monitoring_url(server: NatsServer) -> str:
    [ports] = (server.workdir / "ports").glob("*.ports")
    return str(json.loads(ports.read_text())["monitoring"][0])


async def test_merge_mode_keeps_the_existing_accounts_and_a_worker_connects(
    tmp_path: Path,
) -> None:
    config = _gateway_toml(tmp_path, "nats://127.0.0.1:4222")
    server_dir = tmp_path / "nats"
    printed = _nats_config("--config", str(config), "--mode", "merge", "--keep-user", "ops",
                           "--out", str(server_dir)).stdout
    assert f'include "{MERGE_ACCOUNTS_FILE}"' in printed
    assert f'include "{MERGE_AUTHORIZATION_FILE}"' in printed
    accounts = (server_dir / MERGE_ACCOUNTS_FILE).read_text()
    assert "accounts" not in accounts.replace("`accounts { }`", "").split("\n", 5)[-1]
    assert "system_account" not in accounts + (server_dir / MERGE_AUTHORIZATION_FILE).read_text()

    existing = EXISTING.replace("{store}", str(tmp_path / "js"))
    (server_dir / "nats-server.conf").write_text(existing)
    _check(server_dir / "nats-server.conf")

    server = NatsServer(existing, workdir=server_dir).start()
    issuer = DevIssuer().start()
    gateway = None
    try:
        (tmp_path / "policies").mkdir()
        (tmp_path / "policies" / "etl.yaml").write_text(policy_yaml(issuer.issuer))
        gateway = Gateway(GatewaySettings.model_validate(settings_dict(
            tmp_path, tmp_path / "keys", server.url, issuer.issuer, xkey=True,
            audit_db=tmp_path / "audit.db", admin_token=ADMIN_TOKEN)))
        await gateway.start()

        errors = Violations()
        envelope = oidc_envelope(issuer.mint(subject=WORKER, audience=AUDIENCE),
                                 dag_id="etl", task_id="load")
        nc = await connect(server.url, envelope, errors)
        try:
            await assert_publish_scope(nc, errors, subscribe="airflow.etl.load.>",
                                       own="airflow.etl.load.done",
                                       foreign="airflow.etl.other.done")
        finally:
            await nc.close()

        # The existing static user kept its password (--keep-user): no callout for it.
        ops = Client()
        await ops.connect(server.url, user="ops", password="ops-sample-password",
                          allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=5)
        await ops.flush(timeout=2)
        await ops.close()

        async with httpx.AsyncClient() as http:
            app = (await http.get(f"{_monitoring_url(server)}/accountz",
                                  params={"acc": "APP"})).json()
        assert app["account_detail"]["jetstream_enabled"] is True
        # The violation is enforced and logged by nats-server, not the gateway; its
        # connection id and dag/task name lead to the grant (docs/operations.md).
        [violation] = [line for line in server.log_tail(200).splitlines()
                       if "Publish Violation" in line]
        cid = re.search(r" - cid:(\d+) - ", violation)
        assert cid is not None and '"APP/user:etl/load"' in violation
        async with httpx.AsyncClient() as http:
            grants = (await http.get(
                f"http://127.0.0.1:{gateway.api_port}/v1/grants",
                params={"dag": "etl", "task": "load", "decision": "grant"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})).json()["items"]
        assert [g["client"]["id"] for g in grants] == [int(cid[1])]
    finally:
        if gateway is not None:
            await gateway.stop()
        server.close()
        issuer.stop()
