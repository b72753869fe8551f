"""Hyperswitch outgoing webhooks: signature verification and mapping onto PaymentEvent.

The fixtures in ``tests/fixtures/hyperswitch`` follow the serde shape of Hyperswitch's
``OutgoingWebhook`` / v1 ``PaymentsResponse`` / ``RefundResponse`` (see the module docstring of
``apos.adapters.hyperswitch`` for the source files).
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers

from apos.adapters.hyperswitch import (
    INTENT_STATUS_MAP,
    SIGNATURE_HEADER,
    InvalidSignatureError,
    MissingSignatureError,
    WebhookSignatureError,
    check_signature,
    parse_webhook_body,
    sign_body,
    verify_signature,
    webhook_to_event,
)
from apos.core.events import EventValidationError, PaymentEvent, PaymentStatus

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hyperswitch"
SECRET = "Xq3v9LkZ2mWn8RtY6pB4cH7jD1sF5gA0uE2iO9yT3rK8wQ6eN4mZ1xC7vB5nM2lP"
RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)


def load(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return payload


def compact(payload: Any) -> bytes:
    """Serialised the way serde_json does it: no whitespace."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def to_event(payload: Any) -> PaymentEvent | None:
    return webhook_to_event(payload, received_at=RECEIVED)


def errors_of(payload: Any) -> dict[str, str]:
    with pytest.raises(EventValidationError) as info:
        to_event(payload)
    return {e.field: e.message for e in info.value.errors}


# ----------------------------------------------------------------------------- signature


