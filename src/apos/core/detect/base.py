"""The protocol every detector of the core follows, in the shape of ``stats.base``.

A detector learns one payment event at a time (``learn_one``) and is asked, at ticks of
event time, what it sees (``evaluate``). Both take ``now`` (epoch seconds of event time,
never the wall clock). Per-event detectors (fraud, unusual amounts) may answer from
``learn_one`` directly; interval detectors (volume, success rate, latency) aggregate there
and answer from ``evaluate``. ``to_dict`` / ``from_dict`` make a detector's state part of a
snapshot, so a restarted instance continues where it stopped and every instance fed the
same stream reports the same findings.
"""

from __future__ import annotations

from typing import Any, Protocol, Self, runtime_checkable

from apos.core.detect.findings import Finding
from apos.core.events import PaymentEvent

__all__ = ["Detector"]


@runtime_checkable
class Detector(Protocol):
    """A streaming anomaly detector in event time."""

    name: str

    def learn_one(self, event: PaymentEvent, now: float) -> list[Finding]:
        """Learn one newly stored event (``now`` >= its event time, as for ``Engine.observe``:
        an event dated later is treated as happening at ``now``). Returns findings that one
        event alone justifies (a fraud velocity breach), usually none."""
        ...

    def evaluate(self, now: float) -> list[Finding]:
        """Findings as of event time ``now``: one per entity whose condition holds, and one
        with ``active=False`` for each entity whose condition has just cleared."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The detector's state, JSON-serialisable."""
        ...

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Self:
        """Rebuild a detector from :meth:`to_dict`."""
        ...
