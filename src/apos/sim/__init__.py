"""Traffic simulator and routing benchmark (``docs/simulator.md``).

Scenarios (TOML files in ``scenarios/``) describe connectors, traffic and timed incidents;
the simulator draws one payment stream per run and measures APOS and the baselines on it in
simulated time, or drives a running APOS over HTTP.

>>> # result = run_scenario(load_scenario("sudden_outage"), payments=60_000, seed=1)
>>> # print(format_table(result)); render_report(result, "reports/")
>>> # suite = run_suite(payments=60_000); print(format_table(suite))
"""

from apos.sim.baselines import BASELINES
from apos.sim.http import HttpRouter, run_http
from apos.sim.report import format_table, render_report
from apos.sim.routers import Choice, Note, Router, RunContext
from apos.sim.runner import (
    DEFAULT_ROUTERS,
    LiveRun,
    Progress,
    RouterProgress,
    RouterResult,
    RunResult,
    run_live,
    run_scenario,
    run_stream,
)
from apos.sim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from apos.sim.stream import Stream, build_stream
from apos.sim.suite import SUITE, SuiteResult, run_suite
from apos.sim.truth import Truth

__all__ = [
    "BASELINES",
    "DEFAULT_ROUTERS",
    "SUITE",
    "Choice",
    "HttpRouter",
    "LiveRun",
    "Note",
    "Progress",
    "Router",
    "RouterProgress",
    "RouterResult",
    "RunContext",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "Stream",
    "SuiteResult",
    "Truth",
    "build_stream",
    "format_table",
    "load_scenario",
    "parse_scenario",
    "render_report",
    "run_http",
    "run_live",
    "run_scenario",
    "run_stream",
    "run_suite",
]
