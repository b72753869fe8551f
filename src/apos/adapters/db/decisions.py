"""The decision log: routing decisions in ``autonomous_decisions`` and their joined outcomes.

Written in batches by the service's decision writer, never on the routing hot path. The
writer shares its process (and interpreter lock) with the HTTP workers, so on PostgreSQL a
batch is one ``INSERT ... SELECT FROM json_populate_recordset(<the batch as one orjson
document>) ON CONFLICT DO NOTHING``, which costs the writer a fraction of SQLAlchemy's
executemany with a pre-select of existing ids: CPU the routing endpoint gets back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from apos.adapters.db.cursors import decode_time_cursor, encode_time_cursor
from apos.adapters.db.event_writer import pg_json_insert
from apos.adapters.db.models import autonomous_decisions
from apos.adapters.db.types import UtcDateTime
from apos.adapters.ports import Page
from apos.core.decision import Decision

__all__ = ["DecisionOutcome", "DecisionRow", "DecisionStore"]

_t = autonomous_decisions


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """The final outcome of the attempt that followed a decision."""

    decision_id: str
    status: str
    event_id: str
    at: datetime
    # The outcome's merchant: joined only to that merchant's decision (None: any), so an
    # event cannot write an outcome onto another merchant's decision by naming its id.
    merchant_id: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """A stored decision, with its outcome once known."""

    decision_id: str
    merchant_id: str | None
    payment_id: str | None
    connector: str | None
    alternatives: list[dict[str, Any]]
    confidence: float
    explored: bool
    propensity: float | None
    policy: str
    model_version: str
    reasons: list[str]
    created_at: datetime
    outcome_status: str | None
    outcome_event_id: str | None
    outcome_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "merchant_id": self.merchant_id,
            "payment_id": self.payment_id,
            "connector": self.connector,
            "alternatives": self.alternatives,
            "confidence": self.confidence,
            "explored": self.explored,
            "propensity": self.propensity,
            "policy": self.policy,
            "model_version": self.model_version,
            "reasons": self.reasons,
            "created_at": self.created_at.isoformat(),
            "outcome": None
            if self.outcome_status is None
            else {
                "status": self.outcome_status,
                "event_id": self.outcome_event_id,
                "at": self.outcome_at.isoformat() if self.outcome_at else None,
            },
        }


def _row_values(decision: Decision) -> dict[str, Any]:
    return {
        "id": decision.decision_id,
        "decision_type": "routing",
        "confidence": decision.confidence,
        "executed": True,
        "model_version": decision.model_version[:32],
        "merchant_id": decision.merchant_id,
        "payment_id": decision.payment_id,
        "connector": decision.connector,
        "alternatives": [{"connector": c, "score": s} for c, s in decision.alternatives],
        "propensity": decision.propensity,
        "explored": decision.explored,
        "reasons": list(decision.reasons),
        "policy": decision.policy,
        "created_at": datetime.fromtimestamp(decision.decided_at, UTC),
    }


# Every column but the outcome, which is joined later.
_PG_INSERT = pg_json_insert(
    _t,
    [c.name for c in _t.columns if not c.name.startswith("outcome_")],
    "ON CONFLICT (id) DO NOTHING",
)


def _pg_rows(decisions: Sequence[Decision]) -> str:
    """The batch as a JSON array of rows (orjson writes datetimes as RFC 3339)."""
    return orjson.dumps([_row_values(d) for d in decisions]).decode()


class DecisionStore:
    """Reads and writes the decision log on the store's SQLAlchemy engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def insert(self, decisions: Sequence[Decision]) -> int:
        """Store decisions; an id already stored is skipped (a retried flush is harmless)."""
        if not decisions:
            return 0
        if self._engine.dialect.name == "postgresql":
            with self._engine.begin() as connection:
                return connection.execute(_PG_INSERT, {"rows": _pg_rows(decisions)}).rowcount
        # SQLite: read first, then a transaction that starts with its write. A deferred
        # transaction that reads and then writes cannot wait for the lock (busy_timeout does
        # not apply to the upgrade) and fails with "database is locked" under concurrent
        # ingestion; OR IGNORE covers an id stored in between.
        ids = [d.decision_id for d in decisions]
        with self._engine.connect() as connection:
            existing = set(connection.execute(sa.select(_t.c.id).where(_t.c.id.in_(ids))).scalars())
        fresh = [_row_values(d) for d in decisions if d.decision_id not in existing]
        if fresh:
            with self._engine.begin() as connection:
                connection.execute(sa.insert(_t).prefix_with("OR IGNORE"), fresh)
        return len(fresh)

    def record_outcomes(self, outcomes: Sequence[DecisionOutcome]) -> dict[str, bool]:
        """Join outcomes to their decisions. Returns each decision id that was found, with
        whether an outcome was joined to it: one whose merchant differs from its decision's
        is found (nothing to wait for) but not joined."""
        if not outcomes:
            return {}
        stmt = (
            sa.update(_t)
            .where(_t.c.id == sa.bindparam("b_id"))
            .values(
                outcome_status=sa.bindparam("b_status"),
                outcome_event_id=sa.bindparam("b_event"),
                outcome_at=sa.bindparam("b_at"),
            )
        )
        # A decision's id and merchant never change: read them outside the write transaction,
        # which then starts with its write (see insert).
        ids = [o.decision_id for o in outcomes]
        query = sa.select(_t.c.id, _t.c.merchant_id).where(_t.c.id.in_(ids))
        with self._engine.connect() as connection:
            owners = {row.id: row.merchant_id for row in connection.execute(query)}
        found = dict.fromkeys(owners, False)
        params = []
        for o in outcomes:
            if o.decision_id in owners and o.merchant_id in (None, owners[o.decision_id]):
                found[o.decision_id] = True
                row = {"b_id": o.decision_id, "b_status": o.status, "b_event": o.event_id}
                params.append({**row, "b_at": o.at})
        if params:
            with self._engine.begin() as connection:
                connection.execute(stmt, params)
        return found

    def get(self, decision_id: str) -> DecisionRow | None:
        with self._engine.connect() as connection:
            row = connection.execute(sa.select(_t).where(_t.c.id == decision_id)).first()
        return None if row is None else _decision_from_row(row)

    def list(self, merchant_id: str | None, limit: int, cursor: str | None) -> Page[DecisionRow]:
        """Newest first (by creation time, then id)."""
        size = max(1, min(limit, 1000))
        stmt = sa.select(_t)
        if merchant_id is not None:
            stmt = stmt.where(_t.c.merchant_id == merchant_id)
        if cursor is not None:
            at, key = decode_time_cursor(cursor, "dec")
            stmt = stmt.where(
                sa.tuple_(_t.c.created_at, _t.c.id)
                < sa.tuple_(sa.literal(at, UtcDateTime), sa.literal(key, sa.String))
            )
        stmt = stmt.order_by(_t.c.created_at.desc(), _t.c.id.desc()).limit(size + 1)
        with self._engine.connect() as connection:
            found = [_decision_from_row(r) for r in connection.execute(stmt)]
        if len(found) <= size:
            return Page(items=found, next_cursor=None)
        last = found[size - 1]
        return Page(
            items=found[:size],
            next_cursor=encode_time_cursor("dec", last.created_at, last.decision_id),
        )

    def count(self, merchant_id: str | None = None) -> int:
        stmt = sa.select(sa.func.count()).select_from(_t)
        if merchant_id is not None:
            stmt = stmt.where(_t.c.merchant_id == merchant_id)
        with self._engine.connect() as connection:
            return int(connection.execute(stmt).scalar_one())


def _decision_from_row(row: Any) -> DecisionRow:
    m = row._mapping
    return DecisionRow(
        decision_id=m["id"],
        merchant_id=m["merchant_id"],
        payment_id=m["payment_id"],
        connector=m["connector"],
        alternatives=list(m["alternatives"]),
        confidence=float(m["confidence"]),
        explored=bool(m["explored"]),
        propensity=m["propensity"],
        policy=m["policy"],
        model_version=m["model_version"],
        reasons=list(m["reasons"]),
        created_at=m["created_at"],
        outcome_status=m["outcome_status"],
        outcome_event_id=m["outcome_event_id"],
        outcome_at=m["outcome_at"],
    )
