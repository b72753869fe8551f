"""UnusualAmountDetector: extreme amounts and amount shifts per merchant and currency."""

from __future__ import annotations

import numpy as np
import pytest

from apos.core.detect.amount import AmountConfig, UnusualAmountDetector
from apos.core.detect.findings import AnomalyType
from apos.core.events import PaymentEvent

from .detect_streams import T0, fast_event, incidents, openings, per_event_cost_us, roundtrip, run

# merchant, currency, median (minor units), sigma of log amount, share of a 20x mode
MERCHANTS = (
    ("m_shop", "USD", 2_500, 0.9, 0.0),
    ("m_travel", "EUR", 18_000, 0.7, 0.03),  # a second mode: business-class tickets
    ("m_shop", "JPY", 3_000, 0.8, 0.0),  # no decimals: never compared with USD
)


def normal_stream(
    seed: int,
    hours: float,
    rate_per_s: float = 1.0,
    shift: tuple[float, float, float] | None = None,
) -> list[PaymentEvent]:
    """Poisson arrivals per merchant; log-normal amounts (with a second mode for one).
    ``shift = (start_s, end_s, factor)`` multiplies m_shop's USD amounts in that span."""
    rng = np.random.default_rng(seed)
    events: list[tuple[float, str, str, int]] = []
    duration = hours * 3600.0
    for merchant, currency, median, sigma, mode in MERCHANTS:
        n = rng.poisson(rate_per_s * duration)
        times = np.sort(rng.random(n) * duration)
        amounts = median * np.exp(sigma * rng.standard_normal(n))
        amounts = np.where(rng.random(n) < mode, amounts * 20, amounts)
        if shift is not None and (merchant, currency) == ("m_shop", "USD"):
            start, end, factor = shift
            amounts = np.where((times >= start) & (times < end), amounts * factor, amounts)
        events.extend(
            (float(t), merchant, currency, max(1, int(a)))
            for t, a in zip(times.tolist(), amounts.tolist(), strict=True)
        )
    events.sort()
    return [
        fast_event(i, T0 + t, merchant=m, amount=a, currency=c)
        for i, (t, m, c, a) in enumerate(events)
    ]


@pytest.fixture(scope="module")
def quiet_day() -> list[PaymentEvent]:
    return normal_stream(seed=7, hours=8)


def test_quiet_on_heavy_tailed_multimodal_amounts_in_three_currencies(
    quiet_day: list[PaymentEvent],
) -> None:
    detector = UnusualAmountDetector()
    assert run(detector, quiet_day) == []
    assert len(detector) == 3


def test_one_extreme_amount_opens_one_incident_held_then_cleared(
    quiet_day: list[PaymentEvent],
) -> None:
    detector = UnusualAmountDetector()
    warm = [e for e in quiet_day if e.occurred_ts < T0 + 4 * 3600]
    assert run(detector, warm) == []
    at = T0 + 4 * 3600 + 1.0
    extreme = fast_event(10**8, at, merchant="m_shop", amount=2_500 * 3_000, currency="USD")
    [found] = detector.learn_one(extreme, at)
    assert found.anomaly_type is AnomalyType.UNUSUAL_AMOUNT
    assert found.entity.merchant_id == "m_shop"
    assert found.entity.segment == "currency=USD"
    assert found.evidence.details["z"] >= detector.config.z_threshold
    assert found.evidence.observed == 2_500 * 3_000
    assert 1_500 < found.evidence.baseline < 4_000  # the merchant's median, not the outlier
    # A second extreme amount while open joins the incident instead of opening another.
    assert detector.learn_one(extreme.model_copy(update={"event_id": "x2"}), at + 5) == []
    rest = [e for e in quiet_day if e.occurred_ts >= at]
    later = run(detector, rest)
    usd = incidents(later)["UnusualAmount|m=m_shop|s=currency=USD"]
    assert [f.active for f in usd][-1] is False and sum(not f.active for f in usd) == 1
    assert all(f.active for f in usd[:-1])
    cleared_at = usd[-1].at
    assert at + detector.config.hold_s <= cleared_at <= at + detector.config.hold_s + 120
    assert usd[0].evidence.details["extreme_amounts"] == 2
    assert set(incidents(later)) == {"UnusualAmount|m=m_shop|s=currency=USD"}


