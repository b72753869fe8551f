"""Rollups count final outcomes only: ``non_final`` column, existing rows restated.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

Until now every event was an attempt, so a payment reported "processing" and then
"succeeded" read as two attempts and a 50% success rate. From this revision ``attempts``
counts final outcomes (succeeded, authorized, failed), ``amount_minor`` and the latency sums
are theirs, and the other events are counted in ``non_final``. Existing rows are restated
exactly: the counts by arithmetic (the old ``attempts`` minus the successes and failures is
the non-final count), the sums by taking out those of the stored non-final events.

Types and status values are spelled out here rather than imported, so that this revision
keeps describing the same change when the application code changes later.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
FINAL_STATUSES = ("succeeded", "authorized", "failed")

_events = sa.table(
    "payment_events",
    sa.column("merchant_id", sa.String),
    sa.column("connector", sa.String),
    sa.column("status", sa.String),
    sa.column("amount", sa.BigInteger),
    sa.column("latency_ms", sa.Float),
    sa.column("occurred_at", TIMESTAMP),
)
_rollups = sa.table(
    "metric_rollups",
    sa.column("minute", TIMESTAMP),
    sa.column("merchant_id", sa.String),
    sa.column("connector", sa.String),
    sa.column("attempts", sa.BigInteger),
    sa.column("successes", sa.BigInteger),
    sa.column("failures", sa.BigInteger),
    sa.column("non_final", sa.BigInteger),
    sa.column("amount_minor", sa.BigInteger),
    sa.column("latency_ms_sum", sa.Float),
    sa.column("latency_count", sa.BigInteger),
)


def _minute(at: datetime) -> datetime:
    """The rollup key of ``at``, in the form the database returns and accepts."""
    if at.tzinfo is not None:  # PostgreSQL: aware; SQLite: naive digits of the UTC time
        at = at.astimezone(UTC)
    return at.replace(second=0, microsecond=0)


def _shift_non_final_sums(sign: int) -> None:
    """Add ``sign`` times the non-final events' amounts and latencies to their rollups."""
    connection = op.get_bind()
    e = _events
    stmt = sa.select(e.c.merchant_id, e.c.connector, e.c.amount, e.c.latency_ms, e.c.occurred_at)
    stmt = stmt.where(e.c.status.not_in(FINAL_STATUSES))
    sums: dict[tuple[datetime, str, str], list[Any]] = {}
    for merchant, connector, amount, latency, occurred_at in connection.execute(stmt):
        acc = sums.setdefault((_minute(occurred_at), merchant, connector), [0, 0.0, 0])
        acc[0] += amount
        if latency is not None:
            acc[1] += latency
            acc[2] += 1
    if not sums:
        return
    r = _rollups
    update = (
        sa.update(r)
        .where(
            r.c.minute == sa.bindparam("k_minute"),
            r.c.merchant_id == sa.bindparam("k_merchant"),
            r.c.connector == sa.bindparam("k_connector"),
        )
        .values(
            amount_minor=r.c.amount_minor + sa.bindparam("d_amount", type_=sa.BigInteger),
            latency_ms_sum=r.c.latency_ms_sum + sa.bindparam("d_latency", type_=sa.Float),
            latency_count=r.c.latency_count + sa.bindparam("d_count", type_=sa.BigInteger),
        )
    )
    connection.execute(
        update,
        [
            {
                "k_minute": minute,
                "k_merchant": merchant,
                "k_connector": connector,
                "d_amount": sign * acc[0],
                "d_latency": sign * acc[1],
                "d_count": sign * acc[2],
            }
            for (minute, merchant, connector), acc in sorted(sums.items())
        ],
    )


def upgrade() -> None:
    # The server default fills existing rows, and the rows instances of the previous
    # release write during a rolling upgrade.
    op.add_column(
        "metric_rollups",
        sa.Column("non_final", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    r = _rollups
    # Both databases evaluate every right-hand side on the row as it was before the UPDATE.
    op.execute(
        sa.update(r).values(
            non_final=r.c.attempts - r.c.successes - r.c.failures,
            attempts=r.c.successes + r.c.failures,
        )
    )
    _shift_non_final_sums(-1)


def downgrade() -> None:
    _shift_non_final_sums(+1)
    r = _rollups
    op.execute(sa.update(r).values(attempts=r.c.attempts + r.c.non_final))
    with op.batch_alter_table("metric_rollups") as batch:
        batch.drop_column("non_final")
