"""Just enough SVG for the simulator's report: line charts and stacked areas over time.

Self-contained markup (no scripts, no external assets) so a report is one HTML file that
opens anywhere, including a CI artifact viewer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

import numpy as np
import numpy.typing as npt

__all__ = ["PALETTE", "Band", "line_chart", "stacked_area"]

PALETTE = (
    "#2563eb",
    "#dc2626",
    "#16a34a",
    "#9333ea",
    "#ea580c",
    "#0891b2",
    "#ca8a04",
    "#db2777",
    "#4b5563",
    "#65a30d",
)

Band = tuple[float, float, str]  # x from, x to, label (shaded incident windows)

_W, _H = 900, 260
_L, _R, _T, _B = 56, 150, 14, 30  # margins: left axis, right legend, top, bottom axis


def _frame(
    x0: float,
    x1: float,
    y0: float,
    y1: float,
    bands: Sequence[Band],
    y_format: str,
    x_labels: Sequence[tuple[float, str]],
) -> tuple[list[str], Callable[[float], float], Callable[[float], float]]:
    pw, ph = _W - _L - _R, _H - _T - _B

    def sx(x: float) -> float:
        return _L + (x - x0) / (x1 - x0 or 1.0) * pw

    def sy(y: float) -> float:
        return _T + (1.0 - (y - y0) / (y1 - y0 or 1.0)) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" '
        f'width="{_W}" height="{_H}" font-family="system-ui,sans-serif" font-size="11">'
    ]
    for a, b, label in bands:
        xa, xb = sx(max(a, x0)), sx(min(b, x1))
        out.append(
            f'<rect x="{xa:.1f}" y="{_T}" width="{max(xb - xa, 1.5):.1f}" height="{ph}"'
            f' fill="#f59e0b" fill-opacity="0.13"><title>{escape(label)}</title></rect>'
        )
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        out.append(
            f'<line x1="{_L}" x2="{_L + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#e5e7eb"/>'
        )
        out.append(
            f'<text x="{_L - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" fill="#374151">'
            f"{format(y, y_format)}</text>"
        )
    for x, label in x_labels:
        if not x0 <= x <= x1:
            continue
        out.append(
            f'<text x="{sx(x):.1f}" y="{_H - 10}" text-anchor="middle" '
            f'fill="#374151">{escape(label)}</text>'
        )
    out.append(f'<rect x="{_L}" y="{_T}" width="{pw}" height="{ph}" fill="none" stroke="#9ca3af"/>')
    return out, sx, sy


def _legend(names: Sequence[str], colors: Sequence[str], dashed: set[str]) -> list[str]:
    out = []
    for i, (name, color) in enumerate(zip(names, colors, strict=True)):
        y = _T + 8 + i * 16
        dash = ' stroke-dasharray="5 3"' if name in dashed else ""
        out.append(
            f'<line x1="{_W - _R + 10}" x2="{_W - _R + 30}" y1="{y}" y2="{y}" '
            f'stroke="{color}" stroke-width="2.5"{dash}/>'
        )
        out.append(f'<text x="{_W - _R + 36}" y="{y + 4}" fill="#111827">{escape(name)}</text>')
    return out


def line_chart(
    x: npt.NDArray[np.float64],
    series: Mapping[str, npt.NDArray[np.float64]],
    *,
    y_range: tuple[float, float] | None = None,
    y_format: str = ".0%",
    bands: Sequence[Band] = (),
    x_labels: Sequence[tuple[float, str]] = (),
    dashed: Sequence[str] = (),
) -> str:
    """Lines over a shared x axis; NaN values break a line."""
    values = np.concatenate([v[np.isfinite(v)] for v in series.values()] or [np.zeros(1)])
    if y_range is None:
        lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
        pad = max((hi - lo) * 0.08, 0.005)
        y_range = (max(0.0, lo - pad), min(1.0, hi + pad))
    x0, x1 = float(x[0]), float(x[-1])
    out, sx, sy = _frame(x0, x1, *y_range, bands, y_format, x_labels)
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(series))]
    for (name, y), color in zip(series.items(), colors, strict=True):
        parts, pen = [], "M"
        for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
            if not math.isfinite(yi):
                pen = "M"
                continue
            yc = min(max(yi, y_range[0]), y_range[1])
            parts.append(f"{pen}{sx(xi):.1f},{sy(yc):.1f}")
            pen = "L"
        dash = ' stroke-dasharray="5 3"' if name in dashed else ""
        out.append(
            f'<path d="{" ".join(parts)}" fill="none" stroke="{color}" '
            f'stroke-width="1.6"{dash}><title>{escape(name)}</title></path>'
        )
    out += _legend(list(series), colors, set(dashed))
    out.append("</svg>")
    return "".join(out)


def stacked_area(
    x: npt.NDArray[np.float64],
    shares: npt.NDArray[np.float64],
    names: Sequence[str],
    *,
    bands: Sequence[Band] = (),
    x_labels: Sequence[tuple[float, str]] = (),
) -> str:
    """Shares (rows: x, columns: ``names``) stacked to 100 %, as step areas."""
    x0, x1 = float(x[0]), float(x[-1])
    out, sx, sy = _frame(x0, x1, 0.0, 1.0, bands, ".0%", x_labels)
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(names))]
    base = np.zeros(len(x) - 1)
    for ci, color in enumerate(colors):
        top = base + shares[:, ci]
        upper, lower = [], []
        for k in range(len(x) - 1):
            upper += [f"{sx(x[k]):.1f},{sy(top[k]):.1f}", f"{sx(x[k + 1]):.1f},{sy(top[k]):.1f}"]
            lower += [f"{sx(x[k]):.1f},{sy(base[k]):.1f}", f"{sx(x[k + 1]):.1f},{sy(base[k]):.1f}"]
        points = " ".join(upper + lower[::-1])
        out.append(
            f'<polygon points="{points}" fill="{color}" fill-opacity="0.75">'
            f"<title>{escape(names[ci])}</title></polygon>"
        )
        base = top
    out += _legend(list(names), colors, set())
    out.append("</svg>")
    return "".join(out)
