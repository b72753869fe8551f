"""The detection service wired by bootstrap: fed the stored events, findings written off the
event path, one record per incident across instances, snapshots that neither lose nor
double-count what the monitor saw."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from apos.adapters.db.anomalies import AnomalyQuery
from apos.service.bootstrap import Services, build_services, save_snapshot
from apos.service.detection import stream_id_after
from apos.settings import Settings
from tests.service.conftest import make_event
from tests.service.detection_double import FailureBurstMonitor, failure_burst_monitor
from tests.service.test_alerts import Receiver, receiver

__all__ = ["failure_burst_monitor", "receiver"]  # fixtures used here


def incident(start: float, n0: int = 0) -> list[dict[str, Any]]:
    """Adyen fails in windows 2 and 3 (of 10 s, event time from ``start``); stripe is fine
    throughout; window 4 is clean again (the incident clears)."""
    events = []
    n = n0
    for window in range(6):
        for i in range(10):
            at = start + window * 10 + i
            failing = window in (2, 3) and i < 8
            for connector in ("adyen", "stripe"):
                n += 1
                status = "failed" if connector == "adyen" and failing else "succeeded"
                events.append(make_event(n, connector=connector, status=status, occurred_at=at))
    return events


def aligned_start() -> float:
    """A window boundary just ahead of the wall clock. With ``clock = "event"`` the routing
    clock (and so the detection ticks) follows these future-dated events, as in the demo:
    a minute of event time passes in a moment, and no tick runs ahead of the events."""
    start = time.time() + 10
    return start - start % 10


def until(check: Callable[[], bool], what: str, seconds: float = 15) -> None:
    deadline = time.time() + seconds
    while not check():
        assert time.time() < deadline, what
        time.sleep(0.05)


def metric(services: Services, name: str, **labels: str) -> float:
    value = services.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


@pytest.fixture
def embedded(
    sqlite_url: str, failure_burst_monitor: type[FailureBurstMonitor]
) -> Iterator[Callable[..., Services]]:
    built: list[Services] = []

    def build(**overrides: Any) -> Services:
        services = build_services(
            Settings(
                database_url=sqlite_url,
                consumer_name="one",
                tick_interval_s=0.05,
                clock="event",
                **overrides,
            )
        )
        built.append(services)
        return services

    yield build
    for services in built:
        services.close()


def test_stored_events_raise_one_incident_that_resolves_itself(
    embedded: Callable[..., Services], receiver: Receiver
) -> None:
    services = embedded(alert_webhook_urls=(receiver.url,), alert_webhook_secret="s")
    assert services.detection is not None and services.anomalies is not None
    services.start()
    start = aligned_start()
    services.ingestor.ingest(incident(start), "http")
    until(
        lambda: (
            [r.status for r in services.anomalies.list_anomalies(AnomalyQuery()).items]
            == ["resolved"]
        ),
        "incident recorded and resolved",
    )
    (record,) = services.anomalies.list_anomalies(AnomalyQuery()).items
    assert record.connector == "adyen" and record.resolution == "auto"
    assert record.anomaly_type == "HighFailureRate" and record.severity == "critical"
    # Event times: began with window 2, flagged at its end, cleared at the end of window 4.
    assert record.started_at.timestamp() == start + 20
    assert record.detected_at.timestamp() == start + 30
    assert record.ended_at is not None and record.ended_at.timestamp() == start + 50
    assert (
        metric(
            services, "apos_anomalies_detected_total", type="HighFailureRate", severity="critical"
        )
        == 1
    )
    assert services.alerts is not None and services.alerts.drain(5)
    assert [b["event"] for b in receiver.bodies] == ["anomaly.opened", "anomaly.resolved"]
    assert metric(services, "apos_alerts_delivered_total", sink=services.alerts.sinks[0]) == 2


def test_the_event_path_never_writes_findings_to_the_database(
    embedded: Callable[..., Services],
) -> None:
    services = embedded()
    detection = services.detection
    assert detection is not None
    # Workers not started: observing queues findings, nothing is written until the writer runs.
    for events in (incident(aligned_start()),):
        services.ingestor.ingest(events, "http")
    detection.tick()
    assert detection.pending > 0
    assert services.anomalies is not None
    assert services.anomalies.list_anomalies(AnomalyQuery()).items == []
    assert detection.write_step() > 0
    assert len(services.anomalies.list_anomalies(AnomalyQuery()).items) == 1


def test_a_restart_continues_from_the_detection_snapshot_without_double_counting(
    embedded: Callable[..., Services],
) -> None:
    first = embedded()
    batch = incident(aligned_start())
    first.ingestor.ingest(batch[:50], "http")
    save_snapshot(first)
    first.ingestor.ingest(batch[50:80], "http")  # stored, observed, not in a snapshot
    assert first.detection is not None
    observed = first.detection.events_observed
    assert isinstance(first.detection.monitor, FailureBurstMonitor)
    expected = first.detection.monitor.snapshot()
    first.close()  # a clean stop saves both snapshots

    second = embedded()
    assert second.detection is not None
    assert second.detection.events_observed == observed == 80
    assert second.detection.monitor.snapshot() == expected

    # A crash after the snapshot: the unsaved batch's outbox row is replayed once.
    second.ingestor.ingest(batch[80:100], "http")
    save_snapshot(second)
    second.ingestor.ingest(batch[100:110], "http")
    before = second.detection.monitor.snapshot()
    third = embedded()  # built while `second` still runs: as after a crash
    assert third.detection is not None
    assert third.detection.monitor.snapshot() == before
    assert third.detection.events_observed == 110


def test_stream_ids_compare_by_time_then_sequence() -> None:
    assert stream_id_after("1700000000001-0", "1700000000000-5")
    assert stream_id_after("1700000000000-10", "1700000000000-9")
    assert not stream_id_after("1700000000000-9", "1700000000000-9")


@pytest.mark.redis
@pytest.mark.postgres
def test_three_instances_on_postgres_and_redis_keep_one_record_and_send_one_alert_each(
    postgres_url: str,
    redis_url: str,
    stream_name: str,
    failure_burst_monitor: type[FailureBurstMonitor],
    receiver: Receiver,
) -> None:
    common: dict[str, Any] = {
        "database_url": postgres_url,
        "redis_url": redis_url,
        "event_stream": stream_name,
        "stream_block_ms": 50,
        "tick_interval_s": 0.05,
        "clock": "event",
        "alert_webhook_urls": (receiver.url,),
    }
    instances = [build_services(Settings(**common, consumer_name=f"i{n}")) for n in range(3)]
    try:
        for services in instances:
            services.start()
        start = aligned_start()
        events = incident(start) + incident(start + 120, n0=10_000)  # two incidents
        for n, chunk in enumerate(events[i : i + 40] for i in range(0, len(events), 40)):
            instances[n % 3].ingestor.ingest(chunk, "http")  # stored by whichever instance
        total = len(events)
        until(
            lambda: all(
                s.detection is not None and s.detection.events_observed == total for s in instances
            ),
            "every instance observed every event",
        )
        anomalies = instances[0].anomalies
        assert anomalies is not None

        def settled() -> bool:
            records = anomalies.list_anomalies(AnomalyQuery()).items
            idle = all(s.detection is not None and s.detection.pending == 0 for s in instances)
            return idle and [r.status for r in records] == ["resolved", "resolved"]

        until(settled, "two incidents, each one record, resolved")
        records = anomalies.list_anomalies(AnomalyQuery()).items
        assert len({r.incident_key for r in records}) == 1  # the same incident, twice over
        opened = sum(
            metric(s, "apos_anomalies_detected_total", type="HighFailureRate", severity="critical")
            for s in instances
        )
        assert opened == 2  # counted once per incident across the three
        for s in instances:
            assert s.alerts is not None
            s.alerts.drain(5)
        events_seen = sorted((b["anomaly"]["id"], b["event"]) for b in receiver.bodies)
        assert events_seen == sorted(
            (r.id, e) for r in records for e in ("anomaly.opened", "anomaly.resolved")
        )
    finally:
        for services in instances:
            services.close()
