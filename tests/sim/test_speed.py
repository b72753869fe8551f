"""The simulator is fast enough to be useful (target: 20,000 payments/s on one core)."""

from __future__ import annotations

from apos.sim.bench import FirstEligible
from apos.sim.runner import run_scenario
from apos.sim.scenario import load_scenario


def test_simulator_overhead_allows_20k_payments_per_second() -> None:
    """A trivial router through the full event path; measured ~100k/s, so 5x headroom."""
    result = run_scenario(
        load_scenario("realistic_day"),
        {"trivial": lambda ctx: FirstEligible(ctx.connectors), "swsr": "sliding_window_sr"},
        payments=60_000,
        seed=1,
    )
    assert result.routers["trivial"].payments_per_second > 20_000
    assert result.routers["swsr"].payments_per_second > 20_000
