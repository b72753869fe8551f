"""Latency increase per connector: the p95 of recent outcomes against its own baseline."""

from __future__ import annotations

from collections import deque
from typing import Any, Self

from apos.core.detect.config import LatencyConfig
from apos.core.detect.cusum import CusumIncident, bernoulli_weights, cusum_score
from apos.core.detect.findings import AnomalyType, Entity, Evidence, Finding, severity_of
from apos.core.detect.quantiles import LogHistogram
from apos.core.events import PaymentEvent, PaymentStatus

__all__ = ["LatencyDetector"]

_FINAL = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.AUTHORIZED, PaymentStatus.FAILED})


def _encode(sketch: LogHistogram) -> dict[str, Any]:
    return sketch.to_dict()


def _decode(state: dict[str, Any]) -> LogHistogram:
    return LogHistogram.from_dict(state)


class _ConnectorLatency:
    """One connector: baseline sketches, recent interval sketches, the exceedance CUSUM."""

    __slots__ = (
        "block",
        "block_started",
        "blocks",
        "last_seen",
        "q0",
        "q0_samples",
        "recent",
        "track",
    )

    def __init__(self, k: float) -> None:
        self.block = LogHistogram(k)  # the baseline block being filled
        self.block_started: float | None = None
        self.blocks: deque[LogHistogram] = deque()  # finished baseline blocks, oldest first
        # (span, sketch) of the recent intervals, for the evidence window
        self.recent: deque[tuple[float, LogHistogram]] = deque()
        self.q0: float | None = None
        self.q0_samples = 0
        self.last_seen = 0.0
        self.track = CusumIncident()

    def to_dict(self) -> dict[str, Any]:
        return {
            "block": _encode(self.block),
            "block_started": self.block_started,
            "blocks": [_encode(b) for b in self.blocks],
            "recent": [[span, _encode(s)] for span, s in self.recent],
            "q0": self.q0,
            "q0_samples": self.q0_samples,
            "last_seen": self.last_seen,
            "track": self.track.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], k: float) -> _ConnectorLatency:
        entity = cls(k)
        entity.block = _decode(state["block"])
        entity.block_started = state["block_started"]
        entity.blocks = deque(_decode(b) for b in state["blocks"])
        entity.recent = deque((float(span), _decode(s)) for span, s in state["recent"])
        entity.q0 = state["q0"]
        entity.q0_samples = int(state["q0_samples"])
        entity.last_seen = float(state["last_seen"])
        entity.track = CusumIncident.from_dict(state["track"])
        return entity


