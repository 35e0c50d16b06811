"""The decisions table as release 0.1 created it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("decision_id", sa.String(64), nullable=False, unique=True),
        sa.Column("decided_at", sa.Float, nullable=False, index=True),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("reason_code", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("principal", sa.Text, nullable=False, index=True),
        sa.Column("identity_fingerprint", sa.String(80), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False, index=True),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("client_host", sa.String(64), nullable=False),
        sa.Column("client_id", sa.Integer, nullable=False),
        sa.Column("client_name", sa.Text, nullable=False),
        sa.Column("client_lang", sa.String(32), nullable=False),
        sa.Column("client_version", sa.String(32), nullable=False),
        sa.Column("server_id", sa.String(64), nullable=False),
        sa.Column("server_name", sa.Text, nullable=False),
        sa.Column("user_nkey", sa.String(64), nullable=False),
        sa.Column("permissions", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Integer, nullable=True),
        sa.Column("policy_ids", sa.Text, nullable=False),
        sa.Column("policy_set_hash", sa.String(80), nullable=False),
        sa.Column("gateway_instance", sa.String(128), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("decisions")
