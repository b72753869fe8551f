"""Unusual amounts for a merchant: one extreme payment, or a shift of the whole distribution.

Per (merchant, currency) — amounts in different currencies are never compared — the
detector keeps a time-decayed histogram of ``x = log(1 + amount)`` (amount in minor units,
:class:`~apos.core.detect.amount_histogram.DecayedLogHistogram`). On the log scale amounts
are roughly symmetric, and the median and the MAD of the histogram are a location and a
scale that a few huge payments cannot drag. Two questions are asked:

1. **One extreme amount** (per event, in ``learn_one``): the robust z-score
   ``z = (x - median) / (1.4826 * MAD)`` (the scale floored at ``min_scale``) is at least
   ``z_threshold``, *and* ``x`` lies beyond the merchant's own ``tail_quantile`` (0.999;
   0.001 below) by at least ``tail_gap`` scales: a fence on the tail quantile, as Tukey's
   on the quartiles. The second condition keeps heavy-tailed and multimodal merchants
   quiet (a travel agent's 3% of business-class fares sit 4 MADs above its median; a
   shop's 3% of zero-amount card checks far below it): a z-score alone would flag every
   new record of such a tail. The first extreme amount opens an incident at once; it
   stays open ``hold_s`` after the last one.
2. **A shift** (per interval, in ``evaluate``): each amount is classified against the
   central band (``band`` quantiles, 5%-95% by default) as it arrives, and the expected
   share outside each side, read from the histogram at that moment, is added up beside
   it. Over the last ``window_s`` the number above (below) the band is tested against
   its baseline share with a one-sided exact binomial test, doubled for the two sides
   (Bonferroni). An incident opens when ``p < alpha`` with at least ``min_outside``
   amounts outside and an observed share ``>= min_ratio`` times the baseline; it holds
   while ``p < alpha_clear`` (hysteresis) and clears, with one ``active=False`` finding,
   when neither the shift nor a recent extreme amount holds it.

Per event the work is a logarithm, a few dictionary look-ups and counter increments (the
amount's bin is counted, not yet weighed); at an ``evaluate``, at most every ``refresh_s``
(every one until warm), the interval's counts are folded into the histogram with one
exponential and the median, MAD, band and fences re-read. Nothing is tested before
``min_samples`` (decayed) amounts of that merchant and currency have been seen. Only final
outcomes of first attempts count, so a payment retried at three connectors is one amount.
Memory is bounded by ``max_keys`` (merchant, currency) pairs, the least recently seen
evicted first, times at most 691 bins and ``window_s / bucket_s`` window buckets each.

References:
    [^1]: Rousseeuw, P.J. and Croux, C., 1993. Alternatives to the median absolute
        deviation. JASA 88(424), 1273-1283 (the MAD and its 1.4826 consistency factor).
    [^2]: Iglewicz, B. and Hoaglin, D.C., 1993. How to Detect and Handle Outliers. ASQC
        (robust "modified" z-scores).
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
from apos.core.detect.tails import binomial_sf, normal_two_sided_score
from apos.core.events import PaymentEvent, PaymentStatus

__all__ = ["AmountConfig", "UnusualAmountDetector", "add_counts"]

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution is 0.6745 sigma
_FINAL = frozenset(s for s in PaymentStatus if s.is_final)


def add_counts(hist: DecayedLogHistogram, counts: Mapping[int, int], ts: float) -> None:
    """Add ``counts`` (bin -> amounts) to ``hist`` as if each amount were seen at ``ts``:
    one exponential for the whole batch instead of one per amount (forward decay weighs
    every amount seen at ``ts`` alike), so detectors count bins per event and fold per
    interval.

    >>> one, batch = DecayedLogHistogram(3600.0), DecayedLogHistogram(3600.0)
    >>> for b in (10, 10, 12):
    ...     one.add_bin(b, 5.0)
    >>> add_counts(batch, {10: 2, 12: 1}, 5.0)
    >>> batch.bins == one.bins and batch.total == one.total
    True
    """
    first = True
    weight = 0.0
    for b, n in counts.items():
        if n <= 0:
            continue
        if first:  # add_bin moves the landmark (and rescales) when it must
            hist.add_bin(b, ts)
            assert hist.landmark is not None
            weight = math.exp(hist.rate * (ts - hist.landmark))
            n -= 1
            first = False
        if n:
            hist.bins[b] = hist.bins.get(b, 0.0) + weight * n
            hist.total += weight * n


@dataclass(frozen=True, slots=True)
class AmountConfig:
    """Parameters of :class:`UnusualAmountDetector`.

    Attributes:
        half_life_s: Half-life of an amount's weight in the baseline histogram.
        bin_width: Histogram bin width in ``log1p(amount)`` units (0.05 = 5%).
        min_samples: Decayed amounts of a (merchant, currency) before anything is tested.
        refresh_s: Seconds of event time between two re-reads of median, MAD, band and
            fences, at an ``evaluate`` (the amounts of the interval are folded into the
            histogram there too); every ``evaluate`` before the key is warm.
        z_threshold: Robust z-score at or beyond which one amount may be extreme.
        tail_quantile: The tail quantile of the fence (``1 - tail_quantile`` below).
        tail_gap: An extreme amount lies this many scales beyond the tail quantile.
        min_scale: Floor of ``1.4826 * MAD`` (log units): a one-price shop's scale
            (0.25: a single amount 3.5 times the price is the least that can be extreme).
        upper_only: Flag only unusually high single amounts (low ones still shift).
        band_low: Lower quantile of the central band.
        band_high: Upper quantile of the central band.
        window_s: Window of the shift test, seconds of event time.
        bucket_s: Granularity of that window.
        min_window_samples: Amounts in the window before the shift test runs.
        min_outside: Amounts outside the band (one side) before a shift can open.
        min_ratio: Observed share outside / baseline share needed to open and hold.
        alpha: p-value below which a shift opens an incident.
        alpha_clear: p-value below which an open shift incident holds.
        min_baseline_share: Floor of a side's baseline share (a one-price shop has none).
        hold_s: An incident opened by an extreme amount stays open this long after it.
        max_keys: Most (merchant, currency) pairs kept.
        severity: Severity of the findings.
    """

    half_life_s: float = 2 * 86_400.0
    bin_width: float = 0.05
    min_samples: float = 200.0
    refresh_s: float = 60.0
    z_threshold: float = 5.5
    tail_quantile: float = 0.999
    tail_gap: float = 2.0
    min_scale: float = 0.25
    upper_only: bool = False
    band_low: float = 0.05
    band_high: float = 0.95
    window_s: float = 600.0
    bucket_s: float = 60.0
    min_window_samples: int = 50
    min_outside: int = 10
    min_ratio: float = 2.0
    alpha: float = 1e-6
    alpha_clear: float = 1e-3
    min_baseline_share: float = 0.005
    hold_s: float = 900.0
    max_keys: int = 10_000
    severity: Severity = Severity.WARNING

    def __post_init__(self) -> None:
        if not 0.0 < self.band_low < 0.5 < self.band_high < 1.0:
            raise ValueError("band quantiles must satisfy 0 < band_low < 0.5 < band_high < 1")
        if not 0.0 < self.bucket_s <= self.window_s:
            raise ValueError("bucket_s must be positive and at most window_s")
        if not 0.0 < self.alpha <= self.alpha_clear < 1.0:
            raise ValueError("need 0 < alpha <= alpha_clear < 1")
        if not 0.5 < self.tail_quantile < 1.0 or self.tail_gap < 0.0:
            raise ValueError("tail_quantile must be in (0.5, 1) and tail_gap >= 0")
        if self.max_keys < 1 or not self.refresh_s >= 0.0:
            raise ValueError("max_keys must be at least 1 and refresh_s >= 0")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        out = asdict(self)
        out["severity"] = self.severity.value
        return out

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict` or a settings table (unknown keys refused, missing
        ones default)."""
        return config_from_mapping(cls, state)


