"""Hyperswitch webhooks through the app: signature, mapping, idempotency, dead letters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from apos.adapters.hyperswitch import SIGNATURE_HEADER, sign_body
from apos.service.app import build_app
from apos.service.bootstrap import build_services
from apos.settings import Settings
from tests.service.conftest import Api

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hyperswitch"
SECRET = "profile-hash-key-0123456789"


@pytest.fixture
def signed(database_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, hyperswitch_webhook_secret=SECRET)
    services = build_services(settings)
    with TestClient(build_app(settings, services)) as client:
        yield client
    services.close()


def body_of(name: str) -> bytes:
    return json.dumps(
        json.loads((FIXTURES / f"{name}.json").read_text()), separators=(",", ":")
    ).encode()


def post_signed(client: TestClient, body: bytes, signature: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"content-type": "application/json"}
    headers[SIGNATURE_HEADER] = signature if signature is not None else sign_body(body, SECRET)
    return client.post("/v1/webhooks/hyperswitch", content=body, headers=headers)


def test_signed_payment_webhook_is_stored_once(signed: TestClient) -> None:
    body = body_of("payment_succeeded_card")
    first = post_signed(signed, body)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "accepted"
    again = post_signed(signed, body)  # Hyperswitch retries resend the same body
    assert again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    store = signed.app.state.services.store  # type: ignore[attr-defined]
    event = store.get_event(first.json()["event_id"])
    assert event is not None and event.status == "succeeded"
    assert store.count_events() == 1


def test_bad_or_missing_signature_is_refused(signed: TestClient) -> None:
    body = body_of("payment_failed_card")
    assert post_signed(signed, body, signature="00" * 64).status_code == 401
    r = signed.post(
        "/v1/webhooks/hyperswitch", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 401 and r.json()["code"] == "invalid_signature"
    tampered = body.replace(b'"failed"', b'"succeeded"', 1)
    assert post_signed(signed, tampered, signature=sign_body(body, SECRET)).status_code == 401


def test_refund_webhook_is_acknowledged_and_ignored(signed: TestClient) -> None:
    r = post_signed(signed, body_of("refund_succeeded"))
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert signed.app.state.services.store.count_events() == 0  # type: ignore[attr-defined]


def test_unusable_webhook_is_dead_lettered_with_the_field(signed: TestClient) -> None:
    payload = json.loads(body_of("payment_succeeded_card"))
    payload["content"]["object"]["currency"] = "XXX1"
    r = post_signed(signed, json.dumps(payload).encode())
    assert r.status_code == 200 and r.json()["status"] == "dead_lettered"
    assert any("currency" in e["field"] for e in r.json()["errors"])
    services = signed.app.state.services  # type: ignore[attr-defined]
    assert services.store.count_dead_letters() == 1
    [letter] = services.store.list_dead_letters(None, 10, None).items
    secret = payload["content"]["object"]["client_secret"]
    assert secret not in letter.raw and '"client_secret": "[redacted]"' in letter.raw.replace(
        '":"', '": "'
    )


def test_without_a_secret_an_operator_key_is_required(api: Api) -> None:
    body = body_of("payment_succeeded_wallet")
    headers = {"content-type": "application/json"}
    assert (
        api.client.post("/v1/webhooks/hyperswitch", content=body, headers=headers).status_code
        == 401
    )
    r = api.client.post(
        "/v1/webhooks/hyperswitch", content=body, headers={**headers, **api.as_("operator")}
    )
    assert r.status_code == 200 and r.json()["status"] == "accepted"


def test_merchant_key_webhook_rejects_are_filed_under_its_merchant(api: Api) -> None:
    headers = {"content-type": "application/json", **api.as_("alpha")}
    r = api.client.post("/v1/webhooks/hyperswitch", content=b"{nope", headers=headers)
    assert r.status_code == 400 and r.json()["code"] == "invalid_json"
    mine = api.client.get("/v1/dead-letters", headers=api.as_("alpha")).json()["items"]
    assert [(d["source"], d["merchant_id"], d["raw"]) for d in mine] == [
        ("webhook.hyperswitch", "m_alpha", "{nope")
    ]
    assert api.client.get("/v1/dead-letters", headers=api.as_("beta")).json()["items"] == []


def test_an_unusable_webhook_is_acknowledged_and_dead_lettered_once_per_event_id(
    signed: TestClient,
) -> None:
    # A failed payment that never reached a connector: nothing to learn, nothing to retry.
    payload = json.loads(body_of("payment_failed_card"))
    payload["content"]["object"]["connector"] = None
    body = json.dumps(payload, separators=(",", ":")).encode()
    answers = [post_signed(signed, body) for _ in range(3)]  # Hyperswitch's retries
    assert [(r.status_code, r.json()["status"]) for r in answers] == [(200, "dead_lettered")] * 3
    assert answers[0].json()["errors"][0]["field"] == "content.object.connector"
    store = signed.app.state.services.store  # type: ignore[attr-defined]
    assert store.count_dead_letters() == 1
    # Another webhook with the same defect is another letter; so is one without an event_id.
    payload["event_id"] = payload["event_id"] + "_other"
    assert post_signed(signed, json.dumps(payload).encode()).status_code == 200
    del payload["event_id"]
    for _ in range(2):
        assert post_signed(signed, json.dumps(payload).encode()).json()["status"] == (
            "dead_lettered"
        )
    assert store.count_dead_letters() == 3
    assert store.count_events() == 0


def test_a_scoped_key_cannot_suppress_another_merchants_dead_letter(api: Api) -> None:
    payload = json.loads(body_of("payment_failed_card"))
    payload["content"]["object"]["connector"] = None
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json"}
    for who in ("beta", "alpha", "alpha"):
        r = api.client.post(
            "/v1/webhooks/hyperswitch", content=body, headers={**headers, **api.as_(who)}
        )
        assert r.status_code == 200 and r.json()["status"] == "dead_lettered"
    filed = [
        d["merchant_id"]
        for d in api.client.get("/v1/dead-letters", headers=api.as_("admin")).json()["items"]
    ]
    assert sorted(filed) == ["m_alpha", "m_beta"]
