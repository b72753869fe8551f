"""Hyperswitch outgoing webhooks: verify the signature, map payment outcomes onto PaymentEvent.

Hyperswitch POSTs one JSON ``OutgoingWebhook`` per event to the URL configured on a business
profile. This module accepts that body exactly as sent, checks its signature and turns payment
outcomes into the canonical :class:`~apos.core.events.PaymentEvent`; everything else (refunds,
disputes, mandates, payouts, subscriptions) maps to ``None`` so the caller can acknowledge it
and move on (Hyperswitch retries any non-2xx answer for about 24 hours).

Sources (repository ``juspay/hyperswitch``; field names, nesting and enum casing come from the
serde attributes there, not from guesses):

* Signing: ``crates/router/src/core/webhooks/types.rs``
  (``OutgoingWebhookType::get_outgoing_webhooks_signature``): the webhook is serialised once
  with ``serde_json`` (compact), that exact string is both the request body
  (``crates/router/src/core/webhooks/outgoing.rs``, ``get_outgoing_webhook_request``: ``body:
  outgoing_webhooks_signature.payload``) and the signed message. Signature =
  ``hex::encode(HMAC-SHA512(key = profile.payment_response_hash_key as UTF-8 bytes,
  msg = body))`` (``common_utils::crypto::HmacSha512`` over ``ring::hmac::HMAC_SHA512``), i.e.
  128 lower-case hex characters, sent in header ``X-Webhook-Signature-512``
  (``headers::X_WEBHOOK_SIGNATURE`` in ``crates/router/src/lib.rs``). No signature header is
  sent when the profile has no hash key. Merchants whose account is "Stripe-compatible" get
  Stripe-shaped webhooks with a ``Stripe-Signature`` header instead; those are not handled here.
* Envelope: ``crates/api_models/src/webhooks.rs``: ``OutgoingWebhook {merchant_id, event_id,
  event_type, content, timestamp, processor_merchant_id}``; ``content`` is
  ``#[serde(tag = "type", content = "object", rename_all = "snake_case")]``, so it is
  ``{"type": "payment_details" | "refund_details" | "dispute_details" | "mandate_details" |
  "payout_details" | "subscription_details", "object": {...}}``. ``timestamp`` uses
  ``common_utils::custom_serde::iso8601`` (``crates/common_utils/src/custom_serde.rs``): UTC,
  millisecond precision, ``Z`` suffix, e.g. ``2025-04-28T17:54:09.335Z``.
* ``event_type``: ``EventType`` in ``crates/common_enums/src/enums.rs`` (snake_case):
  payment_succeeded, payment_failed, payment_processing, payment_cancelled,
  payment_cancelled_post_capture, payment_authorized, payment_partially_authorized,
  payment_captured, payment_expired, action_required, refund_*, dispute_*, mandate_*,
  payout_*, invoice_paid.
* Payment object: v1 ``PaymentsResponse`` in ``crates/api_models/src/payments.rs``: fields used
  here are ``payment_id``, ``merchant_id``, ``status`` (``IntentStatus``, snake_case),
  ``amount`` (``MinorUnit``, an integer in minor units), ``currency`` (ISO 4217 string),
  ``connector`` (lower-case connector name, nullable), ``customer_id`` / ``customer.id``,
  ``payment_method`` / ``payment_method_type`` (snake_case enums), ``payment_method_data``
  (``PaymentMethodDataResponseWithBilling``: an externally tagged, flattened enum, e.g.
  ``{"card": CardResponse, "billing": ...}`` or ``{"wallet": {"apple_pay": {...}}, ...}``, or
  the bare string ``"reward"``), ``error_code`` / ``error_message`` (then ``unified_code`` /
  ``unified_message``), ``attempt_count`` (and ``attempts``, only present when expanded),
  ``profile_id``, ``fingerprint``, ``created``, ``modified_at``, ``updated``.
  ``CardResponse.card_network`` is the ``CardNetwork`` enum serialised by variant name
  (``Visa``, ``Mastercard``, ``AmericanExpress``, ``JCB``, ``DinersClub``, ``Discover``,
  ``CartesBancaires``, ``UnionPay``, ``Interac``, ``RuPay``, ``Maestro``, ``Star``, ``Pulse``,
  ``Accel``, ``Nyce``); ``card_issuing_country`` is free text from the BIN table (seen as
  ``"UNITED STATES"``, sometimes an alpha-2 code). Wallet card networks
  (``WalletAdditionalDataForCard.card_network``) are whatever the wallet reported (``Visa``,
  ``VISA``, ``MasterCard``, ``AmEx``...).

Choices made where Hyperswitch does not say (see also :data:`INTENT_STATUS_MAP`):

* The intent ``status`` decides the outcome; ``event_type`` only decides whether the webhook is
  a payment outcome at all (Hyperswitch derives ``event_type`` from that same status).
* ``latency_ms`` is always ``None``: ``PaymentsResponse`` carries no connector latency, and the
  attempt's ``created_at``..``modified_at`` span includes customer time (3DS, redirects).
* ``fingerprint`` is ``sha256("hyperswitch:customer:<merchant_id>:<customer_id>")`` (hex) when
  there is a customer id, else ``sha256("hyperswitch:card:<merchant_id>:<fingerprint>")`` from
  Hyperswitch's card fingerprint, else ``None``. Namespacing by merchant stops two merchants'
  ``cus_1`` from looking like one person; the raw ids never reach the event.
* ``occurred_at`` is the webhook ``timestamp`` (else the payment's ``modified_at``, ``updated``,
  ``created``), capped at ``received_at``: an outcome cannot happen after we heard of it.
* A webhook whose ``connector`` is null while the payment never reached one (cancelled or
  expired before confirmation, still awaiting a payment method or confirmation) is not an
  attempt outcome and maps to ``None``; a null connector on any other status is an error.
* Enrichment fields (card network, issuer country, payment method type) are normalised or
  dropped, never fatal; identity and outcome fields (ids, connector, status, amount, currency,
  time) are validated and an error names the field by its Hyperswitch path.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson
from pydantic import ValidationError

from apos.core.events import (
    EventValidationError,
    FieldError,
    PaymentEvent,
    PaymentStatus,
    field_errors,
)
from apos.core.iso import COUNTRIES, contains_card_number

__all__ = [
    "CUSTOMER_DATA_KEYS",
    "INTENT_STATUS_MAP",
    "NON_PAYMENT_CONTENT_TYPES",
    "PAYMENT_EVENT_TYPES",
    "SIGNATURE_HEADER",
    "InvalidSignatureError",
    "MissingSignatureError",
    "WebhookSignatureError",
    "check_signature",
    "parse_webhook_body",
    "scrub_customer_data",
    "scrub_customer_text",
    "sign_body",
    "verify_signature",
    "webhook_to_event",
]

# ----------------------------------------------------------------------------- signature

SIGNATURE_HEADER: Final = "X-Webhook-Signature-512"
_SIGNATURE_HEX = re.compile(r"^[0-9a-f]{128}$")


class WebhookSignatureError(Exception):
    """The webhook's signature is missing or does not match the body (answer 401)."""

    def __init__(self, reason: Literal["missing", "invalid"], message: str) -> None:
        self.reason = reason
        super().__init__(message)


