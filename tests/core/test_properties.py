"""Property tests: no sequence of routes, outcomes and ticks breaks the engine's promises."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apos import Engine, EngineConfig, PolicyConfig
from apos.core.config import BreakerConfig, LearnerConfig, RoutingRule

from .helpers import T0, event, payment

KNOWN = ["stripe", "adyen", "checkout"]
NAMES = [*KNOWN, "worldpay"]  # worldpay appears only in events and eligible lists

CONFIGS = [
    EngineConfig(),
    EngineConfig(default=PolicyConfig(policy="greedy", epsilon=0.2, latency_weight=1e-3)),
    EngineConfig(
        default=PolicyConfig(
            policy="rules",
            rules=(RoutingRule(name="s", split={"adyen": 40, "worldpay": 60}),),
        )
    ),
    EngineConfig(
        default=PolicyConfig(
            min_confidence=0.7, min_evidence=3, cost_weight=0.01, connector_costs={"stripe": 5.0}
        ),
        learner=LearnerConfig(half_life_s=30, pooling_prior=0.0, posterior_draws=16),
        breaker=BreakerConfig(failure_threshold=1, cooldown_s=5, probe_fraction=1.0),
    ),
    EngineConfig(breaker=BreakerConfig(enabled=False), learner=LearnerConfig(change_shift=0.0)),
]

route_op = st.tuples(
    st.just("route"),
    st.sampled_from(["m1", "m2"]),
    st.sampled_from(["visa", "mastercard", None]),
    st.sampled_from(["US", "DE", None]),
    st.integers(0, 10**7),
    st.none() | st.lists(st.sampled_from(NAMES), min_size=1, max_size=4).map(tuple),
    st.floats(0, 120),
)
observe_op = st.tuples(
    st.just("observe"),
    st.sampled_from(NAMES),
    st.sampled_from(["m1", "m2"]),
    st.sampled_from(["succeeded", "failed", "authorized", "pending", "cancelled"]),
    st.sampled_from([None, "timeout", "do_not_honor"]),
    st.none() | st.floats(0, 60_000),
    st.floats(-300, 120),  # negative: a late event
)
tick_op = st.tuples(st.just("tick"), st.floats(0, 600))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.integers(0, len(CONFIGS) - 1),
    st.integers(0, 2**32),
    st.lists(st.one_of(route_op, observe_op, tick_op), max_size=120),
)
def test_any_sequence_keeps_every_promise(
    which: int, seed: int, ops: list[tuple[Any, ...]]
) -> None:
    engine = Engine(KNOWN, seed=seed, config=CONFIGS[which])
    now = T0
    ids: set[str] = set()
    named: dict[str, set[str]] = {}
    for op in ops:
        if op[0] == "route":
            _, merchant, network, country, amount, eligible, dt = op
            now += dt
            d = engine.route(payment(merchant, network, country, amount, eligible=eligible), now)
            allowed = (
                list(dict.fromkeys(eligible)) if eligible else list(engine.connectors_for(merchant))
            )
            if eligible:
                named.setdefault(merchant, set()).update(eligible)
            # a merchant is offered only the shared connectors and the ones it named or used
            assert set(engine.connectors_for(merchant)) == set(KNOWN) | named.get(merchant, set())
            assert d.connector in allowed
            assert sorted(c for c, _ in d.alternatives) == sorted(allowed)
            assert d.alternatives[0][0] == d.connector
            assert all(math.isfinite(score) for _, score in d.alternatives)
            assert 0.0 <= d.confidence <= 1.0
            assert 0.0 < d.propensity <= 1.0
            assert d.reasons
            assert d.decision_id not in ids
            ids.add(d.decision_id)
        elif op[0] == "observe":
            _, connector, merchant, status, code, latency, dt = op
            now += max(dt, 0.0)
            engine.observe(
                event(
                    connector,
                    True,
                    now + min(dt, 0.0),
                    merchant=merchant,
                    status=status,
                    error_code=code,
                    latency_ms=latency,
                ),
                now,
            )
            if status in ("succeeded", "authorized", "failed"):  # final outcomes
                named.setdefault(merchant, set()).add(connector)
        else:
            now += op[1]
            report = engine.tick(now)
            assert all(t.from_state != t.to_state for t in report.transitions)
    saved = json.loads(json.dumps(engine.snapshot()))
    restored = Engine.restore(saved)
    probe = payment(payment_id="final")
    assert restored.route(probe, now + 1).connector == engine.route(probe, now + 1).connector
