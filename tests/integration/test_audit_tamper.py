"""Issue 19: tamper evidence against someone with write access to the audit database.

The tamper table of docs/audit.md, row by row, for each setup (no key, key, key and an
anchor directory), on SQLite and the real PostgreSQL; the four reported reproductions
through the CLI (exit 1, naming the record); heartbeats, the final checkpoint, two
processes on one chain, key rotation, and verify of a store never migrated.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text

from gateway.audit.anchors import read_directory
from gateway.audit.chain import CheckpointSigner, record_hash
from gateway.audit.schema import checkpoints, decisions
from gateway.audit.store import AuditStore
from gateway.audit.verify import TrustedKey, VerifyReport, verify_store
from gateway.audit.writer import AuditWriter
from gateway.errors import AuditUnavailable, ConfigError
from tests.databases import audit_database
from tests.integration.tamper import (
    AGE,
    INSTANCE,
    TAMPER,
    FakeClock,
    Log,
    chain,
    delete_checkpoints,
    flip,
    record,
    rewrite,
    write_log,
)

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "gateway.cli"]

# tamper class -> detected with (no key, key, key + anchor); docs/audit.md has the table.
# "no key" rows are for a competent attacker who recomputes the chain.
TABLE = {
    "edit": (False, True, True),
    "delete_middle": (False, True, True),
    "delete_tail": (False, True, True),
    "insert": (False, True, True),
    "reorder": (False, True, True),
    "forge_chain": (False, True, True),
    "delete_checkpoints": (False, True, True),
    "delete_checkpoints_and_tail": (False, True, True),
    "delete_last_checkpoints_and_tail": (False, False, True),
    "replace_database": (False, True, True),
}
SETUPS = ("no_key", "key", "key_and_anchor")


async def _log(store: AuditStore, setup: str, tmp_path: Path) -> Log:
    signer = None if setup == "no_key" else CheckpointSigner.generate()
    anchor = tmp_path / "anchors" if setup == "key_and_anchor" else None
    return await write_log(store, signer, anchor)


def _verify(log: Log) -> VerifyReport:
    keys = [log.signer.public_key] if log.signer else []
    anchored = read_directory(log.anchor_dir)[0] if log.anchor_dir else None
    return verify_store(log.store, keys, anchored=anchored)


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("tamper", sorted(TAMPER))
async def test_the_tamper_table(store: AuditStore, tmp_path: Path, tamper: str,
                                setup: str) -> None:
    log = await _log(store, setup, tmp_path)
    before = _verify(log)
    assert before.ok, before.problems
    TAMPER[tamper](log)
    after = _verify(log)
    detected = TABLE[tamper][SETUPS.index(setup)]
    assert (not after.ok) == detected, (tamper, setup, after.problems, after.warnings)
    for problem in after.problems:  # each names the record or the position
        assert problem.instance and (problem.decision_id or problem.chain_seq is not None)


@pytest.mark.parametrize("tamper", ["edit", "delete_middle", "reorder"])
async def test_without_a_key_a_chain_not_recomputed_is_still_caught(
        store: AuditStore, tmp_path: Path, tamper: str) -> None:
    """The no-key column: the hash chain alone catches an attacker who does not
    recompute it."""
    await write_log(store, None, None)
    rows = chain(store)
    with store.engine.begin() as conn:
        if tamper == "edit":
            conn.execute(decisions.update().where(decisions.c.seq == rows[4]["seq"])
                         .values(decision=flip(rows[4])["decision"]))
        elif tamper == "delete_middle":
            conn.execute(decisions.delete().where(decisions.c.seq == rows[5]["seq"]))
        else:
            conn.execute(decisions.update().where(decisions.c.seq == rows[2]["seq"])
                         .values(chain_seq=-1))
            conn.execute(decisions.update().where(decisions.c.seq == rows[7]["seq"])
                         .values(chain_seq=3))
            conn.execute(decisions.update().where(decisions.c.seq == rows[2]["seq"])
                         .values(chain_seq=8))
    assert not verify_store(store, []).ok


# -- the four reproductions of issue 19, through the CLI -----------------------------------

def _config(tmp_path: Path, store: AuditStore, signer: CheckpointSigner) -> Path:
    (tmp_path / "ckpt.key").write_text(signer.seed_hex)
    (tmp_path / "seed").write_text("unused")
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[nats]
user_seed_file = "seed"
[keys]
issuer_seed_file = "seed"
[audit]
url = "{store.url}"
checkpoint_key_file = "ckpt.key"
""")
    return config


