"""Routing speed: in-process ``Engine.route`` and HTTP ``POST /v1/route``.

    make bench-route        # or: python -m bench.route --seconds 15

In-process: 5 connectors, 10,000 distinct contexts, the learner warmed with outcomes in every
context, then every call timed alone (``perf_counter_ns``); the simulator's sliding-window
success-rate router is timed the same way as the baseline.

HTTP: ``apos serve --workers 2`` on PostgreSQL + Redis, driven by wrk on the same 2 cores:
flat out for throughput, then paced to at least 2,000 requests/s for latency. The baseline is
``GET /health`` of the same app (same stack, no work).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from apos import Engine, Payment, PaymentEvent, PaymentStatus
from bench._common import (
    REDIS_URL,
    apos_env,
    create_key,
    free_port,
    machine,
    scratch_database,
    server,
    write_section,
)

HERE = Path(__file__).resolve().parent
CONNECTORS = ["stripe", "adyen", "checkout", "braintree", "worldpay"]
NETWORKS = ["visa", "mastercard", "amex", "discover", "rupay"]
COUNTRIES = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "AU", "ES"]
AMOUNTS = [500, 5_000, 50_000, 500_000]  # one per amount band
PACE_MS = 10  # the paced run: each wrk connection waits this long after every answer


def contexts(n: int) -> list[Payment]:
    out = []
    i = 0
    while len(out) < n:
        merchant = f"m_{i // (len(NETWORKS) * len(COUNTRIES) * len(AMOUNTS))}"
        rest = i % (len(NETWORKS) * len(COUNTRIES) * len(AMOUNTS))
        network = NETWORKS[rest % len(NETWORKS)]
        country = COUNTRIES[(rest // len(NETWORKS)) % len(COUNTRIES)]
        amount = AMOUNTS[rest // (len(NETWORKS) * len(COUNTRIES))]
        out.append(
            Payment(
                payment_id=f"p{i}",
                merchant_id=merchant,
                amount=amount,
                currency="USD",
                card_network=network,
                country=country,
            )
        )
        i += 1
    return out


def time_calls(router: object, payments: list[Payment], calls: int, now: float) -> list[int]:
    route = router.route  # type: ignore[attr-defined]
    rng = random.Random(1)
    picks = [payments[rng.randrange(len(payments))] for _ in range(calls)]
    clock = time.perf_counter_ns
    out = []
    for payment in picks:
        t0 = clock()
        route(payment, now)
        out.append(clock() - t0)
    return out


def warm(router: object, payments: list[Payment], per_context: int, now: float) -> None:
    observe = router.observe  # type: ignore[attr-defined]
    at = datetime.fromtimestamp(now, UTC)
    rng = random.Random(2)
    n = 0
    for payment in payments:
        for _ in range(per_context):
            n += 1
            connector = CONNECTORS[n % 5]
            observe(
                PaymentEvent.model_construct(
                    event_id=f"w{n}",
                    payment_id=payment.payment_id,
                    attempt=1,
                    merchant_id=payment.merchant_id,
                    connector=connector,
                    status=PaymentStatus.SUCCEEDED if rng.random() < 0.8 else PaymentStatus.FAILED,
                    amount=payment.amount,
                    currency="USD",
                    payment_method="card",
                    card_network=payment.card_network,
                    issuer_country=payment.country,
                    latency_ms=200.0,
                    occurred_at=at,
                    error_code=None,
                    decision_id=None,
                ),
                now,
            )


def pct(values: list[int], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1]


def in_process(calls: int) -> dict[str, float]:
    now = 1_800_000_000.0
    payments = contexts(10_000)
    engine = Engine(CONNECTORS, seed=1)
    warm(engine, payments, 5, now)
    for _ in range(3):  # steadier numbers after the caches are hot
        ns = time_calls(engine, payments, calls, now)
    out = {
        "p50_us": pct(ns, 50) / 1e3,
        "p99_us": pct(ns, 99) / 1e3,
        "mean_us": statistics.fmean(ns) / 1e3,
        "contexts": len(payments),
    }
    try:
        from apos.sim.baselines import SlidingWindowSR

        baseline = SlidingWindowSR(CONNECTORS, seed=1)
        warm(baseline, payments, 5, now)
        ns = time_calls(baseline, payments, calls, now)
        out.update(base_p50_us=pct(ns, 50) / 1e3, base_p99_us=pct(ns, 99) / 1e3)
    except (ImportError, TypeError, AttributeError) as exc:  # the simulator is optional here
        print(f"(no baseline: {exc})")
    return out


def run_wrk(
    base: str, script: str, path: str, seconds: int, connections: int, env: dict[str, str]
) -> dict[str, float]:
    argv = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(HERE / "wrk" / script),
        base + path,
    ]
    out = subprocess.run(
        argv, env={**os.environ, **env}, capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"RESULT (.*)", out)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    fields = dict(kv.split("=") for kv in match.group(1).split())
    values = {k: float(v) for k, v in fields.items()}
    values["rps"] = values["requests"] / (values["duration_us"] / 1e6)
    return values


def http(seconds: int, workers: int) -> dict[str, dict[str, float]]:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    with scratch_database() as db:
        port = free_port()
        stream = f"apos-bench:{os.getpid()}"
        env = apos_env(
            database_url=db,
            port=str(port),
            redis_url=REDIS_URL,
            event_stream=stream,
            connectors='["' + '","'.join(CONNECTORS) + '"]',
        )
        key = create_key(env, "operator")
        argv = [sys.executable, "-m", "apos.cli.main", "serve", "--workers", str(workers)]
        with server(argv, env, port) as base:
            run_wrk(base, "route.lua", "", 3, 16, {"APOS_KEY": key})  # warm-up
            flat = run_wrk(base, "route.lua", "", seconds, 32, {"APOS_KEY": key})
            noop = run_wrk(base, "get.lua", "/health", seconds, 32, {})
            paced = paced_run(base, key, seconds)
    return {"flat": flat, "noop": noop, "paced": paced}


def paced_run(base: str, key: str, seconds: int, rate: float = 2_000) -> dict[str, float]:
    """Latency at (at least) ``rate`` requests/s.

    wrk is closed-loop: each connection waits ``PACE_MS`` after every answer, so one
    connection sends 1 / (pace + latency) requests/s. Start from the count that would give
    ``rate`` at zero latency plus 10%, and add connections until the achieved rate is at least
    ``rate`` (the returned figures are that run's).
    """
    connections = int(rate * PACE_MS / 1000 * 1.1)
    for _ in range(5):
        env = {"APOS_KEY": key, "APOS_PACE_MS": str(PACE_MS)}
        result = run_wrk(base, "route.lua", "", seconds, connections, env)
        result["connections"] = connections
        if result["rps"] >= rate:
            break
        connections = int(connections * rate / max(result["rps"], 1.0)) + 1
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    ip = in_process(args.calls)
    print("in-process:", {k: round(v, 2) for k, v in ip.items()})
    rows = [
        f"| `Engine.route`, 5 connectors, {ip['contexts']:,.0f} contexts | "
        f"**{ip['p50_us']:.1f} µs** | **{ip['p99_us']:.1f} µs** | {ip['mean_us']:.1f} µs | "
        f"p99 < 100 µs |"
    ]
    if "base_p50_us" in ip:
        rows.append(
            f"| baseline: simulator's sliding-window SR router, same contexts | "
            f"{ip['base_p50_us']:.1f} µs | {ip['base_p99_us']:.1f} µs | — | — |"
        )
    body = [
        "## Routing decisions",
        "",
        f"`make bench-route` — measured {datetime.now(UTC):%Y-%m-%d} on {machine()}.",
        "",
        "| in-process | p50 | p99 | mean | target |",
        "| --- | ---: | ---: | ---: | --- |",
        *rows,
    ]
    if not args.skip_http:
        h = http(args.seconds, args.workers)
        for name, v in h.items():
            print(f"http {name}:", {k: round(val, 1) for k, val in v.items()})
        flat, noop, paced = h["flat"], h["noop"], h["paced"]
        body += [
            "",
            f"HTTP: `apos serve --workers {args.workers}` (PostgreSQL + Redis), wrk on the "
            "same 2 cores (2 threads); every request a distinct payment over ~8,000 contexts.",
            "",
            "| HTTP | requests/s | p50 | p99 | errors | target |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
            f"| `POST /v1/route`, flat out (32 connections) | **{flat['rps']:,.0f}** | "
            f"{flat['p50_us'] / 1e3:.1f} ms | {flat['p99_us'] / 1e3:.1f} ms | "
            f"{flat['errors'] + flat['non2xx']:.0f} | ≥ 5,000/s |",
            f"| `POST /v1/route`, paced ({paced['connections']:.0f} connections, each "
            f"waiting {PACE_MS} ms after every answer) | {paced['rps']:,.0f} | "
            f"{paced['p50_us'] / 1e3:.2f} ms | **{paced['p99_us'] / 1e3:.2f} ms** | "
            f"{paced['errors'] + paced['non2xx']:.0f} | p99 < 10 ms at 2,000/s |",
            f"| baseline: `GET /health`, same stack, flat out | {noop['rps']:,.0f} | "
            f"{noop['p50_us'] / 1e3:.1f} ms | {noop['p99_us'] / 1e3:.1f} ms | "
            f"{noop['errors'] + noop['non2xx']:.0f} | — |",
            "",
            f"Routing runs at {flat['rps'] / noop['rps']:.0%} of the no-op ceiling of the "
            f"same stack; Juspay's decision engine reports 835 decisions/s on a 2-core pod "
            f"(`docs/benchmarks.mdx` of juspay/decision-engine): "
            f"{flat['rps'] / 835:.1f}× that.",
        ]
        for name, run in (("flat", flat), ("paced", paced), ("baseline", noop)):
            if run["errors"]:
                body.append(
                    f"The {name} run had wrk socket errors: "
                    f"{run['connect_errors']:.0f} connect, {run['read_errors']:.0f} read, "
                    f"{run['write_errors']:.0f} write, {run['timeouts']:.0f} timeouts."
                )
            if run["non2xx"]:
                body.append(f"The {name} run had {run['non2xx']:.0f} non-2xx answers.")
    write_section("route", "\n".join(body))
    print("written to docs/benchmarks.md")


if __name__ == "__main__":
    main()
