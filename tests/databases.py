"""Real databases for the audit tests: a SQLite file, or a fresh PostgreSQL database.

PostgreSQL is this machine's server (127.0.0.1:5432, trust auth; NATS_GATEWAY_TEST_PG to
point elsewhere). Each test gets its own database, created and dropped around it. If the
server cannot be reached the test fails loudly: it is never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

ADMIN_DSN = os.environ.get("NATS_GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL is required for the audit tests and is not reachable at {ADMIN_DSN} "
            f"({exc}). Start it, or set NATS_GATEWAY_TEST_PG.") from exc


@contextmanager
def postgres_database() -> Iterator[tuple[str, int]]:
    """A new empty database; yields (SQLAlchemy URL, port)."""
    name = f"gw_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        info = conn.info
        host, port, user = info.host, info.port, info.user
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}", port
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def audit_database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'audit.db'}"
        return
    with postgres_database() as (url, _):
        yield url
