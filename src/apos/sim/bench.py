"""Run the routing benchmark suite and write its table into ``docs/benchmarks.md``.

    python -m apos.sim.bench                      # full suite, 3 seeds, + speed check
    python -m apos.sim.bench --payments 60000     # the acceptance tests' size
    python -m apos.sim.bench --scenarios stable,flapping --seeds 1 --no-docs --no-speed

Only the text between ``<!-- sim-suite:start -->`` and ``<!-- sim-suite:end -->`` is
rewritten. Exit status 1 when a scenario fails its pass criterion (with ``--strict``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from apos.core.events import PaymentEvent
from apos.core.payment import Payment
from apos.sim.report import format_duration
from apos.sim.routers import Choice
from apos.sim.runner import DEFAULT_ROUTERS, RunResult, run_scenario
from apos.sim.scenario import load_scenario
from apos.sim.suite import (
    SUITE,
    TIE_TOLERANCE_PP,
    SuiteResult,
    format_suite_table,
    run_suite,
    write_benchmarks_md,
)

__all__ = ["FirstEligible", "main", "measure_speed"]


class FirstEligible:
    """The cheapest possible router, to measure the simulator's own cost per payment.

    It takes the full path an engine takes (a ``PaymentEvent`` is built for every outcome).
    """

    def __init__(self, connectors: tuple[str, ...]) -> None:
        self.connectors = connectors
        self._choice = {c: Choice(c) for c in connectors}

    def route(self, payment: Payment, now: float) -> Choice:
        """The first eligible connector."""
        return self._choice[(payment.eligible_connectors or self.connectors)[0]]

    def observe(self, event: PaymentEvent, now: float) -> None:
        """Ignore the outcome."""

    def tick(self, now: float) -> None:
        """Nothing to do."""


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_speed(payments: int = 1_000_000, scenario: str = "realistic_day") -> RunResult:
    """One run of ``scenario`` with the trivial router, the baselines and APOS."""
    sc = load_scenario(scenario)
    routers = {
        "simulator only (first eligible)": lambda ctx: FirstEligible(ctx.connectors),
        **{r: r for r in DEFAULT_ROUTERS},
    }
    return run_scenario(sc, routers, payments=payments, seed=sc.seed)


def _speed_table(run: RunResult, wall: float) -> str:
    lines = [
        f"Scenario `{run.scenario.name}`: {run.payments:,} payments over "
        f"{format_duration(run.scenario.traffic.duration)} of simulated time, "
        f"{len(run.connectors)} connectors, one core. Drawing the stream took "
        f"{run.stream_seconds:.1f} s; the whole run (every router below) {wall:.0f} s.",
        "",
        "| router | payments/s simulated | time for the run |",
        "| --- | ---: | ---: |",
    ]
    for r in run.routers.values():
        if r.batch:
            continue
        lines.append(f"| {r.name} | {r.payments_per_second:,.0f} | {r.seconds:.1f} s |")
    return "\n".join(lines)


def _outage_table(suite: SuiteResult) -> str:
    lines = [
        "| scenario | router | routed while down | before traffic left | time to leave "
        "| time to return |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for v in suite.verdicts:
        run = v.runs[0]
        for name, r in run.routers.items():
            if name in ("oracle", "random", "round_robin"):
                continue
            for o in r.outages:
                lines.append(
                    f"| {v.scenario} | {name} | {o.routed_during:,} | "
                    f"{'—' if o.routed_before_left is None else f'{o.routed_before_left:,}'} | "
                    f"{format_duration(o.seconds_to_leave)} | "
                    f"{format_duration(o.seconds_to_return)} |"
                )
    return "\n".join(lines) if len(lines) > 2 else ""


def _section(suite: SuiteResult, speed: tuple[RunResult, float] | None, elapsed: float) -> str:
    size = f"{suite.payments:,} payments" if suite.payments else "each scenario's own size"
    parts = [
        "## Routing benchmark (simulator)",
        "",
        f"`python -m apos.sim.bench` — measured {datetime.now(UTC):%Y-%m-%d} on "
        f"{os.cpu_count()} cores ({_cpu()}), Python {platform.python_version()}; "
        f"{size} per run, seeds {', '.join(map(str, suite.seeds))}; mean success rate over "
        f"the seeds (every router sees the same payments and the same luck). Suite time "
        f"{format_duration(elapsed)}. Scenarios: `scenarios/*.toml`; method and definitions: "
        "`docs/simulator.md`.",
        "",
        f"Pass: APOS above every non-oracle baseline on every seed; on `stable` it may tie "
        f"(at most {TIE_TOLERANCE_PP} pp below). Bold: APOS and the best baseline.",
        "",
        format_suite_table(suite),
    ]
    outages = _outage_table(suite)
    if outages:
        parts += ["", f"Outages (seed {suite.seeds[0]}):", "", outages]
    if speed is not None:
        parts += ["", "### Simulation speed", "", _speed_table(*speed)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(
        prog="python -m apos.sim.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--scenarios", default=",".join(SUITE))
    ap.add_argument(
        "--payments", type=int, default=None, help="payments per run (default: each scenario's own)"
    )
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--report-dir", default=None, help="write an HTML report per scenario")
    ap.add_argument("--docs", default="docs/benchmarks.md")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--speed-payments", type=int, default=1_000_000)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a scenario fails")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    seeds = tuple(int(s) for s in args.seeds.split(","))
    began = time.perf_counter()

    def show(run: RunResult) -> None:
        rates = " ".join(f"{n}={r.success_rate * 100:.2f}%" for n, r in run.routers.items())
        print(f"  {run.scenario.name} seed {run.seed}: {rates}", flush=True)

    print(f"suite: {', '.join(names)}; seeds {seeds}", flush=True)
    suite = run_suite(
        names, payments=args.payments, seeds=seeds, report_dir=args.report_dir, on_run=show
    )
    elapsed = time.perf_counter() - began
    print()
    print(format_suite_table(suite))
    speed = None
    if not args.no_speed:
        print(f"\nspeed: realistic_day with {args.speed_payments:,} payments ...", flush=True)
        t0 = time.perf_counter()
        run = measure_speed(args.speed_payments)
        speed = (run, time.perf_counter() - t0)
        print(_speed_table(*speed))
    if not args.no_docs:
        path = write_benchmarks_md(_section(suite, speed, elapsed), args.docs)
        print(f"\nwrote {path}")
    print("\nall scenarios pass" if suite.passed else "\nSOME SCENARIOS FAIL")
    return 1 if args.strict and not suite.passed else 0


if __name__ == "__main__":
    sys.exit(main())
