"""Store write throughput: ``SqlStore.insert_events`` in batches, PostgreSQL and SQLite.

    python -m bench.store_insert                    # 100 batches of 1000 into each
    python -m bench.store_insert --batches 200 --batch-size 1000 --no-record

Measures the adapter alone (events are built before the clock starts): the unnest insert,
the rollup upsert and the commit, against a migrated scratch database, so the indexes are
the production ones. A second pass replays the same batches to time the all-duplicates
path (redeliveries), which must write nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apos.adapters.db import SqlStore, upgrade_database
from apos.core.events import PaymentEvent, PaymentStatus
from bench._common import machine, scratch_database, write_section

CONNECTORS = ["stripe", "adyen", "checkout", "braintree", "worldpay"]
NETWORKS = ["visa", "mastercard", "amex"]
COUNTRIES = ["US", "GB", "DE", "FR", "IN", "BR"]


def make_batches(batches: int, size: int) -> list[list[PaymentEvent]]:
    """Distinct, validated events: 20 merchants x 5 connectors, ~100 events/s of event time."""
    base = datetime(2026, 11, 25, tzinfo=UTC)
    out = []
    for b in range(batches):
        batch = []
        for j in range(size):
            i = b * size + j
            failed = i % 7 == 0
            batch.append(
                PaymentEvent(
                    event_id=f"evt_{i:09d}",
                    payment_id=f"pay_{i:09d}",
                    merchant_id=f"m_{i % 20}",
                    connector=CONNECTORS[i % 5],
                    status=PaymentStatus.FAILED if failed else PaymentStatus.SUCCEEDED,
                    amount=500 + (i * 37) % 100_000,
                    currency="USD",
                    card_network=NETWORKS[i % 3],
                    issuer_country=COUNTRIES[i % 6],
                    latency_ms=float(100 + i % 900),
                    error_code="do_not_honor" if failed else None,
                    fingerprint=f"fp_{i % 5000:08d}",
                    occurred_at=base + timedelta(milliseconds=10 * i),
                )
            )
        out.append(batch)
    return out


def run(url: str, batches: list[list[PaymentEvent]]) -> tuple[float, float]:
    """(rows/s for new events, events/s for an all-duplicate replay)."""
    upgrade_database(url)
    store = SqlStore(url)
    try:
        total = sum(len(b) for b in batches)
        started = time.perf_counter()
        for batch in batches:
            result = store.insert_events(batch, datetime.now(UTC))
            assert result.inserted == len(batch), result
        fresh = total / (time.perf_counter() - started)
        started = time.perf_counter()
        for batch in batches:
            assert store.insert_events(batch, datetime.now(UTC)).inserted == 0
        replay = total / (time.perf_counter() - started)
        assert store.count_events() == total
        return fresh, replay
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--no-record", action="store_true", help="do not edit docs/benchmarks.md")
    args = parser.parse_args()

    batches = make_batches(args.batches, args.batch_size)
    results: dict[str, tuple[float, float]] = {}
    with scratch_database() as pg_url:
        results["PostgreSQL"] = run(pg_url, batches)
    with tempfile.TemporaryDirectory() as tmp:
        results["SQLite (WAL)"] = run(f"sqlite:///{Path(tmp) / 'bench.db'}", batches)

    total = args.batches * args.batch_size
    lines = [
        f"`SqlStore.insert_events`, {args.batches} batches of {args.batch_size} "
        f"({total} events), one thread; {machine()}.",
        "",
        "| database | new events/s | all-duplicate replay events/s |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {name} | {fresh:,.0f} | {replay:,.0f} |" for name, (fresh, replay) in results.items()
    ]
    print("\n".join(lines))
    if not args.no_record:
        write_section("store-insert", "## Store insert\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
