"""Initial schema: events, dead letters, decisions, anomalies, healing, rollups, audit, keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Types are spelled out here rather than imported from ``models`` so that this revision keeps
describing the same schema when the application code changes later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_APPEND_ONLY_PG = """
CREATE FUNCTION apos_refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION apos_refuse_audit_change();
"""

# SQLite gets the same guarantee (row triggers are all it has).
_APPEND_ONLY_SQLITE = [
    f"""
    CREATE TRIGGER audit_log_no_{op_name.lower()}
    BEFORE {op_name} ON audit_log
    BEGIN
        SELECT RAISE(ABORT, 'audit_log is append-only: {op_name} refused');
    END
    """
    for op_name in ("UPDATE", "DELETE")
]


def upgrade() -> None:
    op.create_table(
        "payment_events",
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("payment_id", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.String(128), nullable=False),
        sa.Column("profile_id", sa.String(128), nullable=True),
        sa.Column("connector", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("payment_method", sa.String(64), nullable=False),
        sa.Column("payment_method_type", sa.String(64), nullable=True),
        sa.Column("card_network", sa.String(64), nullable=True),
        sa.Column("issuer_country", sa.String(2), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error_code", sa.String(128), nullable=True),
        sa.Column("error_message", sa.String(1024), nullable=True),
        sa.Column("fingerprint", sa.String(128), nullable=True),
        sa.Column("decision_id", sa.String(128), nullable=True),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_payment_events"),
    )
    op.create_index(
        "ix_payment_events_merchant_id_occurred_at_event_id",
        "payment_events",
        ["merchant_id", "occurred_at", "event_id"],
    )
    op.create_index(
        "ix_payment_events_occurred_at_event_id", "payment_events", ["occurred_at", "event_id"]
    )
    op.create_index(
        "ix_payment_events_connector_occurred_at", "payment_events", ["connector", "occurred_at"]
    )
    op.create_index(
        "ix_payment_events_status_occurred_at", "payment_events", ["status", "occurred_at"]
    )
    op.create_index("ix_payment_events_payment_id", "payment_events", ["payment_id"])

    op.create_table(
        "dead_letters",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("merchant_id", sa.String(128), nullable=True),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_merchant_id_id", "dead_letters", ["merchant_id", "id"])

    op.create_table(
        "autonomous_decisions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("decision_type", sa.String(64), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("executed", sa.Boolean(), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("merchant_id", sa.String(128), nullable=True),
        sa.Column("payment_id", sa.String(128), nullable=True),
        sa.Column("connector", sa.String(64), nullable=True),
        sa.Column("alternatives", JSON, nullable=False),
        sa.Column("propensity", sa.Float(), nullable=True),
        sa.Column("explored", sa.Boolean(), nullable=False),
        sa.Column("reasons", JSON, nullable=False),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("outcome_status", sa.String(32), nullable=True),
        sa.Column("outcome_event_id", sa.String(128), nullable=True),
        sa.Column("outcome_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_autonomous_decisions"),
    )
    op.create_index(
        "ix_autonomous_decisions_merchant_id_created_at",
        "autonomous_decisions",
        ["merchant_id", "created_at"],
    )
    op.create_index("ix_autonomous_decisions_payment_id", "autonomous_decisions", ["payment_id"])

    op.create_table(
        "anomaly_records",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("anomaly_type", sa.String(64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("resolution_actions", JSON, nullable=False),
        sa.Column("merchant_id", sa.String(128), nullable=True),
        sa.Column("connector", sa.String(64), nullable=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("detected_at", TIMESTAMP, nullable=False),
        sa.Column("resolved_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_anomaly_records"),
    )
    op.create_index("ix_anomaly_records_detected_at", "anomaly_records", ["detected_at"])
    op.create_index("ix_anomaly_records_status", "anomaly_records", ["status"])

    op.create_table(
        "healing_actions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("action_type", sa.String(64), nullable=False),
        sa.Column("target_entity", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("recovery_time_ms", sa.BigInteger(), nullable=True),
        sa.Column("merchant_id", sa.String(128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("proposed_at", TIMESTAMP, nullable=False),
        sa.Column("executed_at", TIMESTAMP, nullable=True),
        sa.Column("rolled_back_at", TIMESTAMP, nullable=True),
        sa.Column("approved_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_healing_actions"),
    )
    op.create_index("ix_healing_actions_proposed_at", "healing_actions", ["proposed_at"])
    op.create_index("ix_healing_actions_status", "healing_actions", ["status"])

    op.create_table(
        "metric_rollups",
        sa.Column("minute", TIMESTAMP, nullable=False),
        sa.Column("merchant_id", sa.String(128), nullable=False),
        sa.Column("connector", sa.String(64), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("successes", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        sa.Column("latency_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "merchant_id", "connector", name="pk_metric_rollups"),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", AUTO_ID, autoincrement=True, nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("merchant_id", sa.String(128), nullable=True),
        sa.Column("details", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_merchant_id_id", "audit_log", ["merchant_id", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_APPEND_ONLY_PG)
    else:
        for statement in _APPEND_ONLY_SQLITE:
            op.execute(statement)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("merchant_id", sa.String(128), nullable=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS apos_refuse_audit_change()")
    for table in (
        "api_keys",
        "audit_log",
        "metric_rollups",
        "healing_actions",
        "anomaly_records",
        "autonomous_decisions",
        "dead_letters",
        "payment_events",
    ):
        op.drop_table(table)  # indexes and SQLite triggers go with their table
