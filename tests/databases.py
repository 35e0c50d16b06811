"""Real databases for the audit tests: a SQLite file, or a fresh PostgreSQL database.

PostgreSQL is this machine's server (127.0.0.1:5432, trust auth; NATS_GATEWAY_TEST_PG to
point elsewhere). Each test gets its own database, created and dropped around it. If the
server cannot be reached the test fails loudly: it is never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.dev.postgres import postgres_database

__all__ = ["audit_database", "postgres_database"]


@contextmanager
def audit_database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'audit.db'}"
        return
    with postgres_database() as (url, _):
        yield url
