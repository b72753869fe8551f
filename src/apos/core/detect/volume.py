"""Volume spikes and drops against a seasonal baseline, per merchant, per connector, overall."""

from __future__ import annotations

from collections import deque
from typing import Any, Self

from apos.core.detect.config import VolumeConfig
from apos.core.detect.findings import AnomalyType, Entity, Evidence, Finding, Severity
from apos.core.detect.tails import poisson_sf
from apos.core.events import PaymentEvent, PaymentStatus
from apos.core.stats.decayed_beta import decay_factor

__all__ = ["VolumeDetector", "hour_of_week"]

_FINAL = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.AUTHORIZED, PaymentStatus.FAILED})
_SLOTS = 168
_OVERALL, _MERCHANT, _CONNECTOR = "all", "m", "c"


def hour_of_week(ts: float) -> int:
    """The hour-of-week slot of epoch seconds ``ts`` (UTC), 0 = Monday 00:00-01:00.

    >>> hour_of_week(0.0)  # 1970-01-01 was a Thursday
    72
    >>> hour_of_week(4 * 86_400.0)  # the Monday after
    0
    """
    return (int(ts // 3600.0) + 72) % _SLOTS


class _VolumeState:
    """One entity: Holt level and trend, 168 seasonal factors, the test window, incident."""

    __slots__ = (
        "active",
        "count",
        "direction",
        "entries",
        "expected",
        "first_seen",
        "frozen_since",
        "gate_since",
        "last_seen",
        "level",
        "reported",
        "season",
        "span",
        "started_at",
        "trend",
        "updated_at",
    )

    def __init__(self, now: float) -> None:
        self.level: float | None = None  # deseasonalised events per second
        self.trend = 0.0  # events per second, per second
        self.updated_at = now
        self.first_seen = now
        self.last_seen = now
        self.season: list[float | None] = [None] * _SLOTS
        self.entries: deque[tuple[float, int, float]] = deque()  # (span, count, expected)
        self.span = 0.0
        self.count = 0
        self.expected = 0.0
        self.active = False
        self.reported = False
        self.direction = ""  # "drop" | "spike" while active
        self.started_at: float | None = None
        self.gate_since: float | None = None
        self.frozen_since: float | None = None

    def forecast_rate(self, now: float, slot: int, horizon_s: float) -> float:
        """Expected events per second at ``now`` in ``slot`` (0 before any history)."""
        if self.level is None:
            return 0.0
        ahead = min(max(0.0, now - self.updated_at), horizon_s)
        season = self.season[slot]
        return max(0.0, self.level + self.trend * ahead) * (1.0 if season is None else season)

    def add(self, span: float, count: int, expected: float, window_s: float) -> None:
        self.entries.append((span, count, expected))
        self.span += span
        self.count += count
        self.expected += expected
        while self.entries and self.span - self.entries[0][0] >= window_s - 1e-9:
            old_span, old_count, old_expected = self.entries.popleft()
            self.span -= old_span
            self.count -= old_count
            self.expected -= old_expected
        self.expected = max(self.expected, 0.0)

    def learn(self, span: float, count: int, slot: int, now: float, cfg: VolumeConfig) -> None:
        """Holt's level and trend on the deseasonalised rate; the slot's seasonal factor."""
        if span <= 0.0:
            return
        rate = count / span
        season = self.season[slot]
        factor = 1.0 if season is None else season
        if self.level is None:
            self.level, self.trend, self.updated_at = rate / factor, 0.0, now
            return
        dt = max(now - self.updated_at, span)
        alpha = 1.0 - decay_factor(span, cfg.level_half_life_s)
        beta = 1.0 - decay_factor(span, cfg.trend_half_life_s)
        predicted = self.level + self.trend * min(dt, cfg.trend_horizon_s)
        level = alpha * rate / factor + (1.0 - alpha) * predicted
        self.trend = beta * (level - self.level) / dt + (1.0 - beta) * self.trend
        self.level = max(level, 0.0)
        self.updated_at = now
        if self.level > 0.0:
            gamma = 1.0 - decay_factor(span, cfg.season_half_life_s)
            self.season[slot] = (1.0 - gamma) * factor + gamma * rate / self.level

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "trend": self.trend,
            "updated_at": self.updated_at,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "season": self.season,
            "entries": [list(e) for e in self.entries],
            "sums": [self.span, self.count, self.expected],
            "incident": [
                self.active,
                self.reported,
                self.direction,
                self.started_at,
                self.gate_since,
                self.frozen_since,
            ],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], window_s: float) -> _VolumeState:
        entity = cls(float(state["first_seen"]))
        entity.level = state["level"]
        entity.trend = float(state["trend"])
        entity.updated_at = float(state["updated_at"])
        entity.last_seen = float(state["last_seen"])
        entity.season = list(state["season"])
        entity.entries = deque((float(s), int(c), float(e)) for s, c, e in state["entries"])
        entity.span, entity.count, entity.expected = state["sums"]
        (
            entity.active,
            entity.reported,
            entity.direction,
            entity.started_at,
            entity.gate_since,
            entity.frozen_since,
        ) = state["incident"]
        return entity


