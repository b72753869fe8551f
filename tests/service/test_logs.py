"""Structured logs: JSON lines with component and request id; secrets and card data masked."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from apos.service.logs import configure_logging, get_logger, mask_secret_pairs


@pytest.fixture
def json_logs():  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    configure_logging("info", json=True, stream=stream)

    def read() -> list[dict[str, object]]:
        return [json.loads(line) for line in stream.getvalue().splitlines() if line]

    yield read
    logging.getLogger().handlers[:] = []


def test_records_are_json_with_component_and_request_id(json_logs) -> None:  # type: ignore[no-untyped-def]
    with structlog.contextvars.bound_contextvars(request_id="req-1"):
        get_logger("ingest").info("batch stored", events=3)
    [record] = json_logs()
    assert record["event"] == "batch stored" and record["events"] == 3
    assert record["component"] == "ingest" and record["request_id"] == "req-1"
    assert record["level"] == "info" and "timestamp" in record


def test_card_numbers_emails_keys_and_secrets_are_masked(json_logs) -> None:  # type: ignore[no-untyped-def]
    token = "apos_key_0123456789ab_" + "s" * 43
    get_logger("api").warning(
        "declined 4111-1111-1111-1111 for bob@example.com",
        payload={"pan": "5555555555554444", "note": f"used {token}"},
        api_key="plain-secret",
        header="Bearer abc.def",
        amount=1999,
        order="1234567890123",  # 13 digits, not Luhn-valid: left alone
    )
    logging.getLogger("uvicorn.error").error("stdlib says 4242424242424242")
    get_logger("api").info(
        "retrying with password=hunter2 and Basic dXNlcjpodW50ZXIy card_4000056655665556"
    )
    text = json.dumps(json_logs())
    for secret in (
        "4111-1111-1111-1111",
        "5555555555554444",
        "bob@example.com",
        token,
        "plain-secret",
        "abc.def",
        "4242424242424242",
        "hunter2",
        "dXNlcjpodW50ZXIy",
        "4000056655665556",
    ):
        assert secret not in text, secret
    assert "****1111" in text and "****4444" in text and "1234567890123" in text
    assert "1999" in text


def test_passwords_in_connection_urls_are_masked(json_logs) -> None:  # type: ignore[no-untyped-def]
    # Driver errors and start-up lines quote connection URLs; their passwords must not leak.
    get_logger("bootstrap").info(
        "connecting", target="postgresql+psycopg://app:s3cr3t-pw@db.internal:5432/apos"
    )
    logging.getLogger("redis").warning("cannot reach %s", "redis://:hunter2@cache:6379/0")
    text = json.dumps(json_logs())
    assert "s3cr3t-pw" not in text and "hunter2" not in text
    assert "postgresql+psycopg://app:[redacted]@db.internal:5432/apos" in text
    assert "redis://:[redacted]@cache:6379/0" in text
    get_logger("api").info("no credentials", url="http://localhost:8080/v1/events")
    assert json_logs()[-1]["url"] == "http://localhost:8080/v1/events"


def test_secret_fields_are_blanked_and_json_stays_json() -> None:
    raw = json.dumps(
        {"client_secret": 'pay_1_secret_a b,"c', "api_key": None, "token": 12345, "amount": 1999}
    )
    masked = json.loads(mask_secret_pairs(raw))
    assert masked == {
        "client_secret": "[redacted]",
        "api_key": None,
        "token": "[redacted]",
        "amount": 1999,
    }
    assert (
        mask_secret_pairs("retry with password=hunter2; ok") == "retry with password=[redacted]; ok"
    )
