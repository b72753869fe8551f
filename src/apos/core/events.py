"""The canonical payment event: one attempt's outcome at one connector.

Every source (HTTP, Hyperswitch webhooks, Redis Streams, files) is mapped onto
:class:`PaymentEvent` before anything else sees it, so the rest of APOS speaks one language.
Validation happens once, at that boundary (:func:`parse_event`); code that builds events it
already trusts (the simulator, tests) may construct them directly, and events APOS itself
validated and serialised travel between instances as JSON (:func:`events_to_json`) and are
rebuilt without validating them again (:func:`events_from_json`).

Amounts are integers in the currency's minor unit (1999 USD = $19.99), as in Hyperswitch.
``occurred_at`` is event time: windows, decay and detectors use it, never the arrival time.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from apos.core.iso import (
    COUNTRIES,
    CURRENCIES,
    contains_card_number,
    looks_like_card_number,
    redact_card_numbers,
)

__all__ = [
    "CARD_NUMBER_REFUSED",
    "MAX_AMOUNT",
    "UNSTORABLE_REFUSED",
    "EventValidationError",
    "FieldError",
    "Identifier",
    "PaymentEvent",
    "PaymentStatus",
    "Text",
    "Token",
    "events_from_json",
    "events_to_json",
    "parse_event",
    "refuse_card_number",
    "refuse_unstorable",
    "unstorable_path",
]


class PaymentStatus(StrEnum):
    """Outcome of one payment attempt, reduced from the switch's richer status set."""

    SUCCEEDED = "succeeded"  # captured or authorised-and-captured: the money moves
    AUTHORIZED = "authorized"  # authorised, capture pending: counts as a success for routing
    FAILED = "failed"  # declined or errored at the connector
    PENDING = "pending"  # outcome not known yet (processing, async methods)
    REQUIRES_ACTION = "requires_action"  # waiting on the customer (3DS, redirect)
    CANCELLED = "cancelled"  # voided by merchant or customer before completion

    @property
    def is_final(self) -> bool:
        """Whether the attempt's outcome is decided (a router can learn from it)."""
        return self in _FINAL

    @property
    def is_success(self) -> bool:
        """Whether the attempt counts as a success for a connector's success rate."""
        return self in (PaymentStatus.SUCCEEDED, PaymentStatus.AUTHORIZED)


_FINAL = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.AUTHORIZED, PaymentStatus.FAILED})

# A set test, not a regex: it runs for six fields of every ingested event, and
# frozenset.issuperset over a short string is about five times faster than re.match.
_IDENT_CHARS = frozenset(string.ascii_letters + string.digits + "_.:-")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_FINGERPRINT_CHARS = frozenset(string.ascii_letters + string.digits + "_.:-+/=")
_HEX = frozenset(string.hexdigits.lower())


CARD_NUMBER_REFUSED = "looks like a card number; card numbers are not accepted here"


_Text = TypeVar("_Text", str, str | None)


def refuse_card_number(value: _Text) -> _Text:
    """Validator: refuse a value holding a card number (12-19 Luhn-valid digits, spaces or
    dashes between them) anywhere, without echoing it. For ids, codes and names: a card
    number there would be stored, listed and logged in the clear. ``None`` passes."""
    if value is not None and contains_card_number(value):
        raise ValueError(CARD_NUMBER_REFUSED)
    return value


def _identifier(value: str) -> str:
    if not _IDENT_CHARS.issuperset(value):
        raise ValueError("may contain only letters, digits and _ . : -")
    if contains_card_number(value):  # fewer than 12 digits (nearly all ids): no regex
        raise ValueError(CARD_NUMBER_REFUSED)
    return value


def _lower_token(value: str) -> str:
    return _identifier(value.lower())


Identifier = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_identifier)]
Token = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_lower_token)]

# What no database column can hold (PostgreSQL refuses U+0000 in text and JSON, and text
# that is not UTF-8, as a lone surrogate is not) and no person reads: control characters
# other than tab and line breaks.
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
UNSTORABLE_REFUSED = "must not contain NUL or other control characters, or lone surrogates"


