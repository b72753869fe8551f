"""LatencyDetector (exceedance CUSUM over the baseline p95) and its quantile sketch."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from apos.core.detect.findings import AnomalyType
from apos.core.detect.latency import LatencyDetector
from apos.core.detect.quantiles import LogHistogram
from tests.core.detect_streams import openings
from tests.core.interval_streams import T0, clearings, drive, traffic

START = T0 + 8 * 3600.0


@pytest.mark.parametrize("seed", [1, 2])
def test_sketch_quantiles_are_within_relative_accuracy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.lognormal(5.5, 0.8, size=20_000)
    sketch = LogHistogram(0.01)
    sketch.add_many(values.tolist())
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = float(np.quantile(values, q, method="lower"))
        assert abs(sketch.quantile(q) - exact) / exact <= 0.0101


def test_merged_sketches_equal_one_sketch_of_everything() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.lognormal(5, 0.5, size=1000).tolist() for _ in range(5)]
    whole = LogHistogram(0.01)
    whole.add_many([x for part in parts for x in part])
    merged = LogHistogram(0.01)
    for part in parts:
        sketch = LogHistogram(0.01)
        sketch.add_many(part)
        merged.merge(LogHistogram.from_dict(orjson.loads(orjson.dumps(sketch.to_dict()))))
    assert merged.to_dict() == whole.to_dict()


def test_a_doubled_latency_is_flagged_quickly_and_clears() -> None:
    slow = (START + 3 * 3600.0, START + 3 * 3600.0 + 1800.0)

    def factor(t: float, connector: str) -> float:
        return 2.0 if connector == "stripe" and slow[0] <= t < slow[1] else 1.0

    events = traffic(5, START, 4.5 * 3600.0, 600.0, latency_factor=factor)
    findings = drive(LatencyDetector(), events)
    opened = openings(findings)
    assert [f.entity.key for f in opened] == ["c=stripe"]
    first = opened[0]
    assert first.anomaly_type is AnomalyType.LATENCY_INCREASE
    assert first.at - slow[0] <= 120.0
    assert first.evidence.observed > 1.2 * first.evidence.baseline  # a window half slow
    assert [f.entity.key for f in clearings(findings)] == ["c=stripe"]
    assert slow[1] < clearings(findings)[0].at < slow[1] + 900.0


def test_stable_traffic_stays_quiet() -> None:
    events = traffic(6, T0, 12 * 3600.0, 400.0)
    assert drive(LatencyDetector(), events) == []


def test_snapshot_restore_continues_identically() -> None:
    slow_at = START + 2 * 3600.0

    def factor(t: float, connector: str) -> float:
        return 3.0 if connector == "adyen" and t >= slow_at else 1.0

    events = traffic(7, START, 2.5 * 3600.0, 400.0, latency_factor=factor)
    cut = next(i for i, e in enumerate(events) if e.occurred_ts >= slow_at - 30.0)
    original = LatencyDetector()
    drive(original, events[:cut])
    copy = LatencyDetector.from_dict(orjson.loads(orjson.dumps(original.to_dict())))
    assert copy.to_dict() == original.to_dict()
    rest = drive(original, events[cut:])
    assert rest == drive(copy, events[cut:])
    assert any(f.entity.connector == "adyen" for f in rest)
