"""The ground truth of a scenario: each connector's success probability for a segment at a time.

:class:`Truth` is compiled once from a :class:`~apos.sim.scenario.Scenario` and is a pure
function of (time, segment): no randomness, no state. It answers for whole arrays of
payments at once (numpy), which is what keeps the simulator fast; the scalar
:meth:`Truth.probability` goes through the same code and is what tests use.

Model: ``logit p = logit(success_rate) + sum over dimensions of the segment's adjustment``,
then timed events apply in file order (degradations multiply ``p``; outages and flapping
set it to 0). Times are offsets in seconds from the scenario's start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from apos.sim.scenario import (
    DIMENSIONS,
    AmountShift,
    ConnectorAdded,
    Degradation,
    Flapping,
    FraudBurst,
    Outage,
    Scenario,
    VolumeDrop,
)

__all__ = [
    "DOWN_ERROR",
    "DOWN_NONE",
    "DOWN_TIMEOUT",
    "Incident",
    "Segments",
    "Truth",
    "TruthSample",
    "segment_vocabulary",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DOWN_NONE, DOWN_TIMEOUT, DOWN_ERROR = 0, 1, 2


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def segment_vocabulary(scenario: Scenario) -> dict[str, list[str | None]]:
    """Every value each segment dimension can take in this scenario's traffic.

    ``None`` is the first value of ``card_network`` and ``payment_method_type`` (a wallet
    payment has no card network).
    """

    def ordered(values: object) -> list[str]:
        return sorted({str(v) for v in values})  # type: ignore[attr-defined]

    methods = set(scenario.mix["payment_method"])
    networks = set(scenario.mix["card_network"])
    countries = set(scenario.mix["issuer_country"])
    currencies: set[str] = set()
    for m in scenario.merchants:
        methods |= set(m.mix.get("payment_method", {}))
        networks |= set(m.mix.get("card_network", {}))
        countries |= set(m.mix.get("issuer_country", {}))
        currencies |= set(m.currencies)
    types = {t for mix in scenario.method_types.values() for t in mix}
    return {
        "payment_method": list(ordered(methods)),
        "payment_method_type": [None, *ordered(types)],
        "card_network": [None, *ordered(networks)],
        "issuer_country": list(ordered(countries)),
        "currency": list(ordered(currencies)),
        "amount_band": [name for name, _ in scenario.amount_bands],
        "merchant": [m.merchant_id for m in scenario.merchants],
    }


@dataclass(frozen=True, slots=True)
class Segments:
    """Segment of each payment: per dimension, an index into the vocabulary."""

    codes: Mapping[str, npt.NDArray[np.int16]]

    def __len__(self) -> int:
        return len(next(iter(self.codes.values())))

    def take(self, rows: slice | IntArray) -> Segments:
        """The segments of a subset of payments."""
        return Segments({d: c[rows] for d, c in self.codes.items()})


@dataclass(frozen=True, slots=True)
class TruthSample:
    """Truth for ``n`` payments × ``C`` connectors."""

    p: FloatArray  # success probability
    eligible: BoolArray  # connector exists and supports the payment
    down: npt.NDArray[np.int8]  # DOWN_NONE / DOWN_TIMEOUT / DOWN_ERROR (outage or flap)
    latency_factor: FloatArray


@dataclass(frozen=True, slots=True)
class Incident:
    """A timed event as a window, for reports and live progress (offsets in seconds)."""

    kind: str
    target: str  # connector, or merchant for fraud bursts
    start: float
    end: float
    label: str
    down_windows: tuple[tuple[float, float], ...] = ()  # full-outage sub-windows
    where: Mapping[str, frozenset[str]] = field(default_factory=dict)  # segment affected


class Truth:
    """The compiled ground truth of a scenario. Pure: same inputs, same answers."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.connectors: tuple[str, ...] = scenario.connector_names
        self.index = {name: i for i, name in enumerate(self.connectors)}
        self.vocab = segment_vocabulary(scenario)
        self.value_index = {
            d: {v: i for i, v in enumerate(values)} for d, values in self.vocab.items()
        }
        n_conn = len(self.connectors)
        self.base_logit = np.array([_logit(c.success_rate) for c in scenario.connectors])
        # Per dimension, a (C, V) table of log-odds adjustments and of "supported" flags.
        self.delta: dict[str, FloatArray] = {}
        self.supported: dict[str, BoolArray] = {}
        for dim in DIMENSIONS:
            size = len(self.vocab[dim])
            delta = np.zeros((n_conn, size))
            ok = np.ones((n_conn, size), dtype=bool)
            for ci, c in enumerate(scenario.connectors):
                for value, rate in c.segment_rates.get(dim, {}).items():
                    delta[ci, self.value_index[dim][value]] = _logit(rate) - _logit(c.success_rate)
                if dim in c.supports:
                    allowed = c.supports[dim]
                    ok[ci] = [v in allowed for v in self.vocab[dim]]
            if delta.any():
                self.delta[dim] = delta
            if not ok.all():
                self.supported[dim] = ok
        self.added_at = np.full(n_conn, -math.inf)
        for e in scenario.events:
            if isinstance(e, ConnectorAdded):
                self.added_at[self.index[e.connector]] = e.at

    # ----------------------------------------------------------------- vectorised truth

    def where_mask(self, where: Mapping[str, frozenset[str]], seg: Segments) -> BoolArray:
        """Which payments fall in the segment ``where`` (all of them when it is empty)."""
        mask = np.ones(len(seg), dtype=bool)
        for dim, values in where.items():
            allowed = np.array([v in values for v in self.vocab[dim]])
            mask &= allowed[seg.codes[dim]]
        return mask

    def evaluate(self, offsets: FloatArray, seg: Segments) -> TruthSample:
        """Truth for payments at ``offsets`` (seconds since start) with segments ``seg``."""
        n = len(offsets)
        logit = np.broadcast_to(self.base_logit, (n, len(self.connectors))).copy()
        for dim, delta in self.delta.items():
            logit += delta[:, seg.codes[dim]].T
        p = 1.0 / (1.0 + np.exp(-logit))
        eligible = offsets[:, None] >= self.added_at[None, :]
        for dim, ok in self.supported.items():
            eligible &= ok[:, seg.codes[dim]].T
        down = np.zeros((n, len(self.connectors)), dtype=np.int8)
        latency = np.ones((n, len(self.connectors)))
        for e in self.scenario.events:
            if isinstance(e, Degradation):
                ci = self.index[e.connector]
                level = _degradation_level(e, offsets)  # 0 = healthy, 1 = fully degraded
                mask = self.where_mask(e.where, seg) & (level > 0)
                if mask.any():
                    lv = level[mask]
                    p[mask, ci] *= 1.0 + (e.success_rate_factor - 1.0) * lv
                    latency[mask, ci] *= 1.0 + (e.latency_factor - 1.0) * lv
            elif isinstance(e, Outage | Flapping):
                ci = self.index[e.connector]
                active = _is_down(e, offsets) & self.where_mask(e.where, seg)
                p[active, ci] = 0.0
                down[active, ci] = DOWN_TIMEOUT if e.failure == "timeout" else DOWN_ERROR
        np.clip(p, 0.0, 1.0, out=p)
        return TruthSample(p, eligible, down, latency)

    # ----------------------------------------------------------------- scalar helpers

    def segments(self, rows: Sequence[Mapping[str, str | None]]) -> Segments:
        """Encode segments given as dicts (missing dimensions take the first value)."""
        codes = {}
        for dim in DIMENSIONS:
            index = self.value_index[dim]
            codes[dim] = np.array(
                [index[r.get(dim, self.vocab[dim][0])] for r in rows], dtype=np.int16
            )
        return Segments(codes)

    def probability(self, connector: str, offset: float, **segment: str | None) -> float:
        """Success probability of one connector for one segment at one time (0 if ineligible).

        >>> # truth.probability("stripe", 3600.0, card_network="visa", issuer_country="US")
        """
        sample = self.evaluate(np.array([offset], dtype=float), self.segments([segment]))
        ci = self.index[connector]
        return float(sample.p[0, ci]) if sample.eligible[0, ci] else 0.0

    # ----------------------------------------------------------------- incidents

    def incidents(self) -> list[Incident]:
        """Every timed event as a window clipped to the scenario's duration."""
        duration = self.scenario.traffic.duration
        out = []
        for e in self.scenario.events:
            if isinstance(e, Outage):
                end = min(e.end, duration)
                scope = _scope(e.where)
                out.append(
                    Incident(
                        "outage",
                        e.connector,
                        e.start,
                        end,
                        f"{e.connector} outage{scope}",
                        ((e.start, end),),
                        e.where,
                    )
                )
            elif isinstance(e, Flapping):
                end = min(e.end, duration)
                out.append(
                    Incident(
                        "flapping",
                        e.connector,
                        e.start,
                        end,
                        f"{e.connector} flapping{_scope(e.where)}",
                        tuple(_down_windows(e, end)),
                        e.where,
                    )
                )
            elif isinstance(e, Degradation):
                end = min(e.end + e.recovery_ramp, duration)
                pct = (e.success_rate_factor - 1.0) * 100
                out.append(
                    Incident(
                        "degradation",
                        e.connector,
                        e.start,
                        end,
                        f"{e.connector} success rate {pct:+.0f}%{_scope(e.where)}",
                    )
                )
            elif isinstance(e, ConnectorAdded):
                out.append(
                    Incident("connector_added", e.connector, e.at, e.at, f"{e.connector} added")
                )
            elif isinstance(e, FraudBurst):
                out.append(
                    Incident(
                        "fraud_burst",
                        e.merchant,
                        e.start,
                        min(e.end, duration),
                        f"card testing at {e.merchant}",
                    )
                )
            elif isinstance(e, VolumeDrop):
                target = e.merchant or "all merchants"
                out.append(
                    Incident(
                        "volume_drop",
                        e.merchant or "",
                        e.start,
                        min(e.end, duration),
                        f"volume of {target} down to {e.factor:.0%}",
                    )
                )
            elif isinstance(e, AmountShift):
                out.append(
                    Incident(
                        "amount_shift",
                        e.merchant,
                        e.start,
                        min(e.end, duration),
                        f"amounts at {e.merchant} x{e.factor:g}",
                    )
                )
        return out

    def active_incidents(self, offset: float) -> list[Incident]:
        """Incidents in progress at ``offset`` (a flapping connector counts while flapping)."""
        return [i for i in self.incidents() if i.start <= offset < i.end]