class TestSignature:
    body = compact(load("payment_succeeded_card"))

    def test_algorithm_is_hex_hmac_sha512(self) -> None:
        # RFC 4231, test case 2: pins the algorithm and the (lower-case hex) encoding.
        assert sign_body(b"what do ya want for nothing?", "Jefe") == (
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
            "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        )

    @pytest.mark.parametrize(
        "name", ["X-Webhook-Signature-512", "x-webhook-signature-512", "X-WEBHOOK-SIGNATURE-512"]
    )
    def test_valid_signature_any_header_case(self, name: str) -> None:
        headers = {"content-type": "application/json", name: sign_body(self.body, SECRET)}
        assert verify_signature(self.body, headers, SECRET)
        check_signature(self.body, headers, SECRET)  # does not raise

    def test_upper_case_hex_and_surrounding_space_accepted(self) -> None:
        signature = f"  {sign_body(self.body, SECRET).upper()} "
        assert verify_signature(self.body, {SIGNATURE_HEADER: signature}, SECRET)

    def test_starlette_headers(self) -> None:
        raw = [(b"x-webhook-signature-512", sign_body(self.body, SECRET).encode())]
        assert verify_signature(self.body, Headers(raw=raw), SECRET)

    def test_wrong_secret(self) -> None:
        headers = {SIGNATURE_HEADER: sign_body(self.body, SECRET + "x")}
        assert not verify_signature(self.body, headers, SECRET)
        with pytest.raises(InvalidSignatureError) as info:
            check_signature(self.body, headers, SECRET)
        assert info.value.reason == "invalid"

    def test_tampered_body(self) -> None:
        headers = {SIGNATURE_HEADER: sign_body(self.body, SECRET)}
        tampered = self.body.replace(b'"amount":6540', b'"amount":6541')
        assert tampered != self.body
        assert not verify_signature(tampered, headers, SECRET)

    def test_signature_covers_the_raw_bytes_not_the_json_value(self) -> None:
        # Same JSON value, different bytes: the receiver must verify what it received.
        headers = {SIGNATURE_HEADER: sign_body(self.body, SECRET)}
        pretty = json.dumps(json.loads(self.body), indent=2).encode()
        assert not verify_signature(pretty, headers, SECRET)

    @pytest.mark.parametrize(
        "value",
        [
            "deadbeef",  # too short
            hashlib.sha256(b"x").hexdigest(),  # an HMAC-SHA256-sized digest
            "z" * 128,  # not hex
            "sha512=" + "0" * 128,  # prefixed
        ],
    )
    def test_malformed_signature(self, value: str) -> None:
        assert not verify_signature(self.body, {SIGNATURE_HEADER: value}, SECRET)
        with pytest.raises(InvalidSignatureError):
            check_signature(self.body, {SIGNATURE_HEADER: value}, SECRET)

    @pytest.mark.parametrize("headers", [{}, {SIGNATURE_HEADER: ""}, {SIGNATURE_HEADER: "  "}])
    def test_missing_signature(self, headers: dict[str, str]) -> None:
        assert not verify_signature(self.body, headers, SECRET)
        with pytest.raises(MissingSignatureError) as info:
            check_signature(self.body, headers, SECRET)
        assert info.value.reason == "missing"
        assert isinstance(info.value, WebhookSignatureError)

    def test_other_signature_headers_are_not_accepted(self) -> None:
        signature = sign_body(self.body, SECRET)
        for name in ("X-Webhook-Signature", "X-Webhook-Signature-256", "Stripe-Signature"):
            assert not verify_signature(self.body, {name: signature}, SECRET)

    def test_empty_secret_fails_closed(self) -> None:
        headers = {SIGNATURE_HEADER: sign_body(self.body, "")}
        assert not verify_signature(self.body, headers, "")
        with pytest.raises(ValueError, match="no webhook secret"):
            check_signature(self.body, headers, "")


# ----------------------------------------------------------------------------- fixtures


EXPECTED: dict[str, dict[str, Any]] = {
    "payment_succeeded_card": {
        "event_id": "evt_019aa0b1c2d37e4f8a9b0c1d2e3f4a5b",
        "payment_id": "pay_Q8mZt3LwK5vRn2XyB7Hc",
        "attempt": 1,
        "merchant_id": "merchant_1732012345",
        "profile_id": "pro_7kQvX2mLr9TbWn4YcP8e",
        "connector": "stripe",
        "status": PaymentStatus.SUCCEEDED,
        "amount": 6540,
        "currency": "USD",
        "payment_method": "card",
        "payment_method_type": "credit",
        "card_network": "visa",
        "issuer_country": "US",
        "latency_ms": None,
        "error_code": None,
        "error_message": None,
        "occurred_at": datetime(2025, 11, 20, 10, 15, 3, 912000, tzinfo=UTC),
    },
    "payment_failed_card": {
        "event_id": "evt_019aa0b4e51a7c3d9e2f4a6b8c0d1e2f",
        "payment_id": "pay_Lx7Nq2Wm9Vt4Kr8Zp3Ys",
        "attempt": 2,
        "connector": "checkout",
        "status": PaymentStatus.FAILED,
        "amount": 2500,
        "currency": "GBP",
        "payment_method": "card",
        "payment_method_type": "debit",
        "card_network": "mastercard",
        "issuer_country": "GB",
        "error_code": "20051",
        "error_message": "Insufficient Funds",
        "occurred_at": datetime(2025, 11, 20, 11, 2, 44, 260000, tzinfo=UTC),
    },
    "payment_authorized_requires_capture": {
        "payment_id": "pay_Rk4Vy8Nq1Xm6Zt3Lw9Pc",
        "connector": "adyen",
        "status": PaymentStatus.AUTHORIZED,
        "amount": 150000,
        "currency": "INR",
        "card_network": "amex",
        "issuer_country": "IN",
        "error_code": None,
    },
    "payment_processing_bank_debit": {
        "payment_id": "pay_Mp2Xz7Kw4Ny9Lt1Vr6Qb",
        "connector": "adyen",
        "status": PaymentStatus.PENDING,
        "amount": 4999,
        "currency": "EUR",
        "payment_method": "bank_debit",
        "payment_method_type": "sepa",
        "card_network": None,
        "issuer_country": None,
    },
    "payment_succeeded_wallet": {
        "payment_id": "pay_Wt6Kq9Lz3Xm8Nv2Rp5Yb",
        "connector": "cybersource",
        "status": PaymentStatus.SUCCEEDED,
        "amount": 1299,
        "currency": "EUR",
        "payment_method": "wallet",
        "payment_method_type": "apple_pay",
        "card_network": "visa",
        "issuer_country": None,
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_maps_to_expected_event(name: str) -> None:
    event = to_event(load(name))
    assert isinstance(event, PaymentEvent)
    for field, expected in EXPECTED[name].items():
        assert getattr(event, field) == expected, field
    assert event.decision_id is None
    assert event.status.is_final == (event.status is not PaymentStatus.PENDING)


def test_fixtures_round_trip_through_signed_raw_body() -> None:
    """The whole receiving path: raw signed bytes -> verify -> decode -> event."""
    for path in sorted(FIXTURES.glob("*.json")):
        body = path.read_bytes()
        headers = {"x-webhook-signature-512": sign_body(body, SECRET)}
        assert verify_signature(body, headers, SECRET), path.name
        event = webhook_to_event(parse_webhook_body(body), received_at=RECEIVED)
        assert (event is None) == path.name.startswith("refund_"), path.name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_customer_id_never_appears_raw(name: str) -> None:
    payload = load(name)
    obj = payload["content"]["object"]
    event = to_event(payload)
    assert event is not None
    dumped = event.model_dump_json()
    for secret in (obj.get("customer_id"), obj.get("fingerprint"), obj["client_secret"]):
        if secret:
            assert secret not in dumped
    assert event.fingerprint is not None
    assert len(event.fingerprint) == 64


def test_fingerprint_is_a_merchant_scoped_customer_hash() -> None:
    event = to_event(load("payment_succeeded_card"))
    assert event is not None
    expected = hashlib.sha256(
        b"hyperswitch:customer:merchant_1732012345:cus_Hq3vN8xLw2RtY6mKp9Dz"
    ).hexdigest()
    assert event.fingerprint == expected
    # The same customer id at another merchant is another person.
    other = load("payment_succeeded_card")
    other["content"]["object"]["merchant_id"] = "merchant_other"
    other_event = to_event(other)
    assert other_event is not None
    assert other_event.fingerprint != expected


def test_fingerprint_falls_back_to_customer_object_then_card_fingerprint() -> None:
    payload = load("payment_succeeded_card")
    payload["content"]["object"]["customer_id"] = None
    event = to_event(payload)
    assert event is not None
    assert (
        event.fingerprint
        == hashlib.sha256(
            b"hyperswitch:customer:merchant_1732012345:cus_Hq3vN8xLw2RtY6mKp9Dz"
        ).hexdigest()
    )
    # No customer at all (guest checkout): Hyperswitch's card fingerprint, hashed.
    guest = to_event(load("payment_authorized_requires_capture"))
    assert guest is not None
    assert (
        guest.fingerprint
        == hashlib.sha256(
            b"hyperswitch:card:merchant_1732012345:fpr_Wm3Qz8Lk2Xv7Nt5Rb9Yc"
        ).hexdigest()
    )
    payload["content"]["object"]["customer"] = None
    anonymous = to_event(payload)
    assert anonymous is not None
    assert anonymous.fingerprint is None


# ----------------------------------------------------------------------------- non-payments


@pytest.mark.parametrize(
    ("event_type", "content_type"),
    [
        ("refund_succeeded", "refund_details"),
        ("refund_failed", "refund_details"),
        ("dispute_opened", "dispute_details"),
        ("dispute_lost", "dispute_details"),
        ("mandate_active", "mandate_details"),
        ("mandate_revoked", "mandate_details"),
        ("payout_success", "payout_details"),
        ("invoice_paid", "subscription_details"),
        ("something_new", "something_new_details"),
    ],
)
def test_non_payment_webhooks_map_to_none(event_type: str, content_type: str) -> None:
    payload = load("refund_succeeded")
    payload["event_type"] = event_type
    payload["content"]["type"] = content_type
    assert to_event(payload) is None


def test_payment_event_type_with_other_content_is_an_error() -> None:
    payload = load("refund_succeeded")
    payload["event_type"] = "payment_succeeded"
    assert set(errors_of(payload)) == {"content.type"}


def test_unknown_event_type_with_payment_content_is_still_mapped() -> None:
    payload = load("payment_succeeded_card")
    payload["event_type"] = "payment_partially_captured_someday"
    event = to_event(payload)
    assert event is not None
    assert event.status is PaymentStatus.SUCCEEDED


@pytest.mark.parametrize("status", ["cancelled", "expired", "requires_payment_method"])
def test_payment_that_never_reached_a_connector_maps_to_none(status: str) -> None:
    payload = load("payment_succeeded_card")
    payload["event_type"] = "payment_cancelled"
    payload["content"]["object"].update(status=status, connector=None)
    assert to_event(payload) is None


def test_outcome_without_connector_is_an_error() -> None:
    payload = load("payment_failed_card")
    payload["content"]["object"]["connector"] = None
    assert set(errors_of(payload)) == {"content.object.connector"}


# ----------------------------------------------------------------------------- status


# Every IntentStatus variant in crates/common_enums/src/enums.rs.
STATUS_TABLE = {
    "succeeded": PaymentStatus.SUCCEEDED,
    "failed": PaymentStatus.FAILED,
    "cancelled": PaymentStatus.CANCELLED,
    "cancelled_post_capture": PaymentStatus.CANCELLED,
    "processing": PaymentStatus.PENDING,
    "requires_customer_action": PaymentStatus.REQUIRES_ACTION,
    "requires_merchant_action": PaymentStatus.PENDING,
    "requires_payment_method": PaymentStatus.PENDING,
    "requires_confirmation": PaymentStatus.PENDING,
    "requires_capture": PaymentStatus.AUTHORIZED,
    "partially_captured": PaymentStatus.SUCCEEDED,
    "partially_captured_and_capturable": PaymentStatus.SUCCEEDED,
    "partially_authorized_and_requires_capture": PaymentStatus.AUTHORIZED,
    "partially_captured_and_processing": PaymentStatus.SUCCEEDED,
    "conflicted": PaymentStatus.PENDING,
    "expired": PaymentStatus.CANCELLED,
}

# IntentStatus in juspay/hyperswitch crates/common_enums/src/enums.rs (commit 00022b55b563),
# in declaration order, and the two classes of it the mapping must respect.
HYPERSWITCH_INTENT_STATUSES = (
    "succeeded", "failed", "cancelled", "cancelled_post_capture", "processing",
    "requires_customer_action", "requires_merchant_action", "requires_payment_method",
    "requires_confirmation", "requires_capture", "partially_captured",
    "partially_captured_and_capturable", "partially_authorized_and_requires_capture",
    "partially_captured_and_processing", "conflicted", "expired",
)  # fmt: skip
# IntentStatus::is_in_terminal_state
HYPERSWITCH_TERMINAL = {
    "succeeded", "failed", "cancelled", "cancelled_post_capture", "partially_captured",
    "expired",
}  # fmt: skip
# Money was captured, in whole or in part (AttemptStatus Charged / PartialCharged[AndChargeable]).
MONEY_CAPTURED = {
    "succeeded", "partially_captured", "partially_captured_and_capturable",
    "partially_captured_and_processing",
}  # fmt: skip


def test_status_table_covers_every_intent_status() -> None:
    assert set(INTENT_STATUS_MAP) == set(HYPERSWITCH_INTENT_STATUSES)
    assert dict(INTENT_STATUS_MAP) == STATUS_TABLE


@pytest.mark.parametrize("intent_status", sorted(MONEY_CAPTURED))
def test_money_captured_in_part_is_a_final_success_not_an_authorisation(
    intent_status: str,
) -> None:
    payload = load("payment_succeeded_card")
    payload["event_type"] = "payment_captured"
    payload["content"]["object"]["status"] = intent_status
    event = to_event(payload)
    assert event is not None
    assert event.status is PaymentStatus.SUCCEEDED
    assert event.status.is_final and event.status.is_success


def test_statuses_hyperswitch_calls_terminal_are_final_or_cancelled() -> None:
    for intent_status in HYPERSWITCH_TERMINAL:
        mapped = INTENT_STATUS_MAP[intent_status]
        assert mapped.is_final or mapped is PaymentStatus.CANCELLED, intent_status
    # and nothing Hyperswitch still works on is taken for an outcome it has not reached
    for intent_status in set(HYPERSWITCH_INTENT_STATUSES) - HYPERSWITCH_TERMINAL - MONEY_CAPTURED:
        mapped = INTENT_STATUS_MAP[intent_status]
        assert mapped is not PaymentStatus.SUCCEEDED and mapped is not PaymentStatus.FAILED


@pytest.mark.parametrize(("intent_status", "expected"), sorted(STATUS_TABLE.items()))
def test_intent_status_mapping(intent_status: str, expected: PaymentStatus) -> None:
    payload = load("payment_succeeded_card")
    payload["content"]["object"]["status"] = intent_status
    event = to_event(payload)
    assert event is not None
    assert event.status is expected


def test_action_required_webhook() -> None:
    payload = load("payment_succeeded_card")
    payload["event_type"] = "action_required"
    payload["content"]["object"]["status"] = "requires_customer_action"
    payload["content"]["object"]["next_action"] = {
        "type": "redirect_to_url",
        "redirect_to_url": "https://sandbox.hyperswitch.io/payments/redirect/x",
    }
    event = to_event(payload)
    assert event is not None
    assert event.status is PaymentStatus.REQUIRES_ACTION
    assert not event.status.is_final


def test_unknown_intent_status_is_an_error_listing_known_ones() -> None:
    payload = load("payment_succeeded_card")
    payload["content"]["object"]["status"] = "teleported"
    errors = errors_of(payload)
    assert set(errors) == {"content.object.status"}
    assert "requires_capture" in errors["content.object.status"]
    assert "teleported" not in errors["content.object.status"]


# ----------------------------------------------------------------------------- validation


def test_bad_currency_names_the_hyperswitch_field() -> None:
    payload = load("payment_succeeded_card")
    payload["content"]["object"]["currency"] = "ZZZ"
    with pytest.raises(EventValidationError) as info:
        to_event(payload)
    assert [e.field for e in info.value.errors] == ["content.object.currency"]
    assert "ISO 4217" in info.value.errors[0].message


@pytest.mark.parametrize(
    ("field", "value"),
    [("payment_id", "4242 4242 4242 4242"), ("status", "4111111111111111")],
)
def test_errors_do_not_echo_rejected_values(field: str, value: str) -> None:
    # A field that could hold card data must never be echoed back (dead letters, logs).
    payload = load("payment_succeeded_card")
    payload["content"]["object"][field] = value
    with pytest.raises(EventValidationError) as info:
        to_event(payload)
    assert [e.field for e in info.value.errors] == [f"content.object.{field}"]
    assert value[:4] not in str(info.value)


def _set(**values: Any) -> Any:
    return lambda p: p["content"]["object"].update(**values)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.pop("event_id"), "event_id"),
        (lambda p: p.pop("event_type"), "event_type"),
        (lambda p: p.pop("content"), "content"),
        (lambda p: p["content"].pop("type"), "content.type"),
        (lambda p: p["content"].update(object=None), "content.object"),
        (lambda p: p["content"].update(object=[1, 2]), "content.object"),
        (lambda p: p["content"]["object"].pop("payment_id"), "content.object.payment_id"),
        (lambda p: p["content"]["object"].pop("status"), "content.object.status"),
        (lambda p: p["content"]["object"].pop("amount"), "content.object.amount"),
        (lambda p: p["content"]["object"].update(amount="65.40"), "content.object.amount"),
        (lambda p: p["content"]["object"].update(amount=65.4), "content.object.amount"),
        (lambda p: p["content"]["object"].update(amount=True), "content.object.amount"),
        (lambda p: p["content"]["object"].update(amount=-1), "content.object.amount"),
        (lambda p: p["content"]["object"].pop("currency"), "content.object.currency"),
        (lambda p: p["content"]["object"].update(currency=840), "content.object.currency"),
        (lambda p: p["content"]["object"].update(payment_id="pay 1"), "content.object.payment_id"),
        (
            lambda p: p["content"]["object"].update(attempt_count="2"),
            "content.object.attempt_count",
        ),
        (
            lambda p: p["content"]["object"].update(attempt_count=101),
            "content.object.attempt_count",
        ),
        (lambda p: p.update(timestamp="yesterday"), "timestamp"),
        (lambda p: p.update(event_id="evt 1"), "event_id"),
    ],
)
def test_malformed_payload_names_the_field(mutate: Any, field: str) -> None:
    payload = load("payment_succeeded_card")
    mutate(payload)
    assert set(errors_of(payload)) == {field}


