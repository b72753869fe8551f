"""A decayed histogram of payment amounts on a log scale: quantiles that forget, cheaply.

Amounts are heavy-tailed and span six orders of magnitude across merchants and currencies,
so the histogram bins ``log(1 + amount)`` (amount in minor units) in fixed steps of
``bin_width`` (0.05 = 5% relative resolution). Every amount stays in the histogram with a
weight that halves every ``half_life_s`` of event time, using *forward decay*: a value seen
at ``t`` is added with weight ``exp(lambda * (t - L))`` against a landmark ``L``, so an
update touches one bin (no pass over the others) and all ratios (quantiles, shares) are
read without decaying anything. When the weights grow large the landmark moves and every
bin is rescaled once (rare: every ~43 half-lives).

It is a DDSketch with a fixed log mapping (``log1p`` instead of ``log``, so 0 is an
amount) and time decay; ``ddsketch`` itself has no decay and costs more per insert than
the per-event budget of the detection layer (a few microseconds) allows. Memory is at most
one float per occupied bin: ``log1p(10**15) / 0.05`` = 691 bins per histogram.

References:
    [^1]: Cormode, G., Shkapenyuk, V., Srivastava, D. and Xu, B., 2009. Forward decay: a
        practical time decay model for streaming systems. ICDE 2009, 138-149.
    [^2]: Masson, C., Rim, J.E. and Lee, H.K., 2019. DDSketch: a fast and fully-mergeable
        quantile sketch with relative-error guarantees. PVLDB 12(12), 2195-2205.
"""

from __future__ import annotations

import math
from typing import Any, Self

__all__ = ["DecayedLogHistogram", "HistogramView"]

_LN2 = math.log(2.0)
_RESCALE_AT = 30.0  # exponent (lambda * (t - L)) past which the landmark moves


class DecayedLogHistogram:
    """Time-decayed histogram of ``log1p(amount)``.

    Parameters:
        half_life_s: Seconds of event time after which an amount's weight halves.
        bin_width: Width of a bin in ``log1p`` units.

    Examples:
        >>> h = DecayedLogHistogram(half_life_s=86_400)
        >>> for amount in (900, 1000, 1000, 1100, 1200):
        ...     _ = h.add(amount, ts=0.0)
        >>> round(math.expm1(h.view().quantile_log(0.5)))  # the median, within one bin
        1029
        >>> round(h.weight(now=86_400.0), 6)  # five amounts, one half-life ago
        2.5
    """

    __slots__ = ("bin_width", "bins", "half_life_s", "landmark", "rate", "total")

    def __init__(self, half_life_s: float, bin_width: float = 0.05) -> None:
        if not half_life_s > 0.0 or not bin_width > 0.0:
            raise ValueError("half_life_s and bin_width must be positive")
        self.half_life_s = half_life_s
        self.bin_width = bin_width
        self.rate = _LN2 / half_life_s
        self.bins: dict[int, float] = {}
        self.total = 0.0
        self.landmark: float | None = None

    def bin_of(self, amount: int) -> int:
        """The bin ``amount`` (minor units, >= 0) falls in."""
        return int(math.log1p(amount) / self.bin_width)

    def add(self, amount: int, ts: float) -> int:
        """Learn one amount seen at event time ``ts``; return its bin."""
        b = int(math.log1p(amount) / self.bin_width)
        self.add_bin(b, ts)
        return b

    def add_bin(self, b: int, ts: float) -> None:
        """Learn one amount already mapped to its bin ``b`` (see :meth:`bin_of`)."""
        if self.landmark is None:
            self.landmark = ts
        exponent = self.rate * (ts - self.landmark)
        if exponent > _RESCALE_AT:
            self._rescale(ts)
            exponent = 0.0
        w = math.exp(exponent)
        self.bins[b] = self.bins.get(b, 0.0) + w
        self.total += w

    def _rescale(self, ts: float) -> None:
        assert self.landmark is not None
        factor = math.exp(-self.rate * (ts - self.landmark))
        self.bins = {b: m * factor for b, m in self.bins.items() if m * factor > 1e-300}
        self.total = sum(self.bins.values())
        self.landmark = ts

    def weight(self, now: float) -> float:
        """Decayed number of amounts as of ``now``."""
        if self.landmark is None:
            return 0.0
        return self.total * math.exp(-self.rate * (now - self.landmark))

    def view(self) -> HistogramView:
        """A read-only sorted view for quantiles and shares (O(bins log bins))."""
        return HistogramView(self.bins, self.total, self.bin_width)

    def to_dict(self) -> dict[str, Any]:
        """State, JSON-serialisable."""
        return {
            "half_life_s": self.half_life_s,
            "bin_width": self.bin_width,
            "bins": [[b, m] for b, m in self.bins.items()],
            "total": self.total,
            "landmark": self.landmark,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict`."""
        h = cls(float(state["half_life_s"]), float(state["bin_width"]))
        h.bins = {int(b): float(m) for b, m in state["bins"]}
        h.total = float(state["total"])
        h.landmark = None if state["landmark"] is None else float(state["landmark"])
        return h


class HistogramView:
    """Sorted bins and cumulative masses of a :class:`DecayedLogHistogram` at one moment.

    Masses are in the histogram's forward-decay units; only ratios are meaningful.
    """

    __slots__ = ("bin_width", "cumulative", "keys", "masses", "total")

    def __init__(self, bins: dict[int, float], total: float, bin_width: float) -> None:
        self.keys = sorted(bins)
        self.masses = [bins[b] for b in self.keys]
        running, cumulative = 0.0, []
        for m in self.masses:
            running += m
            cumulative.append(running)
        self.cumulative = cumulative
        self.total = running if running > 0.0 else total
        self.bin_width = bin_width

    def quantile_log(self, q: float) -> float:
        """The ``q`` quantile of ``log1p(amount)``, linear inside its bin."""
        if not self.keys:
            return 0.0
        target = q * self.total
        before = 0.0
        for b, m, cum in zip(self.keys, self.masses, self.cumulative, strict=True):
            if cum >= target:
                frac = (target - before) / m if m > 0.0 else 0.0
                return (b + min(1.0, max(0.0, frac))) * self.bin_width
            before = cum
        return (self.keys[-1] + 1) * self.bin_width

    def quantile_bin(self, q: float) -> int:
        """The bin holding the ``q`` quantile."""
        if not self.keys:
            return 0
        target = q * self.total
        for b, cum in zip(self.keys, self.cumulative, strict=True):
            if cum >= target:
                return b
        return self.keys[-1]

    def mad_log(self, center: float) -> float:
        """Median absolute deviation of ``log1p(amount)`` from ``center`` (bin centres)."""
        if not self.keys:
            return 0.0
        w = self.bin_width
        deviations = sorted(
            (abs((b + 0.5) * w - center), m) for b, m in zip(self.keys, self.masses, strict=True)
        )
        target, running = 0.5 * self.total, 0.0
        for deviation, m in deviations:
            running += m
            if running >= target:
                return deviation
        return deviations[-1][0]

    def share_below(self, b: int) -> float:
        """Share of the mass in bins strictly below ``b``."""
        mass = 0.0
        for key, cum in zip(self.keys, self.cumulative, strict=True):
            if key >= b:
                break
            mass = cum
        return mass / self.total if self.total > 0.0 else 0.0

    def share_above(self, b: int) -> float:
        """Share of the mass in bins strictly above ``b``."""
        below_or_at = 0.0
        for key, cum in zip(self.keys, self.cumulative, strict=True):
            if key > b:
                break
            below_or_at = cum
        return (self.total - below_or_at) / self.total if self.total > 0.0 else 0.0