def _scope(where: Mapping[str, frozenset[str]]) -> str:
    if not where:
        return ""
    parts = [f"{d}={'/'.join(sorted(v))}" for d, v in where.items()]
    return f" ({', '.join(parts)})"


def _degradation_level(e: Degradation, t: FloatArray) -> FloatArray:
    onset = np.clip((t - e.start) / e.ramp, 0.0, 1.0) if e.ramp > 0 else (t >= e.start) * 1.0
    onset = np.asarray(np.where(t >= e.start, onset, 0.0), dtype=np.float64)
    if math.isinf(e.end):
        return onset
    at_end = min(1.0, (e.end - e.start) / e.ramp) if e.ramp > 0 else 1.0
    if e.recovery_ramp > 0:
        fading = at_end * (1.0 - np.clip((t - e.end) / e.recovery_ramp, 0.0, 1.0))
    else:
        fading = np.zeros_like(t)
    return np.asarray(np.where(t < e.end, onset, fading), dtype=np.float64)


def _is_down(e: Outage | Flapping, t: FloatArray) -> BoolArray:
    inside = (t >= e.start) & (t < e.end)
    if isinstance(e, Outage):
        return inside
    phase = np.mod(t - e.start, e.down + e.up)
    return inside & (phase < e.down)


def _down_windows(e: Flapping, end: float) -> list[tuple[float, float]]:
    out, t = [], e.start
    while t < end:
        out.append((t, min(t + e.down, end)))
        t += e.down + e.up
    return out