class LatencyDetector:
    """Flags a connector whose latency rose above its baseline p95 (``LatencyIncrease``).

    Statistic: the baseline p95 ``q0`` comes from mergeable quantile sketches (DDSketch,
    :mod:`apos.core.detect.quantiles`) of the last ``blocks`` × ``block_s`` seconds,
    refreshed when a block completes and frozen while an incident is open. Under no change,
    each outcome exceeds ``q0`` with probability ``p0 = 1 - quantile`` (5 %); the test is a
    Bernoulli CUSUM of exceedances for ``p1 = exceed_p1`` against ``p0``, so it accounts for
    sample size like the success-rate test: a few slow calls do not signal, a window where
    a fifth of calls exceed the old p95 does. The evidence reports the p95 of the last
    ``window_s`` seconds, merged from per-interval sketches.

    Per event: a comparison with ``q0`` and a list append; each interval's latencies are
    binned into a sketch (numpy) and merged once per evaluation. Only final outcomes with
    a latency count. Score: ``1 - 10 ** (-S / h)``.

    Examples:
        >>> import random
        >>> from datetime import UTC, datetime
        >>> def outcome(latency):
        ...     return PaymentEvent.model_construct(
        ...         event_id="e", merchant_id="m1", connector="adyen", amount=100,
        ...         currency="EUR", status=PaymentStatus.SUCCEEDED, latency_ms=latency,
        ...         occurred_at=datetime.fromtimestamp(0, UTC))
        >>> rng, detector = random.Random(1), LatencyDetector()
        >>> for minute in range(30):  # half an hour around 200 ms
        ...     for _ in range(100):
        ...         _ = detector.learn_one(outcome(rng.lognormvariate(5.3, 0.4)), 60.0 * minute)
        ...     findings = detector.evaluate(60.0 * minute + 60)
        >>> findings
        []
        >>> for _ in range(100):  # twice as slow
        ...     _ = detector.learn_one(outcome(2 * rng.lognormvariate(5.3, 0.4)), 1800.0)
        >>> [(f.entity.key, f.evidence.observed > f.evidence.baseline)
        ...  for f in detector.evaluate(1860.0)]
        [('c=adyen', True)]

    References:
        [^1]: Masson, C., Rim, J.E. and Lee, H.K., 2019. DDSketch: a fast and
            fully-mergeable quantile sketch with relative-error guarantees. PVLDB 12(12).
        [^2]: Reynolds, M.R. and Stoumbos, Z.G., 1999. A CUSUM chart for monitoring a
            proportion when inspecting continuously. Journal of Quality Technology 31(1).
    """

    name = "latency"

    def __init__(self, config: LatencyConfig | None = None) -> None:
        self.config = config or LatencyConfig()
        self._entities: dict[str, _ConnectorLatency] = {}
        # connector -> (latencies of the interval, [above q0]); binned at evaluate
        self._pending: dict[str, tuple[list[float], list[int]]] = {}
        self._q0: dict[str, float] = {}  # per-event comparison, mirrors entities' q0
        self._last_eval: float | None = None

    def learn_one(self, event: PaymentEvent, now: float) -> list[Finding]:
        """Add one outcome's latency to the open interval."""
        latency = event.latency_ms
        if latency is None or event.status not in _FINAL or not latency >= 0.0:
            return []
        connector = event.connector
        pending = self._pending.get(connector)
        if pending is None:
            pending = self._pending[connector] = ([], [0])
        pending[0].append(latency)
        q0 = self._q0.get(connector)
        if q0 is not None and latency > q0:
            pending[1][0] += 1
        return []

    def evaluate(self, now: float) -> list[Finding]:
        """Update every connector's CUSUM and baseline; findings for open incidents and for
        incidents that cleared."""
        cfg = self.config
        span = 0.0 if self._last_eval is None else max(0.0, now - self._last_eval)
        self._last_eval = now
        pending, self._pending = self._pending, {}
        for connector in pending:
            if connector not in self._entities:
                self._entities[connector] = _ConnectorLatency(cfg.relative_accuracy)
        h = cfg.threshold
        cap, clear = cfg.cap_factor * h, cfg.clear_fraction * h
        bad_w, good_w = bernoulli_weights(1.0 - cfg.quantile, cfg.exceed_p1)
        findings: list[Finding] = []
        for connector in sorted(self._entities):
            entity = self._entities[connector]
            latencies, above_q0 = pending.get(connector, ((), (0,)))
            n, above = len(latencies), above_q0[0]
            sketch = None
            if n:
                sketch = LogHistogram(cfg.relative_accuracy)
                sketch.add_many(latencies)
                entity.last_seen = now
                entity.recent.append((span, sketch))
            self._trim_recent(entity)
            track = entity.track
            change = None
            if entity.q0 is not None and n:
                change = track.update(
                    above, n - above, bad_w, good_w, h=h, cap=cap, clear=clear, now=now
                )
            if sketch is not None and track.learning(now, clear, cfg.max_freeze_s):
                entity.block.merge(sketch)
            self._roll_baseline(connector, entity, now)
            if track.active:
                track.reported = True
                findings.append(self._finding(connector, entity, now, active=True))
            elif change == "cleared" and track.reported:
                track.reported = False
                findings.append(self._finding(connector, entity, now, active=False))
        self._prune(now)
        return findings

    def _trim_recent(self, entity: _ConnectorLatency) -> None:
        total = sum(span for span, _ in entity.recent)
        while entity.recent and total - entity.recent[0][0] >= self.config.window_s - 1e-9:
            total -= entity.recent.popleft()[0]

    def _roll_baseline(self, connector: str, entity: _ConnectorLatency, now: float) -> None:
        """Close the baseline block every ``block_s``; (re)compute ``q0`` then, or as soon
        as enough latencies stand behind it while there is none yet."""
        cfg = self.config
        if entity.block_started is None:
            entity.block_started = now
        rolled = now - entity.block_started >= cfg.block_s
        if rolled:
            if not entity.block.is_empty():
                entity.blocks.append(entity.block)
                while len(entity.blocks) > cfg.blocks:
                    entity.blocks.popleft()
            entity.block = LogHistogram(cfg.relative_accuracy)
            entity.block_started = now
        if rolled or entity.q0 is None:
            merged = LogHistogram(cfg.relative_accuracy)
            for block in entity.blocks:
                merged.merge(block)
            if entity.q0 is None:
                merged.merge(entity.block)
            if merged.count >= cfg.min_baseline:
                entity.q0 = merged.quantile(cfg.quantile)
                entity.q0_samples = merged.count
                self._q0[connector] = entity.q0

    def _finding(
        self, connector: str, entity: _ConnectorLatency, now: float, *, active: bool
    ) -> Finding:
        cfg = self.config
        merged = LogHistogram(cfg.relative_accuracy)
        window_s = 0.0
        for span, sketch in entity.recent:
            merged.merge(sketch)
            window_s += span
        observed = merged.quantile(cfg.quantile)
        q0 = entity.q0 if entity.q0 is not None else 0.0
        above = merged.count_above(q0)
        score = cusum_score(entity.track.statistic, cfg.threshold)
        p0 = 1.0 - cfg.quantile
        return Finding(
            anomaly_type=AnomalyType.LATENCY_INCREASE,
            entity=Entity(connector=connector),
            score=score,
            severity=severity_of(score),
            at=now,
            started_at=entity.track.started_at if entity.track.started_at is not None else now,
            evidence=Evidence(
                metric=f"latency_p{round(cfg.quantile * 100)}_ms",
                baseline=q0,
                observed=observed,
                test=(
                    f"Bernoulli CUSUM of exceedances of the baseline p{round(cfg.quantile * 100)}"
                    f" p0={p0:.3f} p1={cfg.exceed_p1:.3f} h={cfg.threshold:g}"
                    f" (S={entity.track.statistic:.1f})"
                ),
                window_s=window_s,
                samples=merged.count,
                details={
                    "above_baseline": above,
                    "baseline_samples": entity.q0_samples,
                    "cusum": entity.track.statistic,
                    "threshold": cfg.threshold,
                },
            ),
            detector=self.name,
            active=active,
        )

    def _prune(self, now: float) -> None:
        idle = self.config.idle_prune_s
        for connector in [
            c
            for c, e in self._entities.items()
            if now - e.last_seen > idle and not e.track.reported
        ]:
            del self._entities[connector]
            self._q0.pop(connector, None)

    def to_dict(self) -> dict[str, Any]:
        """The detector's state, JSON-serialisable (sketches as base64 of their bytes)."""
        return {
            "config": self.config.to_dict(),
            "last_eval": self._last_eval,
            "pending": [[c, lat, above[0]] for c, (lat, above) in self._pending.items()],
            "entities": {c: e.to_dict() for c, e in self._entities.items()},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict`."""
        config = LatencyConfig.from_dict(state["config"])
        detector = cls(config)
        detector._last_eval = state["last_eval"]
        detector._pending = {c: (list(lat), [int(a)]) for c, lat, a in state["pending"]}
        detector._entities = {
            c: _ConnectorLatency.from_dict(e, config.relative_accuracy)
            for c, e in state["entities"].items()
        }
        detector._q0 = {c: e.q0 for c, e in detector._entities.items() if e.q0 is not None}
        return detector
