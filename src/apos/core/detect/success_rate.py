"""Success-rate degradation per connector, connector × payment method and merchant × connector.

Only final outcomes count (``PaymentStatus.is_final``; success is ``is_success``), like the
per-minute rollups: a payment reported "processing" and then "succeeded" is one outcome.
Issuer declines count as failures (they are what merchants lose); the evidence says how
many failures were the connector's own errors (``connector_error_codes``).
"""

from __future__ import annotations

from typing import Any, Self

from apos.core.detect.config import DetectionConfig, SuccessRateConfig
from apos.core.detect.cusum import CountWindow, CusumIncident, bernoulli_weights, cusum_score
from apos.core.detect.findings import AnomalyType, Entity, Evidence, Finding, severity_of
from apos.core.events import PaymentEvent, PaymentStatus
from apos.core.stats.decayed_beta import decay_factor

__all__ = ["SuccessRateDetector"]

_FINAL = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.AUTHORIZED, PaymentStatus.FAILED})
_SUCCESS = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.AUTHORIZED})

# Entity levels: the connector, and the two children whose new incidents are held back while
# the connector's own incident is open (one page for an outage, not one per merchant).
_CONNECTOR, _METHOD, _MERCHANT = "c", "pm", "mc"


class _RateState:
    """One entity: decayed baseline, CUSUM incident, evidence window."""

    __slots__ = ("base_n", "base_s", "base_ts", "covered", "last_seen", "track", "window")

    def __init__(self, window_s: float) -> None:
        # A child's incident that opened under its connector's: held back until it clears.
        self.covered = False
        self.base_n = 0.0
        self.base_s = 0.0
        self.base_ts: float | None = None
        self.last_seen = 0.0
        self.track = CusumIncident()
        self.window = CountWindow(window_s, 3)  # outcomes, successes, connector errors

    def learn(self, n: int, s: int, now: float, half_life_s: float) -> None:
        if self.base_ts is not None:
            kept = decay_factor(now - self.base_ts, half_life_s)
            self.base_n *= kept
            self.base_s *= kept
        self.base_ts = now
        self.base_n += n
        self.base_s += s

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": [self.base_n, self.base_s, self.base_ts],
            "last_seen": self.last_seen,
            "covered": self.covered,
            "track": self.track.to_dict(),
            "window": self.window.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], window_s: float) -> _RateState:
        entity = cls(window_s)
        entity.base_n, entity.base_s, entity.base_ts = state["base"]
        entity.last_seen = float(state["last_seen"])
        entity.covered = bool(state["covered"])
        entity.track = CusumIncident.from_dict(state["track"])
        entity.window = CountWindow.from_dict(state["window"], window_s, 3)
        return entity


