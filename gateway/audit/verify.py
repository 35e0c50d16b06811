"""`audit verify`: check every chain and checkpoint, and name what was tampered with.

Per gateway instance the chain must run without gaps from its start (1, or the position
after a signed purge anchor), each record's hash must match its content, and each
record's ``prev_hash`` must be the previous record's hash. Checkpoints must carry a
valid signature by a trusted key (inside that key's validity window) and match the
record at their position; a checkpoint beyond the chain's end means records were
deleted from its tail. Rows outside any chain are inserted, unless they predate the
chain (``legacy_max_seq``).

With trusted keys, each chain must also be anchored end to end (``anchoring.py``):
a signed genesis, no record after a final checkpoint, no record older than the interval
plus a grace left uncovered, no heartbeat gap, no second process in one chain. With an
anchor (a checkpoint directory or stream read by ``anchors.py``), its checkpoints count
too, and each one missing from the database is reported. Pure: rows in, problems out.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from gateway.audit.anchoring import Coverage, check_runs, has_trusted_start
from gateway.audit.chain import (
    GENESIS,
    checkpoint_payload,
    record_hash,
    verify_checkpoint_signature,
)
from gateway.audit.checkpoints import RUN_KINDS
from gateway.audit.store import AuditStore, CheckpointRow

__all__ = ["Problem", "TrustedKey", "VerifyReport", "checkpoint_key", "valid_checkpoint",
           "verify_rows", "verify_store"]


@dataclass(frozen=True)
class Problem:
    # modified | missing | inserted | broken_link | bad_checkpoint | truncated | no_genesis
    # | after_final | uncovered | checkpoint_gap | interleaved | checkpoint_missing
    kind: str
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
    anchored_checkpoints: int | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "records": self.records, "instances": self.instances,
                "checkpoints": self.checkpoints, "legacy_records": self.legacy_records,
                "anchored_checkpoints": self.anchored_checkpoints,
                "problems": [p.as_dict() for p in self.problems], "warnings": self.warnings}


@dataclass(frozen=True)
class TrustedKey:
    """A checkpoint public key and when it was in use (epoch seconds; None: open).
    A rotated-out key keeps verifying what it signed inside its window, nothing after."""

    public_key: str
    not_before: float | None = None
    not_after: float | None = None

    def covers(self, at: float) -> bool:
        return ((self.not_before is None or at >= self.not_before)
                and (self.not_after is None or at <= self.not_after))


def _trusted(keys: Collection[str | TrustedKey]) -> list[TrustedKey]:
    return [k if isinstance(k, TrustedKey) else TrustedKey(k) for k in keys]


def checkpoint_key(checkpoint: CheckpointRow) -> tuple[Any, ...]:
    """What makes two copies (database, anchor) the same signed checkpoint."""
    return (checkpoint.gateway_instance, checkpoint.kind, checkpoint.chain_seq,
            checkpoint.record_hash, checkpoint.signature)


def valid_checkpoint(checkpoint: CheckpointRow, trusted: Collection[str | TrustedKey]) -> bool:
    payload = checkpoint_payload(
        instance=checkpoint.gateway_instance, kind=checkpoint.kind,
        chain_seq=checkpoint.chain_seq, record_hash=checkpoint.record_hash,
        created_at=checkpoint.created_at, detail=checkpoint.detail)
    return any(k.public_key == checkpoint.public_key and k.covers(checkpoint.created_at)
               for k in _trusted(trusted)) and verify_checkpoint_signature(
        payload, checkpoint.signature, checkpoint.public_key)


class _Chain:
    """Walks one instance's rows in chain order."""

    def __init__(self, instance: str, start: tuple[int, str], report: VerifyReport,
                 coverage: Coverage) -> None:
        self.instance = instance
        self.expected_seq, self.expected_prev = start[0] + 1, start[1]
        self.report = report
        self.coverage = coverage
        self.hashes: dict[int, str] = {}
        self.last_seq = start[0]
        self.first: dict[str, Any] | None = None
        self.unaccounted: set[str] = set()  # after_final / uncovered: reported once each

    def problem(self, kind: str, row: dict[str, Any] | None, message: str) -> None:
        self.report.problems.append(Problem(
            kind, self.instance, None if row is None else row["chain_seq"],
            None if row is None else row["decision_id"], message))

    def visit(self, row: dict[str, Any]) -> None:
        seq, decision_id = row["chain_seq"], row["decision_id"]
        self.report.records += 1
        if self.first is None:
            self.first = row
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
        self._account(row)
        self.hashes[seq] = row["record_hash"]
        self.expected_seq, self.expected_prev = seq + 1, row["record_hash"]
        self.last_seq = seq

    def _account(self, row: dict[str, Any]) -> None:
        """Is the record inside the span the run's checkpoints vouch for?"""
        kind = self.coverage.classify(row["chain_seq"], float(row["decided_at"]))
        if kind is None or kind in self.unaccounted:
            return
        self.unaccounted.add(kind)
        if kind == "after_final":
            self.problem(kind, row, f"record {row['decision_id']} at position "
                         f"{row['chain_seq']} of instance {self.instance} follows its final "
                         "checkpoint (a clean shutdown): appended afterwards")
        else:
            self.problem(kind, row, f"record {row['decision_id']} at position "
                         f"{row['chain_seq']} of instance {self.instance} is older than the "
                         "checkpoint interval and no signed checkpoint covers it: the "
                         "checkpoints after it were deleted, or it was appended")

    def check(self, checkpoint: CheckpointRow) -> None:
        seq = checkpoint.chain_seq
        if seq > self.last_seq:
            self.report.problems.append(Problem(
                "truncated", self.instance, seq, None, f"a signed checkpoint covers position "
                f"{seq} of instance {self.instance}, but the chain ends at {self.last_seq}: "
                "records deleted from its end"))
        elif self.hashes.get(seq) != checkpoint.record_hash:
            self.report.problems.append(Problem(
                "bad_checkpoint", self.instance, seq, None, f"the record at position {seq} "
                f"of instance {self.instance} is not the one the signed checkpoint covers: "
                "the chain was rewritten"))


