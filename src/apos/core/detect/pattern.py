"""A generic streaming detector for any metric series: a robust seasonal z-score.

Each series (``timestamp, value`` points in time order) is modelled, as in additive
Holt-Winters without trend, by a level ``L`` and a seasonal offset ``S[slot]`` per slot of
the season (half-hour of the day by default: ``season_s = 86400``, ``slot_s = 1800``). For a new
point the expected value is ``L + S[slot]`` and the innovation ``e = value - expected`` is
scored against an exponentially weighted variance of past innovations (that slot's once
it has ``min_slot_points`` points, the series' own before: the level fallback):

    z = e / max(sqrt(V), min_scale, rel_min_scale * |expected|),  score = erf(|z| / sqrt 2)

so the score is one minus the two-sided normal tail probability of the point, in [0, 1].
The point is scored **before** it is learnt: a score depends on earlier points only.

Learning is robust (Huber): the innovation is clipped at ``clip`` standard deviations
before it updates the level, the seasonal offset and the variances, so one spike neither
drags the baseline nor widens the scale. A level shift is a run of same-sided exceedances:
the clip on the level widens with the run length (``clip * (1 + run)``), so the baseline
catches up in a few points and the scores fall back, rather than staying high for ever.
The first ``warmup`` points are learnt unclipped and score 0.

:class:`SeriesDetector` uses this model two ways: ``score_one(ts, value)`` on one series a
caller supplies (``apos detect`` scores a CSV file with it), and, as a
:class:`~apos.core.detect.base.Detector`, on per-interval series it derives from payment
events (attempts, failure rate, mean latency per connector, merchant or overall), raising
``UnusualPattern`` when ``consecutive`` closed intervals score at least
``score_threshold``, and clearing when an interval scores below ``clear_score``.

References:
    [^1]: Hyndman, R.J. and Athanasopoulos, G., 2021. Forecasting: Principles and Practice,
        3rd ed., section 8.3 (Holt-Winters' additive method). OTexts.
    [^2]: Hochenbaum, J., Vallis, O.S. and Kejariwal, A., 2017. Automatic anomaly detection
        in the cloud via statistical learning. arXiv:1704.07706 (seasonal robust scores).
    [^3]: Huber, P.J., 1964. Robust estimation of a location parameter. Annals of
        Mathematical Statistics 35(1), 73-101.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Self

from apos.core.detect.findings import AnomalyType, Entity, Evidence, Finding, Severity
from apos.core.detect.sections import config_from_mapping
from apos.core.detect.tails import normal_two_sided_score
from apos.core.events import PaymentEvent, PaymentStatus

__all__ = ["METRICS", "SeasonalBaseline", "SeriesConfig", "SeriesDetector"]

METRICS: tuple[str, ...] = ("attempts", "failures", "failure_rate", "latency_mean_ms")
"""Series :class:`SeriesDetector` derives from events, per interval: final outcomes,
failed ones, their ratio, and the mean reported latency."""

_GROUPS = ("all", "merchant", "connector")
_FINAL = frozenset(s for s in PaymentStatus if s.is_final)


@dataclass(frozen=True, slots=True)
class SeriesConfig:
    """Parameters of :class:`SeriesDetector` (the model, then the event-derived series).

    Attributes:
        season_s: Length of the season in seconds (0 disables seasonality).
        slot_s: Width of a seasonal slot in seconds.
        level_alpha: Weight of a point in the level (exponential smoothing).
        season_alpha: Weight of a point in its slot's seasonal offset.
        var_alpha: Weight of a point's squared innovation in the variances.
        min_slot_points: Points a slot needs before its own variance is used.
        warmup: Points learnt (unclipped, scored 0) before scoring starts.
        clip: Innovations are clipped at this many standard deviations when learnt.
        min_scale: Absolute floor of the scale.
        rel_min_scale: Floor of the scale relative to the expected value's magnitude.
        metrics: Event-derived series to watch (see :data:`METRICS`).
        group_by: ``connector``, ``merchant`` or ``all``: one series per group and metric.
        interval_s: Width of the intervals the event-derived series are made of.
        min_interval_events: Final outcomes an interval needs for a ratio or mean metric.
        score_threshold: Interval score at or above which it counts as anomalous.
        consecutive: Anomalous intervals in a row that open an incident.
        clear_score: An open incident clears at the first interval scoring below this.
        max_series: Most groups kept (least recently active evicted first).
        max_gap_intervals: A group silent this many intervals is forgotten.
        severity: Severity of the findings (a generic detector informs by default).
    """

    season_s: float = 86_400.0
    slot_s: float = 1_800.0
    level_alpha: float = 0.1
    season_alpha: float = 0.1
    var_alpha: float = 0.05
    min_slot_points: int = 8
    warmup: int = 10
    clip: float = 3.0
    min_scale: float = 1e-9
    rel_min_scale: float = 0.01
    # By default (and so in the Monitor) only a series no specialised detector watches: a
    # merchant's failure rate across its connectors. Per connector, attempts, failure rate
    # and latency are VolumeDetector's, SuccessRateDetector's and LatencyDetector's; a
    # second, generic finding about them would page twice for one incident.
    metrics: tuple[str, ...] = ("failure_rate",)
    group_by: str = "merchant"
    interval_s: float = 60.0
    min_interval_events: int = 20
    score_threshold: float = 0.9999
    consecutive: int = 3
    clear_score: float = 0.99
    max_series: int = 1_000
    max_gap_intervals: int = 1_440
    severity: Severity = Severity.INFO

    def __post_init__(self) -> None:
        if self.season_s < 0.0 or not self.slot_s > 0.0:
            raise ValueError("season_s must be >= 0 and slot_s > 0")
        if self.season_s and self.season_s < self.slot_s:
            raise ValueError("season_s must be at least slot_s")
        for name in ("level_alpha", "season_alpha", "var_alpha"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]")
        if unknown := [m for m in self.metrics if m not in METRICS]:
            raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRICS)}")
        if self.group_by not in _GROUPS:
            raise ValueError(f"group_by must be one of {', '.join(_GROUPS)}")
        if not 0.0 < self.clear_score <= self.score_threshold <= 1.0:
            raise ValueError("need 0 < clear_score <= score_threshold <= 1")
        if self.consecutive < 1 or self.max_series < 1 or self.clip <= 0.0:
            raise ValueError("consecutive, max_series and clip must be positive")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        out = asdict(self)
        out["metrics"] = list(self.metrics)
        out["severity"] = self.severity.value
        return out

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict` (or a settings table); unknown keys refused."""
        return config_from_mapping(cls, state)


