"""``apos demo``: the service on embedded defaults, driven live by a built-in scenario.

The service (SQLite, in-process bus) runs in a background thread; the simulator routes every
payment through ``POST /v1/route`` and reports each outcome to ``POST /v1/events``, at
``speed`` times real time, while the baselines run beside it on the same payments. The
terminal shows the run as it happens; the API (and its audit log) stays up afterwards.

The service runs with ``clock = "event"``: at 20x speed simulated time runs ahead of the wall
clock, and breakers and learning must follow the payments' own time.
"""

from __future__ import annotations

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

BASELINES = ("round_robin", "fixed_best", "sliding_window_sr", "oracle")
STATE_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}


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
        return Group(head, status, table, states, Panel(audit, title="audit log (latest)"))


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


def _poll_api(client: httpx.Client, headers: dict[str, str], screen: _Screen) -> None:
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
    screen = _Screen(scenario.name, base, speed)
    router = HttpRouter(base, admin.token, connectors=scenario.connector_names, batch_size=50)
    routers: dict[str, Any] = {"apos": router, **{b: b for b in BASELINES}}
    api = httpx.Client(base_url=base, timeout=5)
    run = run_live(scenario, routers, speed=speed, progress_every=10.0, tick_interval=1.0)
    with Live(screen.render(), console=console, refresh_per_second=4) as live:
        for progress in run:
            screen.progress = progress
            _poll_api(api, headers, screen)
            live.update(screen.render())
    router.close()
    result = run.result
    if result is not None:
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