class _MerchantAmounts:
    """State of one (merchant, currency)."""

    __slots__ = (
        "currency",
        "extreme",
        "hi_bin",
        "hist",
        "last_seen",
        "lo_bin",
        "median",
        "merchant_id",
        "open",
        "p_high",
        "p_low",
        "pending",
        "q_high",
        "q_low",
        "refreshed_at",
        "scale",
        "started_at",
        "warm",
        "window",
    )

    def __init__(self, merchant_id: str, currency: str, config: AmountConfig) -> None:
        self.merchant_id = merchant_id
        self.currency = currency
        self.hist = DecayedLogHistogram(config.half_life_s, config.bin_width)
        self.median = 0.0
        self.scale = config.min_scale
        self.lo_bin = 0
        self.hi_bin = 0
        self.p_low = 0.0
        self.p_high = 0.0
        self.q_low = 0.0  # the tail fences, log1p units
        self.q_high = 0.0
        self.warm = False
        self.pending: dict[int, int] = {}  # bin -> amounts since the last fold
        self.refreshed_at = -math.inf
        self.last_seen = 0.0
        # [bucket index, amounts, below band, above band, expected below, expected above]
        self.window: deque[list[float]] = deque()
        self.extreme: dict[str, Any] | None = None
        self.open = False
        self.started_at = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "merchant_id": self.merchant_id,
            "currency": self.currency,
            "hist": self.hist.to_dict(),
            "median": self.median,
            "scale": self.scale,
            "lo_bin": self.lo_bin,
            "hi_bin": self.hi_bin,
            "p_low": self.p_low,
            "p_high": self.p_high,
            "q_low": self.q_low,
            "q_high": self.q_high,
            "warm": self.warm,
            "pending": [[b, n] for b, n in self.pending.items()],
            "refreshed_at": self.refreshed_at if math.isfinite(self.refreshed_at) else None,
            "last_seen": self.last_seen,
            "window": [list(b) for b in self.window],
            "extreme": self.extreme,
            "open": self.open,
            "started_at": self.started_at,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], config: AmountConfig) -> _MerchantAmounts:
        s = cls(state["merchant_id"], state["currency"], config)
        s.hist = DecayedLogHistogram.from_dict(state["hist"])
        s.median, s.scale = float(state["median"]), float(state["scale"])
        s.lo_bin, s.hi_bin = int(state["lo_bin"]), int(state["hi_bin"])
        s.p_low, s.p_high = float(state["p_low"]), float(state["p_high"])
        s.q_low, s.q_high = float(state["q_low"]), float(state["q_high"])
        s.warm = bool(state["warm"])
        s.pending = {int(b): int(n) for b, n in state["pending"]}
        refreshed = state["refreshed_at"]
        s.refreshed_at = -math.inf if refreshed is None else float(refreshed)
        s.last_seen = float(state["last_seen"])
        s.window = deque([float(v) for v in b] for b in state["window"])
        s.extreme = state["extreme"]
        s.open, s.started_at = bool(state["open"]), float(state["started_at"])
        return s


