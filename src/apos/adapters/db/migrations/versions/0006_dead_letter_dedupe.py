"""Dead letters kept once per sender id: ``dead_letters.dedupe_key``, unique per source.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

Hyperswitch retries a webhook it did not get a 2xx for, for about a day, with the same
``event_id``. A webhook APOS cannot use is now answered 2xx and dead-lettered once: the
letter carries a digest of the sender's id (``dedupe_key``) and a unique index on
``(source, dedupe_key)`` turns a redelivery into ``ON CONFLICT DO NOTHING``. Existing rows
keep a NULL key; NULLs are distinct in a unique index on both databases, so they never
conflict.

Types are spelled out here rather than imported, so that this revision keeps describing the
same change when the application code changes later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("dedupe_key", sa.String(64), nullable=True))
    op.create_index(
        "ix_dead_letters_source_dedupe_key",
        "dead_letters",
        ["source", "dedupe_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ix_dead_letters_source_dedupe_key", table_name="dead_letters")
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("dedupe_key")