class SuccessRateDetector:
    """Flags a success rate that fell below its own baseline (``HighFailureRate``).

    Statistic: for each entity, a Bernoulli CUSUM (Reynolds & Stoumbos 1999) of failures
    with in-control failure probability ``1 - p0`` and out-of-control ``1 - p1``, where
    ``p0`` is the entity's success rate decayed in event time (half-life
    ``baseline_half_life_s``; frozen while an incident is open, so an outage does not
    become the new normal) and ``p1 = p0 - delta``. Signals at ``S >= threshold``; clears
    when ``S`` falls to ``clear_fraction * threshold``. The test accounts for sample size:
    each outcome adds its log-likelihood ratio, so a 0/3 minute moves ``S`` by about 4.4
    (below ``h = 13``) while 900/1,000 after a 97 % baseline moves it by about 49.

    Entities: each connector; each connector × payment method and each merchant ×
    connector (when enabled). An entity is tested once ``min_baseline`` decayed outcomes
    stand behind its ``p0``, so a merchant without the volume is not tested alone. While a
    connector's incident is open, children's incidents that open are held back until they
    clear (their statistics still run, their baselines do not learn): an outage is one
    finding per evaluation, not one per merchant and payment method.

    Per event: one dictionary update (the counts of the interval); the tests run once per
    :meth:`evaluate`. Score: ``1 - 10 ** (-S / h)``.

    Examples:
        >>> from datetime import UTC, datetime
        >>> def outcome(i, ok):
        ...     return PaymentEvent.model_construct(
        ...         event_id=f"e{i}", merchant_id="m1", connector="adyen",
        ...         payment_method="card", amount=100, currency="EUR", error_code=None,
        ...         status=PaymentStatus.SUCCEEDED if ok else PaymentStatus.FAILED,
        ...         occurred_at=datetime.fromtimestamp(0, UTC))
        >>> detector = SuccessRateDetector()
        >>> for minute in range(60):  # an hour at 97 %
        ...     for i in range(100):
        ...         _ = detector.learn_one(outcome(i, i % 100 >= 3), now=60.0 * minute)
        ...     findings = detector.evaluate(now=60.0 * minute + 60)
        >>> findings
        []
        >>> for i in range(100):  # a minute at 60 %
        ...     _ = detector.learn_one(outcome(i, i % 10 >= 4), now=3600.0)
        >>> [(f.entity.key, f.severity.value) for f in detector.evaluate(now=3660.0)]
        [('c=adyen', 'critical')]

    References:
        [^1]: Reynolds, M.R. and Stoumbos, Z.G., 1999. A CUSUM chart for monitoring a
            proportion when inspecting continuously. Journal of Quality Technology 31(1).
        [^2]: Page, E.S., 1954. Continuous inspection schemes. Biometrika 41(1/2).
    """

    name = "success_rate"

    def __init__(
        self,
        config: SuccessRateConfig | None = None,
        connector_error_codes: tuple[str, ...] | None = None,
    ) -> None:
        self.config = config or SuccessRateConfig()
        codes = DetectionConfig().connector_error_codes
        self.connector_error_codes = tuple(
            connector_error_codes if connector_error_codes is not None else codes
        )
        self._connector_errors = frozenset(self.connector_error_codes)
        # (connector, payment_method, merchant_id) -> [outcomes, successes, connector errors]
        self._pending: dict[tuple[str, str, str], list[int]] = {}
        self._entities: dict[tuple[str, str, str], _RateState] = {}
        self._last_eval: float | None = None

    def learn_one(self, event: PaymentEvent, now: float) -> list[Finding]:
        """Count one outcome into the open interval (final outcomes only)."""
        status = event.status
        if status not in _FINAL:
            return []
        key = (event.connector, event.payment_method, event.merchant_id)
        counts = self._pending.get(key)
        if counts is None:
            counts = self._pending[key] = [0, 0, 0]
        counts[0] += 1
        if status in _SUCCESS:
            counts[1] += 1
        elif event.error_code in self._connector_errors:
            counts[2] += 1
        return []

    def evaluate(self, now: float) -> list[Finding]:
        """Run every entity's CUSUM over the interval's counts; findings for open incidents
        and for incidents that cleared."""
        cfg = self.config
        span = 0.0 if self._last_eval is None else max(0.0, now - self._last_eval)
        self._last_eval = now
        totals: dict[tuple[str, str, str], list[int]] = {}
        for (connector, method, merchant), counts in self._pending.items():
            keys = [(_CONNECTOR, connector, "")]
            if cfg.per_payment_method:
                keys.append((_METHOD, connector, method))
            if cfg.per_merchant:
                keys.append((_MERCHANT, connector, merchant))
            for key in keys:
                total = totals.get(key)
                if total is None:
                    totals[key] = list(counts)
                else:
                    total[0] += counts[0]
                    total[1] += counts[1]
                    total[2] += counts[2]
        self._pending = {}
        for key in totals:
            if key not in self._entities:
                self._entities[key] = _RateState(cfg.window_s)

        h = cfg.threshold
        cap, clear = cfg.cap_factor * h, cfg.clear_fraction * h
        findings: list[Finding] = []
        # Connectors first (sorted: deterministic), so children know their parent's state.
        for key in sorted(self._entities):
            entity = self._entities[key]
            n, s, errors = totals.get(key, (0, 0, 0))
            entity.window.add(span, (n, s, errors))
            if n:
                entity.last_seen = now
            track = entity.track
            # The evidence as of the baseline's last update: a frozen baseline keeps it, so an
            # incident on a small entity can still clear after a long outage.
            tested = entity.base_n >= cfg.min_baseline
            p0 = min(cfg.p0_max, entity.base_s / entity.base_n) if tested else 0.0
            if tested and p0 > 0.0:
                p1 = max(p0 - cfg.delta, p0 / 2.0)
                bad_w, good_w = bernoulli_weights(1.0 - p0, 1.0 - p1)
                change = track.update(n - s, s, bad_w, good_w, h=h, cap=cap, clear=clear, now=now)
            else:
                p1, change = 0.0, None
            learning = track.learning(now, clear, cfg.max_freeze_s)
            if key[0] != _CONNECTOR:
                # A child learns nothing while its connector is in trouble: an outage seen
                # first at the connector must not become a quiet child's baseline.
                parent = self._entities.get((_CONNECTOR, key[1], ""))
                parent_track = parent.track if parent is not None else None
                if parent_track is not None and (
                    parent_track.active or parent_track.statistic > clear
                ):
                    learning = False
            if n and learning:
                entity.learn(n, s, now, cfg.baseline_half_life_s)
            finding = self._report(key, entity, change, now, p0, p1)
            if finding is not None:
                findings.append(finding)
        self._prune(now)
        return findings

    def _report(
        self,
        key: tuple[str, str, str],
        entity: _RateState,
        change: str | None,
        now: float,
        p0: float,
        p1: float,
    ) -> Finding | None:
        track = entity.track
        if not track.active:
            entity.covered = False
        if track.active:
            if entity.covered:
                return None
            if not track.reported:
                level, connector, _ = key
                parent = self._entities.get((_CONNECTOR, connector, ""))
                if level != _CONNECTOR and parent is not None and parent.track.reported:
                    entity.covered = True  # the connector's incident covers it
                    return None
                track.reported = True
            return self._finding(key, entity, now, p0, p1, active=True)
        if change == "cleared" and track.reported:
            track.reported = False
            return self._finding(key, entity, now, p0, p1, active=False)
        if not track.active:
            track.reported = False
        return None

    def _finding(
        self,
        key: tuple[str, str, str],
        entity: _RateState,
        now: float,
        p0: float,
        p1: float,
        *,
        active: bool,
    ) -> Finding:
        cfg = self.config
        level, connector, other = key
        if level == _CONNECTOR:
            subject = Entity(connector=connector)
        elif level == _METHOD:
            subject = Entity(connector=connector, segment=f"payment_method={other}")
        else:
            subject = Entity(merchant_id=other, connector=connector)
        n, s, errors = entity.window.sums
        score = cusum_score(entity.track.statistic, cfg.threshold)
        failures = n - s
        return Finding(
            anomaly_type=AnomalyType.HIGH_FAILURE_RATE,
            entity=subject,
            score=score,
            severity=severity_of(score),
            at=now,
            started_at=entity.track.started_at if entity.track.started_at is not None else now,
            evidence=Evidence(
                metric="success_rate",
                baseline=p0,
                observed=s / n if n else float("nan"),
                test=(
                    f"Bernoulli CUSUM p0={p0:.4f} p1={p1:.4f} h={cfg.threshold:g} "
                    f"(S={entity.track.statistic:.1f})"
                ),
                window_s=entity.window.span,
                samples=n,
                details={
                    "successes": s,
                    "failures": failures,
                    "connector_errors": errors,
                    "other_failures": failures - errors,
                    "cusum": entity.track.statistic,
                    "threshold": cfg.threshold,
                },
            ),
            detector=self.name,
            active=active,
        )

    def _prune(self, now: float) -> None:
        idle = self.config.idle_prune_s
        stale = [
            key
            for key, entity in self._entities.items()
            if now - entity.last_seen > idle and not entity.track.reported
        ]
        for key in stale:
            del self._entities[key]

    def to_dict(self) -> dict[str, Any]:
        """The detector's state, JSON-serialisable (pending counts included)."""
        return {
            "config": self.config.to_dict(),
            "connector_error_codes": list(self.connector_error_codes),
            "last_eval": self._last_eval,
            "pending": [[*key, *counts] for key, counts in self._pending.items()],
            "entities": [[*key, entity.to_dict()] for key, entity in self._entities.items()],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict`."""
        config = SuccessRateConfig.from_dict(state["config"])
        detector = cls(config, tuple(state["connector_error_codes"]))
        detector._last_eval = state["last_eval"]
        detector._pending = {(c, pm, m): [n, s, e] for c, pm, m, n, s, e in state["pending"]}
        detector._entities = {
            (level, a, b): _RateState.from_dict(entity, config.window_s)
            for level, a, b, entity in state["entities"]
        }
        return detector
