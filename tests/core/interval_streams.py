"""Seeded synthetic traffic in simulated time for the interval detectors' tests.

``traffic`` draws a Poisson stream with a daily curve; callables of event time change the
world (success rate per connector, latency factor, volume per merchant), so an injected
incident has an exact start. ``drive`` feeds a detector or a Monitor in event time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from apos.core.detect.findings import Finding
from apos.core.events import PaymentEvent, PaymentStatus

T0 = 1_772_409_600.0  # 2026-03-02 00:00 UTC, a Monday

Rate = Callable[[float, str], float]


def _one(_: float, __: str) -> float:
    return 1.0


def traffic(
    seed: int,
    start: float,
    duration_s: float,
    per_min: float,
    *,
    connectors: Sequence[str] = ("adyen", "stripe", "checkout", "worldpay"),
    shares: Sequence[float] = (0.45, 0.30, 0.20, 0.05),
    merchants: Sequence[str] = ("m_shop", "m_games", "m_media"),
    merchant_shares: Sequence[float] = (0.5, 0.3, 0.2),
    success: Rate | None = None,
    latency_factor: Rate = _one,
    volume: Rate = _one,
    daily_amplitude: float = 0.5,
    methods: Sequence[str] = ("card", "wallet"),
    method_shares: Sequence[float] = (0.8, 0.2),
) -> list[PaymentEvent]:
    """Events at ``per_min`` a minute on average, times a daily curve (peak at 18:00 UTC).

    ``success(t, connector)`` is the success probability (default 0.92), ``latency_factor(t,
    connector)`` multiplies a lognormal latency (median 250 ms, p95 ~570 ms), ``volume(t,
    merchant)`` keeps that share of the merchant's payments. A fifth of failures are
    connector timeouts, the rest issuer declines.
    """
    rng = np.random.default_rng(seed)
    succeed = success or (lambda _t, _c: 0.92)
    events: list[PaymentEvent] = []
    step = 10.0
    n = 0
    for k in range(int(duration_s // step)):
        t_bin = start + k * step
        curve = 1.0 + daily_amplitude * math.sin(2 * math.pi * ((t_bin % 86_400) / 86_400 - 0.5))
        count = rng.poisson(per_min / 6.0 * max(curve, 0.05))
        times = np.sort(rng.uniform(t_bin, t_bin + step, size=count))
        conn = rng.choice(len(connectors), size=count, p=shares)
        merch = rng.choice(len(merchants), size=count, p=merchant_shares)
        meth = rng.choice(len(methods), size=count, p=method_shares)
        u = rng.random((count, 3))
        z = rng.standard_normal(count)
        for i in range(count):
            t, c, m = float(times[i]), connectors[conn[i]], merchants[merch[i]]
            if u[i, 0] >= volume(t, m):
                continue
            ok = u[i, 1] < succeed(t, c)
            code = None if ok else ("timeout" if u[i, 2] < 0.2 else "do_not_honor")
            events.append(
                PaymentEvent.model_construct(
                    event_id=f"evt_{seed}_{n}",
                    payment_id=f"pay_{seed}_{n}",
                    attempt=1,
                    merchant_id=m,
                    connector=c,
                    status=PaymentStatus.SUCCEEDED if ok else PaymentStatus.FAILED,
                    amount=2500,
                    currency="USD",
                    payment_method=methods[meth[i]],
                    latency_ms=250.0 * math.exp(0.5 * float(z[i])) * latency_factor(t, c),
                    error_code=code,
                    fingerprint=f"card_{seed}_{n:08d}",
                    occurred_at=datetime.fromtimestamp(t, UTC),
                )
            )
            n += 1
    return events


def drive(target: Any, events: Iterable[PaymentEvent], interval_s: float = 10.0) -> list[Finding]:
    """Feed ``events`` in order (``now`` = event time). A detector is evaluated at every
    ``interval_s`` boundary; a Monitor is ticked with every event (it decides when)."""
    findings: list[Finding] = []
    monitor = hasattr(target, "tick")
    next_eval: float | None = None
    last = 0.0
    for event in events:
        ts = event.occurred_ts
        last = ts
        if monitor:
            findings.extend(target.tick(ts))
            findings.extend(target.observe(event, ts))
            continue
        if next_eval is None:
            next_eval = (ts // interval_s + 1) * interval_s
        while ts >= next_eval:
            findings.extend(target.evaluate(next_eval))
            next_eval += interval_s
        findings.extend(target.learn_one(event, ts))
    if monitor:
        findings.extend(target.tick(last + interval_s))
    elif next_eval is not None:
        findings.extend(target.evaluate(next_eval))
    return findings


def clearings(findings: Sequence[Finding]) -> list[Finding]:
    """The findings that say an incident cleared."""
    return [f for f in findings if not f.active]
