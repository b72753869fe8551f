"""Potential fraud: card velocity, card-testing bursts, unusually high value for the merchant.

Three rules, each a ``PotentialFraud`` incident of its own (``details["rule"]`` says which):

1. **Velocity** — ``Entity(merchant_id, segment="fingerprint=<hash>")``. The payments of one
   card or customer fingerprint at one merchant in the last ``velocity_window_s`` of event
   time; at ``velocity_threshold`` or more the incident opens. Consecutive events of the
   same payment (pending then final, a retry at another connector, capture after
   authorisation) count once. The window is a time wheel of ``wheel_s`` buckets: per
   payment, one counter increment and one append of its key to the current bucket; a
   bucket wholly older than the window is expired at once (one decrement per payment it
   holds) when the wheel turns or at ``evaluate``, so the window spans ``velocity_window_s``
   plus up to one bucket. Memory is the window's payments; a fingerprint whose count falls
   to zero is forgotten, and at most ``max_fingerprints`` are tracked (new ones are not
   while the table is full; ``sizes()["fingerprints_untracked"]`` counts them). Only the
   fingerprint (a hash by contract: raw card numbers and e-mail addresses are refused at
   ingestion), its count, its latest payment id and two times are kept.
2. **Card testing** — ``Entity(merchant_id, segment="rule=card_testing")``. Failed attempts
   of at most ``small_amount_major`` (in the currency's major unit) at one merchant in the
   last ``card_testing_window_s``, against that merchant's baseline rate of them: a
   Poisson rate with exponential forgetting (half-life ``baseline_half_life_s``) shrunk
   towards ``prior_per_window`` by ``prior_weight_s`` seconds of pseudo-exposure. The
   incident opens at the first count ``k`` with ``P(Poisson(mu) >= k) < card_testing_alpha``,
   ``k >= card_testing_min_count`` and ``k >= card_testing_ratio * mu`` (``mu`` the
   expected count per window); the distinct fingerprints of the window are in the
   evidence. The window is a wheel of ``wheel_s`` buckets (count and fingerprint set per
   bucket); an expired bucket is learnt into the baseline with one exponential, and the
   threshold ``k`` is recomputed per window at an ``evaluate``, so per event the work is a
   few increments and a comparison. A burst's own attempts are not learnt into the
   baseline.
3. **High value** — ``Entity(merchant_id, segment="rule=high_value,currency=XXX")``. An
   amount above ``high_value_factor`` times the merchant's ``high_value_quantile`` amount
   in that currency (time-decayed log histogram), after ``high_value_min_samples``. Per
   amount, a comparison with the cached line and one bin counted; the counts are folded
   into the histogram and the line re-read at an ``evaluate``, every ``refresh_s``. The
   score, :func:`high_value_score`, is taken against the line the amount crossed.

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
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Self

from apos.core.detect.amount import add_counts
from apos.core.detect.amount_histogram import DecayedLogHistogram
from apos.core.detect.findings import AnomalyType, Entity, Evidence, Finding, Severity
from apos.core.detect.sections import config_from_mapping
from apos.core.detect.tails import poisson_sf
from apos.core.events import PaymentEvent, PaymentStatus
from apos.core.iso import CURRENCY_EXPONENTS

__all__ = ["FraudConfig", "FraudDetector", "high_value_score"]

_LN2 = math.log(2.0)
_BIN_WIDTH = 0.05  # the high-value histogram's bin width (DecayedLogHistogram default)
_FINAL = frozenset(s for s in PaymentStatus if s.is_final)


@dataclass(frozen=True, slots=True)
class FraudConfig:
    """Parameters of :class:`FraudDetector`.

    Attributes:
        velocity_window_s: Sliding window of the velocity rule.
        velocity_threshold: Payments of one fingerprint at one merchant in the window that
            open a velocity incident.
        max_fingerprints: Most (merchant, fingerprint) pairs kept.
        max_fingerprints_per_merchant: Most pairs kept for one merchant, so one merchant's
            flood of fingerprints cannot fill the table and blind the rule for the others.
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
        refresh_s: Seconds of event time between two re-reads of the high-value line
            (at an ``evaluate``; every ``evaluate`` before it is warm).
        wheel_s: Width of the time buckets the velocity and card-testing windows are
            made of; a window expires by whole buckets, so it spans up to one more bucket.
        hold_s: A high-value incident stays open this long after its last amount.
        max_amount_keys: Most (merchant, currency) pairs kept for the high-value rule.
        velocity_severity: Severity of velocity findings.
        card_testing_severity: Severity of card-testing findings.
        high_value_severity: Severity of high-value findings.
    """

    velocity_window_s: float = 600.0
    velocity_threshold: int = 10
    max_fingerprints: int = 200_000
    max_fingerprints_per_merchant: int = 20_000
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
    high_value_factor: float = 20.0
    high_value_min_samples: float = 2_000.0
    high_value_half_life_s: float = 7 * 86_400.0
    refresh_s: float = 60.0
    wheel_s: float = 10.0
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
        if (
            min(
                self.max_fingerprints,
                self.max_fingerprints_per_merchant,
                self.max_merchants,
                self.max_amount_keys,
            )
            < 1
        ):
            raise ValueError("table caps must be at least 1")
        if not 0.0 < self.wheel_s <= min(self.velocity_window_s, self.card_testing_window_s):
            raise ValueError("wheel_s must be positive and at most the windows")

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


# One (merchant, fingerprint): [payments in the window, latest payment id, first and latest
# event time while in the window]. A list, not a class: one is made per new fingerprint,
# i.e. for most events, and a list literal costs a fraction of an instance.
_COUNT, _PAYMENT, _FIRST, _LAST = 0, 1, 2, 3
_Velocity = list[Any]


class _CardTesting:
    """One merchant: its wheel of small failed attempts and its baseline rate."""

    __slots__ = (
        "bucket",
        "count",
        "first_seen",
        "index",
        "last_ts",
        "open",
        "started_at",
        "threshold",
        "threshold_at",
        "wheel",
        "window_count",
    )

    def __init__(self, ts: float) -> None:
        # bucket index -> [attempts, attempts learnt into the baseline, without fingerprint,
        # fingerprint set]; the window is the buckets not yet expired.
        self.wheel: dict[int, list[Any]] = {}
        self.index: int | None = None  # the bucket the latest attempt went to
        self.bucket: list[Any] = []
        self.window_count = 0
        self.count = 0.0  # decayed number of small failed attempts learnt, as of last_ts
        self.last_ts = ts
        self.first_seen = ts
        self.threshold = 0  # 0: not computed yet
        self.threshold_at = -math.inf
        self.open = False
        self.started_at = 0.0


class _HighValue:
    """One (merchant, currency): decayed amounts, the amounts of the interval not yet
    folded in, and the cached high-value line."""

    __slots__ = (
        "hist",
        "last_hit",
        "last_seen",
        "limit",
        "open",
        "pending",
        "quantile",
        "refreshed_at",
        "started_at",
    )

    def __init__(self, config: FraudConfig) -> None:
        self.hist = DecayedLogHistogram(config.high_value_half_life_s)
        self.limit = math.inf  # amounts above it are high value (inf: not warm yet)
        self.quantile = 0.0
        self.pending: dict[int, int] = {}  # bin -> amounts since the last fold
        self.refreshed_at = -math.inf
        self.last_seen = 0.0
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
        cfg = self.config
        self._velocity: dict[tuple[str, str], _Velocity] = {}
        self._velocity_open: dict[tuple[str, str], float] = {}  # key -> started_at
        self._velocity_wheel: dict[int, list[tuple[str, str]]] = {}
        self._velocity_index: int | None = None
        self._velocity_bucket: list[tuple[str, str]] = []
        self._untracked = 0  # new fingerprints refused while the table was full
        self._tracked: dict[str, int] = {}  # merchant -> pairs it holds in _velocity
        self._wheel_s = cfg.wheel_s
        self._threshold = cfg.velocity_threshold
        self._inv_bin = 1.0 / _BIN_WIDTH
        self._testing: dict[str, _CardTesting] = {}
        self._amounts: dict[tuple[str, str], _HighValue] = {}
        self._rate = _LN2 / cfg.baseline_half_life_s
        self._small: dict[str, int] = {}  # currency -> largest small amount, minor units
        self._velocity_buckets = math.ceil(cfg.velocity_window_s / cfg.wheel_s)
        self._testing_buckets = math.ceil(cfg.card_testing_window_s / cfg.wheel_s)

    @classmethod
    def from_config(cls, settings: Mapping[str, Any], prefix: str = "fraud.") -> Self:
        """Build from a settings table (``ValueError`` names a wrong key)."""
        return cls(config_from_mapping(FraudConfig, settings, prefix))

    def sizes(self) -> dict[str, int]:
        """Entries per table (for tests and metrics: memory is bounded by the caps)."""
        return {
            "fingerprints": len(self._velocity),
            "fingerprints_untracked": self._untracked,
            "merchants": len(self._testing),
            "amount_keys": len(self._amounts),
            "window_attempts": sum(m.window_count for m in self._testing.values()),
        }

    # -- learning -----------------------------------------------------------------------

    def learn_one(self, event: PaymentEvent, now: float) -> list[Finding]:
        """Apply the three rules to one event; return the incidents it opens.

        Per event: a few dictionary look-ups and counter increments; windows expire by
        whole ``wheel_s`` buckets, baselines are refreshed per interval in :meth:`evaluate`.
        """
        # The hot path of the layer: written out inline (no helper calls, no config
        # look-ups) for the common case; the rare paths (an opening, a new merchant or
        # amount key, a turn of the wheel) are methods.
        ts = event.occurred_ts
        if ts > now:
            ts = now
        findings: list[Finding] = []
        merchant_id = event.merchant_id
        fingerprint = event.fingerprint
        if fingerprint is not None:  # velocity
            key = (merchant_id, fingerprint)
            state = self._velocity.get(key)
            if state is None:
                held = self._tracked.get(merchant_id, 0)
                if (
                    len(self._velocity) < self.config.max_fingerprints
                    and held < self.config.max_fingerprints_per_merchant
                ):
                    state = self._velocity[key] = [1, event.payment_id, ts, ts]
                    self._tracked[merchant_id] = held + 1
                else:
                    self._untracked += 1
            elif event.payment_id == state[_PAYMENT]:
                state = None  # another event of the same payment counts once
            else:
                state[_PAYMENT] = event.payment_id
                state[_COUNT] += 1
                if ts > state[_LAST]:
                    state[_LAST] = ts
            if state is not None:
                index = int(ts // self._wheel_s)
                if index != self._velocity_index:
                    self._turn_velocity(index, ts)
                self._velocity_bucket.append(key)
                if state[_COUNT] >= self._threshold and key not in self._velocity_open:
                    findings.append(self._open_velocity(key, state, ts, now))
        status = event.status
        if status is PaymentStatus.FAILED:  # card testing
            found = self._learn_card_testing(event, ts, now)
            if found is not None:
                findings.append(found)
        elif merchant_id not in self._testing:
            self._new_merchant(merchant_id, ts)  # its exposure clock starts
        if event.attempt == 1 and status in _FINAL:  # high value
            amount_key = (merchant_id, event.currency)
            hv = self._amounts.get(amount_key)
            if hv is None:
                hv = self._new_amount_key(amount_key)
            hv.last_seen = ts
            amount = event.amount
            if amount > hv.limit:  # against the line as of the last interval
                found = self._high_value_hit(amount_key, hv, amount, ts, now)
                if found is not None:
                    findings.append(found)
            b = int(math.log1p(amount) * self._inv_bin)
            pending = hv.pending
            pending[b] = pending.get(b, 0) + 1
        return findings

    def _turn_velocity(self, index: int, ts: float) -> None:
        """The velocity wheel moves to bucket ``index``; expire what it leaves behind."""
        self._velocity_index = index
        bucket = self._velocity_wheel.get(index)
        if bucket is None:
            bucket = self._velocity_wheel[index] = []
            self._expire_velocity(ts)
        self._velocity_bucket = bucket

    def _open_velocity(
        self, key: tuple[str, str], state: _Velocity, ts: float, now: float
    ) -> Finding:
        started = max(state[_FIRST], ts - self.config.velocity_window_s)
        self._velocity_open[key] = started
        return self._velocity_finding(key, state, started, now)

    def _expire_velocity(self, now: float) -> None:
        """Drop the buckets wholly older than the window: one decrement per payment."""
        oldest = int(now // self.config.wheel_s) - self._velocity_buckets
        wheel = self._velocity_wheel
        expired = [index for index in wheel if index < oldest]
        if not expired:
            return
        table, is_open = self._velocity, self._velocity_open
        for index in expired:
            for key in wheel.pop(index):
                state = table.get(key)
                if state is None:
                    continue
                state[_COUNT] -= 1
                if state[_COUNT] <= 0 and key not in is_open:
                    self._forget_fingerprint(key)
        if self._velocity_index is not None and self._velocity_index < oldest:
            self._velocity_index = None

    def _forget_fingerprint(self, key: tuple[str, str]) -> None:
        del self._velocity[key]
        held = self._tracked[key[0]] - 1
        if held:
            self._tracked[key[0]] = held
        else:
            del self._tracked[key[0]]

    def _new_merchant(self, merchant_id: str, ts: float) -> _CardTesting:
        table = self._testing
        if len(table) >= self.config.max_merchants:
            # The merchant seen least recently without an open incident goes (an open one
            # would never clear); all open: the least recently seen.
            quiet = [m for m, s in table.items() if not s.open] or list(table)
            del table[min(quiet, key=lambda m: table[m].last_ts)]
        state = table[merchant_id] = _CardTesting(ts)
        return state

    def _learn_card_testing(self, event: PaymentEvent, ts: float, now: float) -> Finding | None:
        cfg = self.config
        merchant_id = event.merchant_id
        state = self._testing.get(merchant_id)
        if state is None:
            state = self._new_merchant(merchant_id, ts)
        small = self._small.get(event.currency)
        if small is None:
            exponent = CURRENCY_EXPONENTS.get(event.currency, 2)
            small = self._small[event.currency] = int(cfg.small_amount_major * 10**exponent)
        if event.amount > small or state.window_count >= cfg.max_window_attempts:
            return None
        index = int(ts // cfg.wheel_s)
        if index != state.index:
            bucket = state.wheel.get(index)
            if bucket is None:
                self._expire_testing(state, ts)
                bucket = state.wheel[index] = [0, 0, 0, set()]
            state.index, state.bucket = index, bucket
        bucket = state.bucket
        bucket[0] += 1
        state.window_count += 1
        fingerprint = event.fingerprint
        if fingerprint:
            bucket[3].add(fingerprint)
        else:
            bucket[2] += 1
        if state.open:
            return None  # the burst's own attempts are not learnt: they would raise its bar
        bucket[1] += 1
        if state.threshold == 0:
            self._card_testing_threshold(state, ts)
        if state.window_count < state.threshold:
            return None
        state.open = True
        state.started_at = min(state.wheel) * cfg.wheel_s
        return self._card_testing_finding(merchant_id, state, now)

    def _expire_testing(self, state: _CardTesting, now: float) -> None:
        """Drop the buckets wholly older than the window, learning their attempts into the
        baseline rate (one exponential per bucket, not per attempt)."""
        cfg = self.config
        oldest = int(now // cfg.wheel_s) - self._testing_buckets
        for index in [i for i in state.wheel if i < oldest]:
            attempts, learnt, _, _ = state.wheel.pop(index)
            state.window_count -= attempts
            ts = (index + 1) * cfg.wheel_s
            if ts > state.last_ts:
                state.count *= math.exp(-self._rate * (ts - state.last_ts))
                state.last_ts = ts
            state.count += learnt
        if state.index is not None and state.index < oldest:
            state.index, state.bucket = None, []

    def _new_amount_key(self, key: tuple[str, str]) -> _HighValue:
        table = self._amounts
        if len(table) >= self.config.max_amount_keys:  # a full table: least recently seen goes
            del table[min(table, key=lambda k: table[k].last_seen)]
        state = table[key] = _HighValue(self.config)
        return state

    def _high_value_hit(
        self, key: tuple[str, str], state: _HighValue, amount: int, ts: float, now: float
    ) -> Finding | None:
        previous = state.last_hit
        state.last_hit = {
            "at": ts,
            "amount": amount,
            "limit": state.limit,
            "count": int(previous["count"]) + 1 if previous and state.open else 1,
            "samples": int(state.hist.weight(ts)),
        }
        if state.open:
            return None  # one incident: evaluate() keeps reporting it
        state.open = True
        state.started_at = ts
        return self._high_value_finding(key, state, now)

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
        state.threshold_at = now

    def _high_value_limit(self, state: _HighValue, now: float) -> None:
        """Fold the interval's amounts into the decayed histogram (one weight per bin, one
        exponential per fold) and re-read the line once warm."""
        cfg = self.config
        if state.pending:
            add_counts(state.hist, state.pending, now)
            state.pending = {}
        state.refreshed_at = now
        if state.hist.weight(now) < cfg.high_value_min_samples:
            return
        state.quantile = math.expm1(state.hist.view().quantile_log(cfg.high_value_quantile))
        state.limit = cfg.high_value_factor * state.quantile

    # -- evaluation ---------------------------------------------------------------------

    def evaluate(self, now: float) -> list[Finding]:
        """Expire whole buckets, refresh baselines, report open incidents or clear them."""
        cfg = self.config
        findings: list[Finding] = []
        # Velocity.
        self._expire_velocity(now)
        table = self._velocity
        for key, started in list(self._velocity_open.items()):
            state = table.get(key)
            count = state[_COUNT] if state is not None else 0
            active = count >= cfg.velocity_threshold
            findings.append(self._velocity_finding(key, state, started, now, active, count=count))
            if not active:
                del self._velocity_open[key]
                if state is not None and count <= 0:
                    self._forget_fingerprint(key)
        # Card testing.
        for merchant_id, testing in self._testing.items():
            self._expire_testing(testing, now)
            if (testing.window_count or testing.open) and (
                now - testing.threshold_at >= cfg.card_testing_window_s
            ):  # a quiet merchant's bar only matters once it is not
                self._card_testing_threshold(testing, now)
            if testing.open:
                active = 2 * testing.window_count >= testing.threshold
                findings.append(self._card_testing_finding(merchant_id, testing, now, active))
                testing.open = active
        # High value.
        for key, hv in self._amounts.items():
            if hv.pending and (now - hv.refreshed_at >= cfg.refresh_s or math.isinf(hv.limit)):
                self._high_value_limit(hv, now)
            if hv.open:
                assert hv.last_hit is not None
                active = now - float(hv.last_hit["at"]) <= cfg.hold_s
                findings.append(self._high_value_finding(key, hv, now, active))
                hv.open = active
        return findings

    # -- findings -----------------------------------------------------------------------

    def _velocity_finding(
        self,
        key: tuple[str, str],
        state: _Velocity | None,
        started_at: float,
        now: float,
        active: bool = True,
        count: int | None = None,
    ) -> Finding:
        cfg = self.config
        if count is None:
            count = state[_COUNT] if state is not None else 0
        return Finding(
            anomaly_type=AnomalyType.POTENTIAL_FRAUD,
            entity=Entity(merchant_id=key[0], segment=f"fingerprint={key[1]}"),
            score=min(1.0, count / (2.0 * cfg.velocity_threshold)) if active else 0.0,
            severity=cfg.velocity_severity,
            at=now,
            started_at=started_at,
            evidence=Evidence(
                metric="payments_per_fingerprint",
                baseline=float(cfg.velocity_threshold),
                observed=float(count),
                test=(
                    f"velocity rule: >= {cfg.velocity_threshold} payments of one fingerprint "
                    f"in {cfg.velocity_window_s:.0f}s (whole {cfg.wheel_s:g}s buckets)"
                ),
                window_s=cfg.velocity_window_s,
                samples=count,
                details={
                    "rule": "velocity",
                    "first_at": state[_FIRST] if state is not None else None,
                    "last_at": state[_LAST] if state is not None else None,
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
        k = state.window_count
        p_value = poisson_sf(k, mu)
        fingerprints: set[str] = set()
        without = 0
        for bucket in state.wheel.values():
            fingerprints |= bucket[3]
            without += bucket[2]
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
                    "attempts_without_fingerprint": without,
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
        limit = float(hit.get("limit", state.limit))
        return Finding(
            anomaly_type=AnomalyType.POTENTIAL_FRAUD,
            entity=Entity(merchant_id=key[0], segment=f"rule=high_value,currency={key[1]}"),
            score=high_value_score(amount, limit) if active else 0.0,
            severity=cfg.high_value_severity,
            at=now,
            started_at=state.started_at,
            evidence=Evidence(
                metric="amount",
                baseline=limit,
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
            "velocity": [[m, fp, *s] for (m, fp), s in self._velocity.items()],
            "velocity_open": [[m, fp, started] for (m, fp), started in self._velocity_open.items()],
            "velocity_wheel": [
                [index, [[m, fp] for m, fp in keys]] for index, keys in self._velocity_wheel.items()
            ],
            "velocity_index": self._velocity_index,
            "untracked": self._untracked,
            "card_testing": [
                [
                    m,
                    [[i, b[0], b[1], b[2], sorted(b[3])] for i, b in s.wheel.items()],
                    s.index,
                    s.window_count,
                    s.count,
                    s.last_ts,
                    s.first_seen,
                    s.threshold,
                    s.threshold_at if math.isfinite(s.threshold_at) else None,
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
                    [[b, n] for b, n in s.pending.items()],
                    s.refreshed_at if math.isfinite(s.refreshed_at) else None,
                    s.last_seen,
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
        for m, fp, count, last_payment, first_at, last_at in state["velocity"]:
            detector._velocity[(m, fp)] = [
                int(count),
                str(last_payment),
                float(first_at),
                float(last_at),
            ]
        detector._velocity_open = {(m, fp): float(t) for m, fp, t in state["velocity_open"]}
        detector._velocity_wheel = {
            int(i): [(m, fp) for m, fp in keys] for i, keys in state["velocity_wheel"]
        }
        index = state["velocity_index"]
        detector._velocity_index = None if index is None else int(index)
        if detector._velocity_index is not None:
            detector._velocity_bucket = detector._velocity_wheel.setdefault(
                detector._velocity_index, []
            )
        detector._untracked = int(state["untracked"])
        for m, _fp in detector._velocity:
            detector._tracked[m] = detector._tracked.get(m, 0) + 1
        for (
            m,
            wheel,
            index,
            window_count,
            count,
            last_ts,
            first_seen,
            threshold,
            threshold_at,
            is_open,
            started,
        ) in state["card_testing"]:
            t = _CardTesting(float(first_seen))
            t.wheel = {int(i): [int(a), int(b), int(c), set(fps)] for i, a, b, c, fps in wheel}
            t.index = None if index is None else int(index)
            if t.index is not None:
                t.bucket = t.wheel.setdefault(t.index, [0, 0, 0, set()])
            t.window_count, t.count = int(window_count), float(count)
            t.last_ts, t.threshold = float(last_ts), int(threshold)
            t.threshold_at = -math.inf if threshold_at is None else float(threshold_at)
            t.open, t.started_at = bool(is_open), float(started)
            detector._testing[m] = t
        for (
            m,
            c,
            hist,
            limit,
            quantile,
            pending,
            refreshed_at,
            last_seen,
            is_open,
            started,
            last_hit,
        ) in state["high_value"]:
            h = _HighValue(cfg)
            h.hist = DecayedLogHistogram.from_dict(hist)
            h.limit = math.inf if limit is None else float(limit)
            h.quantile = float(quantile)
            h.pending = {int(b): int(n) for b, n in pending}
            h.refreshed_at = -math.inf if refreshed_at is None else float(refreshed_at)
            h.last_seen = float(last_seen)
            h.open, h.started_at, h.last_hit = bool(is_open), float(started), last_hit
            detector._amounts[(m, c)] = h
        return detector


def high_value_score(amount: float, limit: float) -> float:
    """How far past the high-value line ``amount`` is: ``1 - 0.5 * limit / amount``, so 0.5
    at the line and towards 1 far above it; monotone in ``amount`` and clamped to [0, 1]
    (an amount below a line recomputed since scores 0, never below).

    >>> high_value_score(2_000, 1_000), high_value_score(1_000, 3_000), high_value_score(5, 0)
    (0.75, 0.0, 1.0)
    """
    if amount <= 0.0 or not math.isfinite(limit):
        return 0.0
    return min(1.0, max(0.0, 1.0 - 0.5 * max(limit, 0.0) / amount))
