"""``apos demo``: the service on embedded defaults, driven live by a built-in scenario.

The service (SQLite, in-process bus) runs in a background thread; the simulator routes every
payment through ``POST /v1/route`` and reports each outcome to ``POST /v1/events``, at
``speed`` times real time, while the baselines run beside it on the same payments. The
terminal shows the run as it happens; the API (and its audit log) stays up afterwards.

The service runs with ``clock = "event"``: at 20x speed simulated time runs ahead of the wall
clock, and breakers and learning must follow the payments' own time.

The screen also lists the anomalies the service raised (``GET /v1/anomalies``), each with
when the scenario's injected incident began and when APOS flagged it; the final table lists
them all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from apos.service.app import build_app
from apos.service.auth import Role, issue_key
from apos.service.bootstrap import build_services
from apos.service.logs import configure_logging
from apos.settings import Settings
from apos.sim import HttpRouter, Progress, format_table, load_scenario, render_report, run_live
from apos.sim.http import service_anomalies
from apos.sim.incidents import Flagged
from apos.sim.report import format_duration, format_offset
from apos.sim.scenario import Scenario

BASELINES = ("round_robin", "fixed_best", "sliding_window_sr", "oracle")
STATE_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim"}


def render_anomalies(anomalies: list[Flagged] | None, start: float, limit: int = 6) -> Panel:
    """The anomalies panel: the newest ``limit`` incidents the service raised, each with
    when the scenario's incident began and when APOS flagged it (offsets from ``start``)."""
    if anomalies is None:
        return Panel(Text("detection is off", style="dim"), title="anomalies")
    if not anomalies:
        body = Text("none raised yet", style="dim")
    else:
        body = Text()
        for a in anomalies[-limit:]:
            if body:
                body.append("\n")
            body.append(f"{a.anomaly_type:<16}", style=SEVERITY_STYLE.get(a.severity, ""))
            body.append(f" {a.entity:<22} {a.severity:<8} {a.score:4.2f}  ")
            if a.began is None:
                body.append("no injected incident", style="yellow")
            else:
                body.append(f"{a.incident} began {format_offset(a.began, start)}")
            body.append(f" · flagged {format_offset(a.flagged, start)}")
            if a.delay is not None:
                body.append(f" ({format_duration(a.delay)} later)", style="bold")
            if a.cleared is None:
                body.append(" · active", style="bold red")
            else:
                body.append(f" · cleared {format_offset(a.cleared, start)}", style="green")
    more = len(anomalies) - limit if anomalies else 0
    title = f"anomalies APOS raised ({len(anomalies)}{f', {more} not shown' if more > 0 else ''})"
    return Panel(body, title=title)


@dataclasses.dataclass
class _Screen:
    """What the live display shows; updated from progress points and the API."""

    scenario: str
    base: str
    speed: float
    progress: Progress | None = None
    connectors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    audit: list[str] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.monotonic)
    scenario_start: float = 0.0  # epoch seconds: offsets on screen count from it
    anomalies: list[Flagged] | None = dataclasses.field(default_factory=list)

    def render(self) -> Group:
        p = self.progress
        head = Text.assemble(
            ("APOS live demo", "bold"),
            f"  scenario {self.scenario} at {self.speed:g}x  ·  ",
            f"API {self.base}  ·  wall {time.monotonic() - self.started:4.0f} s",
        )
        if p is None:
            return Group(head, Text("starting…"))
        clock = datetime.fromtimestamp(p.time, UTC).strftime("%H:%M:%S")
        status = Text.assemble(
            f"simulated {clock} (+{p.elapsed / 60:4.1f} min)  ·  payments "
            f"{p.payments_done:,}/{p.payments_total:,}  ·  incidents: ",
            (", ".join(p.incidents) or "none", "bold red" if p.incidents else "green"),
        )
        table = Table(
            "router",
            "success (all)",
            "success (last 10 s)",
            "routing share (last 10 s)",
            expand=True,
        )
        for name, r in p.routers.items():
            share = "  ".join(f"{c} {v:4.0%}" for c, v in sorted(r.share.items()) if v >= 0.005)
            recent = (
                "—"
                if r.recent_success_rate != r.recent_success_rate
                else (f"{r.recent_success_rate:6.1%}")
            )
            style = "bold cyan" if name == "apos" else ""
            table.add_row(Text(name, style=style), f"{r.success_rate:6.2%}", recent, share)
        states = Text("connectors (APOS breakers): ")
        for c in self.connectors:
            states.append(f" {c['connector']} ", style=STATE_STYLE.get(c["state"], ""))
            states.append(f"[{c['state']}]  ")
        audit = Text("\n".join(self.audit[-5:]) or "no breaker changes yet", style="dim")
        return Group(
            head,
            status,
            table,
            states,
            render_anomalies(self.anomalies, self.scenario_start),
            Panel(audit, title="audit log (latest)"),
        )


