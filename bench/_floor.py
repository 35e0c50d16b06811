"""What one durable audit record costs on this machine's disk, one at a time: the part of
the gateway's one-at-a-time connect latency that no code change removes while every
record is committed (SQLite WAL, ``synchronous=FULL``: fsync'd) before the answer leaves.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import grant_record
from _load import percentile

from gateway.audit.chain import GENESIS, record_hash
from gateway.audit.store import AuditStore
from gateway.audit.writer import AuditWriter

__all__ = ["CommitFloor", "durable_commit_floor"]

INSTANCE = "bench-floor"


# One-at-a-time connects reach the gateway about this far apart (the no-op's p50 is 1.2
# to 2.2 ms here). A disk kept busy by back-to-back commits answers faster than one that
# idles between them (measured here: 0.16 ms back to back, 0.22 to 0.24 ms paced), so the
# floor for the one-at-a-time record is the paced commit.
PACE_SECONDS = 0.0015


@dataclass
class CommitFloor:
    commit_p50_ms: float  # one record, one transaction, on the calling thread, back to back
    writer_p50_ms: float  # the same through the gateway's writer (its thread and back)
    paced_p50_ms: float = 0.0  # on the calling thread, one commit every PACE_SECONDS


def _direct_commits(store: AuditStore, commits: int, pace: float = 0.0) -> list[float]:
    appender = store.appender()
    previous, samples = GENESIS, []
    try:
        for seq in range(1, commits + 1):
            row = grant_record(INSTANCE).as_row()
            row["chain_seq"], row["prev_hash"] = seq, previous
            previous = row["record_hash"] = record_hash(row)
            if pace:
                time.sleep(pace)
            started = time.perf_counter()
            appender.append([row])
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        appender.close()
    return samples


async def _writer_commits(store: AuditStore, commits: int) -> list[float]:
    instance = f"{INSTANCE}-writer"
    writer = AuditWriter(store, instance=instance)
    samples = []
    try:
        for _ in range(commits):
            record = grant_record(instance)
            started = time.perf_counter()
            await writer.write(record)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        writer.close()
    return samples


def durable_commit_floor(commits: int = 1000) -> CommitFloor:
    """p50 of ``commits`` one-record commits into a fresh SQLite audit store in the
    system temp directory (where the benchmarks keep theirs): direct, back to back and
    paced as one-at-a-time connects are, and via the writer."""
    with tempfile.TemporaryDirectory() as tmp:
        store = AuditStore(f"sqlite:///{Path(tmp) / 'audit.db'}")
        try:
            store.migrate()
            direct = _direct_commits(store, commits)
            via_writer = asyncio.run(_writer_commits(store, commits))
        finally:
            store.close()
    with tempfile.TemporaryDirectory() as tmp:
        store = AuditStore(f"sqlite:///{Path(tmp) / 'audit.db'}")
        try:
            store.migrate()
            paced = _direct_commits(store, commits, PACE_SECONDS)
        finally:
            store.close()
    return CommitFloor(percentile(direct, 0.5), percentile(via_writer, 0.5),
                       percentile(paced, 0.5))
