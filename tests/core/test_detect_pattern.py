"""SeriesDetector: the seasonal robust z-score, on a caller's series and on event series."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apos.core.detect.findings import AnomalyType
from apos.core.detect.pattern import SeasonalBaseline, SeriesConfig, SeriesDetector
from apos.core.events import PaymentEvent

from .detect_streams import T0, fast_event, incidents, openings, per_event_cost_us, roundtrip, run


def labelled_series(seed: int, days: int = 14, step_s: float = 300.0):
    """NAB-like: a daily sine plus noise, with injected spikes and level shifts.
    Returns (times, values, labelled windows as (start index, end index))."""
    rng = np.random.default_rng(seed)
    n = int(days * 86_400 / step_s)
    t = T0 + np.arange(n) * step_s
    values = 100 + 30 * np.sin(2 * math.pi * (t % 86_400) / 86_400) + rng.normal(0, 3, n)
    windows: list[tuple[int, int]] = []
    for _ in range(12):  # spikes, after three days of learning
        i = int(rng.integers(3 * 288, n - 10))
        values[i] += float(rng.choice([-1, 1])) * float(rng.uniform(25, 40))
        windows.append((i, i + 1))
    for _ in range(3):  # level shifts lasting a few hours
        i = int(rng.integers(3 * 288, n - 80))
        length = int(rng.integers(24, 72))
        values[i : i + length] += float(rng.choice([-1, 1])) * 30
        windows.append((i, i + 6))  # the onset and the end are the changes to find
        windows.append((i + length, i + length + 6))
    return t, values, sorted(windows)


def precision_recall(scores: list[float], windows: list[tuple[int, int]], threshold: float):
    flagged = [i for i, s in enumerate(scores) if s >= threshold]
    hit = {w for w in windows for i in flagged if w[0] <= i < w[1]}
    true_flags = [i for i in flagged if any(a <= i < b + 60 for a, b in windows)]
    precision = len(true_flags) / len(flagged) if flagged else 1.0
    return precision, len(hit) / len(windows)


def test_flags_injected_spikes_and_shifts_and_is_quiet_elsewhere() -> None:
    t, values, windows = labelled_series(seed=1)
    detector = SeriesDetector()
    scores = [detector.score_one(float(a), float(b)) for a, b in zip(t, values, strict=True)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    precision, recall = precision_recall(scores, windows, 0.9999)
    print(
        f"\nseries detector on a labelled 14-day NAB-like series: "
        f"precision {precision:.2f}, recall {recall:.2f} (score >= 0.9999)"
    )
    assert recall >= 0.8 and precision >= 0.8
    # Away from any labelled window (and its adaptation), at most a handful of flags.
    far = [s for i, s in enumerate(scores) if not any(a - 2 <= i < b + 60 for a, b in windows)]
    assert sum(s >= 0.9999 for s in far) <= 3


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=5, max_size=60),
    st.integers(0, 58),
    st.floats(-1e6, 1e6, allow_nan=False),
)
def test_a_score_depends_on_earlier_points_only(values: list[float], at: int, other: float) -> None:
    at = min(at, len(values) - 2)
    changed = [*values[: at + 1], other, *values[at + 2 :]]  # a later point differs
    first = SeriesDetector(SeriesConfig(warmup=2))
    second = SeriesDetector(SeriesConfig(warmup=2))
    a = [first.score_one(60.0 * i, v) for i, v in enumerate(values)]
    b = [second.score_one(60.0 * i, v) for i, v in enumerate(changed)]
    assert a[: at + 1] == b[: at + 1]
    assert all(0.0 <= s <= 1.0 for s in a)


def test_warm_up_scores_zero_and_a_constant_series_is_quiet() -> None:
    model = SeasonalBaseline(SeriesConfig(warmup=10))
    scores = [model.score_one(60.0 * i, 42.0) for i in range(100)]
    assert scores[:10] == [0.0] * 10 and max(scores) == 0.0


def event_stream(seed: int, hours: float, outage: tuple[float, float] | None = None):
    """Two connectors, 4 and 2 final outcomes a second, 3% failures; ``outage`` makes
    adyen fail 60% of its attempts in that span."""
    rng = np.random.default_rng(seed)
    out: list[PaymentEvent] = []
    n = 0
    for connector, rate in (("adyen", 4.0), ("stripe", 2.0)):
        k = int(rng.poisson(rate * hours * 3600))
        times = np.sort(rng.random(k) * hours * 3600)
        for s in times.tolist():
            p_fail = 0.03
            if outage is not None and connector == "adyen" and outage[0] <= s < outage[1]:
                p_fail = 0.6
            status = "failed" if rng.random() < p_fail else "succeeded"
            latency = float(rng.gamma(4.0, 60.0))
            out.append(
                fast_event(n, T0 + s, connector=connector, status=status, latency_ms=latency)
            )
            n += 1
    out.sort(key=lambda e: e.occurred_ts)
    return out


@pytest.fixture(scope="module")
def quiet_events() -> list[PaymentEvent]:
    return event_stream(seed=5, hours=6)


# Every event series per connector (the class's mechanism; the Monitor's default watches
# only what no specialised detector does, see the test below).
PER_CONNECTOR = SeriesConfig(
    group_by="connector", metrics=("attempts", "failure_rate", "latency_mean_ms")
)


def test_by_default_only_series_no_specialised_detector_watches() -> None:
    """Per connector, attempts, failure rate and latency belong to the volume, success-rate
    and latency detectors: the default series is a merchant's failure rate only."""
    config = SeriesConfig()
    assert config.group_by == "merchant" and config.metrics == ("failure_rate",)
    start, end = 4 * 3600.0, 4 * 3600.0 + 600
    findings = run(SeriesDetector(), event_stream(seed=6, hours=5, outage=(start, end)), 10.0)
    assert all(f.entity.connector is None and f.entity.merchant_id for f in findings)
    assert {f.entity.segment for f in findings} <= {"metric=failure_rate"}


