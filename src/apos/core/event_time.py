"""The window of event time APOS accepts, relative to when it receives an event.

Learning, breakers, experiments and detectors run on event time (``occurred_at``), so a
sender's clock is an input like any other and must not be trusted blindly: one event dated
``9999-12-31`` would otherwise move the clock every merchant's statistics decay against. The
window has two edges:

- **future skew** (``max_future_s``): an event more than this far ahead of its receipt is
  refused at ingestion (422 on ``occurred_at``, kept as a dead letter). Connectors' and
  switches' clocks drift by seconds, not minutes; the default is five minutes.
- **past horizon** (``max_age_s``): an event older than this at receipt is stored (rollups
  and analytics count it) but not learnt. What a connector did a week ago says little about
  now once decay has halved it many times over, and a late flood of old events must not
  replay stale breaker openings.

Within the window, the engine still never learns an event later than its own ``now``
(:meth:`apos.core.engine.Engine.observe` clamps), so an event a few minutes ahead cannot
advance the clock for others either.

>>> window = EventTimeWindow(max_future_s=300, max_age_s=86_400)
>>> window.verdict(1_000_000.0 + 299, received=1_000_000.0)
'ok'
>>> window.verdict(1_000_000.0 + 301, received=1_000_000.0)
'future'
>>> window.verdict(1_000_000.0 - 86_401, received=1_000_000.0)
'stale'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["EventTimeWindow", "Verdict"]

Verdict = Literal["ok", "future", "stale"]


@dataclass(frozen=True, slots=True)
class EventTimeWindow:
    """Accepted event time around receipt: at most ``max_future_s`` ahead (else refused) and
    at most ``max_age_s`` behind (else stored, not learnt). Both in seconds, positive."""

    max_future_s: float = 300.0
    max_age_s: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        for name in ("max_future_s", "max_age_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")

    def verdict(self, occurred: float, received: float) -> Verdict:
        """Whether an event at ``occurred`` received at ``received`` (epoch seconds) is inside
        the window (``ok``), too far ahead (``future``) or too old to learn (``stale``)."""
        if not math.isfinite(occurred) or occurred > received + self.max_future_s:
            return "future"
        if occurred < received - self.max_age_s:
            return "stale"
        return "ok"

    def latest(self, received: float) -> float:
        """The latest event time accepted at ``received``: the most an event can move a clock
        that follows event time."""
        return received + self.max_future_s

    def future_message(self) -> str:
        """The refusal's wording (the value itself is not echoed)."""
        return (
            f"is more than {self.max_future_s:g} s ahead of the time APOS received the event "
            "(APOS_EVENT_MAX_FUTURE_S); check the sender's clock"
        )
