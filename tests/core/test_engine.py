"""The engine: routing contract, fallbacks, elimination, determinism, persistence."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from apos import Decision, Engine, EngineConfig, Payment, PaymentEvent, PolicyConfig
from apos.core.breaker import BreakerState
from apos.core.config import BreakerConfig, LearnerConfig, RoutingRule

from .helpers import T0, event, exact_outcome, outcome_for, payment, pure_module

CONNECTORS = ["stripe", "adyen", "checkout"]


def warm(
    engine: Engine, rates: dict[str, float], n: int = 300, ts: float = T0, **where: object
) -> None:
    """Feed ``n`` outcomes per connector at the given success rates (deterministic).

    Failures are issuer declines, so the connectors stay healthy for the breakers.
    """
    for connector, rate in rates.items():
        for i in range(n):
            ok = exact_outcome(i, rate)
            code = None if ok else "do_not_honor"
            engine.observe(event(connector, ok, ts, error_code=code, **where), ts)  # type: ignore[arg-type]


def outage(engine: Engine, connector: str, start: float, n: int = 5, **where: object) -> None:
    """``n`` connector errors in a row."""
    for i in range(n):
        engine.observe(event(connector, False, start + i, error_code="timeout", **where), start + i)  # type: ignore[arg-type]


def test_the_contract_of_the_brief() -> None:
    engine = Engine(connectors=CONNECTORS, seed=7)
    d = engine.route(
        Payment(
            payment_id="p1",
            merchant_id="m1",
            amount=1999,
            currency="USD",
            payment_method="card",
            card_network="visa",
            country="US",
        ),
        now=T0,
    )
    assert isinstance(d, Decision)
    assert d.connector in CONNECTORS
    assert [c for c, _ in d.alternatives] == [
        d.connector,
        *[c for c in CONNECTORS if c != d.connector],
    ]
    assert 0.0 <= d.confidence <= 1.0
    assert 0.0 < d.propensity <= 1.0
    assert re.fullmatch(r"dec_[0-9a-f]{8}_[0-9a-f]{8}_[0-9a-f]{8}", d.decision_id)
    assert d.policy == "thompson" and d.model_version.startswith("thompson-")
    assert d.reasons and all(isinstance(r, str) for r in d.reasons)
    assert json.loads(json.dumps(d.to_dict()))["connector"] == d.connector


def test_cold_start_falls_back_to_the_rules_and_says_so() -> None:
    engine = Engine(
        CONNECTORS, seed=1, config=EngineConfig(default=PolicyConfig(priority=["adyen"]))
    )
    d = engine.route(payment(), T0)
    assert (d.connector, d.fallback, d.propensity) == ("adyen", True, 1.0)
    assert d.reasons[0].startswith("fallback to rules: 0.0 observations")


def test_the_learner_routes_to_the_connector_that_succeeds_most() -> None:
    engine = Engine(CONNECTORS, seed=1)
    warm(engine, {"stripe": 0.6, "adyen": 0.95, "checkout": 0.7})
    decisions = [engine.route(payment(), T0) for _ in range(200)]
    assert Counter(d.connector for d in decisions)["adyen"] >= 195
    best = decisions[0]
    assert not best.fallback and best.confidence > 0.95
    assert best.alternatives[0][0] == "adyen"
    assert [c for c, _ in best.alternatives[1:]] == ["checkout", "stripe"]  # by score


def test_thompson_propensities_sum_to_one_and_match_frequencies() -> None:
    engine = Engine(CONNECTORS, seed=2)
    warm(engine, {"stripe": 0.8, "adyen": 0.8, "checkout": 0.76}, n=40)
    propensity: dict[str, float] = {}
    counts: Counter[str] = Counter()
    n = 6000
    for _ in range(n):  # no outcome in between: the same posterior every time
        d = engine.route(payment(payment_id="same"), T0)
        propensity.setdefault(d.connector, d.propensity)
        assert propensity[d.connector] == d.propensity == d.confidence
        counts[d.connector] += 1
    assert len(propensity) == 3
    assert sum(propensity.values()) == pytest.approx(1.0)
    for connector, p in propensity.items():
        assert counts[connector] / n == pytest.approx(p, abs=4 * (p * (1 - p) / n) ** 0.5 + 1e-3)


def test_greedy_explores_with_exact_propensities() -> None:
    config = EngineConfig(default=PolicyConfig(policy="greedy", epsilon=0.3))
    engine = Engine(CONNECTORS, seed=3, config=config)
    warm(engine, {"stripe": 0.9, "adyen": 0.6, "checkout": 0.5})
    decisions = [engine.route(payment(), T0) for _ in range(3000)]
    assert {round(d.propensity, 9) for d in decisions if d.connector == "stripe"} == {0.8}
    assert {round(d.propensity, 9) for d in decisions if d.connector != "stripe"} == {0.1}
    assert all(d.explored == (d.connector != "stripe") for d in decisions)
    assert Counter(d.connector for d in decisions)["stripe"] / 3000 == pytest.approx(0.8, abs=0.03)


def test_rules_policy_follows_the_rules_with_exact_propensities() -> None:
    rules = (RoutingRule(name="split", split={"adyen": 25, "checkout": 75}),)
    engine = Engine(
        CONNECTORS, seed=4, config=EngineConfig(default=PolicyConfig(policy="rules", rules=rules))
    )
    warm(engine, {"stripe": 0.99, "adyen": 0.5, "checkout": 0.5})
    decisions = [engine.route(payment(), T0) for _ in range(4000)]
    counts = Counter(d.connector for d in decisions)
    assert counts["stripe"] == 0
    assert counts["adyen"] / 4000 == pytest.approx(0.25, abs=0.02)
    assert {d.propensity for d in decisions} == {0.25, 0.75}
    assert not any(d.fallback for d in decisions)
    assert all(d.explored for d in decisions)  # stripe is best by the learner's account


def test_low_confidence_defers_to_the_rules() -> None:
    config = EngineConfig(default=PolicyConfig(min_confidence=0.9, priority=["checkout"]))
    engine = Engine(CONNECTORS, seed=5, config=config)
    warm(engine, {"stripe": 0.8, "adyen": 0.8, "checkout": 0.8}, n=30)
    d = engine.route(payment(), T0)
    assert (d.connector, d.fallback) == ("checkout", True)
    assert "below min_confidence 0.9" in d.reasons[0]


class _BrokenLearner:
    def estimate(self, *args: object, **kwargs: object) -> None:
        raise ArithmeticError("boom")


def test_a_failing_learner_defers_to_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    # A compiled engine (make accel) only holds a real learner: swap it in the source form.
    engine = pure_module("apos.core.engine").Engine(CONNECTORS, seed=6)
    warm(engine, {"stripe": 0.5, "adyen": 0.99})
    monkeypatch.setattr(engine, "_learner", _BrokenLearner())
    d = engine.route(payment(), T0)
    assert (d.connector, d.fallback, d.confidence) == ("stripe", True, 0.0)
    assert any("learner failed (ArithmeticError)" in r for r in d.reasons)


def test_latency_and_cost_enter_the_objective() -> None:
    fast = EngineConfig(default=PolicyConfig(latency_weight=1e-3))
    engine = Engine(["stripe", "adyen"], seed=7, config=fast)
    for i in range(400):
        engine.observe(event("stripe", i % 10 != 0, T0, latency_ms=900.0), T0)
        engine.observe(event("adyen", i % 10 != 0, T0, latency_ms=100.0), T0)
    d = engine.route(payment(), T0)
    assert d.connector == "adyen"
    assert dict(d.alternatives)["stripe"] == pytest.approx(
        dict(d.alternatives)["adyen"] - 0.8, abs=0.02
    )
    cheap = EngineConfig(default=PolicyConfig(cost_weight=0.01, connector_costs={"adyen": 20.0}))
    engine.reconfigure(cheap)
    assert engine.route(payment(), T0).connector == "stripe"


def test_open_connectors_are_skipped_and_listed_last() -> None:
    engine = Engine(CONNECTORS, seed=8)
    warm(engine, {"stripe": 0.9, "adyen": 0.85, "checkout": 0.8})
    outage(engine, "stripe", T0)
    assert engine.breaker_state("stripe") is BreakerState.OPEN
    d = engine.route(payment(), T0 + 5)
    assert d.connector != "stripe"
    assert d.alternatives[-1][0] == "stripe"
    assert any("held back by open breaker: stripe" in r for r in d.reasons)


def test_elimination_can_be_turned_off_for_one_merchant() -> None:
    config = EngineConfig(merchants={"m2": {"elimination": False}})
    engine = Engine(CONNECTORS, seed=8, config=config)
    for merchant in ("m1", "m2"):
        warm(engine, {"stripe": 0.9, "adyen": 0.85, "checkout": 0.8}, merchant=merchant)
    outage(engine, "stripe", T0)
    assert engine.breaker_state("stripe") is BreakerState.OPEN
    m1 = [engine.route(payment(merchant="m1", payment_id=f"a{i}"), T0 + 5) for i in range(50)]
    m2 = [engine.route(payment(merchant="m2", payment_id=f"b{i}"), T0 + 5) for i in range(50)]
    assert "stripe" not in {d.connector for d in m1}
    assert "stripe" in {d.connector for d in m2}
    assert not any("held back" in r for d in m2 for r in d.reasons)


def test_never_zero_connectors_even_when_the_only_eligible_one_is_open() -> None:
    engine = Engine(CONNECTORS, seed=9)
    for i in range(5):
        engine.observe(event("adyen", False, T0 + i), T0 + i)
    d = engine.route(payment(eligible=("adyen",)), T0 + 5)
    assert d.connector == "adyen"
    assert d.fallback and d.propensity == 1.0
    assert "every eligible connector is open" in d.reasons[-1]


def test_when_all_are_open_the_one_due_first_for_a_probe_is_chosen() -> None:
    engine = Engine(["stripe", "adyen"], seed=10)
    for i in range(5):
        engine.observe(event("stripe", False, T0 + i), T0 + i)
    for i in range(5):
        engine.observe(event("adyen", False, T0 + 10 + i), T0 + 10 + i)
    d = engine.route(payment(), T0 + 20)
    assert d.connector == "stripe"  # opened first, so half-opens first
    assert f"(at {T0 + 4 + 30:.0f})" in d.reasons[-1]


def test_half_open_connectors_get_a_probe_share_of_traffic() -> None:
    config = EngineConfig(breaker=BreakerConfig(probe_fraction=0.2, probe_successes=1000))
    engine = Engine(CONNECTORS, seed=11, config=config)
    warm(engine, {"stripe": 0.9, "adyen": 0.9, "checkout": 0.9})
    outage(engine, "checkout", T0)
    report = engine.tick(T0 + 100)
    assert [(t.connector, t.to_state) for t in report.transitions][-1] == (
        "checkout",
        BreakerState.HALF_OPEN,
    )
    decisions = [engine.route(payment(), T0 + 100) for _ in range(3000)]
    probes = [d for d in decisions if d.connector == "checkout"]
    assert len(probes) / 3000 == pytest.approx(0.2, abs=0.025)
    assert all(d.explored and d.propensity == pytest.approx(0.2) for d in probes)
    assert all(d.propensity <= 0.8 for d in decisions if d.connector != "checkout")
    # Probe successes close it again.
    closing = EngineConfig(breaker=BreakerConfig(probe_successes=2))
    engine.reconfigure(closing)
    engine.observe(event("checkout", True, T0 + 101), T0 + 101)
    engine.observe(event("checkout", True, T0 + 102), T0 + 102)
    assert engine.breaker_state("checkout") is BreakerState.CLOSED
    assert [t.to_state for t in engine.tick(T0 + 103).transitions] == [
        BreakerState.CLOSED,
        BreakerState.CLOSED,  # the merchant breaker too
    ]


def test_issuer_declines_do_not_trip_the_breaker() -> None:
    engine = Engine(CONNECTORS, seed=12)
    for i in range(30):
        engine.observe(event("stripe", False, T0 + i, error_code="insufficient_funds"), T0 + i)
    assert engine.breaker_state("stripe") is BreakerState.CLOSED
    for i in range(5):
        engine.observe(event("stripe", False, T0 + 40 + i, error_code="timeout"), T0 + 40 + i)
    assert engine.breaker_state("stripe") is BreakerState.OPEN


def test_a_merchant_breaker_holds_back_a_connector_for_that_merchant_only() -> None:
    engine = Engine(["stripe", "adyen"], seed=13)
    warm(engine, {"stripe": 0.95, "adyen": 0.8}, merchant="m2")
    for i in range(5):
        engine.observe(event("stripe", False, T0 + i, merchant="m1"), T0 + i)
        engine.observe(event("stripe", True, T0 + i, merchant="m2"), T0 + i)
    assert engine.breaker_state("stripe", "m1", T0 + 5) is BreakerState.OPEN
    assert engine.breaker_state("stripe") is BreakerState.CLOSED
    assert engine.route(payment(merchant="m1"), T0 + 5).connector == "adyen"
    assert engine.route(payment(merchant="m2"), T0 + 5).connector == "stripe"


def test_eligible_connectors_restrict_the_choice_and_unknown_ones_are_added() -> None:
    engine = Engine(CONNECTORS, seed=14)
    warm(engine, {"stripe": 0.99, "adyen": 0.5, "checkout": 0.5})
    d = engine.route(payment(eligible=("Adyen", "paypal", "adyen")), T0)
    assert d.connector in ("adyen", "paypal")
    assert {c for c, _ in d.alternatives} == {"adyen", "paypal"}
    assert "paypal" in engine.connectors
    with pytest.raises(ValueError, match="no eligible connector"):
        engine.route(payment(eligible=()), T0)


def test_a_connector_learnt_from_one_merchant_is_never_offered_to_another() -> None:
    engine = Engine(CONNECTORS, seed=15)
    for i in range(40):  # m2's own connector account, and it is excellent
        engine.observe(event("stripe:mca_m2", True, T0 + i, merchant="m2"), T0 + i)
    engine.route(payment(merchant="m3", eligible=("adyen:mca_m3",)), T0 + 50)
    for i in range(200):
        d = engine.route(payment(merchant="m1", payment_id=f"p{i}"), T0 + 60)
        assert {d.connector, *(c for c, _ in d.alternatives)} <= set(CONNECTORS)
    d = engine.route(payment(merchant="m2"), T0 + 60)
    assert "stripe:mca_m2" in {d.connector, *(c for c, _ in d.alternatives)}
    assert engine.connectors_for("m1") == tuple(CONNECTORS)
    assert engine.connectors_for("m2") == (*CONNECTORS, "stripe:mca_m2")
    assert engine.connectors_for("m3") == (*CONNECTORS, "adyen:mca_m3")
    restored = Engine.restore(json.loads(json.dumps(engine.snapshot())))
    assert restored.connectors_for("m1") == tuple(CONNECTORS)
    assert restored.connectors_for("m2") == (*CONNECTORS, "stripe:mca_m2")


def test_observe_ignores_pending_and_tolerates_unknowns_and_missing_fields() -> None:
    engine = Engine(["stripe"], seed=15)
    engine.observe(event("stripe", True, T0, status="pending"), T0)
    engine.observe(event("stripe", True, T0, status="requires_action"), T0)
    assert engine.route(payment(), T0).reasons[0].startswith("fallback to rules: 0.0")
    engine.observe(event("Worldpay", True, T0, network=None, country=None), T0)
    assert "worldpay" in engine.connectors
    partial = PaymentEvent.model_construct(
        event_id="e", payment_id="p", merchant_id="m1", connector="stripe", status="failed"
    )  # no amount, currency, timestamp, latency...
    engine.observe(partial, T0)
    engine.observe(PaymentEvent.model_construct(event_id="e2", status="nonsense"), T0)
    engine.observe(PaymentEvent.model_construct(event_id="e3", status="failed"), T0)
    engine.observe(
        PaymentEvent.model_construct(
            event_id="e4",
            payment_id="p",
            merchant_id="m1",
            connector="stripe",
            status="succeeded",
            latency_ms=float("nan"),
            occurred_at=None,
        ),
        T0,
    )
    assert engine.route(payment(), T0).connector in engine.connectors


def test_same_seed_same_decisions_and_different_seed_different_ids() -> None:
    def run(seed: int) -> list[tuple[str, str, float, float]]:
        engine = Engine(CONNECTORS, seed=seed)
        out = []
        for i in range(300):
            pay = payment(payment_id=f"p{i}", network=("visa", "amex")[i % 2])
            d = engine.route(pay, T0 + i)
            out.append((d.decision_id, d.connector, d.propensity, d.confidence))
            engine.observe(outcome_for(pay, d.connector, (i * 7) % 10 < 8, T0 + i), T0 + i)
            engine.tick(T0 + i)
        return out

    assert run(42) == run(42)
    assert {d[0] for d in run(42)}.isdisjoint({d[0] for d in run(43)})


def test_snapshot_restores_a_warm_engine_that_continues_identically() -> None:
    engine = Engine(CONNECTORS, seed=16)
    for i in range(500):
        pay = payment(payment_id=f"p{i}")
        d = engine.route(pay, T0 + i)
        code = None if i % 3 else "do_not_honor"
        engine.observe(
            outcome_for(pay, d.connector, code is None, T0 + i, latency_ms=200.0, error_code=code),
            T0 + i,
        )
    outage(engine, "checkout", T0 + 500)
    saved = json.loads(json.dumps(engine.snapshot()))
    restored = Engine.restore(saved)
    reloaded = Engine(CONNECTORS, seed=999)
    reloaded.load_snapshot(saved)
    assert restored.breaker_state("checkout") is BreakerState.OPEN
    for i in range(50):
        pay = payment(payment_id=f"q{i}")
        a, b, c = (e.route(pay, T0 + 600 + i) for e in (engine, restored, reloaded))
        assert a.connector == b.connector == c.connector
        assert a.decision_id == b.decision_id == c.decision_id
        assert a.confidence == b.confidence
    with pytest.raises(ValueError):
        Engine.restore({"format": "something/else"})


def test_model_version_follows_the_configuration() -> None:
    base = Engine(CONNECTORS, seed=1)
    same = Engine(CONNECTORS, seed=2, config=EngineConfig())
    assert base.model_version("m1") == same.model_version("m1")
    tuned = EngineConfig(merchants={"m2": {"epsilon": 0.2}}, learner=LearnerConfig(half_life_s=60))
    engine = Engine(CONNECTORS, seed=1, config=tuned)
    assert engine.model_version("m1") != base.model_version("m1")  # the learner changed
    assert engine.model_version("m2") != engine.model_version("m1")
    assert engine.route(payment(merchant="m2"), T0).model_version == engine.model_version("m2")
    engine.reconfigure(EngineConfig())
    assert engine.model_version("m1") == base.model_version("m1")


def test_per_merchant_policies() -> None:
    config = EngineConfig(merchants={"m2": {"policy": "rules", "priority": ["checkout"]}})
    engine = Engine(CONNECTORS, seed=17, config=config)
    warm(engine, {"stripe": 0.99, "adyen": 0.5, "checkout": 0.5})
    assert engine.route(payment(merchant="m1"), T0).connector == "stripe"
    d = engine.route(payment(merchant="m2"), T0)
    assert (d.connector, d.policy, d.fallback) == ("checkout", "rules", False)


def test_tick_reports_breaker_changes_and_success_rate_changes() -> None:
    engine = Engine(["stripe", "adyen"], seed=18)
    warm(engine, {"stripe": 0.95}, n=1000)
    for i in range(300):
        engine.observe(
            event("stripe", i % 2 == 0, T0 + 1 + i, error_code="do_not_honor"), T0 + 1 + i
        )
    report = engine.tick(T0 + 400)
    assert report.transitions == ()  # issuer declines: the connector is up
    assert report.context_changes and report.context_changes[0].direction == "down"
    for i in range(5):
        engine.observe(event("adyen", False, T0 + 500 + i), T0 + 500 + i)
    report = engine.tick(T0 + 505)
    assert {(t.connector, t.merchant_id, t.to_state) for t in report.transitions} == {
        ("adyen", None, BreakerState.OPEN),
        ("adyen", "m1", BreakerState.OPEN),
    }
    assert {(b.connector, b.state) for b in report.not_closed} == {("adyen", "open")}
    assert json.loads(json.dumps(report.to_dict()))["transitions"][0]["to_state"] == "open"
    assert engine.tick(T0 + 506).transitions == ()


def test_an_engine_needs_a_connector() -> None:
    with pytest.raises(ValueError):
        Engine([], seed=1)


def test_connector_errors_after_the_breaker_opened_are_not_learnt() -> None:
    engine = Engine(["stripe", "adyen"], seed=19)
    warm(engine, {"stripe": 0.95, "adyen": 0.85})
    before = dict(engine.route(payment(), T0).alternatives)["stripe"]
    outage(engine, "stripe", T0, n=200)  # the first 5 open the breaker; 195 more time out
    after = dict(engine.route(payment(), T0 + 200).alternatives)["stripe"]
    assert before - after < 0.05  # only the five that opened it were learnt
    for i in range(3):  # it recovers: probes succeed, and it is the best again at once
        engine.observe(event("stripe", True, T0 + 400 + i), T0 + 400 + i)
    assert engine.breaker_state("stripe", "m1", T0 + 403) is BreakerState.CLOSED
    assert engine.route(payment(), T0 + 403).connector == "stripe"


def test_failures_not_identified_as_connector_errors_are_always_learnt() -> None:
    engine = Engine(["stripe", "adyen"], seed=21)
    outage(engine, "stripe", T0)  # open
    for i in range(30):  # a generic code, or none: possibly declines, so learnt
        code = "failure" if i % 2 else None
        engine.observe(event("stripe", False, T0 + 10 + i, error_code=code), T0 + 10 + i)
    a_mean = dict(engine.route(payment(), T0 + 40).alternatives)["stripe"]
    assert a_mean == pytest.approx(1 / (2 + 35), abs=0.01)  # Beta(1, 1) + 35 failures


def test_the_context_order_is_configurable_and_part_of_the_snapshot() -> None:
    merchant_first = EngineConfig(
        learner=LearnerConfig(
            context_order=("merchant", "payment_method", "card_network", "issuer_country")
        )
    )
    engine = Engine(CONNECTORS, seed=20, config=merchant_first)
    warm(engine, {"stripe": 0.6, "adyen": 0.95, "checkout": 0.6})
    assert engine.route(payment(), T0).connector == "adyen"
    saved = engine.snapshot()
    assert saved["context_order"] == [
        "merchant",
        "payment_method",
        "card_network",
        "issuer_country",
    ]
    assert Engine.restore(saved).route(payment(), T0).connector == "adyen"
    fresh = Engine.restore(saved, config=EngineConfig())  # another order: learning restarts
    assert fresh.route(payment(), T0).fallback
    with pytest.raises(ValueError):
        LearnerConfig(context_order=("merchant", "merchant"))
    with pytest.raises(ValueError):
        LearnerConfig(context_order=("bin",))


def test_reseeded_instances_diverge_but_each_restores_exactly() -> None:
    engine = Engine(CONNECTORS, seed=22)
    warm(engine, {"stripe": 0.8, "adyen": 0.8, "checkout": 0.8}, n=20)
    shared = engine.snapshot()
    a, b = Engine.restore(shared), Engine.restore(shared)
    a.reseed(1)
    b.reseed(2)
    pay = payment(payment_id="same")
    assert a.route(pay, T0).decision_id != b.route(pay, T0).decision_id
    copy = Engine.restore(json.loads(json.dumps(a.snapshot())))
    for i in range(30):
        p = payment(payment_id=f"r{i}")
        x, y = a.route(p, T0 + i), copy.route(p, T0 + i)
        assert (x.decision_id, x.connector, x.propensity) == (
            y.decision_id,
            y.connector,
            y.propensity,
        )


def test_a_snapshot_from_before_merchant_connectors_shares_only_the_configured_ones() -> None:
    engine = Engine(CONNECTORS, seed=15)
    for i in range(40):
        engine.observe(event("stripe:mca_m2", True, T0 + i, merchant="m2"), T0 + i)
    old = json.loads(json.dumps(engine.snapshot()))
    old["connectors"] = [*CONNECTORS, "stripe:mca_m2"]  # how earlier versions wrote it
    del old["merchant_connectors"]
    restored = Engine(CONNECTORS, seed=15)
    restored.load_snapshot(old)
    assert restored.connectors_for("m1") == tuple(CONNECTORS)
    assert "stripe:mca_m2" in restored.connectors  # still known, its cells kept
    for i in range(3):  # m2's next outcome on it makes it m2's again
        restored.observe(event("stripe:mca_m2", True, T0 + 50 + i, merchant="m2"), T0 + 50 + i)
    assert restored.connectors_for("m2") == (*CONNECTORS, "stripe:mca_m2")
