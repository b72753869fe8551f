"""Incidents the detectors raised during a run, set against the scenario's injected ones.

Shared by the detection benchmark (:mod:`apos.sim.detect_bench`), the ``Anomalies``
section of ``apos simulate`` reports and the live demo:

* :func:`ground_truth` — a scenario's injected incidents (:class:`Labelled`), each with the
  anomaly it should raise, about what, from when to when (epoch seconds);
* :class:`IncidentLog` — groups a Monitor's findings into incidents (:class:`Raised`): the
  first active finding of an ``incident_key`` opens one, the clearing finding closes it;
* :func:`match` / :func:`flagged_rows` — each raised incident beside the injected incident
  it belongs to (:class:`Flagged`: when that began, when APOS flagged it, the delay), or
  none: a false alarm;
* :class:`MonitoredRouter` — wraps a simulator router (the APOS lane) so that the outcome
  events it observes also feed a :class:`~apos.core.detect.monitor.Monitor`, ticked in
  simulated time with the router.

A raised incident belongs to an injected one when it opens between the injected incident's
start and its end plus :data:`GRACE_S`, and concerns the injured entity or one the injury
reaches (an outage's merchants and payment methods; a merchant's connectors and the overall
volume). Of several, the one whose primary anomaly it is wins, then the latest begun.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from apos.core.detect.config import DetectionConfig
from apos.core.detect.findings import AnomalyType, Entity, Finding
from apos.core.detect.monitor import Monitor
from apos.core.events import PaymentEvent
from apos.sim.routers import Note
from apos.sim.scenario import (
    AmountShift,
    Degradation,
    Flapping,
    FraudBurst,
    Outage,
    Scenario,
    VolumeDrop,
)

__all__ = [
    "GRACE_S",
    "Flagged",
    "IncidentLog",
    "Labelled",
    "MonitoredRouter",
    "Raised",
    "entity_text",
    "flagged_row",
    "flagged_rows",
    "ground_truth",
    "match",
]

GRACE_S = 600.0  # a finding this long after an injected incident ended still belongs to it


@dataclass(frozen=True, slots=True)
class Labelled:
    """An injected incident: what should be flagged, about what, when (epoch seconds)."""

    kind: str
    primary: AnomalyType
    connector: str | None
    merchant: str | None
    start: float
    end: float
    label: str = ""

    def concerns(self, entity: Entity, opened: float) -> bool:
        """Whether an incident about ``entity`` opened at ``opened`` belongs to this one."""
        if not self.start <= opened <= self.end + GRACE_S:
            return False
        if self.connector is not None:
            # outage, degradation: the connector, its payment methods and merchants, and
            # what it does to merchants' and overall series
            return entity.connector in (self.connector, None)
        # merchant incidents reach the merchant, the connectors and the overall series
        return entity.merchant_id in (self.merchant, None)

    def detects(self, anomaly_type: AnomalyType, entity: Entity, opened: float) -> bool:
        """Whether such an incident is the primary anomaly this one should raise."""
        if anomaly_type is not self.primary or not self.concerns(entity, opened):
            return False
        if self.connector is not None:
            return entity.connector == self.connector
        return entity.merchant_id == self.merchant or (
            self.merchant is None and entity.merchant_id is None
        )

    def related(self, raised: Raised) -> bool:
        """:meth:`concerns` for a raised incident."""
        return self.concerns(raised.first.entity, raised.opened)

    def detected_by(self, raised: Raised) -> bool:
        """:meth:`detects` for a raised incident."""
        return self.detects(raised.first.anomaly_type, raised.first.entity, raised.opened)


def ground_truth(scenario: Scenario) -> list[Labelled]:
    """The injected incidents of ``scenario`` with the anomaly each should raise.

    Outages, flapping and degradations of a connector should raise ``HighFailureRate``
    about it; a merchant's volume drop ``VolumeDrop``, an amount shift ``UnusualAmount``,
    a card-testing burst ``PotentialFraud``. A new connector is not an incident.
    """
    t0, end = scenario.traffic.start, scenario.traffic.duration
    out: list[Labelled] = []
    for e in scenario.events:
        if isinstance(e, Outage | Flapping):
            kind = "outage" if isinstance(e, Outage) else "flapping"
            out.append(
                Labelled(
                    kind,
                    AnomalyType.HIGH_FAILURE_RATE,
                    e.connector,
                    None,
                    t0 + e.start,
                    t0 + min(e.end, end),
                    f"{e.connector} {kind}",
                )
            )
        elif isinstance(e, Degradation):
            out.append(
                Labelled(
                    "degradation",
                    AnomalyType.HIGH_FAILURE_RATE,
                    e.connector,
                    None,
                    t0 + e.start,
                    t0 + min(e.end + e.recovery_ramp, end),
                    f"{e.connector} degradation",
                )
            )
        elif isinstance(e, VolumeDrop):
            out.append(
                Labelled(
                    "volume drop",
                    AnomalyType.VOLUME_DROP,
                    None,
                    e.merchant,
                    t0 + e.start,
                    t0 + min(e.end, end),
                    f"volume drop at {e.merchant or 'all merchants'}",
                )
            )
        elif isinstance(e, AmountShift):
            out.append(
                Labelled(
                    "amount shift",
                    AnomalyType.UNUSUAL_AMOUNT,
                    None,
                    e.merchant,
                    t0 + e.start,
                    t0 + min(e.end, end),
                    f"amount shift at {e.merchant}",
                )
            )
        elif isinstance(e, FraudBurst):
            out.append(
                Labelled(
                    "card testing",
                    AnomalyType.POTENTIAL_FRAUD,
                    None,
                    e.merchant,
                    t0 + e.start,
                    t0 + min(e.end, end),
                    f"card testing at {e.merchant}",
                )
            )
    return out


@dataclass(slots=True)
class Raised:
    """One incident a Monitor raised: its first active finding, its latest one, the
    strongest (``peak``) and when it cleared (``None``: still active at the end)."""

    first: Finding
    last: Finding
    cleared: float | None = None
    peak: Finding | None = None

    def __post_init__(self) -> None:
        if self.peak is None:
            self.peak = self.first

    @property
    def opened(self) -> float:
        """Event time of the first active finding."""
        return self.first.at


class IncidentLog:
    """Groups findings into incidents, one per ``incident_key`` from the first active
    finding to the clearing one (as ``anomaly_records`` keeps one record per incident)."""

    def __init__(self) -> None:
        self.incidents: list[Raised] = []
        self._open: dict[str, Raised] = {}

    def record(self, findings: Iterable[Finding]) -> None:
        """Fold ``findings`` (in the order the Monitor returned them) into the incidents."""
        for f in findings:
            key = f.incident_key
            raised = self._open.get(key)
            if f.active:
                if raised is None:
                    raised = self._open[key] = Raised(f, f)
                    self.incidents.append(raised)
                raised.last = f
                if raised.peak is None or f.score > raised.peak.score:
                    raised.peak = f
            elif raised is not None:
                raised.cleared = f.at
                raised.last = f
                del self._open[key]


# --------------------------------------------------------------------------- report rows


def entity_text(entity: Entity) -> str:
    """What an anomaly is about, for people: ``adyen``, ``m_shop · adyen``, ``all``."""
    parts = [p for p in (entity.merchant_id, entity.connector, entity.segment) if p]
    return " · ".join(parts) or "all traffic"


@dataclass(frozen=True, slots=True)
class Flagged:
    """One raised incident beside the injected incident it belongs to (a report row).

    Times are epoch seconds of event time. ``began`` and ``incident`` are ``None`` for a
    false alarm (no injected incident it belongs to); ``cleared`` is ``None`` for an
    incident still active when the run ended.
    """

    anomaly_type: str
    entity: str
    severity: str
    score: float  # the strongest finding's
    flagged: float
    cleared: float | None
    began: float | None
    incident: str | None

    @property
    def delay(self) -> float | None:
        """Seconds from the injected incident's start to the first finding."""
        return None if self.began is None else self.flagged - self.began


