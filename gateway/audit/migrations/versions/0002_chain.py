"""Hash chain, signed checkpoints, the decision day; mark where unchained rows end.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("decided_day", sa.String(10), nullable=True))
        batch.add_column(sa.Column("chain_seq", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(71), nullable=True))
        batch.add_column(sa.Column("record_hash", sa.String(71), nullable=True))
        batch.create_index("ix_decisions_decided_day", ["decided_day"])
        batch.create_unique_constraint("uq_decisions_chain", ["gateway_instance", "chain_seq"])
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("gateway_instance", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("chain_seq", sa.BigInteger, nullable=False),
        sa.Column("record_hash", sa.String(71), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("public_key", sa.String(80), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    )
    op.create_index("ix_checkpoints_instance_seq", "checkpoints",
                    ["gateway_instance", "chain_seq"])
    meta = op.create_table(
        "audit_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    # Rows already present were written before the chain: verify reports them as legacy.
    legacy = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM decisions"))
    op.bulk_insert(meta, [{"key": "legacy_max_seq", "value": str(legacy.scalar_one())}])


def downgrade() -> None:
    op.drop_table("audit_meta")
    op.drop_index("ix_checkpoints_instance_seq", "checkpoints")
    op.drop_table("checkpoints")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_constraint("uq_decisions_chain", type_="unique")
        batch.drop_index("ix_decisions_decided_day")
        batch.drop_column("record_hash")
        batch.drop_column("prev_hash")
        batch.drop_column("chain_seq")
        batch.drop_column("decided_day")
