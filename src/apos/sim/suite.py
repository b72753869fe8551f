"""The routing benchmark suite: named scenarios, pass criteria, and the docs table.

Pass criterion (each scenario, each seed): APOS's success rate is above every non-oracle
baseline's; on ``stable`` (where a fixed choice is already optimal) it may tie, i.e. be at
most :data:`TIE_TOLERANCE_PP` percentage points below.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apos.sim.runner import DEFAULT_ROUTERS, RouterSpec, RunResult, run_scenario
from apos.sim.scenario import load_scenario

__all__ = [
    "SUITE",
    "TIE_SCENARIOS",
    "TIE_TOLERANCE_PP",
    "ScenarioVerdict",
    "SuiteResult",
    "format_suite_table",
    "judge",
    "run_suite",
    "write_benchmarks_md",
]

SUITE: tuple[str, ...] = (
    "stable",
    "gradual_drift",
    "sudden_outage",
    "flapping",
    "segment_best",
    "cold_start",
    "sparse_contexts",
)
TIE_SCENARIOS = frozenset({"stable"})
TIE_TOLERANCE_PP = 0.3
CANDIDATE = "apos"
NOT_BASELINES = frozenset({CANDIDATE, "oracle"})

MARK_START = "<!-- sim-suite:start -->"
MARK_END = "<!-- sim-suite:end -->"


def judge(result: RunResult, candidate: str = CANDIDATE) -> tuple[bool, float, str]:
    """Whether ``candidate`` passes on this run: ``(passed, margin in pp, why)``.

    The margin is the candidate's success rate minus the best non-oracle baseline's.
    """
    mine = result.routers[candidate].success_rate
    best = result.best_baseline(exclude=(candidate, "oracle"))
    margin = (mine - best.success_rate) * 100.0
    if result.scenario.name in TIE_SCENARIOS:
        ok = margin >= -TIE_TOLERANCE_PP
        need = f"within {TIE_TOLERANCE_PP} pp of"
    else:
        ok = margin > 0.0
        need = "ahead of"
    why = f"{candidate} {margin:+.2f} pp vs {best.name} (needs to be {need} it)"
    return ok, margin, why


@dataclass(slots=True)
class ScenarioVerdict:
    """One scenario over its seeds."""

    scenario: str
    runs: list[RunResult]
    success_rate: dict[str, float]  # router -> mean over seeds
    margins_pp: list[float]  # candidate vs best baseline, per seed
    passed: bool
    reasons: list[str]

    @property
    def best_baseline(self) -> str:
        """The non-oracle baseline with the best mean success rate."""
        return max(
            (r for r in self.success_rate if r not in NOT_BASELINES),
            key=lambda r: self.success_rate[r],
        )


@dataclass(slots=True)
class SuiteResult:
    """Every scenario's verdict, in suite order."""

    verdicts: list[ScenarioVerdict]
    payments: int | None
    seeds: tuple[int, ...]
    routers: tuple[str, ...]
    speed: dict[str, float] = field(default_factory=dict)  # filled by the bench

    @property
    def passed(self) -> bool:
        """True when every scenario passed on every seed."""
        return all(v.passed for v in self.verdicts)


def run_suite(
    names: Sequence[str] = SUITE,
    *,
    payments: int | None = None,
    seeds: Sequence[int] = (1, 2, 3),
    routers: Sequence[str] | Mapping[str, RouterSpec] = DEFAULT_ROUTERS,
    report_dir: str | Path | None = None,
    on_run: Callable[[RunResult], None] | None = None,
    options: Mapping[str, Any] | None = None,
) -> SuiteResult:
    """Run each named scenario on each seed and judge it.

    Args:
        payments: Payments per run; ``None`` uses each scenario's own ``traffic.payments``.
        report_dir: Also write an HTML report per scenario (first seed) there.
        on_run: Called after every run (progress output).
    """
    verdicts = []
    for name in names:
        scenario = load_scenario(name)
        runs = []
        for seed in seeds:
            result = run_scenario(scenario, routers, seed=seed, payments=payments, options=options)
            runs.append(result)
            if on_run is not None:
                on_run(result)
        if report_dir is not None:
            from apos.sim.report import render_report

            render_report(runs[0], report_dir)
        judged = [judge(r) for r in runs] if CANDIDATE in runs[0].routers else []
        rates = {
            router: sum(r.routers[router].success_rate for r in runs) / len(runs)
            for router in runs[0].routers
        }
        verdicts.append(
            ScenarioVerdict(
                scenario=name,
                runs=runs,
                success_rate=rates,
                margins_pp=[m for _, m, _ in judged],
                passed=bool(judged) and all(ok for ok, _, _ in judged),
                reasons=[why for _, _, why in judged],
            )
        )
    return SuiteResult(verdicts, payments, tuple(seeds), tuple(routers))


def format_suite_table(suite: SuiteResult) -> str:
    """Mean success rate per scenario and router, APOS's margin, and the verdict."""
    routers = list(suite.verdicts[0].success_rate) if suite.verdicts else []
    header = ["scenario", *routers, "apos vs best baseline", "pass"]
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- | " + " | ".join("---:" for _ in routers) + " | ---: | --- |",
    ]
    for v in suite.verdicts:
        best = max(v.success_rate[r] for r in routers if r not in NOT_BASELINES)
        cells = []
        for r in routers:
            text = f"{v.success_rate[r] * 100:.2f}%"
            if r == CANDIDATE or (r not in NOT_BASELINES and v.success_rate[r] == best):
                text = f"**{text}**"
            cells.append(text)
        if v.margins_pp:
            lo, hi = min(v.margins_pp), max(v.margins_pp)
            mean = sum(v.margins_pp) / len(v.margins_pp)
            margin = f"{mean:+.2f} pp" + (
                f" ({lo:+.2f}…{hi:+.2f})" if len(v.margins_pp) > 1 else ""
            )
            verdict = "yes" if v.passed else "**no**"
            verdict += " (tie allowed)" if v.scenario in TIE_SCENARIOS else ""
        else:
            margin, verdict = "—", "—"
        lines.append(f"| {v.scenario} | " + " | ".join(cells) + f" | {margin} | {verdict} |")
    return "\n".join(lines)


def write_benchmarks_md(section: str, path: str | Path = "docs/benchmarks.md") -> Path:
    """Replace the text between the ``sim-suite`` markers of ``path`` with ``section``.

    Creates the file (with just this section) if missing, appends the section if the
    markers are absent, and leaves everything outside the markers untouched.
    """
    p = Path(path)
    block = f"{MARK_START}\n{section.strip()}\n{MARK_END}"
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"# Benchmarks\n\n{block}\n", encoding="utf-8")
        return p
    text = p.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(MARK_START) + r".*?" + re.escape(MARK_END), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    p.write_text(text, encoding="utf-8")
    return p
