"""The in-process API accepts the same inputs compiled (``make accel``) and as plain Python.

The compiled engine type-checks what it reads (a list where a tuple is declared is a
``TypeError``) while plain Python carries on, so the public constructors normalise and check
their input once, and both builds must then answer every input alike: the same decision, or
the same error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest

from apos.core.config import EngineConfig
from apos.core.engine import Engine
from apos.core.payment import Payment

from .helpers import T0, event

CONNECTORS = ("stripe", "adyen", "checkout")


def _decide(eligible: Any, seed: int = 5) -> tuple[str, tuple[tuple[str, float], ...]]:
    engine = Engine(list(CONNECTORS), seed=seed)
    for i in range(60):  # enough evidence that the learning policy, not the rules, decides
        engine.observe(event("adyen", i % 5 != 0, T0 + i), T0 + i)
        engine.observe(event("checkout", i % 2 == 0, T0 + i), T0 + i)
    decision = engine.route(
        Payment("pay_1", "m1", 1999, "USD", card_network="visa", country="US",
                eligible_connectors=eligible),
        T0 + 100,
    )  # fmt: skip
    return decision.connector, decision.alternatives


SEQUENCES: dict[str, Callable[[], Iterable[str]]] = {
    "list": lambda: ["adyen", "checkout"],
    "generator": lambda: (c for c in ("adyen", "checkout")),
    "iterator": lambda: iter(["adyen", "checkout"]),
    "deque": lambda: deque(["adyen", "checkout"]),
    "numpy array": lambda: np.array(["adyen", "checkout"]),
    "dict keys": lambda: {"adyen": 1, "checkout": 2}.keys(),
}


@pytest.mark.parametrize("kind", sorted(SEQUENCES))
def test_any_sequence_of_names_routes_as_the_tuple_does(kind: str) -> None:
    given = SEQUENCES[kind]()
    payment = Payment("p1", "m1", 1999, "USD", eligible_connectors=given)
    assert type(payment.eligible_connectors) is tuple
    assert payment.eligible_connectors == ("adyen", "checkout")
    assert _decide(SEQUENCES[kind]()) == _decide(("adyen", "checkout"))


def test_a_set_of_names_is_taken_in_sorted_order_so_routing_stays_deterministic() -> None:
    payment = Payment("p1", "m1", 1999, "USD", eligible_connectors={"stripe", "adyen", "x"})
    assert payment.eligible_connectors == ("adyen", "stripe", "x")
    assert _decide(frozenset({"checkout", "adyen"})) == _decide(("adyen", "checkout"))


CARD = "4111111111111111"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eligible_connectors", "stripe"),  # would route to "s", "t", "r"...
        ("eligible_connectors", b"stripe"),
        ("eligible_connectors", 42),
        ("eligible_connectors", ["stripe", 7]),
        ("eligible_connectors", [None]),
        ("merchant_id", int(CARD)),
        ("payment_id", None),
        ("currency", 840),
        ("card_network", 1),
        ("amount", float(CARD)),  # a float is refused, never rounded
        ("amount", True),
        ("amount", "1999"),
    ],
)
def test_a_payment_of_the_wrong_shape_is_refused_naming_the_field(field: str, value: Any) -> None:
    fields: dict[str, Any] = {
        "payment_id": "p1",
        "merchant_id": "m1",
        "amount": 1999,
        "currency": "USD",
        field: value,
    }
    with pytest.raises(TypeError, match=rf"Payment\.{field}") as caught:
        Payment(**fields)
    assert CARD not in str(caught.value) and "41111" not in str(caught.value)


def test_integer_types_other_than_int_are_read_as_int() -> None:
    payment = Payment("p1", "m1", np.int64(1999), "USD")  # type: ignore[arg-type]
    assert type(payment.amount) is int and payment.amount == 1999


def test_an_engine_refuses_a_bare_string_for_its_connectors() -> None:
    with pytest.raises(TypeError, match="not a string"):
        Engine("stripe")
    assert Engine(iter(["Stripe", "adyen"])).connectors == ("stripe", "adyen")


def test_configuration_given_as_lists_is_the_configuration_given_as_tuples() -> None:
    as_lists = EngineConfig.model_validate(
        {
            "default": {
                "policy": "rules",
                "priority": ["adyen", "stripe"],
                "rules": [{"name": "eu", "countries": ["DE"], "connectors": ["checkout"]}],
            },
            "learner": {"context_order": ["payment_method", "merchant"]},
        }
    )
    as_tuples = EngineConfig.model_validate(
        {
            "default": {
                "policy": "rules",
                "priority": ("adyen", "stripe"),
                "rules": ({"name": "eu", "countries": ("DE",), "connectors": ("checkout",)},),
            },
            "learner": {"context_order": ("payment_method", "merchant")},
        }
    )
    assert as_lists == as_tuples
    assert as_lists.model_version("m1") == as_tuples.model_version("m1")


# Run in a fresh interpreter per build: APOS_PURE decides at import which one loads.
_PROBE = r"""
import json, sys
from collections import deque
import apos.core.engine
from apos.core.config import EngineConfig
from apos.core.engine import Engine
from apos.core.events import PaymentEvent
from apos.core.payment import Payment