def match(
    anomaly_type: AnomalyType, entity: Entity, opened: float, labelled: Sequence[Labelled]
) -> Labelled | None:
    """The injected incident a raised one belongs to (see the module docstring), or None."""
    primary = [lab for lab in labelled if lab.detects(anomaly_type, entity, opened)]
    candidates = primary or [lab for lab in labelled if lab.concerns(entity, opened)]
    return max(candidates, key=lambda lab: lab.start) if candidates else None


def flagged_row(
    anomaly_type: AnomalyType,
    entity: Entity,
    severity: str,
    score: float,
    flagged: float,
    cleared: float | None,
    labelled: Sequence[Labelled],
) -> Flagged:
    """One :class:`Flagged` row, matched against ``labelled``."""
    lab = match(anomaly_type, entity, flagged, labelled)
    return Flagged(
        anomaly_type.value,
        entity_text(entity),
        severity,
        score if math.isfinite(score) else 0.0,
        flagged,
        cleared,
        None if lab is None else lab.start,
        None if lab is None else lab.label or lab.kind,
    )


def flagged_rows(raised: Sequence[Raised], labelled: Sequence[Labelled]) -> list[Flagged]:
    """The report rows of ``raised``, in the order they were flagged."""
    rows = []
    for r in sorted(raised, key=lambda r: r.opened):
        peak = r.peak or r.first
        rows.append(
            flagged_row(
                r.first.anomaly_type,
                r.first.entity,
                peak.severity.value,
                peak.score,
                r.opened,
                r.cleared,
                labelled,
            )
        )
    return rows


# --------------------------------------------------------------------------- the lane


class MonitoredRouter:
    """A simulator router whose observed outcome events also feed a Monitor.

    ``route`` is the wrapped router's own (the hot path gains nothing); ``observe`` hands
    the event to the router, then to the Monitor at the same ``now`` (the Monitor dates it
    at its own event time, the outcome's completion); ``tick`` ticks both (the Monitor
    evaluates once per ``interval_s`` of simulated time whatever the tick rate). Only runs
    that ask for detection pay for it (``run_scenario(..., detect=True)``).
    """

    def __init__(self, router: Any, config: DetectionConfig | None = None) -> None:
        self.router = router
        self.monitor = Monitor(config)
        self.log = IncidentLog()
        self.route = router.route
        self._observe = router.observe
        self.events = 0
        self.seconds = 0.0  # wall time spent in the Monitor

    def observe(self, event: PaymentEvent, now: float) -> None:
        """The router learns the outcome, then the Monitor."""
        self._observe(event, now)
        began = time.perf_counter()
        found = self.monitor.observe(event, now)
        if found:
            self.log.record(found)
        self.seconds += time.perf_counter() - began
        self.events += 1

    def tick(self, now: float) -> object:
        """Tick the router, then the Monitor."""
        result = self.router.tick(now)
        began = time.perf_counter()
        found = self.monitor.tick(now)
        if found:
            self.log.record(found)
        self.seconds += time.perf_counter() - began
        return result

    def drain_notes(self) -> list[Note]:
        """The wrapped router's notes, if it keeps any."""
        drain = getattr(self.router, "drain_notes", None)
        return list(drain()) if drain is not None else []

    def rows(self, labelled: Sequence[Labelled]) -> list[Flagged]:
        """The incidents raised so far as report rows."""
        return flagged_rows(self.log.incidents, labelled)
