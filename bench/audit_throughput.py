"""Durable audit writes per second: group commit vs one commit per decision.

    .venv/bin/python bench/audit_throughput.py --write docs/benchmarks.md

`concurrency` decisions are in flight at once (as under a reconnect storm); each waits
until its record is committed (SQLite: WAL, synchronous=FULL; PostgreSQL: default
synchronous_commit=on), exactly as the gateway does before answering. "group commit" is
the gateway's writer (up to 256 records per transaction); "one commit per decision" is
the same writer with a batch size of 1. Records are hash-chained and checkpointed in
both. PostgreSQL is the local server (a throwaway database is created and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from _common import grant_record, write_section  # bench/ is on sys.path when run as a script

from gateway.audit.chain import CheckpointSigner
from gateway.audit.store import AuditStore
from gateway.audit.writer import AuditWriter


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{Path(tmp) / 'audit.db'}"


@contextmanager
def postgres_url(admin_dsn: str) -> Iterator[str]:
    name = f"gw_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        user, host, port = conn.info.user, conn.info.host, conn.info.port
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _drive(writer: AuditWriter, total: int, concurrency: int) -> float:
    counter = iter(range(total))

    async def worker() -> None:
        for index in counter:
            await writer.write(grant_record("bench", f"t{index % 50}"))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def measure(url: str, *, max_batch: int, total: int, concurrency: int) -> dict[str, float]:
    store = AuditStore(url)
    store.migrate()
    writer = AuditWriter(store, instance="bench", signer=CheckpointSigner.generate(),
                         max_batch=max_batch)
    elapsed = asyncio.run(_drive(writer, total, concurrency))
    commits = writer.commits
    writer.close()
    assert store.count() == total, "every decision must have exactly one record"
    store.close()
    return {"per_second": total / elapsed, "commits": commits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for backend, factory in (("SQLite", sqlite_url), ("PostgreSQL",
                                                       lambda: postgres_url(args.pg))):
        for label, batch in (("group commit", 256), ("one commit per decision", 1)):
            with factory() as url:
                result = measure(url, max_batch=batch, total=args.decisions,
                                 concurrency=args.concurrency)
            rows.append((backend, label, result))
            print(backend, label, result, flush=True)
    lines = ["## Durable audit writes per second", "",
             "Command: `.venv/bin/python bench/audit_throughput.py --write docs/benchmarks.md`",
             "", f"Machine: {platform.platform()}, Python {platform.python_version()}. "
             f"{args.decisions} decisions, {args.concurrency} in flight; each returns only "
             "after its record is committed (hash-chained, checkpoints signed).", "",
             "| store | mode | decisions/s | transactions |", "|---|---|---:|---:|"]
    lines += [f"| {b} | {m} | {r['per_second']:.0f} | {r['commits']:.0f} |"
              for b, m, r in rows]
    if args.write:
        write_section(args.write, "audit-bench", "\n".join(lines))


if __name__ == "__main__":
    main()