def _start(anchors: list[CheckpointRow]) -> tuple[int, str]:
    purges = [a for a in anchors if a.kind == "purge"]
    if not purges:
        return 0, GENESIS
    last = max(purges, key=lambda a: a.chain_seq)
    return last.chain_seq, last.record_hash


@dataclass(frozen=True)
class _Context:
    trusted: bool
    now: float | None
    grace: float


def verify_rows(rows: Iterable[dict[str, Any]], checkpoints: list[CheckpointRow],
                unchained: list[dict[str, Any]], legacy_max_seq: int,
                trusted_keys: Collection[str | TrustedKey], *, now: float | None = None,
                grace: float = 30.0,
                anchored: Sequence[CheckpointRow] | None = None) -> VerifyReport:
    """``now`` enables the time checks (uncovered records, stale chains); ``anchored``
    is what an anchor holds (None: no anchor given)."""
    report = VerifyReport(checkpoints=len(checkpoints))
    valid = _valid_by_instance(checkpoints, trusted_keys, report, where="")
    if anchored is not None:
        _merge_anchor(checkpoints, anchored, trusted_keys, valid, report)
    context = _Context(bool(trusted_keys), now, grace)
    seen: set[str] = set()
    for instance, instance_rows in groupby(rows, key=lambda r: str(r["gateway_instance"])):
        seen.add(instance)
        _verify_instance(instance, instance_rows, valid.get(instance, []), report, context)
    for instance, anchors in valid.items():  # an instance whose rows are all gone
        if instance not in seen:
            _verify_instance(instance, iter(()), anchors, report, context)
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


