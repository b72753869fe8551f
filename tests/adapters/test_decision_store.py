"""The decision log on both backends: batched insert, idempotence, outcome join, listing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from apos.adapters.db import SqlStore
from apos.adapters.db.decisions import DecisionOutcome, DecisionStore
from apos.adapters.ports import DeadLetter
from apos.core.decision import Decision
from apos.service.routing import DecisionWriter

T0 = 1_800_000_000.0


def make_decision(n: int) -> Decision:
    return Decision(
        decision_id=f"dec_{n:024x}",
        payment_id=f"pay_{n}",
        merchant_id=f"m_{n % 3}",
        connector="stripe" if n % 2 else "adyen",
        alternatives=(("stripe", 0.9 - n / 1e4), ("adyen", 0.5), ("checkout", 0.125)),
        confidence=0.75,
        explored=n % 4 == 0,
        propensity=None if n % 5 == 0 else 0.625,
        policy="thompson",
        model_version="thompson-" + "a" * 40,  # longer than the column: cut to 32
        reasons=("best posterior", f"context {n} 'quoted' \"twice\" ✓"),
        fallback=False,
        decided_at=T0 + n,
    )


@pytest.fixture
def decisions(database_url: str) -> Iterator[DecisionStore]:
    store = SqlStore(database_url)
    yield DecisionStore(store.engine)
    store.close()


def test_inserted_decisions_read_back_equal(decisions: DecisionStore) -> None:
    batch = [make_decision(n) for n in range(50)]
    assert decisions.insert(batch) == 50
    for d in (batch[0], batch[5], batch[49]):
        row = decisions.get(d.decision_id)
        assert row is not None
        assert (row.merchant_id, row.payment_id, row.connector) == (
            d.merchant_id,
            d.payment_id,
            d.connector,
        )
        assert row.alternatives == [{"connector": c, "score": s} for c, s in d.alternatives]
        assert row.reasons == list(d.reasons)
        assert row.confidence == d.confidence
        assert row.explored is d.explored
        assert row.propensity == d.propensity
        assert row.model_version == d.model_version[:32]
        assert row.created_at == datetime.fromtimestamp(d.decided_at, UTC)
        assert row.outcome_status is None


def test_a_retried_flush_writes_nothing_twice(decisions: DecisionStore) -> None:
    batch = [make_decision(n) for n in range(20)]
    assert decisions.insert(batch[:10]) == 10
    # The first ten again (a retry after a lost answer), with ten new ones.
    assert decisions.insert(batch) == 10
    assert decisions.insert(batch) == 0
    assert decisions.count() == 20
    assert decisions.count("m_0") == 7


def test_outcomes_join_only_known_decisions(decisions: DecisionStore) -> None:
    decisions.insert([make_decision(n) for n in range(3)])
    at = datetime.fromtimestamp(T0 + 60, UTC)
    found = decisions.record_outcomes(
        [
            DecisionOutcome(make_decision(1).decision_id, "succeeded", "evt_1", at),
            DecisionOutcome("dec_unknown", "failed", "evt_2", at),
        ]
    )
    assert found == {make_decision(1).decision_id: True}
    row = decisions.get(make_decision(1).decision_id)
    assert row is not None
    assert (row.outcome_status, row.outcome_event_id, row.outcome_at) == ("succeeded", "evt_1", at)
    other = decisions.get(make_decision(2).decision_id)
    assert other is not None and other.outcome_status is None


def test_an_outcome_joins_only_its_own_merchants_decision(decisions: DecisionStore) -> None:
    decisions.insert([make_decision(n) for n in range(2)])
    target = decisions.get(make_decision(1).decision_id)
    assert target is not None and target.merchant_id
    at = datetime.fromtimestamp(T0 + 60, UTC)
    forged = DecisionOutcome(target.decision_id, "failed", "evt_x", at, "m_someone_else")
    # found (nothing to wait for), not joined
    assert decisions.record_outcomes([forged]) == {target.decision_id: False}
    row = decisions.get(target.decision_id)
    assert row is not None and row.outcome_status is None
    own = DecisionOutcome(target.decision_id, "succeeded", "evt_1", at, target.merchant_id)
    decisions.record_outcomes([own])
    row = decisions.get(target.decision_id)
    assert row is not None and row.outcome_status == "succeeded"


def test_listing_is_newest_first_across_pages(decisions: DecisionStore) -> None:
    decisions.insert([make_decision(n) for n in range(25)])
    seen: list[str] = []
    cursor = None
    while True:
        page = decisions.list(None, 10, cursor)
        seen += [r.decision_id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [make_decision(n).decision_id for n in reversed(range(25))]


def test_a_failed_flush_keeps_decisions_and_outcomes_for_the_next(
    decisions: DecisionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = DecisionWriter(decisions)
    at = datetime.fromtimestamp(T0 + 60, UTC)
    writer.add_decision(make_decision(1))
    writer.add_outcome(DecisionOutcome(make_decision(1).decision_id, "succeeded", "evt_1", at))
    real_insert = decisions.insert

    def locked(rows: object) -> int:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(decisions, "insert", locked)
    with pytest.raises(RuntimeError):
        writer.flush()
    monkeypatch.setattr(decisions, "insert", real_insert)
    writer.flush()
    row = decisions.get(make_decision(1).decision_id)
    assert row is not None and row.outcome_status == "succeeded"
    assert (writer.written, writer.joined) == (1, 1)


def test_decisions_and_outcomes_are_written_while_events_are_ingested(
    database_url: str, decisions: DecisionStore
) -> None:
    # Concurrent writers: on SQLite a read-then-write transaction failed with "database is
    # locked" (no busy wait on the lock upgrade); each write now starts its own transaction.
    store = SqlStore(database_url)
    stop = threading.Event()

    def ingest() -> None:
        n = 0
        while not stop.is_set():
            store.add_dead_letters(
                [DeadLetter("test", "{}", "load", datetime.now(UTC)) for _ in range(20)]
            )
            n += 1

    thread = threading.Thread(target=ingest)
    thread.start()
    try:
        at = datetime.fromtimestamp(T0 + 60, UTC)
        for n in range(60):
            decisions.insert([make_decision(1_000 + n)])
            found = decisions.record_outcomes(
                [DecisionOutcome(make_decision(1_000 + n).decision_id, "failed", f"e{n}", at)]
            )
            assert found == {make_decision(1_000 + n).decision_id: True}
    finally:
        stop.set()
        thread.join()
        store.close()
