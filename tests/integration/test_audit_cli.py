"""`nats-gateway audit migrate | verify | purge`, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from gateway.audit.chain import CheckpointSigner
from gateway.audit.record import AuditRecord
from gateway.audit.schema import decisions
from gateway.audit.store import AuditStore
from gateway.audit.writer import AuditWriter

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "gateway.cli"]


def _config(tmp_path: Path, *, with_key: bool = True) -> tuple[Path, CheckpointSigner]:
    signer = CheckpointSigner.generate()
    (tmp_path / "ckpt.key").write_text(signer.seed_hex)
    (tmp_path / "seed").write_text("unused")
    config = tmp_path / "gateway.toml"
    key_line = 'checkpoint_key_file = "ckpt.key"' if with_key else ""
    config.write_text(f"""
[nats]
user_seed_file = "seed"
[keys]
issuer_seed_file = "seed"
[audit]
url = "sqlite:///audit.db"
{key_line}
""")
    return config, signer


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


async def _fill(tmp_path: Path, signer: CheckpointSigner, count: int, at: float) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    writer = AuditWriter(store, instance="gw-1", signer=signer, checkpoint_every=2)
    await asyncio.gather(*(writer.write(AuditRecord(
        decision_id=f"d{i}", decided_at=at + i, decision="grant", reason_code="granted",
        reason="granted", gateway_instance="gw-1", latency_ms=1.0)) for i in range(count)))
    writer.close()
    store.close()


async def test_migrate_verify_and_purge(tmp_path: Path) -> None:
    config, signer = _config(tmp_path)
    migrated = _run("audit", "migrate", "--config", str(config))
    assert migrated.returncode == 0 and "revision 0002" in migrated.stdout
    await _fill(tmp_path, signer, 6, at=1_000_000.0)  # 1970: older than any retention
    ok = _run("audit", "verify", "--config", str(config))
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 6 records in 1 chain(s)")

    purged = _run("audit", "purge", "--config", str(config), "--older-than-days", "30")
    assert purged.returncode == 0 and "deleted 6 record(s)" in purged.stdout
    await _fill(tmp_path, signer, 2, at=2_000_000_000.0)
    assert _run("audit", "verify", "--config", str(config)).returncode == 0

    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    with store.engine.begin() as conn:
        conn.execute(update(decisions).values(reason="edited"))
    store.close()
    tampered = _run("audit", "verify", "--config", str(config), "--json")
    assert tampered.returncode == 1
    report = json.loads(tampered.stdout)
    assert not report["ok"] and {p["kind"] for p in report["problems"]} >= {"modified"}


def test_purge_without_a_key_is_refused(tmp_path: Path) -> None:
    config, _ = _config(tmp_path, with_key=False)
    assert _run("audit", "migrate", "--config", str(config)).returncode == 0
    refused = _run("audit", "purge", "--config", str(config), "--older-than-days", "30")
    assert refused.returncode == 2 and "must be signed" in refused.stderr
    unverifiable = _run("audit", "verify", "--config", str(config))
    assert unverifiable.returncode == 0 and "no trusted checkpoint key" in unverifiable.stderr
