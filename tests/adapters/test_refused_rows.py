"""One row the database refuses never stops a batched writer (both backends).

Rows are built past validation (as a bug or an older release could) with text no database
stores: a lone surrogate (refused by SQLite and PostgreSQL alike) or U+0000 (refused by
PostgreSQL). The writer must write the others, dead-letter the refused row with a reason,
and keep rows when the database is merely down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from apos.adapters.db import SqlStore
from apos.adapters.db.decisions import DecisionOutcome, DecisionStore
from apos.adapters.db.refusals import is_row_fault, write_isolating
from apos.adapters.db.snapshots import SavedSnapshot, SnapshotStore
from apos.adapters.ports import AuditEntry
from apos.core.decision import Decision
from apos.core.events import PaymentEvent, PaymentStatus
from apos.service import ingest as ingest_module
from apos.service.ingest import Ingestor
from apos.service.metrics import Metrics
from apos.service.routing import DecisionWriter
from tests.adapters.test_decision_store import make_decision

SURROGATE = "\ud800"  # not UTF-8: no backend can store it
NUL = "\x00"  # PostgreSQL refuses it in text and JSON


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    store = SqlStore(database_url)
    yield store
    store.close()


def _refused_on(store: SqlStore) -> list[str]:
    """The bad values this backend refuses."""
    return [SURROGATE, NUL] if store.engine.dialect.name == "postgresql" else [SURROGATE]


def test_decision_writer_isolates_a_refused_decision(store: SqlStore) -> None:
    decisions = DecisionStore(store.engine)
    writer = DecisionWriter(decisions, dead_letter=store.add_dead_letters)
    bad_values = _refused_on(store)
    good = [make_decision(n) for n in range(10)]
    bad = [
        dataclasses.replace(make_decision(100 + i), payment_id=f"pay{value}")
        for i, value in enumerate(bad_values)
    ]
    for decision in [*good[:5], *bad, *good[5:]]:
        writer.add_decision(decision)
    writer.flush()
    assert decisions.count() == len(good)
    assert writer.written == len(good)
    assert writer.refused == len(bad)
    letters = store.list_dead_letters(None, 100, None).items
    assert sorted(letter.source for letter in letters) == ["decision_log"] * len(bad)
    assert all(letter.reason.startswith("refused by the database") for letter in letters)
    assert {letter.merchant_id for letter in letters} <= {"m_0", "m_1", "m_2"}
    # Nothing is left queued: the next decisions are written at once.
    writer.add_decision(make_decision(50))
    writer.flush()
    assert decisions.count() == len(good) + 1


def test_outcome_join_isolates_a_refused_outcome(store: SqlStore) -> None:
    decisions = DecisionStore(store.engine)
    writer = DecisionWriter(decisions, dead_letter=store.add_dead_letters)
    batch = [make_decision(n) for n in range(3)]
    for decision in batch:
        writer.add_decision(decision)
    at = datetime(2027, 1, 15, tzinfo=UTC)
    writer.add_outcome(DecisionOutcome(batch[0].decision_id, "succeeded", "evt_0", at, "m_0"))
    writer.add_outcome(DecisionOutcome(batch[1].decision_id, "failed", f"e{SURROGATE}", at))
    writer.add_outcome(DecisionOutcome(batch[2].decision_id, "failed", "evt_2", at, "m_2"))
    writer.flush()
    joined = {d.decision_id: decisions.get(d.decision_id) for d in batch}
    assert joined[batch[0].decision_id].outcome_status == "succeeded"  # type: ignore[union-attr]
    assert joined[batch[2].decision_id].outcome_status == "failed"  # type: ignore[union-attr]
    assert joined[batch[1].decision_id].outcome_status is None  # type: ignore[union-attr]
    assert writer.refused == 1
    assert store.count_dead_letters() == 1


class _DownStore:
    """A decision store whose database is unreachable."""

    def __init__(self) -> None:
        self.calls = 0

    def insert(self, decisions: Sequence[Decision]) -> int:
        self.calls += 1
        raise sa.exc.OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))


def test_a_database_outage_keeps_every_decision_for_the_retry() -> None:
    down = _DownStore()
    letters: list[Any] = []
    writer = DecisionWriter(down, dead_letter=letters.extend)  # type: ignore[arg-type]
    for n in range(4):
        writer.add_decision(make_decision(n))
    with pytest.raises(sa.exc.OperationalError):
        writer.flush()
    assert down.calls == 1  # not bisected: an outage is not a row's fault
    assert letters == []
    assert writer.refused == 0
    writer.stop()  # the last flush fails too: logged, never raised
    assert len(writer._decisions) == 4


@pytest.mark.parametrize(
    ("error", "row_fault"),
    [
        (sa.exc.OperationalError("x", {}, Exception("server closed the connection")), False),
        (sa.exc.InterfaceError("x", {}, Exception("connection already closed")), False),
        (sa.exc.DataError("x", {}, Exception("value too long")), True),
        (sa.exc.IntegrityError("x", {}, Exception("null value")), True),
        (UnicodeEncodeError("utf-8", SURROGATE, 0, 1, "surrogates not allowed"), True),
        (OverflowError("Python int too large to convert to SQLite INTEGER"), True),
        (RuntimeError("a bug"), False),
    ],
)
def test_row_faults_are_told_from_outages(error: Exception, row_fault: bool) -> None:
    assert is_row_fault(error) is row_fault


def test_bisection_writes_every_good_row_in_order() -> None:
    written: list[int] = []

    def write(rows: Sequence[int]) -> int:
        if any(r % 7 == 3 for r in rows):
            raise sa.exc.DataError("x", {}, Exception("refused"))
        written.extend(rows)
        return len(rows)

    results, refused = write_isolating(write, list(range(40)))
    assert written == [r for r in range(40) if r % 7 != 3]
    assert [row for row, _ in refused] == [3, 10, 17, 24, 31, 38]
    assert sum(results) == len(written)


def test_a_refused_snapshot_is_saved_sanitised_and_dead_lettered(store: SqlStore) -> None:
    snapshots = SnapshotStore(store.engine)
    bad = f"a{NUL}b" if store.engine.dialect.name == "postgresql" else f"a{SURROGATE}b"
    state = {"connectors": ["stripe", bad], "learnt": {bad: 3, "stripe": 4}}
    saved_at = datetime(2027, 1, 15, tzinfo=UTC)
    snapshots.save(SavedSnapshot("engine", saved_at, None, 7, state))
    loaded = snapshots.load("engine")
    assert loaded is not None
    assert loaded.events_learned == 7
    assert loaded.state["learnt"]["stripe"] == 4
    assert len(loaded.state["connectors"]) == 2
    if store.engine.dialect.name == "postgresql":  # SQLite stores JSON escapes as given
        letters = store.list_dead_letters(None, 10, None).items
        assert [letter.source for letter in letters] == ["snapshot"]
    # The next save (the bad name still in the state) goes through just the same.
    snapshots.save(SavedSnapshot("engine", saved_at, None, 8, state))
    assert snapshots.load("engine").events_learned == 8  # type: ignore[union-attr]


def test_a_refused_audit_entry_is_kept_sanitised_with_the_others(store: SqlStore) -> None:
    at = datetime(2027, 1, 15, tzinfo=UTC)
    entries = [
        AuditEntry(actor="key:a", action="rule.update", target="m1", details={"n": 1}, at=at),
        AuditEntry(actor=f"key:{SURROGATE}", action="rule.update", target="m2", at=at),
        AuditEntry(actor="key:c", action="rule.update", target="m3", details={"n": 3}, at=at),
    ]
    store.append_audit(entries)
    kept = store.list_audit(None, 10, None).items
    assert sorted(e.target for e in kept) == ["m1", "m2", "m3"]
    sanitised = next(e for e in kept if e.target == "m2")
    assert "stored_as_sanitised" in sanitised.details
    assert [letter.source for letter in store.list_dead_letters(None, 10, None).items] == [
        "audit_log"
    ]


def _event(n: int, payment_id: str) -> PaymentEvent:
    return PaymentEvent.model_construct(
        event_id=f"evt_{n}",
        payment_id=payment_id,
        attempt=1,
        merchant_id="m_alpha",
        profile_id=None,
        connector="stripe",
        status=PaymentStatus.SUCCEEDED,
        amount=100,
        currency="USD",
        payment_method="card",
        payment_method_type=None,
        card_network=None,
        issuer_country=None,
        latency_ms=None,
        error_code=None,
        error_message=None,
        fingerprint=None,
        decision_id=None,
        occurred_at=datetime(2026, 11, 25, 10, tzinfo=UTC),
    )


def test_ingest_isolates_an_event_the_database_refuses(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Validation is bypassed: the event stands for one a future rule would let through.
    monkeypatch.setattr(ingest_module, "parse_event", lambda payload: payload)
    learnt: list[str] = []
    ingestor = Ingestor(store, Metrics())
    ingestor.add_listener(lambda events: learnt.extend(e.event_id for e in events))
    batch = [_event(n, f"pay_{n}") for n in range(6)]
    batch[2] = _event(2, f"pay{SURROGATE}")
    report = ingestor.ingest(batch, "http")
    assert report.accepted == 5
    assert [(r.index, r.code, r.event_id) for r in report.rejected] == [
        (2, "refused_by_store", "evt_2")
    ]
    assert store.count_events() == 5
    assert sorted(learnt) == sorted(f"evt_{n}" for n in range(6) if n != 2)
    letters = store.list_dead_letters(None, 10, None).items
    assert len(letters) == 1
    assert letters[0].merchant_id == "m_alpha"
    assert letters[0].reason.startswith("refused by the database")
