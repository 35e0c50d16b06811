"""The audit tables (SQLAlchemy Core). Alembic migrations (``migrations/``) create and
evolve them; this module is the current shape, used by queries and by ``--autogenerate``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["audit_meta", "checkpoints", "decisions", "metadata"]

metadata = MetaData()

decisions = Table(
    "decisions", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("decision_id", String(64), nullable=False, unique=True),
    Column("decided_at", Float, nullable=False, index=True),
    Column("decision", String(8), nullable=False),
    Column("reason_code", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("method", String(16), nullable=False),
    Column("principal", Text, nullable=False, index=True),
    Column("identity_fingerprint", String(80), nullable=False),
    Column("dag_id", String(250), nullable=False, index=True),
    Column("task_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("client_host", String(64), nullable=False),
    Column("client_id", Integer, nullable=False),
    Column("client_name", Text, nullable=False),
    Column("client_lang", String(32), nullable=False),
    Column("client_version", String(32), nullable=False),
    Column("server_id", String(64), nullable=False),
    Column("server_name", Text, nullable=False),
    Column("user_nkey", String(64), nullable=False),
    Column("permissions", Text, nullable=False),
    Column("expires_at", Integer, nullable=True),
    Column("policy_ids", Text, nullable=False),
    Column("policy_set_hash", String(80), nullable=False),
    Column("gateway_instance", String(128), nullable=False),
    Column("latency_ms", Float, nullable=False),
    # 0002: the day (UTC) for summaries, and the hash chain.
    Column("decided_day", String(10), nullable=True, index=True),
    Column("chain_seq", BigInteger, nullable=True),
    Column("prev_hash", String(71), nullable=True),
    Column("record_hash", String(71), nullable=True),
    UniqueConstraint("gateway_instance", "chain_seq", name="uq_decisions_chain"),
)

checkpoints = Table(
    "checkpoints", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("gateway_instance", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # "checkpoint" | "purge"
    Column("chain_seq", BigInteger, nullable=False),
    Column("record_hash", String(71), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("detail", Text, nullable=False),
    Column("public_key", String(80), nullable=False),
    Column("signature", String(128), nullable=False),
    Index("ix_checkpoints_instance_seq", "gateway_instance", "chain_seq"),
)

# Key/value facts about the store itself, e.g. where rows written before the hash chain
# existed end (``legacy_max_seq``), so verify can tell old rows from inserted ones.
audit_meta = Table(
    "audit_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
