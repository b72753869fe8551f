"""SuccessRateDetector: Bernoulli CUSUM against the entity's own decayed success rate."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from apos.core.detect.config import SuccessRateConfig
from apos.core.detect.findings import AnomalyType, Severity
from apos.core.detect.success_rate import SuccessRateDetector
from apos.core.events import PaymentEvent, PaymentStatus
from tests.core.detect_streams import openings
from tests.core.interval_streams import T0, clearings, drive, traffic

START = T0 + 8 * 3600.0  # 08:00 UTC, traffic rising


def outcome(
    n: int,
    ts: float,
    ok: bool,
    connector: str = "adyen",
    code: str | None = None,
    status: PaymentStatus | None = None,
) -> PaymentEvent:
    return PaymentEvent.model_construct(
        event_id=f"e{n}",
        payment_id=f"p{n}",
        merchant_id="m_shop",
        connector=connector,
        payment_method="card",
        amount=1000,
        currency="EUR",
        status=status or (PaymentStatus.SUCCEEDED if ok else PaymentStatus.FAILED),
        error_code=None if ok else (code or "do_not_honor"),
        occurred_at=datetime.fromtimestamp(ts, UTC),
    )


def baseline_hour(detector: SuccessRateDetector, per_min: int = 100, rate: float = 0.97) -> float:
    """An hour at ``rate`` (deterministic pattern), evaluated every minute; returns the time."""
    now = START
    failures_per_100 = round((1 - rate) * 100)
    for minute in range(60):
        for i in range(per_min):
            detector.learn_one(outcome(i, now, i % 100 >= failures_per_100), now)
        now += 60.0
        assert detector.evaluate(now) == []
    return now


def test_a_zero_of_three_minute_is_not_an_outage_but_900_of_1000_is() -> None:
    detector = SuccessRateDetector()
    now = baseline_hour(detector)
    for i in range(3):
        detector.learn_one(outcome(i, now, ok=False), now)
    now += 60.0
    assert detector.evaluate(now) == []  # 0/3
    for i in range(1000):
        detector.learn_one(outcome(i, now, ok=i % 10 != 0), now)
    now += 60.0
    findings = detector.evaluate(now)
    assert [f.entity.key for f in findings] == ["c=adyen"]  # children held back
    finding = findings[0]
    assert finding.anomaly_type is AnomalyType.HIGH_FAILURE_RATE
    assert abs(finding.evidence.baseline - 0.97) < 0.005
    # the 5-minute evidence window: three baseline minutes, the 0/3 minute, the 900/1,000
    assert finding.evidence.samples == 300 + 3 + 1000
    assert finding.evidence.details["successes"] == 291 + 900
    assert abs(finding.evidence.observed - 1191 / 1303) < 1e-9
    assert finding.severity is Severity.CRITICAL
    assert 0.9 <= finding.score <= 1.0


def test_only_final_outcomes_count() -> None:
    detector = SuccessRateDetector()
    now = baseline_hour(detector)
    for i in range(500):  # a flood of pending and requires_action events
        status = PaymentStatus.PENDING if i % 2 else PaymentStatus.REQUIRES_ACTION
        detector.learn_one(outcome(i, now, ok=False, status=status), now)
    assert detector.evaluate(now + 60.0) == []


def test_evidence_separates_connector_errors_from_issuer_declines() -> None:
    detector = SuccessRateDetector(connector_error_codes=("timeout",))
    now = baseline_hour(detector)
    for i in range(300):
        code = "timeout" if i % 3 == 0 else "insufficient_funds"
        detector.learn_one(outcome(i, now, ok=i % 2 == 0, code=code), now)
    [finding] = detector.evaluate(now + 60.0)
    details = finding.evidence.details
    # every failure counts against the success rate; a third of them were timeouts
    assert details["failures"] == 150 + 4 * 3  # the 5-minute window: 150 now, 3 % of 4 minutes
    assert details["connector_errors"] == len([i for i in range(300) if i % 2 and i % 3 == 0])
    assert details["connector_errors"] + details["other_failures"] == details["failures"]


def test_outage_of_a_five_percent_connector_is_flagged_within_a_minute_and_clears() -> None:
    outage = (START + 3 * 3600.0, START + 3 * 3600.0 + 1200.0)

    def success(t: float, connector: str) -> float:
        return 0.0 if connector == "worldpay" and outage[0] <= t < outage[1] else 0.92

    events = traffic(1, START, 4.5 * 3600.0, 1000.0, success=success)
    findings = drive(SuccessRateDetector(), events)
    opened = openings(findings)
    assert [f.entity.key for f in opened] == ["c=worldpay"]
    assert opened[0].at - outage[0] <= 60.0
    assert outage[0] - 60.0 <= opened[0].started_at <= opened[0].at
    cleared = [f for f in clearings(findings) if f.entity.key == "c=worldpay"]
    assert len(cleared) == 1 and outage[1] < cleared[0].at < outage[1] + 900.0


def test_ten_point_drop_is_flagged_within_five_minutes() -> None:
    drop_at = START + 3 * 3600.0

    def success(t: float, connector: str) -> float:
        return 0.82 if connector == "checkout" and t >= drop_at else 0.92

    events = traffic(2, START, 3.5 * 3600.0, 1000.0, success=success)
    opened = openings(drive(SuccessRateDetector(), events))
    assert opened, "the drop was not flagged"
    assert opened[0].entity.connector == "checkout"
    assert opened[0].at - drop_at <= 300.0
    assert all(f.entity.connector == "checkout" for f in opened)


def test_stable_seasonal_traffic_stays_quiet() -> None:
    events = traffic(3, T0, 12 * 3600.0, 400.0)
    assert drive(SuccessRateDetector(), events) == []


def test_quiet_entities_are_not_tested_until_they_have_the_volume() -> None:
    detector = SuccessRateDetector(SuccessRateConfig(min_baseline=200.0))
    now = START
    for minute in range(30):  # 3 outcomes a minute: 90 in all, below min_baseline
        for i in range(3):
            detector.learn_one(outcome(i, now, ok=minute < 20), now)
        now += 60.0
        assert detector.evaluate(now) == []


def test_snapshot_restore_continues_identically() -> None:
    outage_at = START + 2 * 3600.0

    def success(t: float, connector: str) -> float:
        return 0.3 if connector == "stripe" and t >= outage_at else 0.92

    events = traffic(4, START, 2.5 * 3600.0, 600.0, success=success)
    cut = next(i for i, e in enumerate(events) if e.occurred_ts >= outage_at - 60.0)
    original = SuccessRateDetector()
    drive(original, events[:cut])
    copy = SuccessRateDetector.from_dict(orjson.loads(orjson.dumps(original.to_dict())))
    assert copy.to_dict() == original.to_dict()
    rest_original = drive(original, events[cut:])
    rest_copy = drive(copy, events[cut:])
    assert rest_original == rest_copy
    assert any(f.entity.connector == "stripe" for f in rest_original)