class MissingSignatureError(WebhookSignatureError):
    """No ``X-Webhook-Signature-512`` header (or an empty one)."""

    def __init__(self) -> None:
        super().__init__("missing", f"the {SIGNATURE_HEADER} header is missing")


class InvalidSignatureError(WebhookSignatureError):
    """A signature header that is malformed or does not match the body."""

    def __init__(self) -> None:
        super().__init__("invalid", f"the {SIGNATURE_HEADER} header does not match the body")


def sign_body(body: bytes, secret: str) -> str:
    """The signature Hyperswitch sends for ``body``: hex HMAC-SHA512 keyed by ``secret``.

    >>> sign_body(b'{"event_id":"evt_1"}', "hash_key")[:16]
    'de822e32c22479d6'
    """
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha512).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def check_signature(body: bytes, headers: Mapping[str, str], secret: str) -> None:
    """Raise unless ``headers`` carry the right signature for the raw ``body``.

    ``body`` must be the bytes exactly as received: the signature covers Hyperswitch's own
    serialisation, which re-encoding parsed JSON would not reproduce. The header name is
    matched case-insensitively; the hex digest is compared in constant time (either case).

    Raises:
        MissingSignatureError: no signature header.
        InvalidSignatureError: a signature that is malformed or wrong.
        ValueError: ``secret`` is empty (a configuration error, not the sender's).
    """
    if not secret:
        raise ValueError("no webhook secret configured: cannot verify signatures")
    provided = _header(headers, SIGNATURE_HEADER)
    if provided is None or not provided.strip():
        raise MissingSignatureError()
    candidate = provided.strip().lower()
    if not _SIGNATURE_HEX.match(candidate):
        raise InvalidSignatureError()
    expected = sign_body(body, secret)
    if not hmac.compare_digest(expected.encode("ascii"), candidate.encode("ascii")):
        raise InvalidSignatureError()