def _start_server(settings: Settings) -> tuple[uvicorn.Server, threading.Thread, Any]:
    services = build_services(settings)
    app = build_app(settings, services)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="apos-server", daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError("the service did not start; see var/demo-server.log")
        time.sleep(0.05)
    return server, thread, services


def _poll_api(
    client: httpx.Client, headers: dict[str, str], screen: _Screen, scenario: Scenario
) -> None:
    with contextlib.suppress(httpx.HTTPError, RuntimeError, KeyError, ValueError):
        screen.anomalies = service_anomalies(client, headers, scenario, max_pages=1)
    try:
        screen.connectors = client.get("/v1/connectors", headers=headers).json()["items"]
        items = client.get("/v1/audit", params={"limit": 20}, headers=headers).json()["items"]
        screen.audit = [
            f"{a['at'][11:19]}  {a['action']:<22} {a['target']:<10} "
            f"{a['details'].get('reason', '')}"
            for a in reversed(items)
            if a["action"].startswith("connector.")
        ]
    except (httpx.HTTPError, KeyError, ValueError):
        pass


def run_demo(
    *,
    host: str,
    port: int,
    speed: float,
    scenario_name: str,
    keep_serving: bool,
    console: Console,
) -> int:
    """Run the demo; returns a process exit code."""
    scenario = load_scenario(scenario_name)
    var = Path("var")
    var.mkdir(exist_ok=True)
    db = var / "demo.db"
    for leftover in var.glob("demo.db*"):
        leftover.unlink()
    handle = (var / "demo-server.log").open("w")
    configure_logging("info", json=True, stream=handle)
    logging.getLogger("apos").setLevel(logging.WARNING)
    settings = Settings(
        database_url=f"sqlite:///{db}",
        host=host,
        port=port,
        clock="event",
        # At speed x, simulated time runs ahead of the wall clock by up to the scenario's
        # length: the window of accepted event time must cover it (apos.core.event_time).
        event_max_future_s=scenario.traffic.duration + 300.0,
        connectors=scenario.connector_names,
        tick_interval_s=0.2,
    )
    server, thread, services = _start_server(settings)
    admin = issue_key("demo-admin", Role.ADMIN, None, datetime.now(UTC))
    services.store.create_api_key(admin.record)
    base = f"http://{host}:{port}"
    headers = {"Authorization": f"Bearer {admin.token}"}
    console.print(
        f"APOS is serving {base} (OpenAPI: {base}/docs). Admin key, shown once:\n"
        f"  [bold]{admin.token}[/bold]\n"
    )
    # The scenario starts now, so the service sees event times near its own clock.
    scenario = dataclasses.replace(
        scenario, traffic=dataclasses.replace(scenario.traffic, start=float(int(time.time())))
    )
    screen = _Screen(scenario.name, base, speed, scenario_start=scenario.traffic.start)
    router = HttpRouter(base, admin.token, connectors=scenario.connector_names, batch_size=50)
    routers: dict[str, Any] = {"apos": router, **{b: b for b in BASELINES}}
    api = httpx.Client(base_url=base, timeout=5)
    run = run_live(scenario, routers, speed=speed, progress_every=10.0, tick_interval=1.0)
    with Live(screen.render(), console=console, refresh_per_second=4) as live:
        for progress in run:
            screen.progress = progress
            _poll_api(api, headers, screen, scenario)
            live.update(screen.render())
    router.close()
    result = run.result
    if result is not None:
        # The service's own records: its writer thread may lag the last events by a moment.
        time.sleep(1.0)
        _poll_api(api, headers, screen, scenario)
        result.anomalies = screen.anomalies
        console.print(format_table(result))
        report = render_report(result, var / "demo-report")
        console.print(f"report with plots: {report}")
    status = api.get("/v1/status", headers=headers).json()
    console.print(
        f"events stored: {status['counts']['events']:,}  ·  decisions: "
        f"{services.decisions.count():,}  ·  see GET /v1/decisions, /v1/audit"
    )
    if keep_serving:
        console.print(f"APOS keeps serving {base}; Ctrl-C to stop.")
        try:
            while thread.is_alive():
                thread.join(1)
        except KeyboardInterrupt:
            pass
    server.should_exit = True
    thread.join(10)
    services.close()
    api.close()
    handle.close()
    return 0
