"""Anomalies in `apos simulate` reports and on the demo's screen, against the ground truth."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from rich.console import Console

from apos.cli.demo import _Screen, render_anomalies
from apos.core.detect.findings import AnomalyType, Entity, Evidence, Finding, Severity
from apos.sim.http import flagged_from_record, service_anomalies
from apos.sim.incidents import Flagged, IncidentLog, flagged_rows, ground_truth
from apos.sim.report import format_table, render_report
from apos.sim.runner import Progress, RouterProgress, RunResult, run_scenario
from apos.sim.scenario import Scenario, parse_scenario
from tests.sim.conftest import tiny_doc

CONNECTORS = [
    {"name": "a", "success_rate": 0.95, "latency_ms": {"median": 300, "p95": 900}},
    {"name": "b", "success_rate": 0.88, "latency_ms": {"median": 300, "p95": 900}},
]
TRAFFIC = {"payments": 7200, "start": "2026-03-03T12:00:00Z", "duration": "30m"}
OUTAGE = {"kind": "outage", "connector": "a", "start": "15m", "end": "22m", "failure": "timeout"}


def _scenario(*events: dict[str, Any]) -> Scenario:
    return parse_scenario(tiny_doc(traffic=TRAFFIC, connectors=CONNECTORS, events=list(events)))


@pytest.fixture(scope="module")
def outage_run() -> RunResult:
    return run_scenario(_scenario(OUTAGE), ("apos", "fixed_best"), seed=2, detect=True)


def test_an_outage_is_listed_with_when_it_began_and_when_apos_flagged_it(
    outage_run: RunResult,
) -> None:
    (truth,) = ground_truth(outage_run.scenario)
    assert outage_run.anomalies is not None
    failing = [
        a
        for a in outage_run.anomalies
        if a.anomaly_type == AnomalyType.HIGH_FAILURE_RATE.value and a.entity == "a"
    ]
    assert len(failing) == 1
    (row,) = failing
    assert row.began == truth.start
    assert row.incident == truth.label
    assert truth.start <= row.flagged <= truth.end
    assert row.delay == row.flagged - truth.start
    # every row either belongs to the outage (flagged while it lasted, about what it
    # reaches) or says it belongs to no injected incident
    for a in outage_run.anomalies:
        assert (a.began is None) == (a.incident is None)
        if a.began is not None:
            assert a.began == truth.start <= a.flagged


def test_the_table_and_the_html_report_list_it(outage_run: RunResult, tmp_path: Any) -> None:
    assert outage_run.anomalies is not None
    row = next(a for a in outage_run.anomalies if a.anomaly_type == "HighFailureRate")
    start = outage_run.scenario.traffic.start
    minutes, seconds = divmod(round(row.flagged - start), 60)
    flagged = f"+0:{minutes:02d}:{seconds:02d}"
    line = next(line for line in format_table(outage_run).splitlines() if "HighFailureRate" in line)
    assert "| a |" in line and "a outage" in line and "+0:15:00" in line and flagged in line
    assert "#### Anomalies" in format_table(outage_run)
    html = render_report(outage_run, tmp_path).read_text()
    section = html.split("<h2>Anomalies</h2>", 1)[1].split("<h2>", 1)[0]
    assert "HighFailureRate" in section and "a outage" in section
    assert "+0:15:00" in section and flagged in section


def test_stable_traffic_raises_nothing_it_attributes_to_an_incident() -> None:
    scenario = _scenario()
    result = run_scenario(scenario, ("apos",), seed=2, detect=True)
    assert ground_truth(scenario) == []
    assert result.anomalies is not None
    assert all(a.began is None and a.incident is None for a in result.anomalies)
    # nothing failed: a HighFailureRate would be a false alarm
    assert not [a for a in result.anomalies if a.anomaly_type == "HighFailureRate"]


def test_without_detection_there_is_no_section_and_no_monitor() -> None:
    result = run_scenario(_scenario(OUTAGE), ("apos",), seed=2, payments=2000)
    assert result.anomalies is None
    assert result.detection_seconds == 0.0
    assert "Anomalies" not in format_table(result)


def _finding(at: float, score: float, active: bool = True, connector: str = "a") -> Finding:
    return Finding(
        AnomalyType.HIGH_FAILURE_RATE,
        Entity(connector=connector),
        score,
        Severity.CRITICAL if score >= 0.99 else Severity.WARNING,
        at,
        at - 30.0,
        Evidence("success_rate", 0.95, 0.2, "test", 300.0, 40),
        "success_rate",
        active,
    )


def test_findings_become_one_incident_with_its_peak_and_a_false_alarm_has_no_start() -> None:
    log = IncidentLog()
    log.record([_finding(100.0, 0.9), _finding(110.0, 0.995), _finding(120.0, 0.95)])
    log.record([_finding(130.0, 0.2, active=False)])
    log.record([_finding(500.0, 0.91)])
    assert [(r.opened, r.cleared) for r in log.incidents] == [(100.0, 130.0), (500.0, None)]
    assert log.incidents[0].peak is not None and log.incidents[0].peak.score == 0.995

    scenario = _scenario(OUTAGE)
    (truth,) = ground_truth(scenario)
    shifted = IncidentLog()
    shifted.record([_finding(truth.start + 40.0, 0.99)])
    shifted.record([_finding(truth.start - 300.0, 0.95, connector="b")])  # before the outage
    shifted.record([_finding(truth.start + 50.0, 0.95, connector="b")])  # not the injured one
    rows = flagged_rows(shifted.incidents, ground_truth(scenario))
    assert [(r.entity, r.began) for r in rows] == [("b", None), ("a", truth.start)]
    assert rows[1].delay == 40.0 and rows[1].incident == truth.label


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat()


def test_the_services_records_are_read_and_matched_to_the_scenario() -> None:
    scenario = _scenario(OUTAGE)
    (truth,) = ground_truth(scenario)
    record = {
        "anomaly_type": "HighFailureRate",
        "severity": "critical",
        "score": 0.5,
        "peak_score": 0.99,
        "merchant_id": None,
        "connector": "a",
        "segment": None,
        "detected_at": _iso(truth.start + 12.0),
        "ended_at": None,
    }
    pages = [
        {"items": [record], "next_cursor": "c1"},
        {"items": [{**record, "connector": "b", "detected_at": _iso(truth.start - 60)}]},
    ]
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=pages[len(seen) - 1])

    client = httpx.Client(base_url="http://apos", transport=httpx.MockTransport(answer))
    rows = service_anomalies(client, {"Authorization": "Bearer k"}, scenario)
    assert rows is not None and [r.entity for r in rows] == ["b", "a"]
    assert rows[0].began is None  # b, before the outage: no injected incident
    assert rows[1] == flagged_from_record(record, ground_truth(scenario))
    assert rows[1].began == truth.start and rows[1].delay == pytest.approx(12.0)
    assert rows[1].score == 0.99 and rows[1].cleared is None
    assert seen[1].url.params["cursor"] == "c1"
    assert seen[0].headers["Authorization"] == "Bearer k"

    off = httpx.Client(
        base_url="http://apos", transport=httpx.MockTransport(lambda _: httpx.Response(503))
    )
    assert service_anomalies(off, {}, scenario) is None


def _text(renderable: Any) -> str:
    console = Console(record=True, width=220)
    console.print(renderable)
    return console.export_text()


def test_the_demo_screen_shows_when_the_outage_began_and_when_apos_flagged_it() -> None:
    start = 1_800_000_000.0
    anomalies = [
        Flagged("HighFailureRate", "adyen", "critical", 0.99, start + 309, None, start + 300, "x"),
        Flagged("VolumeSpike", "stripe", "warning", 0.93, start + 400, start + 700, None, None),
    ]
    shown = _text(render_anomalies(anomalies, start))
    adyen = next(line for line in shown.splitlines() if "HighFailureRate" in line)
    assert "adyen" in adyen and "began +0:05:00" in adyen and "flagged +0:05:09" in adyen
    assert "9s later" in adyen and "active" in adyen
    stripe = next(line for line in shown.splitlines() if "VolumeSpike" in line)
    assert "no injected incident" in stripe and "cleared +0:11:40" in stripe
    assert "none raised yet" in _text(render_anomalies([], start))
    assert "detection is off" in _text(render_anomalies(None, start))

    screen = _Screen("demo", "http://apos", 20.0, scenario_start=start, anomalies=anomalies)
    screen.progress = Progress(
        start + 600,
        600.0,
        10,
        100,
        {"apos": RouterProgress(10, 0.9, 0.9, {"adyen": 1.0})},
        [],
        {},
    )
    assert "flagged +0:05:09" in _text(screen.render())


def test_simulate_with_url_reads_the_services_anomalies(tmp_path: Any) -> None:
    from datetime import UTC, datetime

    from fastapi.testclient import TestClient

    from apos.adapters.db import upgrade_database
    from apos.service.app import build_app
    from apos.service.auth import Role, issue_key
    from apos.service.bootstrap import build_services
    from apos.settings import Settings
    from apos.sim.http import run_http

    url = f"sqlite:///{tmp_path / 'apos.db'}"
    upgrade_database(url)
    scenario = _scenario(OUTAGE)
    settings = Settings(
        database_url=url, clock="event", event_max_future_s=scenario.traffic.duration + 300
    )
    services = build_services(settings)
    issued = issue_key("sim", Role.OPERATOR, None, datetime.now(UTC))
    services.store.create_api_key(issued.record)
    try:
        with TestClient(build_app(settings, services)) as client:
            result = run_http(
                scenario,
                api_key=issued.token,
                client=client,
                speed=None,
                payments=300,
                baselines=("oracle",),
                anomalies=True,
            )
    finally:
        services.close()
    # the real API accepted the query; whatever it raised is matched to the moved scenario
    assert result.anomalies is not None
    truth = ground_truth(result.scenario)
    for a in result.anomalies:
        assert a.began is None or a.began in {t.start for t in truth}