class VolumeDetector:
    """Flags payment volume far above or below its seasonal forecast (``VolumeSpike``,
    ``VolumeDrop``), per merchant, per connector and overall.

    Baseline: multiplicative Holt-Winters in event time. The expected rate is ``(level +
    trend × dt) × season[hour_of_week]``: Holt's level and trend (Holt 1957) follow the
    deseasonalised rate with half-lives ``level_half_life_s`` / ``trend_half_life_s``; the
    168 hour-of-week factors (Winters 1960) are learnt by exponential smoothing and are 1
    (the overall level alone) while a slot has no history, so the first week relies on the
    level following the daily curve. The baseline stops learning while an incident is open
    (or the window is beyond the effect-size gate), for at most ``max_freeze_s``.

    Test: over the last ``window_s`` seconds, the count ``N`` against the summed forecast
    ``mu``, as Poisson counts with a tolerance for forecast error (a composite null: the
    mean may be anywhere in ``mu × [1 - tolerance, 1 + tolerance]``): a drop when
    ``P(X <= N | mu (1 - tolerance)) < alpha`` and ``N <= (1 - min_drop) mu``; a spike when
    ``P(X >= N | mu (1 + tolerance)) < alpha`` and ``N >= (1 + min_spike) mu``. An entity is
    tested after ``warmup_s`` of history and when ``mu >= min_expected``, so quiet merchants
    do not page. Clears when the ratio ``N / mu`` is back within half the gate. Score:
    ``1 - p``; severity critical when the change is twice the gate (a drop to a fifth, a
    spike to 2.2 times), warning otherwise. Counts final outcomes (like the rollups).

    Examples:
        >>> from datetime import UTC, datetime
        >>> event = PaymentEvent.model_construct(
        ...     event_id="e", merchant_id="m1", connector="adyen", amount=100,
        ...     currency="EUR", status=PaymentStatus.SUCCEEDED,
        ...     occurred_at=datetime.fromtimestamp(0, UTC))
        >>> detector, now = VolumeDetector(), 0.0
        >>> for step in range(360):  # an hour at 10 payments per 10 s
        ...     for _ in range(10):
        ...         _ = detector.learn_one(event, now)
        ...     now += 10.0
        ...     assert detector.evaluate(now) == []
        >>> for step in range(12):  # two minutes at 1 per 10 s
        ...     _ = detector.learn_one(event, now)
        ...     now += 10.0
        ...     findings = detector.evaluate(now)
        >>> sorted(f.anomaly_type.value + " " + f.entity.key for f in findings)
        ['VolumeDrop all', 'VolumeDrop c=adyen', 'VolumeDrop m=m1']

    References:
        [^1]: Holt, C.C., 1957 (reprinted 2004). Forecasting seasonals and trends by
            exponentially weighted moving averages. Int. J. Forecasting 20(1), 5-10.
        [^2]: Winters, P.R., 1960. Forecasting sales by exponentially weighted moving
            averages. Management Science 6(3), 324-342.
    """

    name = "volume"

    def __init__(self, config: VolumeConfig | None = None) -> None:
        self.config = config or VolumeConfig()
        self._pending: dict[tuple[str, str], int] = {}  # (merchant, connector) -> outcomes
        self._entities: dict[tuple[str, str], _VolumeState] = {}
        self._last_eval: float | None = None

    def learn_one(self, event: PaymentEvent, now: float) -> list[Finding]:
        """Count one outcome into the open interval (final outcomes only)."""
        if event.status in _FINAL:
            key = (event.merchant_id, event.connector)
            self._pending[key] = self._pending.get(key, 0) + 1
        return []

    def evaluate(self, now: float) -> list[Finding]:
        """Forecast, test and learn every entity over the interval since the last call."""
        cfg = self.config
        if self._last_eval is None:
            self._last_eval = now
            self._pending.clear()  # a partial first interval: its span is unknown
            return []
        span = max(0.0, now - self._last_eval)
        self._last_eval = now
        if span <= 0.0:
            return []
        counts: dict[tuple[str, str], int] = {(_OVERALL, ""): 0}
        for (merchant, connector), n in self._pending.items():
            counts[(_OVERALL, "")] += n
            if cfg.per_merchant:
                counts[(_MERCHANT, merchant)] = counts.get((_MERCHANT, merchant), 0) + n
            if cfg.per_connector:
                counts[(_CONNECTOR, connector)] = counts.get((_CONNECTOR, connector), 0) + n
        self._pending = {}
        for key in counts:
            if key not in self._entities:
                self._entities[key] = _VolumeState(now - span)
        slot = hour_of_week(now - span / 2.0)
        findings: list[Finding] = []
        for key in sorted(self._entities):
            entity = self._entities[key]
            count = counts.get(key, 0)
            if count:
                entity.last_seen = now
            expected = entity.forecast_rate(now - span, slot, cfg.trend_horizon_s) * span
            entity.add(span, count, expected, cfg.window_s)
            finding = self._test(key, entity, now)
            if finding is not None:
                findings.append(finding)
            if self._learning(entity, now):
                entity.learn(span, count, slot, now, cfg)
        self._prune(now)
        return findings

    def _learning(self, entity: _VolumeState, now: float) -> bool:
        if entity.active or entity.gate_since is not None:
            if entity.frozen_since is None:
                entity.frozen_since = now
            return now - entity.frozen_since >= self.config.max_freeze_s
        entity.frozen_since = None
        return True

    def _test(self, key: tuple[str, str], entity: _VolumeState, now: float) -> Finding | None:
        cfg = self.config
        mu, n = entity.expected, entity.count
        testable = now - entity.first_seen >= cfg.warmup_s and mu >= cfg.min_expected
        ratio = n / mu if mu > 0.0 else 1.0
        direction, p_value = "", 1.0
        if testable and ratio <= 1.0 - cfg.min_drop:
            direction = "drop"
            p_value = 1.0 - poisson_sf(n + 1, mu * (1.0 - cfg.tolerance))
        elif testable and ratio >= 1.0 + cfg.min_spike:
            direction = "spike"
            p_value = poisson_sf(n, mu * (1.0 + cfg.tolerance))
        if direction:
            if entity.gate_since is None:
                entity.gate_since = now
        elif not entity.active:
            entity.gate_since = None

        if not entity.active:
            if direction and p_value < cfg.alpha:
                entity.active, entity.reported, entity.direction = True, True, direction
                entity.started_at = entity.gate_since
                return self._finding(key, entity, now, p_value, active=True)
            return None
        # An open incident: held until the ratio is back within half the gate.
        if entity.direction == "drop":
            recovered = ratio > 1.0 - cfg.min_drop / 2.0
        else:
            recovered = ratio < 1.0 + cfg.min_spike / 2.0
        if recovered or not testable:
            entity.active, entity.gate_since = False, None
            finding = self._finding(key, entity, now, p_value, active=False)
            entity.reported, entity.direction = False, ""
            return finding
        return self._finding(key, entity, now, p_value, active=True)

    def _finding(
        self,
        key: tuple[str, str],
        entity: _VolumeState,
        now: float,
        p_value: float,
        *,
        active: bool,
    ) -> Finding:
        cfg = self.config
        level, name = key
        if level == _MERCHANT:
            subject = Entity(merchant_id=name)
        elif level == _CONNECTOR:
            subject = Entity(connector=name)
        else:
            subject = Entity()
        mu, n, span = entity.expected, entity.count, entity.span
        ratio = n / mu if mu > 0.0 else 1.0
        drop = entity.direction == "drop"
        if drop:
            critical = ratio <= 1.0 - 2.0 * cfg.min_drop
            test = (
                f"Poisson lower tail P(X <= {n} | {mu * (1 - cfg.tolerance):.1f}) = "
                f"{p_value:.2g} (alpha {cfg.alpha:g}, drop >= {cfg.min_drop:.0%})"
            )
        else:
            critical = ratio >= 1.0 + 2.0 * cfg.min_spike
            test = (
                f"Poisson upper tail P(X >= {n} | {mu * (1 + cfg.tolerance):.1f}) = "
                f"{p_value:.2g} (alpha {cfg.alpha:g}, spike >= {cfg.min_spike:.0%})"
            )
        score = min(1.0, max(0.0, 1.0 - p_value))
        per_min = 60.0 / span if span > 0.0 else 0.0
        return Finding(
            anomaly_type=AnomalyType.VOLUME_DROP if drop else AnomalyType.VOLUME_SPIKE,
            entity=subject,
            score=score,
            severity=Severity.CRITICAL if critical else Severity.WARNING,
            at=now,
            started_at=entity.started_at if entity.started_at is not None else now,
            evidence=Evidence(
                metric="volume_per_min",
                baseline=mu * per_min,
                observed=n * per_min,
                test=test,
                window_s=span,
                samples=n,
                details={
                    "count": n,
                    "expected": mu,
                    "ratio": ratio,
                    "p_value": p_value,
                    "hour_of_week": hour_of_week(now),
                    "seasonal_history": entity.season[hour_of_week(now)] is not None,
                },
            ),
            detector=self.name,
            active=active,
        )

    def _prune(self, now: float) -> None:
        idle = self.config.idle_prune_s
        for key in [
            k
            for k, e in self._entities.items()
            if k[0] != _OVERALL and now - e.last_seen > idle and not e.reported
        ]:
            del self._entities[key]

    def to_dict(self) -> dict[str, Any]:
        """The detector's state, JSON-serialisable (pending counts included)."""
        return {
            "config": self.config.to_dict(),
            "last_eval": self._last_eval,
            "pending": [[m, c, n] for (m, c), n in self._pending.items()],
            "entities": [[*key, e.to_dict()] for key, e in self._entities.items()],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict`."""
        config = VolumeConfig.from_dict(state["config"])
        detector = cls(config)
        detector._last_eval = state["last_eval"]
        detector._pending = {(m, c): int(n) for m, c, n in state["pending"]}
        detector._entities = {
            (level, name): _VolumeState.from_dict(e, config.window_s)
            for level, name, e in state["entities"]
        }
        return detector
