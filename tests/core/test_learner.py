"""The success-rate learner: hierarchy, shrinkage, decay, change detection, persistence."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apos.core.config import LearnerConfig
from apos.core.payment import context_path_of
from apos.core.routing.learner import ContextLearner, hierarchical_posterior, pooled_strength
from apos.core.stats import DecayedBeta

VISA = context_path_of("m1", "card", "visa", "US", 1999, "USD")
VISA_GB = context_path_of("m1", "card", "visa", "GB", 1999, "USD")
MASTERCARD = context_path_of("m1", "card", "mastercard", "US", 1999, "USD")
OTHER_MERCHANT = context_path_of("m2", "card", "visa", "US", 1999, "USD")


def mean(
    learner: ContextLearner, connector: str, path: tuple[tuple[str, ...], ...], now: float
) -> float:
    a, b, _, _ = learner.estimate([connector], path, now, False)
    return a[0] / (a[0] + b[0])


def feed(
    learner: ContextLearner, connector: str, path, rate: float, n: int, ts: float, seed: int = 0
) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    for _ in range(n):
        learner.observe(connector, path, rng.random() < rate, None, ts)


def test_one_outcome_counts_once_not_once_per_level() -> None:
    learner = ContextLearner(LearnerConfig())
    learner.observe("stripe", VISA, True, None, 0.0)
    a, b, _, evidence = learner.estimate(["stripe"], VISA, 0.0, False)
    assert (a[0], b[0]) == pytest.approx((2.0, 1.0))  # Beta(1, 1) plus one success
    assert evidence == [1.0]


def test_an_empty_context_borrows_from_its_siblings() -> None:
    learner = ContextLearner(LearnerConfig())
    feed(learner, "stripe", VISA, 0.9, 400, ts=0.0)
    # Nothing seen for mastercard: its rate is the merchant's card rate, not the 0.5 prior.
    assert mean(learner, "stripe", MASTERCARD, 0.0) == pytest.approx(0.9, abs=0.03)
    # Nor for another merchant: borrowed from m1 through the connector-wide level.
    assert mean(learner, "stripe", OTHER_MERCHANT, 0.0) == pytest.approx(0.9, abs=0.03)


def test_a_context_that_differs_keeps_its_own_rate() -> None:
    learner = ContextLearner(LearnerConfig())
    feed(learner, "stripe", VISA, 0.95, 1000, ts=0.0, seed=1)
    feed(learner, "stripe", MASTERCARD, 0.5, 1000, ts=0.0, seed=2)
    assert mean(learner, "stripe", VISA, 0.0) == pytest.approx(0.95, abs=0.02)
    assert mean(learner, "stripe", MASTERCARD, 0.0) == pytest.approx(0.5, abs=0.04)


def test_a_context_like_its_siblings_borrows_nearly_all_they_know() -> None:
    learner = ContextLearner(LearnerConfig())
    feed(learner, "stripe", VISA, 0.9, 1000, ts=0.0, seed=1)
    feed(learner, "stripe", VISA_GB, 0.9, 20, ts=0.0, seed=2)
    a, b, _, _ = learner.estimate(["stripe"], VISA_GB, 0.0, False)
    assert a[0] + b[0] > 500  # pooled: far more than its own 20 outcomes + k
    fixed = ContextLearner(LearnerConfig(pooling_prior=0.0))
    feed(fixed, "stripe", VISA, 0.9, 1000, ts=0.0, seed=1)
    feed(fixed, "stripe", VISA_GB, 0.9, 20, ts=0.0, seed=2)
    a, b, _, _ = fixed.estimate(["stripe"], VISA_GB, 0.0, False)
    assert a[0] + b[0] == pytest.approx(30.0)  # k = 10 borrowed, plus its own 20


def test_pooled_strength_is_bounded_by_what_the_siblings_know() -> None:
    assert pooled_strength(0, 0, 3.0, 1.0, 10.0, 0.8) == 4.0
    assert 10.0 <= pooled_strength(50, 0, 900, 100, 10.0, 0.8) <= 1000.0
    assert pooled_strength(50, 0, 900, 100, 10.0, 0.0) == 10.0


def test_learner_decay_halves_the_evidence_after_one_half_life() -> None:
    learner = ContextLearner(LearnerConfig(half_life_s=600))
    feed(learner, "stripe", VISA, 0.8, 100, ts=0.0)
    _, _, _, evidence = learner.estimate(["stripe"], VISA, 600.0, False)
    assert evidence[0] == pytest.approx(50.0)
    assert learner.counts("stripe", VISA[-1], 1200.0)[0] + learner.counts(
        "stripe", VISA[-1], 1200.0
    )[1] == pytest.approx(25.0)


def test_latency_is_learnt_per_context_and_backs_off_to_the_prior() -> None:
    learner = ContextLearner(LearnerConfig(prior_latency_ms=300.0))
    for _ in range(50):
        learner.observe("stripe", VISA, True, 120.0, 0.0)
    _, _, latency, _ = learner.estimate(["stripe", "adyen"], VISA, 0.0, True)
    assert latency[0] == pytest.approx((300.0 + 50 * 120.0) / 51)  # prior worth one outcome
    assert latency[1] == 300.0


_paths = [VISA, VISA_GB, MASTERCARD, OTHER_MERCHANT]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["stripe", "adyen"]),
            st.integers(0, len(_paths) - 1),
            st.booleans(),
            st.floats(0, 20_000, allow_nan=False),
        ),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from([0.0, 0.5, 0.8]),
)
def test_fast_estimate_matches_the_reference_formula(
    outcomes: list[tuple[str, int, bool, float]], pooling_prior: float
) -> None:
    config = LearnerConfig(half_life_s=3600, pooling_prior=pooling_prior, change_shift=0.0)
    learner = ContextLearner(config)
    reference: dict[tuple[str, tuple[str, ...]], DecayedBeta] = {}
    for connector, which, ok, ts in outcomes:  # in arrival order, late events included
        learner.observe(connector, _paths[which], ok, None, ts)
        for key in _paths[which]:
            reference.setdefault((connector, key), DecayedBeta(3600)).update(ok, ts)
    now = max(ts for *_, ts in outcomes) + 60.0
    for path in _paths:
        a, b, _, _ = learner.estimate(["stripe", "adyen"], path, now, False)
        for i, connector in enumerate(["stripe", "adyen"]):
            levels = [
                reference[(connector, key)].counts(now) if (connector, key) in reference else (0, 0)
                for key in path
            ]
            expected = hierarchical_posterior(
                levels,
                config.prior_success_rate,
                config.prior_strength,
                config.shrinkage_strength,
                pooling_prior,
            )
            assert (a[i], b[i]) == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_an_abrupt_drop_is_detected_and_followed_within_tens_of_outcomes() -> None:
    detecting = ContextLearner(LearnerConfig())
    discounting = ContextLearner(LearnerConfig(change_shift=0.0))
    for learner in (detecting, discounting):
        feed(learner, "stripe", VISA, 0.95, 2000, ts=0.0, seed=3)
        feed(learner, "stripe", VISA, 0.6, 60, ts=60.0, seed=4)
    changes = detecting.drain_changes()
    assert changes, "the drop went unnoticed"
    assert {c.direction for c in changes} == {"down"}
    assert changes[0].rate_before == pytest.approx(0.95, abs=0.02)
    assert mean(detecting, "stripe", VISA, 60.0) < 0.75
    assert mean(discounting, "stripe", VISA, 60.0) > 0.9  # discounting alone takes hours
    assert detecting.drain_changes() == []


def test_stationary_traffic_raises_no_change_alarm() -> None:
    learner = ContextLearner(LearnerConfig())
    rng = random.Random(11)
    paths = [VISA, VISA_GB, MASTERCARD, OTHER_MERCHANT]
    for i in range(20_000):
        learner.observe("stripe", paths[i % 4], rng.random() < 0.85, None, float(i))
    assert learner.drain_changes() == []


def evidence_at(learner: ContextLearner, path, now: float) -> float:  # type: ignore[no-untyped-def]
    s, f = learner.counts("stripe", path[-1], now)
    return s + f


def test_a_change_is_placed_in_the_context_that_changed() -> None:
    learner = ContextLearner(LearnerConfig())
    feed(learner, "stripe", VISA, 0.95, 1000, ts=0.0, seed=1)
    feed(learner, "stripe", VISA_GB, 0.95, 1000, ts=0.0, seed=2)
    feed(learner, "stripe", VISA, 0.3, 60, ts=10.0, seed=3)  # only US traffic shows the drop
    changes = learner.drain_changes()
    assert [c.context for c in changes] == [VISA[-1]]
    learner.estimate(["stripe"], VISA_GB, 10.0, False)
    assert evidence_at(learner, VISA_GB, 10.0) == pytest.approx(1000, rel=0.01)  # GB kept it


def test_a_change_in_a_coarse_context_resets_the_finer_ones_under_it() -> None:
    learner = ContextLearner(LearnerConfig())
    feed(learner, "stripe", VISA, 0.95, 1000, ts=0.0, seed=1)
    feed(learner, "stripe", VISA_GB, 0.95, 1000, ts=0.0, seed=2)
    rng = random.Random(5)
    for i in range(80):  # both countries drop: the network changed
        learner.observe("stripe", (VISA, VISA_GB)[i % 2], rng.random() < 0.3, None, 10.0)
    changes = learner.drain_changes()
    assert changes[0].context == ("card", "visa")
    assert changes[0].direction == "down"
    learner.estimate(["stripe"], VISA_GB, 10.0, False)
    assert evidence_at(learner, VISA_GB, 10.0) < 100  # cut down to the change memory


def test_rebasing_the_epoch_changes_no_estimate() -> None:
    learner = ContextLearner(LearnerConfig(half_life_s=60))
    feed(learner, "stripe", VISA, 0.8, 50, ts=0.0)
    feed(learner, "adyen", MASTERCARD, 0.7, 50, ts=30.0)
    before = learner.estimate(["stripe", "adyen"], VISA, 90.0, True)
    learner.rebase(90.0)
    after = learner.estimate(["stripe", "adyen"], VISA, 90.0, True)
    for got, expected in zip(after, before, strict=True):
        assert got == pytest.approx(expected)


def test_a_long_gap_without_ticks_neither_overflows_nor_remembers() -> None:
    learner = ContextLearner(LearnerConfig(half_life_s=1.0))
    feed(learner, "stripe", VISA, 0.0, 50, ts=0.0)
    learner.observe("stripe", VISA, True, 100.0, 1e6)  # a million half-lives later
    a, b, latency, evidence = learner.estimate(["stripe"], VISA, 1e6, True)
    assert (a[0], b[0]) == pytest.approx((2.0, 1.0))
    assert latency[0] == pytest.approx((300.0 + 100.0) / 2)  # the prior and one value
    assert evidence == [pytest.approx(1.0)]


def test_snapshot_round_trip_gives_the_same_estimates() -> None:
    learner = ContextLearner(LearnerConfig())
    feed(learner, "stripe", VISA, 0.8, 300, ts=0.0)
    feed(learner, "adyen", MASTERCARD, 0.6, 300, ts=100.0)
    copy = ContextLearner(LearnerConfig())
    copy.load(json.loads(json.dumps(learner.to_dict())))
    for path in (VISA, MASTERCARD, OTHER_MERCHANT):
        restored = copy.estimate(["stripe", "adyen"], path, 500.0, True)
        original = learner.estimate(["stripe", "adyen"], path, 500.0, True)
        for got, expected in zip(restored, original, strict=True):
            assert got == pytest.approx(expected)


def test_maintenance_drops_cells_that_decayed_to_nothing() -> None:
    learner = ContextLearner(LearnerConfig(half_life_s=60))
    feed(learner, "stripe", VISA, 0.8, 10, ts=0.0)
    feed(learner, "adyen", MASTERCARD, 0.8, 10, ts=3000.0)
    assert learner.maintain(now=3000.0) == 6  # stripe's six cells: 50 half-lives old
    assert len(learner) == 6  # adyen's path remains
    assert learner.estimate(["stripe"], VISA, 3000.0, False)[3] == [0.0]


def test_context_keys_follow_the_configured_order() -> None:
    from apos.core.payment import ContextKeys, Payment

    pay = Payment(
        "p", "m1", 250_000, "JPY", payment_method="Card", card_network="VISA", country="jp"
    )
    assert ContextKeys().path(pay)[-1] == ("card", "visa", "JP", "ge1000", "m1")
    assert ContextKeys(("issuer_country", "merchant")).path(pay) == ((), ("JP",), ("JP", "m1"))
    with pytest.raises(ValueError):
        ContextKeys(())
