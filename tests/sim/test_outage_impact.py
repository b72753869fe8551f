"""Outage impact counts, checked against a scripted router on a tiny hand-made scenario."""

from __future__ import annotations

import numpy as np
import pytest

from apos.core.payment import Payment
from apos.sim.metrics import outage_impact
from apos.sim.routers import Choice
from apos.sim.runner import run_scenario
from apos.sim.scenario import Scenario, parse_scenario
from apos.sim.stream import build_stream
from apos.sim.truth import Incident
from tests.sim.conftest import tiny_doc

H = 3600.0


class Scripted:
    """``a`` except from ``leave`` until ``back`` (offsets), where it sends to ``b``."""

    def __init__(self, start: float, leave: float, back: float) -> None:
        self.leave, self.back = start + leave, start + back

    def route(self, payment: Payment, now: float) -> Choice:
        return Choice("b" if self.leave <= now < self.back else "a")

    def observe_outcome(self, connector: str, success: bool, now: float) -> None:
        pass

    def tick(self, now: float) -> None:
        pass


def test_counts_for_a_router_that_leaves_late_and_returns_late(tiny: Scenario) -> None:
    start = tiny.traffic.start
    # outage 1h-2h; the router leaves at 1h10m and comes back at 2h30m
    result = run_scenario(tiny, {"s": Scripted(start, 1 * H + 600, 2.5 * H)}, seed=1)
    stream = build_stream(tiny, seed=1)
    off = stream.times - start
    impact = result.routers["s"].outages[0]
    in_outage_on_a = int(((off >= H) & (off < H + 600)).sum())
    assert impact.pre_share == 1.0
    assert impact.routed_during == in_outage_on_a
    assert impact.routed_before_left == in_outage_on_a
    first_b = off[off >= H + 600][0]
    assert impact.seconds_to_leave == pytest.approx(first_b - H)
    first_back = off[off >= 2.5 * H][0]
    assert impact.seconds_to_return == pytest.approx(first_back - 2 * H)
    assert impact.payments_before_return == int(((off >= 2 * H) & (off < 2.5 * H)).sum())
    # and every payment routed to a during the outage failed
    r = result.routers["s"]
    down = (off >= H) & (off < 2 * H) & (r.chosen == 0)
    assert down.sum() == in_outage_on_a and not r.success[down].any()


def test_a_router_that_never_used_the_connector_has_nothing_to_leave(tiny: Scenario) -> None:
    start = tiny.traffic.start
    result = run_scenario(tiny, {"s": Scripted(start, 0.0, 10 * H)}, seed=1)
    impact = result.routers["s"].outages[0]
    assert impact.pre_share is None
    assert impact.routed_during == 0
    assert impact.routed_before_left is None and impact.seconds_to_leave is None


def test_a_router_that_never_leaves(tiny: Scenario) -> None:
    start = tiny.traffic.start
    result = run_scenario(tiny, {"s": Scripted(start, 10 * H, 10 * H)}, seed=1)
    stream = build_stream(tiny, seed=1)
    off = stream.times - start
    impact = result.routers["s"].outages[0]
    n = int(((off >= H) & (off < 2 * H)).sum())
    assert impact.routed_during == impact.routed_before_left == n
    assert impact.seconds_to_leave is None and impact.seconds_to_return is None


def test_flapping_sums_over_down_periods() -> None:
    times = np.arange(0.0, 1000.0, 1.0)
    chosen = np.zeros(1000, dtype=np.int16)  # always connector 0
    incident = Incident(
        "flapping", "a", 100.0, 700.0, "a flapping", ((100.0, 200.0), (400.0, 500.0))
    )
    impact = outage_impact(incident, 0, times, 0.0, chosen, np.ones(1000, dtype=bool))
    assert impact.routed_during == 200
    assert impact.routed_before_left == 200
    assert impact.seconds_to_leave is None


def test_only_the_outage_segment_counts() -> None:
    doc = tiny_doc(
        events=[
            {
                "kind": "outage",
                "connector": "a",
                "start": "1h",
                "end": "2h",
                "where": {"issuer_country": "BR"},
            }
        ]
    )
    scenario = parse_scenario(doc)
    start = scenario.traffic.start
    result = run_scenario(scenario, {"s": Scripted(start, 10 * H, 10 * H)}, seed=1)
    stream = build_stream(scenario, seed=1)
    off = stream.times - start
    br = stream.segments.codes["issuer_country"] == stream.truth.value_index["issuer_country"]["BR"]
    n = int(((off >= H) & (off < 2 * H) & br).sum())
    impact = result.routers["s"].outages[0]
    assert impact.routed_during == n
    assert impact.incident == "a outage (issuer_country=BR)"
