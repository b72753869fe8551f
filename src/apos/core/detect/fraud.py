"""Potential fraud: card velocity, card-testing bursts, unusually high value for the merchant.

Three rules, each a ``PotentialFraud`` incident of its own (``details["rule"]`` says which):

1. **Velocity** — ``Entity(merchant_id, segment="fingerprint=<hash>")``. The payments of one
   card or customer fingerprint at one merchant in the last ``velocity_window_s`` of event
   time (a sliding window of their timestamps); at ``velocity_threshold`` or more the
   incident opens. Consecutive events of the same payment (pending then final, a retry at
   another connector, capture after authorisation) count once. Bounded memory: at most
   ``2 * velocity_threshold`` timestamps per fingerprint, fingerprints idle for a window
   forgotten at each ``evaluate``, at most ``max_fingerprints`` kept (least recently seen
   evicted first). Only the fingerprint (a hash by contract: raw card numbers and e-mail
   addresses are refused at ingestion) and the id of its latest payment are kept.
2. **Card testing** — ``Entity(merchant_id, segment="rule=card_testing")``. Failed attempts
   of at most ``small_amount_major`` (in the currency's major unit) at one merchant in the
   last ``card_testing_window_s``, against that merchant's baseline rate of them: a
   Poisson rate with exponential forgetting (half-life ``baseline_half_life_s``) shrunk
   towards ``prior_per_window`` by ``prior_weight_s`` seconds of pseudo-exposure. The
   incident opens at the first count ``k`` with ``P(Poisson(mu) >= k) < card_testing_alpha``,
   ``k >= card_testing_min_count`` and ``k >= card_testing_ratio * mu`` (``mu`` the
   expected count per window); the distinct fingerprints of the window are in the
   evidence. The threshold ``k`` is recomputed per interval, so per event the work is an
   append and a comparison. A burst's own attempts are not learnt into the baseline.
3. **High value** — ``Entity(merchant_id, segment="rule=high_value,currency=XXX")``. An
   amount above ``high_value_factor`` times the merchant's ``high_value_quantile`` amount
   in that currency (time-decayed log histogram), after ``high_value_min_samples``.

Velocity and card testing clear at the first ``evaluate`` whose window no longer meets the
threshold (card testing: half of it); a high-value incident ``hold_s`` after its last
amount. Each opens from ``learn_one`` at the event that crosses the line, is reported at
every ``evaluate`` while open and cleared once with ``active=False``.

References:
    [^1]: Bolton, R.J. and Hand, D.J., 2002. Statistical fraud detection: a review.
        Statistical Science 17(3), 235-255 (velocity and peer-baseline rules).
    [^2]: Visa, 2022. Visa Fraud Monitoring Program / card-testing guidance: bursts of
        low-value authorisations with high decline rates.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Self

from apos.core.detect.amount_histogram import DecayedLogHistogram
from apos.core.detect.findings import AnomalyType, Entity, Evidence, Finding, Severity
from apos.core.detect.sections import config_from_mapping
from apos.core.detect.tails import poisson_sf
from apos.core.events import PaymentEvent, PaymentStatus
from apos.core.iso import CURRENCY_EXPONENTS

__all__ = ["FraudConfig", "FraudDetector"]

_LN2 = math.log(2.0)


@dataclass(frozen=True, slots=True)
class FraudConfig:
    """Parameters of :class:`FraudDetector`.

    Attributes:
        velocity_window_s: Sliding window of the velocity rule.
        velocity_threshold: Payments of one fingerprint at one merchant in the window that
            open a velocity incident.
        max_fingerprints: Most (merchant, fingerprint) pairs kept.
        card_testing_window_s: Sliding window of the card-testing rule.
        small_amount_major: Largest "small" amount, in major units of its currency.
        card_testing_min_count: Fewest small failed attempts in the window that can open.
        card_testing_ratio: Count must also be this many times the expected count.
        card_testing_alpha: Poisson upper-tail probability below which a burst opens.
        baseline_half_life_s: Half-life of the merchant's baseline rate of small failures.
        prior_per_window: Prior expected small failures per window (before evidence).
        prior_weight_s: Pseudo-exposure of that prior, seconds.
        max_merchants: Most merchants kept for card testing.
        max_window_attempts: Most attempts kept in one merchant's card-testing window.
        high_value_quantile: Quantile of the merchant's amounts (per currency).
        high_value_factor: An amount above factor x that quantile is high value.
        high_value_min_samples: Decayed amounts before the high-value rule applies.
        high_value_half_life_s: Half-life of amounts in the high-value baseline.
        refresh_every: Amounts between two re-reads of the high-value threshold.
        hold_s: A high-value incident stays open this long after its last amount.
        max_amount_keys: Most (merchant, currency) pairs kept for the high-value rule.
        velocity_severity: Severity of velocity findings.
        card_testing_severity: Severity of card-testing findings.
        high_value_severity: Severity of high-value findings.
    """

    velocity_window_s: float = 600.0
    velocity_threshold: int = 10
    max_fingerprints: int = 200_000
    card_testing_window_s: float = 60.0
    small_amount_major: float = 5.0
    card_testing_min_count: int = 15
    card_testing_ratio: float = 5.0
    card_testing_alpha: float = 1e-6
    baseline_half_life_s: float = 86_400.0
    prior_per_window: float = 1.0
    prior_weight_s: float = 3_600.0
    max_merchants: int = 10_000
    max_window_attempts: int = 10_000
    high_value_quantile: float = 0.999
    high_value_factor: float = 5.0
    high_value_min_samples: float = 1_000.0
    high_value_half_life_s: float = 7 * 86_400.0
    refresh_every: int = 256
    hold_s: float = 900.0
    max_amount_keys: int = 10_000
    velocity_severity: Severity = Severity.WARNING
    card_testing_severity: Severity = Severity.CRITICAL
    high_value_severity: Severity = Severity.WARNING

    def __post_init__(self) -> None:
        if self.velocity_threshold < 2 or self.card_testing_min_count < 1:
            raise ValueError("velocity_threshold >= 2 and card_testing_min_count >= 1")
        if not 0.0 < self.high_value_quantile < 1.0:
            raise ValueError("high_value_quantile must be in (0, 1)")
        if min(self.max_fingerprints, self.max_merchants, self.max_amount_keys) < 1:
            raise ValueError("table caps must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        out = asdict(self)
        for name in ("velocity_severity", "card_testing_severity", "high_value_severity"):
            out[name] = getattr(self, name).value
        return out

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict` or a settings table (unknown keys refused, missing
        ones default)."""
        return config_from_mapping(cls, state)