def verify_signature(body: bytes, headers: Mapping[str, str], secret: str) -> bool:
    """Whether ``headers`` carry a valid ``X-Webhook-Signature-512`` for the raw ``body``.

    Fails closed: an empty ``secret`` verifies nothing. See :func:`check_signature` for the
    variant that says why a signature was refused.

    >>> body = b'{"event_id":"evt_1"}'
    >>> verify_signature(body, {"x-webhook-signature-512": sign_body(body, "k")}, "k")
    True
    >>> verify_signature(body, {}, "k")
    False
    """
    if not secret:
        return False
    try:
        check_signature(body, headers, secret)
    except WebhookSignatureError:
        return False
    return True


def parse_webhook_body(body: bytes) -> dict[str, Any]:
    """Decode a webhook body into a JSON object, or raise :class:`EventValidationError`."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventValidationError([FieldError(field="", message=f"invalid JSON: {exc}")]) from None
    if not isinstance(payload, dict):
        raise EventValidationError(
            [FieldError(field="", message=f"expected a JSON object, got {_json_type(payload)}")]
        )
    return payload


# ----------------------------------------------------------------------------- event types

# EventClass::Payments in crates/common_enums/src/enums.rs (plus payment_partially_authorized,
# an EventType variant not listed in that class).
PAYMENT_EVENT_TYPES: Final = frozenset(
    {
        "payment_succeeded",
        "payment_failed",
        "payment_processing",
        "payment_cancelled",
        "payment_cancelled_post_capture",
        "payment_authorized",
        "payment_partially_authorized",
        "payment_captured",
        "payment_expired",
        "action_required",
    }
)

# OutgoingWebhookContent variants that are not payments: acknowledged and ignored.
NON_PAYMENT_CONTENT_TYPES: Final = frozenset(
    {
        "refund_details",
        "dispute_details",
        "mandate_details",
        "payout_details",
        "subscription_details",
    }
)

_PAYMENT_CONTENT_TYPE: Final = "payment_details"

# Every IntentStatus (crates/common_enums/src/enums.rs, checked against juspay/hyperswitch at
# commit 00022b55b563; 16 variants) -> the canonical outcome. The webhook's ``status`` is
# the intent's; AttemptStatus (28 variants, only inside the ``attempts`` list, sent when
# expanded) is not read. The rule: money captured, in full or in part, is SUCCEEDED, as
# Hyperswitch's own ``AttemptStatus::is_success`` counts ``Charged`` and ``PartialCharged``;
# approved and not captured is AUTHORIZED; a decline is FAILED; an act of the merchant or
# customer after the connector answered is CANCELLED; the rest is not decided yet.
INTENT_STATUS_MAP: Final[Mapping[str, PaymentStatus]] = {
    "succeeded": PaymentStatus.SUCCEEDED,
    # Captured in part. Final (``IntentStatus::is_in_terminal_state``): the rest was
    # released. Not "authorized": the money moved, and the connector's answer was yes.
    "partially_captured": PaymentStatus.SUCCEEDED,
    # Captured in part, more may be captured later, or is still processing: money moved
    # already, so the attempt succeeded; later webhooks of the same attempt are learnt once
    # (per payment, attempt and connector).
    "partially_captured_and_capturable": PaymentStatus.SUCCEEDED,
    "partially_captured_and_processing": PaymentStatus.SUCCEEDED,
    # Approved, nothing captured yet (manual capture); approved for part of the amount
    # (AttemptStatus ``partially_authorized``): the issuer said yes, which routing learns.
    "requires_capture": PaymentStatus.AUTHORIZED,
    "partially_authorized_and_requires_capture": PaymentStatus.AUTHORIZED,
    "failed": PaymentStatus.FAILED,
    "cancelled": PaymentStatus.CANCELLED,
    # Voided after capture: the merchant's act, after the capture's own webhook reported
    # the success; not a second outcome of the connector.
    "cancelled_post_capture": PaymentStatus.CANCELLED,
    "expired": PaymentStatus.CANCELLED,  # authorisation lapsed before capture: not a decline
    "processing": PaymentStatus.PENDING,
    "requires_merchant_action": PaymentStatus.PENDING,  # e.g. manual fraud review
    "conflicted": PaymentStatus.PENDING,  # amount/currency mismatch at the processor
    "requires_payment_method": PaymentStatus.PENDING,
    "requires_confirmation": PaymentStatus.PENDING,
    "requires_customer_action": PaymentStatus.REQUIRES_ACTION,  # 3DS, redirect, QR...
}

# Statuses at which a payment may never have reached a connector.
_NO_ATTEMPT_STATUSES: Final = frozenset(
    {"cancelled", "expired", "requires_payment_method", "requires_confirmation"}
)

# ----------------------------------------------------------------------------- normalisers

_TOKEN = re.compile(r"^[a-z0-9_.:\-]{1,64}$")

# Compact (letters and digits only, upper case) network names -> APOS network tokens.
_CARD_NETWORKS: Final[Mapping[str, str]] = {
    "VISA": "visa",
    "MASTERCARD": "mastercard",
    "MC": "mastercard",
    "AMERICANEXPRESS": "amex",
    "AMEX": "amex",
    "DISCOVER": "discover",
    "JCB": "jcb",
    "DINERSCLUB": "diners",
    "DINERS": "diners",
    "CARTESBANCAIRES": "cartes_bancaires",
    "CB": "cartes_bancaires",
    "UNIONPAY": "unionpay",
    "CHINAUNIONPAY": "unionpay",
    "INTERAC": "interac",
    "RUPAY": "rupay",
    "MAESTRO": "maestro",
    "STAR": "star",
    "PULSE": "pulse",
    "ACCEL": "accel",
    "NYCE": "nyce",
    "ELO": "elo",
    "MIR": "mir",
    "EFTPOS": "eftpos",
}

# Country names as card BIN tables spell them (compacted: letters only, upper case), and
# alpha-3 codes, -> ISO 3166-1 alpha-2. Covers the issuing countries that matter in volume;
# anything else maps to None rather than to a guess.
_COUNTRY_ALIASES: Final[Mapping[str, str]] = {
    "UK": "GB",
    "UNITEDSTATES": "US", "UNITEDSTATESOFAMERICA": "US", "USA": "US", "AMERICA": "US",
    "UNITEDKINGDOM": "GB", "GREATBRITAIN": "GB", "GBR": "GB", "ENGLAND": "GB",
    "UNITEDKINGDOMOFGREATBRITAINANDNORTHERNIRELAND": "GB",
    "CANADA": "CA", "CAN": "CA", "MEXICO": "MX", "MEX": "MX", "BRAZIL": "BR", "BRA": "BR",
    "ARGENTINA": "AR", "ARG": "AR", "CHILE": "CL", "CHL": "CL", "COLOMBIA": "CO", "COL": "CO",
    "PERU": "PE", "PER": "PE", "INDIA": "IN", "IND": "IN", "CHINA": "CN", "CHN": "CN",
    "JAPAN": "JP", "JPN": "JP", "KOREA": "KR", "SOUTHKOREA": "KR", "KOREAREPUBLICOF": "KR",
    "REPUBLICOFKOREA": "KR", "KOR": "KR", "SINGAPORE": "SG", "SGP": "SG",
    "HONGKONG": "HK", "HKG": "HK", "TAIWAN": "TW", "TAIWANPROVINCEOFCHINA": "TW", "TWN": "TW",
    "MALAYSIA": "MY", "MYS": "MY", "INDONESIA": "ID", "IDN": "ID", "THAILAND": "TH",
    "THA": "TH", "PHILIPPINES": "PH", "PHL": "PH", "VIETNAM": "VN", "VNM": "VN",
    "AUSTRALIA": "AU", "AUS": "AU", "NEWZEALAND": "NZ", "NZL": "NZ",
    "GERMANY": "DE", "DEU": "DE", "FRANCE": "FR", "FRA": "FR", "SPAIN": "ES", "ESP": "ES",
    "ITALY": "IT", "ITA": "IT", "NETHERLANDS": "NL", "THENETHERLANDS": "NL", "NLD": "NL",
    "BELGIUM": "BE", "BEL": "BE", "SWITZERLAND": "CH", "CHE": "CH", "AUSTRIA": "AT",
    "AUT": "AT", "IRELAND": "IE", "IRL": "IE", "PORTUGAL": "PT", "PRT": "PT",
    "SWEDEN": "SE", "SWE": "SE", "NORWAY": "NO", "NOR": "NO", "DENMARK": "DK", "DNK": "DK",
    "FINLAND": "FI", "FIN": "FI", "POLAND": "PL", "POL": "PL", "CZECHREPUBLIC": "CZ",
    "CZECHIA": "CZ", "CZE": "CZ", "HUNGARY": "HU", "HUN": "HU", "ROMANIA": "RO", "ROU": "RO",
    "GREECE": "GR", "GRC": "GR", "LUXEMBOURG": "LU", "LUX": "LU", "TURKEY": "TR",
    "TURKIYE": "TR", "TUR": "TR", "RUSSIA": "RU", "RUSSIANFEDERATION": "RU", "RUS": "RU",
    "UKRAINE": "UA", "UKR": "UA", "ISRAEL": "IL", "ISR": "IL",
    "UNITEDARABEMIRATES": "AE", "ARE": "AE", "SAUDIARABIA": "SA", "SAU": "SA",
    "QATAR": "QA", "QAT": "QA", "KUWAIT": "KW", "KWT": "KW", "BAHRAIN": "BH", "BHR": "BH",
    "OMAN": "OM", "OMN": "OM", "EGYPT": "EG", "EGY": "EG", "SOUTHAFRICA": "ZA", "ZAF": "ZA",
    "NIGERIA": "NG", "NGA": "NG", "KENYA": "KE", "KEN": "KE", "MOROCCO": "MA", "MAR": "MA",
    "PAKISTAN": "PK", "PAK": "PK", "BANGLADESH": "BD", "BGD": "BD", "SRILANKA": "LK",
    "LKA": "LK", "NEPAL": "NP", "NPL": "NP",
}  # fmt: skip


def _compact(text: str) -> str:
    """Upper-case letters and digits only, accents removed: 'Côte d'Ivoire' -> 'COTEDIVOIRE'."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Z0-9]", "", plain.upper())


