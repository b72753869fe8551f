"""Seeded synthetic payment streams for the per-event detectors' tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from apos.core.detect.base import Detector
from apos.core.detect.findings import Finding
from apos.core.events import PaymentEvent, PaymentStatus

T0 = 1_700_006_400.0  # a UTC midnight


def fast_event(
    n: int,
    ts: float,
    merchant: str = "m_shop",
    amount: int = 2500,
    currency: str = "USD",
    status: str = "succeeded",
    fingerprint: str | None = None,
    connector: str = "adyen",
    payment_id: str | None = None,
    latency_ms: float | None = None,
) -> PaymentEvent:
    """An event built without validation (the tests' streams are trusted and large)."""
    return PaymentEvent.model_construct(
        event_id=f"evt_{n}",
        payment_id=payment_id or f"pay_{n}",
        attempt=1,
        merchant_id=merchant,
        connector=connector,
        status=PaymentStatus(status),
        amount=int(amount),
        currency=currency,
        payment_method="card",
        fingerprint=fingerprint,
        latency_ms=latency_ms,
        occurred_at=datetime.fromtimestamp(ts, UTC),
    )


def run(detector: Detector, events: Iterable[PaymentEvent], every_s: float = 60.0) -> list[Finding]:
    """Feed ``events`` in order (``now`` = event time), evaluating every ``every_s``."""
    findings: list[Finding] = []
    next_eval: float | None = None
    for event in events:
        ts = event.occurred_ts
        if next_eval is None:
            next_eval = (ts // every_s + 1) * every_s
        while ts >= next_eval:
            findings.extend(detector.evaluate(next_eval))
            next_eval += every_s
        findings.extend(detector.learn_one(event, ts))
    if next_eval is not None:
        findings.extend(detector.evaluate(next_eval))
    return findings


def incidents(findings: Sequence[Finding]) -> dict[str, list[Finding]]:
    """Findings grouped by incident key, in order."""
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.incident_key, []).append(f)
    return out


def openings(findings: Sequence[Finding]) -> list[Finding]:
    """The first active finding of each incident episode (open after closed or never seen)."""
    open_keys: set[str] = set()
    first: list[Finding] = []
    for f in findings:
        if f.active and f.incident_key not in open_keys:
            open_keys.add(f.incident_key)
            first.append(f)
        elif not f.active:
            open_keys.discard(f.incident_key)
    return first


def roundtrip(detector: Any) -> Any:
    """The detector rebuilt from its JSON-serialised state."""
    state = orjson.loads(orjson.dumps(detector.to_dict()))
    return type(detector).from_dict(state)


def per_event_cost_us(
    learn: Callable[[PaymentEvent, float], object], events: Sequence[PaymentEvent]
) -> float:
    """Mean microseconds of ``learn`` per event (a measurement to report, not to assert)."""
    start = time.perf_counter()
    for event in events:
        learn(event, event.occurred_ts)
    return (time.perf_counter() - start) / len(events) * 1e6
