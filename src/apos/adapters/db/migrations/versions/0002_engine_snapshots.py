"""Engine snapshots: the routing engine's learnt state, for warm restarts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "engine_snapshots",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("saved_at", TIMESTAMP, nullable=False),
        sa.Column("stream_position", sa.String(64)),
        sa.Column("events_learned", sa.BigInteger, nullable=False),
        sa.Column("state", JSON, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_engine_snapshots"),
    )


def downgrade() -> None:
    op.drop_table("engine_snapshots")