def test_every_problem_is_reported_at_once() -> None:
    payload = load("payment_succeeded_card")
    obj = payload["content"]["object"]
    del payload["event_id"], obj["payment_id"], obj["amount"]
    obj["currency"] = None
    assert set(errors_of(payload)) == {
        "event_id",
        "content.object.payment_id",
        "content.object.amount",
        "content.object.currency",
    }


@pytest.mark.parametrize("payload", [[], "payment_succeeded", 42, None])
def test_non_object_payload(payload: Any) -> None:
    assert set(errors_of(payload)) == {""}


def test_merchant_id_falls_back_to_envelope() -> None:
    payload = load("payment_succeeded_card")
    payload["content"]["object"].pop("merchant_id")
    payload["merchant_id"] = "merchant_envelope"
    event = to_event(payload)
    assert event is not None
    assert event.merchant_id == "merchant_envelope"
    payload.pop("merchant_id")
    assert set(errors_of(payload)) == {"content.object.merchant_id"}


def test_naive_received_at_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        webhook_to_event(load("payment_succeeded_card"), received_at=datetime(2026, 1, 1))


# ----------------------------------------------------------------------------- fields


def test_attempt_from_count_or_attempts_list() -> None:
    payload = load("payment_succeeded_card")
    obj = payload["content"]["object"]
    obj["attempt_count"] = 3
    assert (event := to_event(payload)) is not None
    assert event.attempt == 3
    del obj["attempt_count"]
    obj["attempts"] = [{"attempt_id": f"pay_x_{i}", "status": "failure"} for i in range(1, 3)]
    assert (event := to_event(payload)) is not None
    assert event.attempt == 2
    del obj["attempts"]
    assert (event := to_event(payload)) is not None
    assert event.attempt == 1


