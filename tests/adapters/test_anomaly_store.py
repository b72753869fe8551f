"""Anomaly records on SQLite and PostgreSQL: one record per incident, its transitions, the
operator's actions, listings and the series around an incident."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from apos.adapters.db import SqlStore
from apos.adapters.db.anomalies import (
    AnomalyQuery,
    AnomalyStore,
    InvalidTransitionError,
    Transition,
)
from apos.adapters.db.cursors import InvalidCursorError
from apos.core.detect.findings import AnomalyType, Entity, Evidence, Finding, Severity
from apos.core.events import PaymentEvent

T0 = 1_790_000_000.0  # event time, epoch seconds


def finding(
    at: float,
    *,
    active: bool = True,
    score: float = 0.95,
    severity: Severity = Severity.WARNING,
    started_at: float | None = None,
    connector: str = "adyen",
    merchant_id: str | None = None,
    kind: AnomalyType = AnomalyType.HIGH_FAILURE_RATE,
) -> Finding:
    return Finding(
        anomaly_type=kind,
        entity=Entity(merchant_id=merchant_id, connector=connector),
        score=score,
        severity=severity,
        at=at,
        started_at=T0 if started_at is None else started_at,
        evidence=Evidence("success_rate", 0.97, 0.5, "test", 60.0, 100),
        detector="test",
        active=active,
    )


@pytest.fixture
def anomalies(database_url: str) -> AnomalyStore:
    store = SqlStore(database_url)
    return AnomalyStore(store.engine)


def test_an_ongoing_incident_is_one_record_updated_then_resolved_automatically(
    anomalies: AnomalyStore,
) -> None:
    first = anomalies.apply(finding(T0 + 60))
    assert first is not None and first.transition is Transition.OPENED
    for minute in range(2, 10):
        change = anomalies.apply(finding(T0 + 60 * minute, score=0.9 + minute / 100))
        assert change is None  # an update, not a transition
    records = anomalies.list_anomalies(AnomalyQuery()).items
    assert len(records) == 1
    record = records[0]
    assert record.status == "open"
    assert record.last_seen_at == datetime.fromtimestamp(T0 + 540, UTC)
    assert record.peak_score == pytest.approx(0.99)
    assert record.detected_at == datetime.fromtimestamp(T0 + 60, UTC)
    assert record.started_at == datetime.fromtimestamp(T0, UTC)

    cleared = anomalies.apply(finding(T0 + 600, active=False))
    assert cleared is not None and cleared.transition is Transition.RESOLVED
    assert cleared.record.status == "resolved"
    assert cleared.record.resolution == "auto"
    assert cleared.record.ended_at == datetime.fromtimestamp(T0 + 600, UTC)


def test_a_rise_in_severity_is_an_escalation_and_a_fall_is_not(anomalies: AnomalyStore) -> None:
    anomalies.apply(finding(T0 + 60, severity=Severity.WARNING))
    up = anomalies.apply(finding(T0 + 120, severity=Severity.CRITICAL, score=0.999))
    assert up is not None and up.transition is Transition.ESCALATED
    assert up.previous_severity == "warning" and up.record.severity == "critical"
    assert anomalies.apply(finding(T0 + 180, severity=Severity.WARNING)) is None
    assert anomalies.list_anomalies(AnomalyQuery()).items[0].severity == "critical"


def test_a_lagging_copy_of_a_resolved_incident_does_not_reopen_it(
    anomalies: AnomalyStore,
) -> None:
    for at in (T0 + 60, T0 + 120):
        anomalies.apply(finding(at))
    anomalies.apply(finding(T0 + 180, active=False))
    # Another instance, behind this one, replays the same findings.
    assert anomalies.apply(finding(T0 + 60)) is None
    assert anomalies.apply(finding(T0 + 120)) is None
    assert anomalies.apply(finding(T0 + 180, active=False)) is None
    assert len(anomalies.list_anomalies(AnomalyQuery()).items) == 1
    # A new occurrence, after the first one ended, is a new record.
    again = anomalies.apply(finding(T0 + 900, started_at=T0 + 840))
    assert again is not None and again.transition is Transition.OPENED
    assert len(anomalies.list_anomalies(AnomalyQuery()).items) == 2


def test_a_stale_clearing_does_not_resolve_a_newer_evaluation(anomalies: AnomalyStore) -> None:
    anomalies.apply(finding(T0 + 60))
    anomalies.apply(finding(T0 + 300))
    assert anomalies.apply(finding(T0 + 120, active=False)) is None
    assert anomalies.list_anomalies(AnomalyQuery()).items[0].status == "open"


def test_operator_acknowledges_then_resolves_and_the_same_occurrence_stays_resolved(
    anomalies: AnomalyStore,
) -> None:
    opened = anomalies.apply(finding(T0 + 60))
    assert opened is not None
    record_id = opened.record.id
    acked = anomalies.acknowledge(record_id, "key:key_op")
    assert acked.status == "acknowledged" and acked.acknowledged_by == "key:key_op"
    with pytest.raises(InvalidTransitionError):
        anomalies.acknowledge(record_id, "key:key_op")
    # Still the same incident while acknowledged.
    assert anomalies.apply(finding(T0 + 120)) is None
    resolved = anomalies.resolve(record_id, "key:key_op", ["failover to stripe"])
    assert resolved.status == "resolved" and resolved.resolution == "operator"
    assert resolved.resolution_actions == ["failover to stripe"]
    assert resolved.ended_at == datetime.fromtimestamp(T0 + 120, UTC)
    with pytest.raises(InvalidTransitionError):
        anomalies.resolve(record_id, "key:key_op")
    # The detector fires on about the same occurrence: not reopened ...
    assert anomalies.apply(finding(T0 + 180)) is None
    # ... but a new occurrence (a later start) is a new record.
    again = anomalies.apply(finding(T0 + 1200, started_at=T0 + 1100))
    assert again is not None and again.transition is Transition.OPENED
    assert again.record.id != record_id
    with pytest.raises(KeyError):
        anomalies.acknowledge("no-such-id", "key:key_op")


def test_listing_filters_and_pages_newest_first(anomalies: AnomalyStore) -> None:
    for i in range(7):
        anomalies.apply(
            finding(
                T0 + 60 * i,
                started_at=T0 + 60 * i,
                connector=f"c{i}",
                merchant_id="m_a" if i % 2 else "m_b",
                severity=Severity.CRITICAL if i < 3 else Severity.WARNING,
            )
        )
    seen: list[str] = []
    cursor = None
    while True:
        page = anomalies.list_anomalies(AnomalyQuery(limit=3, cursor=cursor))
        seen.extend(r.connector or "" for r in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"c{i}" for i in reversed(range(7))]
    assert {
        r.merchant_id for r in anomalies.list_anomalies(AnomalyQuery(merchant_id="m_a")).items
    } == {"m_a"}
    critical = anomalies.list_anomalies(AnomalyQuery(severity="critical")).items
    assert sorted(r.connector or "" for r in critical) == ["c0", "c1", "c2"]
    since = datetime.fromtimestamp(T0 + 120, UTC)
    until = datetime.fromtimestamp(T0 + 240, UTC)
    ranged = anomalies.list_anomalies(AnomalyQuery(since=since, until=until)).items
    assert sorted(r.connector or "" for r in ranged) == ["c2", "c3"]
    summary = anomalies.open_summary(newest=2)
    assert summary["open"] == 7
    assert summary["by_severity"] == {"critical": 3, "warning": 4}
    assert [n["connector"] for n in summary["newest"]] == ["c6", "c5"]
    assert anomalies.open_summary("m_a")["open"] == 3
    with pytest.raises(InvalidCursorError):
        anomalies.list_anomalies(AnomalyQuery(cursor="bm9wZQ"))


def test_series_sums_the_entitys_rollups_around_the_incident(database_url: str) -> None:
    store = SqlStore(database_url)
    anomalies = AnomalyStore(store.engine)
    base = datetime.fromtimestamp(T0, UTC).replace(second=0)
    events = []
    for minute in range(-40, 50):
        for n in range(4):
            events.append(
                PaymentEvent.model_validate(
                    {
                        "event_id": f"e{minute}_{n}",
                        "payment_id": f"p{minute}_{n}",
                        "merchant_id": "m_a" if n < 3 else "m_b",
                        "connector": "adyen",
                        "status": "failed" if 0 <= minute < 10 and n < 2 else "succeeded",
                        "amount": 1000,
                        "currency": "EUR",
                        "payment_method": "card",
                        "latency_ms": 100.0,
                        "occurred_at": (base + timedelta(minutes=minute, seconds=5)).isoformat(),
                    }
                )
            )
    store.insert_events(events, datetime.now(UTC))
    anomalies.apply(finding(T0 + 60, started_at=T0))
    anomalies.apply(finding(T0 + 600, active=False))
    record = anomalies.list_anomalies(AnomalyQuery()).items[0]
    points, cut = anomalies.series(record)
    assert not cut
    minutes = [p.minute for p in points]
    assert minutes[0] == base - timedelta(minutes=30)
    assert minutes[-1] <= datetime.fromtimestamp(T0 + 600, UTC) + timedelta(minutes=30)
    assert all(p.attempts == 4 for p in points)  # the connector across both merchants
    during = [p for p in points if base <= p.minute < base + timedelta(minutes=10)]
    assert len(during) == 10 and all(p.successes == 2 for p in during)
    store.close()


@pytest.mark.parametrize("writers", [3])
def test_concurrent_writers_of_the_same_findings_make_one_record(
    database_url: str, writers: int
) -> None:
    """Three stores (as three instances) apply the same finding stream at once."""
    stores = [SqlStore(database_url) for _ in range(writers)]
    stream = [finding(T0 + 10 * i) for i in range(30)] + [finding(T0 + 300, active=False)]
    stream += [finding(T0 + 600 + 10 * i, started_at=T0 + 590) for i in range(10)]
    transitions: list[Transition] = []
    lock = threading.Lock()
    barrier = threading.Barrier(writers)

    def run(store: SqlStore) -> None:
        target = AnomalyStore(store.engine)
        barrier.wait()
        for f in stream:
            change = target.apply(f)
            if change is not None:
                with lock:
                    transitions.append(change.transition)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = AnomalyStore(stores[0].engine).list_anomalies(AnomalyQuery()).items
    assert len(records) == 2
    assert sorted(r.status for r in records) == ["open", "resolved"]
    # Each transition happened once across the writers.
    assert sorted(transitions) == sorted(
        [Transition.OPENED, Transition.RESOLVED, Transition.OPENED]
    )
    for s in stores:
        s.close()
