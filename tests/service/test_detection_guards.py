"""What one sender cannot do to the anomaly monitor: bloat it, replay old traffic into it,
or stop learning by making it fail; and a changed configuration is not silently ignored."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apos.adapters.db.anomalies import AnomalyQuery
from apos.core.events import parse_event
from apos.service.bootstrap import build_services, save_snapshot
from apos.service.detection import MAX_CONNECTORS_PER_MERCHANT
from apos.settings import Settings
from tests.service.conftest import make_event


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def test_made_up_connector_names_are_capped_per_merchant(sqlite_url: str) -> None:
    services = build_services(Settings(database_url=sqlite_url))
    try:
        detection = services.detection
        assert detection is not None
        now = time.time() - 1
        events = [
            parse_event(
                make_event(i, payment_id=f"pay_{i}", connector=f"fake{i}", occurred_at=iso(now))
            )
            for i in range(MAX_CONNECTORS_PER_MERCHANT + 40)
        ]
        detection.observe(events)
        assert detection.events_over_cap == 40
        # A connector already admitted keeps being observed.
        again = parse_event(make_event(999, payment_id="pay_999", connector="fake0"))
        again = again.model_copy(update={"occurred_at": datetime.fromtimestamp(now, UTC)})
        detection.observe([again])
        assert detection.events_over_cap == 40
        # ... and the caps survive a restart with the snapshot.
        save_snapshot(services)
    finally:
        services.close()
    restarted = build_services(Settings(database_url=sqlite_url))
    try:
        assert restarted.detection is not None
        late_name = parse_event(make_event(1000, payment_id="pay_1000", connector="fake_new"))
        late_name = late_name.model_copy(update={"occurred_at": datetime.now(UTC)})
        restarted.detection.observe([late_name])
        assert restarted.detection.events_over_cap == 1
    finally:
        restarted.close()


def test_old_events_are_learnt_but_not_counted_as_current_traffic(sqlite_url: str) -> None:
    services = build_services(Settings(database_url=sqlite_url))
    try:
        detection = services.detection
        assert detection is not None
        now = time.time() - 1
        fresh = make_event(1, occurred_at=iso(now))
        old = make_event(2, payment_id="pay_2", occurred_at=iso(now - 3 * 86_400))
        assert services.ingestor.ingest([fresh, old], "http").accepted == 2
        assert detection.events_late == 1
        assert services.routing.events_learned == 2  # learning still positions it in time
    finally:
        services.close()


def test_a_failing_monitor_does_not_stop_learning(sqlite_url: str) -> None:
    services = build_services(Settings(database_url=sqlite_url))
    try:
        detection = services.detection
        assert detection is not None

        def broken(event: object, now: float) -> list[object]:
            raise RuntimeError("detector bug")

        detection.monitor.observe = broken  # type: ignore[method-assign,assignment]
        event = make_event(1, occurred_at=iso(time.time() - 1))
        assert services.ingestor.ingest([event], "http").accepted == 1
        assert detection.observe_failures == 1
        assert services.routing.events_learned == 1
    finally:
        services.close()


def test_a_changed_detection_config_starts_detection_cold(sqlite_url: str, tmp_path: Path) -> None:
    first = build_services(Settings(database_url=sqlite_url))
    try:
        assert first.detection is not None
        first.detection.observe([parse_event(make_event(1, occurred_at=iso(time.time() - 1)))])
        save_snapshot(first)
    finally:
        first.close()
    same = build_services(Settings(database_url=sqlite_url))
    try:
        assert same.detection is not None and same.detection.events_observed == 1
    finally:
        same.close()
    config = tmp_path / "detection.toml"
    config.write_text("[success_rate]\nthreshold = 20.0\n")
    changed = build_services(Settings(database_url=sqlite_url, detection_config=config))
    try:
        assert changed.detection is not None
        assert changed.detection.events_observed == 0
        assert changed.detection.monitor.config.success_rate.threshold == 20.0
    finally:
        changed.close()


def test_a_finding_the_database_refuses_does_not_block_those_behind_it(sqlite_url: str) -> None:
    import sqlalchemy.exc as sa_exc

    from apos.core.detect.findings import (
        AnomalyType,
        Entity,
        Evidence,
        Finding,
        Severity,
    )

    services = build_services(Settings(database_url=sqlite_url))
    try:
        detection = services.detection
        assert detection is not None
        store = detection._anomalies
        real_apply = store.apply

        def finding(connector: str) -> Finding:
            at = time.time()
            evidence = Evidence("success_rate", 0.97, 0.4, "test", 60.0, 100)
            return Finding(
                AnomalyType.HIGH_FAILURE_RATE,
                Entity(connector=connector),
                0.99,
                Severity.CRITICAL,
                at,
                at,
                evidence,
                "test",
            )

        def refusing(found: Finding, now: datetime) -> object:
            if found.entity.connector == "bad":
                raise sa_exc.DataError("INSERT", {}, ValueError("refused"))
            return real_apply(found, now)

        store.apply = refusing  # type: ignore[method-assign]
        detection._enqueue([finding("bad"), finding("adyen")])
        assert detection.write_step() == 2  # the refused one dropped, the next written
        assert detection.write_step() == 0  # nothing left queued
        opened = store.list_anomalies(AnomalyQuery())
        assert [r.connector for r in opened.items] == ["adyen"]
    finally:
        services.close()


def _finding(connector: str, at: float, active: bool = True, **details: object) -> Any:
    from apos.core.detect.findings import AnomalyType, Entity, Evidence, Finding, Severity

    evidence = Evidence("success_rate", 0.97, 0.4, "test", 60.0, 100, dict(details))
    return Finding(
        AnomalyType.HIGH_FAILURE_RATE,
        Entity(connector=connector),
        0.99 if active else 0.0,
        Severity.CRITICAL if active else Severity.INFO,
        at,
        at,
        evidence,
        "test",
        active,
    )


def test_a_full_findings_queue_merges_repeats_so_each_incident_still_opens_and_clears(
    sqlite_url: str,
) -> None:
    services = build_services(Settings(database_url=sqlite_url))
    try:
        detection = services.detection
        assert detection is not None and services.anomalies is not None
        detection._queue_limit = 4
        at = float(int(time.time()) - 300)
        # Two incidents open and clear while the writer is stalled: 22 findings for 4 places.
        queued = [_finding("adyen", at + i) for i in range(10)]
        queued += [_finding("adyen", at + 10, active=False)]
        queued += [_finding("stripe", at + i) for i in range(10)]
        queued += [_finding("stripe", at + 10, active=False)]
        for one in queued:
            detection._enqueue([one])
        assert detection.pending == 4
        assert detection.findings_dropped == 18
        while detection.write_step():
            pass
        records = {r.connector: r for r in services.anomalies.list_anomalies(AnomalyQuery()).items}
        assert set(records) == {"adyen", "stripe"}
        for record in records.values():
            assert record.status == "resolved" and record.resolution == "auto"
            assert record.started_at.timestamp() == at  # the first finding's start, kept
            assert record.ended_at is not None and record.ended_at.timestamp() == at + 10
    finally:
        services.close()


def test_non_finite_numbers_in_evidence_details_are_stored_as_null(sqlite_url: str) -> None:
    services = build_services(Settings(database_url=sqlite_url))
    try:
        detection = services.detection
        assert detection is not None and services.anomalies is not None
        detection._enqueue(
            [_finding("adyen", time.time(), limit=float("inf"), nested=[float("nan"), 1.5])]
        )
        assert detection.write_step() == 1
        (record,) = services.anomalies.list_anomalies(AnomalyQuery()).items
        assert record.evidence["details"] == {"limit": None, "nested": [None, 1.5]}
    finally:
        services.close()
