"""What a detector reports: a :class:`Finding` about one entity at one event time.

Detectors (``apos.core.detect``) are pure and run in event time; a finding is a value the
shell turns into an anomaly record (one record per ongoing incident), an alert and a metric.
The types are the design brief's, plus the two the payment architecture names separately
(``LatencyIncrease``, ``UnusualAmount``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["AnomalyType", "Entity", "Evidence", "Finding", "Severity", "severity_of"]


class AnomalyType(StrEnum):
    """The kind of anomaly (``anomaly_records.anomaly_type``)."""

    VOLUME_SPIKE = "VolumeSpike"
    VOLUME_DROP = "VolumeDrop"
    HIGH_FAILURE_RATE = "HighFailureRate"
    LATENCY_INCREASE = "LatencyIncrease"
    UNUSUAL_AMOUNT = "UnusualAmount"
    UNUSUAL_PATTERN = "UnusualPattern"
    POTENTIAL_FRAUD = "PotentialFraud"


class Severity(StrEnum):
    """How urgently a person should look: ``critical`` pages, ``warning`` notifies,
    ``info`` is only recorded."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


def severity_of(score: float, critical_at: float = 0.99, warning_at: float = 0.9) -> Severity:
    """The severity a score maps to by default (detectors may decide otherwise)."""
    if score >= critical_at:
        return Severity.CRITICAL
    if score >= warning_at:
        return Severity.WARNING
    return Severity.INFO


@dataclass(frozen=True, slots=True)
class Entity:
    """What the anomaly is about. Unset parts are ``None``: ``Entity(connector="adyen")`` is
    the connector across merchants, ``Entity()`` the whole system.

    ``segment`` narrows further, as ``"payment_method=card"`` or ``"fingerprint=ab12.."``.
    """

    merchant_id: str | None = None
    connector: str | None = None
    segment: str | None = None

    @property
    def key(self) -> str:
        """A stable text key, e.g. ``m=m_shop|c=adyen|s=payment_method=card``."""
        return (
            "|".join(
                f"{name}={value}"
                for name, value in (
                    ("m", self.merchant_id),
                    ("c", self.connector),
                    ("s", self.segment),
                )
                if value is not None
            )
            or "all"
        )

    def to_dict(self) -> dict[str, str | None]:
        """A JSON-serialisable form."""
        return {
            "merchant_id": self.merchant_id,
            "connector": self.connector,
            "segment": self.segment,
        }


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why a detector thinks so, in numbers a person can check.

    Attributes:
        metric: What was measured (``success_rate``, ``volume_per_min``, ``latency_p95_ms``,
            ``amount``, ``attempts_per_fingerprint``, ...).
        baseline: The expected value (the baseline the test compares against).
        observed: The value seen in the window.
        test: The statistical test or rule, in words with its parameters (e.g.
            ``Bernoulli CUSUM p0=0.97 p1=0.87 h=12``).
        window_s: The window the observation covers, in seconds of event time.
        samples: How many observations the window held.
        details: Anything else worth showing (JSON-serialisable).
    """

    metric: str
    baseline: float
    observed: float
    test: str
    window_s: float
    samples: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (non-finite numbers become ``None``)."""
        return {
            "metric": self.metric,
            "baseline": _finite(self.baseline),
            "observed": _finite(self.observed),
            "test": self.test,
            "window_s": self.window_s,
            "samples": self.samples,
            "details": _finite_tree(self.details),
        }


@dataclass(frozen=True, slots=True)
class Finding:
    """One detector's verdict about one entity at event time ``at``.

    A detector reports a finding on every evaluation while the condition holds (``active``)
    and once more when it clears (``active=False``): the shell keeps one incident per
    ``(anomaly_type, entity.key)`` open from the first active finding to the clearing one.

    Attributes:
        anomaly_type: The kind.
        entity: What it is about.
        score: Strength in [0, 1] (1 = certainly anomalous).
        severity: See :class:`Severity`.
        at: Event time of the evaluation (epoch seconds).
        started_at: Event time the condition is estimated to have begun.
        evidence: The numbers behind it.
        active: False for the finding that says the condition has cleared.
        detector: Name of the detector that produced it.
    """

    anomaly_type: AnomalyType
    entity: Entity
    score: float
    severity: Severity
    at: float
    started_at: float
    evidence: Evidence
    detector: str
    active: bool = True

    def __post_init__(self) -> None:
        if not (0.0 <= self.score <= 1.0):
            raise ValueError(f"score must be in [0, 1], got {self.score}")

    @property
    def incident_key(self) -> str:
        """The identity of the ongoing incident this finding belongs to."""
        return f"{self.anomaly_type.value}|{self.entity.key}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        return {
            "anomaly_type": self.anomaly_type.value,
            "entity": self.entity.to_dict(),
            "score": self.score,
            "severity": self.severity.value,
            "at": self.at,
            "started_at": self.started_at,
            "evidence": self.evidence.to_dict(),
            "detector": self.detector,
            "active": self.active,
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _finite_tree(value: Any) -> Any:
    """``value`` with every non-finite float inside it replaced by ``None`` (JSON has no
    infinity; PostgreSQL's ``jsonb`` refuses ``Infinity`` and ``NaN``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_tree(v) for v in value]
    return value
