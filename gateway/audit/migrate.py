"""Bring an audit database to the current schema with Alembic (on start, or by
``nats-gateway audit migrate``). Several replicas may start at once: on PostgreSQL an
advisory lock serialises them; SQLite's write lock does the same."""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine

__all__ = ["head_revision", "migrate", "stored_revision"]

log = logging.getLogger(__name__)
_MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_ID = 0x6E617473  # "nats": one advisory lock for this schema


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> str | None:
    """Upgrade to head; returns the revision now in place."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        config = _config(connection)
        tables = set(inspect(connection).get_table_names())
        if "decisions" in tables and "alembic_version" not in tables:
            # Made by release 0.1 (create_all, no migrations): it is revision 0001.
            log.info("audit store predates migrations; marking it as revision 0001")
            command.stamp(config, "0001")
        command.upgrade(config, "head")
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


def stored_revision(url: str) -> str | None:
    """The revision a store is at, None if never migrated; reads only, creates nothing
    (opening a missing SQLite file would create it, so it is opened read-only)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:":
        path = Path(url[len(prefix):].split("?", 1)[0])
        if not path.is_file():
            return None
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            try:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            except sqlite3.DatabaseError:  # no such table, or not a database at all
                return None
        return None if row is None else str(row[0])
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if "alembic_version" not in inspect(conn).get_table_names():
                return None
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
