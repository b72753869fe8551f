"""The payment stream of one run: who pays what, when, and what each connector would answer.

Everything is drawn up front in numpy arrays (12 bytes per payment per connector plus 45), so
the per-payment Python work of a run is only the routers' own calls. Each payment gets
common random numbers: one uniform per payment × connector decides success, so every router
faces the same luck and differences in success rate come from routing alone.

The stream is a pure function of (scenario, seed, payments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from apos.core.payment import Payment
from apos.sim.scenario import DECLINE_CODES, AmountShift, FraudBurst, Scenario, VolumeDrop
from apos.sim.truth import DOWN_ERROR, DOWN_TIMEOUT, Segments, Truth

__all__ = ["CODES", "Stream", "build_stream"]

# Column order of the ``code`` matrix; ``-1`` means the attempt succeeded.
CODES: tuple[str, ...] = (*DECLINE_CODES, "connector_not_eligible")
_CODE_INDEX = {c: i for i, c in enumerate(CODES)}
_TIMEOUT = _CODE_INDEX["timeout"]
_UNAVAILABLE = _CODE_INDEX["connector_unavailable"]


@dataclass(frozen=True, slots=True)
class Stream:
    """All payments of a run and every connector's would-be outcome for each."""

    scenario: Scenario
    truth: Truth
    seed: int
    times: npt.NDArray[np.float64]  # epoch seconds, sorted
    segments: Segments
    amount: npt.NDArray[np.int64]
    card: npt.NDArray[np.int64]  # card id (fingerprint); few distinct ones in card testing
    fraud: npt.NDArray[np.bool_]  # part of a card-testing burst
    p: npt.NDArray[np.float32]  # (n, C) true success probability
    eligible: npt.NDArray[np.bool_]  # (n, C)
    success: npt.NDArray[np.bool_]  # (n, C) the outcome if routed there
    code: npt.NDArray[np.int16]  # (n, C) index into CODES, -1 on success
    latency_ms: npt.NDArray[np.float32]  # (n, C)
    lag: npt.NDArray[np.float32]  # (n,) seconds from completion to APOS hearing of it
    run_id: str

    def __len__(self) -> int:
        return len(self.times)

    @property
    def connectors(self) -> tuple[str, ...]:
        """Connector names, the column order of every (n, C) matrix."""
        return self.truth.connectors

    def payments(self, start: int, stop: int) -> list[Payment]:
        """The payments ``start`` to ``stop`` as ``apos.Payment`` objects."""
        vocab = self.truth.vocab
        codes = self.segments.codes
        merchant = vocab["merchant"]
        currency = vocab["currency"]
        method = vocab["payment_method"]
        mtype = vocab["payment_method_type"]
        network = vocab["card_network"]
        country = vocab["issuer_country"]
        names = self.connectors
        all_mask = (1 << len(names)) - 1
        eligible_by_mask: dict[int, tuple[str, ...] | None] = {}
        bits = 1 << np.arange(len(names), dtype=np.int64)
        masks = (self.eligible[start:stop] @ bits).tolist()
        run = self.run_id
        out = []
        for k, (m, cur, pm, pmt, net, ctry, amt, mask) in enumerate(
            zip(
                codes["merchant"][start:stop].tolist(),
                codes["currency"][start:stop].tolist(),
                codes["payment_method"][start:stop].tolist(),
                codes["payment_method_type"][start:stop].tolist(),
                codes["card_network"][start:stop].tolist(),
                codes["issuer_country"][start:stop].tolist(),
                self.amount[start:stop].tolist(),
                masks,
                strict=True,
            )
        ):
            if mask in eligible_by_mask:
                eligible = eligible_by_mask[mask]
            else:
                eligible = (
                    None
                    if mask == all_mask
                    else tuple(n for i, n in enumerate(names) if mask >> i & 1)
                )
                eligible_by_mask[mask] = eligible
            out.append(
                Payment(
                    f"pay_{run}_{start + k}",
                    merchant[m],
                    amt,
                    currency[cur],
                    method[pm],
                    network[net],
                    country[ctry],
                    mtype[pmt],
                    eligible,
                )
            )
        return out

    def fingerprint(self, index: int) -> str:
        """A stable hex id of the card of payment ``index``, shaped like the digest a
        switch sends (hex, so never read as a card number: docs/api.md, ``fingerprint``)."""
        return f"ca{int(self.card[index]):014x}"