def test_occurred_at_falls_back_to_payment_times_and_is_capped_at_receipt() -> None:
    payload = load("payment_succeeded_card")
    del payload["timestamp"]
    assert (event := to_event(payload)) is not None
    assert event.occurred_at == datetime(2025, 11, 20, 10, 15, 3, 871000, tzinfo=UTC)
    obj = payload["content"]["object"]
    del obj["modified_at"], obj["updated"]
    assert (event := to_event(payload)) is not None
    assert event.occurred_at == datetime(2025, 11, 20, 10, 15, 1, 123000, tzinfo=UTC)
    del obj["created"]
    assert set(errors_of(payload)) == {"timestamp"}

    future = load("payment_succeeded_card")
    future["timestamp"] = (RECEIVED + timedelta(hours=1)).isoformat()
    assert (event := to_event(future)) is not None
    assert event.occurred_at == RECEIVED


def test_timestamp_without_offset_is_utc() -> None:
    payload = load("payment_succeeded_card")
    payload["timestamp"] = "2025-11-20T10:15:03.912"
    assert (event := to_event(payload)) is not None
    assert event.occurred_at == datetime(2025, 11, 20, 10, 15, 3, 912000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Visa", "visa"),
        ("VISA", "visa"),
        ("Mastercard", "mastercard"),
        ("MasterCard", "mastercard"),
        ("MASTERCARD", "mastercard"),
        ("AmericanExpress", "amex"),
        ("AMEX", "amex"),
        ("AmEx", "amex"),
        ("Discover", "discover"),
        ("JCB", "jcb"),
        ("DinersClub", "diners"),
        ("CartesBancaires", "cartes_bancaires"),
        ("UnionPay", "unionpay"),
        ("RuPay", "rupay"),
        ("Maestro", "maestro"),
        ("Interac", "interac"),
        ("Star", "star"),
        ("Nyce", "nyce"),
        ("NewNetwork", "new_network"),
        ("!!!", None),
        ("", None),
        (None, None),
        (7, None),
    ],
)
def test_card_network_normalisation(raw: Any, expected: str | None) -> None:
    payload = load("payment_succeeded_card")
    payload["content"]["object"]["payment_method_data"]["card"]["card_network"] = raw
    assert (event := to_event(payload)) is not None
    assert event.card_network == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("UNITED STATES", "US"),
        ("United States of America", "US"),
        ("US", "US"),
        ("us", "US"),
        ("USA", "US"),
        ("UNITED KINGDOM", "GB"),
        ("UK", "GB"),
        ("KOREA, REPUBLIC OF", "KR"),
        ("Türkiye", "TR"),
        ("INDIA", "IN"),
        ("NETHERLANDS", "NL"),
        ("ATLANTIS", None),
        ("XX", None),
        ("", None),
        (None, None),
    ],
)
def test_issuer_country_normalisation(raw: Any, expected: str | None) -> None:
    payload = load("payment_succeeded_card")
    payload["content"]["object"]["payment_method_data"]["card"]["card_issuing_country"] = raw
    assert (event := to_event(payload)) is not None
    assert event.issuer_country == expected


