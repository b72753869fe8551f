"""The payment to route, and the context it is learnt under.

A router learns "how does connector X do for payments like this one". "Like this one" is the
*context*: a path from the coarsest description of a payment to the finest, one attribute
(a *dimension*) added per level. With the default order
(:data:`DEFAULT_CONTEXT_ORDER`, configurable as ``LearnerConfig.context_order``):

=====  =================================================  =================================
level  key                                                example
=====  =================================================  =================================
0      ``()``                                             every payment
1      ``(payment_method,)``                              ``("card",)``
2      ``(payment_method, card_network)``                 ``("card", "visa")``
3      ``(..., issuer_country)``                          ``(..., "US")``
4      ``(..., amount_band)``                             ``(..., "lt100")``
5      ``(..., merchant)``                                ``(..., "m1")``
=====  =================================================  =================================

The merchant comes last by default: what makes a connector succeed is mostly on the
issuer's side (method, network, country), which merchants share, so a merchant's sparse
contexts learn from everyone's payments and its own deviations are learnt at the finest
level. Putting the merchant first (the order of the original brief) makes every merchant
learn "adyen is good in Germany" on its own; on the simulator's sparse-contexts benchmark
that is the difference between losing to and beating the best fixed connector
(``docs/routing.md``).

A missing attribute (a wallet has no card network, an event may lack the issuer country) is
the placeholder ``"-"``: such payments form their own context rather than being dropped.

Amount bands are in *major* units of the payment's own currency (the ISO 4217 exponent turns
1999 USD into 19.99): ``lt10`` (< 10), ``lt100`` (< 100), ``lt1000`` (< 1000), ``ge1000``.
Bands are per currency on purpose: 1000 JPY and 1000 USD are different payments.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Set
from dataclasses import dataclass
from typing import Final

from apos.core.iso import CURRENCY_EXPONENTS

__all__ = [
    "AMOUNT_BANDS",
    "DEFAULT_CONTEXT_ORDER",
    "DIMENSIONS",
    "MISSING",
    "ContextKeys",
    "ContextPath",
    "Payment",
    "amount_band",
    "context_path",
    "context_path_of",
]

MISSING: Final = "-"
AMOUNT_BANDS: Final[tuple[str, ...]] = ("lt10", "lt100", "lt1000", "ge1000")

DIMENSIONS: Final[tuple[str, ...]] = (
    "merchant",
    "payment_method",
    "card_network",
    "issuer_country",
    "amount_band",
)
DEFAULT_CONTEXT_ORDER: Final[tuple[str, ...]] = (
    "payment_method",
    "card_network",
    "issuer_country",
    "amount_band",
    "merchant",
)

# A context path: the prefixes of the payment's dimension values in context order.
ContextPath = tuple[tuple[str, ...], ...]

# Band limits in minor units, per currency exponent; computed once (the hot path only compares).
_BAND_LIMITS: Final[dict[int, tuple[int, int, int]]] = {
    e: (10 * 10**e, 100 * 10**e, 1000 * 10**e) for e in set(CURRENCY_EXPONENTS.values()) | {2}
}


@dataclass(frozen=True, slots=True, init=False)
class Payment:
    """A payment about to be routed: what the router may base its choice on.

    Attributes:
        payment_id: The payment's id; the rules' volume split and experiments hash it, so the
            same payment always lands in the same bucket.
        merchant_id: The merchant; policies and configuration are chosen per merchant.
        amount: Amount in minor units of ``currency`` (1999 USD = $19.99).
        currency: ISO 4217 code, upper case.
        payment_method: ``card``, ``wallet``, ``bank_transfer``, ... (lower case).
        card_network: ``visa``, ``mastercard``, ... for cards.
        country: ISO 3166-1 alpha-2 country of the card issuer (``issuer_country`` in events).
        payment_method_type: ``credit``, ``debit``, ``apple_pay``, ...
        eligible_connectors: The connectors the switch can send this payment to; ``None``
            means every connector the engine knows. Any iterable of names is accepted and
            kept as a tuple in its order (a set, which has none, in sorted order, so that
            routing stays deterministic); a bare string is refused, not read as a list of
            one-letter connectors.

    The constructor checks every field's type and normalises ``amount`` (any integer type,
    e.g. ``numpy.int64``, becomes an ``int``) and ``eligible_connectors``. The compiled
    engine (``make accel``) type-checks what it reads where plain Python would carry on, so
    doing it here, once, makes both builds accept and refuse exactly the same payments.
    Errors are ``TypeError`` naming the field, never echoing the value.

    >>> p = Payment(payment_id="p1", merchant_id="m1", amount=1999, currency="USD",
    ...             card_network="visa", country="US")
    >>> context_path(p)[-1]
    ('card', 'visa', 'US', 'lt100', 'm1')
    >>> Payment("p2", "m1", 500, "EUR", eligible_connectors=["adyen", "x"]).eligible_connectors
    ('adyen', 'x')
    >>> Payment("p3", "m1", 500, "EUR", eligible_connectors="stripe")
    Traceback (most recent call last):
    ...
    TypeError: Payment.eligible_connectors must be an iterable of connector names, not a string
    """

    payment_id: str
    merchant_id: str
    amount: int
    currency: str
    payment_method: str
    card_network: str | None
    country: str | None
    payment_method_type: str | None
    eligible_connectors: tuple[str, ...] | None

    def __init__(
        self,
        payment_id: str,
        merchant_id: str,
        amount: int,
        currency: str,
        payment_method: str = "card",
        card_network: str | None = None,
        country: str | None = None,
        payment_method_type: str | None = None,
        eligible_connectors: Iterable[str] | None = None,
    ) -> None:
        if not (
            isinstance(payment_id, str)
            and isinstance(merchant_id, str)
            and isinstance(currency, str)
            and isinstance(payment_method, str)
            and (card_network is None or isinstance(card_network, str))
            and (country is None or isinstance(country, str))
            and (payment_method_type is None or isinstance(payment_method_type, str))
        ):
            _refuse_text(
                payment_id=payment_id,
                merchant_id=merchant_id,
                currency=currency,
                payment_method=payment_method,
                card_network=card_network,
                country=country,
                payment_method_type=payment_method_type,
            )
        if type(amount) is not int:
            amount = _minor_units(amount)
        eligible: tuple[str, ...] | None
        if eligible_connectors is None or (
            type(eligible_connectors) is tuple and all(map(_IS_STR, eligible_connectors))
        ):
            eligible = eligible_connectors  # already normal: the route path's case
        else:
            eligible = _connector_names(eligible_connectors)
        setattr_ = object.__setattr__  # frozen: the dataclass's own __init__ does the same
        setattr_(self, "payment_id", payment_id)
        setattr_(self, "merchant_id", merchant_id)
        setattr_(self, "amount", amount)
        setattr_(self, "currency", currency)
        setattr_(self, "payment_method", payment_method)
        setattr_(self, "card_network", card_network)
        setattr_(self, "country", country)
        setattr_(self, "payment_method_type", payment_method_type)
        setattr_(self, "eligible_connectors", eligible)


_IS_STR = str.__instancecheck__  # isinstance(x, str), callable by map() without a lambda


def _refuse_text(**fields: object) -> None:
    """Raise ``TypeError`` for the first text field that is not a str (``None`` allowed
    only where the field is optional). The value is not echoed: it may be a card number."""
    required = ("payment_id", "merchant_id", "currency", "payment_method")
    for name, value in fields.items():
        if isinstance(value, str) or (value is None and name not in required):
            continue
        raise TypeError(f"Payment.{name} must be a str, got {type(value).__name__}")


def _minor_units(value: object) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        # A float is refused rather than rounded: 19.99 is a major-unit amount by mistake.
        raise TypeError(
            f"Payment.amount must be an integer (minor units), got {type(value).__name__}"
        )
    return operator.index(value)


def _connector_names(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes | bytearray):
        raise TypeError(
            "Payment.eligible_connectors must be an iterable of connector names, not a string"
        )
    try:
        names = tuple(value)
    except TypeError:
        raise TypeError(
            "Payment.eligible_connectors must be an iterable of connector names, "
            f"got {type(value).__name__}"
        ) from None
    if not all(map(_IS_STR, names)):
        raise TypeError("Payment.eligible_connectors must hold connector names (str)")
    return tuple(sorted(names)) if isinstance(value, Set) else names


def amount_band(amount: int, currency: str) -> str:
    """The amount band of ``amount`` minor units of ``currency`` (see the module docstring).

    Unknown currencies are read with two decimals, the most common exponent.

    >>> amount_band(999, "USD"), amount_band(1000, "USD"), amount_band(1000, "JPY")
    ('lt10', 'lt100', 'ge1000')
    """
    lt10, lt100, lt1000 = _BAND_LIMITS[CURRENCY_EXPONENTS.get(currency, 2)]
    if amount < lt10:
        return "lt10"
    if amount < lt100:
        return "lt100"
    if amount < lt1000:
        return "lt1000"
    return "ge1000"


class ContextKeys:
    """Builds context paths in one order of the dimensions (compiled once, used per route).

    Parameters:
        order: Dimension names (from :data:`DIMENSIONS`), coarse to fine; a subset is fine
            (a dimension left out is not learnt by).

    >>> keys = ContextKeys(("merchant", "card_network"))
    >>> keys.path(Payment("p1", "m1", 500, "EUR", card_network="visa"))
    ((), ('m1',), ('m1', 'visa'))
    """

    __slots__ = ("_index", "order")

    def __init__(self, order: tuple[str, ...] = DEFAULT_CONTEXT_ORDER) -> None:
        unknown = [d for d in order if d not in DIMENSIONS]
        if unknown or len(set(order)) != len(order) or not order:
            raise ValueError(f"context order must be distinct names from {DIMENSIONS}")
        self.order = tuple(order)
        self._index = tuple(DIMENSIONS.index(d) for d in order)

    def path(self, payment: Payment) -> ContextPath:
        """The context path of a payment."""
        return self.path_of(
            payment.merchant_id,
            payment.payment_method,
            payment.card_network,
            payment.country,
            payment.amount,
            payment.currency,
        )

    def path_of(
        self,
        merchant_id: str,
        payment_method: str | None,
        card_network: str | None,
        country: str | None,
        amount: int | None,
        currency: str | None,
    ) -> ContextPath:
        """The context path from loose attributes (events and payments spell them apart).

        Methods and networks are compared in lower case, countries in upper case, as events
        spell them. A missing amount or currency puts the payment in the ``-`` band.
        """
        values = (
            merchant_id,
            payment_method.lower() if payment_method else MISSING,
            card_network.lower() if card_network else MISSING,
            country.upper() if country else MISSING,
            amount_band(amount, currency.upper()) if amount is not None and currency else MISSING,
        )
        if len(self._index) == 5:  # the hot path: no generators
            i0, i1, i2, i3, i4 = self._index
            v0, v1, v2, v3 = values[i0], values[i1], values[i2], values[i3]
            return (
                (),
                (v0,),
                (v0, v1),
                (v0, v1, v2),
                (v0, v1, v2, v3),
                (v0, v1, v2, v3, values[i4]),
            )
        picked = tuple(values[i] for i in self._index)
        return tuple(picked[:depth] for depth in range(len(picked) + 1))


_DEFAULT_KEYS = ContextKeys()


def context_path(payment: Payment) -> ContextPath:
    """The context path of ``payment`` in the default order, every payment (``()``) first.

    >>> context_path(Payment("p1", "m1", 500, "EUR", card_network="Visa"))[-1]
    ('card', 'visa', '-', 'lt10', 'm1')
    """
    return _DEFAULT_KEYS.path(payment)


def context_path_of(
    merchant_id: str,
    payment_method: str | None,
    card_network: str | None,
    country: str | None,
    amount: int | None,
    currency: str | None,
) -> ContextPath:
    """:func:`context_path` from loose attributes, in the default order."""
    return _DEFAULT_KEYS.path_of(
        merchant_id, payment_method, card_network, country, amount, currency
    )