class SeasonalBaseline:
    """One series' robust seasonal model: ``score_one`` scores a point, then learns it.

    Parameters:
        config: The model's parameters (the event-series fields are not used).

    Attributes:
        n: Points learnt.
        level: The level ``L``.
        variance: Exponentially weighted variance of the (clipped) innovations.
        slots: ``slot -> [offset S, points, variance]``.
        run: Signed length of the current run of same-sided exceedances.
        last_expected: Expected value of the latest point (for evidence).
        last_z: Its z-score.

    Examples:
        >>> model = SeasonalBaseline(SeriesConfig(season_s=0))
        >>> scores = [model.score_one(60.0 * i, 100.0 + (i % 5)) for i in range(30)]
        >>> max(scores) < 0.999
        True
        >>> round(model.score_one(1800.0, 160.0), 4)  # a spike, scored before it is learnt
        1.0
        >>> model.score_one(1860.0, 102.0) < 0.99  # the spike did not move the baseline
        True
    """

    __slots__ = (
        "adapt",
        "config",
        "last_expected",
        "last_ts",
        "last_z",
        "level",
        "n",
        "run",
        "slots",
        "variance",
    )

    def __init__(self, config: SeriesConfig | None = None) -> None:
        self.config = config or SeriesConfig()
        self.n = 0
        self.level = 0.0
        self.variance = 0.0
        self.slots: dict[int, list[float]] = {}
        self.run = 0
        self.last_expected = 0.0
        self.last_z = 0.0
        self.last_ts: float | None = None
        # Whether a run of exceedances may widen the level's clip (follow a level shift).
        # The event-series watches turn it off while an incident is open, so that an
        # outage is not learnt as the new normal and its end flagged as a second one.
        self.adapt = True

    def _slot(self, ts: float) -> int:
        cfg = self.config
        if not cfg.season_s:
            return 0
        return int((ts % cfg.season_s) // cfg.slot_s)

    def expected(self, ts: float) -> tuple[float, float]:
        """Expected value at ``ts`` and the scale of an innovation there."""
        cfg = self.config
        slot = self.slots.get(self._slot(ts)) if cfg.season_s else None
        expected = self.level + (slot[0] if slot is not None else 0.0)
        variance = slot[2] if slot is not None and slot[1] >= cfg.min_slot_points else self.variance
        scale = max(math.sqrt(variance), cfg.min_scale, cfg.rel_min_scale * abs(expected))
        return expected, scale

    def score_one(self, ts: float, value: float) -> float:
        """The score in [0, 1] of ``value`` at ``ts`` from earlier points; then learn it."""
        cfg = self.config
        if self.n == 0:
            self.level = value
            self.n = 1
            self.last_expected, self.last_z, self.last_ts = value, 0.0, ts
            return 0.0
        expected, scale = self.expected(ts)
        e = value - expected
        z = e / scale
        score = normal_two_sided_score(z) if self.n >= cfg.warmup else 0.0
        self.last_expected, self.last_z, self.last_ts = expected, z, ts
        self._learn(ts, e, scale)
        return score

    def _learn(self, ts: float, e: float, scale: float) -> None:
        cfg = self.config
        warm = self.n >= cfg.warmup
        limit = cfg.clip * scale
        if warm and abs(e) > limit:
            same_side = (self.run > 0) == (e > 0) and self.run != 0
            self.run = (self.run + (1 if e > 0 else -1)) if same_side else (1 if e > 0 else -1)
        else:
            self.run = 0
        if warm:
            e_var = max(-limit, min(limit, e))
            widen = limit * (1 + abs(self.run) - (1 if self.run else 0)) if self.adapt else limit
            e_level = max(-widen, min(widen, e))
        else:
            e_var = e_level = e
        key = self._slot(ts)
        slot = self.slots.get(key) if cfg.season_s else None
        offset = slot[0] if slot is not None else 0.0
        # Additive Holt-Winters on the clipped point y = L + S + e_level.
        y = self.level + offset + e_level
        self.level += cfg.level_alpha * (y - offset - self.level)
        self.variance += cfg.var_alpha * (e_var * e_var - self.variance)
        if cfg.season_s:
            if slot is None:
                slot = self.slots[key] = [0.0, 0.0, e_var * e_var]
            slot[0] += cfg.season_alpha * (y - self.level - slot[0])
            slot[1] += 1.0
            slot[2] += cfg.var_alpha * (e_var * e_var - slot[2])
        self.n += 1

    def to_dict(self) -> dict[str, Any]:
        """State, JSON-serialisable (the config is the owner's)."""
        return {
            "n": self.n,
            "level": self.level,
            "variance": self.variance,
            "slots": [[k, *v] for k, v in self.slots.items()],
            "run": self.run,
            "last_expected": self.last_expected,
            "last_z": self.last_z,
            "last_ts": self.last_ts,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], config: SeriesConfig) -> Self:
        """Rebuild from :meth:`to_dict` under ``config``."""
        model = cls(config)
        model.n, model.level = int(state["n"]), float(state["level"])
        model.variance, model.run = float(state["variance"]), int(state["run"])
        model.slots = {int(k): [float(a), float(b), float(c)] for k, a, b, c in state["slots"]}
        model.last_expected, model.last_z = float(state["last_expected"]), float(state["last_z"])
        model.last_ts = None if state["last_ts"] is None else float(state["last_ts"])
        return model


