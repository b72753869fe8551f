"""A/B experiments: stable split, per-arm policies and tallies, intervals, lifecycle."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from apos import Engine, PolicyConfig
from apos.core.experiments import Experiment

from .helpers import T0, exact_outcome, outcome_for, payment

RULES = PolicyConfig(policy="rules", priority=["checkout"])
THOMPSON = PolicyConfig(policy="thompson")


def test_payments_split_by_a_stable_hash_in_the_given_share() -> None:
    experiment = Experiment("exp", RULES, THOMPSON, started_at=T0, treatment_share=0.2)
    arms = Counter(experiment.arm_for(f"pay_{i}") for i in range(20_000))
    assert arms["treatment"] / 20_000 == pytest.approx(0.2, abs=0.01)
    assert {experiment.arm_for("pay_7") for _ in range(5)} == {experiment.arm_for("pay_7")}
    other = Experiment("other", RULES, THOMPSON, started_at=T0)
    agreement = sum(experiment.arm_for(f"p{i}") == other.arm_for(f"p{i}") for i in range(4000))
    assert 0.4 < agreement / 4000 < 0.6  # independent splits, not the same one


def test_the_engine_routes_each_arm_with_its_policy_and_counts_outcomes() -> None:
    engine = Engine(["stripe", "adyen", "checkout"], seed=1)
    engine.start_experiment(Experiment("exp", RULES, THOMPSON, started_at=T0, merchant_id="m1"))
    rates = {"stripe": 0.95, "adyen": 0.7, "checkout": 0.6}
    per_arm: Counter[str] = Counter()
    served: Counter[str] = Counter()  # outcomes follow each connector's rate exactly
    for i in range(3000):
        pay = payment(payment_id=f"p{i}")
        d = engine.route(pay, T0 + i)
        assert d.experiment_id == "exp" and d.experiment_arm in ("control", "treatment")
        assert d.reasons[0] == f"experiment 'exp': arm {d.experiment_arm}"
        if d.experiment_arm == "control":
            assert (d.connector, d.policy) == ("checkout", "rules")
        per_arm[d.experiment_arm] += 1
        ok = exact_outcome(served[d.connector], rates[d.connector])
        served[d.connector] += 1
        engine.observe(outcome_for(pay, d.connector, ok, T0 + i), T0 + i)
        engine.observe(outcome_for(pay, "stripe", True, T0 + i, attempt=2), T0 + i)  # a retry
        # a payment the switch routed without asking APOS: not part of either arm
        unrouted = payment(payment_id=f"q{i}")
        engine.observe(outcome_for(unrouted, "stripe", True, T0 + i, decision_id=None), T0 + i)
    result = engine.experiment_result("exp")
    assert result.control.attempts == per_arm["control"]  # first attempts only
    assert result.treatment.attempts == per_arm["treatment"]
    assert result.control.success_rate == pytest.approx(0.6, abs=0.01)
    assert result.treatment.success_rate > 0.85
    assert result.significant and result.ci_low > 0.2 and result.running
    other_merchant = engine.route(payment(merchant="m2"), T0 + 3000)
    assert other_merchant.experiment_id is None


def test_stopping_ends_the_split_and_the_counting() -> None:
    engine = Engine(["stripe", "checkout"], seed=2)
    engine.start_experiment(Experiment("exp", RULES, THOMPSON, started_at=T0))
    with pytest.raises(ValueError):
        engine.start_experiment(Experiment("exp", RULES, THOMPSON, started_at=T0))
    pay = payment()
    engine.observe(outcome_for(pay, "stripe", True, T0 + 1), T0 + 1)
    final = engine.stop_experiment("exp", now=T0 + 10)
    assert not final.running
    assert final.control.attempts + final.treatment.attempts == 1
    assert engine.route(payment(), T0 + 11).experiment_id is None
    engine.observe(outcome_for(pay, "stripe", True, T0 + 12), T0 + 12)
    assert engine.experiment_result("exp") == final
    assert [e.experiment_id for e in engine.experiments] == ["exp"]
    with pytest.raises(KeyError):
        engine.experiment_result("nope")


def test_experiments_survive_a_snapshot() -> None:
    engine = Engine(["stripe", "checkout"], seed=3)
    engine.start_experiment(Experiment("exp", RULES, THOMPSON, started_at=T0, treatment_share=0.3))
    for i in range(50):
        pay = payment(payment_id=f"p{i}")
        d = engine.route(pay, T0 + i)
        engine.observe(outcome_for(pay, d.connector, i % 2 == 0, T0 + i), T0 + i)
    restored = Engine.restore(json.loads(json.dumps(engine.snapshot())))
    assert restored.experiment_result("exp") == engine.experiment_result("exp")
    assert (
        restored.route(payment(payment_id="x"), T0 + 60).experiment_arm
        == engine.route(payment(payment_id="x"), T0 + 60).experiment_arm
    )


def test_a_treatment_share_must_leave_both_arms_traffic() -> None:
    with pytest.raises(ValueError):
        Experiment("exp", RULES, THOMPSON, started_at=T0, treatment_share=1.0)
