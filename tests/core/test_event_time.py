"""One sender's clock cannot move the time everyone else is learnt and judged by."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apos import Engine, Payment, PaymentEvent
from apos.core.event_time import EventTimeWindow

NOW = 1_795_600_000.0
FAR_FUTURE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def outcome(i: int, connector: str, ok: bool, merchant: str, at: datetime) -> PaymentEvent:
    return PaymentEvent(
        event_id=f"evt_{merchant}_{connector}_{i}",
        payment_id=f"pay_{merchant}_{i}",
        merchant_id=merchant,
        connector=connector,
        status="succeeded" if ok else "failed",
        amount=1999,
        currency="USD",
        card_network="visa",
        issuer_country="US",
        error_code=None if ok else "processing_error",
        occurred_at=at,
    )


def trained() -> Engine:
    engine = Engine(connectors=["stripe", "adyen"], seed=3)
    at = datetime.fromtimestamp(NOW, UTC)
    for i in range(300):
        engine.observe(outcome(i, "adyen", i % 20 != 0, "m_shop", at), NOW)
        engine.observe(outcome(i, "stripe", i % 5 < 3, "m_shop", at), NOW)
    return engine


PAYMENT = Payment(
    payment_id="probe",
    merchant_id="m_shop",
    amount=1999,
    currency="USD",
    payment_method="card",
    card_network="visa",
    country="US",
)


def test_a_far_future_event_from_another_merchant_does_not_erase_what_was_learnt() -> None:
    engine = trained()
    before = engine.route(PAYMENT, NOW + 1)
    assert not before.fallback and before.connector == "adyen"

    # One failing event dated 9999-12-31 from another merchant's key, for both connectors.
    for connector in ("adyen", "stripe"):
        engine.observe(outcome(0, connector, False, "m_other", FAR_FUTURE), NOW + 2)

    after = engine.route(PAYMENT, NOW + 3)
    assert not after.fallback
    assert after.connector == "adyen"
    assert dict(after.alternatives)["adyen"] == pytest.approx(
        dict(before.alternatives)["adyen"], abs=0.01
    )
    # ... and the snapshot carries no far-future clock into a restart.
    restored = Engine.restore(engine.snapshot())
    again = restored.route(PAYMENT, NOW + 4)
    assert not again.fallback and again.connector == "adyen"


def test_a_far_future_failure_cannot_hold_a_breaker_open_past_its_cooldown() -> None:
    engine = Engine(connectors=["stripe", "adyen"], seed=3)
    for i in range(20):
        engine.observe(outcome(i, "adyen", False, "m_shop", FAR_FUTURE), NOW)
    engine.tick(NOW)
    # Whatever opened, it opened at NOW (not in year 9999): a day later it has half-opened.
    engine.tick(NOW + 86_400)
    assert engine.breaker_state("adyen", "m_shop", NOW + 86_400).value != "open"


def test_the_window_refuses_the_future_and_ages_out_the_past() -> None:
    window = EventTimeWindow(max_future_s=60, max_age_s=3_600)
    assert window.verdict(NOW + 60, NOW) == "ok"
    assert window.verdict(NOW + 61, NOW) == "future"
    assert window.verdict(float("inf"), NOW) == "future"
    assert window.verdict(NOW - 3_600, NOW) == "ok"
    assert window.verdict(NOW - 3_601, NOW) == "stale"
    assert window.latest(NOW) == NOW + 60
    with pytest.raises(ValueError, match="max_future_s"):
        EventTimeWindow(max_future_s=0)
    with pytest.raises(ValueError, match="max_age_s"):
        EventTimeWindow(max_age_s=float("nan"))