def _valid_by_instance(checkpoints: Iterable[CheckpointRow],
                       trusted_keys: Collection[str | TrustedKey], report: VerifyReport, *,
                       where: str) -> dict[str, list[CheckpointRow]]:
    valid: dict[str, list[CheckpointRow]] = {}
    for checkpoint in checkpoints:
        if valid_checkpoint(checkpoint, trusted_keys):
            valid.setdefault(checkpoint.gateway_instance, []).append(checkpoint)
        else:
            report.problems.append(Problem(
                "bad_checkpoint", checkpoint.gateway_instance, checkpoint.chain_seq, None,
                f"checkpoint{where} at position {checkpoint.chain_seq} of instance "
                f"{checkpoint.gateway_instance} has no valid signature by a trusted key"))
    return valid


def _merge_anchor(checkpoints: list[CheckpointRow], anchored: Sequence[CheckpointRow],
                  trusted_keys: Collection[str | TrustedKey],
                  valid: dict[str, list[CheckpointRow]], report: VerifyReport) -> None:
    """The anchor's checkpoints count as if they were in the database; each valid one
    missing from it is reported; database checkpoints the anchor lacks are a warning
    (an anchor write may lag, or have failed: the writer retries, see docs/audit.md)."""
    in_db = {checkpoint_key(c) for c in checkpoints}
    unique = {checkpoint_key(c): c for c in anchored}
    report.anchored_checkpoints = len(unique)
    for instance, extra in _valid_by_instance(
            [c for k, c in unique.items() if k not in in_db], trusted_keys, report,
            where=" in the anchor").items():
        valid.setdefault(instance, []).extend(extra)
        for checkpoint in extra:
            report.problems.append(Problem(
                "checkpoint_missing", instance, checkpoint.chain_seq, None,
                f"the anchor holds a signed {checkpoint.kind} checkpoint at position "
                f"{checkpoint.chain_seq} of instance {instance} that the database lacks: "
                "deleted"))
    lagging = [c for c in checkpoints if c.kind != "purge" and checkpoint_key(c) not in unique]
    if lagging:
        report.warnings.append(f"{len(lagging)} database checkpoint(s) are not in the anchor "
                               "(not yet written there, or the anchor was unreachable)")


def _verify_instance(instance: str, rows: Iterator[dict[str, Any]],
                     anchors: list[CheckpointRow], report: VerifyReport,
                     context: _Context) -> None:
    start = _start(anchors)
    findings, warnings, coverage = check_runs(
        instance, anchors, now=context.now, grace=context.grace) if context.trusted else (
        [], [], Coverage())
    chain = _Chain(instance, start, report, coverage)
    for row in rows:
        chain.visit(row)
    for checkpoint in anchors:
        if checkpoint.kind in RUN_KINDS and checkpoint.chain_seq > start[0]:
            chain.check(checkpoint)
    for kind, seq, message in findings:
        report.problems.append(Problem(kind, instance, seq, None, message))
    report.warnings.extend(warnings)
    if context.trusted and chain.first is not None:
        _check_genesis(instance, anchors, chain.first, report)


def _check_genesis(instance: str, anchors: list[CheckpointRow], first: dict[str, Any],
                   report: VerifyReport) -> None:
    trusted = has_trusted_start(anchors)
    if trusted is None:
        report.warnings.append(f"instance {instance} was started by a release without "
                               "genesis checkpoints: who began it is not signed")
    elif not trusted:
        report.problems.append(Problem(
            "no_genesis", instance, first["chain_seq"], first["decision_id"],
            f"no signed genesis checkpoint opens the chain of instance {instance} (first "
            f"record {first['decision_id']}): an unknown instance, or its checkpoints were "
            "deleted"))


def verify_store(store: AuditStore, trusted_keys: Collection[str | TrustedKey], *,
                 now: float | None = None, grace: float = 30.0,
                 anchored: Sequence[CheckpointRow] | None = None) -> VerifyReport:
    """The store's rows through :func:`verify_rows`, time checks against ``now`` (the
    clock, unless given)."""
    return verify_rows(store.chain_rows(), store.checkpoint_rows(), store.unchained_rows(),
                       store.legacy_max_seq(), trusted_keys,
                       now=time.time() if now is None else now, grace=grace,
                       anchored=anchored)
