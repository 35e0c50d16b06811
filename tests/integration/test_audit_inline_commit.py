"""A decision alone in flight is committed on the calling thread, without the writer
thread's two hand-offs; everything else about the record stays as it was: durable before
the answer, one chain, a locked or slow store never holds the event loop.

Against a real SQLite file (a second real connection holds its lock) and PostgreSQL,
whose commits always go through the thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.audit import writer as writer_module
from gateway.audit.chain import CheckpointSigner, public_key_id
from gateway.audit.record import AuditRecord
from gateway.audit.store import Appender, AuditStore, DecisionQuery
from gateway.audit.verify import verify_store
from gateway.audit.writer import LATE_MARK, AuditWriter
from gateway.client import oidc_envelope
from tests.integration.harness import Stack, connect

pytestmark = pytest.mark.integration

INSTANCE = "gw-inline"


def record(decision_id: str, decision: str = "grant") -> AuditRecord:
    return AuditRecord(decision_id=decision_id, decided_at=time.time(), decision=decision,
                       reason_code="granted" if decision == "grant" else "policy_denied",
                       reason="test", gateway_instance=INSTANCE, latency_ms=1.0,
                       identity_fingerprint="sha256:" + "ab" * 32)


@pytest.fixture(autouse=True)
def any_disk_is_fast_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit slower than 10 ms pauses inline commits; on a busy CI disk one fsync can
    take that long. These tests are about which path a record takes, not the disk, so
    the pause is tested on its own (it sets the threshold back to 0)."""
    monkeypatch.setattr(writer_module, "_INLINE_SLOW_SECONDS", 3600.0)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[AuditStore]:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def assert_verified(store: AuditStore, signer: CheckpointSigner | None = None) -> None:
    keys = [public_key_id(signer.key.verify_key)] if signer is not None else []
    report = verify_store(store, keys)
    assert report.ok, report.problems


def stored_ids(store: AuditStore) -> list[str]:
    return sorted(r.decision_id for r in store.query(DecisionQuery(limit=1000)))


async def test_a_lone_record_is_committed_before_write_returns(
        sqlite_store: AuditStore) -> None:
    signer = CheckpointSigner.generate()
    writer = AuditWriter(sqlite_store, instance=INSTANCE, signer=signer)
    try:
        await writer.write(record("opens-the-chain"))  # the thread writes the genesis first
        future = writer.write(record("alone"), time.time() + 2.0, alone=True)
        assert future.done() and future.exception() is None
        # Already durable: another connection reads it before the loop turns again.
        assert "alone" in stored_ids(sqlite_store)
        assert writer.inline_commits == 1 and writer.healthy
    finally:
        writer.close()
    assert_verified(sqlite_store, signer)


async def test_a_locked_store_hands_the_record_to_the_thread(
        sqlite_store: AuditStore, tmp_path: Path) -> None:
    writer = AuditWriter(sqlite_store, instance=INSTANCE)
    holder = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    try:
        await writer.write(record("before"), alone=True)
        # What keeps the loop from being held: its connection never waits for a lock
        # (the writer thread's waits up to 1 s).
        assert _lock_wait_ms(writer._inline) == 0
        assert _lock_wait_ms(writer._appender) == 1000
        holder.execute("BEGIN IMMEDIATE")  # another process writing: the lock is taken
        future = writer.write(record("while-locked"), time.time() + 5.0, alone=True)
        assert not future.done() and writer.inline_commits == 1
        holder.execute("ROLLBACK")
        await asyncio.wait_for(future, 5.0)
        assert stored_ids(sqlite_store) == ["before", "while-locked"]
        assert writer.healthy, "a lock held by another writer is not a failing store"
        # Inline commits pause briefly after a lock, then resume by themselves.
        writer._inline_paused_until = 0.0
        await writer.write(record("after"), alone=True)
        assert writer.inline_commits == 2
    finally:
        holder.close()
        writer.close()
    assert_verified(sqlite_store)


def _lock_wait_ms(appender: Appender | None) -> int:
    assert appender is not None
    if appender._conn is None:
        appender.append([])  # opens its connection, writes nothing
    cursor = appender._conn.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout")
        return int(cursor.fetchone()[0])
    finally:
        cursor.close()


async def test_decisions_in_flight_together_share_the_threads_commit(
        sqlite_store: AuditStore) -> None:
    writer = AuditWriter(sqlite_store, instance=INSTANCE)
    try:
        await asyncio.gather(*(writer.write(record(f"r{i}")) for i in range(20)))
        assert writer.inline_commits == 0 and writer.commits < 20
    finally:
        writer.close()


