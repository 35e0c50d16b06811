"""`audit verify`: check every chain and checkpoint, and name what was tampered with.

Per gateway instance the chain must run without gaps from its start (1, or the position
after a signed purge anchor), each record's hash must match its content, and each
record's ``prev_hash`` must be the previous record's hash. Checkpoints must carry a
valid signature by a trusted key and match the record at their position; a checkpoint
beyond the chain's end means records were deleted from its tail. Rows outside any chain
are inserted, unless they predate the chain (``legacy_max_seq``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from gateway.audit.chain import (
    GENESIS,
    checkpoint_payload,
    record_hash,
    verify_checkpoint_signature,
)
from gateway.audit.store import AuditStore, CheckpointRow

__all__ = ["Problem", "VerifyReport", "verify_rows", "verify_store"]


@dataclass(frozen=True)
class Problem:
    kind: str  # modified | missing | inserted | broken_link | bad_checkpoint | truncated
    instance: str
    chain_seq: int | None
    decision_id: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VerifyReport:
    records: int = 0
    instances: int = 0
    checkpoints: int = 0
    legacy_records: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "instances": self.instances,
                "checkpoints": self.checkpoints, "legacy_records": self.legacy_records,
                "problems": [p.as_dict() for p in self.problems], "warnings": self.warnings}


def _valid(checkpoint: CheckpointRow, trusted: Collection[str]) -> bool:
    payload = checkpoint_payload(
        instance=checkpoint.gateway_instance, kind=checkpoint.kind,
        chain_seq=checkpoint.chain_seq, record_hash=checkpoint.record_hash,
        created_at=checkpoint.created_at, detail=checkpoint.detail)
    return checkpoint.public_key in trusted and verify_checkpoint_signature(
        payload, checkpoint.signature, checkpoint.public_key)


class _Chain:
    """Walks one instance's rows in chain order."""

    def __init__(self, instance: str, start: tuple[int, str], report: VerifyReport) -> None:
        self.instance = instance
        self.expected_seq, self.expected_prev = start[0] + 1, start[1]
        self.report = report
        self.hashes: dict[int, str] = {}
        self.last_seq = start[0]

    def problem(self, kind: str, row: dict[str, Any] | None, message: str) -> None:
        self.report.problems.append(Problem(
            kind, self.instance, None if row is None else row["chain_seq"],
            None if row is None else row["decision_id"], message))

    def visit(self, row: dict[str, Any]) -> None:
        seq, decision_id = row["chain_seq"], row["decision_id"]
        self.report.records += 1
        if seq < self.expected_seq:
            self.problem("inserted", row, f"record {decision_id} repeats or precedes position "
                         f"{seq} of instance {self.instance}: inserted")
            return
        if seq > self.expected_seq:
            self.problem("missing", row, f"records {self.expected_seq}..{seq - 1} of instance "
                         f"{self.instance} are missing before {decision_id}: deleted")
        elif row["prev_hash"] != self.expected_prev:
            self.problem("broken_link", row, f"record {decision_id} does not follow the "
                         f"record before it: that one was modified, or this one inserted")
        if record_hash(row) != row["record_hash"]:
            self.problem("modified", row, f"record {decision_id} does not match its hash: "
                         "modified")
        self.hashes[seq] = row["record_hash"]
        self.expected_seq, self.expected_prev = seq + 1, row["record_hash"]
        self.last_seq = seq

    def check(self, checkpoint: CheckpointRow) -> None:
        if checkpoint.chain_seq > self.last_seq:
            self.problem("truncated", None, f"a signed checkpoint covers position "
                         f"{checkpoint.chain_seq} of instance {self.instance}, but the chain "
                         f"ends at {self.last_seq}: records deleted from its end")
        elif self.hashes.get(checkpoint.chain_seq) != checkpoint.record_hash:
            self.problem("bad_checkpoint", None, f"the record at position "
                         f"{checkpoint.chain_seq} of instance {self.instance} is not the one "
                         "the signed checkpoint covers: the chain was rewritten")


def _start(anchors: list[CheckpointRow]) -> tuple[int, str]:
    purges = [a for a in anchors if a.kind == "purge"]
    if not purges:
        return 0, GENESIS
    last = max(purges, key=lambda a: a.chain_seq)
    return last.chain_seq, last.record_hash


def verify_rows(rows: Iterable[dict[str, Any]], checkpoints: list[CheckpointRow],
                unchained: list[dict[str, Any]], legacy_max_seq: int,
                trusted_keys: Collection[str]) -> VerifyReport:
    report = VerifyReport(checkpoints=len(checkpoints))
    valid: dict[str, list[CheckpointRow]] = {}
    for checkpoint in checkpoints:
        if _valid(checkpoint, trusted_keys):
            valid.setdefault(checkpoint.gateway_instance, []).append(checkpoint)
        else:
            report.problems.append(Problem(
                "bad_checkpoint", checkpoint.gateway_instance, checkpoint.chain_seq, None,
                f"checkpoint at position {checkpoint.chain_seq} of instance "
                f"{checkpoint.gateway_instance} has no valid signature by a trusted key"))
    seen: set[str] = set()
    for instance, instance_rows in groupby(rows, key=lambda r: str(r["gateway_instance"])):
        seen.add(instance)
        _verify_instance(instance, instance_rows, valid.get(instance, []), report)
    for instance, anchors in valid.items():  # an instance whose rows are all gone
        if instance not in seen:
            _verify_instance(instance, iter(()), anchors, report)
    report.instances = len(seen)
    for row in unchained:
        if row["seq"] <= legacy_max_seq:
            report.legacy_records += 1
        else:
            report.problems.append(Problem(
                "inserted", "", None, row["decision_id"],
                f"record {row['decision_id']} is in no chain: inserted"))
    if not trusted_keys:
        report.warnings.append("no trusted checkpoint key: a rewritten chain or a truncated "
                               "tail cannot be detected")
    return report


def _verify_instance(instance: str, rows: Iterator[dict[str, Any]],
                     anchors: list[CheckpointRow], report: VerifyReport) -> None:
    start = _start(anchors)
    chain = _Chain(instance, start, report)
    for row in rows:
        chain.visit(row)
    for checkpoint in anchors:
        if checkpoint.kind == "checkpoint" and checkpoint.chain_seq > start[0]:
            chain.check(checkpoint)


def verify_store(store: AuditStore, trusted_keys: Collection[str]) -> VerifyReport:
    return verify_rows(store.chain_rows(), store.checkpoint_rows(), store.unchained_rows(),
                       store.legacy_max_seq(), trusted_keys)
