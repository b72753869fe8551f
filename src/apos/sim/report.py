"""Tables and the HTML report of a run.

:func:`format_table` gives Markdown (it reads fine in a terminal too); :func:`render_report`
writes one self-contained HTML file with inline SVG plots: success rate of every router
over time, the true success rate of every connector, and each router's routing share per
connector, with incidents shaded. When the run fed a detection Monitor (``RunResult.anomalies``)
both list the anomalies it raised beside the injected incident each belongs to.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from apos.sim.incidents import Flagged
from apos.sim.runner import RunResult
from apos.sim.svg import Band, line_chart, stacked_area

if TYPE_CHECKING:
    from apos.sim.suite import SuiteResult

__all__ = [
    "anomaly_rows",
    "format_anomalies",
    "format_duration",
    "format_offset",
    "format_table",
    "render_report",
]

ANOMALY_HEADER = [
    "anomaly",
    "entity",
    "severity",
    "score",
    "injected incident",
    "began",
    "flagged",
    "delay",
    "cleared",
]
MAX_TERMINAL_ANOMALIES = 40  # the HTML report lists up to 500


def _pct(x: float) -> str:
    return "—" if math.isnan(x) else f"{x * 100:.2f}%"


def format_duration(seconds: float | None) -> str:
    """``"2m 41s"``-style; ``"—"`` for ``None``."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_offset(t: float | None, start: float) -> str:
    """Event time ``t`` as ``+H:MM:SS`` from the scenario's start; ``"—"`` for ``None``."""
    if t is None:
        return "—"
    sign, seconds = ("+", t - start) if t >= start else ("-", start - t)
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{sign}{hours}:{minutes:02d}:{secs:02d}"


def anomaly_rows(anomalies: list[Flagged], start: float) -> list[list[str]]:
    """Rows of :data:`ANOMALY_HEADER`: times as offsets from ``start``; a false alarm has
    ``"—"`` as injected incident, start and delay; an incident still active at the end
    ``"—"`` as cleared."""
    return [
        [
            a.anomaly_type,
            a.entity,
            a.severity,
            f"{a.score:.2f}",
            a.incident or "—",
            format_offset(a.began, start),
            format_offset(a.flagged, start),
            format_duration(a.delay),
            format_offset(a.cleared, start),
        ]
        for a in anomalies
    ]


def format_anomalies(anomalies: list[Flagged] | None, start: float) -> str:
    """The ``Anomalies`` section of the terminal table ("" when detection did not run)."""
    if anomalies is None:
        return ""
    if not anomalies:
        return "#### Anomalies\n\nnone raised"
    rows = anomaly_rows(anomalies[:MAX_TERMINAL_ANOMALIES], start)
    more = len(anomalies) - MAX_TERMINAL_ANOMALIES
    missed = sum(1 for a in anomalies if a.began is None)
    lines = [
        f"#### Anomalies — {len(anomalies)} raised, {missed} with no injected incident "
        "(times from the scenario's start)",
        "",
        _markdown(ANOMALY_HEADER, rows, "lllrlrrrr"),
    ]
    if more > 0:
        lines.append(f"… and {more} more (see the HTML report)")
    return "\n".join(lines)


def _markdown(header: list[str], rows: list[list[str]], align: str) -> str:
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _run_rows(result: RunResult) -> tuple[list[str], list[list[str]]]:
    header = [
        "router",
        "success rate",
        "behind oracle",
        "payments lost vs oracle",
        "explored",
        "misrouted",
        "payments/s",
    ]
    rows = []
    for r in result.routers.values():
        rows.append(
            [
                f"**{r.name}**" if r.name == "apos" else r.name,
                _pct(r.success_rate),
                f"{r.regret_pp:.2f} pp",
                f"{r.regret:,}",
                f"{r.explored_share * 100:.1f}%",
                f"{r.invalid:,}",
                "—" if r.batch else f"{r.payments_per_second:,.0f}",
            ]
        )
    return header, rows


