"""What a run measured: per-router summaries, outage impact and time series for plots.

Outage impact, for a connector that is down in [start, end) (only payments in the outage's
segment that could go to that connector count, the "matching" payments):

* ``pre_share``: the router's share of matching payments sent to the connector over the
  last :data:`WINDOW` matching payments before the incident (``None`` if below 2 %: it was
  not using the connector, so there was nothing to leave);
* ``routed_during``: matching payments sent to it while down (they all failed);
* ``routed_before_left``: those sent before traffic left it. Traffic has left at the first
  matching payment routed elsewhere from which, over the next :data:`WINDOW` matching
  payments, the connector's share is at most ``LEAVE_FRACTION × pre_share``;
* ``seconds_to_return`` / ``payments_before_return`` (only when traffic did leave): after
  ``end``, the first matching payment routed to the connector from which its share over
  the next :data:`WINDOW` is at least ``RETURN_FRACTION × pre_share``; the matching
  payments routed elsewhere meanwhile. Forward windows may run past the outage's end.

Flapping is reported as one incident: counts are summed over its down periods, times are
averaged over the periods where traffic did leave / return.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from apos.sim.truth import Incident

__all__ = [
    "LEAVE_FRACTION",
    "RETURN_FRACTION",
    "WINDOW",
    "OutageImpact",
    "TimeSeries",
    "bin_width",
    "outage_impact",
    "time_series",
]

WINDOW = 200
MIN_WINDOW = 20  # a forward window cut shorter than this by the end of the run decides nothing
MIN_PRE_SHARE = 0.02
LEAVE_FRACTION = 0.25
RETURN_FRACTION = 0.5


@dataclass(frozen=True, slots=True)
class OutageImpact:
    """How one router handled one outage (see the module docstring for the definitions)."""

    incident: str
    connector: str
    pre_share: float | None
    routed_during: int
    routed_before_left: int | None
    seconds_to_leave: float | None
    seconds_to_return: float | None
    payments_before_return: int | None


def outage_impact(
    incident: Incident,
    connector_index: int,
    times: npt.NDArray[np.float64],
    start: float,
    chosen: npt.NDArray[np.integer],
    matching: npt.NDArray[np.bool_],
) -> OutageImpact:
    """Impact of ``incident`` on a router that chose ``chosen`` (connector index per payment).

    Args:
        times: Epoch seconds of every payment.
        start: Epoch seconds of the scenario's start (incident windows are offsets).
        matching: Payments in the incident's segment that could go to the connector.
    """
    rows = np.flatnonzero(matching)
    t = times[rows]
    hit = (chosen[rows] == connector_index).astype(np.int64)
    # Share of the connector over the next WINDOW matching payments from each position.
    cum = np.concatenate([[0], np.cumsum(hit)])
    pos = np.arange(len(hit))
    stop = np.minimum(pos + WINDOW, len(hit))
    size = stop - pos
    ahead = (cum[stop] - cum[pos]) / np.maximum(size, 1)
    decidable = size >= MIN_WINDOW

    before = np.flatnonzero(t < start + incident.start)[-WINDOW:]
    pre = float(hit[before].mean()) if len(before) else 0.0
    pre_share = pre if pre >= MIN_PRE_SHARE else None

    during = 0
    before_left: list[int] = []
    leave_seconds: list[float] = []
    return_seconds: list[float] = []
    before_return: list[int] = []
    windows = incident.down_windows
    for w, (ws, we) in enumerate(windows):
        s, e = start + ws, start + we
        nxt = start + windows[w + 1][0] if w + 1 < len(windows) else np.inf
        d0, d1 = np.searchsorted(t, [s, e])
        during += int(hit[d0:d1].sum())
        if pre_share is None:
            continue
        left = d0 + np.flatnonzero(
            (hit[d0:d1] == 0) & decidable[d0:d1] & (ahead[d0:d1] <= LEAVE_FRACTION * pre_share)
        )
        if not len(left):
            before_left.append(int(hit[d0:d1].sum()))
            continue  # never left, so there is no return to measure
        j = int(left[0])
        before_left.append(int(hit[d0:j].sum()))
        leave_seconds.append(float(t[j] - s))
        a1 = int(np.searchsorted(t, nxt))
        back = d1 + np.flatnonzero(
            (hit[d1:a1] == 1) & decidable[d1:a1] & (ahead[d1:a1] >= RETURN_FRACTION * pre_share)
        )
        if len(back):
            j = int(back[0])
            return_seconds.append(float(t[j] - e))
            before_return.append(j - d1)

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    return OutageImpact(
        incident=incident.label,
        connector=incident.target,
        pre_share=pre_share,
        routed_during=during,
        routed_before_left=sum(before_left) if pre_share is not None else None,
        seconds_to_leave=mean(leave_seconds),
        seconds_to_return=mean(return_seconds),
        payments_before_return=sum(before_return) if before_return else None,
    )


_NICE_WIDTHS = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def bin_width(duration: float, max_bins: int = 150) -> float:
    """A round bin width (1 min … 1 day) giving at most ``max_bins`` bins."""
    for w in _NICE_WIDTHS:
        if duration / w <= max_bins:
            return float(w)
    return float(duration / max_bins)


@dataclass(frozen=True, slots=True)
class TimeSeries:
    """Per time bin: each router's success rate and routing share, and the true rates."""

    edges: npt.NDArray[np.float64]  # epoch seconds, len = bins + 1
    payments: npt.NDArray[np.int64]  # payments per bin
    success_rate: dict[str, npt.NDArray[np.float64]]  # router -> (bins,), NaN if empty
    share: dict[str, npt.NDArray[np.float64]]  # router -> (bins, C)
    true_rate: npt.NDArray[np.float64]  # (bins, C) mean true p where eligible, NaN if never


def time_series(
    times: npt.NDArray[np.float64],
    start: float,
    duration: float,
    p: npt.NDArray[np.floating],
    eligible: npt.NDArray[np.bool_],
    chosen: dict[str, npt.NDArray[np.integer]],
    success: dict[str, npt.NDArray[np.bool_]],
) -> TimeSeries:
    """Bin a run's outcomes by time for the report's plots."""
    width = bin_width(duration)
    bins = max(1, int(np.ceil(duration / width)))
    b = np.clip(((times - start) / width).astype(np.int64), 0, bins - 1)
    count = np.bincount(b, minlength=bins)
    denom = np.where(count > 0, count, 1)
    n_conn = p.shape[1]
    sr, share = {}, {}
    for name, ch in chosen.items():
        wins = np.bincount(b, weights=success[name].astype(float), minlength=bins)
        sr[name] = np.where(count > 0, wins / denom, np.nan)
        sh = np.zeros((bins, n_conn))
        for ci in range(n_conn):
            sh[:, ci] = np.bincount(b, weights=(ch == ci).astype(float), minlength=bins) / denom
        share[name] = sh
    true_rate = np.full((bins, n_conn), np.nan)
    for ci in range(n_conn):
        e = eligible[:, ci]
        num = np.bincount(b[e], weights=p[e, ci].astype(float), minlength=bins)
        cnt = np.bincount(b[e], minlength=bins)
        true_rate[:, ci] = np.where(cnt > 0, num / np.maximum(cnt, 1), np.nan)
    edges = start + width * np.arange(bins + 1, dtype=float)
    return TimeSeries(edges, count, sr, share, true_rate)
