"""Mean with exponential forgetting in event time (used for connector latency)."""

from __future__ import annotations

from typing import Self

from apos.core.stats.decayed_beta import decay_factor

__all__ = ["DecayedMean"]


class DecayedMean:
    """Exponentially weighted mean whose weights decay with event time, not with count.

    ``get(now) = sum_i w_i x_i / sum_i w_i`` with ``w_i = 2 ** (-(T - t_i) / half_life)``.
    Unlike a count-based EW mean (river's ``EWMean``), a quiet hour forgets as much as a busy
    one, so the mean means the same thing at 3 a.m. and at noon, and replays match live runs.
    Late (older) values are added with their own discount, as in :class:`DecayedBeta`.

    Parameters:
        half_life_s: Seconds of event time after which a value's weight halves.

    Attributes:
        total: Discounted sum of values as of ``last_ts``.
        weight: Discounted number of values as of ``last_ts``.
        last_ts: Event time of the latest value, or ``None`` before the first.

    Examples:
        >>> latency = DecayedMean(half_life_s=60)
        >>> latency.update(100, now=0).update(300, now=0).get(now=0)
        200.0
        >>> latency.update(500, now=60).get(now=60)  # the first two now weigh 1/2 each
        350.0
        >>> DecayedMean(half_life_s=60).get(now=0)  # no values yet
        0.0

    References:
        [^1]: Finch, T., 2009. Incremental calculation of weighted mean and variance.
            University of Cambridge Computing Service.
    """

    __slots__ = ("half_life_s", "last_ts", "total", "weight")

    def __init__(self, half_life_s: float) -> None:
        if not half_life_s > 0.0:
            raise ValueError("half_life_s must be positive")
        self.half_life_s = half_life_s
        self.total = 0.0
        self.weight = 0.0
        self.last_ts: float | None = None

    def update(self, x: float, now: float) -> Self:
        """Learn one value ``x`` observed at event time ``now``."""
        if self.last_ts is None:
            self.last_ts = now
            w = 1.0
        elif now >= self.last_ts:
            kept = decay_factor(now - self.last_ts, self.half_life_s)
            self.total *= kept
            self.weight *= kept
            self.last_ts = now
            w = 1.0
        else:
            w = decay_factor(self.last_ts - now, self.half_life_s)
        self.total += w * x
        self.weight += w
        return self

    def evidence(self, now: float) -> float:
        """Discounted number of values behind the mean."""
        if self.last_ts is None:
            return 0.0
        return self.weight * decay_factor(now - self.last_ts, self.half_life_s)

    def get(self, now: float) -> float:
        """The mean as of ``now`` (decay cancels out; 0.0 before any value)."""
        return self.total / self.weight if self.weight > 0.0 else 0.0