class UnusualAmountDetector:
    """Unusual amounts per (merchant, currency): single extremes and distribution shifts.

    See the module docstring for the statistics. Findings are ``UnusualAmount`` about
    ``Entity(merchant_id, segment="currency=XXX")``: one incident per merchant and
    currency, opened by the first extreme amount (from ``learn_one``) or by a shift (from
    ``evaluate``), reported at every ``evaluate`` while it holds and cleared once.

    Parameters:
        config: The parameters; defaults when omitted.

    Examples:
        >>> from datetime import UTC, datetime
        >>> def pay(i, amount, ts):
        ...     return PaymentEvent(event_id=f"e{i}", payment_id=f"p{i}", merchant_id="m_shop",
        ...         connector="adyen", status="succeeded", amount=amount, currency="EUR",
        ...         occurred_at=datetime.fromtimestamp(ts, UTC))
        >>> detector = UnusualAmountDetector(AmountConfig(min_samples=50))
        >>> quiet = [detector.learn_one(pay(i, 2000 + 37 * (i % 20), i), now=i)
        ...          for i in range(300)]
        >>> sum(len(found) for found in quiet), detector.evaluate(now=300.0)  # folds, reads
        (0, [])
        >>> [found] = detector.learn_one(pay(300, 900_000, 300.0), now=300.0)
        >>> found.anomaly_type.value, found.entity.key, found.evidence.observed
        ('UnusualAmount', 'm=m_shop|s=currency=EUR', 900000.0)
        >>> [f.active for f in detector.evaluate(now=300.0 + 901)]  # held 900 s, then clears
        [False]

    References:
        [^1]: Rousseeuw, P.J. and Croux, C., 1993. Alternatives to the median absolute
            deviation. JASA 88(424), 1273-1283.
    """

    name = "unusual_amount"

    def __init__(self, config: AmountConfig | None = None) -> None:
        self.config = config or AmountConfig()
        self._keys: dict[tuple[str, str], _MerchantAmounts] = {}
        self._inv_bin = 1.0 / self.config.bin_width

    @classmethod
    def from_config(cls, settings: Mapping[str, Any], prefix: str = "amount.") -> Self:
        """Build from a settings table (``ValueError`` names a wrong key)."""
        return cls(config_from_mapping(AmountConfig, settings, prefix))

    def __len__(self) -> int:
        """Number of (merchant, currency) pairs tracked."""
        return len(self._keys)

    def learn_one(self, event: PaymentEvent, now: float) -> list[Finding]:
        """Score one amount against its merchant's history, then learn it."""
        if event.attempt != 1 or event.status not in _FINAL:
            return []
        ts = event.occurred_ts
        if ts > now:
            ts = now
        key = (event.merchant_id, event.currency)
        state = self._keys.get(key)
        if state is None:
            state = self._new_key(key)
        state.last_seen = ts
        amount = event.amount
        x = math.log1p(amount)
        b = int(x * self._inv_bin)
        findings: list[Finding] = []
        if state.warm:
            cfg = self.config
            window = state.window
            if window and window[-1][0] == ts // cfg.bucket_s:
                bucket: list[float] | None = window[-1]
            else:
                bucket = self._bucket(state, ts)
            if bucket is not None:
                bucket[1] += 1
                bucket[4] += state.p_low
                bucket[5] += state.p_high
                if b < state.lo_bin:
                    bucket[2] += 1
                elif b > state.hi_bin:
                    bucket[3] += 1
            z = (x - state.median) / state.scale
            if (z >= cfg.z_threshold and x >= state.q_high) or (
                not cfg.upper_only and z <= -cfg.z_threshold and x <= state.q_low
            ):
                found = self._extreme(state, amount, z, ts, now)
                if found is not None:
                    findings.append(found)
        pending = state.pending
        pending[b] = pending.get(b, 0) + 1
        return findings

    def _new_key(self, key: tuple[str, str]) -> _MerchantAmounts:
        keys = self._keys
        if len(keys) >= self.config.max_keys:  # a full table: the least recently seen goes
            del keys[min(keys, key=lambda k: keys[k].last_seen)]
        state = keys[key] = _MerchantAmounts(key[0], key[1], self.config)
        return state

    def _bucket(self, state: _MerchantAmounts, ts: float) -> list[float] | None:
        index = ts // self.config.bucket_s
        window = state.window
        if not window or window[-1][0] < index:
            bucket = [index, 0.0, 0.0, 0.0, 0.0, 0.0]
            window.append(bucket)
            return bucket
        for bucket in window:  # a late amount: its own bucket, if still in the window
            if bucket[0] == index:
                return bucket
        return None

    def _extreme(
        self, state: _MerchantAmounts, amount: int, z: float, ts: float, now: float
    ) -> Finding | None:
        cfg = self.config
        fence = state.q_high if z > 0 else state.q_low
        previous = state.extreme
        recent = previous is not None and ts - float(previous["at"]) <= cfg.hold_s
        state.extreme = {
            "at": ts,
            "amount": amount,
            "z": z,
            "fence": round(math.expm1(max(0.0, fence)), 2),
            "count": int(previous["count"]) + 1 if previous is not None and recent else 1,
            "samples": int(state.hist.weight(ts)),
        }
        if state.open:
            return None  # one incident: evaluate() keeps reporting it
        state.open = True
        state.started_at = ts
        return self._extreme_finding(state, now)

    def _extreme_finding(self, state: _MerchantAmounts, now: float, active: bool = True) -> Finding:
        cfg = self.config
        extreme = state.extreme
        assert extreme is not None
        z = float(extreme["z"])
        return Finding(
            anomaly_type=AnomalyType.UNUSUAL_AMOUNT,
            entity=self._entity(state),
            score=normal_two_sided_score(z),
            severity=cfg.severity,
            at=now,
            started_at=state.started_at,
            evidence=Evidence(
                metric="amount",
                baseline=round(math.expm1(state.median), 2),
                observed=float(extreme["amount"]),
                test=(
                    f"robust z-score of log(1+amount) vs median/MAD: |z| >= {cfg.z_threshold},"
                    f" and beyond the q{cfg.tail_quantile:g} amount by {cfg.tail_gap} scales"
                ),
                window_s=cfg.half_life_s,
                samples=int(extreme["samples"]),
                details={
                    "rule": "extreme_amount",
                    "currency": state.currency,
                    "z": round(z, 3),
                    "fence_minor_units": extreme["fence"],
                    "scale_log": round(state.scale, 4),
                    "extreme_amounts": extreme["count"],
                    "last_extreme_at": extreme["at"],
                },
            ),
            detector=self.name,
            active=active,
        )

    def _entity(self, state: _MerchantAmounts) -> Entity:
        return Entity(merchant_id=state.merchant_id, segment=f"currency={state.currency}")

    def _refresh(self, state: _MerchantAmounts, now: float) -> None:
        """Fold the interval's amounts into the histogram, then re-read the baseline."""
        cfg = self.config
        if state.pending:
            add_counts(state.hist, state.pending, now)
            state.pending = {}
        state.refreshed_at = now
        view = state.hist.view()
        state.median = view.quantile_log(0.5)
        state.scale = max(_MAD_TO_SIGMA * view.mad_log(state.median), cfg.min_scale)
        state.lo_bin = view.quantile_bin(cfg.band_low)
        state.hi_bin = view.quantile_bin(cfg.band_high)
        state.p_low = view.share_below(state.lo_bin)
        state.p_high = view.share_above(state.hi_bin)
        gap = cfg.tail_gap * state.scale
        state.q_high = view.quantile_log(cfg.tail_quantile) + gap
        state.q_low = view.quantile_log(1.0 - cfg.tail_quantile) - gap
        if not state.warm and state.hist.weight(now) >= cfg.min_samples:
            state.warm = True

    def evaluate(self, now: float) -> list[Finding]:
        """Re-read every merchant's baseline, run the shift test on the last ``window_s``,
        and report open incidents (or their clearing)."""
        cfg = self.config
        oldest = int((now - cfg.window_s) // cfg.bucket_s)  # buckets at or before: expired
        findings: list[Finding] = []
        for state in self._keys.values():
            if state.pending and (not state.warm or now - state.refreshed_at >= cfg.refresh_s):
                self._refresh(state, now)
            window = state.window
            while window and window[0][0] <= oldest:
                window.popleft()
            if not window and not state.open:
                continue
            shift = self._shift(state, now)
            if state.open:
                extreme_holds = (
                    state.extreme is not None and now - float(state.extreme["at"]) <= cfg.hold_s
                )
                if shift is not None and shift.evidence.details["p_value"] < cfg.alpha_clear:
                    findings.append(shift)
                elif extreme_holds:
                    findings.append(self._extreme_finding(state, now))
                else:
                    state.open = False
                    findings.append(self._clearing(state, now, shift))
            elif shift is not None and shift.evidence.details["opens"]:
                state.open = True
                state.started_at = shift.started_at
                findings.append(shift)
        return findings

    def _shift(self, state: _MerchantAmounts, now: float) -> Finding | None:
        """The shift test's finding for the current window (``None`` with too few amounts);
        ``details["opens"]`` says whether it is strong enough to open an incident."""
        cfg = self.config
        n = k_low = k_high = 0.0
        e_low = e_high = 0.0
        for bucket in state.window:
            n += bucket[1]
            k_low += bucket[2]
            k_high += bucket[3]
            e_low += bucket[4]
            e_high += bucket[5]
        if n == 0:
            return None
        best: tuple[float, str, int, float] | None = None
        for side, k, expected in (("low", k_low, e_low), ("high", k_high, e_high)):
            p0 = min(max(expected / n, cfg.min_baseline_share), 1.0)
            p_value = min(1.0, 2.0 * binomial_sf(int(k), int(n), p0))
            if k / n < cfg.min_ratio * p0 or n < cfg.min_window_samples:
                p_value = 1.0  # too small a shift (or window) to matter, however significant
            if best is None or p_value < best[0]:
                best = (p_value, side, int(k), p0)
        assert best is not None
        p_value, side, k, p0 = best
        opens = p_value < cfg.alpha and k >= cfg.min_outside
        # The incident began with the run of shifted buckets that ends the window.
        column, expected_column = (2, 4) if side == "low" else (3, 5)
        started = now
        for bucket in reversed(state.window):
            if bucket[column] < max(1.0, cfg.min_ratio * bucket[expected_column]):
                break
            started = bucket[0] * cfg.bucket_s
        band = (
            round(math.expm1(state.lo_bin * cfg.bin_width), 2),
            round(math.expm1((state.hi_bin + 1) * cfg.bin_width), 2),
        )
        return Finding(
            anomaly_type=AnomalyType.UNUSUAL_AMOUNT,
            entity=self._entity(state),
            score=max(0.0, 1.0 - p_value),
            severity=cfg.severity,
            at=now,
            started_at=state.started_at if state.open else started,
            evidence=Evidence(
                metric=f"share_of_amounts_{'below' if side == 'low' else 'above'}_band",
                baseline=p0,
                observed=k / n,
                test=(
                    "one-sided exact binomial test per side, Bonferroni x2: "
                    f"open p < {cfg.alpha}, hold p < {cfg.alpha_clear}, "
                    f"observed >= {cfg.min_ratio} x baseline"
                ),
                window_s=cfg.window_s,
                samples=int(n),
                details={
                    "rule": "amount_shift",
                    "currency": state.currency,
                    "side": side,
                    "outside": k,
                    "p_value": p_value,
                    "band_minor_units": list(band),
                    "median_minor_units": round(math.expm1(state.median), 2),
                    "opens": opens,
                },
            ),
            detector=self.name,
        )

    def _clearing(self, state: _MerchantAmounts, now: float, shift: Finding | None) -> Finding:
        if shift is not None:
            evidence = shift.evidence
        elif state.extreme is not None:
            evidence = self._extreme_finding(state, now).evidence
        else:  # no amount in the window any more
            evidence = Evidence(
                metric="share_of_amounts_outside_band",
                baseline=state.p_low + state.p_high,
                observed=0.0,
                test="no amounts in the window",
                window_s=self.config.window_s,
                samples=0,
                details={"rule": "amount_shift", "currency": state.currency},
            )
        return Finding(
            anomaly_type=AnomalyType.UNUSUAL_AMOUNT,
            entity=self._entity(state),
            score=0.0,
            severity=self.config.severity,
            at=now,
            started_at=state.started_at,
            evidence=evidence,
            detector=self.name,
            active=False,
        )

    def to_dict(self) -> dict[str, Any]:
        """State (configuration included), JSON-serialisable."""
        return {
            "config": self.config.to_dict(),
            "keys": [state.to_dict() for state in self._keys.values()],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict`; it continues exactly where it stopped."""
        detector = cls(AmountConfig.from_dict(state["config"]))
        for item in state["keys"]:
            s = _MerchantAmounts.from_dict(item, detector.config)
            detector._keys[(s.merchant_id, s.currency)] = s
        return detector
