"""Helpers for the core tests: payments and events in a few words."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from apos.core.events import PaymentEvent
from apos.core.payment import Payment

T0 = 1_700_000_000.0

_counter = iter(range(10**9))


def payment(
    merchant: str = "m1",
    network: str | None = "visa",
    country: str | None = "US",
    amount: int = 1999,
    currency: str = "USD",
    method: str = "card",
    eligible: tuple[str, ...] | None = None,
    payment_id: str | None = None,
) -> Payment:
    """A payment with defaults for everything not under test."""
    return Payment(
        payment_id=payment_id or f"pay_{next(_counter)}",
        merchant_id=merchant,
        amount=amount,
        currency=currency,
        payment_method=method,
        card_network=network,
        country=country,
        eligible_connectors=eligible,
    )


def event(
    connector: str,
    ok: bool,
    ts: float,
    merchant: str = "m1",
    network: str | None = "visa",
    country: str | None = "US",
    amount: int = 1999,
    status: str | None = None,
    error_code: str | None = None,
    latency_ms: float | None = None,
    payment_id: str | None = None,
    attempt: int = 1,
    decision_id: str | None = None,
) -> PaymentEvent:
    """A validated final event (``status`` overrides ``ok``)."""
    n = next(_counter)
    return PaymentEvent(
        event_id=f"evt_{n}",
        payment_id=payment_id or f"pay_{n}",
        attempt=attempt,
        merchant_id=merchant,
        connector=connector,
        status=status or ("succeeded" if ok else "failed"),
        amount=amount,
        currency="USD",
        card_network=network,
        issuer_country=country,
        error_code=error_code,
        latency_ms=latency_ms,
        decision_id=decision_id,
        occurred_at=datetime.fromtimestamp(ts, UTC),
    )


def outcome_for(pay: Payment, connector: str, ok: bool, ts: float, **extra: object) -> PaymentEvent:
    """The event of routing ``pay`` to ``connector`` (following an APOS decision)."""
    extra.setdefault("decision_id", f"dec_{pay.payment_id}")
    return event(
        connector,
        ok,
        ts,
        merchant=pay.merchant_id,
        network=pay.card_network,
        country=pay.country,
        amount=pay.amount,
        payment_id=pay.payment_id,
        **extra,  # type: ignore[arg-type]
    )


def exact_outcome(n: int, rate: float) -> bool:
    """The ``n``-th outcome (from 0) of a deterministic sequence with exactly ``rate`` successes.

    >>> sum(exact_outcome(i, 0.6) for i in range(1000))
    600
    """
    return int((n + 1) * rate + 1e-9) > int(n * rate + 1e-9)


def pure_module(name: str) -> ModuleType:
    """``name`` loaded from its ``.py`` source even when a compiled build of it exists.

    ``make accel`` compiles some core modules (see ``apos.accel``); this gives the plain
    Python form of the same source, for doctests and to hold the two to the same answers.
    """
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).with_name(name.rsplit(".", 1)[1] + ".py")
    alias = f"_pure_{name.replace('.', '_')}"
    if alias in sys.modules:
        return sys.modules[alias]
    loader = importlib.machinery.SourceFileLoader(alias, str(source))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(alias, loader))
    sys.modules[alias] = module  # dataclasses look their module up while it executes
    loader.exec_module(module)
    return module
