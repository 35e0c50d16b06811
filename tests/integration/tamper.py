"""What someone with write access to the audit database (and the source, but not the
checkpoint key) can do to it: one function per tamper class of docs/audit.md.

Each attacker is competent: after changing the records it recomputes every hash of
the chain, so only what the hash chain alone cannot show is left to the checkpoints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select

from gateway.audit.anchors import DirectoryAnchor
from gateway.audit.chain import GENESIS, CheckpointSigner, record_hash
from gateway.audit.record import AuditRecord
from gateway.audit.schema import checkpoints, decisions
from gateway.audit.store import AuditStore
from gateway.audit.writer import AuditWriter

INSTANCE = "gw-a"
AGE = 2 * 3600.0  # the log was written two hours before the attack


class FakeClock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def record(index: int, *, at: float, instance: str = INSTANCE,
           decision: str | None = None) -> AuditRecord:
    return AuditRecord(
        decision_id=f"{instance}-d{index:03d}", decided_at=at,
        decision=decision or ("grant" if index % 3 else "deny"), reason_code="granted",
        reason="granted", gateway_instance=instance, latency_ms=1.0, method="oidc",
        principal=f"https://idp#worker-{index % 2}", dag_id="etl", task_id=f"t{index % 4}",
        permissions={"pub": {"allow": [f"airflow.etl.t{index % 4}.>"], "deny": []}},
        policy_ids=("etl",), policy_set_hash="sha256:ab")


@dataclass
class Log:
    """A signed log written ``AGE`` ago: genesis, batches a minute apart, final."""

    store: AuditStore
    signer: CheckpointSigner | None
    anchor_dir: Path | None
    records: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


async def write_log(store: AuditStore, signer: CheckpointSigner | None,
                    anchor_dir: Path | None, *, batches: int = 4, per_batch: int = 3,
                    instance: str = INSTANCE, close: bool = True) -> Log:
    clock = FakeClock(time.time() - AGE)
    sink = DirectoryAnchor(anchor_dir) if anchor_dir is not None else None
    writer = AuditWriter(store, instance=instance, signer=signer, clock=clock,
                         checkpoint_interval_seconds=60.0,
                         on_checkpoint=sink.append if sink is not None else None)
    index = 0
    for _ in range(batches):
        await asyncio.gather(*(writer.write(record(index + i, at=clock.at, instance=instance))
                               for i in range(per_batch)))
        index += per_batch
        clock.at += 61.0  # each batch's commit is also a checkpoint: a minute apart
    if close:
        writer.close()
    return Log(store, signer, anchor_dir, index, {"writer": writer, "clock": clock})


def chain(store: AuditStore, instance: str = INSTANCE) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(decisions).where(decisions.c.gateway_instance == instance)
            .order_by(decisions.c.chain_seq))]


def rewrite(store: AuditStore, rows: list[dict[str, Any]], instance: str = INSTANCE) -> None:
    """Replace ``instance``'s chain with ``rows``, renumbered and re-hashed: a chain
    that is internally perfect."""
    previous = GENESIS
    fixed = []
    for position, row in enumerate(rows, start=1):
        row = {k: v for k, v in row.items() if k != "seq"}
        row["gateway_instance"], row["chain_seq"], row["prev_hash"] = instance, position, previous
        previous = row["record_hash"] = record_hash(row)
        fixed.append(row)
    with store.engine.begin() as conn:
        conn.execute(delete(decisions).where(decisions.c.gateway_instance == instance))
        if fixed:
            conn.execute(insert(decisions), fixed)


def forged_rows(count: int, *, instance: str, at: float, start: int = 500) -> list[dict[str, Any]]:
    return [record(start + i, at=at + i, instance=instance, decision="grant").as_row()
            for i in range(count)]


def delete_checkpoints(store: AuditStore, *, since: float | None = None) -> None:
    stmt = delete(checkpoints)
    if since is not None:
        stmt = stmt.where(checkpoints.c.created_at >= since)
    with store.engine.begin() as conn:
        conn.execute(stmt)


def flip(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "decision": "deny" if row["decision"] == "grant" else "grant"}


# -- the tamper classes of docs/audit.md ---------------------------------------------------

def edit(log: Log) -> None:
    rows = chain(log.store)
    rows[4] = {**rows[4], "principal": "https://idp#someone-else"}
    rewrite(log.store, rows)


def delete_middle(log: Log) -> None:
    rows = chain(log.store)
    rewrite(log.store, rows[:5] + rows[6:])


def delete_tail(log: Log) -> None:
    rewrite(log.store, chain(log.store)[:-3])


def insert_record(log: Log) -> None:
    rows = chain(log.store)
    forged = forged_rows(1, instance=INSTANCE, at=rows[5]["decided_at"])
    rewrite(log.store, rows[:5] + forged + rows[5:])


def reorder(log: Log) -> None:
    rows = chain(log.store)
    rows[2], rows[7] = rows[7], rows[2]
    rewrite(log.store, rows)


def forge_chain(log: Log) -> None:
    rewrite(log.store, forged_rows(2, instance="gw-new", at=time.time() - AGE),
            instance="gw-new")


def delete_all_checkpoints(log: Log) -> None:
    delete_checkpoints(log.store)
    rows = chain(log.store)
    rows[3] = flip(rows[3])
    rewrite(log.store, rows)


def delete_checkpoints_and_tail(log: Log) -> None:
    delete_checkpoints(log.store)
    rewrite(log.store, chain(log.store)[:-3])


def delete_last_checkpoints_and_tail(log: Log) -> None:
    """What a crash would leave: the checkpoints of the last two minutes and the records
    they covered are gone."""
    with log.store.engine.connect() as conn:
        times = sorted(r[0] for r in conn.execute(select(checkpoints.c.created_at)))
    if not times:  # no key, no checkpoints: the tail alone
        rewrite(log.store, chain(log.store)[:-3])
        return
    cut = times[-2]
    delete_checkpoints(log.store, since=cut)
    with log.store.engine.connect() as conn:
        kept = max(r[0] for r in conn.execute(select(checkpoints.c.chain_seq)))
    rewrite(log.store, chain(log.store)[:kept])


def replace_database(log: Log) -> None:
    delete_checkpoints(log.store)
    rewrite(log.store, forged_rows(6, instance=INSTANCE, at=time.time() - AGE))


TAMPER: dict[str, Callable[[Log], None]] = {
    "edit": edit,
    "delete_middle": delete_middle,
    "delete_tail": delete_tail,
    "insert": insert_record,
    "reorder": reorder,
    "forge_chain": forge_chain,
    "delete_checkpoints": delete_all_checkpoints,
    "delete_checkpoints_and_tail": delete_checkpoints_and_tail,
    "delete_last_checkpoints_and_tail": delete_last_checkpoints_and_tail,
    "replace_database": replace_database,
}
