"""Decision-engine compatibility: merchant accounts, rule configs, decide-time payment contexts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

Types are spelled out here rather than imported from ``models`` so that this revision keeps
describing the same schema when the application code changes later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "de_merchant_accounts",
        sa.Column("merchant_id", sa.String(128), nullable=False),
        sa.Column("decider_input", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", name="pk_de_merchant_accounts"),
    )
    op.create_table(
        "de_rule_configs",
        sa.Column("merchant_id", sa.String(128), nullable=False),
        sa.Column("algorithm", sa.String(32), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "algorithm", name="pk_de_rule_configs"),
    )
    op.create_table(
        "de_payment_contexts",
        sa.Column("merchant_id", sa.String(128), nullable=False),
        sa.Column("payment_id", sa.String(128), nullable=False),
        sa.Column("context", JSON, nullable=False),
        sa.Column("decided_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "payment_id", name="pk_de_payment_contexts"),
    )
    op.create_index("ix_de_payment_contexts_decided_at", "de_payment_contexts", ["decided_at"])


def downgrade() -> None:
    op.drop_index("ix_de_payment_contexts_decided_at", table_name="de_payment_contexts")
    op.drop_table("de_payment_contexts")
    op.drop_table("de_rule_configs")
    op.drop_table("de_merchant_accounts")