def test_a_small_amount_within_a_common_low_mode_is_not_extreme() -> None:
    detector = UnusualAmountDetector(AmountConfig(min_samples=100))
    rng = np.random.default_rng(3)
    events = []
    for i in range(3_000):
        zero_auth = rng.random() < 0.03  # card checks of 0: 3% of the traffic
        amount = 0 if zero_auth else int(5_000 * np.exp(0.3 * rng.standard_normal()))
        events.append(fast_event(i, T0 + i, amount=amount))
    assert run(detector, events) == []


def test_amount_shift_is_one_incident_flagged_quickly_and_cleared_when_it_ends() -> None:
    start, end = 4 * 3600.0, 4.5 * 3600.0
    stream = normal_stream(seed=11, hours=6, shift=(start, end, 3.0))
    detector = UnusualAmountDetector()
    findings = run(detector, stream)
    by_key = incidents(findings)
    assert set(by_key) == {"UnusualAmount|m=m_shop|s=currency=USD"}
    usd = by_key["UnusualAmount|m=m_shop|s=currency=USD"]
    assert len(openings(findings)) == 1
    assert sum(not f.active for f in usd) == 1 and not usd[-1].active
    first = usd[0]
    assert first.evidence.details["rule"] == "amount_shift"
    assert first.evidence.details["side"] == "high"
    assert first.evidence.observed >= 2 * first.evidence.baseline
    detected_after = first.at - (T0 + start)
    assert 0 < detected_after <= 300, detected_after
    assert T0 + start - 120 <= first.started_at <= first.at
    cleared_after_end = usd[-1].at - (T0 + end)
    assert 0 < cleared_after_end <= detector.config.window_s + 120, cleared_after_end
    print(
        f"\namount shift x3: flagged {detected_after:.0f}s after it began, "
        f"cleared {cleared_after_end:.0f}s after it ended"
    )


def test_memory_is_bounded_by_the_key_cap_and_the_histogram_range() -> None:
    config = AmountConfig(max_keys=50, min_samples=20)
    detector = UnusualAmountDetector(config)
    rng = np.random.default_rng(5)
    events = [
        fast_event(i, T0 + i * 0.1, merchant=f"m_{i % 500}", amount=int(rng.integers(0, 10**15)))
        for i in range(20_000)
    ]
    run(detector, events)
    assert len(detector) == 50
    state = detector.to_dict()
    assert all(len(k["hist"]["bins"]) <= 692 for k in state["keys"])
    buckets = config.window_s / config.bucket_s + 1
    assert all(len(k["window"]) <= buckets for k in state["keys"])


def test_snapshot_and_restore_continue_identically() -> None:
    start, end = 3 * 3600.0, 3.5 * 3600.0
    stream = normal_stream(seed=13, hours=5, shift=(start, end, 0.3))
    cut = len(stream) // 2 + 17
    original = UnusualAmountDetector()
    head = run(original, stream[:cut])
    restored = roundtrip(original)
    tail_a = run(original, stream[cut:])
    tail_b = run(restored, stream[cut:])
    assert [f.to_dict() for f in tail_a] == [f.to_dict() for f in tail_b]
    assert any(f.evidence.details.get("side") == "low" for f in head + tail_a)
    assert original.to_dict() == restored.to_dict()


def test_from_config_names_a_wrong_key() -> None:
    assert UnusualAmountDetector.from_config({"window_s": 300}).config.window_s == 300.0
    with pytest.raises(ValueError, match=r"amount\.windw_s: unknown key"):
        UnusualAmountDetector.from_config({"windw_s": 300})
    with pytest.raises(ValueError, match=r"amount\.severity"):
        UnusualAmountDetector.from_config({"severity": "loud"})


def test_per_event_cost(quiet_day: list[PaymentEvent]) -> None:
    detector = UnusualAmountDetector()
    cost = per_event_cost_us(detector.learn_one, quiet_day)
    print(f"\nUnusualAmountDetector.learn_one: {cost:.2f} us/event over {len(quiet_day)} events")