def _outage_rows(result: RunResult) -> list[list[str]]:
    rows = []
    for r in result.routers.values():
        if r.name == "oracle":
            continue
        for o in r.outages:
            rows.append(
                [
                    r.name,
                    o.incident,
                    "—" if o.pre_share is None else f"{o.pre_share * 100:.0f}%",
                    f"{o.routed_during:,}",
                    "—" if o.routed_before_left is None else f"{o.routed_before_left:,}",
                    format_duration(o.seconds_to_leave),
                    format_duration(o.seconds_to_return),
                ]
            )
    return rows


_OUTAGE_HEADER = [
    "router",
    "incident",
    "share before",
    "routed while down",
    "before traffic left",
    "time to leave",
    "time to return",
]


def format_table(result: RunResult | SuiteResult) -> str:
    """A Markdown summary of a run (routers, outages, notes) or of a suite."""
    if not isinstance(result, RunResult):
        from apos.sim.suite import format_suite_table

        return format_suite_table(result)
    sc = result.scenario
    parts = [
        f"### {sc.name} — {result.payments:,} payments, seed {result.seed}",
        "",
        _markdown(*_run_rows(result), "lrrrrrr"),
    ]
    outages = _outage_rows(result)
    if outages:
        parts += ["", _markdown(_OUTAGE_HEADER, outages, "llrrrrr")]
    noted = [r for r in result.routers.values() if r.notes]
    if noted:
        parts += [
            "",
            _markdown(
                ["router", "anomalies raised", "actions taken"],
                [[r.name, str(len(r.anomalies)), str(len(r.actions))] for r in noted],
                "lrr",
            ),
        ]
    anomalies = format_anomalies(result.anomalies, sc.traffic.start)
    if anomalies:
        parts += ["", anomalies]
    return "\n".join(parts)


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1120px;color:#111827}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px}
p.meta{color:#4b5563;margin-top:0} table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #e5e7eb;padding:4px 10px;font-size:13px} th{background:#f9fafb}
td.n{text-align:right;font-variant-numeric:tabular-nums} tr.apos td{font-weight:600}
.notes{max-height:320px;overflow:auto;font-size:12px;border:1px solid #e5e7eb;padding:6px}
"""


def _html_table(header: list[str], rows: list[list[str]], highlight: str | None = None) -> str:
    out = ["<table><tr>", *(f"<th>{escape(h)}</th>" for h in header), "</tr>"]
    for row in rows:
        cls = ' class="apos"' if highlight is not None and row[0].strip("*") == highlight else ""
        out.append(f"<tr{cls}>")
        for i, cell in enumerate(row):
            num = ' class="n"' if i > 0 and cell[:1] in "0123456789-—+." else ""
            out.append(f"<td{num}>{escape(cell.strip('*'))}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _x_labels(edges: np.ndarray) -> list[tuple[float, str]]:
    span = float(edges[-1] - edges[0])
    step = next(
        (s for s in (900, 1800, 3600, 7200, 10800, 21600, 43200, 86400) if span / s <= 9), 86400 * 7
    )
    first = math.ceil(edges[0] / step) * step
    fmt = "%H:%M" if span <= 2 * 86400 else "%a %H:%M"
    return [
        (float(t), datetime.fromtimestamp(t, UTC).strftime(fmt))
        for t in np.arange(first, edges[-1] + 1, step)
    ]


def _anomalies_html(anomalies: list[Flagged], start: float) -> str:
    if not anomalies:
        return "<p>None raised.</p>"
    shown = anomalies[:500]
    more = f"<p>… and {len(anomalies) - 500} more.</p>" if len(anomalies) > 500 else ""
    intro = (
        "<p class='meta'>Incidents the anomaly detectors raised on APOS's outcome events, "
        "beside the injected incident each belongs to (“—”: none; a false alarm, or a "
        "consequence of APOS's own failover, such as traffic moving to another connector). "
        "Times are event time from the scenario's start; delay is from the injected "
        "incident's start to the first finding.</p>"
    )
    return intro + _html_table(ANOMALY_HEADER, anomaly_rows(shown, start)) + more


def render_report(result: RunResult, out_dir: str | Path, name: str | None = None) -> Path:
    """Write ``<out_dir>/<scenario>-seed<seed>.html`` and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name or f'{result.scenario.name}-seed{result.seed}'}.html"
    sc = result.scenario
    ser = result.series
    x = ser.edges
    mid = (x[:-1] + x[1:]) / 2
    start = sc.traffic.start
    bands: list[Band] = []
    for inc in result.incidents:
        windows = inc.down_windows or ((inc.start, max(inc.end, inc.start + 1.0)),)
        bands += [(start + a, start + b, inc.label) for a, b in windows]
    labels = _x_labels(x)

    sr_chart = line_chart(mid, ser.success_rate, bands=bands, x_labels=labels, dashed=["oracle"])
    truth_chart = line_chart(
        mid,
        dict(zip(result.connectors, ser.true_rate.T, strict=True)),
        bands=bands,
        x_labels=labels,
    )
    share_charts = [
        f"<h3>{escape(name_)}</h3>"
        + stacked_area(x, ser.share[name_], result.connectors, bands=bands, x_labels=labels)
        for name_ in ser.share
    ]
    header, rows = _run_rows(result)
    outages = _outage_rows(result)
    notes = [(n_, note) for n_, r in result.routers.items() for note in r.notes]
    notes.sort(key=lambda item: item[1].time)
    incidents = "".join(
        f"<li>{escape(i.label)}: {datetime.fromtimestamp(start + i.start, UTC):%H:%M}"
        + (f" to {datetime.fromtimestamp(start + i.end, UTC):%H:%M}" if i.end > i.start else "")
        + "</li>"
        for i in result.incidents
    )
    html = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>APOS simulation: {escape(sc.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Simulation: {escape(sc.name)}</h1>",
        f"<p class='meta'>{escape(sc.description)}<br>{result.payments:,} payments, seed "
        f"{result.seed}, {datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M} UTC + "
        f"{format_duration(sc.traffic.duration)}; connectors: {', '.join(result.connectors)}"
        f"; oracle success rate {_pct(result.oracle_success_rate)}.</p>",
        "<h2>Results</h2>",
        _html_table(header, rows, highlight="apos"),
    ]
    if incidents:
        html += ["<h2>Incidents (ground truth)</h2><ul>", incidents, "</ul>"]
    if outages:
        html += [
            "<h2>Outages</h2>",
            _html_table(_OUTAGE_HEADER, outages, highlight="apos"),
            "<p class='meta'>Definitions: docs/simulator.md, “Outage impact”.</p>",
        ]
    if result.anomalies is not None:
        html += ["<h2>Anomalies</h2>", _anomalies_html(result.anomalies, start)]
    html += [
        "<h2>Success rate over time</h2>",
        sr_chart,
        "<h2>True success rate per connector</h2>",
        truth_chart,
        "<h2>Routing share per connector</h2>",
        *share_charts,
    ]
    if notes:
        items = "".join(
            f"<li>{datetime.fromtimestamp(n.time, UTC):%H:%M:%S} <b>{escape(r)}</b> "
            f"{escape(n.kind)}: {escape(n.text)}</li>"
            for r, n in notes[:500]
        )
        more = f"<p>… and {len(notes) - 500} more.</p>" if len(notes) > 500 else ""
        html += [
            "<h2>Anomalies raised and actions taken</h2>",
            f"<div class='notes'><ul>{items}</ul>{more}</div>",
        ]
    html.append("</body></html>")
    path.write_text("".join(html), encoding="utf-8")
    return path
