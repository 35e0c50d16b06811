"""When the writer signs a checkpoint, and what a signed checkpoint says about its run.

Every chain is anchored from its first record to its last (issue 19):

- ``genesis``: the first checkpoint of a new chain, at position 0 (no record yet);
- ``start``: a process continuing an existing chain (a configured ``instance`` after a
  restart) signs the head it found;
- ``checkpoint``: every ``every`` records *and* every ``interval`` seconds, also when
  nothing was written (a heartbeat), so "no checkpoint for the last hour" is evidence;
- ``final``: on a clean shutdown; any record after it was not written by the gateway.

Each carries, in its signed ``detail``, the run it belongs to: a random nonce drawn at
process start, the host and pid (to recognise a crashed holder of the name) and the
interval it promised. Verify uses them to see two processes interleaving one chain, and
to know how long a gap may be. Pure: no I/O.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from gateway.audit.chain import GENESIS, CheckpointSigner, checkpoint_payload
from gateway.audit.store import CheckpointRow

__all__ = [
    "GENESIS_KINDS",
    "RUN_KINDS",
    "CheckpointSchedule",
    "RunInfo",
    "lease_holder",
    "run_info",
    "sign_checkpoint",
]

# Kinds that open a run (a new nonce may appear only on these).
GENESIS_KINDS = frozenset({"genesis", "start"})
# Kinds a running writer signs; "purge" is written by retention, outside any run.
RUN_KINDS = frozenset({"genesis", "start", "checkpoint", "final"})


@dataclass(frozen=True)
class RunInfo:
    """One writer process's identity in its checkpoints (signed, in ``detail``)."""

    nonce: str
    host: str
    pid: int
    interval: float

    @classmethod
    def new(cls, *, host: str, pid: int, interval: float) -> RunInfo:
        return cls(secrets.token_hex(16), host, pid, interval)

    def detail(self) -> str:
        return json.dumps({"nonce": self.nonce, "host": self.host, "pid": self.pid,
                           "interval": self.interval}, sort_keys=True)


def run_info(checkpoint: CheckpointRow) -> RunInfo | None:
    """The run a checkpoint belongs to; None for purge anchors and older checkpoints."""
    if checkpoint.kind not in RUN_KINDS:
        return None
    try:
        data: Any = json.loads(checkpoint.detail)
        return RunInfo(str(data["nonce"]), str(data["host"]), int(data["pid"]),
                       float(data["interval"]))
    except (ValueError, TypeError, KeyError):
        return None


def sign_checkpoint(signer: CheckpointSigner, *, instance: str, kind: str, head: tuple[int, str],
                    now: float, run: RunInfo) -> CheckpointRow:
    seq, head_hash = head
    detail = run.detail()
    payload = checkpoint_payload(instance=instance, kind=kind, chain_seq=seq,
                                 record_hash=head_hash, created_at=now, detail=detail)
    return CheckpointRow(instance, kind, seq, head_hash, now, detail, signer.public_key,
                         signer.sign(payload))


def lease_holder(latest: CheckpointRow | None, *, now: float, host: str,
                 alive: bool) -> RunInfo | None:
    """The other run still holding this instance name, or None if it may be taken.

    The name is held while its newest checkpoint is not ``final`` and is younger than
    twice its interval (its heartbeat is fresh). A holder on this host whose pid is gone
    (``alive`` False) crashed: a supervisor restarting it must not wait for it."""
    if latest is None or latest.kind not in RUN_KINDS or latest.kind == "final":
        return None
    info = run_info(latest)
    if info is None or now - latest.created_at > 2 * info.interval:
        return None
    if info.host == host and not alive:
        return None
    return info


class CheckpointSchedule:
    """Which checkpoint is due, given the last one signed (position, time)."""

    def __init__(self, *, every: int, interval: float, now: float) -> None:
        self.every = every
        self.interval = interval
        self.opened = False  # genesis/start signed and committed
        self.last: tuple[int, float] = (0, now)

    def opening_kind(self, head: tuple[int, str] | None) -> str:
        return "genesis" if head is None or head == (0, GENESIS) else "start"

    def due(self, seq: int, now: float) -> bool:
        """After a commit or on a heartbeat: N records, or the interval, since the last."""
        last_seq, last_at = self.last
        return seq - last_seq >= self.every or now - last_at >= self.interval

    def wait(self, now: float) -> float:
        """Seconds until the next heartbeat is due (0 if it already is)."""
        return max(0.0, self.last[1] + self.interval - now)

    def signed(self, checkpoint: CheckpointRow) -> None:
        self.last = (checkpoint.chain_seq, checkpoint.created_at)
        if checkpoint.kind in GENESIS_KINDS:
            self.opened = True
