"""Is a chain anchored end to end? The checks on one instance's valid signed checkpoints.

A hash chain proves only that its records were not changed *relative to each other*;
who wrote it, and whether its end is still there, only signed checkpoints can say
(``checkpoints.py`` says which ones a writer signs). Given an instance's checkpoints
whose signatures verified, this module finds:

- ``no_genesis``: no signed genesis (nor purge anchor) opens the chain: its instance is
  unknown to the key holder, or the checkpoints were deleted;
- ``after_final``: records after a clean shutdown's final checkpoint, before any new run;
- ``uncovered``: records older than the interval plus a grace that no checkpoint covers
  (a running writer signs its head at least every interval);
- ``checkpoint_gap``: two heartbeats of one run further apart than twice its interval;
- ``interleaved``: a checkpoint from another run that never opened with a start, i.e.
  two processes writing one chain.

A run that ended without a final checkpoint (a crash) is a warning, not a problem:
without an anchor it cannot be told from deleting the last checkpoints with the tail;
with one, the anchor's copies of those checkpoints are what proves the difference.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.audit.checkpoints import GENESIS_KINDS, RUN_KINDS, run_info
from gateway.audit.store import CheckpointRow

__all__ = ["DEFAULT_INTERVAL", "Coverage", "Finding", "check_runs", "has_trusted_start"]

DEFAULT_INTERVAL = 60.0
_KIND_ORDER = {"genesis": 0, "start": 0, "checkpoint": 1, "final": 2}
Finding = tuple[str, int | None, str]  # kind, chain position, message


@dataclass
class Coverage:
    """Which records a chain's checkpoints leave unaccounted for, position by position."""

    covered_to: int = 0
    # (f, s): positions f+1..s were appended after a final checkpoint at f (s None: open).
    after_final: list[tuple[int, int | None]] = field(default_factory=list)
    uncovered_before: float | None = None  # decided before this and beyond covered_to

    def classify(self, seq: int, decided_at: float) -> str | None:
        for final_seq, until in self.after_final:
            if seq > final_seq and (until is None or seq <= until):
                return "after_final"
        if (self.uncovered_before is not None and seq > self.covered_to
                and decided_at < self.uncovered_before):
            return "uncovered"
        return None


def has_trusted_start(checkpoints: Sequence[CheckpointRow]) -> bool | None:
    """True: a genesis or purge anchor opens the chain; None: only checkpoints signed
    before genesis checkpoints existed (an older release); False: nothing trusted."""
    if any(c.kind in ("genesis", "purge") for c in checkpoints):
        return True
    if any(c.kind in RUN_KINDS and run_info(c) is None for c in checkpoints):
        return None
    return False


def _in_time_order(checkpoints: Sequence[CheckpointRow]) -> list[CheckpointRow]:
    runs = [c for c in checkpoints if c.kind in RUN_KINDS]
    return sorted(runs, key=lambda c: (c.created_at, c.chain_seq, _KIND_ORDER[c.kind]))


def _interval(checkpoint: CheckpointRow) -> float:
    info = run_info(checkpoint)
    return info.interval if info is not None else DEFAULT_INTERVAL


def check_runs(instance: str, checkpoints: Sequence[CheckpointRow], *, now: float | None,
               grace: float) -> tuple[list[Finding], list[str], Coverage]:
    """Findings (problems), warnings and the coverage of one instance's valid checkpoints."""
    findings: list[Finding] = []
    warnings: list[str] = []
    coverage = Coverage(covered_to=max((c.chain_seq for c in checkpoints), default=0))
    ordered = _in_time_order(checkpoints)
    nonce: str | None = None
    for previous, current in zip([None, *ordered], ordered, strict=False):
        info = run_info(current)
        if info is None:
            continue  # signed before runs were recorded (an older release)
        if current.kind in GENESIS_KINDS:
            if previous is not None and previous.kind != "final" and nonce is not None:
                warnings.append(f"instance {instance} stopped without a final checkpoint "
                                f"before position {current.chain_seq} (a crash, or its last "
                                "checkpoints were deleted)")
            if previous is not None and previous.kind == "final" and (
                    current.chain_seq > previous.chain_seq):
                coverage.after_final.append((previous.chain_seq, current.chain_seq))
            nonce = info.nonce
            continue
        if nonce is not None and info.nonce != nonce:
            findings.append(("interleaved", current.chain_seq,
                             f"checkpoint at position {current.chain_seq} of instance "
                             f"{instance} comes from another process (pid {info.pid} on "
                             f"{info.host}) than the run in force: two processes share "
                             "this chain"))
            continue
        gap = current.created_at - previous.created_at if previous is not None else 0.0
        if previous is not None and gap > 2 * info.interval:
            findings.append(("checkpoint_gap", current.chain_seq,
                             f"no checkpoint of instance {instance} for {gap:.0f} s before "
                             f"position {current.chain_seq} (heartbeat every "
                             f"{info.interval:.0f} s): checkpoints deleted, or the writer "
                             "stalled"))
    _close(instance, ordered, now=now, grace=grace, coverage=coverage, warnings=warnings)
    return findings, warnings, coverage


def _close(instance: str, ordered: list[CheckpointRow], *, now: float | None, grace: float,
           coverage: Coverage, warnings: list[str]) -> None:
    """How the last run ends: final (nothing may follow) or open (heartbeats expected)."""
    last = ordered[-1] if ordered else None
    if last is not None and last.kind == "final":
        coverage.after_final.append((last.chain_seq, None))
        return
    if now is None or last is None:
        return
    interval = _interval(last)
    coverage.uncovered_before = now - interval - grace
    if now - last.created_at > 2 * interval + grace:
        warnings.append(f"instance {instance} has no checkpoint since position "
                        f"{last.chain_seq} ({now - last.created_at:.0f} s ago) and no final "
                        "one: it crashed, or its last checkpoints were deleted")