def _card_network(raw: object) -> str | None:
    if not isinstance(raw, str) or not raw.strip():
        return None
    if contains_card_number(raw):
        return raw  # refused by PaymentEvent, naming the field: not turned into 4111_1111_...
    compact = _compact(raw)
    if compact in _CARD_NETWORKS:
        return _CARD_NETWORKS[compact]
    # An unlisted network: keep it as a snake_case token (CamelCase -> camel_case).
    token = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", raw.strip())
    token = re.sub(r"[^a-z0-9]+", "_", token.lower()).strip("_")
    return token if _TOKEN.match(token) else None


def _country(raw: object) -> str | None:
    if not isinstance(raw, str) or not raw.strip():
        return None
    compact = _compact(raw)
    if len(compact) == 2 and compact in COUNTRIES:
        return compact
    return _COUNTRY_ALIASES.get(compact)


def _token(raw: object) -> str | None:
    if not isinstance(raw, str):
        return None
    value = raw.strip().lower()
    return value if _TOKEN.match(value) else None


def _hash(kind: str, merchant_id: str, value: str) -> str:
    return hashlib.sha256(f"hyperswitch:{kind}:{merchant_id}:{value}".encode()).hexdigest()


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _clip(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return value if len(value) <= limit else value[: limit - 1] + "\u2026"


# ----------------------------------------------------------------------------- reading

_OBJ: Final = "content.object"


class _Reader:
    """Reads typed fields from untrusted JSON, recording each problem under its path."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(field=path, message=message))

    def raise_if_failed(self) -> None:
        if self.errors:
            raise EventValidationError(self.errors)

    def obj(self, data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
        value = data.get(key)
        if value is None:
            self.fail(path, "Field required")
            return None
        if not isinstance(value, dict):
            self.fail(path, f"expected an object, got {_json_type(value)}")
            return None
        return value

    def string(self, data: Mapping[str, Any], key: str, path: str, *, required: bool) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(path, "Field required")
            return None
        if not isinstance(value, str):
            self.fail(path, f"expected a string, got {_json_type(value)}")
            return None
        value = value.strip()
        if not value:
            if required:
                self.fail(path, "must not be empty")
            return None
        return value

    def integer(self, data: Mapping[str, Any], key: str, path: str) -> int | None:
        value = data.get(key)
        if value is None:
            self.fail(path, "Field required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected an integer (minor units), got {_json_type(value)}")
            return None
        return value

    def timestamp(self, data: Mapping[str, Any], key: str, path: str) -> datetime | None:
        """An ISO 8601 time; ``None`` if absent. Times without an offset are UTC, as
        Hyperswitch's ``PrimitiveDateTime`` values are."""
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(path, f"expected an ISO 8601 timestamp string, got {_json_type(value)}")
            return None
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            self.fail(path, "not an ISO 8601 timestamp (e.g. 2025-04-28T17:54:09.335Z)")
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)


