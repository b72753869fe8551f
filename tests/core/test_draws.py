"""The posterior draws table: win shares, Thompson propensities, penalties, determinism."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apos.core.routing import Candidates, EpsilonGreedy, PosteriorDraws, ThompsonSampling
from apos.core.stats import beta_logit_moments


def exact_win_shares(a: list[float], b: list[float], penalties: list[float]) -> list[float]:
    draws = np.random.default_rng(0).beta(a, b, size=(200_000, len(a))) - np.array(penalties)
    return (np.bincount(draws.argmax(axis=1), minlength=len(a)) / len(draws)).tolist()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([30.0, 25.0], [10.0, 15.0]),
        ([90.0, 45.0, 8.0], [10.0, 5.0, 2.0]),
        ([5.0, 3.0, 50.0, 1.0, 1.0], [2.0, 1.0, 20.0, 1.0, 1.0]),
        ([400.0, 380.0], [40.0, 45.0]),
    ],
)
def test_win_shares_estimate_the_probability_of_being_best(a: list[float], b: list[float]) -> None:
    _, shares = PosteriorDraws(256, seed=3).win_table(a, b, None)
    assert sum(shares) == pytest.approx(1.0)
    assert shares == pytest.approx(exact_win_shares(a, b, [0.0] * len(a)), abs=0.06)


def test_penalties_are_subtracted_from_sampled_success_rates() -> None:
    a, b = [90.0, 85.0], [10.0, 15.0]  # 0.90 vs 0.85
    penalties = [0.1, 0.0]  # the better one is slow
    _, shares = PosteriorDraws(256, seed=3).win_table(a, b, penalties)
    assert shares == pytest.approx(exact_win_shares(a, b, penalties), abs=0.06)
    assert shares[1] > 0.8


def test_the_table_is_fixed_by_the_seed_and_grows_without_changing() -> None:
    a, b = [10.0, 12.0, 9.0], [3.0, 4.0, 3.0]
    small = PosteriorDraws(64, seed=5)
    winners, shares = small.win_table(a, b, None)
    small.win_table([1.0] * 12, [1.0] * 12, None)  # grows to 12 slots
    again_winners, again_shares = small.win_table(a, b, None)
    fresh_winners, _ = PosteriorDraws(64, seed=5).win_table(a, b, None)
    assert again_shares == shares
    assert winners.tolist() == again_winners.tolist() == fresh_winners.tolist()
    other, _ = PosteriorDraws(64, seed=6).win_table(a, b, None)
    assert other.tolist() != winners.tolist()


def test_odd_draw_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        PosteriorDraws(255, seed=1)


def test_thompson_propensity_is_the_share_and_the_empirical_frequency() -> None:
    winners, shares = PosteriorDraws(256, seed=1).win_table([40, 35, 30], [10, 10, 10], None)
    candidates = Candidates(["a", "b", "c"], [0.8, 0.78, 0.75], shares, winners, 0)
    rng = random.Random(9)
    picks = [ThompsonSampling().choose(candidates, rng) for _ in range(20_000)]
    for index, propensity in picks[:50]:
        assert propensity == shares[index]
    for index in range(3):
        frequency = sum(1 for i, _ in picks if i == index) / len(picks)
        assert frequency == pytest.approx(shares[index], abs=0.015)


def test_epsilon_greedy_propensities_are_exact() -> None:
    candidates = Candidates(["a", "b", "c", "d"], [0.9, 0.8, 0.7, 0.6], [1, 0, 0, 0], None, 0)
    policy = EpsilonGreedy(epsilon=0.2)
    rng = random.Random(4)
    picks = [policy.choose(candidates, rng) for _ in range(40_000)]
    assert all(p == pytest.approx(0.8 + 0.2 / 4) for i, p in picks if i == 0)
    assert all(p == pytest.approx(0.2 / 4) for i, p in picks if i != 0)
    assert sum(1 for i, _ in picks if i == 0) / len(picks) == pytest.approx(0.85, abs=0.01)
    with pytest.raises(ValueError):
        EpsilonGreedy(epsilon=1.5)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.05, 1e5), st.floats(0.05, 1e5), st.floats(0.0, 0.3)),
        min_size=2,
        max_size=6,
    ),
    st.booleans(),
)
def test_the_fast_table_matches_the_reference_moments(
    arms: list[tuple[float, float, float]], penalised: bool
) -> None:
    a = [x for x, _, _ in arms]
    b = [y for _, y, _ in arms]
    penalties = [c for _, _, c in arms] if penalised else None
    table = PosteriorDraws(64, seed=2)
    winners, _ = table.win_table(a, b, penalties)
    moments = [beta_logit_moments(x, y) for x, y in zip(a, b, strict=True)]
    logits = table._z[: len(a)] * np.sqrt([[v] for _, v in moments]) + [[m] for m, _ in moments]
    scores = 1.0 / (1.0 + np.exp(-logits)) - (np.array(penalties)[:, None] if penalised else 0.0)
    reference = scores.argmax(axis=0)
    # Equal up to float ties between connectors with (nearly) identical scores.
    top = scores.max(axis=0)
    chosen = scores[winners, np.arange(scores.shape[1])]
    assert np.allclose(chosen, top, rtol=0, atol=1e-9) or (winners == reference).all()
