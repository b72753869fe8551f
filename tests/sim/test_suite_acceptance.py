"""ACCEPTANCE: APOS beats every non-oracle baseline on each benchmark scenario (issue 4.5).

Each scenario runs at its own size (60,000 payments over four hours) on seeds 1, 2 and 3
against the real ``apos.Engine``.
APOS must have a higher success rate than random, round robin, fixed best and sliding-window
success-rate routing on every seed; on ``stable`` it may tie (at most ``TIE_TOLERANCE_PP``
below the best of them). The same runs make the table of ``python -m apos.sim.bench``
in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import pytest

from apos.sim.runner import DEFAULT_ROUTERS, run_scenario
from apos.sim.scenario import load_scenario
from apos.sim.suite import SUITE, judge

SEEDS = (1, 2, 3)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", SUITE)
def test_acceptance_apos_beats_the_baselines(scenario: str, seed: int) -> None:
    result = run_scenario(load_scenario(scenario), DEFAULT_ROUTERS, seed=seed)
    passed, _, why = judge(result)
    rates = ", ".join(f"{n} {r.success_rate:.4f}" for n, r in result.routers.items())
    assert passed, f"{scenario} seed {seed}: {why} [{rates}]"