def _attempt(reader: _Reader, obj: Mapping[str, Any]) -> tuple[int, str]:
    """The attempt number and the path it came from: attempt_count, else len(attempts), else 1."""
    count = obj.get("attempt_count")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int):
            reader.fail(f"{_OBJ}.attempt_count", f"expected an integer, got {_json_type(count)}")
            return 1, f"{_OBJ}.attempt_count"
        if count >= 1:
            return count, f"{_OBJ}.attempt_count"
    attempts = obj.get("attempts")
    if isinstance(attempts, list) and attempts:
        return len(attempts), f"{_OBJ}.attempts"
    return 1, f"{_OBJ}.attempt_count"


def _payment_method_data(
    obj: Mapping[str, Any],
) -> tuple[str | None, Mapping[str, Any] | None, str | None]:
    """From ``payment_method_data``: (its variant name, the card-like details, their path).

    Cards carry ``card``; wallets paid with a card carry ``wallet.<apple_pay|google_pay|
    samsung_pay>`` with the same ``card_network`` key. ``reward`` is sent as a bare string.
    """
    pmd = obj.get("payment_method_data")
    base = f"{_OBJ}.payment_method_data"
    if isinstance(pmd, str):
        return _token(pmd), None, None
    if not isinstance(pmd, dict):
        return None, None, None
    variant = next((k for k in pmd if k != "billing" and isinstance(pmd[k], dict)), None)
    card = pmd.get("card")
    if isinstance(card, dict):
        return "card", card, f"{base}.card"
    wallet = pmd.get("wallet")
    if isinstance(wallet, dict):
        for name, details in wallet.items():
            if isinstance(details, dict):
                return "wallet", details, f"{base}.wallet.{name}"
    return (_token(variant) if variant else None), None, None


