"""Configuration of the detection layer: every threshold of every detector, in one place.

:class:`DetectionConfig` holds the :class:`~apos.core.detect.monitor.Monitor`'s own settings
(how often interval detectors are evaluated) and one section per detector. The interval
detectors' sections are typed here (:class:`SuccessRateConfig`, :class:`LatencyConfig`,
:class:`VolumeConfig`); the per-event detectors' sections (``amount``, ``fraud``,
``pattern``) are passed as mappings to those detectors' own ``from_config``.

``from_dict`` rejects unknown keys and out-of-range values, naming the key, so a typo is an
error rather than a silent default; ``to_dict`` round-trips (a snapshot carries it).

>>> config = DetectionConfig.from_dict({"success_rate": {"delta": 0.08}})
>>> config.success_rate.delta, config.success_rate.threshold, config.interval_s
(0.08, 13.0, 10.0)
>>> DetectionConfig.from_dict(config.to_dict()) == config
True
>>> DetectionConfig.from_dict({"volume": {"windw_s": 60}})
Traceback (most recent call last):
...
ValueError: volume.windw_s: unknown key
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from apos.core.config import DEFAULT_CONNECTOR_ERROR_CODES

__all__ = [
    "DetectionConfig",
    "LatencyConfig",
    "SuccessRateConfig",
    "VolumeConfig",
]


def _check_positive(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: must be a positive number")


def _check_fraction(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not (isinstance(value, int | float) and 0.0 < value < 1.0):
            raise ValueError(f"{name}: must be in (0, 1)")


class _Section:
    """``from_dict`` / ``to_dict`` for a flat frozen dataclass of numbers and flags."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, path: str = "") -> Self:
        """Build from a mapping; unknown keys and bad values raise ``ValueError``."""
        data = dict(data or {})
        known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key in data:
            if key not in known:
                raise ValueError(f"{path}{key}: unknown key")
        values: dict[str, Any] = {}
        for key, value in data.items():
            default = known[key].default
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{path}{key}: must be true or false")
            elif isinstance(default, int | float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{path}{key}: must be a number")
                value = type(default)(value)
            values[key] = value
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"{path}{exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        return dataclasses.asdict(self)  # type: ignore[call-overload,no-any-return]


@dataclass(frozen=True, slots=True)
class SuccessRateConfig(_Section):
    """Success-rate degradation (:class:`~apos.core.detect.success_rate.SuccessRateDetector`).

    Attributes:
        delta: The drop the Bernoulli CUSUM is tuned to: ``p1 = p0 - delta`` (absolute).
        threshold: The CUSUM's decision threshold ``h`` (log-likelihood ratio). About
            ``exp(h)`` outcomes pass between false alarms per entity on stable traffic.
        clear_fraction: The condition clears when the statistic falls to ``clear_fraction *
            h`` (hysteresis, so an incident does not flap).
        cap_factor: The statistic is capped at ``cap_factor * h``, so a long outage clears
            within a few hundred good outcomes of the recovery.
        baseline_half_life_s: Half-life of the decayed success rate ``p0``.
        min_baseline: Decayed outcomes behind ``p0`` before the entity is tested (quiet
            merchant × connector pairs are not tested until they have the volume).
        p0_max: ``p0`` is capped here: against a 99.9 % baseline, three failures would
            otherwise be an outage.
        per_payment_method: Also test each connector × payment method.
        per_merchant: Also test each merchant × connector.
        window_s: Window of the success rate shown as evidence (``observed``).
        max_freeze_s: The baseline stops learning while an incident is open, for at most
            this long; then a lasting change is accepted as the new normal.
        idle_prune_s: An entity without outcomes for this long (and no open incident) is
            forgotten, so the state does not grow with every merchant ever seen.
    """

    delta: float = 0.10
    threshold: float = 13.0
    clear_fraction: float = 0.5
    cap_factor: float = 2.0
    baseline_half_life_s: float = 3600.0
    min_baseline: float = 200.0
    p0_max: float = 0.99
    per_payment_method: bool = True
    per_merchant: bool = True
    window_s: float = 300.0
    max_freeze_s: float = 6 * 3600.0
    idle_prune_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        _check_positive(
            self,
            "threshold",
            "baseline_half_life_s",
            "min_baseline",
            "window_s",
            "max_freeze_s",
            "idle_prune_s",
        )
        _check_fraction(self, "delta", "clear_fraction", "p0_max")
        if self.cap_factor < 1.0:
            raise ValueError("cap_factor: must be >= 1")


@dataclass(frozen=True, slots=True)
class LatencyConfig(_Section):
    """Latency increase (:class:`~apos.core.detect.latency.LatencyDetector`).

    Attributes:
        quantile: The quantile watched (0.95: the p95).
        exceed_p1: Share of outcomes above the baseline quantile the CUSUM is tuned to
            (under no change it is ``1 - quantile``).
        threshold: The exceedance CUSUM's threshold ``h``.
        clear_fraction: Clears when the statistic falls to ``clear_fraction * h``.
        cap_factor: The statistic is capped at ``cap_factor * h``.
        window_s: Window of the p95 shown as evidence.
        block_s: The baseline is kept as sketches of this many seconds each...
        blocks: ...this many of them (the baseline covers ``block_s * blocks``).
        min_baseline: Latencies behind the baseline quantile before testing.
        relative_accuracy: Relative accuracy of the quantile sketches (DDSketch).
        max_freeze_s: As for the success rate.
        idle_prune_s: As for the success rate.
    """

    quantile: float = 0.95
    exceed_p1: float = 0.15
    threshold: float = 13.0
    clear_fraction: float = 0.5
    cap_factor: float = 2.0
    window_s: float = 60.0
    block_s: float = 300.0
    blocks: int = 12
    min_baseline: int = 2000
    relative_accuracy: float = 0.01
    max_freeze_s: float = 6 * 3600.0
    idle_prune_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        _check_positive(
            self,
            "threshold",
            "window_s",
            "block_s",
            "blocks",
            "min_baseline",
            "max_freeze_s",
            "idle_prune_s",
        )
        _check_fraction(self, "quantile", "exceed_p1", "clear_fraction", "relative_accuracy")
        if self.exceed_p1 <= 1.0 - self.quantile:
            raise ValueError("exceed_p1: must be above 1 - quantile")
        if self.cap_factor < 1.0:
            raise ValueError("cap_factor: must be >= 1")


@dataclass(frozen=True, slots=True)
class VolumeConfig(_Section):
    """Volume spike and drop (:class:`~apos.core.detect.volume.VolumeDetector`).

    Attributes:
        window_s: The window whose count is tested against the seasonal forecast.
        level_half_life_s: Half-life of Holt's level (how fast the baseline follows).
        trend_half_life_s: Half-life of Holt's trend.
        trend_horizon_s: The trend is extrapolated at most this far (while frozen).
        season_half_life_s: Half-life, in seconds spent in a slot, of the 168 hour-of-week
            seasonal factors.
        tolerance: The forecast is trusted to within this relative error: a drop is
            tested against ``(1 - tolerance) * expected``, a spike against ``(1 +
            tolerance) * expected`` (a composite null hypothesis, Poisson counts).
        alpha: Significance level of the Poisson tail test.
        min_drop: A drop must also be at least this share of the expected count...
        min_spike: ...and a spike at least this share above it (effect size, so a
            significant but harmless change at high volume does not page).
        min_expected: Expected count of the window below which an entity is not tested.
        warmup_s: Seconds of history an entity needs before it is tested.
        per_merchant: Test each merchant.
        per_connector: Test each connector.
        max_freeze_s: As for the success rate.
        idle_prune_s: As for the success rate.
    """

    window_s: float = 120.0
    level_half_life_s: float = 900.0
    trend_half_life_s: float = 3600.0
    trend_horizon_s: float = 600.0
    season_half_life_s: float = 1800.0
    tolerance: float = 0.15
    alpha: float = 1e-6
    min_drop: float = 0.4
    min_spike: float = 0.6
    min_expected: float = 40.0
    warmup_s: float = 1800.0
    per_merchant: bool = True
    per_connector: bool = True
    max_freeze_s: float = 6 * 3600.0
    idle_prune_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        _check_positive(
            self,
            "window_s",
            "level_half_life_s",
            "trend_half_life_s",
            "trend_horizon_s",
            "season_half_life_s",
            "min_spike",
            "min_expected",
            "warmup_s",
            "max_freeze_s",
            "idle_prune_s",
        )
        _check_fraction(self, "tolerance", "alpha", "min_drop")


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    """Everything the :class:`~apos.core.detect.monitor.Monitor` and its detectors use.

    Attributes:
        interval_s: Interval detectors are evaluated once per this many seconds of event
            time (the granularity of time to detect).
        connector_error_codes: Error codes meaning "the connector itself failed" (as in
            ``BreakerConfig``); the success-rate evidence counts them apart from declines.
        success_rate: See :class:`SuccessRateConfig`.
        latency: See :class:`LatencyConfig`.
        volume: See :class:`VolumeConfig`.
        amount: Settings of the unusual-amount detector (its own ``from_config``).
        fraud: Settings of the fraud detector.
        pattern: Settings of the generic series detector.
        enabled: Names of the detectors to run (``None``: all of them).
    """

    interval_s: float = 10.0
    connector_error_codes: tuple[str, ...] = DEFAULT_CONNECTOR_ERROR_CODES
    success_rate: SuccessRateConfig = field(default_factory=SuccessRateConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    amount: Mapping[str, Any] = field(default_factory=dict)
    fraud: Mapping[str, Any] = field(default_factory=dict)
    pattern: Mapping[str, Any] = field(default_factory=dict)
    enabled: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_positive(self, "interval_s")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DetectionConfig:
        """Build from a mapping (TOML table, JSON object); unknown keys raise ``ValueError``."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise ValueError(f"{key}: unknown key")
        values: dict[str, Any] = {}
        if "interval_s" in data:
            interval = data["interval_s"]
            if isinstance(interval, bool) or not isinstance(interval, int | float):
                raise ValueError("interval_s: must be a number")
            values["interval_s"] = float(interval)
        for key in ("connector_error_codes", "enabled"):
            if key in data and data[key] is not None:
                codes = data[key]
                if isinstance(codes, str) or not all(isinstance(c, str) for c in codes):
                    raise ValueError(f"{key}: must be a list of strings")
                values[key] = tuple(c.lower() if key != "enabled" else c for c in codes)
        sections: dict[str, type[_Section]] = {
            "success_rate": SuccessRateConfig,
            "latency": LatencyConfig,
            "volume": VolumeConfig,
        }
        for key, section in sections.items():
            if key in data:
                values[key] = section.from_dict(data[key], f"{key}.")
        for key in ("amount", "fraud", "pattern"):
            if key in data:
                if not isinstance(data[key], Mapping):
                    raise ValueError(f"{key}: must be a table")
                values[key] = dict(data[key])
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (``from_dict(to_dict())`` gives an equal config)."""
        return {
            "interval_s": self.interval_s,
            "connector_error_codes": list(self.connector_error_codes),
            "success_rate": self.success_rate.to_dict(),
            "latency": self.latency.to_dict(),
            "volume": self.volume.to_dict(),
            "amount": dict(self.amount),
            "fraud": dict(self.fraud),
            "pattern": dict(self.pattern),
            "enabled": None if self.enabled is None else list(self.enabled),
        }
