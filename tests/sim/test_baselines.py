"""Baselines behave as documented; the oracle bounds everything."""

from __future__ import annotations

import numpy as np
import pytest

from apos.sim.baselines import FixedBest, RoundRobin, SlidingWindowSR
from apos.sim.runner import run_scenario
from apos.sim.scenario import Scenario, load_scenario, parse_scenario
from apos.sim.stream import build_stream
from tests.sim.conftest import tiny_doc

ALL = ("random", "round_robin", "fixed_best", "sliding_window_sr", "oracle")


@pytest.mark.parametrize("name", ["stable", "segment_best", "sudden_outage", "cold_start"])
def test_oracle_is_at_least_as_good_as_everything(name: str) -> None:
    result = run_scenario(load_scenario(name), ALL, seed=1, payments=20_000)
    oracle = result.routers["oracle"]
    assert oracle.regret == 0
    for r in result.routers.values():
        assert oracle.expected_success_rate >= r.expected_success_rate - 1e-9
        # Realised: the oracle maximises expected success, so allow a little luck.
        assert oracle.success_rate >= r.success_rate - 0.005
        assert r.regret_pp == pytest.approx((oracle.success_rate - r.success_rate) * 100)


def test_random_and_round_robin_get_the_mean_of_the_connectors() -> None:
    scenario = load_scenario("stable")
    stream = build_stream(scenario, seed=2, payments=40_000)
    mean = float(stream.p.mean())
    result = run_scenario(scenario, ("random", "round_robin"), seed=2, payments=40_000)
    for name in ("random", "round_robin"):
        r = result.routers[name]
        assert r.expected_success_rate == pytest.approx(mean, abs=0.002)
        shares = np.bincount(r.chosen, minlength=3) / r.payments
        assert shares == pytest.approx([1 / 3] * 3, abs=0.01)


def test_fixed_best_follows_the_mean_truth(tiny: Scenario) -> None:
    result = run_scenario(tiny, ("fixed_best",), seed=1)
    stream = build_stream(tiny, seed=1)
    means = stream.p.mean(axis=0)
    best = int(np.argmax(means))
    assert (result.routers["fixed_best"].chosen == best).all()


def test_fixed_best_falls_back_down_its_priority_list() -> None:
    router = FixedBest(["a", "b", "c"])
    from apos.core.payment import Payment

    pay = Payment("p", "m", 100, "USD", eligible_connectors=("c", "b"))
    assert router.route(pay, 0.0).connector == "b"
    assert router.route(Payment("p", "m", 100, "USD"), 0.0).connector == "a"


def test_round_robin_cycles() -> None:
    from apos.core.payment import Payment

    router = RoundRobin(["a", "b", "c"])
    picks = [router.route(Payment("p", "m", 1, "USD"), 0.0).connector for _ in range(6)]
    assert picks == ["b", "c", "a", "b", "c", "a"]


def test_sliding_window_tracks_the_last_outcomes_and_explores() -> None:
    from apos.core.payment import Payment

    router = SlidingWindowSR(["a", "b"], seed=1, window=10, epsilon=0.1)
    for _ in range(10):
        router.observe_outcome("a", True, 0.0)
        router.observe_outcome("b", False, 0.0)
    assert router.success_rate("a") == pytest.approx(11 / 12)
    picks = [router.route(Payment("p", "m", 1, "USD"), 0.0) for _ in range(2000)]
    assert 0.93 < sum(p.connector == "a" for p in picks) / 2000 < 0.97  # 1 - epsilon / 2
    assert 0.07 < sum(p.explored for p in picks) / 2000 < 0.13
    for _ in range(10):  # a's window fills with failures: it falls behind
        router.observe_outcome("a", False, 1.0)
    assert router.success_rate("a") == pytest.approx(1 / 12)


def test_sliding_window_leaves_a_broken_connector(tiny: Scenario) -> None:
    result = run_scenario(tiny, ("sliding_window_sr", "fixed_best"), seed=1)
    sw = result.routers["sliding_window_sr"]
    impact = sw.outages[0]
    assert impact.seconds_to_leave is not None and impact.seconds_to_leave < 600
    assert impact.routed_before_left is not None and impact.routed_before_left < 20
    fixed = result.routers["fixed_best"].outages[0]
    assert fixed.pre_share is None and fixed.routed_during == 0  # b is its fixed choice


def test_baselines_respect_eligibility() -> None:
    doc = tiny_doc(events=[{"kind": "connector_added", "connector": "a", "at": "1h"}])
    result = run_scenario(parse_scenario(doc), ALL, seed=3)
    for r in result.routers.values():
        assert r.invalid == 0