# ----------------------------------------------------------------------------- mapping


def webhook_to_event(payload: Mapping[str, Any], *, received_at: datetime) -> PaymentEvent | None:
    """Map one Hyperswitch ``OutgoingWebhook`` onto a :class:`PaymentEvent`.

    Args:
        payload: The decoded webhook body (verify the raw body's signature first).
        received_at: When APOS received it (timezone-aware); caps ``occurred_at``.

    Returns:
        The event, or ``None`` for webhooks that are not payment attempt outcomes (refunds,
        disputes, mandates, payouts, subscriptions, payments that never reached a connector):
        acknowledge those and ignore them.

    Raises:
        EventValidationError: the webhook is malformed or incomplete; each error names the
            field by its path in the Hyperswitch payload (``content.object.currency``...).
        ValueError: ``received_at`` is naive.
    """
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    if not isinstance(payload, Mapping):
        raise EventValidationError(
            [FieldError(field="", message=f"expected a JSON object, got {_json_type(payload)}")]
        )
    reader = _Reader()

    # 1. What kind of webhook is this?
    event_type = reader.string(payload, "event_type", "event_type", required=True)
    content = reader.obj(payload, "content", "content")
    content_type = (
        reader.string(content, "type", "content.type", required=True) if content else None
    )
    reader.raise_if_failed()
    assert content is not None
    assert event_type is not None
    if content_type != _PAYMENT_CONTENT_TYPE:
        if event_type in PAYMENT_EVENT_TYPES:
            reader.fail("content.type", f"expected {_PAYMENT_CONTENT_TYPE!r} for {event_type}")
            reader.raise_if_failed()
        return None  # refunds, disputes, mandates, payouts, subscriptions, anything new

    obj = reader.obj(content, "object", _OBJ)
    reader.raise_if_failed()
    assert obj is not None

    # 2. The outcome, and whether there was an attempt at a connector at all.
    raw_status = reader.string(obj, "status", f"{_OBJ}.status", required=True)
    status: PaymentStatus | None = None
    if raw_status is not None:
        status = INTENT_STATUS_MAP.get(raw_status.lower())
        if status is None:
            reader.fail(
                f"{_OBJ}.status",
                "unknown Hyperswitch IntentStatus; expected one of "
                + ", ".join(sorted(INTENT_STATUS_MAP)),
            )
    connector = reader.string(obj, "connector", f"{_OBJ}.connector", required=False)
    if connector is None and raw_status is not None:
        if raw_status.lower() in _NO_ATTEMPT_STATUSES:
            return None  # never reached a connector: no attempt outcome to learn from
        if f"{_OBJ}.connector" not in {e.field for e in reader.errors}:
            reader.fail(f"{_OBJ}.connector", "Field required: no connector handled the attempt")

    # 3. Identity, money and time.
    event_id = reader.string(payload, "event_id", "event_id", required=True)
    payment_id = reader.string(obj, "payment_id", f"{_OBJ}.payment_id", required=True)
    merchant_path = f"{_OBJ}.merchant_id"
    merchant_id = reader.string(obj, "merchant_id", merchant_path, required=False)
    if merchant_id is None:
        merchant_path = "merchant_id"
        merchant_id = reader.string(payload, "merchant_id", merchant_path, required=False)
    if merchant_id is None and f"{_OBJ}.merchant_id" not in {e.field for e in reader.errors}:
        reader.fail(f"{_OBJ}.merchant_id", "Field required")
    amount = reader.integer(obj, "amount", f"{_OBJ}.amount")
    currency = reader.string(obj, "currency", f"{_OBJ}.currency", required=True)
    profile_id = reader.string(obj, "profile_id", f"{_OBJ}.profile_id", required=False)

    occurred_at: datetime | None = None
    time_path = "timestamp"
    for holder, key, path in (
        (payload, "timestamp", "timestamp"),
        (obj, "modified_at", f"{_OBJ}.modified_at"),
        (obj, "updated", f"{_OBJ}.updated"),
        (obj, "created", f"{_OBJ}.created"),
    ):
        if holder.get(key) is not None:
            occurred_at, time_path = reader.timestamp(holder, key, path), path
            break
    else:
        reader.fail("timestamp", "Field required")
    attempt, attempt_path = _attempt(reader, obj)
    reader.raise_if_failed()
    assert status is not None
    assert connector is not None
    assert merchant_id is not None
    assert occurred_at is not None

    # 4. Enrichment: normalised where recognisable, otherwise left out.
    variant, card, card_path = _payment_method_data(obj)
    payment_method = _token(obj.get("payment_method")) or variant or "unknown"
    card_network = _card_network(card.get("card_network")) if card else None
    issuer_country = _country(card.get("card_issuing_country")) if card else None

    # Decline details belong to failures only; the connector's own code first, Hyperswitch's
    # unified one otherwise. A malformed description is not worth losing the outcome over.
    error_code: str | None = None
    error_message: str | None = None
    if status is PaymentStatus.FAILED:
        lenient = _Reader()
        error_code = lenient.string(obj, "error_code", "", required=False) or lenient.string(
            obj, "unified_code", "", required=False
        )
        error_message = lenient.string(obj, "error_message", "", required=False) or (
            lenient.string(obj, "unified_message", "", required=False)
        )

    customer = obj.get("customer")
    customer_id = obj.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id.strip():
        customer_id = customer.get("id") if isinstance(customer, dict) else None
    card_fingerprint = obj.get("fingerprint")
    fingerprint: str | None = None
    if isinstance(customer_id, str) and customer_id.strip():
        fingerprint = _hash("customer", merchant_id, customer_id.strip())
    elif isinstance(card_fingerprint, str) and card_fingerprint.strip():
        fingerprint = _hash("card", merchant_id, card_fingerprint.strip())

    fields: dict[str, Any] = {
        "event_id": event_id,
        "payment_id": payment_id,
        "attempt": attempt,
        "merchant_id": merchant_id,
        "profile_id": profile_id,
        "connector": connector.lower(),
        "status": status,
        "amount": amount,
        "currency": currency,
        "payment_method": payment_method,
        "payment_method_type": _token(obj.get("payment_method_type")),
        "card_network": card_network,
        "issuer_country": issuer_country,
        "latency_ms": None,
        "error_code": _clip(error_code, 128),
        "error_message": _clip(error_message, 1024),
        "fingerprint": fingerprint,
        "occurred_at": min(occurred_at, received_at.astimezone(UTC)),
    }
    sources = {
        "event_id": "event_id",
        "payment_id": f"{_OBJ}.payment_id",
        "attempt": attempt_path,
        "merchant_id": merchant_path,
        "profile_id": f"{_OBJ}.profile_id",
        "connector": f"{_OBJ}.connector",
        "status": f"{_OBJ}.status",
        "amount": f"{_OBJ}.amount",
        "currency": f"{_OBJ}.currency",
        "payment_method": f"{_OBJ}.payment_method",
        "payment_method_type": f"{_OBJ}.payment_method_type",
        "card_network": f"{card_path}.card_network",
        "issuer_country": f"{card_path}.card_issuing_country",
        "error_code": f"{_OBJ}.error_code",
        "error_message": f"{_OBJ}.error_message",
        "fingerprint": f"{_OBJ}.customer_id",
        "occurred_at": time_path,
    }
    try:
        return PaymentEvent.model_validate(fields)
    except ValidationError as exc:
        errors = [
            FieldError(field=sources.get(e.field.split(".")[0], e.field), message=e.message)
            for e in field_errors(exc)
        ]
        raise EventValidationError(errors) from None  # the cause echoes input values


