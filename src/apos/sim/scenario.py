"""Scenario files: the world a simulation runs in, read from TOML.

A scenario names the connectors and how well each does for each kind of payment, the
traffic (volume, seasonality, bursts, merchants, payment mix) and the timed events that
change the world (outages, degradations, flapping, a new connector, card-testing bursts).
``docs/simulator.md`` has an annotated example; ``scenarios/`` holds the benchmark suite.

Every mistake in a file is reported as :class:`ScenarioError` naming the key that is wrong
(``connectors[1].latency_ms.p95``), so a typo never silently becomes a default.

Times inside a scenario are offsets from ``traffic.start``: a number of seconds or a
duration string such as ``"90s"``, ``"15m"``, ``"6h30m"``, ``"1d"``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from apos.core.iso import COUNTRIES, CURRENCIES

__all__ = [
    "DECLINE_CODES",
    "DIMENSIONS",
    "AmountShift",
    "Burst",
    "ConnectorAdded",
    "ConnectorSpec",
    "Degradation",
    "Flapping",
    "FraudBurst",
    "Lognormal",
    "MerchantSpec",
    "Outage",
    "Scenario",
    "ScenarioError",
    "ScenarioEvent",
    "TrafficSpec",
    "VolumeDrop",
    "load_scenario",
    "parse_duration",
    "parse_scenario",
    "scenario_dir",
    "scenario_names",
]

# Payment attributes a connector's success rate can depend on (the "segment").
DIMENSIONS: tuple[str, ...] = (
    "payment_method",
    "payment_method_type",
    "card_network",
    "issuer_country",
    "currency",
    "amount_band",
    "merchant",
)

DeclineClass = Literal["soft", "hard", "timeout", "error"]

# Decline and error codes the simulator emits, with their class and message. Soft declines
# may succeed on retry or elsewhere; hard ones will not; timeouts and errors are the
# connector's fault (what outages produce).
DECLINE_CODES: dict[str, tuple[DeclineClass, str]] = {
    "insufficient_funds": ("soft", "Insufficient funds"),
    "do_not_honor": ("soft", "Do not honor"),
    "issuer_unavailable": ("soft", "Issuer or switch inoperative"),
    "try_again_later": ("soft", "Try again later"),
    "card_velocity_exceeded": ("soft", "Exceeds withdrawal frequency limit"),
    "authentication_required": ("soft", "Authentication required"),
    "expired_card": ("hard", "Expired card"),
    "stolen_card": ("hard", "Pick up card (stolen)"),
    "lost_card": ("hard", "Pick up card (lost)"),
    "invalid_card_number": ("hard", "Invalid card number"),
    "fraudulent": ("hard", "Suspected fraud"),
    "card_not_supported": ("hard", "Card type not supported"),
    "timeout": ("timeout", "Connector did not answer in time"),
    "connector_unavailable": ("error", "Connector returned 503 Service Unavailable"),
    "processing_error": ("error", "Connector processing error"),
}

DEFAULT_DECLINE_MIX: dict[str, float] = {
    "insufficient_funds": 0.30,
    "do_not_honor": 0.25,
    "issuer_unavailable": 0.05,
    "try_again_later": 0.05,
    "expired_card": 0.08,
    "stolen_card": 0.02,
    "invalid_card_number": 0.05,
    "fraudulent": 0.03,
    "processing_error": 0.07,
    "timeout": 0.10,
}

DEFAULT_FRAUD_DECLINE_MIX: dict[str, float] = {
    "invalid_card_number": 0.35,
    "card_velocity_exceeded": 0.25,
    "fraudulent": 0.2,
    "do_not_honor": 0.2,
}

_Z95 = 1.6448536269514722  # standard normal 95th percentile


class ScenarioError(ValueError):
    """A scenario file is wrong; ``key`` is the dotted path of the offending key."""

    def __init__(self, key: str, message: str, source: str = "") -> None:
        self.key = key
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}" if key else f"{where}{message}")


# --------------------------------------------------------------------------- value types


@dataclass(frozen=True, slots=True)
class Lognormal:
    """A positive quantity given by its median and 95th percentile."""

    median: float
    p95: float

    @property
    def sigma(self) -> float:
        """Standard deviation of the underlying normal."""
        return math.log(self.p95 / self.median) / _Z95


@dataclass(frozen=True, slots=True)
class ConnectorSpec:
    """One connector: its success rate, how it varies by segment, latency and declines.

    ``segment_rates[dim][value]`` is the success rate this connector has for payments with
    that value (all else at the base). Several apply together in log-odds:
    ``logit(p) = logit(success_rate) + sum(logit(rate) - logit(success_rate))``.
    """

    name: str
    success_rate: float
    segment_rates: Mapping[str, Mapping[str, float]]
    latency_ms: Lognormal
    timeout_ms: float
    decline_codes: Mapping[str, float]
    supports: Mapping[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class MerchantSpec:
    """A merchant: its share of traffic, currencies, amounts and payment-mix overrides."""

    merchant_id: str
    weight: float
    currencies: Mapping[str, float]
    amount: Lognormal  # minor units
    mix: Mapping[str, Mapping[str, float]]


@dataclass(frozen=True, slots=True)
class Burst:
    """Traffic multiplied by ``multiplier`` during [start, end) (offsets in seconds)."""

    start: float
    end: float
    multiplier: float


@dataclass(frozen=True, slots=True)
class TrafficSpec:
    """Volume and shape of traffic: total payments over the duration, seasonality, bursts."""

    payments: int
    start: float  # epoch seconds
    duration: float  # seconds
    daily: tuple[float, ...]  # 24 relative weights, hour of day (UTC) 0..23
    weekly: tuple[float, ...]  # 7 relative weights, Monday..Sunday
    bursts: tuple[Burst, ...]


@dataclass(frozen=True, slots=True)
class Outage:
    """The connector fails everything (``where`` limits it to a segment) in [start, end)."""

    connector: str
    start: float
    end: float
    failure: Literal["timeout", "error"] = "timeout"
    where: Mapping[str, frozenset[str]] = field(default_factory=dict)
    kind: Literal["outage"] = "outage"


@dataclass(frozen=True, slots=True)
class Degradation:
    """Success rate multiplied by ``success_rate_factor`` (and latency by ``latency_factor``).

    The factor is reached linearly over ``ramp`` from ``start`` (gradual drift when long),
    held until ``end``, and undone linearly over ``recovery_ramp`` (the recovery).
    """

    connector: str
    start: float
    end: float
    success_rate_factor: float = 1.0
    latency_factor: float = 1.0
    ramp: float = 0.0
    recovery_ramp: float = 0.0
    where: Mapping[str, frozenset[str]] = field(default_factory=dict)
    kind: Literal["degradation"] = "degradation"


@dataclass(frozen=True, slots=True)
class Flapping:
    """The connector alternates ``down`` (full outage) and ``up`` periods in [start, end)."""

    connector: str
    start: float
    end: float
    down: float
    up: float
    failure: Literal["timeout", "error"] = "error"
    where: Mapping[str, frozenset[str]] = field(default_factory=dict)
    kind: Literal["flapping"] = "flapping"


@dataclass(frozen=True, slots=True)
class ConnectorAdded:
    """A connector that is not eligible for any payment before ``at`` (cold start)."""

    connector: str
    at: float
    kind: Literal["connector_added"] = "connector_added"


@dataclass(frozen=True, slots=True)
class FraudBurst:
    """Card testing: ``attempts`` extra small payments from ``cards`` cards at one merchant.

    ``attempts`` is at the scenario's full payment count and scales with it. They succeed
    with ``success_rate`` at every connector and decline with ``decline_codes``.
    """

    merchant: str
    start: float
    end: float
    attempts: int
    cards: int
    amount: Lognormal
    success_rate: float
    decline_codes: Mapping[str, float]
    kind: Literal["fraud_burst"] = "fraud_burst"


@dataclass(frozen=True, slots=True)
class VolumeDrop:
    """Only ``factor`` of the payments of ``merchant`` (every merchant when ``None``) in
    [start, end) happen: a broken checkout, a lost integration. The others are dropped."""

    merchant: str | None
    start: float
    end: float
    factor: float
    kind: Literal["volume_drop"] = "volume_drop"


@dataclass(frozen=True, slots=True)
class AmountShift:
    """Amounts of ``merchant``'s payments in [start, end) are multiplied by ``factor``: a
    pricing bug, minor units sent as major ones."""

    merchant: str
    start: float
    end: float
    factor: float
    kind: Literal["amount_shift"] = "amount_shift"


ScenarioEvent = (
    Outage | Degradation | Flapping | ConnectorAdded | FraudBurst | VolumeDrop | AmountShift
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed scenario. Build with :func:`load_scenario` or :func:`parse_scenario`."""

    name: str
    description: str
    seed: int
    connectors: tuple[ConnectorSpec, ...]
    merchants: tuple[MerchantSpec, ...]
    traffic: TrafficSpec
    mix: Mapping[str, Mapping[str, float]]  # payment_method, card_network, issuer_country
    method_types: Mapping[str, Mapping[str, float]]  # payment_method -> type -> weight
    amount_bands: tuple[tuple[str, int], ...]  # (name, lower bound in minor units), sorted
    feedback_lag: Lognormal  # seconds between an attempt completing and APOS hearing of it
    events: tuple[ScenarioEvent, ...]
    source: str = ""

    @property
    def connector_names(self) -> tuple[str, ...]:
        """Connector names in file order (the column order of every matrix)."""
        return tuple(c.name for c in self.connectors)

    @property
    def end(self) -> float:
        """Epoch seconds at which the scenario's traffic stops."""
        return self.traffic.start + self.traffic.duration


