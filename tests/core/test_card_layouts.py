"""Refusing an id: card numbers as they are written, not every Luhn-valid digit sequence."""

from __future__ import annotations

import pytest

from apos.core.events import EventValidationError, parse_event
from apos.core.iso import contains_card_number, looks_like_card_number, redact_card_numbers


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111111",
        "pay_4111-1111-1111-1111",
        "ref 5555 5555 5555 4444 x",
        "378282246310005",
        "amex:3782-822463-10005",
        "diners 3056 930902 5904",
        "6759649826438453",  # Maestro, 16
        "code 12 4111 1111 1111 1111",
    ],
)
def test_card_numbers_as_written_are_found(text: str) -> None:
    assert contains_card_number(text)


@pytest.mark.parametrize(
    "text",
    [
        "order-2026-11-05-123456",
        "order-2026-11-05-123453",  # 16 digits, Luhn-valid, but split like a date
        "4111-1111-1111",  # a split 4-4-4 is far more often part of a UUID
        "pay_41111111111",  # 11 digits
        "dec_41111111_11111111_11111111",
    ],
)
def test_digits_split_unlike_a_card_are_not_refused(text: str) -> None:
    assert not contains_card_number(text)


def test_a_dated_id_is_accepted_and_a_card_in_an_id_is_refused_naming_the_field() -> None:
    base = {
        "event_id": "evt_1",
        "payment_id": "order-2026-11-05-123456",
        "merchant_id": "m_shop",
        "connector": "stripe",
        "status": "succeeded",
        "amount": 1,
        "currency": "USD",
        "occurred_at": "2026-11-25T10:00:00Z",
    }
    assert parse_event(base).payment_id == "order-2026-11-05-123456"
    with pytest.raises(EventValidationError) as caught:
        parse_event({**base, "payment_id": "pay-4111-1111-1111-1111"})
    assert [e.field for e in caught.value.errors] == ["payment_id"]
    assert "4111" not in str(caught.value)


def test_masking_stays_broader_than_refusal() -> None:
    # A log line or dead letter masks any Luhn-valid 12-19 digit run, however split.
    assert looks_like_card_number("2026110512345" + "3")
    assert "[card ****3453]" in redact_card_numbers("order-2026-11-05-123453")


@pytest.mark.parametrize(
    "fingerprint",
    ["card:4111111111111111", "x jane.doe@example.com", "fp` <!channel> <https://e.x|go>"],
)
def test_a_fingerprint_must_be_a_hash_not_a_card_an_address_or_markup(fingerprint: str) -> None:
    event = {
        "event_id": "evt_1",
        "payment_id": "pay_1",
        "merchant_id": "m_shop",
        "connector": "stripe",
        "status": "failed",
        "amount": 1,
        "currency": "USD",
        "occurred_at": "2026-11-25T10:00:00Z",
        "fingerprint": fingerprint,
    }
    with pytest.raises(EventValidationError) as caught:
        parse_event(event)
    assert [e.field for e in caught.value.errors] == ["fingerprint"]
    for hashed in ("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "dGVzdA+/="):
        assert parse_event({**event, "fingerprint": hashed}).fingerprint == hashed
