"""The Bernoulli CUSUM shared by the success-rate and latency detectors, as an incident.

Each outcome is "bad" (a failure; a latency above the baseline p95) or "good". Against an
in-control probability ``p0`` of bad and an out-of-control ``p1 > p0``, the CUSUM adds each
outcome's log-likelihood ratio and never goes below zero::

    S <- max(0, S + bad * log(p1 / p0) + good * log((1 - p1) / (1 - p0)))

and signals when ``S >= h``. It is the sequential test with the shortest worst-case delay
for a given false-alarm rate (Moustakides 1986), and it accounts for sample size by
construction: three failures move ``S`` by three failures' worth, a thousand outcomes by a
thousand's. Outcomes are added per evaluation interval (the binomial CUSUM of the interval's
counts), so the per-event cost is a counter.

:class:`CusumIncident` wraps the statistic in the incident life cycle the detectors report:
raised at ``h``, held while ``S`` stays above ``clear_fraction * h``, cleared below it. The
change point is estimated as the last time ``S`` was zero (Page 1954); ``S`` is capped at
``cap_factor * h`` so that a long outage clears within a few hundred good outcomes.

>>> bad, good = bernoulli_weights(0.03, 0.13)  # p(failure): 97 % baseline, 10-point drop
>>> track = CusumIncident()
>>> track.update(3, 0, bad, good, h=13.0, cap=39.0, clear=6.5, now=60.0)  # a 0/3 minute
>>> track.active, round(track.statistic, 2)
(False, 4.4)
>>> track.update(100, 900, bad, good, h=13.0, cap=39.0, clear=6.5, now=120.0)
'raised'
>>> round(cusum_score(track.statistic, 13.0), 3)
0.999

References:
    [^1]: Page, E.S., 1954. Continuous inspection schemes. Biometrika 41(1/2), 100-115.
    [^2]: Reynolds, M.R. and Stoumbos, Z.G., 1999. A CUSUM chart for monitoring a
        proportion when inspecting continuously. Journal of Quality Technology 31(1), 87-108.
    [^3]: Moustakides, G.V., 1986. Optimal stopping times for detecting changes in
        distributions. Annals of Statistics 14(4), 1379-1387.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Literal

__all__ = ["CountWindow", "CusumIncident", "bernoulli_weights", "cusum_score"]

Transition = Literal["raised", "cleared"] | None


def bernoulli_weights(p0: float, p1: float) -> tuple[float, float]:
    """Log-likelihood ratios ``(bad, good)`` of one outcome for ``p1`` against ``p0``.

    >>> [round(w, 4) for w in bernoulli_weights(0.05, 0.15)]
    [1.0986, -0.1112]
    """
    return math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))


def cusum_score(statistic: float, h: float) -> float:
    """``1 - 10 ** (-S / h)``: 0.9 at the threshold, 0.99 at twice it (the default
    warning and critical severities), monotone in ``S``.

    >>> cusum_score(0.0, 13.0), cusum_score(13.0, 13.0), round(cusum_score(26.0, 13.0), 2)
    (0.0, 0.9, 0.99)
    """
    return min(1.0, max(0.0, 1.0 - math.pow(10.0, -statistic / h)))


class CusumIncident:
    """A CUSUM statistic and the incident it drives for one entity.

    Attributes:
        statistic: ``S``.
        active: Whether the condition holds (raised and not yet cleared).
        reported: Whether findings have been emitted for the current incident (a detector
            may hold back a child entity's findings while its parent's incident is open).
        zero_at: Event time ``S`` was last zero: the estimated change point.
        started_at: The change point of the current incident.
        frozen_since: Since when the baseline has stopped learning (``None``: learning).
    """

    __slots__ = ("active", "frozen_since", "reported", "started_at", "statistic", "zero_at")

    def __init__(self) -> None:
        self.statistic = 0.0
        self.active = False
        self.reported = False
        self.zero_at: float | None = None
        self.started_at: float | None = None
        self.frozen_since: float | None = None

    def update(
        self,
        bad: int,
        good: int,
        bad_weight: float,
        good_weight: float,
        *,
        h: float,
        cap: float,
        clear: float,
        now: float,
    ) -> Transition:
        """Add an interval's counts; ``"raised"`` or ``"cleared"`` when the state changes."""
        s = self.statistic + bad * bad_weight + good * good_weight
        if s <= 0.0:
            s = 0.0
        if s <= 0.0 or self.zero_at is None:
            self.zero_at = now
        self.statistic = min(s, cap)
        if not self.active and self.statistic >= h:
            self.active = True
            self.started_at = self.zero_at if self.zero_at is not None else now
            return "raised"
        if self.active and self.statistic <= clear:
            self.active = False
            return "cleared"
        return None

    def learning(self, now: float, clear: float, max_freeze_s: float) -> bool:
        """Whether the baseline may learn this interval: not while an incident is open or
        ``S`` is above the clearing level (an outage must not become the new normal),
        except after ``max_freeze_s`` of freezing (a lasting change is accepted)."""
        if self.active or self.statistic > clear:
            if self.frozen_since is None:
                self.frozen_since = now
            return now - self.frozen_since >= max_freeze_s
        self.frozen_since = None
        return True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        return {
            "statistic": self.statistic,
            "active": self.active,
            "reported": self.reported,
            "zero_at": self.zero_at,
            "started_at": self.started_at,
            "frozen_since": self.frozen_since,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> CusumIncident:
        """Rebuild from :meth:`to_dict`."""
        track = cls()
        track.statistic = float(state["statistic"])
        track.active = bool(state["active"])
        track.reported = bool(state["reported"])
        track.zero_at = state["zero_at"]
        track.started_at = state["started_at"]
        track.frozen_since = state["frozen_since"]
        return track


class CountWindow:
    """Counts of the last ``window_s`` seconds, kept per evaluation interval with running
    sums (for the ``observed`` side of the evidence).

    >>> window = CountWindow(60.0, 2)
    >>> for now in (10.0, 20.0, 30.0):
    ...     window.add(10.0, (10, 9))
    >>> window.sums, window.span
    ([30, 27], 30.0)
    """

    __slots__ = ("entries", "span", "sums", "window_s")

    def __init__(self, window_s: float, width: int) -> None:
        self.window_s = window_s
        self.entries: deque[tuple[float, tuple[int, ...]]] = deque()
        self.sums = [0] * width
        self.span = 0.0

    def add(self, span: float, counts: tuple[int, ...]) -> None:
        """Append one interval of ``span`` seconds; drop intervals beyond the window."""
        self.entries.append((span, counts))
        self.span += span
        sums = self.sums
        for i, c in enumerate(counts):
            sums[i] += c
        while self.entries and self.span - self.entries[0][0] >= self.window_s - 1e-9:
            old_span, old = self.entries.popleft()
            self.span -= old_span
            for i, c in enumerate(old):
                sums[i] -= c

    def to_dict(self) -> list[list[Any]]:
        """A JSON-serialisable form."""
        return [[span, list(counts)] for span, counts in self.entries]

    @classmethod
    def from_dict(cls, entries: list[list[Any]], window_s: float, width: int) -> CountWindow:
        """Rebuild from :meth:`to_dict`."""
        window = cls(window_s, width)
        for span, counts in entries:
            window.add(float(span), tuple(int(c) for c in counts))
        return window