# ----------------------------------------------------------------------------- customer data

# Keys of ``PaymentsResponse`` (and the types nested in it: ``CustomerDetailsResponse``,
# ``Address``/``AddressDetails``, ``PhoneDetails``, ``CardResponse``, ``BrowserInformation``,
# ``CustomerAcceptance``) whose values identify or locate a person. Scrubbed by key, at any
# depth, from a payload APOS keeps (dead letters): the mapping never needs them raw, and
# the customer id reaches an event only hashed (``fingerprint``).
CUSTOMER_DATA_KEYS: Final = frozenset(
    {
        "customer", "customer_id", "email", "name", "phone", "phone_country_code",
        "billing", "shipping", "address", "first_name", "last_name", "line1", "line2",
        "line3", "city", "state", "zip", "origin_zip", "number", "country_code",
        "card_holder_name", "nick_name", "bank_account_holder_name", "browser_info",
        "ip_address", "customer_acceptance", "billing_details", "shipping_details",
    }
)  # fmt: skip
_REDACTED: Final = "[redacted]"
# A customer-data key and its string value in text that is not valid JSON.
_CUSTOMER_PAIR = re.compile(
    r'"(' + "|".join(sorted(CUSTOMER_DATA_KEYS)) + r')"(\s*:\s*)"(?:[^"\\]|\\.)*"'
)


