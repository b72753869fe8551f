"""The ground truth: segment rates, and what each kind of timed event does to it, in time."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apos.sim.scenario import Scenario, parse_scenario
from apos.sim.stream import build_stream
from apos.sim.truth import DOWN_ERROR, DOWN_TIMEOUT, Truth
from tests.sim.conftest import tiny_doc

H = 3600.0


def _with_events(*events: dict[str, object]) -> Scenario:
    return parse_scenario(tiny_doc(events=list(events)))


def test_base_and_segment_rates(tiny: Scenario) -> None:
    truth = Truth(tiny)
    assert truth.probability("a", 0.0, issuer_country="US") == pytest.approx(0.9)
    assert truth.probability("a", 0.0, issuer_country="BR") == pytest.approx(0.6)
    assert truth.probability("b", 0.0, issuer_country="BR") == pytest.approx(0.85)
    assert truth.probability("b", 0.0, issuer_country="US") == pytest.approx(0.8)


def test_segment_rates_combine_in_log_odds() -> None:
    doc = tiny_doc(events=[])
    doc["connectors"][0]["segment_rates"] = {
        "issuer_country": {"BR": 0.6},
        "card_network": {"mastercard": 0.95},
    }
    truth = Truth(parse_scenario(doc))

    def logit(p: float) -> float:
        return math.log(p / (1 - p))

    expected = 1 / (1 + math.exp(-(logit(0.6) + logit(0.95) - logit(0.9))))
    got = truth.probability("a", 0.0, issuer_country="BR", card_network="mastercard")
    assert got == pytest.approx(expected)


def test_outage_sets_p_to_zero_only_during_its_window(tiny: Scenario) -> None:
    truth = Truth(tiny)
    for offset, expected in [
        (0.0, 0.9),
        (H - 1, 0.9),
        (H, 0.0),
        (1.5 * H, 0.0),
        (2 * H - 0.001, 0.0),
        (2 * H, 0.9),
        (3 * H, 0.9),
    ]:
        assert truth.probability("a", offset, issuer_country="US") == pytest.approx(expected)
        assert truth.probability("b", offset, issuer_country="US") == pytest.approx(0.8)
    seg = truth.segments([{"issuer_country": "US"}] * 3)
    sample = truth.evaluate(np.array([0.5 * H, 1.5 * H, 2.5 * H]), seg)
    assert sample.down[:, 0].tolist() == [0, DOWN_TIMEOUT, 0]


def test_outage_limited_to_a_segment() -> None:
    truth = Truth(
        _with_events(
            {
                "kind": "outage",
                "connector": "a",
                "start": "1h",
                "end": "2h",
                "failure": "error",
                "where": {"card_network": "visa"},
            }
        )
    )
    assert truth.probability("a", 1.5 * H, card_network="visa") == 0.0
    assert truth.probability(
        "a", 1.5 * H, card_network="mastercard", issuer_country="US"
    ) == pytest.approx(0.9)
    seg = truth.segments([{"card_network": "visa"}])
    assert truth.evaluate(np.array([1.5 * H]), seg).down[0, 0] == DOWN_ERROR


def test_degradation_ramps_holds_and_recovers() -> None:
    truth = Truth(
        _with_events(
            {
                "kind": "degradation",
                "connector": "a",
                "start": "1h",
                "end": "3h",
                "ramp": "1h",
                "recovery_ramp": "30m",
                "success_rate_factor": 0.5,
                "latency_factor": 3.0,
            }
        )
    )

    def p(offset: float) -> float:
        return truth.probability("a", offset, issuer_country="US")

    assert p(0.5 * H) == pytest.approx(0.9)
    assert p(1.5 * H) == pytest.approx(0.9 * 0.75)  # half-way up the ramp
    assert p(2.5 * H) == pytest.approx(0.45)  # held
    assert p(3.25 * H) == pytest.approx(0.9 * 0.75)  # half-way through the recovery
    assert p(3.5 * H) == pytest.approx(0.9)  # recovered
    seg = truth.segments([{}])
    assert truth.evaluate(np.array([2.5 * H]), seg).latency_factor[0, 0] == pytest.approx(3.0)


def test_permanent_drift_has_no_end() -> None:
    truth = Truth(
        _with_events(
            {
                "kind": "degradation",
                "connector": "b",
                "start": "1h",
                "ramp": "2h",
                "success_rate_factor": 0.5,
            }
        )
    )
    assert truth.probability("b", 2 * H, issuer_country="US") == pytest.approx(0.6)
    assert truth.probability("b", 3.9 * H, issuer_country="US") == pytest.approx(0.4)


def test_flapping_alternates_down_and_up() -> None:
    truth = Truth(
        _with_events(
            {
                "kind": "flapping",
                "connector": "a",
                "start": "1h",
                "end": "2h",
                "down": "5m",
                "up": "10m",
            }
        )
    )

    def p(minutes: float) -> float:
        return truth.probability("a", H + minutes * 60, issuer_country="US")

    assert [p(m) for m in (0, 4.9, 5, 14.9, 15, 19.9, 20)] == pytest.approx(
        [0.0, 0.0, 0.9, 0.9, 0.0, 0.0, 0.9]
    )
    assert p(61) == pytest.approx(0.9)  # over
    incident = truth.incidents()[0]
    assert incident.down_windows[:2] == ((H, H + 300), (H + 900, H + 1200))
    assert len(incident.down_windows) == 4


def test_new_connector_is_ineligible_before_it_appears() -> None:
    doc = tiny_doc(events=[{"kind": "connector_added", "connector": "b", "at": "2h"}])
    truth = Truth(parse_scenario(doc))
    assert truth.probability("b", 1.9 * H, issuer_country="US") == 0.0
    assert truth.probability("b", 2 * H, issuer_country="US") == pytest.approx(0.8)
    stream = build_stream(parse_scenario(doc), seed=1, payments=2000)
    offsets = stream.times - stream.scenario.traffic.start
    assert not stream.eligible[offsets < 2 * H, 1].any()
    assert stream.eligible[offsets >= 2 * H, 1].all()
    early = stream.payments(0, 5)
    assert all(p.eligible_connectors == ("a",) for p in early)


def test_supports_restricts_eligibility() -> None:
    doc = tiny_doc(events=[])
    doc["connectors"][1]["supports"] = {"card_network": ["visa"]}
    truth = Truth(parse_scenario(doc))
    assert truth.probability("b", 0.0, card_network="mastercard") == 0.0
    assert truth.probability("b", 0.0, card_network="visa") > 0


def test_active_incidents(tiny: Scenario) -> None:
    truth = Truth(tiny)
    assert truth.active_incidents(0.5 * H) == []
    assert [i.label for i in truth.active_incidents(1.5 * H)] == ["a outage"]


@given(
    offset=st.floats(0, 4 * H),
    country=st.sampled_from(["US", "BR"]),
    network=st.sampled_from(["visa", "mastercard"]),
)
def test_truth_is_a_pure_function_of_time_and_segment(
    offset: float, country: str, network: str
) -> None:
    scenario = _with_events(
        {
            "kind": "flapping",
            "connector": "a",
            "start": "30m",
            "end": "3h",
            "down": "7m",
            "up": "13m",
        },
        {
            "kind": "degradation",
            "connector": "b",
            "start": "1h",
            "ramp": "1h",
            "success_rate_factor": 0.7,
        },
    )
    first, second = Truth(scenario), Truth(scenario)
    for c in ("a", "b"):
        p1 = first.probability(c, offset, issuer_country=country, card_network=network)
        p2 = second.probability(c, offset, issuer_country=country, card_network=network)
        assert p1 == p2
        assert 0.0 <= p1 <= 1.0