def test_event_series_quiet_on_normal_traffic(quiet_events: list[PaymentEvent]) -> None:
    detector = SeriesDetector(PER_CONNECTOR)
    assert run(detector, quiet_events, every_s=10.0) == []
    assert len(detector) == 2


def test_event_series_flag_a_failure_burst_as_one_incident_then_clear() -> None:
    start, end = 4 * 3600.0, 4 * 3600.0 + 600
    detector = SeriesDetector(PER_CONNECTOR)
    findings = run(detector, event_stream(seed=6, hours=5, outage=(start, end)), every_s=10.0)
    key = "UnusualPattern|c=adyen|s=metric=failure_rate"
    assert key in incidents(findings)
    [opened] = [f for f in openings(findings) if f.incident_key == key]
    assert opened.anomaly_type is AnomalyType.UNUSUAL_PATTERN
    assert opened.evidence.observed > 0.3 > opened.evidence.baseline
    assert 0 < opened.at - (T0 + start) <= 3 * 60 + 10
    assert not incidents(findings)[key][-1].active
    assert all(f.entity.connector == "adyen" for f in findings)


def test_event_series_memory_is_bounded() -> None:
    detector = SeriesDetector(SeriesConfig(group_by="merchant", max_series=10))
    events = [fast_event(i, T0 + i, merchant=f"m_{i % 40}") for i in range(4_000)]
    run(detector, events)
    assert len(detector) <= 10
    state = detector.to_dict()
    assert all(len(g["accumulators"]) <= 3 for g in state["groups"])
    assert all(
        len(w["model"]["slots"]) <= 24 for g in state["groups"] for w in g["watches"].values()
    )


def test_snapshot_and_restore_continue_identically() -> None:
    stream = event_stream(seed=8, hours=5, outage=(3 * 3600.0, 3 * 3600.0 + 900))
    cut = len(stream) * 3 // 5 + 3
    original = SeriesDetector(PER_CONNECTOR)
    for i in range(50):
        original.score_one(60.0 * i, float(i % 7))
    run(original, stream[:cut], every_s=10.0)
    restored = roundtrip(original)
    a = run(original, stream[cut:], every_s=10.0)
    b = run(restored, stream[cut:], every_s=10.0)
    assert a and [f.to_dict() for f in a] == [f.to_dict() for f in b]
    assert original.score_one(3000.0, 3.0) == restored.score_one(3000.0, 3.0)
    assert original.to_dict() == restored.to_dict()


def test_from_config_names_a_wrong_key() -> None:
    assert SeriesDetector.from_config({"metrics": ["attempts"]}).config.metrics == ("attempts",)
    with pytest.raises(ValueError, match=r"pattern\.seasn_s: unknown key"):
        SeriesDetector.from_config({"seasn_s": 3600})
    with pytest.raises(ValueError, match="unknown metrics"):
        SeriesDetector.from_config({"metrics": ["revenue"]})


def test_per_event_and_per_point_cost(quiet_events: list[PaymentEvent]) -> None:
    detector = SeriesDetector()
    cost = per_event_cost_us(detector.learn_one, quiet_events)
    t, values, _ = labelled_series(seed=2)
    import time

    start = time.perf_counter()
    for a, b in zip(t.tolist(), values.tolist(), strict=True):
        detector.score_one(a, b)
    point = (time.perf_counter() - start) / len(t) * 1e6
    print(f"\nSeriesDetector.learn_one: {cost:.2f} us/event; score_one: {point:.2f} us/point")
