"""The one protocol every online statistic of the core follows.

As in river's ``stats.base.Univariate``: ``update`` learns one value and returns the statistic,
``get`` reads it. APOS adds event time: both take ``now`` (epoch seconds of the event), because
decay and windows are measured on the events' own clock, never on the wall clock.
"""

from __future__ import annotations

from typing import Protocol, Self, runtime_checkable

__all__ = ["EventTimeStatistic"]


@runtime_checkable
class EventTimeStatistic(Protocol):
    """A statistic learnt one value at a time, in event time."""

    def update(self, x: float, now: float) -> Self:
        """Learn ``x``, observed at event time ``now``; return the statistic."""
        ...

    def get(self, now: float) -> float:
        """The statistic's value as of event time ``now``."""
        ...