def _arrival_offsets(scenario: Scenario, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` sorted arrival offsets from the traffic intensity (seasonality × bursts)."""
    tr = scenario.traffic
    step = min(60.0, tr.duration / 2000.0)
    edges = {0.0, tr.duration}
    for b in tr.bursts:
        edges.update(x for x in (b.start, b.end) if 0 < x < tr.duration)
    grid = np.union1d(np.arange(0.0, tr.duration, step), np.array(sorted(edges)))
    mid = (grid[:-1] + grid[1:]) / 2
    rate = _intensity(scenario, mid)
    mass = np.concatenate([[0.0], np.cumsum(rate * np.diff(grid))])
    u = np.sort(rng.random(n)) * mass[-1]
    cell = np.clip(np.searchsorted(mass, u, side="right") - 1, 0, len(grid) - 2)
    width = mass[cell + 1] - mass[cell]
    frac = np.divide(u - mass[cell], width, out=np.zeros_like(u), where=width > 0)
    return np.asarray(grid[cell] + frac * (grid[cell + 1] - grid[cell]))


def _intensity(scenario: Scenario, offsets: np.ndarray) -> np.ndarray:
    """Relative payment rate at each offset (daily curve × weekday × bursts)."""
    tr = scenario.traffic
    t = tr.start + offsets
    hours = np.mod(t / 3600.0, 24.0)
    daily = np.array(tr.daily + tr.daily[:1])  # piecewise linear, value at each full hour
    h0 = np.floor(hours).astype(int)
    rate = daily[h0] + (daily[h0 + 1] - daily[h0]) * (hours - h0)
    weekday = (np.floor(t / 86400.0).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    rate = rate * np.array(tr.weekly)[weekday]
    for b in tr.bursts:
        rate = np.where((offsets >= b.start) & (offsets < b.end), rate * b.multiplier, rate)
    return np.asarray(np.maximum(rate, 0.0))


def _choice(
    rng: np.random.Generator, weights: dict[str, float], index: dict[str | None, int], n: int
) -> np.ndarray:
    keys = list(weights)
    picks = rng.choice(len(keys), size=n, p=np.array([weights[k] for k in keys]))
    lookup = np.array([index[k] for k in keys], dtype=np.int16)
    return lookup[picks]


def build_stream(
    scenario: Scenario,
    *,
    seed: int | None = None,
    payments: int | None = None,
    run_id: str | None = None,
) -> Stream:
    """Draw the payment stream for ``scenario``.

    Args:
        seed: Defaults to the scenario's ``seed``.
        payments: Regular payments to draw; defaults to ``traffic.payments``. Card-testing
            attempts are added on top, scaled by the same factor.
        run_id: Goes into payment and event ids (defaults to ``s<seed>``).
    """
    seed = scenario.seed if seed is None else seed
    n_main = scenario.traffic.payments if payments is None else payments
    scale = n_main / scenario.traffic.payments
    truth = Truth(scenario)
    vi = truth.value_index
    rng = np.random.default_rng([seed, 0x5A_05])

    offsets = _arrival_offsets(scenario, n_main, rng)
    merchant_w = np.array([m.weight for m in scenario.merchants])
    merchant = rng.choice(len(merchant_w), size=n_main, p=merchant_w / merchant_w.sum())
    codes = {d: np.zeros(n_main, dtype=np.int16) for d in vi}
    codes["merchant"] = merchant.astype(np.int16)
    amount = np.zeros(n_main, dtype=np.int64)
    for mi, m in enumerate(scenario.merchants):
        rows = np.flatnonzero(merchant == mi)
        k = len(rows)
        codes["currency"][rows] = _choice(rng, dict(m.currencies), vi["currency"], k)
        amount[rows] = _lognormal_amounts(rng, m.amount.median, m.amount.sigma, k)
        for dim in ("payment_method", "card_network", "issuer_country"):
            mix = m.mix.get(dim) or scenario.mix[dim]
            codes[dim][rows] = _choice(rng, dict(mix), vi[dim], k)
    card = rng.integers(1 << 32, 1 << 40, size=n_main, dtype=np.int64)
    amount = _shift_amounts(scenario, offsets, codes["merchant"], amount)
    keep = _volume_kept(scenario, offsets, codes["merchant"], seed)
    if keep is not None:
        offsets, amount, card = offsets[keep], amount[keep], card[keep]
        codes = {d: c[keep] for d, c in codes.items()}
        n_main = len(offsets)
    fraud = np.zeros(n_main, dtype=bool)
    fraud_rate = np.full(n_main, np.nan)
    fraud_codes: list[dict[str, float] | None] = [None]
    fraud_mix = np.zeros(n_main, dtype=np.int16)

    parts = [(offsets, codes, amount, card, fraud, fraud_rate, fraud_mix)]
    for bi, e in enumerate(ev for ev in scenario.events if isinstance(ev, FraudBurst)):
        k = round(e.attempts * scale)
        end = min(e.end, scenario.traffic.duration)
        if k <= 0 or end <= e.start:
            continue
        f_codes = {d: np.zeros(k, dtype=np.int16) for d in vi}
        mi = vi["merchant"][e.merchant]
        f_codes["merchant"][:] = mi
        m = scenario.merchants[mi]
        f_codes["currency"][:] = _choice(rng, dict(m.currencies), vi["currency"], k)
        f_codes["payment_method"][:] = vi["payment_method"].get("card", 0)
        f_codes["card_network"][:] = _choice(
            rng,
            dict(m.mix.get("card_network") or scenario.mix["card_network"]),
            vi["card_network"],
            k,
        )
        f_codes["issuer_country"][:] = _choice(
            rng,
            dict(m.mix.get("issuer_country") or scenario.mix["issuer_country"]),
            vi["issuer_country"],
            k,
        )
        fraud_codes.append(dict(e.decline_codes))
        parts.append(
            (
                np.sort(rng.uniform(e.start, end, size=k)),
                f_codes,
                _lognormal_amounts(rng, e.amount.median, e.amount.sigma, k),
                (1 << 41) + (bi << 20) + rng.integers(0, e.cards, size=k),
                np.ones(k, dtype=bool),
                np.full(k, e.success_rate),
                np.full(k, len(fraud_codes) - 1, dtype=np.int16),
            )
        )

    if len(parts) > 1:
        all_offsets = np.concatenate([p[0] for p in parts])
        order = np.argsort(all_offsets, kind="stable")
        offsets = all_offsets[order]
        codes = {d: np.concatenate([p[1][d] for p in parts])[order] for d in vi}
        amount, card, fraud, fraud_rate, fraud_mix = (
            np.concatenate([p[i] for p in parts])[order] for i in range(2, 7)
        )
    n = len(offsets)

    # Payment method types, and no card network for non-card payments.
    methods = truth.vocab["payment_method"]
    for mi_, method in enumerate(methods):
        rows = np.flatnonzero(codes["payment_method"] == mi_)
        types = scenario.method_types.get(str(method))
        if types:
            codes["payment_method_type"][rows] = _choice(
                rng, dict(types), vi["payment_method_type"], len(rows)
            )
        if method != "card":
            codes["card_network"][rows] = vi["card_network"][None]
    lows = np.array([low for _, low in scenario.amount_bands])
    codes["amount_band"] = (np.searchsorted(lows, amount, side="right") - 1).astype(np.int16)

    segments = Segments(codes)
    sample = truth.evaluate(offsets, segments)
    p = sample.p
    if fraud.any():
        p[fraud] = np.where(sample.down[fraud] > 0, 0.0, fraud_rate[fraud, None])

    n_conn = len(truth.connectors)
    u = rng.random((n, n_conn))
    success = u < p
    code = _decline_codes(scenario, rng.random((n, n_conn)), sample.down, fraud_mix, fraud_codes)
    code[success] = -1
    z = rng.standard_normal((n, n_conn))
    med = np.array([c.latency_ms.median for c in scenario.connectors])
    sig = np.array([c.latency_ms.sigma for c in scenario.connectors])
    latency = med * np.exp(sig * z) * sample.latency_factor
    timeouts = np.array([c.timeout_ms for c in scenario.connectors])
    latency = np.where(code == _TIMEOUT, timeouts, np.minimum(latency, timeouts))
    lag_dist = scenario.feedback_lag
    lag = np.exp(math.log(lag_dist.median) + lag_dist.sigma * rng.standard_normal(n))

    return Stream(
        scenario=scenario,
        truth=truth,
        seed=seed,
        times=scenario.traffic.start + offsets,
        segments=segments,
        amount=amount,
        card=card,
        fraud=fraud,
        p=p.astype(np.float32),
        eligible=sample.eligible,
        success=success,
        code=code,
        latency_ms=latency.astype(np.float32),
        lag=lag.astype(np.float32),
        run_id=run_id or f"s{seed}",
    )


def _shift_amounts(
    scenario: Scenario, offsets: np.ndarray, merchant: np.ndarray, amount: np.ndarray
) -> np.ndarray:
    """Amounts multiplied by each ``amount_shift`` event's factor in its window."""
    shifts = [e for e in scenario.events if isinstance(e, AmountShift)]
    if not shifts:
        return amount
    index = {m.merchant_id: i for i, m in enumerate(scenario.merchants)}
    amount = amount.copy()
    for e in shifts:
        rows = (merchant == index[e.merchant]) & (offsets >= e.start) & (offsets < e.end)
        amount[rows] = np.maximum(1, np.rint(amount[rows] * e.factor)).astype(np.int64)
    return amount


def _volume_kept(
    scenario: Scenario, offsets: np.ndarray, merchant: np.ndarray, seed: int
) -> np.ndarray | None:
    """Which regular payments survive the ``volume_drop`` events (``None``: all of them).

    Drawn from a generator of its own, so scenarios without a volume drop draw exactly the
    same stream as before the event kind existed."""
    drops = [e for e in scenario.events if isinstance(e, VolumeDrop)]
    if not drops:
        return None
    index = {m.merchant_id: i for i, m in enumerate(scenario.merchants)}
    u = np.random.default_rng([seed, 0x0D_0A]).random(len(offsets))
    keep = np.ones(len(offsets), dtype=bool)
    for e in drops:
        rows = (offsets >= e.start) & (offsets < e.end)
        if e.merchant is not None:
            rows &= merchant == index[e.merchant]
        keep &= ~rows | (u < e.factor)
    return keep


def _lognormal_amounts(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return np.maximum(1, np.rint(median * np.exp(sigma * rng.standard_normal(n)))).astype(np.int64)


def _decline_codes(
    scenario: Scenario,
    u: np.ndarray,
    down: np.ndarray,
    fraud_mix: np.ndarray,
    fraud_codes: list[dict[str, float] | None],
) -> np.ndarray:
    """A decline code for every (payment, connector), used where the attempt fails."""
    code = np.empty(u.shape, dtype=np.int16)

    def draw(mix: dict[str, float], col: np.ndarray) -> np.ndarray:
        cum = np.cumsum([mix[k] for k in mix])
        idx = np.minimum(np.searchsorted(cum / cum[-1], col, side="right"), len(mix) - 1)
        return np.array([_CODE_INDEX[k] for k in mix], dtype=np.int16)[idx]

    for ci, c in enumerate(scenario.connectors):
        code[:, ci] = draw(dict(c.decline_codes), u[:, ci])
        for fi, mix in enumerate(fraud_codes):
            if mix is None:
                continue
            rows = fraud_mix == fi
            code[rows, ci] = draw(mix, u[rows, ci])
    code[down == DOWN_TIMEOUT] = _TIMEOUT
    code[down == DOWN_ERROR] = _UNAVAILABLE
    return code
