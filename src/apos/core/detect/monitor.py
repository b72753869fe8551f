"""The Monitor: every detector of the core behind one ``observe`` / ``tick`` / ``snapshot``.

The shell feeds it the same newly stored events the engine learns from (``observe``) and
ticks it with event time (``tick``); both return :class:`~apos.core.detect.findings.Finding`
values for the shell to turn into anomaly records, alerts and metrics. Like the
:class:`~apos.core.engine.Engine` it does no I/O, never reads the wall clock, and is
deterministic: the same stream of ``observe`` and ``tick`` calls gives the same findings,
and ``Monitor.restore(monitor.snapshot())`` continues exactly where the original would.

Detectors, in the order they run (:data:`DETECTORS`):

========================  ==========================================  ==================
``success_rate``          HighFailureRate per connector, connector ×  interval (CUSUM)
                          payment method, merchant × connector
``latency``               LatencyIncrease per connector (p95)          interval (CUSUM)
``volume``                VolumeSpike / VolumeDrop per merchant,       interval (Poisson)
                          connector and overall (seasonal baseline)
``unusual_amount``        UnusualAmount per merchant and currency      per event + interval
``fraud``                 PotentialFraud: velocity, card testing,      per event + interval
                          high value
``series``                UnusualPattern on metric series              interval
========================  ==========================================  ==================

>>> from datetime import UTC, datetime
>>> from apos.core.events import PaymentStatus
>>> monitor = Monitor()
>>> event = PaymentEvent.model_construct(
...     event_id="e1", payment_id="p1", attempt=1, merchant_id="m1", connector="adyen",
...     status=PaymentStatus.SUCCEEDED, amount=1000, currency="EUR", payment_method="card",
...     latency_ms=200.0, fingerprint="card_0001", error_code=None,
...     occurred_at=datetime.fromtimestamp(100.0, UTC))
>>> monitor.observe(event, now=100.0), monitor.tick(now=100.0)
([], [])
>>> again = Monitor.restore(monitor.snapshot())
>>> again.snapshot() == monitor.snapshot()
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from apos.core.detect.amount import AmountConfig, UnusualAmountDetector
from apos.core.detect.base import Detector
from apos.core.detect.config import DetectionConfig
from apos.core.detect.findings import Finding
from apos.core.detect.fraud import FraudConfig, FraudDetector
from apos.core.detect.latency import LatencyDetector
from apos.core.detect.pattern import SeriesConfig, SeriesDetector
from apos.core.detect.sections import config_from_mapping
from apos.core.detect.success_rate import SuccessRateDetector
from apos.core.detect.volume import VolumeDetector
from apos.core.events import PaymentEvent

__all__ = ["DETECTORS", "SNAPSHOT_VERSION", "Monitor", "build_detectors"]

SNAPSHOT_VERSION = 1

# The registration point: name -> (build from the config, class with from_dict). A new
# detector is added here, and nowhere else, to run in every Monitor and be snapshotted.
DETECTORS: dict[str, tuple[Callable[[DetectionConfig], Detector], type[Any]]] = {
    SuccessRateDetector.name: (
        lambda c: SuccessRateDetector(c.success_rate, c.connector_error_codes),
        SuccessRateDetector,
    ),
    LatencyDetector.name: (lambda c: LatencyDetector(c.latency), LatencyDetector),
    VolumeDetector.name: (lambda c: VolumeDetector(c.volume), VolumeDetector),
    UnusualAmountDetector.name: (
        lambda c: UnusualAmountDetector(config_from_mapping(AmountConfig, c.amount, "amount.")),
        UnusualAmountDetector,
    ),
    FraudDetector.name: (
        lambda c: FraudDetector(config_from_mapping(FraudConfig, c.fraud, "fraud.")),
        FraudDetector,
    ),
    SeriesDetector.name: (
        lambda c: SeriesDetector(config_from_mapping(SeriesConfig, c.pattern, "pattern.")),
        SeriesDetector,
    ),
}


def build_detectors(config: DetectionConfig) -> list[Detector]:
    """The detectors ``config`` enables, in :data:`DETECTORS` order.

    Raises:
        ValueError: if ``config.enabled`` names an unknown detector, or a detector's
            section has a wrong key.
    """
    if config.enabled is not None:
        unknown = sorted(set(config.enabled) - set(DETECTORS))
        if unknown:
            raise ValueError(f"enabled: unknown detector(s) {', '.join(unknown)}")
    return [
        build(config)
        for name, (build, _) in DETECTORS.items()
        if config.enabled is None or name in config.enabled
    ]


class Monitor:
    """Composes the detectors: per-event learning, interval evaluation, snapshots.

    ``observe(event, now)`` positions the event at its own event time, but never later
    than ``now`` (as :meth:`apos.core.engine.Engine.observe` does: a sender's clock must not
    move the time others are judged by), and hands it to every detector's ``learn_one``.
    ``tick(now)`` evaluates every detector once per ``interval_s`` of event time, at the
    first tick at or after each interval boundary, so findings do not depend on how often
    the shell ticks. Findings come in detector order, each detector's sorted by entity.

    Parameters:
        config: Thresholds of every detector; defaults when omitted.
        detectors: The detectors to run instead of :func:`build_detectors` (tests, tools).
    """

    def __init__(
        self,
        config: DetectionConfig | None = None,
        detectors: Sequence[Detector] | None = None,
    ) -> None:
        self.config = config or DetectionConfig()
        self.detectors: list[Detector] = (
            list(detectors) if detectors is not None else build_detectors(self.config)
        )
        self._learners = [d.learn_one for d in self.detectors]
        self.next_evaluation: float | None = None
        self.last_evaluation: float | None = None

    def observe(self, event: PaymentEvent, now: float) -> list[Finding]:
        """Learn one newly stored event; findings a single event justifies (fraud,
        extreme amounts), usually none. Not idempotent: the store deduplicates."""
        try:
            ts = float(event.occurred_ts)
        except (AttributeError, TypeError, ValueError, OverflowError):
            ts = now
        if not math.isfinite(ts) or ts > now:
            ts = now
        findings: list[Finding] = []
        for learn in self._learners:
            found = learn(event, ts)
            if found:
                findings.extend(found)
        return findings

    def tick(self, now: float) -> list[Finding]:
        """Evaluate every detector if an interval boundary has passed; else nothing."""
        if self.next_evaluation is not None and now < self.next_evaluation:
            return []
        interval = self.config.interval_s
        self.next_evaluation = (math.floor(now / interval) + 1.0) * interval
        self.last_evaluation = now
        findings: list[Finding] = []
        for detector in self.detectors:
            findings.extend(detector.evaluate(now))
        return findings

    def snapshot(self) -> dict[str, Any]:
        """The whole state, JSON-serialisable: config, clock and every detector."""
        return {
            "version": SNAPSHOT_VERSION,
            "config": self.config.to_dict(),
            "next_evaluation": self.next_evaluation,
            "last_evaluation": self.last_evaluation,
            "detectors": [[d.name, d.to_dict()] for d in self.detectors],
        }

    @classmethod
    def restore(cls, state: dict[str, Any]) -> Monitor:
        """Rebuild a Monitor from :meth:`snapshot`.

        Raises:
            ValueError: for a snapshot of another version or naming an unknown detector.
        """
        if state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported monitor snapshot version {state.get('version')!r}")
        config = DetectionConfig.from_dict(state["config"])
        detectors: list[Detector] = []
        for name, detector_state in state["detectors"]:
            if name not in DETECTORS:
                raise ValueError(f"snapshot names an unknown detector {name!r}")
            detectors.append(DETECTORS[name][1].from_dict(detector_state))
        monitor = cls(config, detectors)
        monitor.next_evaluation = state["next_evaluation"]
        monitor.last_evaluation = state["last_evaluation"]
        return monitor
