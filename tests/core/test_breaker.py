"""Circuit breakers in event time: open, half-open, probe, close; per merchant; thresholds."""

from __future__ import annotations

import json

import pytest

from apos.core.breaker import BreakerBoard, BreakerState, CircuitBreaker
from apos.core.config import BreakerConfig

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN


def failures(breaker: CircuitBreaker, n: int, start: float = 0.0) -> list[object]:
    return [breaker.record(healthy=False, ts=start + i) for i in range(n)]


def test_five_failures_in_a_row_open_the_breaker() -> None:
    breaker = CircuitBreaker("stripe", None, BreakerConfig())
    changes = failures(breaker, 5)
    assert changes[:4] == [None] * 4
    assert breaker.state is OPEN
    assert changes[4].to_state is OPEN  # type: ignore[attr-defined]
    assert "5 connector failures in a row" in changes[4].reason  # type: ignore[attr-defined]


def test_a_success_resets_the_failure_run() -> None:
    breaker = CircuitBreaker("stripe", None, BreakerConfig())
    for i in range(20):
        breaker.record(healthy=(i % 4 == 3), ts=float(i))  # three failures, then a success
    assert breaker.state is CLOSED


def test_the_threshold_rises_for_a_connector_that_usually_fails_often() -> None:
    config = BreakerConfig(baseline_half_life_s=1e9)
    breaker = CircuitBreaker("stripe", None, config)
    for i in range(400):  # long-run health 0.8
        breaker.record(healthy=i % 5 != 0, ts=float(i))
    assert breaker.threshold(400.0) == 9  # (1 - 0.8) ** 9 <= 1e-6 < 0.2 ** 8
    failures(breaker, 8, start=400.0)
    assert breaker.state is CLOSED
    breaker.record(healthy=False, ts=408.0)
    assert breaker.state is OPEN
    fixed = CircuitBreaker("stripe", None, BreakerConfig(chance_run_probability=0.0))
    assert fixed.threshold(0.0) == 5


def test_a_collapsed_health_rate_opens_the_breaker_despite_occasional_successes() -> None:
    breaker = CircuitBreaker("stripe", None, BreakerConfig(failure_threshold=20))
    change = None
    for i in range(40):  # 1 success in 4: never 20 failures in a row
        change = breaker.record(healthy=i % 4 == 0, ts=float(i)) or change
    assert breaker.state is CLOSED  # health 0.25 is above the floor
    breaker = CircuitBreaker("stripe", None, BreakerConfig(failure_threshold=20))
    for i in range(60):  # 1 success in 12
        change = breaker.record(healthy=i % 12 == 0, ts=float(i)) or change
    assert breaker.state is OPEN
    assert "below floor" in change.reason  # type: ignore[union-attr]


def test_open_half_open_closed_sequence_in_event_time() -> None:
    breaker = CircuitBreaker("stripe", None, BreakerConfig(cooldown_s=30, probe_successes=3))
    failures(breaker, 5, start=100.0)  # opens at 104
    assert breaker.advance(now=133.9) is None
    assert breaker.state is OPEN
    change = breaker.advance(now=500.0)  # however late we look, probes start at 134
    assert change is not None and change.to_state is HALF_OPEN and change.at == 134.0
    assert breaker.record(healthy=False, ts=120.0) is None  # sent before the probes: ignored
    assert breaker.state is HALF_OPEN
    assert breaker.record(healthy=True, ts=501.0) is None
    assert breaker.record(healthy=True, ts=502.0) is None
    closed = breaker.record(healthy=True, ts=503.0)
    assert closed is not None and closed.to_state is CLOSED
    assert breaker.cooldown_s == 30


