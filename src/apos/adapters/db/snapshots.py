"""Saved engine state (``engine_snapshots``): one row per name, overwritten on each save."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from apos.adapters.db.models import engine_snapshots

__all__ = ["SavedSnapshot", "SnapshotStore"]


@dataclass(frozen=True, slots=True)
class SavedSnapshot:
    """A saved engine state and the shared-stream position it includes."""

    name: str
    saved_at: datetime
    stream_position: str | None
    events_learned: int
    state: dict[str, Any]


class SnapshotStore:
    """Save and load engine snapshots on the store's SQLAlchemy engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def save(self, snapshot: SavedSnapshot) -> None:
        values = {
            "name": snapshot.name,
            "saved_at": snapshot.saved_at,
            "stream_position": snapshot.stream_position,
            "events_learned": snapshot.events_learned,
            "state": snapshot.state,
        }
        t = engine_snapshots
        with self._engine.begin() as connection:
            updated = connection.execute(
                sa.update(t).where(t.c.name == snapshot.name).values(**values)
            ).rowcount
            if not updated:
                connection.execute(sa.insert(t).values(**values))

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
        )