# --------------------------------------------------------------------------- durations

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``"90s"``, ``"1h30m"``, ``"2d"``.

    >>> parse_duration("1h30m"), parse_duration(45), parse_duration("250ms")
    (5400.0, 45.0, 0.25)
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError("must be a finite, non-negative number of seconds")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as '15m', got {type(value).__name__}")
    text = value.strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration (use e.g. '90s', '15m', '6h30m', '1d')")
    return total


# --------------------------------------------------------------------------- reader helper


class _Table:
    """A TOML table being read: remembers its path and rejects keys nobody asked for."""

    def __init__(self, data: object, path: str, source: str) -> None:
        if not isinstance(data, dict):
            raise ScenarioError(path, f"expected a table, got {type(data).__name__}", source)
        self.data: dict[str, Any] = data
        self.path = path
        self.source = source
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, message: str) -> ScenarioError:
        return ScenarioError(self.key(name), message, self.source)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = ..., *, required: bool = False) -> Any:
        self.seen.add(name)
        if name not in self.data:
            if required or default is ...:
                raise self.error(name, "is required")
            return default
        return self.data[name]

    def string(self, name: str, default: str | None = None) -> str:
        value = self.raw(name, ... if default is None else default)
        if not isinstance(value, str) or not value:
            raise self.error(name, "must be a non-empty string")
        return value

    def number(
        self,
        name: str,
        default: float | None = None,
        *,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
    ) -> float:
        value = self.raw(name, ... if default is None else default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(name, f"must be a number, got {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value):
            raise self.error(name, "must be finite")
        if low is not None and (value <= low if low_open else value < low):
            raise self.error(name, f"must be {'>' if low_open else '>='} {low:g}")
        if high is not None and value > high:
            raise self.error(name, f"must be <= {high:g}")
        return value

    def rate(self, name: str, default: float | None = None) -> float:
        return self.number(name, default, low=0.0, high=1.0)

    def duration(self, name: str, default: float | None = None) -> float:
        value = self.raw(name, ... if default is None else default)
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def table(self, name: str, *, required: bool = False) -> _Table:
        return _Table(self.raw(name, ... if required else {}), self.key(name), self.source)

    def tables(self, name: str) -> list[_Table]:
        value = self.raw(name, [])
        if not isinstance(value, list):
            raise self.error(name, "must be an array of tables ([[...]])")
        return [_Table(v, f"{self.key(name)}[{i}]", self.source) for i, v in enumerate(value)]

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(unknown[0], "unknown key (check the spelling; see docs/simulator.md)")


def _weights(t: _Table, what: str, allowed: frozenset[str] | None = None) -> dict[str, float]:
    """Read ``{value = weight, ...}``; weights are relative and normalised."""
    out: dict[str, float] = {}
    for name in t.data:
        if allowed is not None and name not in allowed:
            raise t.error(name, f"unknown {what}")
        out[name] = t.number(name, low=0.0)
    t.done()
    total = sum(out.values())
    if not out or total <= 0:
        raise ScenarioError(t.path, "needs at least one positive weight", t.source)
    return {k: v / total for k, v in out.items()}


def _lognormal(t: _Table, *, durations: bool = False) -> Lognormal:
    read = t.duration if durations else (lambda n: t.number(n, low=0.0, low_open=True))
    median = read("median")
    p95 = read("p95") if t.has("p95") else median
    t.done()
    if median <= 0:
        raise t.error("median", "must be > 0")
    if p95 < median:
        raise t.error("p95", "must be >= median")
    return Lognormal(median, p95)


def _where(t: _Table) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for dim in t.data:
        if dim not in DIMENSIONS:
            raise t.error(dim, f"unknown segment dimension (one of {', '.join(DIMENSIONS)})")
        value = t.raw(dim)
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise t.error(dim, "must be a string or a list of strings")
        out[dim] = frozenset(_canonical(dim, v) for v in values)
    t.done()
    return out


def _canonical(dim: str, value: str) -> str:
    if dim in ("issuer_country", "currency"):
        return value.upper()
    if dim in ("payment_method", "payment_method_type", "card_network"):
        return value.lower()
    return value


# --------------------------------------------------------------------------- sections


def _parse_connector(t: _Table, names: set[str]) -> ConnectorSpec:
    name = t.string("name").lower()
    if name in names:
        raise t.error("name", f"duplicate connector {name!r}")
    if not re.fullmatch(r"[a-z0-9_.:\-]+", name):
        raise t.error("name", "may contain only letters, digits and _ . : -")
    base = t.rate("success_rate")
    if not 0.0 < base < 1.0:
        raise t.error("success_rate", "must be strictly between 0 and 1")
    seg = t.table("segment_rates")
    segment_rates: dict[str, dict[str, float]] = {}
    for dim in seg.data:
        if dim not in DIMENSIONS:
            raise seg.error(dim, f"unknown segment dimension (one of {', '.join(DIMENSIONS)})")
        values = seg.table(dim)
        rates = {}
        for v in values.data:
            r = values.rate(v)
            if not 0.0 < r < 1.0:
                raise values.error(v, "must be strictly between 0 and 1")
            rates[_canonical(dim, v)] = r
        values.done()
        segment_rates[dim] = rates
    seg.done()
    latency = _lognormal(t.table("latency_ms", required=True))
    timeout_ms = t.number("timeout_ms", 30_000.0, low=0.0, low_open=True)
    codes_table = t.table("decline_codes")
    codes = (
        _weights(codes_table, "decline code", frozenset(DECLINE_CODES))
        if codes_table.data
        else dict(DEFAULT_DECLINE_MIX)
    )
    sup = t.table("supports")
    supports: dict[str, frozenset[str]] = _where(sup) if sup.data else {}
    t.done()
    names.add(name)
    return ConnectorSpec(name, base, segment_rates, latency, timeout_ms, codes, supports)


def _parse_traffic(t: _Table) -> TrafficSpec:
    payments = t.number("payments", low=1.0)
    if payments != int(payments):
        raise t.error("payments", "must be a whole number")
    start_raw = t.raw("start", "2026-03-02T00:00:00Z")
    if isinstance(start_raw, datetime):
        start_dt = start_raw
    elif isinstance(start_raw, str):
        try:
            start_dt = datetime.fromisoformat(start_raw.replace("Z", "+00:00"))
        except ValueError:
            raise t.error("start", "must be an ISO 8601 date-time") from None
    else:
        raise t.error("start", "must be an ISO 8601 date-time")
    if start_dt.tzinfo is None:
        start_dt = start_dt.replace(tzinfo=UTC)
    duration = t.duration("duration")
    if duration <= 0:
        raise t.error("duration", "must be > 0")

    def profile(name: str, size: int) -> tuple[float, ...]:
        value = t.raw(name, [1.0] * size)
        if (
            not isinstance(value, list)
            or len(value) != size
            or not all(isinstance(v, int | float) and v >= 0 for v in value)
            or sum(value) <= 0
        ):
            raise t.error(name, f"must be a list of {size} non-negative weights")
        return tuple(float(v) for v in value)

    daily = profile("daily", 24)
    weekly = profile("weekly", 7)
    bursts = []
    for b in t.tables("bursts"):
        bs, be = b.duration("start"), b.duration("end")
        if be <= bs:
            raise b.error("end", "must be after start")
        bursts.append(Burst(bs, be, b.number("multiplier", low=0.0)))
        b.done()
    t.done()
    return TrafficSpec(int(payments), start_dt.timestamp(), duration, daily, weekly, tuple(bursts))


def _parse_merchant(t: _Table, ids: set[str]) -> MerchantSpec:
    merchant_id = t.string("id")
    if merchant_id in ids:
        raise t.error("id", f"duplicate merchant {merchant_id!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.:\-]+", merchant_id):
        raise t.error("id", "may contain only letters, digits and _ . : -")
    weight = t.number("weight", 1.0, low=0.0, low_open=True)
    if t.has("currency"):
        code = t.string("currency").upper()
        if code not in CURRENCIES:
            raise t.error("currency", f"unknown ISO 4217 currency {code!r}")
        currencies = {code: 1.0}
    else:
        ct = t.table("currencies")
        currencies = {k.upper(): v for k, v in _weights(ct, "currency").items()}
        for code in currencies:
            if code not in CURRENCIES:
                raise ct.error(code, "unknown ISO 4217 currency")
        if not currencies:
            raise t.error("currency", "is required")
    amount = _lognormal(t.table("amount", required=True))
    mix = _parse_mix(t.table("mix"))
    t.done()
    ids.add(merchant_id)
    return MerchantSpec(merchant_id, weight, currencies, amount, mix)


_MIX_DIMS = ("payment_method", "card_network", "issuer_country")


def _parse_mix(t: _Table) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for dim in _MIX_DIMS:
        if t.has(dim):
            sub = t.table(dim)
            weights = {_canonical(dim, k): v for k, v in _weights(sub, dim).items()}
            if dim == "issuer_country":
                for code in weights:
                    if code not in COUNTRIES:
                        raise sub.error(code, "unknown ISO 3166-1 alpha-2 country")
            out[dim] = weights
    t.done()
    return out


def _parse_event(t: _Table, connectors: set[str], merchants: set[str]) -> ScenarioEvent:
    kind = t.string("kind")

    def connector() -> str:
        name = t.string("connector").lower()
        if name not in connectors:
            raise t.error("connector", f"no connector named {name!r} in [[connectors]]")
        return name

    def window() -> tuple[float, float]:
        start = t.duration("start")
        end = t.duration("end") if t.has("end") else math.inf
        if end <= start:
            raise t.error("end", "must be after start")
        return start, end

    def failure(default: str) -> Literal["timeout", "error"]:
        value = t.string("failure", default)
        if value not in ("timeout", "error"):
            raise t.error("failure", "must be 'timeout' or 'error'")
        return "timeout" if value == "timeout" else "error"

    event: ScenarioEvent
    if kind == "outage":
        name = connector()
        start, end = window()
        event = Outage(name, start, end, failure("timeout"), _where(t.table("where")))
    elif kind == "degradation":
        name = connector()
        start, end = window()
        event = Degradation(
            name,
            start,
            end,
            success_rate_factor=t.number("success_rate_factor", 1.0, low=0.0),
            latency_factor=t.number("latency_factor", 1.0, low=0.0, low_open=True),
            ramp=t.duration("ramp", 0.0),
            recovery_ramp=t.duration("recovery_ramp", 0.0),
            where=_where(t.table("where")),
        )
    elif kind == "flapping":
        name = connector()
        start, end = window()
        down, up = t.duration("down"), t.duration("up")
        if down <= 0:
            raise t.error("down", "must be > 0")
        if up <= 0:
            raise t.error("up", "must be > 0")
        event = Flapping(name, start, end, down, up, failure("error"), _where(t.table("where")))
    elif kind == "connector_added":
        event = ConnectorAdded(connector(), t.duration("at"))
    elif kind == "fraud_burst":
        merchant = t.string("merchant")
        if merchant not in merchants:
            raise t.error("merchant", f"no merchant with id {merchant!r} in [[merchants]]")
        start, end = window()
        if math.isinf(end):
            raise t.error("end", "is required for a fraud burst")
        attempts = t.number("attempts", low=1.0)
        cards = t.number("cards", 3.0, low=1.0)
        amount = _lognormal(t.table("amount")) if t.has("amount") else Lognormal(100.0, 300.0)
        codes_table = t.table("decline_codes")
        codes = (
            _weights(codes_table, "decline code", frozenset(DECLINE_CODES))
            if codes_table.data
            else dict(DEFAULT_FRAUD_DECLINE_MIX)
        )
        event = FraudBurst(
            merchant,
            start,
            end,
            int(attempts),
            int(cards),
            amount,
            t.rate("success_rate", 0.02),
            codes,
        )
    elif kind in ("volume_drop", "amount_shift"):
        optional = kind == "volume_drop" and not t.has("merchant")  # every merchant
        merchant_id = "" if optional else t.string("merchant")
        if merchant_id and merchant_id not in merchants:
            raise t.error("merchant", f"no merchant with id {merchant_id!r} in [[merchants]]")
        start, end = window()
        if kind == "volume_drop":
            factor = t.number("factor", low=0.0)
            if factor >= 1.0:
                raise t.error("factor", "must be < 1 (the share of payments kept)")
            event = VolumeDrop(merchant_id or None, start, end, factor)
        else:
            factor = t.number("factor", low=0.0, low_open=True)
            event = AmountShift(merchant_id, start, end, factor)
    else:
        raise t.error(
            "kind",
            f"unknown event kind {kind!r} (outage, degradation, flapping, "
            "connector_added, fraud_burst, volume_drop, amount_shift)",
        )
    t.done()
    return event


def parse_scenario(data: Mapping[str, Any], source: str = "") -> Scenario:
    """Build a :class:`Scenario` from a parsed TOML document.

    Raises:
        ScenarioError: naming the first wrong key.
    """
    root = _Table(dict(data), "", source)
    head = root.table("scenario", required=True)
    name = head.string("name")
    description = head.raw("description", "")
    if not isinstance(description, str):
        raise head.error("description", "must be a string")
    seed = head.number("seed", 0.0, low=0.0)
    head.done()

    names: set[str] = set()
    connectors = tuple(_parse_connector(c, names) for c in root.tables("connectors"))
    if not connectors:
        raise root.error("connectors", "at least one [[connectors]] table is required")

    traffic = _parse_traffic(root.table("traffic", required=True))

    ids: set[str] = set()
    merchant_tables = root.tables("merchants")
    merchants = tuple(_parse_merchant(m, ids) for m in merchant_tables)
    if not merchants:
        raise root.error("merchants", "at least one [[merchants]] table is required")

    mix_table = root.table("mix")
    method_types: dict[str, dict[str, float]] = {}
    if mix_table.has("payment_method_type"):
        types_table = mix_table.table("payment_method_type")
        for method in types_table.data:
            weights = _weights(types_table.table(method), "payment method type")
            method_types[method.lower()] = {k.lower(): v for k, v in weights.items()}
        types_table.done()
    mix = _parse_mix(mix_table)
    mix.setdefault("payment_method", {"card": 1.0})
    mix.setdefault("card_network", {"visa": 0.6, "mastercard": 0.4})
    mix.setdefault("issuer_country", {"US": 1.0})

    bands_table = root.table("amount_bands")
    if bands_table.data:
        bands = []
        for band in bands_table.data:
            low = bands_table.number(band, low=0.0)
            bands.append((band, int(low)))
        bands_table.done()
        bands.sort(key=lambda b: b[1])
        if bands[0][1] != 0:
            raise bands_table.error(bands[0][0], "the lowest band must start at 0")
    else:
        bands = [("small", 0), ("medium", 2_000), ("large", 20_000)]

    fb = root.table("feedback")
    lag = _lognormal(fb.table("lag"), durations=True) if fb.has("lag") else Lognormal(0.5, 3.0)
    fb.done()

    events = tuple(_parse_event(e, names, ids) for e in root.tables("events"))
    root.done()

    scenario = Scenario(
        name=name,
        description=description.strip(),
        seed=int(seed),
        connectors=connectors,
        merchants=merchants,
        traffic=traffic,
        mix=mix,
        method_types=method_types,
        amount_bands=tuple(bands),
        feedback_lag=lag,
        events=events,
        source=source,
    )
    _check_segment_values(scenario)
    return scenario


def _check_segment_values(scenario: Scenario) -> None:
    """Reject segment rates and filters naming a value that never occurs in the traffic."""
    from apos.sim.truth import segment_vocabulary  # local: truth imports this module

    vocab = segment_vocabulary(scenario)
    src = scenario.source
    for i, c in enumerate(scenario.connectors):
        for dim, rates in c.segment_rates.items():
            for value in rates:
                if value not in vocab[dim]:
                    raise ScenarioError(
                        f"connectors[{i}].segment_rates.{dim}.{value}",
                        "this value never occurs in the traffic (see [mix], [[merchants]])",
                        src,
                    )
    for i, e in enumerate(scenario.events):
        where = getattr(e, "where", {})
        for dim, values in where.items():
            for value in values:
                if value not in vocab[dim]:
                    raise ScenarioError(
                        f"events[{i}].where.{dim}",
                        f"{value!r} never occurs in the traffic",
                        src,
                    )


# --------------------------------------------------------------------------- files


def scenario_dir() -> Path:
    """Where named scenarios live: ``$APOS_SCENARIOS_DIR``, else the repository's ``scenarios/``."""
    env = os.environ.get("APOS_SCENARIOS_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3] / "scenarios"
    return repo if repo.is_dir() else Path.cwd() / "scenarios"


def scenario_names() -> list[str]:
    """Names of the scenario files in :func:`scenario_dir`."""
    return sorted(p.stem for p in scenario_dir().glob("*.toml"))


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario from a TOML file, or by name from :func:`scenario_dir`.

    Raises:
        ScenarioError: naming the first wrong key (or the TOML syntax error).
        FileNotFoundError: if there is no such file or named scenario.
    """
    p = Path(path)
    if not p.suffix and not p.exists():
        p = scenario_dir() / f"{p.name}.toml"
    text = p.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("", f"not valid TOML: {exc}", str(p)) from None
    return parse_scenario(data, str(p))