def refuse_unstorable(value: _Text) -> _Text:
    """Validator for free text (names, messages, configuration strings): refuse NUL and
    other control characters (tab, CR and LF pass) and lone surrogates, so that a value
    that passes validation is one every backend stores. ``None`` passes.

    >>> refuse_unstorable("card declined (code 05)")
    'card declined (code 05)'
    >>> refuse_unstorable("a" + chr(0))
    Traceback (most recent call last):
    ...
    ValueError: must not contain NUL or other control characters, or lone surrogates
    """
    if value is not None and _UNSTORABLE.search(value):
        raise ValueError(UNSTORABLE_REFUSED)
    return value


# The largest amount in minor units accepted anywhere (events, routing, decision engine).
MAX_AMOUNT = 10**15

Text = Annotated[str, AfterValidator(refuse_unstorable)]
"""Free text every backend can store; give it a ``Field(max_length=...)`` where it is used."""

_INT64 = 2**63


def unstorable_path(document: Any, path: str = "") -> str | None:
    """The dotted path of the first key or string of a JSON-like document that
    :func:`refuse_unstorable` refuses, or of an integer beyond 64 bits (which neither
    BIGINT columns nor orjson hold); None if there is none.

    >>> unstorable_path({"rules": [{"name": "ok"}, {"name": "a" + chr(0)}]})
    'rules.1.name'
    >>> unstorable_path({"limit": 2**64}) is None
    False
    """
    # Iterative, depth first: a hostile document nested 1,000 deep must not recurse.
    stack: list[tuple[str, Any]] = [(path, document)]
    while stack:
        here, node = stack.pop()
        if isinstance(node, str):
            if _UNSTORABLE.search(node):
                return here
        elif isinstance(node, bool):
            continue
        elif isinstance(node, int):
            if not -_INT64 <= node < _INT64:
                return here
        elif isinstance(node, dict):
            children = []
            for key, value in node.items():
                name = str(key)
                if _UNSTORABLE.search(name):
                    return here  # the key itself is the problem: never quote it
                children.append((f"{here}.{name}" if here else name, value))
            stack.extend(reversed(children))
        elif isinstance(node, list | tuple):
            items = [(f"{here}.{i}" if here else str(i), v) for i, v in enumerate(node)]
            stack.extend(reversed(items))
    return None
    if isinstance(document, int):
        return None if -_INT64 <= document < _INT64 else path
    if isinstance(document, dict):
        for key, value in document.items():
            name = str(key)
            here = f"{path}.{name}" if path else name
            if _UNSTORABLE.search(name):
                return path  # the key itself is the problem: never quote it
            found = unstorable_path(value, here)
            if found is not None:
                return found
    elif isinstance(document, list | tuple):
        for i, value in enumerate(document):
            found = unstorable_path(value, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


class PaymentEvent(BaseModel):
    """One payment attempt's outcome at one connector (the canonical event).

    Attributes:
        event_id: Unique id of this event; ingestion is idempotent on it.
        payment_id: The payment this attempt belongs to (several attempts share it).
        attempt: 1 for the first attempt, 2 for the first retry, ...
        merchant_id: The merchant; merchant-scoped API keys see only their own events.
        profile_id: Hyperswitch business profile, if any.
        connector: The processor that handled the attempt (``stripe``, ``adyen``, ...).
        status: The outcome; see :class:`PaymentStatus`.
        amount: Amount in minor units of ``currency``.
        currency: ISO 4217 code, upper case.
        payment_method: ``card``, ``wallet``, ``bank_transfer``, ... (lower case).
        payment_method_type: ``credit``, ``debit``, ``apple_pay``, ... (lower case).
        card_network: ``visa``, ``mastercard``, ... (lower case), for cards.
        issuer_country: ISO 3166-1 alpha-2 country of the card issuer.
        latency_ms: Time the connector took to answer, in milliseconds.
        error_code: The connector's or switch's decline/error code, for failures.
        error_message: Human-readable failure reason.
        fingerprint: A hash of the customer or card (never a card number: refused).
        decision_id: The APOS routing decision this attempt followed, if any.
        occurred_at: When the attempt completed (event time, timezone-aware).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    event_id: Identifier
    payment_id: Identifier
    attempt: int = Field(default=1, ge=1, le=100)
    merchant_id: Identifier
    profile_id: Identifier | None = None
    connector: Token
    status: PaymentStatus
    amount: int = Field(ge=0, le=MAX_AMOUNT)
    currency: str = Field(min_length=3, max_length=3)
    payment_method: Token = "card"
    payment_method_type: Token | None = None
    card_network: Token | None = None
    issuer_country: str | None = Field(default=None, min_length=2, max_length=2)
    latency_ms: float | None = Field(default=None, ge=0, le=3_600_000)
    error_code: str | None = Field(default=None, max_length=128)
    error_message: str | None = Field(default=None, max_length=1024)
    fingerprint: str | None = Field(default=None, min_length=8, max_length=128)
    decision_id: Identifier | None = None
    occurred_at: datetime

    @field_validator("attempt", "amount", "latency_ms", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # pydantic reads true as 1; an amount of "true" is a bug upstream, not one cent.
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value

    @field_validator("currency", mode="after")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        code = value.upper()
        if code not in CURRENCIES:
            raise ValueError("unknown ISO 4217 currency code")
        return code

    @field_validator("issuer_country", mode="after")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        code = value.upper()
        if code not in COUNTRIES:
            raise ValueError("unknown ISO 3166-1 alpha-2 country code")
        return code

    @field_validator("error_code", "error_message", "fingerprint", mode="after")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # PostgreSQL text cannot hold U+0000: refused here, not as a failed batch later.
        return refuse_unstorable(value)

    @field_validator("error_code", mode="after")
    @classmethod
    def _code_without_card_number(cls, value: str | None) -> str | None:
        # A code is kept and grouped on as is; unlike a message it is not worth masking.
        return refuse_card_number(value)

    @field_validator("error_message", mode="after")
    @classmethod
    def _no_card_numbers(cls, value: str | None) -> str | None:
        # Connectors sometimes quote the card in a decline message; it is kept masked. A mask
        # can be longer than the number it hides: cut back to the column's 1,024.
        return None if value is None else redact_card_numbers(value)[:1024]

    @field_validator("fingerprint", mode="after")
    @classmethod
    def _hashed_not_raw(cls, value: str | None) -> str | None:
        # The value is deliberately not echoed: it may be a real card number or address.
        if value is None:
            return None
        if looks_like_card_number(value):
            raise ValueError("looks like a raw card number; send a hash of it instead")
        if "@" in value and _EMAIL.fullmatch(value):
            raise ValueError("looks like a raw e-mail address; send a hash of it instead")
        # A hash is hex or base64: anything else (spaces, "@", markup) is not one, and a
        # fingerprint travels into fraud incidents, logs and alerts.
        if not _FINGERPRINT_CHARS.issuperset(value):
            raise ValueError("may contain only letters, digits and _ . : - + / = (a hash)")
        # A card number inside a value that is not a plain hex hash ("card:4111..."); a hex
        # digest is exempt, since one in a hundred holds a Luhn-valid run of digits.
        if not _HEX.issuperset(value.lower()) and contains_card_number(value):
            raise ValueError("holds a raw card number; send a hash of it instead")
        return value

    @field_validator("occurred_at", mode="after")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a timezone (e.g. 2026-11-25T10:00:00Z) or epoch seconds")
        return value.astimezone(UTC)

    @property
    def occurred_ts(self) -> float:
        """``occurred_at`` as epoch seconds, the unit of ``now`` throughout the core."""
        return self.occurred_at.timestamp()


class FieldError(BaseModel):
    """One thing wrong with an input: where (dotted path) and what."""

    model_config = ConfigDict(frozen=True)

    field: str
    message: str


class EventValidationError(ValueError):
    """Raised by :func:`parse_event`; ``errors`` names every wrong field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Turn pydantic's errors into :class:`FieldError` s without echoing input values.

    Input values are dropped on purpose: a rejected field may hold card data or secrets.
    Card numbers are masked in what is left: an unknown field's name is the sender's input.
    """
    out: list[FieldError] = []
    for err in exc.errors(include_input=False, include_url=False):
        path = redact_card_numbers(".".join(str(p) for p in err["loc"]))
        field = f"{prefix}{path}" if path else prefix.rstrip(".")
        out.append(FieldError(field=field, message=redact_card_numbers(err["msg"])))
    return out


def parse_event(payload: Any) -> PaymentEvent:
    """Validate an untrusted mapping into a :class:`PaymentEvent`.

    Raises:
        EventValidationError: naming each wrong or missing field.

    >>> e = parse_event({"event_id": "evt_1", "payment_id": "pay_1", "merchant_id": "m1",
    ...     "connector": "Stripe", "status": "succeeded", "amount": 1999, "currency": "usd",
    ...     "occurred_at": "2026-11-25T10:00:00Z"})
    >>> e.connector, e.currency, e.occurred_ts
    ('stripe', 'USD', 1795600800.0)
    >>> try:
    ...     parse_event({"event_id": "evt_2", "amount": -5})
    ... except EventValidationError as exc:
    ...     print(exc.errors[0].message, [e.field for e in exc.errors][:4])
    Field required ['payment_id', 'merchant_id', 'connector', 'status']
    """
    if not isinstance(payload, dict):
        raise EventValidationError(
            [FieldError(field="", message=f"expected a JSON object, got {type(payload).__name__}")]
        )
    try:
        return PaymentEvent.model_validate(payload)
    except ValidationError as exc:
        raise EventValidationError(field_errors(exc)) from None  # the cause echoes input


# -- trusted round trip --------------------------------------------------------------------

_FIELD_NAMES = frozenset(PaymentEvent.model_fields)


def _refuse(value: object) -> None:
    raise TypeError(f"cannot serialise {type(value).__name__} in a payment event")


def events_to_json(events: Sequence[PaymentEvent]) -> bytes:
    """Validated events as one JSON array, for :func:`events_from_json` on another instance.

    About 1 µs an event (``model_dump`` + a dump per event costs ~13): a frozen pydantic
    model keeps its validated fields in ``__dict__``, which orjson writes directly (enums as
    their value, datetimes as RFC 3339).
    """
    return orjson.dumps([event.__dict__ for event in events], default=_refuse)


def events_from_json(document: bytes | str) -> list[PaymentEvent]:
    """Rebuild the events of an :func:`events_to_json` document without validating again.

    Only for documents APOS wrote itself (the shared stream of applied events): their
    content was validated at ingestion. Rebuilding costs ~4 µs an event instead of ~14 for
    ``model_validate_json``; the shortcut sets the four attributes pydantic's own
    ``model_construct`` sets (which costs ~12 µs: it walks every field's defaults), with every
    field marked as set, as validating the full object would. An object
    whose keys are not exactly the model's fields (another APOS version wrote it) is
    validated normally.

    Raises:
        ValueError: the document is not a JSON array of objects, or one of them does not
            validate.
    """
    decoded = orjson.loads(document)
    if not isinstance(decoded, list):
        raise ValueError("expected a JSON array of payment events")
    new = object.__new__
    set_attr = object.__setattr__
    out: list[PaymentEvent] = []
    for data in decoded:
        if not isinstance(data, dict) or data.keys() != _FIELD_NAMES:
            out.append(PaymentEvent.model_validate(data))
            continue
        data["status"] = PaymentStatus(data["status"])
        data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
        event = new(PaymentEvent)
        set_attr(event, "__dict__", data)
        set_attr(event, "__pydantic_fields_set__", set(_FIELD_NAMES))
        set_attr(event, "__pydantic_extra__", None)
        set_attr(event, "__pydantic_private__", None)
        out.append(event)
    return out