class _Velocity:
    """One (merchant, fingerprint): recent payment times and the latest payment id."""

    __slots__ = ("last_payment", "open", "started_at", "times")

    def __init__(self, maxlen: int) -> None:
        self.times: deque[float] = deque(maxlen=maxlen)
        self.last_payment = ""
        self.open = False
        self.started_at = 0.0


class _CardTesting:
    """One merchant: its window of small failed attempts and its baseline rate."""

    __slots__ = ("count", "first_seen", "last_ts", "open", "started_at", "threshold", "window")

    def __init__(self, ts: float) -> None:
        self.window: deque[tuple[float, str]] = deque()
        self.count = 0.0  # decayed number of small failed attempts, as of last_ts
        self.last_ts = ts
        self.first_seen = ts
        self.threshold = 0  # 0: not computed yet
        self.open = False
        self.started_at = 0.0


class _HighValue:
    """One (merchant, currency): decayed amounts and the cached high-value line."""

    __slots__ = ("hist", "last_hit", "limit", "open", "pending", "quantile", "started_at")

    def __init__(self, config: FraudConfig) -> None:
        self.hist = DecayedLogHistogram(config.high_value_half_life_s)
        self.limit = math.inf  # amounts above it are high value (inf: not warm yet)
        self.quantile = 0.0
        self.pending = 0
        self.open = False
        self.started_at = 0.0
        self.last_hit: dict[str, Any] | None = None


