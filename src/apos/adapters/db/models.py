"""The relational schema of the system of record (SQLAlchemy Core tables).

Core ``Table`` s rather than ORM classes: the store writes in bulk and reads into the domain
dataclasses of :mod:`apos.adapters.ports`, so an identity map would only add overhead.
The migrations in ``migrations/versions`` must produce exactly this schema; a test compares
them with alembic's ``compare_metadata`` on SQLite and PostgreSQL.

Every timestamp is a :class:`~apos.adapters.db.types.UtcDateTime` (aware, UTC) and every
free-form document a :data:`~apos.adapters.db.types.JSONDocument`.
"""

from __future__ import annotations

import sqlalchemy as sa

from apos.adapters.db.types import JSONDocument, UtcDateTime

__all__ = [
    "anomaly_records",
    "api_keys",
    "applied_outbox",
    "audit_log",
    "autonomous_decisions",
    "dead_letters",
    "engine_snapshots",
    "healing_actions",
    "metadata",
    "metric_rollups",
    "payment_events",
]

# Explicit names keep migrations reproducible and identical on both databases.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only gives an INTEGER PRIMARY KEY auto-increment semantics, PostgreSQL wants BIGINT.
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

payment_events = sa.Table(
    "payment_events",
    metadata,
    # One column per PaymentEvent field, same names, so rows map back one to one.
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("payment_id", sa.String(128), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("merchant_id", sa.String(128), nullable=False),
    sa.Column("profile_id", sa.String(128)),
    sa.Column("connector", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("payment_method", sa.String(64), nullable=False),
    sa.Column("payment_method_type", sa.String(64)),
    sa.Column("card_network", sa.String(64)),
    sa.Column("issuer_country", sa.String(2)),
    sa.Column("latency_ms", sa.Float),
    sa.Column("error_code", sa.String(128)),
    sa.Column("error_message", sa.String(1024)),
    sa.Column("fingerprint", sa.String(128)),
    sa.Column("decision_id", sa.String(128)),
    sa.Column("occurred_at", UtcDateTime, nullable=False),
    sa.Column("received_at", UtcDateTime, nullable=False),
    # Listings are newest first with keyset pagination on (occurred_at, event_id); the
    # trailing event_id lets the index serve the cursor comparison and the ordering.
    sa.Index(None, "merchant_id", "occurred_at", "event_id"),
    sa.Index(None, "occurred_at", "event_id"),
    sa.Index(None, "connector", "occurred_at"),
    sa.Index(None, "status", "occurred_at"),
    sa.Index(None, "payment_id"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", AutoId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(128), nullable=False),
    sa.Column("raw", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("merchant_id", sa.String(128)),
    sa.Column("received_at", UtcDateTime, nullable=False),
    # A digest of the sender's own id for the input (a Hyperswitch event_id), when it has
    # one: a redelivery of the same input is kept once (ON CONFLICT DO NOTHING). NULLs never
    # conflict, so inputs without one are all kept.
    sa.Column("dedupe_key", sa.String(64)),
    sa.Index(None, "merchant_id", "id"),
    sa.Index(None, "source", "dedupe_key", unique=True),
)

# The seed's table, extended with what is needed to explain a decision and learn from it
# (off-policy evaluation needs the propensity and the outcome joined back).
autonomous_decisions = sa.Table(
    "autonomous_decisions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # UUID as text: portable
    sa.Column("decision_type", sa.String(64), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("executed", sa.Boolean, nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("merchant_id", sa.String(128)),
    sa.Column("payment_id", sa.String(128)),
    sa.Column("connector", sa.String(64)),
    sa.Column("alternatives", JSONDocument, nullable=False),
    sa.Column("propensity", sa.Float),
    sa.Column("explored", sa.Boolean, nullable=False),
    sa.Column("reasons", JSONDocument, nullable=False),
    sa.Column("policy", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("outcome_status", sa.String(32)),
    sa.Column("outcome_event_id", sa.String(128)),
    sa.Column("outcome_at", UtcDateTime),
    sa.Index(None, "merchant_id", "created_at"),
    sa.Index(None, "payment_id"),
)

# One row per incident (apos.adapters.db.anomalies): updated while the incident lasts,
# resolved when it clears or an operator resolves it. At most one row per incident_key is
# not resolved (a partial unique index), which is what makes concurrent instances upsert
# one row. Event times: started_at, detected_at, last_seen_at, ended_at; wall-clock times:
# acknowledged_at, resolved_at.
anomaly_records = sa.Table(
    "anomaly_records",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("anomaly_type", sa.String(64), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),  # open | acknowledged | resolved
    # The seed has TEXT[]; a JSON list is the portable equivalent.
    sa.Column("resolution_actions", JSONDocument, nullable=False),
    sa.Column("merchant_id", sa.String(128)),
    sa.Column("connector", sa.String(64)),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("evidence", JSONDocument, nullable=False),
    sa.Column("detected_at", UtcDateTime, nullable=False),
    sa.Column("resolved_at", UtcDateTime),
    sa.Column("incident_key", sa.String(512), nullable=False),
    sa.Column("segment", sa.String(256)),
    sa.Column("detector", sa.String(64)),
    sa.Column("peak_score", sa.Float, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("last_seen_at", UtcDateTime, nullable=False),
    sa.Column("ended_at", UtcDateTime),
    sa.Column("acknowledged_by", sa.String(128)),
    sa.Column("acknowledged_at", UtcDateTime),
    sa.Column("resolved_by", sa.String(128)),
    sa.Column("resolution", sa.String(16)),  # auto | operator
    sa.Index(None, "detected_at"),
    sa.Index(None, "status"),
    sa.Index(None, "merchant_id", "detected_at"),
    sa.Index(None, "incident_key", "last_seen_at"),
    sa.Index(
        "uq_anomaly_records_open_incident",
        "incident_key",
        unique=True,
        sqlite_where=sa.text("status != 'resolved'"),
        postgresql_where=sa.text("status != 'resolved'"),
    ),
)

healing_actions = sa.Table(
    "healing_actions",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("action_type", sa.String(64), nullable=False),
    sa.Column("target_entity", sa.String(128), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("recovery_time_ms", sa.BigInteger),
    sa.Column("merchant_id", sa.String(128)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("details", JSONDocument, nullable=False),
    sa.Column("proposed_at", UtcDateTime, nullable=False),
    sa.Column("executed_at", UtcDateTime),
    sa.Column("rolled_back_at", UtcDateTime),
    sa.Column("approved_by", sa.String(128)),
    sa.Index(None, "proposed_at"),
    sa.Index(None, "status"),
)

# Maintained in the same transaction as the events it counts, so it is exact. Only final
# outcomes are attempts (attempts = successes + failures); amounts and latencies are theirs.
# Pending, requires_action and cancelled events are counted in non_final alone.
metric_rollups = sa.Table(
    "metric_rollups",
    metadata,
    sa.Column("minute", UtcDateTime, primary_key=True),
    sa.Column("merchant_id", sa.String(128), primary_key=True),
    sa.Column("connector", sa.String(64), primary_key=True),
    sa.Column("attempts", sa.BigInteger, nullable=False),
    sa.Column("successes", sa.BigInteger, nullable=False),
    sa.Column("failures", sa.BigInteger, nullable=False),
    # The default serves instances of the previous release during a rolling upgrade.
    sa.Column("non_final", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("latency_ms_sum", sa.Float, nullable=False),
    sa.Column("latency_count", sa.BigInteger, nullable=False),
)

# Append-only: the store has no update or delete for it, and on PostgreSQL a trigger
# (created by the initial migration) refuses UPDATE and DELETE from anyone.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", AutoId, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(128), nullable=False),
    sa.Column("target", sa.String(256), nullable=False),
    sa.Column("merchant_id", sa.String(128)),
    sa.Column("details", JSONDocument, nullable=False),
    sa.Index(None, "merchant_id", "id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("merchant_id", sa.String(128)),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime),
    sa.Column("last_used_at", UtcDateTime),
)

# The routing engine's learnt state, saved periodically so a restarted instance warms up
# instead of starting cold. ``stream_position`` is the last shared-stream entry the state
# includes: the instance resumes tailing right after it, so nothing is learnt twice.
engine_snapshots = sa.Table(
    "engine_snapshots",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("saved_at", UtcDateTime, nullable=False),
    sa.Column("stream_position", sa.String(64)),
    sa.Column("events_learned", sa.BigInteger, nullable=False),
    sa.Column("state", JSONDocument, nullable=False),
    # The final events the state was taught (learnt or deliberately not), counted and
    # summed as a digest of their ids: evidence that each was applied exactly once.
    sa.Column("outcomes_applied", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("outcomes_digest", sa.BigInteger, nullable=False, server_default=sa.text("0")),
)

# The transactional outbox of learning (docs/ARCHITECTURE.md, "Stored means learnt"): one
# row per stored batch, written in the batch's transaction, naming its newly stored events
# (a JSON array of event ids). A row lives until the batch is on the applied stream (Redis)
# or in a saved engine snapshot (embedded); whatever a crash leaves is relayed or relearnt.
applied_outbox = sa.Table(
    "applied_outbox",
    metadata,
    sa.Column("id", AutoId, primary_key=True, autoincrement=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("event_ids", sa.Text, nullable=False),
)

# Juspay decision-engine compatibility (docs/decision-engine-compat.md). A merchant account
# must exist before the engine's API routes for it; ``decider_input`` is the engine's
# ``gateway_success_rate_based_decider_input`` (where its elimination rule lives).
de_merchant_accounts = sa.Table(
    "de_merchant_accounts",
    metadata,
    sa.Column("merchant_id", sa.String(128), primary_key=True),
    sa.Column("decider_input", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# The engine's rule configurations (``successRate``, ``debitRouting``), as sent.
de_rule_configs = sa.Table(
    "de_rule_configs",
    metadata,
    sa.Column("merchant_id", sa.String(128), primary_key=True),
    sa.Column("algorithm", sa.String(32), primary_key=True),
    sa.Column("config", JSONDocument, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

# What a decide-gateway call knew about a payment (amount, currency, method, ...), so that
# the later update-gateway-score, which names only the payment, becomes a full event on any
# instance. Rows older than a day are purged.
de_payment_contexts = sa.Table(
    "de_payment_contexts",
    metadata,
    sa.Column("merchant_id", sa.String(128), primary_key=True),
    sa.Column("payment_id", sa.String(128), primary_key=True),
    sa.Column("context", JSONDocument, nullable=False),
    sa.Column("decided_at", UtcDateTime, nullable=False),
    sa.Index(None, "decided_at"),
)
