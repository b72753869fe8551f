"""The outbox of learning on SQLite and PostgreSQL: written with the events, atomically."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from apos.adapters.db import SqlStore
from apos.adapters.db import store as store_module
from apos.adapters.db.outbox import OutboxStore
from apos.adapters.db.snapshots import SavedSnapshot, SnapshotStore
from tests.adapters.test_store import RECEIVED, make_event


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    s = SqlStore(database_url)
    yield s
    s.close()


def test_a_batch_writes_one_row_naming_only_its_newly_stored_events(store: SqlStore) -> None:
    outbox = OutboxStore(store.engine)
    first = store.insert_events([make_event(n) for n in range(5)], RECEIVED)
    again = store.insert_events([make_event(n) for n in range(3, 8)], RECEIVED)
    nothing_new = store.insert_events([make_event(1), make_event(1)], RECEIVED)
    rows = outbox.batches()
    assert [row.id for row in rows] == [first.outbox_id, again.outbox_id]
    assert nothing_new.outbox_id is None  # duplicates only: no row
    assert rows[0].event_ids == [make_event(n).event_id for n in range(5)]
    assert rows[1].event_ids == [make_event(n).event_id for n in (5, 6, 7)]
    assert rows[0].created_at == RECEIVED
    assert [e.event_id for e in outbox.events(rows[1].event_ids)] == rows[1].event_ids
    assert outbox.count() == 2


def test_the_row_and_the_events_commit_or_fail_together(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> int:
        raise RuntimeError("the outbox insert failed")

    monkeypatch.setattr(store_module, "add_outbox_row", fail)
    with pytest.raises(RuntimeError):
        store.insert_events([make_event(1)], RECEIVED)
    assert store.count_events() == 0  # no event without its row
    assert store.list_rollups(None, None, RECEIVED - timedelta(days=1), RECEIVED) == []


def test_rows_are_read_by_age_and_position_and_deleted(store: SqlStore) -> None:
    outbox = OutboxStore(store.engine)
    old = store.insert_events([make_event(1)], RECEIVED).outbox_id
    new = store.insert_events([make_event(2)], RECEIVED + timedelta(seconds=30)).outbox_id
    assert old is not None and new is not None
    assert [r.id for r in outbox.batches(RECEIVED + timedelta(seconds=10))] == [old]
    assert [r.id for r in outbox.batches(after_id=old)] == [new]
    outbox.delete([old, 10**9])  # a missing id is ignored
    assert [r.id for r in outbox.batches()] == [new]
    # a row whose events are gone yields no events (nothing left to teach)
    assert outbox.events(["evt_missing"]) == []


def test_a_snapshot_deletes_the_rows_it_covers_in_its_transaction(store: SqlStore) -> None:
    outbox = OutboxStore(store.engine)
    ids = [store.insert_events([make_event(n)], RECEIVED).outbox_id for n in range(3)]
    snapshots = SnapshotStore(store.engine)
    saved = SavedSnapshot("default", RECEIVED, None, 2, {"v": 1}, 2, 12345)
    snapshots.save(saved, {ids[0], ids[1]})  # type: ignore[arg-type]
    assert [r.id for r in outbox.batches()] == [ids[2]]
    loaded = snapshots.load("default")
    assert loaded is not None
    assert (loaded.outcomes_applied, loaded.outcomes_digest) == (2, 12345)
