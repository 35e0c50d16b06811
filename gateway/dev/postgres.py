"""Throwaway PostgreSQL databases for tests and benchmarks, on a server that already runs
(this machine's: 127.0.0.1:5432, trust auth; ``NATS_GATEWAY_TEST_PG`` points elsewhere).

Each caller gets a new empty database, dropped afterwards. An unreachable server is a
loud error that names the address, never a silent skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

__all__ = ["ADMIN_DSN", "postgres_database"]

ADMIN_DSN = os.environ.get("NATS_GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL is required here and is not reachable at {ADMIN_DSN} ({exc}). "
            "Start it, or set NATS_GATEWAY_TEST_PG.") from exc


@contextmanager
def postgres_database(prefix: str = "gw_test") -> Iterator[tuple[str, int]]:
    """A new empty database; yields (SQLAlchemy URL, port)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        info = conn.info
        host, port, user = info.host, info.port, info.user
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}", port
    finally:
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
