"""The audit store on SQLite and the real PostgreSQL: migrations, the hash chain, signed
checkpoints, verify naming each tampered record, and retention purges."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import column, delete, insert, select, table, text, update

from gateway.audit.chain import CheckpointSigner, record_hash
from gateway.audit.record import AuditRecord
from gateway.audit.retention import purge
from gateway.audit.schema import checkpoints, decisions
from gateway.audit.store import AuditStore, DecisionQuery
from gateway.audit.verify import verify_store
from gateway.audit.writer import AuditWriter
from tests.databases import audit_database

pytestmark = pytest.mark.integration
INSTANCE = "gw-test"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    with audit_database(request.param, tmp_path) as url:
        audit = AuditStore(url)
        assert audit.migrate() == "0002"
        try:
            yield audit
        finally:
            audit.close()


def _record(index: int, *, at: float | None = None, instance: str = INSTANCE) -> AuditRecord:
    return AuditRecord(
        decision_id=f"d{index:05d}-{instance}", decided_at=at or time.time(),
        decision="grant" if index % 3 else "deny", reason_code="granted", reason="granted",
        gateway_instance=instance, latency_ms=1.5, method="oidc",
        principal=f"https://idp#worker-{index % 2}", dag_id="etl", task_id=f"t{index % 4}",
        permissions={"pub": {"allow": [f"airflow.etl.t{index % 4}.>"], "deny": []}},
        policy_ids=("etl-workers",), policy_set_hash="sha256:ab")


async def _write(store: AuditStore, records: list[AuditRecord],
                 signer: CheckpointSigner | None = None, every: int = 5,
                 instance: str = INSTANCE) -> AuditWriter:
    writer = AuditWriter(store, instance=instance, signer=signer, checkpoint_every=every)
    await asyncio.gather(*(writer.write(r) for r in records))
    writer.close()
    return writer


def _problems(store: AuditStore, signer: CheckpointSigner | None) -> list[tuple[str, str]]:
    report = verify_store(store, [signer.public_key] if signer else [])
    return [(p.kind, p.decision_id or "") for p in report.problems]


async def test_concurrent_writes_share_commits_and_form_one_valid_chain(
        store: AuditStore) -> None:
    signer = CheckpointSigner.generate()
    writer = await _write(store, [_record(i) for i in range(200)], signer)
    assert store.count() == 200
    assert writer.commits < 200, "group commit: fewer transactions than records"
    report = verify_store(store, [signer.public_key])
    assert report.ok, report.problems
    assert (report.records, report.instances) == (200, 1)
    assert report.checkpoints >= 1
    rows = list(store.chain_rows())
    assert [r["chain_seq"] for r in rows] == list(range(1, 201))
    assert all(record_hash(r) == r["record_hash"] for r in rows)


async def test_records_written_in_one_loop_turn_share_one_transaction(
        store: AuditStore) -> None:
    writer = AuditWriter(store, instance=INSTANCE)
    try:
        futures = []
        for i in range(10):
            futures.append(writer.write(_record(i)))
            # Lets the GIL go, as signing and sealing do between two decisions: a thread
            # woken per record would commit the first ones on their own here.
            time.sleep(0.002)
        await asyncio.gather(*futures)
    finally:
        writer.close()
    assert store.count() == 10
    assert writer.commits == 1


async def test_a_hand_off_larger_than_max_batch_is_split(store: AuditStore) -> None:
    writer = AuditWriter(store, instance=INSTANCE, max_batch=4)
    try:
        await asyncio.gather(*[writer.write(_record(i)) for i in range(10)])
    finally:
        writer.close()
    assert writer.commits == 3, "10 records committed as 4 + 4 + 2"
    assert [r["chain_seq"] for r in store.chain_rows()] == list(range(1, 11))


async def test_close_commits_what_was_written_but_not_yet_handed_over(
        store: AuditStore) -> None:
    writer = AuditWriter(store, instance=INSTANCE)
    futures = [writer.write(_record(i)) for i in range(3)]
    writer.close()  # before this loop turn ends, so before the hand-off would run
    await asyncio.gather(*futures)
    assert store.count() == 3


async def test_a_loop_that_stopped_before_its_hand_off_does_not_strand_other_callers(
        store: AuditStore) -> None:
    writer = AuditWriter(store, instance=INSTANCE)

    def write_on_a_loop_that_stops() -> None:
        other = asyncio.new_event_loop()

        async def write_and_stop() -> None:
            writer.write(_record(1))  # its hand-off is due next turn, which never comes
            other.stop()

        task = other.create_task(write_and_stop())
        other.run_forever()
        assert task.done()
        other.close()

    try:
        await asyncio.to_thread(write_on_a_loop_that_stops)
        await asyncio.wait_for(writer.write(_record(2)), timeout=10)
        assert [r.decision_id for r in store.query(DecisionQuery(limit=10))] == [
            _record(2).decision_id]
    finally:
        writer.close()
    assert store.count() == 2, "close() still commits the stopped loop's record"


async def test_a_restarted_writer_continues_its_chain(store: AuditStore) -> None:
    signer = CheckpointSigner.generate()
    await _write(store, [_record(i) for i in range(5)], signer)
    await _write(store, [_record(i) for i in range(5, 9)], signer)
    assert verify_store(store, [signer.public_key]).ok
    assert max(r["chain_seq"] for r in store.chain_rows()) == 9


async def test_verify_names_a_modified_record(store: AuditStore) -> None:
    signer = CheckpointSigner.generate()
    await _write(store, [_record(i) for i in range(10)], signer)
    with store.engine.begin() as conn:
        conn.execute(update(decisions).where(decisions.c.decision_id == "d00003-gw-test")
                     .values(decision="grant", reason_code="granted"))
    assert _problems(store, signer) == [("modified", "d00003-gw-test")]  # was a deny


async def test_verify_names_a_deleted_record(store: AuditStore) -> None:
    signer = CheckpointSigner.generate()
    await _write(store, [_record(i) for i in range(10)], signer)
    with store.engine.begin() as conn:
        conn.execute(delete(decisions).where(decisions.c.decision_id == "d00005-gw-test"))
    report = verify_store(store, [signer.public_key])
    [missing] = [p for p in report.problems if p.kind == "missing"]
    assert missing.decision_id == "d00006-gw-test" and "6..6" in missing.message


async def test_verify_names_inserted_records(store: AuditStore) -> None:
    signer = CheckpointSigner.generate()
    await _write(store, [_record(i) for i in range(6)], signer)
    forged = _record(99).as_row()
    with store.engine.begin() as conn:
        conn.execute(insert(decisions), [{**forged, "decision_id": "forged-unchained"}])
        conn.execute(insert(decisions), [{**forged, "decision_id": "forged-tail",
                                          "chain_seq": 7, "prev_hash": "sha256:" + "1" * 64,
                                          "record_hash": "sha256:" + "2" * 64}])
    problems = _problems(store, signer)
    assert ("inserted", "forged-unchained") in problems
    assert ("broken_link", "forged-tail") in problems and ("modified", "forged-tail") in problems


async def test_a_consistently_rewritten_chain_is_caught_by_the_signed_checkpoints(
        store: AuditStore) -> None:
    """An attacker who recomputes every hash after an edit still cannot match the
    signatures."""
    signer = CheckpointSigner.generate()
    await _write(store, [_record(i) for i in range(10)], signer, every=3)
    rows = list(store.chain_rows())
    previous = rows[0]["prev_hash"]
    with store.engine.begin() as conn:
        for row in rows:
            if row["decision_id"] == "d00002-gw-test":
                row["principal"] = "https://idp#someone-else"
            row["prev_hash"] = previous
            row["record_hash"] = record_hash(row)
            previous = row["record_hash"]
            conn.execute(update(decisions).where(decisions.c.seq == row["seq"]).values(
                principal=row["principal"], prev_hash=row["prev_hash"],
                record_hash=row["record_hash"]))
    kinds = {kind for kind, _ in _problems(store, signer)}
    assert kinds == {"bad_checkpoint"}


async def test_a_truncated_tail_and_a_forged_checkpoint_are_caught(store: AuditStore) -> None:
    signer = CheckpointSigner.generate()
    await _write(store, [_record(i) for i in range(10)], signer)
    with store.engine.begin() as conn:
        conn.execute(delete(decisions).where(decisions.c.chain_seq >= 9))
    assert "truncated" in {kind for kind, _ in _problems(store, signer)}
    with store.engine.begin() as conn:
        conn.execute(update(checkpoints).values(signature="AAAA"))
    assert {"bad_checkpoint"} <= {kind for kind, _ in _problems(store, signer)}
    other = CheckpointSigner.generate()
    assert any(k == "bad_checkpoint" for k, _ in _problems(store, other))


async def test_purge_keeps_the_remaining_chain_verifiable(store: AuditStore) -> None:
    signer = CheckpointSigner.generate()
    old = time.time() - 40 * 86400
    records = [_record(i, at=old + i) for i in range(6)] + [_record(i) for i in range(6, 10)]
    await _write(store, records, signer, every=2)
    result = purge(store, signer, older_than_seconds=30 * 86400, now=time.time())
    assert result.deleted == 6 and len(result.anchors) == 1
    assert store.count() == 4
    report = verify_store(store, [signer.public_key])
    assert report.ok, report.problems
    await _write(store, [_record(i) for i in range(10, 13)], signer)  # the chain goes on
    assert verify_store(store, [signer.public_key]).ok
    with store.engine.connect() as conn:
        kinds = [r[0] for r in conn.execute(select(checkpoints.c.kind))]
    assert "purge" in kinds  # the purge itself is on record, signed


def test_a_store_from_release_0_1_is_adopted(tmp_path: Path) -> None:
    """Made by 0.1's create_all (no migration table): stamped 0001, upgraded, and its old
    rows reported as legacy, not as inserted."""
    from alembic import command

    from gateway.audit.migrate import _config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = AuditStore(url)
    with old.engine.begin() as conn:
        command.upgrade(_config(conn), "0001")
        conn.execute(text("DROP TABLE alembic_version"))
        row = {k: v for k, v in _record(1).as_row().items()
               if k not in {"decided_day", "chain_seq", "prev_hash", "record_hash"}}
        old_shape = table("decisions", *(column(name) for name in row))
        conn.execute(insert(old_shape), [row])
    old.close()
    store = AuditStore(url)
    try:
        assert store.migrate() == "0002"
        assert store.count() == 1
        report = verify_store(store, [])
        assert report.ok and report.legacy_records == 1
        assert store.query(DecisionQuery())[0].decision_id == "d00001-gw-test"
    finally:
        store.close()
