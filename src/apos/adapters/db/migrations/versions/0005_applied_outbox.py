"""The outbox of learning: ``applied_outbox``, and evidence of exactly-once learning.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

A batch of newly stored events used to reach the applied stream (or the in-process engine)
only after its transaction committed, so a crash in between left events stored and never
learnt. From this revision the batch's transaction also writes one ``applied_outbox`` row
naming those events; the row is removed once they are published (Redis) or saved in an
engine snapshot (embedded), and whatever a crash leaves behind is relayed or relearnt.

``engine_snapshots`` gains the count and digest of the final events the saved state was
taught, so a restarted instance keeps counting where its state left off.

Types are spelled out here rather than imported, so that this revision keeps describing the
same change when the application code changes later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "applied_outbox",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("event_ids", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_applied_outbox"),
    )
    for name in ("outcomes_applied", "outcomes_digest"):
        op.add_column(
            "engine_snapshots",
            sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        )


def downgrade() -> None:
    with op.batch_alter_table("engine_snapshots") as batch:
        batch.drop_column("outcomes_digest")
        batch.drop_column("outcomes_applied")
    op.drop_table("applied_outbox")
