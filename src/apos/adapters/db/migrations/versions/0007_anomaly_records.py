"""Anomaly records as incidents: one row per ongoing incident, updated while it lasts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

The initial schema had the seed's ``anomaly_records`` (type, score, status, resolution
actions) with one row per detection. Detection (issue 13) keeps one row per *incident*:
``incident_key`` names it (anomaly type and entity), and a partial unique index allows one
row per key that is not resolved, so instances writing the same finding at once upsert one
row (``INSERT .. ON CONFLICT (incident_key) WHERE status != 'resolved' DO UPDATE``). The row
carries the entity (``segment``), event times (``started_at``, ``last_seen_at``,
``ended_at``), the peak score, the evidence (``details`` renamed ``evidence``) and who
acknowledged or resolved it, and how (``resolution``: auto or operator).

Rows written before this revision (none are expected: nothing wrote them) get a key of
their own, so they never collide with a live incident.

Types are spelled out here rather than imported, so that this revision keeps describing the
same change when the application code changes later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
_OPEN = sa.text("status != 'resolved'")


def upgrade() -> None:
    with op.batch_alter_table("anomaly_records") as batch:
        batch.add_column(sa.Column("incident_key", sa.String(512), nullable=True))
        batch.add_column(sa.Column("segment", sa.String(256), nullable=True))
        batch.add_column(sa.Column("detector", sa.String(64), nullable=True))
        batch.add_column(sa.Column("peak_score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("started_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("last_seen_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("ended_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("acknowledged_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("acknowledged_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("resolved_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("resolution", sa.String(16), nullable=True))
        batch.alter_column("details", new_column_name="evidence")
    op.execute(
        "UPDATE anomaly_records SET incident_key = anomaly_type || '|legacy|' || id, "
        "peak_score = score, started_at = detected_at, last_seen_at = detected_at"
    )
    with op.batch_alter_table("anomaly_records") as batch:
        batch.alter_column("incident_key", existing_type=sa.String(512), nullable=False)
        batch.alter_column("peak_score", existing_type=sa.Float(), nullable=False)
        batch.alter_column("started_at", existing_type=TIMESTAMP, nullable=False)
        batch.alter_column("last_seen_at", existing_type=TIMESTAMP, nullable=False)
    op.create_index(
        "uq_anomaly_records_open_incident",
        "anomaly_records",
        ["incident_key"],
        unique=True,
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    )
    op.create_index(
        "ix_anomaly_records_incident_key_last_seen_at",
        "anomaly_records",
        ["incident_key", "last_seen_at"],
    )
    op.create_index(
        "ix_anomaly_records_merchant_id_detected_at",
        "anomaly_records",
        ["merchant_id", "detected_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_anomaly_records_merchant_id_detected_at", table_name="anomaly_records")
    op.drop_index("ix_anomaly_records_incident_key_last_seen_at", table_name="anomaly_records")
    op.drop_index("uq_anomaly_records_open_incident", table_name="anomaly_records")
    with op.batch_alter_table("anomaly_records") as batch:
        batch.alter_column("evidence", new_column_name="details")
        for name in (
            "resolution",
            "resolved_by",
            "acknowledged_at",
            "acknowledged_by",
            "ended_at",
            "last_seen_at",
            "started_at",
            "peak_score",
            "detector",
            "segment",
            "incident_key",
        ):
            batch.drop_column(name)
