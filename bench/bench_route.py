"""In-process ``Engine.route`` latency: 5 connectors, 10,000 distinct contexts, warm learner.

    .venv/bin/python bench/bench_route.py [--routes 50000] [--warm-events 200000]

Contexts are 50 merchants x 4 card networks x 25 issuer countries x 2 amount bands =
10,000 finest-level contexts. The learner is first warmed with outcomes spread over every
context and connector (success rates differ per connector and network), then ``route`` is
timed call by call with ``time.perf_counter_ns`` for payments drawn uniformly from the
contexts, for each policy. Nothing else runs in the process; the garbage collector is on.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime

from apos import Engine, EngineConfig, Payment, PaymentEvent, PolicyConfig

CONNECTORS = ["stripe", "adyen", "checkout", "braintree", "worldpay"]
MERCHANTS = [f"m{i:02d}" for i in range(50)]
NETWORKS = ["visa", "mastercard", "amex", "discover"]
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "BE", "SE", "NO", "DK", "FI", "PL",
             "IE", "PT", "AT", "CH", "CA", "AU", "NZ", "JP", "SG", "BR", "MX", "IN"]  # fmt: skip
AMOUNTS = [1999, 250_000]  # 19.99 and 2,500.00 USD: two bands
START = 1_700_000_000.0


def contexts() -> list[tuple[str, str, str, int]]:
    return [(m, n, c, a) for m in MERCHANTS for n in NETWORKS for c in COUNTRIES for a in AMOUNTS]


def warm(engine: Engine, events: int, rng: random.Random) -> float:
    """Feed ``events`` outcomes over one simulated hour; return the event time reached."""
    all_contexts = contexts()
    base = {c: 0.75 + 0.04 * i for i, c in enumerate(CONNECTORS)}
    now = START
    for i in range(events):
        merchant, network, country, amount = all_contexts[i % len(all_contexts)]
        connector = CONNECTORS[rng.randrange(len(CONNECTORS))]
        rate = base[connector] - (0.1 if network == "amex" and connector == "worldpay" else 0)
        now = START + 3600.0 * i / events
        event = PaymentEvent(
            event_id=f"e{i}",
            payment_id=f"w{i}",
            merchant_id=merchant,
            connector=connector,
            status="succeeded" if rng.random() < rate else "failed",
            amount=amount,
            currency="USD",
            card_network=network,
            issuer_country=country,
            latency_ms=150.0 + 50.0 * rng.random(),
            occurred_at=datetime.fromtimestamp(now, UTC),
        )
        engine.observe(event, now)
    return now


def time_routes(engine: Engine, routes: int, now: float, rng: random.Random) -> list[int]:
    all_contexts = contexts()
    payments = []
    for i in range(routes):
        merchant, network, country, amount = all_contexts[rng.randrange(len(all_contexts))]
        payments.append(
            Payment(f"b{i}", merchant, amount, "USD", card_network=network, country=country)
        )
    for payment in payments[:1000]:  # warm caches (per-merchant config resolution, numpy)
        engine.route(payment, now)
    clock = time.perf_counter_ns
    samples = []
    for payment in payments:
        t0 = clock()
        engine.route(payment, now)
        samples.append(clock() - t0)
    return samples


def quantile(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=50_000)
    parser.add_argument("--warm-events", type=int, default=200_000)
    args = parser.parse_args()

    policies = {
        "thompson": PolicyConfig(policy="thompson"),
        "thompson+latency+cost": PolicyConfig(
            policy="thompson",
            latency_weight=1e-4,
            cost_weight=0.001,
            connector_costs={"adyen": 2.0, "stripe": 3.0},
        ),
        "greedy": PolicyConfig(policy="greedy", epsilon=0.05),
        "rules": PolicyConfig(policy="rules"),
    }
    print(
        f"route() latency, {len(CONNECTORS)} connectors, {len(contexts())} contexts, "
        f"{args.warm_events} warm-up outcomes, {args.routes} timed routes per policy"
    )
    print(f"{'policy':<24}{'p50 us':>9}{'p90 us':>9}{'p99 us':>9}{'p99.9 us':>10}{'mean us':>9}")
    for name, policy in policies.items():
        rng = random.Random(1)
        engine = Engine(CONNECTORS, seed=1, config=EngineConfig(default=policy))
        now = warm(engine, args.warm_events, rng)
        samples = sorted(time_routes(engine, args.routes, now, rng))
        print(
            f"{name:<24}{quantile(samples, 0.5):>9.1f}{quantile(samples, 0.9):>9.1f}"
            f"{quantile(samples, 0.99):>9.1f}{quantile(samples, 0.999):>10.1f}"
            f"{statistics.fmean(samples) / 1000:>9.1f}"
        )


if __name__ == "__main__":
    main()