class FraudDetector:
    """Velocity, card testing and high value, per merchant (see the module docstring).

    Parameters:
        config: The parameters; defaults when omitted.

    Examples:
        >>> from datetime import UTC, datetime
        >>> def attempt(i, ts, fingerprint, status="failed", amount=100):
        ...     return PaymentEvent(event_id=f"e{i}", payment_id=f"p{i}", merchant_id="m_shop",
        ...         connector="adyen", status=status, amount=amount, currency="USD",
        ...         fingerprint=fingerprint, occurred_at=datetime.fromtimestamp(ts, UTC))
        >>> detector = FraudDetector(FraudConfig(velocity_threshold=5))
        >>> found = [f for i in range(5)
        ...          for f in detector.learn_one(attempt(i, 10.0 * i, "fp_0a1b2c3d"), 10.0 * i)]
        >>> [(f.evidence.details["rule"], f.entity.segment) for f in found]
        [('velocity', 'fingerprint=fp_0a1b2c3d')]
        >>> [(f.evidence.details["rule"], f.active) for f in detector.evaluate(now=700.0)]
        [('velocity', False)]

    References:
        [^1]: Bolton, R.J. and Hand, D.J., 2002. Statistical fraud detection: a review.
            Statistical Science 17(3), 235-255.
    """

    name = "fraud"

    def __init__(self, config: FraudConfig | None = None) -> None:
        self.config = config or FraudConfig()
        self._velocity: dict[tuple[str, str], _Velocity] = {}
        self._testing: dict[str, _CardTesting] = {}
        self._amounts: dict[tuple[str, str], _HighValue] = {}
        self._rate = _LN2 / self.config.baseline_half_life_s

    @classmethod
    def from_config(cls, settings: Mapping[str, Any], prefix: str = "fraud.") -> Self:
        """Build from a settings table (``ValueError`` names a wrong key)."""
        return cls(config_from_mapping(FraudConfig, settings, prefix))

    def sizes(self) -> dict[str, int]:
        """Entries per table (for tests and metrics: memory is bounded by the caps)."""
        return {
            "fingerprints": len(self._velocity),
            "merchants": len(self._testing),
            "amount_keys": len(self._amounts),
            "window_attempts": sum(len(m.window) for m in self._testing.values()),
        }

    # -- learning -----------------------------------------------------------------------

    def learn_one(self, event: PaymentEvent, now: float) -> list[Finding]:
        """Apply the three rules to one event; return the incidents it opens."""
        ts = event.occurred_ts
        if ts > now:
            ts = now
        findings: list[Finding] = []
        if event.fingerprint is not None:
            found = self._learn_velocity(event, ts, now)
            if found is not None:
                findings.append(found)
        found = self._learn_card_testing(event, ts, now)  # every event: the exposure clock
        if found is not None:
            findings.append(found)
        status = event.status
        if status.is_final and event.attempt == 1:
            found = self._learn_high_value(event, ts, now)
            if found is not None:
                findings.append(found)
        return findings

    def _learn_velocity(self, event: PaymentEvent, ts: float, now: float) -> Finding | None:
        cfg = self.config
        fingerprint = event.fingerprint
        assert fingerprint is not None
        key = (event.merchant_id, fingerprint)
        table = self._velocity
        state = table.pop(key, None)  # re-inserted: the dict stays in last-seen order
        if state is None:
            state = _Velocity(2 * cfg.velocity_threshold)
            if len(table) >= cfg.max_fingerprints:
                del table[next(iter(table))]
        table[key] = state
        if event.payment_id == state.last_payment:
            return None  # another event of the same payment
        state.last_payment = event.payment_id
        times = state.times
        times.append(ts)
        horizon = ts - cfg.velocity_window_s
        while times[0] <= horizon:
            times.popleft()
        if state.open or len(times) < cfg.velocity_threshold:
            return None
        state.open = True
        state.started_at = times[0]
        return self._velocity_finding(key, state, now)

    def _learn_card_testing(self, event: PaymentEvent, ts: float, now: float) -> Finding | None:
        cfg = self.config
        merchant_id = event.merchant_id
        table = self._testing
        state = table.get(merchant_id)
        if state is None:
            if len(table) >= cfg.max_merchants:
                del table[next(iter(table))]
            state = table[merchant_id] = _CardTesting(ts)
        if event.status is not PaymentStatus.FAILED:
            return None
        exponent = CURRENCY_EXPONENTS.get(event.currency, 2)
        if event.amount > cfg.small_amount_major * 10**exponent:
            return None
        window = state.window
        window.append((ts, event.fingerprint or ""))
        if len(window) > cfg.max_window_attempts:
            window.popleft()
        horizon = ts - cfg.card_testing_window_s
        while window[0][0] <= horizon:
            window.popleft()
        if not state.open:
            # The burst's own attempts are not learnt: they would raise the bar they cross.
            if ts > state.last_ts:
                state.count *= math.exp(-self._rate * (ts - state.last_ts))
                state.last_ts = ts
            state.count += 1.0
            if state.threshold == 0:
                self._card_testing_threshold(state, ts)
            if len(window) >= state.threshold:
                state.open = True
                state.started_at = window[0][0]
                return self._card_testing_finding(merchant_id, state, now)
        return None

    def _learn_high_value(self, event: PaymentEvent, ts: float, now: float) -> Finding | None:
        cfg = self.config
        key = (event.merchant_id, event.currency)
        table = self._amounts
        state = table.pop(key, None)
        if state is None:
            state = _HighValue(cfg)
            if len(table) >= cfg.max_amount_keys:
                del table[next(iter(table))]
        table[key] = state
        amount = event.amount
        finding = None
        if amount > state.limit:  # scored against the history before this amount
            state.last_hit = {
                "at": ts,
                "amount": amount,
                "count": (
                    int(state.last_hit["count"]) + 1
                    if state.last_hit is not None and state.open
                    else 1
                ),
                "samples": int(state.hist.weight(ts)),
            }
            if not state.open:
                state.open = True
                state.started_at = ts
                finding = self._high_value_finding(key, state, now)
        state.hist.add(amount, ts)
        state.pending += 1
        if state.pending >= cfg.refresh_every or (
            math.isinf(state.limit) and state.pending % 16 == 0
        ):
            self._high_value_limit(state, ts)
        return finding

    # -- per-interval statistics --------------------------------------------------------

    def _expected_per_window(self, state: _CardTesting, now: float) -> float:
        """Expected small failed attempts per window: decayed count over decayed exposure,
        shrunk towards the prior."""
        cfg = self.config
        count = state.count * math.exp(-self._rate * max(0.0, now - state.last_ts))
        elapsed = max(0.0, now - state.first_seen)
        exposure = (1.0 - math.exp(-self._rate * elapsed)) / self._rate
        prior_rate = cfg.prior_per_window / cfg.card_testing_window_s
        rate = (count + prior_rate * cfg.prior_weight_s) / (exposure + cfg.prior_weight_s)
        return rate * cfg.card_testing_window_s

    def _card_testing_threshold(self, state: _CardTesting, now: float) -> None:
        cfg = self.config
        mu = self._expected_per_window(state, now)
        k = max(cfg.card_testing_min_count, math.ceil(cfg.card_testing_ratio * mu))
        while poisson_sf(k, mu) >= cfg.card_testing_alpha:
            k += 1
        state.threshold = k

    def _high_value_limit(self, state: _HighValue, now: float) -> None:
        cfg = self.config
        state.pending = 0
        if state.hist.weight(now) < cfg.high_value_min_samples:
            return
        state.quantile = math.expm1(state.hist.view().quantile_log(cfg.high_value_quantile))
        state.limit = cfg.high_value_factor * state.quantile

    # -- evaluation ---------------------------------------------------------------------

    def evaluate(self, now: float) -> list[Finding]:
        """Expire idle fingerprints, refresh baselines, report open incidents or clear them."""
        cfg = self.config
        findings: list[Finding] = []
        # Velocity: the table is in last-seen order, so the idle ones are at its front.
        table = self._velocity
        horizon = now - cfg.velocity_window_s
        while table:
            key = next(iter(table))
            state = table[key]
            if state.open or not state.times or state.times[-1] > horizon:
                break
            del table[key]
        for key, state in list(table.items()):
            if not state.open:
                continue
            times = state.times
            while times and times[0] <= horizon:
                times.popleft()
            active = len(times) >= cfg.velocity_threshold
            findings.append(self._velocity_finding(key, state, now, active))
            if not active:
                state.open = False
                if not times:
                    del table[key]
        # Card testing.
        testing_horizon = now - cfg.card_testing_window_s
        for merchant_id, testing in self._testing.items():
            window = testing.window
            while window and window[0][0] <= testing_horizon:
                window.popleft()
            if window or testing.open:  # a quiet merchant's bar only matters once it is not
                self._card_testing_threshold(testing, now)
            if testing.open:
                active = 2 * len(window) >= testing.threshold
                findings.append(self._card_testing_finding(merchant_id, testing, now, active))
                testing.open = active
        # High value.
        for key, hv in self._amounts.items():
            if hv.pending:
                self._high_value_limit(hv, now)
            if hv.open:
                assert hv.last_hit is not None
                active = now - float(hv.last_hit["at"]) <= cfg.hold_s
                findings.append(self._high_value_finding(key, hv, now, active))
                hv.open = active
        return findings

    # -- findings -----------------------------------------------------------------------

    def _velocity_finding(
        self, key: tuple[str, str], state: _Velocity, now: float, active: bool = True
    ) -> Finding:
        cfg = self.config
        count = len(state.times)
        return Finding(
            anomaly_type=AnomalyType.POTENTIAL_FRAUD,
            entity=Entity(merchant_id=key[0], segment=f"fingerprint={key[1]}"),
            score=min(1.0, count / (2.0 * cfg.velocity_threshold)) if active else 0.0,
            severity=cfg.velocity_severity,
            at=now,
            started_at=state.started_at,
            evidence=Evidence(
                metric="payments_per_fingerprint",
                baseline=float(cfg.velocity_threshold),
                observed=float(count),
                test=(
                    f"velocity rule: >= {cfg.velocity_threshold} payments of one fingerprint "
                    f"in {cfg.velocity_window_s:.0f}s"
                ),
                window_s=cfg.velocity_window_s,
                samples=count,
                details={
                    "rule": "velocity",
                    "count_capped_at": 2 * cfg.velocity_threshold,
                    "first_at": state.times[0] if state.times else None,
                    "last_at": state.times[-1] if state.times else None,
                },
            ),
            detector=self.name,
            active=active,
        )

    def _card_testing_finding(
        self, merchant_id: str, state: _CardTesting, now: float, active: bool = True
    ) -> Finding:
        cfg = self.config
        mu = self._expected_per_window(state, now)
        k = len(state.window)
        p_value = poisson_sf(k, mu)
        fingerprints = {fp for _, fp in state.window if fp}
        return Finding(
            anomaly_type=AnomalyType.POTENTIAL_FRAUD,
            entity=Entity(merchant_id=merchant_id, segment="rule=card_testing"),
            score=max(0.0, 1.0 - p_value) if active else 0.0,
            severity=cfg.card_testing_severity,
            at=now,
            started_at=state.started_at,
            evidence=Evidence(
                metric="small_failed_attempts",
                baseline=mu,
                observed=float(k),
                test=(
                    f"Poisson upper tail P(X >= k) < {cfg.card_testing_alpha}, "
                    f"k >= {cfg.card_testing_min_count} and k >= {cfg.card_testing_ratio} x "
                    f"baseline; amounts <= {cfg.small_amount_major} major units"
                ),
                window_s=cfg.card_testing_window_s,
                samples=k,
                details={
                    "rule": "card_testing",
                    "threshold": state.threshold,
                    "p_value": p_value,
                    "distinct_fingerprints": len(fingerprints),
                    "attempts_without_fingerprint": sum(1 for _, fp in state.window if not fp),
                },
            ),
            detector=self.name,
            active=active,
        )

    def _high_value_finding(
        self, key: tuple[str, str], state: _HighValue, now: float, active: bool = True
    ) -> Finding:
        cfg = self.config
        hit = state.last_hit
        assert hit is not None
        amount = float(hit["amount"])
        return Finding(
            anomaly_type=AnomalyType.POTENTIAL_FRAUD,
            entity=Entity(merchant_id=key[0], segment=f"rule=high_value,currency={key[1]}"),
            # How far past the line, on a log scale: at the line 0.5, at 4x the line ~0.83.
            score=(1.0 - 0.5 * state.limit / amount) if active and amount > 0 else 0.0,
            severity=cfg.high_value_severity,
            at=now,
            started_at=state.started_at,
            evidence=Evidence(
                metric="amount",
                baseline=state.limit,
                observed=amount,
                test=(
                    f"amount > {cfg.high_value_factor} x the merchant's "
                    f"q{cfg.high_value_quantile:g} amount (decayed log histogram)"
                ),
                window_s=cfg.high_value_half_life_s,
                samples=int(hit["samples"]),
                details={
                    "rule": "high_value",
                    "currency": key[1],
                    "quantile_minor_units": round(state.quantile, 2),
                    "high_value_amounts": hit["count"],
                    "last_at": hit["at"],
                },
            ),
            detector=self.name,
            active=active,
        )

    # -- snapshot -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """State (configuration included), JSON-serialisable."""
        return {
            "config": self.config.to_dict(),
            "velocity": [
                [m, fp, list(s.times), s.last_payment, s.open, s.started_at]
                for (m, fp), s in self._velocity.items()
            ],
            "card_testing": [
                [
                    m,
                    [list(a) for a in s.window],
                    s.count,
                    s.last_ts,
                    s.first_seen,
                    s.threshold,
                    s.open,
                    s.started_at,
                ]
                for m, s in self._testing.items()
            ],
            "high_value": [
                [
                    m,
                    c,
                    s.hist.to_dict(),
                    s.limit if math.isfinite(s.limit) else None,
                    s.quantile,
                    s.pending,
                    s.open,
                    s.started_at,
                    s.last_hit,
                ]
                for (m, c), s in self._amounts.items()
            ],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict`; it continues exactly where it stopped."""
        detector = cls(FraudConfig.from_dict(state["config"]))
        cfg = detector.config
        for m, fp, times, last_payment, is_open, started_at in state["velocity"]:
            v = _Velocity(2 * cfg.velocity_threshold)
            v.times.extend(float(t) for t in times)
            v.last_payment, v.open, v.started_at = last_payment, bool(is_open), float(started_at)
            detector._velocity[(m, fp)] = v
        for m, window, count, last_ts, first_seen, threshold, is_open, started in state[
            "card_testing"
        ]:
            t = _CardTesting(float(first_seen))
            t.window = deque((float(ts), str(fp)) for ts, fp in window)
            t.count, t.last_ts, t.threshold = float(count), float(last_ts), int(threshold)
            t.open, t.started_at = bool(is_open), float(started)
            detector._testing[m] = t
        for m, c, hist, limit, quantile, pending, is_open, started, last_hit in state["high_value"]:
            h = _HighValue(cfg)
            h.hist = DecayedLogHistogram.from_dict(hist)
            h.limit = math.inf if limit is None else float(limit)
            h.quantile, h.pending = float(quantile), int(pending)
            h.open, h.started_at, h.last_hit = bool(is_open), float(started), last_hit
            detector._amounts[(m, c)] = h
        return detector