class _Watch:
    """One (group, metric) series: its model and incident state."""

    __slots__ = ("evidence", "high_run", "model", "open", "score", "started_at")

    def __init__(self, config: SeriesConfig) -> None:
        self.model = SeasonalBaseline(config)
        self.high_run = 0
        self.open = False
        self.started_at = 0.0
        self.score = 0.0
        self.evidence: dict[str, Any] = {}


class _Group:
    """One group's open interval accumulators and its watched series."""

    __slots__ = ("accumulators", "last_index", "next_index", "watches")

    def __init__(self, config: SeriesConfig) -> None:
        # interval index -> [attempts, failures, latency sum, latency count]
        self.accumulators: dict[int, list[float]] = {}
        self.next_index: int | None = None  # first interval not yet scored
        self.last_index = 0  # latest interval with an event
        self.watches = {metric: _Watch(config) for metric in config.metrics}


class SeriesDetector:
    """Generic ``UnusualPattern`` detector on metric series (see the module docstring).

    Parameters:
        config: The parameters; defaults when omitted.

    Examples:
        >>> detector = SeriesDetector(SeriesConfig(season_s=0))
        >>> scores = [detector.score_one(60.0 * i, 50.0 + (i * 7) % 5) for i in range(40)]
        >>> max(scores) < 0.999, detector.score_one(2400.0, 90.0) > 0.9999
        (True, True)

    References:
        [^1]: Hyndman, R.J. and Athanasopoulos, G., 2021. Forecasting: Principles and
            Practice, 3rd ed., section 8.3. OTexts.
    """

    name = "series"

    def __init__(self, config: SeriesConfig | None = None) -> None:
        self.config = config or SeriesConfig()
        self._direct = SeasonalBaseline(self.config)
        self._groups: dict[str, _Group] = {}
        self._group_by = {"all": 0, "merchant": 1, "connector": 2}[self.config.group_by]
        self._interval_s = self.config.interval_s

    @classmethod
    def from_config(cls, settings: Mapping[str, Any], prefix: str = "pattern.") -> Self:
        """Build from a settings table (``ValueError`` names a wrong key)."""
        return cls(config_from_mapping(SeriesConfig, settings, prefix))

    def score_one(self, ts: float, value: float) -> float:
        """Score one point of the caller's own series from earlier points, then learn it.
        Points must come in time order."""
        return self._direct.score_one(ts, value)

    def __len__(self) -> int:
        """Number of groups of event-derived series tracked."""
        return len(self._groups)

    def learn_one(self, event: PaymentEvent, now: float) -> list[Finding]:
        """Count a final outcome into its group's open interval (no findings per event)."""
        status = event.status
        if status not in _FINAL:
            return []
        ts = event.occurred_ts
        if ts > now:
            ts = now
        group_by = self._group_by
        key = event.merchant_id if group_by == 1 else event.connector if group_by == 2 else ""
        group = self._groups.get(key)
        if group is None:
            group = self._new_group(key)
        index = int(ts // self._interval_s)
        if group.next_index is not None and index < group.next_index:
            return []  # its interval was scored already
        acc = group.accumulators.get(index)
        if acc is None:
            acc = group.accumulators[index] = [0.0, 0.0, 0.0, 0.0]
        acc[0] += 1.0
        if status is PaymentStatus.FAILED:
            acc[1] += 1.0
        if event.latency_ms is not None:
            acc[2] += event.latency_ms
            acc[3] += 1.0
        if index > group.last_index:
            group.last_index = index
        return []

    def _new_group(self, key: str) -> _Group:
        groups = self._groups
        if len(groups) >= self.config.max_series:  # a full table: the least recent goes
            del groups[min(groups, key=lambda k: groups[k].last_index)]
        group = groups[key] = _Group(self.config)
        return group

    def _value(self, metric: str, acc: list[float]) -> float | None:
        if metric == "attempts":
            return acc[0]
        if metric == "failures":
            return acc[1]
        if metric == "failure_rate":
            return acc[1] / acc[0] if acc[0] >= self.config.min_interval_events else None
        if acc[3] >= self.config.min_interval_events:  # latency_mean_ms
            return acc[2] / acc[3]
        return None

    def evaluate(self, now: float) -> list[Finding]:
        """Score every interval closed by ``now`` (empty ones as zero attempts), then report
        open incidents or their clearing."""
        cfg = self.config
        closed = int(now // cfg.interval_s) - 1  # the latest interval wholly before now
        findings: list[Finding] = []
        for key, group in list(self._groups.items()):
            if closed - group.last_index > cfg.max_gap_intervals:
                del self._groups[key]
                continue
            start = group.next_index
            if start is None:
                if not group.accumulators:
                    continue
                start = min(group.accumulators)
            start = max(start, closed - cfg.max_gap_intervals)
            for index in range(start, closed + 1):
                acc = group.accumulators.pop(index, None) or [0.0, 0.0, 0.0, 0.0]
                for metric, watch in group.watches.items():
                    value = self._value(metric, acc)
                    if value is not None:
                        self._score(watch, metric, index, value, acc)
            if closed + 1 > start:
                group.next_index = closed + 1
            for metric, watch in group.watches.items():
                if watch.open:
                    active = watch.score >= cfg.clear_score
                    findings.append(self._finding(key, metric, watch, now, active))
                    watch.open = active
                    if not active:
                        watch.high_run = 0
                elif watch.high_run >= cfg.consecutive:
                    watch.open = True
                    findings.append(self._finding(key, metric, watch, now, True))
        return findings

    def _score(
        self, watch: _Watch, metric: str, index: int, value: float, acc: list[float]
    ) -> None:
        cfg = self.config
        ts = index * cfg.interval_s
        watch.model.adapt = not watch.open and watch.high_run == 0
        score = watch.model.score_one(ts, value)
        watch.score = score
        if score >= cfg.score_threshold:
            watch.high_run += 1
            if watch.high_run == 1 and not watch.open:
                watch.started_at = ts
        elif not watch.open:
            watch.high_run = 0
        watch.evidence = {
            "baseline": watch.model.last_expected,
            "observed": value,
            "z": watch.model.last_z,
            "samples": int(acc[0]),
            "interval_start": ts,
        }

    def _finding(self, key: str, metric: str, watch: _Watch, now: float, active: bool) -> Finding:
        cfg = self.config
        group_by = cfg.group_by
        entity = Entity(
            merchant_id=key if group_by == "merchant" else None,
            connector=key if group_by == "connector" else None,
            segment=f"metric={metric}",
        )
        ev = watch.evidence
        return Finding(
            anomaly_type=AnomalyType.UNUSUAL_PATTERN,
            entity=entity,
            score=watch.score if active else min(watch.score, cfg.clear_score),
            severity=cfg.severity,
            at=now,
            started_at=watch.started_at,
            evidence=Evidence(
                metric=metric,
                baseline=float(ev.get("baseline", 0.0)),
                observed=float(ev.get("observed", 0.0)),
                test=(
                    "seasonal robust z-score (Holt-Winters level + slot offset, Huber-clipped "
                    f"EW variance): score >= {cfg.score_threshold} for {cfg.consecutive} "
                    f"intervals, clears below {cfg.clear_score}"
                ),
                window_s=cfg.interval_s,
                samples=int(ev.get("samples", 0)),
                details={
                    "z": round(float(ev.get("z", 0.0)), 3),
                    "interval_start": ev.get("interval_start"),
                    "season_s": cfg.season_s,
                    "slot_s": cfg.slot_s,
                },
            ),
            detector=self.name,
            active=active,
        )

    def to_dict(self) -> dict[str, Any]:
        """State (configuration included), JSON-serialisable."""
        return {
            "config": self.config.to_dict(),
            "direct": self._direct.to_dict(),
            "groups": [
                {
                    "key": key,
                    "accumulators": [[i, *acc] for i, acc in group.accumulators.items()],
                    "next_index": group.next_index,
                    "last_index": group.last_index,
                    "watches": {
                        metric: {
                            "model": w.model.to_dict(),
                            "high_run": w.high_run,
                            "open": w.open,
                            "started_at": w.started_at,
                            "score": w.score,
                            "evidence": w.evidence,
                        }
                        for metric, w in group.watches.items()
                    },
                }
                for key, group in self._groups.items()
            ],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict`; it continues exactly where it stopped."""
        detector = cls(SeriesConfig.from_dict(state["config"]))
        cfg = detector.config
        detector._direct = SeasonalBaseline.from_dict(state["direct"], cfg)
        for item in state["groups"]:
            group = _Group(cfg)
            group.accumulators = {
                int(i): [float(v) for v in acc] for i, *acc in item["accumulators"]
            }
            group.next_index = item["next_index"]
            group.last_index = int(item["last_index"])
            for metric, w in item["watches"].items():
                watch = group.watches[metric]
                watch.model = SeasonalBaseline.from_dict(w["model"], cfg)
                watch.high_run, watch.open = int(w["high_run"]), bool(w["open"])
                watch.started_at, watch.score = float(w["started_at"]), float(w["score"])
                watch.evidence = dict(w["evidence"])
            detector._groups[item["key"]] = group
        return detector
