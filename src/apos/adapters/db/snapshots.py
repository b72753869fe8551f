"""Saved engine state (``engine_snapshots``): one row per name, overwritten on each save."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from apos.adapters.db.models import dead_letters, engine_snapshots
from apos.adapters.db.outbox import delete_outbox_rows
from apos.adapters.db.refusals import (
    is_row_fault,
    refusal_reason,
    storable_document,
    storable_text,
)

__all__ = ["SavedSnapshot", "SnapshotStore"]


@dataclass(frozen=True, slots=True)
class SavedSnapshot:
    """A saved engine state and the shared-stream position it includes."""

    name: str
    saved_at: datetime
    stream_position: str | None
    events_learned: int
    state: dict[str, Any]
    # Final events the state was taught, and the digest of their ids (RoutingService).
    outcomes_applied: int = 0
    outcomes_digest: int = 0


class SnapshotStore:
    """Save and load engine snapshots on the store's SQLAlchemy engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def save(self, snapshot: SavedSnapshot, settled_outbox: Collection[int] = ()) -> None:
        """Save ``snapshot``; in the same transaction, delete the outbox rows whose events it
        contains (embedded learning: they are then learnt durably, and only then).

        If the database refuses the state (text PostgreSQL cannot hold, say a NUL in a
        connector's name that reached the engine), it is saved with that text replaced
        (:func:`~apos.adapters.db.refusals.storable_document`) and the refusal is kept in
        ``dead_letters`` (source ``snapshot``): one bad name must not stop every later
        snapshot. A database that is down raises.
        """
        values = {
            "name": snapshot.name,
            "saved_at": snapshot.saved_at,
            "stream_position": snapshot.stream_position,
            "events_learned": snapshot.events_learned,
            "state": snapshot.state,
            "outcomes_applied": snapshot.outcomes_applied,
            "outcomes_digest": snapshot.outcomes_digest,
        }
        try:
            self._write(values, settled_outbox)
        except Exception as exc:
            if not is_row_fault(exc):
                raise
            values["state"] = storable_document(snapshot.state)
            position = snapshot.stream_position
            values["stream_position"] = None if position is None else storable_text(position)
            letter = {
                "source": "snapshot",
                "raw": f"engine snapshot {storable_text(snapshot.name)!r}, saved sanitised",
                "reason": refusal_reason(exc),
                "merchant_id": None,
                "received_at": snapshot.saved_at,
            }
            self._write(values, settled_outbox, letter)

    def _write(
        self,
        values: dict[str, Any],
        settled_outbox: Collection[int],
        letter: dict[str, Any] | None = None,
    ) -> None:
        t = engine_snapshots
        with self._engine.begin() as connection:
            updated = connection.execute(
                sa.update(t).where(t.c.name == values["name"]).values(**values)
            ).rowcount
            if not updated:
                connection.execute(sa.insert(t).values(**values))
            delete_outbox_rows(connection, settled_outbox)
            if letter is not None:
                connection.execute(sa.insert(dead_letters).values(letter))

    def load(self, name: str) -> SavedSnapshot | None:
        t = engine_snapshots
        with self._engine.connect() as connection:
            row = connection.execute(sa.select(t).where(t.c.name == name)).first()
        if row is None:
            return None
        m = row._mapping
        return SavedSnapshot(
            name=m["name"],
            saved_at=m["saved_at"],
            stream_position=m["stream_position"],
            events_learned=int(m["events_learned"]),
            state=dict(m["state"]),
            outcomes_applied=int(m["outcomes_applied"]),
            outcomes_digest=int(m["outcomes_digest"]),
        )
