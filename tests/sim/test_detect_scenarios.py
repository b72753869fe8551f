"""The incident kinds added for the detection benchmark, and its ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from apos.core.detect.findings import AnomalyType
from apos.sim.detect_bench import LABELLED, STABLE, ground_truth
from apos.sim.scenario import AmountShift, ScenarioError, VolumeDrop, load_scenario, parse_scenario
from apos.sim.stream import build_stream
from tests.sim.conftest import tiny_doc

MERCHANTS = [
    {"id": "m1", "weight": 1, "currency": "USD", "amount": {"median": 2000, "p95": 8000}},
    {"id": "m2", "weight": 1, "currency": "USD", "amount": {"median": 2000, "p95": 8000}},
]
WINDOW = {"start": "1h", "end": "2h"}


def with_events(*events: dict[str, object]) -> dict[str, object]:
    return tiny_doc(merchants=MERCHANTS, events=list(events))


def test_volume_drop_keeps_its_share_of_the_merchants_payments_in_its_window() -> None:
    plain = build_stream(parse_scenario(with_events()), seed=4)
    dropped_scenario = parse_scenario(
        with_events({"kind": "volume_drop", "merchant": "m1", "factor": 0.2, **WINDOW})
    )
    assert dropped_scenario.events == (VolumeDrop("m1", 3600.0, 7200.0, 0.2),)
    dropped = build_stream(dropped_scenario, seed=4)
    start = plain.scenario.traffic.start

    def count(stream: object, merchant: int, lo: float, hi: float) -> int:
        times = stream.times - start  # type: ignore[attr-defined]
        codes = stream.segments.codes["merchant"]  # type: ignore[attr-defined]
        return int(np.sum((codes == merchant) & (times >= lo) & (times < hi)))

    inside_before, inside_after = count(plain, 0, 3600, 7200), count(dropped, 0, 3600, 7200)
    assert 0.15 < inside_after / inside_before < 0.25
    assert count(dropped, 1, 3600, 7200) == count(plain, 1, 3600, 7200)  # m2 untouched
    assert count(dropped, 0, 0, 3600) == count(plain, 0, 0, 3600)  # before the window


def test_volume_drop_without_merchant_drops_everyone() -> None:
    scenario = parse_scenario(with_events({"kind": "volume_drop", "factor": 0.0, **WINDOW}))
    stream = build_stream(scenario, seed=5)
    offsets = stream.times - scenario.traffic.start
    assert not np.any((offsets >= 3600) & (offsets < 7200))


def test_amount_shift_multiplies_amounts_in_its_window_only() -> None:
    plain = build_stream(parse_scenario(with_events()), seed=6)
    scenario = parse_scenario(
        with_events({"kind": "amount_shift", "merchant": "m2", "factor": 10.0, **WINDOW})
    )
    assert scenario.events == (AmountShift("m2", 3600.0, 7200.0, 10.0),)
    shifted = build_stream(scenario, seed=6)
    offsets = plain.times - plain.scenario.traffic.start
    inside = (offsets >= 3600) & (offsets < 7200) & (plain.segments.codes["merchant"] == 1)
    assert np.array_equal(shifted.amount[inside], plain.amount[inside] * 10)
    assert np.array_equal(shifted.amount[~inside], plain.amount[~inside])


@pytest.mark.parametrize(
    ("event", "key"),
    [
        ({"kind": "volume_drop", "factor": 1.0, **WINDOW}, "factor"),
        ({"kind": "volume_drop", "merchant": "nobody", "factor": 0.5, **WINDOW}, "merchant"),
        ({"kind": "amount_shift", "factor": 2.0, **WINDOW}, "merchant"),
        ({"kind": "amount_shift", "merchant": "m1", "factor": 0.0, **WINDOW}, "factor"),
    ],
)
def test_bad_incident_definitions_name_the_key(event: dict[str, object], key: str) -> None:
    with pytest.raises(ScenarioError, match=rf"events\[0\]\.{key}"):
        parse_scenario(with_events(event))


def test_every_benchmark_scenario_has_its_labelled_incident() -> None:
    primaries = {
        "detect_outage": AnomalyType.HIGH_FAILURE_RATE,
        "detect_degradation": AnomalyType.HIGH_FAILURE_RATE,
        "detect_volume_drop": AnomalyType.VOLUME_DROP,
        "detect_amount_shift": AnomalyType.UNUSUAL_AMOUNT,
        "detect_card_testing": AnomalyType.POTENTIAL_FRAUD,
    }
    assert set(primaries) == set(LABELLED)
    for name, primary in primaries.items():
        scenario = load_scenario(name)
        [truth] = ground_truth(scenario)
        assert truth.primary is primary
        assert scenario.traffic.start < truth.start < truth.end <= scenario.end
    stable = load_scenario(STABLE)
    assert ground_truth(stable) == [] and stable.traffic.duration >= 86_400
