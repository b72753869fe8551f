"""FraudDetector: fingerprint velocity, card-testing bursts, high value for the merchant."""

from __future__ import annotations

import numpy as np
import pytest

from apos.core.detect.findings import AnomalyType, Severity
from apos.core.detect.fraud import FraudConfig, FraudDetector
from apos.core.events import PaymentEvent

from .detect_streams import T0, fast_event, incidents, openings, per_event_cost_us, roundtrip, run

MERCHANTS = ("m_shop", "m_games", "m_travel")


def normal_traffic(seed: int, hours: float, rate_per_s: float = 3.0) -> list[PaymentEvent]:
    """Customers from a large population (a few payments each), 4% declines, some small
    amounts (tips, top-ups): what a healthy day looks like."""
    rng = np.random.default_rng(seed)
    duration = hours * 3600.0
    n = int(rng.poisson(rate_per_s * duration))
    times = np.sort(rng.random(n) * duration)
    merchants = rng.integers(0, len(MERCHANTS), n)
    customers = rng.integers(0, 50_000, n)
    small = rng.random(n) < 0.15
    amounts = np.where(
        small, rng.integers(50, 500, n), 3_000 * np.exp(0.8 * rng.standard_normal(n))
    )
    failed = rng.random(n) < 0.04
    return [
        fast_event(
            i,
            T0 + t,
            merchant=MERCHANTS[m],
            amount=max(1, int(a)),
            status="failed" if f else "succeeded",
            fingerprint=f"fp_{c:08x}",
        )
        for i, (t, m, c, a, f) in enumerate(
            zip(
                times.tolist(),
                merchants.tolist(),
                customers.tolist(),
                amounts.tolist(),
                failed.tolist(),
                strict=True,
            )
        )
    ]