def test_error_details_only_on_failures_with_unified_fallback_and_clipping() -> None:
    succeeded = load("payment_succeeded_card")
    succeeded["content"]["object"].update(error_code="stale", error_message="from attempt 1")
    assert (event := to_event(succeeded)) is not None
    assert (event.error_code, event.error_message) == (None, None)

    failed = load("payment_failed_card")
    failed["content"]["object"].update(
        error_code=None,
        error_message=None,
        unified_code="UE_2000",
        unified_message="Issue with payment method details",
    )
    assert (event := to_event(failed)) is not None
    assert (event.error_code, event.error_message) == (
        "UE_2000",
        "Issue with payment method details",
    )

    failed["content"]["object"].update(error_code="E" * 300, error_message=["not", "text"])
    assert (event := to_event(failed)) is not None
    assert event.error_code is not None
    assert len(event.error_code) == 128
    assert event.error_message == "Issue with payment method details"


def test_payment_method_inferred_when_null() -> None:
    payload = load("payment_succeeded_wallet")
    payload["content"]["object"]["payment_method"] = None
    assert (event := to_event(payload)) is not None
    assert event.payment_method == "wallet"
    payload["content"]["object"]["payment_method_data"] = "reward"  # serialised as a bare string
    assert (event := to_event(payload)) is not None
    assert event.payment_method == "reward"
    payload["content"]["object"]["payment_method_data"] = None
    assert (event := to_event(payload)) is not None
    assert event.payment_method == "unknown"