T0 = 1_700_000_000.0
CASES = {
    "tuple": ("adyen", "checkout"), "list": ["adyen", "checkout"],
    "iterator": iter(["adyen", "checkout"]), "deque": deque(["checkout", "adyen"]),
    "set": {"checkout", "adyen"}, "none": None, "string": "stripe", "bytes": b"stripe",
    "ints": [1, 2], "empty": [], "not iterable": 3,
}
config = EngineConfig.model_validate(
    {"default": {"priority": ["checkout", "adyen"], "min_evidence": 5}}
)

def attempt(build):
    try:
        return ["ok", build()]
    except Exception as exc:
        return ["error", type(exc).__name__, str(exc)]

def route(eligible):
    engine = Engine(["stripe", "adyen", "checkout"], seed=3, config=config)
    for i in range(40):
        for connector, ok in (("adyen", i % 4 != 0), ("checkout", i % 2 == 0)):
            engine.observe(PaymentEvent.model_validate({
                "event_id": f"e{i}{connector}", "payment_id": f"p{i}", "merchant_id": "m1",
                "connector": connector, "amount": 1999, "currency": "USD",
                "status": "succeeded" if ok else "failed", "occurred_at": T0 + i,
            }), T0 + i)
    d = engine.route(Payment("p1", "m1", 1999, "USD", eligible_connectors=eligible), T0 + 50)
    return [d.connector, [list(a) for a in d.alternatives], d.propensity, d.reasons]

out = {name: attempt(lambda e=e: route(e)) for name, e in CASES.items()}
for name, connectors in {"list": ["a", "b"], "iterator": iter(["a"]), "string": "ab"}.items():
    out["engine " + name] = attempt(lambda c=connectors: list(Engine(c).connectors))
print(json.dumps({"engine": apos.core.engine.__file__, "results": out}))
"""


def _probe(pure: bool) -> dict[str, Any]:
    env = {**os.environ, "APOS_PURE": "1" if pure else ""}
    run = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def test_both_builds_accept_and_refuse_the_same_inputs_alike() -> None:
    plain, compiled = _probe(pure=True), _probe(pure=False)
    assert plain["engine"].endswith("engine.py")
    results = plain["results"]
    for kind in ("list", "iterator", "deque", "set"):
        assert results[kind] == results["tuple"], kind
    for kind in ("string", "bytes", "ints", "not iterable", "engine string"):
        assert results[kind][:2] == ["error", "TypeError"], kind
    assert results["empty"][:2] == ["error", "ValueError"]
    assert compiled["results"] == results