def card_testing(
    start_s: float, seconds: float, attempts: int, cards: int, seed: int, first_id: int
) -> list[PaymentEvent]:
    """A burst at m_games: small amounts, 90% declined, from ``cards`` fingerprints."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.random(attempts) * seconds) + start_s
    return [
        fast_event(
            first_id + i,
            T0 + t,
            merchant="m_games",
            amount=int(rng.integers(50, 300)),
            status="failed" if rng.random() < 0.9 else "succeeded",
            fingerprint=f"stolen_{int(rng.integers(0, cards)):06d}",
        )
        for i, t in enumerate(times.tolist())
    ]


@pytest.fixture(scope="module")
def quiet_day() -> list[PaymentEvent]:
    return normal_traffic(seed=21, hours=6)


def merged(*streams: list[PaymentEvent]) -> list[PaymentEvent]:
    return sorted((e for s in streams for e in s), key=lambda e: e.occurred_ts)


def test_quiet_on_normal_traffic(quiet_day: list[PaymentEvent]) -> None:
    detector = FraudDetector()
    assert run(detector, quiet_day) == []


@pytest.mark.parametrize("cards", [4, 400])
def test_card_testing_burst_is_flagged_within_a_minute_and_cleared(
    quiet_day: list[PaymentEvent], cards: int
) -> None:
    start = 3 * 3600.0
    burst = card_testing(start, 120.0, attempts=400, cards=cards, seed=cards, first_id=10**8)
    detector = FraudDetector()
    findings = run(detector, merged(quiet_day, burst), every_s=10.0)
    key = "PotentialFraud|m=m_games|s=rule=card_testing"
    testing = incidents(findings)[key]
    first = testing[0]
    assert first.severity is Severity.CRITICAL
    assert 0 < first.at - (T0 + start) <= 60, first.at - (T0 + start)
    assert first.evidence.observed >= first.evidence.details["threshold"]
    assert first.evidence.details["distinct_fingerprints"] <= cards + 5  # + background
    assert [f for f in openings(findings) if f.incident_key == key] == [first]
    assert not testing[-1].active and testing[-1].at <= T0 + start + 120 + 120
    # The velocity rule sees the few stolen cards too, and only them.
    velocity = [f for f in openings(findings) if f.evidence.details["rule"] == "velocity"]
    assert all(f.entity.segment.startswith("fingerprint=stolen_") for f in velocity)
    assert (len(velocity) > 0) == (cards == 4)


def test_velocity_counts_payments_not_events_of_one_payment() -> None:
    detector = FraudDetector(FraudConfig(velocity_threshold=5, velocity_window_s=300))
    # One payment's many events (pending, requires_action, failed, retried, succeeded).
    same = [
        fast_event(i, T0 + 10 * i, fingerprint="fp_cafe0001", payment_id="pay_x", status=s)
        for i, s in enumerate(["pending", "requires_action", "failed", "failed", "succeeded"] * 3)
    ]
    assert run(detector, same) == []
    many = [fast_event(100 + i, T0 + 200 + 20 * i, fingerprint="fp_cafe0002") for i in range(6)]
    findings = run(detector, many)
    [opened] = openings(findings)
    assert opened.anomaly_type is AnomalyType.POTENTIAL_FRAUD
    assert opened.entity.key == "m=m_shop|s=fingerprint=fp_cafe0002"
    assert opened.evidence.observed == 5 and opened.started_at == T0 + 200
    later = detector.evaluate(T0 + 2000)
    assert [(f.entity.segment, f.active) for f in later] == [("fingerprint=fp_cafe0002", False)]


def test_high_value_for_the_merchant_after_warm_up(quiet_day: list[PaymentEvent]) -> None:
    detector = FraudDetector()
    head = [e for e in quiet_day if e.occurred_ts < T0 + 3600]
    assert run(detector, head) == []
    at = T0 + 3600 + 5
    hv = fast_event(10**9, at, merchant="m_travel", amount=3_000 * 2_000, fingerprint="fp_big00001")
    [found] = detector.learn_one(hv, at)
    assert found.evidence.details["rule"] == "high_value"
    assert found.entity.key == "m=m_travel|s=rule=high_value,currency=USD"
    assert found.evidence.observed > found.evidence.baseline > 3_000
    cold = FraudDetector()
    assert cold.learn_one(hv, at) == []  # no history: nothing is "high" yet


def test_memory_is_bounded_and_idle_fingerprints_expire() -> None:
    config = FraudConfig(max_fingerprints=5_000, max_merchants=20)
    detector = FraudDetector(config)
    events = [
        fast_event(i, T0 + i * 0.01, merchant=f"m_{i % 50}", fingerprint=f"fp_{i:010d}")
        for i in range(60_000)
    ]
    run(detector, events)
    sizes = detector.sizes()
    assert sizes["fingerprints"] <= 5_000 and sizes["merchants"] <= 20
    detector.evaluate(T0 + 600 + config.velocity_window_s + 1)
    assert detector.sizes()["fingerprints"] == 0


def test_only_fingerprint_hashes_are_kept(quiet_day: list[PaymentEvent]) -> None:
    detector = FraudDetector()
    run(detector, quiet_day[:5_000])
    state = detector.to_dict()
    for _merchant, fingerprint, count, last_payment, first_at, last_at in state["velocity"]:
        assert fingerprint.startswith("fp_") and last_payment.startswith("pay_")
        assert isinstance(count, int) and first_at <= last_at  # no amounts, no card data


def test_snapshot_and_restore_continue_identically(quiet_day: list[PaymentEvent]) -> None:
    burst = card_testing(2 * 3600.0, 90.0, attempts=300, cards=6, seed=2, first_id=10**8)
    stream = merged(quiet_day, burst)
    cut = next(i for i, e in enumerate(stream) if e.occurred_ts >= T0 + 2 * 3600 + 30)
    original = FraudDetector()
    run(original, stream[:cut], every_s=10.0)
    restored = roundtrip(original)
    tail_a = run(original, stream[cut:], every_s=10.0)
    tail_b = run(restored, stream[cut:], every_s=10.0)
    assert tail_a and [f.to_dict() for f in tail_a] == [f.to_dict() for f in tail_b]
    assert original.to_dict() == restored.to_dict()


def test_from_config_names_a_wrong_key() -> None:
    assert FraudDetector.from_config({"velocity_threshold": 4}).config.velocity_threshold == 4
    with pytest.raises(ValueError, match=r"fraud\.velocity_treshold: unknown key"):
        FraudDetector.from_config({"velocity_treshold": 4})
    with pytest.raises(ValueError, match=r"fraud\.velocity_threshold: must be an integer"):
        FraudDetector.from_config({"velocity_threshold": 4.5})


def test_per_event_cost(quiet_day: list[PaymentEvent]) -> None:
    detector = FraudDetector()
    cost = per_event_cost_us(detector.learn_one, quiet_day)
    print(f"\nFraudDetector.learn_one: {cost:.2f} us/event over {len(quiet_day)} events")


def test_high_value_score_stays_in_range_when_the_line_moves_past_the_amount() -> None:
    """Regression (detect_amount_shift, seed 2): a high-value incident opened, then the
    merchant's amounts rose, the line was recomputed above twice the flagged amount, and
    the next evaluate built a finding with a negative score, which Finding refuses."""
    config = FraudConfig(high_value_min_samples=200.0, high_value_factor=3.0, refresh_s=0.0)
    detector = FraudDetector(config)
    t = T0
    for i in range(400):  # a baseline around 1,000
        t += 1.0
        run(detector, [fast_event(i, t, amount=900 + (i % 7) * 30)], every_s=10.0)
    [opened] = detector.learn_one(fast_event(10**6, t + 1, amount=20_000), t + 1)
    assert opened.evidence.details["rule"] == "high_value" and 0.5 <= opened.score <= 1.0
    for i in range(3_000):  # then amounts 50x higher: the line moves far above 20,000
        t += 1.0
        for f in run(detector, [fast_event(10**5 + i, t, amount=50_000 + (i % 7) * 900)]):
            assert 0.0 <= f.score <= 1.0
    found = detector.evaluate(t + 1)
    assert all(0.0 <= f.score <= 1.0 for f in found)


def test_one_merchants_flood_of_fingerprints_cannot_blind_velocity_for_another() -> None:
    detector = FraudDetector(
        FraudConfig(max_fingerprints=100, max_fingerprints_per_merchant=40, velocity_threshold=3)
    )
    t = T0
    for i in range(500):  # a flood of one-off fingerprints from one merchant
        detector.learn_one(fast_event(i, t, merchant="m_flood", fingerprint=f"fp_{i:06x}"), t)
    assert detector.sizes()["fingerprints_untracked"] == 460
    opened = []
    for i in range(5):  # another merchant's card used five times: still seen
        event = fast_event(1000 + i, t + i, merchant="m_shop", fingerprint="fp_cafe0001")
        opened += detector.learn_one(event, t + i)
    assert [f.entity.merchant_id for f in opened] == ["m_shop"]
    # The counts per merchant survive a snapshot.
    again = FraudDetector.from_dict(detector.to_dict())
    for i in range(500, 510):
        again.learn_one(fast_event(i, t, merchant="m_flood", fingerprint=f"fp_{i:06x}"), t)
    assert again.sizes()["fingerprints_untracked"] == 470