def test_a_failed_probe_reopens_with_a_doubled_cooldown_up_to_the_maximum() -> None:
    breaker = CircuitBreaker("stripe", None, BreakerConfig(cooldown_s=30, max_cooldown_s=100))
    failures(breaker, 5)
    now = 4.0
    cooldowns = []
    for _ in range(4):
        now = breaker.retry_at
        breaker.advance(now)
        breaker.record(healthy=False, ts=now + 1)
        assert breaker.state is OPEN
        cooldowns.append(breaker.cooldown_s)
    assert cooldowns == [60, 100, 100, 100]


def test_breaker_round_trips_through_json() -> None:
    config = BreakerConfig()
    breaker = CircuitBreaker("stripe", "m1", config)
    failures(breaker, 5)
    copy = CircuitBreaker.from_dict(json.loads(json.dumps(breaker.to_dict())), config)
    assert copy.to_dict() == breaker.to_dict()


def test_board_gives_the_worse_of_global_and_merchant_state() -> None:
    board = BreakerBoard(BreakerConfig())
    for i in range(5):
        board.record("stripe", "m1", healthy=False, ts=float(i))
        board.record("stripe", "m2", healthy=True, ts=float(i))  # keeps the global run short
    assert board.get("stripe").state is CLOSED  # type: ignore[union-attr]
    assert board.state("stripe", "m1", 5.0) is OPEN
    assert board.state("stripe", "m2", 5.0) is CLOSED
    assert not board.all_closed()
    assert [c.merchant_id for c in board.drain()] == ["m1"]
    assert board.drain() == []
    assert board.state("stripe", "m1", 40.0) is HALF_OPEN  # noticed lazily, still reported
    assert [c.to_state for c in board.drain()] == [HALF_OPEN]


def test_all_closed_for_a_merchant_tracks_its_own_and_the_global_breakers() -> None:
    board = BreakerBoard(BreakerConfig(chance_run_probability=0.0))  # threshold stays 5
    for i in range(5):
        board.record("stripe", "m1", healthy=False, ts=float(i))
        board.record("stripe", "m2", healthy=True, ts=float(i))
    assert not board.all_closed_for("m1")
    assert board.all_closed_for("m2")
    for i in range(5):  # now stripe fails for everyone: the global breaker opens too
        board.record("stripe", "m2", healthy=False, ts=10.0 + i)
    assert not board.all_closed_for("m3")
    restored = BreakerBoard(BreakerConfig(chance_run_probability=0.0))
    restored.load(json.loads(json.dumps(board.to_dict())))
    assert not restored.all_closed_for("m3")
    assert board.state("stripe", "m3", 100.0) is HALF_OPEN
    for i in range(3):  # probes succeed for m1 and m2: every breaker closes again
        for merchant in ("m1", "m2"):
            board.record("stripe", merchant, healthy=True, ts=101.0 + i)
    assert [board.state("stripe", m, 105.0) for m in ("m1", "m2", "m3")] == [CLOSED] * 3
    assert board.all_closed_for("m1") and board.all_closed_for("m3") and board.all_closed()


def test_board_advance_half_opens_every_breaker_due() -> None:
    board = BreakerBoard(BreakerConfig(per_merchant=False))
    for connector in ("stripe", "adyen"):
        for i in range(5):
            board.record(connector, "m1", healthy=False, ts=float(i))
    board.drain()
    board.advance(now=100.0)
    assert [(c.connector, c.to_state) for c in board.drain()] == [
        ("stripe", HALF_OPEN),
        ("adyen", HALF_OPEN),
    ]


def test_a_disabled_board_never_opens() -> None:
    board = BreakerBoard(BreakerConfig(enabled=False))
    for i in range(50):
        board.record("stripe", "m1", healthy=False, ts=float(i))
    assert board.all_closed()
    assert board.state("stripe", "m1", 50.0) is CLOSED


@pytest.mark.parametrize(
    "fields", [{"failure_threshold": 5, "max_failure_threshold": 4}, {"max_cooldown_s": 1.0}]
)
def test_inconsistent_breaker_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig.model_validate(fields)