def _cli_verify(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "audit", "verify", "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=60, check=False)


async def _signed_log(store: AuditStore, tmp_path: Path) -> tuple[Log, Path]:
    signer = CheckpointSigner.generate()
    log = await write_log(store, signer, None)
    config = _config(tmp_path, store, signer)
    clean = _cli_verify(config)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    return log, config


async def test_repro_1_a_fabricated_chain_for_a_new_instance(
        store: AuditStore, tmp_path: Path) -> None:
    log, config = await _signed_log(store, tmp_path)
    TAMPER["forge_chain"](log)
    result = _cli_verify(config)
    assert result.returncode == 1
    assert "no_genesis:" in result.stdout and "gw-new-d500" in result.stdout


async def test_repro_2_a_grant_appended_after_the_shutdown_checkpoint(
        store: AuditStore, tmp_path: Path) -> None:
    _, config = await _signed_log(store, tmp_path)
    rows = chain(store)
    forged = record(900, at=time.time() - 60, decision="grant").as_row()
    forged.update(chain_seq=len(rows) + 1, prev_hash=rows[-1]["record_hash"])
    forged["record_hash"] = record_hash(forged)
    with store.engine.begin() as conn:
        conn.execute(insert(decisions), [forged])
    result = _cli_verify(config)
    assert result.returncode == 1
    assert "after_final:" in result.stdout and f"{INSTANCE}-d900" in result.stdout


async def test_repro_3_checkpoints_deleted_a_grant_turned_deny_and_rehashed(
        store: AuditStore, tmp_path: Path) -> None:
    _, config = await _signed_log(store, tmp_path)
    delete_checkpoints(store)
    rows = chain(store)
    grant = next(i for i, r in enumerate(rows) if r["decision"] == "grant")
    rows[grant] = flip(rows[grant])
    rewrite(store, rows)
    result = _cli_verify(config)
    assert result.returncode == 1
    assert "no_genesis:" in result.stdout and f"{INSTANCE}-d000" in result.stdout


async def test_repro_4_checkpoints_and_tail_deleted(store: AuditStore, tmp_path: Path) -> None:
    log, config = await _signed_log(store, tmp_path)
    TAMPER["delete_checkpoints_and_tail"](log)
    result = _cli_verify(config)
    assert result.returncode == 1
    assert "no_genesis:" in result.stdout and "0 checkpoint(s)" in result.stdout


async def test_checkpoints_missing_from_the_database_are_named_against_the_anchor(
        store: AuditStore, tmp_path: Path) -> None:
    signer = CheckpointSigner.generate()
    await write_log(store, signer, tmp_path / "anchors")
    config = _config(tmp_path, store, signer)
    assert _cli_verify(config, "--anchors", str(tmp_path / "anchors")).returncode == 0
    delete_checkpoints(store, since=time.time() - AGE + 150)  # the last two, final included
    result = _cli_verify(config, "--anchors", str(tmp_path / "anchors"))
    assert result.returncode == 1
    assert result.stdout.count("checkpoint_missing:") == 2 and "final" in result.stdout


# -- the schedule: heartbeat, final, uncovered, gaps ---------------------------------------

async def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_an_idle_writer_signs_heartbeats(store: AuditStore) -> None:
    signer = CheckpointSigner.generate()
    clock = FakeClock(time.time())
    writer = AuditWriter(store, instance=INSTANCE, signer=signer, clock=clock,
                         checkpoint_interval_seconds=60.0)
    try:
        await _until(lambda: writer.checkpoints == 1)  # genesis, before any record
        clock.at += 61
        writer.wake()
        await _until(lambda: writer.checkpoints == 2)
    finally:
        writer.close()
    with store.engine.connect() as conn:
        kinds = [r[0] for r in conn.execute(select(checkpoints.c.kind)
                                            .order_by(checkpoints.c.id))]
    assert kinds == ["genesis", "checkpoint", "final"]
    assert verify_store(store, [signer.public_key], now=clock.at).ok


async def test_a_record_no_checkpoint_covers_is_named_after_the_interval(
        store: AuditStore) -> None:
    """A running writer's chain (no final yet) with a record appended behind its back."""
    signer = CheckpointSigner.generate()
    log = await write_log(store, signer, None, close=False)
    writer: AuditWriter = log.meta["writer"]
    rows = chain(store)
    forged = record(901, at=log.meta["clock"].at).as_row()
    forged.update(chain_seq=len(rows) + 1, prev_hash=rows[-1]["record_hash"])
    forged["record_hash"] = record_hash(forged)
    with store.engine.begin() as conn:
        conn.execute(insert(decisions), [forged])
    at = log.meta["clock"].at
    assert verify_store(store, [signer.public_key], now=at + 60).ok  # not yet due
    report = verify_store(store, [signer.public_key], now=at + 60 + 31)
    assert [(p.kind, p.decision_id) for p in report.problems] == [
        ("uncovered", f"{INSTANCE}-d901")]
    writer.close()


async def test_a_gap_in_the_heartbeats_is_named(store: AuditStore) -> None:
    signer = CheckpointSigner.generate()
    await write_log(store, signer, None, batches=6)
    with store.engine.begin() as conn:  # two heartbeats of the middle, records kept
        ids = [r[0] for r in conn.execute(select(checkpoints.c.id).where(
            checkpoints.c.kind == "checkpoint").order_by(checkpoints.c.created_at))]
        conn.execute(checkpoints.delete().where(checkpoints.c.id.in_(ids[1:3])))
    kinds = {p.kind for p in verify_store(store, [signer.public_key]).problems}
    assert kinds == {"checkpoint_gap"}


# -- one chain, one process -----------------------------------------------------------------

async def test_a_second_process_with_the_same_name_is_refused(store: AuditStore) -> None:
    signer = CheckpointSigner.generate()
    first = AuditWriter(store, instance=INSTANCE, signer=signer)
    try:
        await _until(lambda: first.checkpoints == 1)
        with pytest.raises(ConfigError, match="in use"):
            AuditWriter(store, instance=INSTANCE, signer=signer)
        crashed_here = AuditWriter(store, instance=INSTANCE, signer=signer,
                                   pid_alive=lambda _pid: False)  # a supervisor's restart
        crashed_here.close()
    finally:
        first.close()
    AuditWriter(store, instance=INSTANCE, signer=signer).close()  # after a final: free


async def test_two_processes_interleaving_one_chain_are_named(store: AuditStore) -> None:
    """Both started before either heartbeat was visible (the lease is not a lock)."""
    signer = CheckpointSigner.generate()
    clock = FakeClock(time.time() - AGE)
    first = AuditWriter(store, instance=INSTANCE, signer=signer, clock=clock)
    await _until(lambda: first.checkpoints == 1)
    await first.write(record(1, at=clock.at))
    clock.at += 200  # the first's heartbeat looks stale: the second passes the check
    second = AuditWriter(store, instance=INSTANCE, signer=signer, clock=clock)
    await _until(lambda: second.checkpoints == 1)
    await second.write(record(2, at=clock.at))
    with pytest.raises(AuditUnavailable):  # its cached head is taken: the commit fails
        await first.write(record(3, at=clock.at))
    await first.write(record(4, at=clock.at))  # re-reads the head, signs with its nonce
    first.close()
    second.close()
    kinds = {p.kind for p in verify_store(store, [signer.public_key]).problems}
    assert "interleaved" in kinds


def test_workers_of_a_configured_instance_get_a_chain_each() -> None:
    from gateway.config import GatewaySettings
    from gateway.runtime import instance_name
    from gateway.supervisor import WORKER_ENV

    settings = GatewaySettings(nats={"user_seed_file": "s"},  # type: ignore[arg-type]
                               keys={"issuer_seed_file": "s"}, instance="gw")
    names = {instance_name(settings, {WORKER_ENV: str(i)}) for i in range(3)}
    assert names == {"gw/w0", "gw/w1", "gw/w2"}
    assert instance_name(settings, {}) == "gw"


# -- keys -----------------------------------------------------------------------------------

async def test_a_rotated_key_verifies_what_it_signed_inside_its_window(
        store: AuditStore) -> None:
    old, new = CheckpointSigner.generate(), CheckpointSigner.generate()
    await write_log(store, old, None)
    rotated = time.time() - 60
    await write_log(store, new, None, instance="gw-b")
    keys = [TrustedKey(old.public_key, not_after=rotated), TrustedKey(new.public_key)]
    assert verify_store(store, keys).ok
    expired = [TrustedKey(old.public_key, not_after=time.time() - AGE - 1),
               TrustedKey(new.public_key)]
    kinds = {p.kind for p in verify_store(store, expired).problems}
    assert kinds >= {"bad_checkpoint", "no_genesis"}


# -- a store that was never migrated --------------------------------------------------------

def test_verify_of_a_store_never_migrated_is_one_line_and_creates_nothing(
        tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    (tmp_path / "seed").write_text("unused")
    config.write_text('[nats]\nuser_seed_file = "seed"\n[keys]\nissuer_seed_file = "seed"\n'
                      '[audit]\nurl = "sqlite:///never.db"\n')
    result = _cli_verify(config)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "never migrated" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "never.db").exists()


def test_verify_of_a_postgres_database_never_migrated_is_one_line(tmp_path: Path) -> None:
    with audit_database("postgresql", tmp_path) as url:
        config = tmp_path / "gateway.toml"
        (tmp_path / "seed").write_text("unused")
        config.write_text('[nats]\nuser_seed_file = "seed"\n[keys]\nissuer_seed_file = '
                          f'"seed"\n[audit]\nurl = "{url}"\n')
        result = _cli_verify(config)
        assert result.returncode == 2 and "never migrated" in result.stderr
        probe = AuditStore(url)
        try:
            with probe.engine.connect() as conn:
                tables = conn.execute(text("SELECT count(*) FROM information_schema.tables "
                                           "WHERE table_schema = 'public'")).scalar_one()
            assert tables == 0
        finally:
            probe.close()