async def test_inline_and_thread_commits_make_one_unbroken_chain(
        sqlite_store: AuditStore) -> None:
    signer = CheckpointSigner.generate()
    writer = AuditWriter(sqlite_store, instance=INSTANCE, signer=signer, checkpoint_every=7)
    try:
        for round_ in range(10):
            await writer.write(record(f"alone-{round_}"), alone=True)
            await asyncio.gather(*(writer.write(record(f"shared-{round_}-{i}"))
                                   for i in range(3)))
        assert writer.inline_commits >= 9  # the first waits for the chain's genesis
    finally:
        writer.close()
    assert len(stored_ids(sqlite_store)) == 40
    assert_verified(sqlite_store, signer)


async def test_a_record_close_to_its_deadline_goes_through_the_thread(
        sqlite_store: AuditStore) -> None:
    writer = AuditWriter(sqlite_store, instance=INSTANCE, commit_budget_seconds=1.2)
    try:
        with pytest.raises(Exception, match="in time"):
            await writer.write(record("late-grant"), time.time() + 0.5, alone=True)
        await writer.write(record("late-deny", "deny"), time.time() + 0.5, alone=True)
        assert writer.inline_commits == 0
    finally:
        writer.close()
    (stored,) = sqlite_store.query(DecisionQuery(limit=10))
    assert stored.decision_id == "late-deny" and stored.reason.startswith(LATE_MARK)


async def test_a_slow_commit_turns_inline_commits_off_for_a_while(
        sqlite_store: AuditStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every real commit counts as slow: the pause is what is tested, not the disk.
    monkeypatch.setattr(writer_module, "_INLINE_SLOW_SECONDS", 0.0)
    writer = AuditWriter(sqlite_store, instance=INSTANCE)
    try:
        await writer.write(record("slow"), alone=True)
        await writer.write(record("paused"), alone=True)
        assert writer.inline_commits == 1
        assert stored_ids(sqlite_store) == ["paused", "slow"]
    finally:
        writer.close()


async def test_postgresql_commits_always_go_through_the_thread(store: AuditStore) -> None:
    writer = AuditWriter(store, instance=INSTANCE)
    try:
        future = writer.write(record("alone"), alone=True)
        if store.backend == "sqlite":
            assert future.done()
        else:
            assert not future.done()
        await future
        assert writer.inline_commits == (1 if store.backend == "sqlite" else 0)
    finally:
        writer.close()
    assert [r.decision_id for r in store.query(DecisionQuery(limit=10))] == ["alone"]


async def test_a_record_the_store_refuses_inline_fails_its_decision(
        sqlite_store: AuditStore) -> None:
    writer = AuditWriter(sqlite_store, instance=INSTANCE)
    try:
        future = writer.write(replace(record("bad"), client_name="x\ud800"), alone=True)
        assert future.done() and future.exception() is not None
        assert writer.failures == 1
    finally:
        writer.close()
    assert stored_ids(sqlite_store) == []


async def test_connects_one_at_a_time_are_committed_inline(running: Stack) -> None:
    gateway = running.gateway
    assert gateway is not None
    envelope = oidc_envelope(running.token(), dag_id="etl", task_id="load")
    before = gateway.writer.inline_commits
    for _ in range(5):
        nc = await connect(running.nats_url, envelope)
        await nc.close()
    assert gateway.writer.inline_commits - before >= 4  # the first may open the chain
    grants = gateway.store.query(DecisionQuery(decision="grant", limit=100))
    assert len(grants) == 5
    assert_verified(gateway.store, gateway.signer)


async def test_connects_that_arrive_together_share_commits(running: Stack) -> None:
    # Each decision runs alone through the handler (nothing in it waits), so "alone"
    # must also look at what the service holds: requests read and not yet decided.
    gateway = running.gateway
    assert gateway is not None
    envelope = oidc_envelope(running.token(), dag_id="etl", task_id="load")
    clients = await asyncio.gather(*(connect(running.nats_url, envelope) for _ in range(40)))
    await asyncio.gather(*(nc.close() for nc in clients))
    writer = gateway.writer
    assert len(gateway.store.query(DecisionQuery(decision="grant", limit=100))) == 40
    assert writer.commits < writer.records, "every record had a commit to itself"
    assert writer.inline_commits < 40
    assert_verified(gateway.store, gateway.signer)