def scrub_customer_data(payload: Any) -> Any:
    """A copy of a decoded webhook with every customer-data value (see
    :data:`CUSTOMER_DATA_KEYS`) replaced by ``"[redacted]"``; nulls stay null.

    >>> scrub_customer_data({"content": {"object": {"email": "ann@example.com",
    ...     "billing": {"address": {"line1": "1 Main St"}}, "customer_id": None}}})
    {'content': {'object': {'email': '[redacted]', 'billing': '[redacted]', 'customer_id': None}}}
    """
    if isinstance(payload, dict):
        return {
            key: (
                _REDACTED
                if key in CUSTOMER_DATA_KEYS and value is not None
                else scrub_customer_data(value)
            )
            for key, value in payload.items()
        }
    if isinstance(payload, list):
        return [scrub_customer_data(value) for value in payload]
    return payload


def scrub_customer_text(text: str) -> str:
    """:func:`scrub_customer_data` for a body that is not valid JSON: the string value of
    every customer-data key is replaced, wherever the text still reads as ``"key": "..."``.

    >>> scrub_customer_text('{"email": "ann@example.com", "name": "Ann", "amount": 1')
    '{"email": "[redacted]", "name": "[redacted]", "amount": 1'
    """
    return _CUSTOMER_PAIR.sub(lambda m: f'"{m.group(1)}"{m.group(2)}"{_REDACTED}"', text)
