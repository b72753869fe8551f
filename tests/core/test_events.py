"""The canonical event's validation edges and its trusted JSON round trip between instances."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apos.core.events import (
    EventValidationError,
    PaymentEvent,
    PaymentStatus,
    events_from_json,
    events_to_json,
    parse_event,
)
from apos.core.iso import contains_card_number, redact_card_numbers


def _payload(**overrides: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "event_id": "evt_1",
        "payment_id": "pay_1",
        "merchant_id": "m1",
        "connector": "Stripe",
        "status": "succeeded",
        "amount": 1999,
        "currency": "usd",
        "occurred_at": "2026-11-25T10:00:00+01:00",
    }
    payload.update(overrides)
    return payload


def _fields(exc: pytest.ExceptionInfo[EventValidationError]) -> list[str]:
    return [e.field for e in exc.value.errors]


@pytest.mark.parametrize("value", ["evt 1", "evt/1", "évt", "evt\n1", "evt;drop"])
def test_identifiers_refuse_characters_outside_the_safe_set(value: str) -> None:
    with pytest.raises(EventValidationError) as exc:
        parse_event(_payload(event_id=value))
    assert _fields(exc) == ["event_id"]
    assert "letters, digits" in exc.value.errors[0].message


def test_identifiers_accept_the_safe_set_and_tokens_are_lower_cased() -> None:
    event = parse_event(_payload(event_id="A-z_0.9:x", connector="Check.Out-2"))
    assert (event.event_id, event.connector) == ("A-z_0.9:x", "check.out-2")


@pytest.mark.parametrize(
    "value",
    [
        "4242424242424242",
        "4242 4242 4242 4242",
        "4242-4242-4242-4242",
        "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢",  # Arabic-Indic digits: the same card number
    ],
)
def test_a_raw_card_number_is_refused_as_fingerprint(value: str) -> None:
    with pytest.raises(EventValidationError) as exc:
        parse_event(_payload(fingerprint=value))
    assert _fields(exc) == ["fingerprint"]
    assert value not in str(exc.value)  # never echoed


@pytest.mark.parametrize(
    "value",
    [
        "4242424242424241",  # fails Luhn
        "fp_4242424242424241",  # a hash-like token that contains digits (not a card)
        "42424242424",  # 11 digits: too short to be a card
        "4242424242424242abcdef0123",  # a hex digest that happens to start like a card
    ],
)
def test_fingerprints_that_are_not_card_numbers_pass(value: str) -> None:
    assert parse_event(_payload(fingerprint=value)).fingerprint == value


@pytest.mark.parametrize(
    "value",
    [
        "fp_4242424242424242",  # a card number inside a token that is not a hex hash
        "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤١",  # non-ASCII digits: not a hash
        "²²²²²²²²²²²²²²²²",
    ],
)
def test_fingerprints_holding_a_card_or_not_hash_characters_are_refused(value: str) -> None:
    with pytest.raises(EventValidationError) as exc:
        parse_event(_payload(fingerprint=value))
    assert [e.field for e in exc.value.errors] == ["fingerprint"]


@pytest.mark.parametrize("field", ["error_code", "error_message", "fingerprint"])
def test_a_nul_character_is_refused_naming_the_field(field: str) -> None:
    with pytest.raises(EventValidationError) as exc:
        parse_event(_payload(**{field: "abc\x00defghij"}))
    assert _fields(exc) == [field]


def test_an_email_address_is_refused_as_fingerprint() -> None:
    with pytest.raises(EventValidationError) as exc:
        parse_event(_payload(fingerprint="bob.smith@example.com"))
    assert _fields(exc) == ["fingerprint"]
    assert "bob" not in str(exc.value)


def test_a_card_number_quoted_in_the_error_message_is_masked() -> None:
    event = parse_event(_payload(error_message="card 4111 1111 1111 1111 declined by issuer"))
    assert event.error_message == "card [card ****1111] declined by issuer"
    untouched = parse_event(_payload(error_message="order 1234567890123 declined"))
    assert untouched.error_message == "order 1234567890123 declined"  # not Luhn-valid


def _events() -> list[PaymentEvent]:
    base = datetime(2026, 11, 25, 10, tzinfo=UTC)
    return [
        parse_event(_payload()),
        parse_event(
            _payload(
                event_id="evt_2",
                attempt=2,
                status="failed",
                profile_id="pro_1",
                payment_method="wallet",
                payment_method_type="apple_pay",
                card_network="visa",
                issuer_country="gb",
                latency_ms=123.5,
                error_code="do_not_honor",
                error_message="Do not honor",
                fingerprint="fp_00001234",
                decision_id="dec_1",
                occurred_at=(base + timedelta(microseconds=123_456)).isoformat(),
            )
        ),
    ]


def test_the_trusted_round_trip_rebuilds_equal_events() -> None:
    events = _events()
    restored = events_from_json(events_to_json(events))
    assert restored == events
    second = restored[1]
    assert second.status is PaymentStatus.FAILED
    assert second.occurred_at.utcoffset() == timedelta(0)
    assert second.occurred_ts == events[1].occurred_ts
    assert second.model_dump() == events[1].model_dump()
    with pytest.raises(ValueError):
        second.amount = 5  # type: ignore[misc]  # still frozen
    # pydantic's own API behaves as on the validated original (all fields were sent)
    assert second.model_fields_set == events[1].model_fields_set
    assert second.model_dump(exclude_unset=True) == events[1].model_dump(exclude_unset=True)
    assert second.model_copy(update={"amount": 5}).amount == 5
    assert restored[0].model_fields_set is not second.model_fields_set  # not shared


def test_objects_another_version_wrote_are_validated_not_trusted() -> None:
    older = {k: v for k, v in _events()[0].model_dump(mode="json").items() if k != "profile_id"}
    older["connector"] = "STRIPE"  # a shortcut would keep this as is; validation lowers it
    (event,) = events_from_json(orjson.dumps([older]))
    assert (event.connector, event.profile_id) == ("stripe", None)
    newer = {**_events()[0].model_dump(mode="json"), "risk_score": 0.3}
    with pytest.raises(ValueError, match="risk_score"):
        events_from_json(orjson.dumps([newer]))


@pytest.mark.parametrize(
    "document",
    [b'{"event_id": "evt_1"}', b"[1]", b"not json"],
)
def test_a_document_that_is_not_an_array_of_events_raises_value_error(document: bytes) -> None:
    with pytest.raises(ValueError):
        events_from_json(document)


def test_a_corrupt_trusted_field_raises_value_error() -> None:
    (data,) = orjson.loads(events_to_json(_events()[:1]))
    data["status"] = "exploded"
    with pytest.raises(ValueError):
        events_from_json(orjson.dumps([data]))


def test_times_in_other_offsets_come_back_in_utc() -> None:
    event = _events()[0]
    assert event.occurred_at.tzinfo == UTC  # validated into UTC from +01:00
    (restored,) = events_from_json(events_to_json([event]))
    assert restored.occurred_at == datetime(2026, 11, 25, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("code 12 4111111111111111", "code 12 [card ****1111]"),
        ("2024-01-15 4111 1111 1111 1111", "2024-01-15 [card ****1111]"),
        ("4111111111111111 4242424242424242", "[card ****1111] [card ****4242]"),
        ("ref_4000056655665556", "ref_[card ****5556]"),
        ("order 1234567890123 at 2024-01-15", "order 1234567890123 at 2024-01-15"),
    ],
)
def test_card_numbers_are_masked_next_to_other_numbers(text: str, masked: str) -> None:
    assert redact_card_numbers(text) == masked


def test_a_masked_error_message_still_fits_its_column() -> None:
    message = ("1234567890128 " * 80)[:1024]  # 13-digit Luhn-valid numbers: masks are longer
    event = parse_event(_payload(error_message=message))
    assert event.error_message is not None and len(event.error_message) <= 1024
    assert "1234567890128" not in event.error_message


_CARD_IDS = ["4111111111111111", "pay_5555-5555-5555-4444", "m:378282246310005", "6759649826438453"]


@pytest.mark.parametrize("field", ["event_id", "payment_id", "merchant_id", "decision_id"])
@pytest.mark.parametrize("value", _CARD_IDS)
def test_a_card_number_in_an_identifier_is_refused_without_being_echoed(
    field: str, value: str
) -> None:
    with pytest.raises(EventValidationError) as caught:
        parse_event(_payload(**{field: value}))
    assert [e.field for e in caught.value.errors] == [field]
    assert "card number" in caught.value.errors[0].message
    assert value not in str(caught.value) and "4444" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("connector", "4111-1111-1111-1111"),
        ("payment_method", "card-4111111111111111"),
        ("card_network", "5555555555554444"),
        ("error_code", "declined 5555 5555 5555 4444"),
    ],
)
def test_a_card_number_in_a_code_is_refused(field: str, value: str) -> None:
    with pytest.raises(EventValidationError) as caught:
        parse_event(_payload(**{field: value}))
    assert [e.field for e in caught.value.errors] == [field]


@pytest.mark.parametrize(
    "value",
    ["evt_20261125_000123", "pay_123456789012", "dec_12345678_90123456_78901234", "4111-1111"],
)
def test_identifiers_with_digits_but_no_card_number_pass(value: str) -> None:
    assert parse_event(_payload(event_id=value)).event_id == value


def test_an_unknown_field_named_by_a_card_number_is_named_masked() -> None:
    with pytest.raises(EventValidationError) as caught:
        parse_event({**_payload(), "4111 1111 1111 1111": 1, "currency": "4111111111111111"})
    assert sorted(e.field for e in caught.value.errors) == ["[card ****1111]", "currency"]
    assert "4111 1111" not in str(caught.value) and "4111111111111111" not in str(caught.value)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789- abc_", max_size=40))
def test_contains_card_number_agrees_with_redaction(text: str) -> None:
    assert contains_card_number(text) == (redact_card_numbers(text) != text)