def test_connector_is_lower_cased() -> None:
    payload = load("payment_succeeded_card")
    payload["content"]["object"]["connector"] = "Stripe"
    assert (event := to_event(payload)) is not None
    assert event.connector == "stripe"


def test_input_is_not_modified() -> None:
    payload = load("payment_failed_card")
    before = copy.deepcopy(payload)
    to_event(payload)
    assert payload == before


# ----------------------------------------------------------------------------- body


def test_parse_webhook_body() -> None:
    assert parse_webhook_body(b'{"event_id": "evt_1"}') == {"event_id": "evt_1"}
    with pytest.raises(EventValidationError, match="invalid JSON"):
        parse_webhook_body(b"{not json")
    with pytest.raises(EventValidationError, match="expected a JSON object, got array"):
        parse_webhook_body(b"[]")


def test_customer_data_is_scrubbed_by_key_at_any_depth() -> None:
    from apos.adapters.hyperswitch import scrub_customer_data, scrub_customer_text

    payload = load("payment_failed_card")
    obj = payload["content"]["object"]
    person = {"address": {"line1": "1 Qpii St", "zip": "QP1"}, "phone": {"number": "77009"}}
    obj.update(customer={"id": "cus_q", "email": "q@x.io"}, email="q@x.io", billing=person)
    obj["payment_method_data"]["billing"] = person
    scrubbed = json.dumps(scrub_customer_data(payload))
    for value in ("cus_q", "q@x.io", "1 Qpii St", "QP1", "77009", "Jane Doe"):
        assert value not in scrubbed
    assert obj["payment_id"] in scrubbed and obj["email"] == "q@x.io"  # a copy; ids kept
    text = scrub_customer_text('{"email": "q@x.io", "billing": {"line1": "1 Qpii St"')
    assert "q@x.io" not in text and "1 Qpii St" not in text


def test_a_card_number_as_card_network_is_refused_not_turned_into_a_token() -> None:
    payload = load("payment_failed_card")
    payload["content"]["object"]["payment_method_data"]["card"]["card_network"] = (
        "4111 1111 1111 1111"
    )
    with pytest.raises(EventValidationError) as caught:
        webhook_to_event(payload, received_at=datetime.now(UTC))
    assert caught.value.errors[0].field.endswith("card.card_network")
