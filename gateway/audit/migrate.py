"""Bring an audit database to the current schema with Alembic (on start, or by
``nats-gateway audit migrate``). Several replicas may start at once: on PostgreSQL an
advisory lock serialises them; SQLite's write lock does the same."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

__all__ = ["migrate"]

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
