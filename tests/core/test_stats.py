"""Event-time estimators, intervals and the logit-normal approximation."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apos.core.stats import (
    DecayedBeta,
    DecayedMean,
    EventTimeStatistic,
    beta_logit_moments,
    decay_factor,
    digamma,
    newcombe_difference_interval,
    trigamma,
    wilson_interval,
)


def test_decay_halves_the_weight_after_one_half_life() -> None:
    sr = DecayedBeta(half_life_s=3600)
    for _ in range(10):
        sr.update(1, now=0)
        sr.update(0, now=0)
    assert sr.counts(now=3600) == pytest.approx((5.0, 5.0))
    assert sr.counts(now=7200) == pytest.approx((2.5, 2.5))
    assert sr.evidence(now=3600 * 10) == pytest.approx(20 / 1024)


def test_recent_outcomes_outweigh_old_ones() -> None:
    sr = DecayedBeta(half_life_s=60)
    for _ in range(100):
        sr.update(1, now=0)
    for _ in range(100):
        sr.update(0, now=600)  # ten half-lives later
    assert sr.get(now=600) == pytest.approx((1 + 100 / 1024) / (2 + 100 + 100 / 1024))


def test_reading_in_the_past_does_not_inflate_counts() -> None:
    sr = DecayedBeta(half_life_s=60).update(1, now=100)
    assert sr.counts(now=0) == (1.0, 0.0)
    assert decay_factor(-10, 60) == 1.0


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 50_000, allow_nan=False), st.booleans()), min_size=1, max_size=40
    ),
    st.randoms(use_true_random=False),
)
def test_decayed_beta_does_not_depend_on_arrival_order(
    outcomes: list[tuple[float, bool]], shuffle: random.Random
) -> None:
    in_order = DecayedBeta(half_life_s=3600)
    for ts, ok in sorted(outcomes):
        in_order.update(ok, now=ts)
    shuffled = list(outcomes)
    shuffle.shuffle(shuffled)
    late = DecayedBeta(half_life_s=3600)
    for ts, ok in shuffled:
        late.update(ok, now=ts)
    now = max(ts for ts, _ in outcomes) + 1.0
    assert late.counts(now) == pytest.approx(in_order.counts(now), rel=1e-9, abs=1e-12)


def test_decayed_mean_weighs_by_event_time_not_count() -> None:
    latency = DecayedMean(half_life_s=60)
    for _ in range(1000):
        latency.update(100.0, now=0)
    latency.update(1000.0, now=600)  # 1000 old values now weigh ~1 together
    assert 450 < latency.get(now=600) < 560
    assert latency.evidence(now=600) == pytest.approx(1 + 1000 / 1024)


def test_estimators_follow_the_event_time_protocol() -> None:
    assert isinstance(DecayedBeta(60), EventTimeStatistic)
    assert isinstance(DecayedMean(60), EventTimeStatistic)


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        DecayedBeta(half_life_s=0)
    with pytest.raises(ValueError):
        DecayedBeta(half_life_s=1, prior_a=0)
    with pytest.raises(ValueError):
        DecayedMean(half_life_s=-1)


@pytest.mark.parametrize(
    ("successes", "attempts", "low", "high"),
    [  # Newcombe (1998), Table I
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(
    successes: int, attempts: int, low: float, high: float
) -> None:
    got = wilson_interval(successes, attempts)
    assert got == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize(
    ("a", "b", "low", "high"),
    [  # Newcombe (1998), Table II, method 10 (rate_b - rate_a)
        ((48, 80), (56, 70), 0.0524, 0.3339),
        ((3, 10), (9, 10), 0.1705, 0.8090),
        ((0, 20), (0, 10), -0.1611, 0.2775),
    ],
)
def test_newcombe_interval_matches_published_values(
    a: tuple[int, int], b: tuple[int, int], low: float, high: float
) -> None:
    got = newcombe_difference_interval(a[0], a[1], b[0], b[1])
    assert got == pytest.approx((low, high), abs=5e-5)


def test_intervals_without_data_are_uninformative() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert newcombe_difference_interval(0, 0, 5, 10) == (-1.0, 1.0)


def test_digamma_and_trigamma_match_known_values() -> None:
    euler = 0.5772156649015329
    assert digamma(1.0) == pytest.approx(-euler, abs=1e-12)
    assert digamma(0.5) == pytest.approx(-euler - 2 * math.log(2), abs=1e-12)
    assert trigamma(1.0) == pytest.approx(math.pi**2 / 6, abs=1e-12)
    assert trigamma(0.5) == pytest.approx(math.pi**2 / 2, abs=1e-11)
    with pytest.raises(ValueError):
        digamma(0.0)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.01, 1e6, allow_nan=False, allow_infinity=False),
    st.floats(0.01, 1e6, allow_nan=False, allow_infinity=False),
)
def test_fast_logit_moments_match_the_reference(a: float, b: float) -> None:
    mean, var = beta_logit_moments(a, b)
    assert mean == pytest.approx(digamma(a) - digamma(b), abs=1e-4)
    assert var == pytest.approx(trigamma(a) + trigamma(b), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(("a", "b"), [(1.0, 1.0), (9.0, 1.0), (30.0, 3.0), (0.5, 2.0)])
def test_logit_moments_are_those_of_beta_samples(a: float, b: float) -> None:
    draws = np.random.default_rng(0).beta(a, b, size=400_000)
    draws = draws[(draws > 0) & (draws < 1)]
    logits = np.log(draws) - np.log1p(-draws)
    mean, var = beta_logit_moments(a, b)
    assert float(logits.mean()) == pytest.approx(mean, abs=0.02)
    assert float(logits.var()) == pytest.approx(var, rel=0.03)
