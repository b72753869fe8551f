"""The in-process API in twenty lines: route, learn from outcomes, route again."""

from datetime import UTC, datetime

from apos import Engine, Payment, PaymentEvent

engine = Engine(connectors=["stripe", "adyen", "checkout"], seed=7)
now = 1_795_600_000.0  # event time, epoch seconds: the engine never reads the clock
payment = Payment(
    payment_id="pay_1",
    merchant_id="m_shop",
    amount=1999,
    currency="USD",
    payment_method="card",
    card_network="visa",
    country="US",
)

first = engine.route(payment, now)
print(first.connector, first.fallback, first.reasons[0])  # cold start: the rules decide

# Outcomes arrive: adyen succeeds 95% of the time for this kind of payment, stripe 60%.
at = datetime.fromtimestamp(now, UTC)
for i in range(300):
    for connector, ok in (("adyen", i % 20 != 0), ("stripe", i % 5 < 3)):
        engine.observe(
            PaymentEvent(
                event_id=f"evt_{connector}_{i}",
                payment_id=f"pay_h{i}",
                merchant_id="m_shop",
                connector=connector,
                status="succeeded" if ok else "failed",
                amount=1999,
                currency="USD",
                card_network="visa",
                issuer_country="US",
                occurred_at=at,
            ),
            now,
        )

decision = engine.route(payment, now + 1)
print(
    decision.connector,
    f"confidence={decision.confidence:.2f}",
    f"propensity={decision.propensity:.2f}",
    decision.model_version,
)
print("ranked:", [(c, round(s, 3)) for c, s in decision.alternatives])
print("why:", decision.reasons)

report = engine.tick(now + 2)  # breaker housekeeping in event time
state = engine.snapshot()  # JSON-serialisable; Engine.restore(state) warm-restarts
print("restored routes like the original:", Engine.restore(state).route(payment, now + 3).connector)
