"""The outbox of learning (``applied_outbox``): what is stored but not yet surely learnt.

:func:`add_outbox_row` runs inside the transaction that stores a batch of events, so a
batch is never committed without its row. The row names the batch's newly stored events and
lives until they have reached the learners durably: published to the applied stream (Redis)
or contained in a saved engine snapshot (embedded). Whatever a crash leaves behind is
found here and relayed (:class:`OutboxStore` reads the rows and their events back).

One row per batch, not per event: ~one extra INSERT in the batch's transaction and one
bulk DELETE later, whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
import sqlalchemy as sa

from apos.adapters.db import rows
from apos.adapters.db.models import applied_outbox, payment_events
from apos.core.events import PaymentEvent

__all__ = ["OutboxBatch", "OutboxStore", "add_outbox_row", "delete_outbox_rows"]

# Ids per IN (...) list: well under SQLite's and PostgreSQL's bound-parameter limits.
_IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """One outbox row: a stored batch whose events may not have been learnt yet."""

    id: int
    created_at: datetime
    event_ids: list[str]


def add_outbox_row(
    connection: sa.Connection, event_ids: Sequence[str], created_at: datetime
) -> int:
    """Write the row of a batch in the caller's transaction; returns its id."""
    stmt = (
        sa.insert(applied_outbox)
        .values(created_at=created_at, event_ids=orjson.dumps(list(event_ids)).decode())
        .returning(applied_outbox.c.id)
    )
    return int(connection.execute(stmt).scalar_one())


def delete_outbox_rows(connection: sa.Connection, ids: Collection[int]) -> None:
    """Delete these rows (missing ones are ignored) in the caller's transaction."""
    ordered = sorted(ids)
    for i in range(0, len(ordered), _IN_CHUNK):
        chunk = ordered[i : i + _IN_CHUNK]
        connection.execute(sa.delete(applied_outbox).where(applied_outbox.c.id.in_(chunk)))


class OutboxStore:
    """Reads and settles outbox rows on the store's SQLAlchemy engine. Thread-safe."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def batches(
        self, created_before: datetime | None = None, after_id: int = 0, limit: int = 100
    ) -> list[OutboxBatch]:
        """The oldest rows (created before ``created_before``, if given, and with an id
        above ``after_id``), oldest first."""
        t = applied_outbox
        stmt = sa.select(t.c.id, t.c.created_at, t.c.event_ids).where(t.c.id > after_id)
        if created_before is not None:
            stmt = stmt.where(t.c.created_at < created_before)
        stmt = stmt.order_by(t.c.id).limit(limit)
        with self._engine.connect() as connection:
            found = connection.execute(stmt).all()
        return [
            OutboxBatch(int(r.id), r.created_at, list(orjson.loads(r.event_ids))) for r in found
        ]

    def count(self) -> int:
        """How many rows are waiting."""
        stmt = sa.select(sa.func.count()).select_from(applied_outbox)
        with self._engine.connect() as connection:
            return int(connection.execute(stmt).scalar_one())

    def events(self, event_ids: Sequence[str]) -> list[PaymentEvent]:
        """The stored events with these ids, in the order given (missing ones skipped)."""
        found: dict[str, PaymentEvent] = {}
        with self._engine.connect() as connection:
            for i in range(0, len(event_ids), _IN_CHUNK):
                chunk = list(event_ids[i : i + _IN_CHUNK])
                stmt = sa.select(*rows.EVENT_COLUMNS).where(payment_events.c.event_id.in_(chunk))
                for row in connection.execute(stmt):
                    event = rows.event_from_row(row)
                    found[event.event_id] = event
        return [found[event_id] for event_id in event_ids if event_id in found]

    def delete(self, ids: Collection[int]) -> None:
        """Settle these rows: their events are learnt durably."""
        if not ids:
            return
        with self._engine.begin() as connection:
            delete_outbox_rows(connection, ids)
