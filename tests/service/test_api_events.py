"""HTTP ingestion and listing of payment events, on SQLite and PostgreSQL."""

from __future__ import annotations

import orjson

from tests.service.conftest import Api, make_event


def test_single_event_is_stored_and_listed(api: Api) -> None:
    r = api.client.post("/v1/events", json=make_event(1), headers=api.as_("operator"))
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 1, "accepted": 1, "duplicates": 0, "rejected": []}
    listed = api.client.get("/v1/events", headers=api.as_("viewer")).json()
    assert [e["event_id"] for e in listed["items"]] == ["evt_1"]
    one = api.client.get("/v1/events/evt_1", headers=api.as_("viewer")).json()
    assert one["amount"] == 1999 and one["currency"] == "USD" and one["latency_ms"] == 321.5


def test_duplicate_event_ids_are_counted_not_applied(api: Api) -> None:
    batch = [make_event(1), make_event(2), make_event(1)]
    r = api.client.post("/v1/events", json=batch, headers=api.as_("operator"))
    assert r.json()["accepted"] == 2 and r.json()["duplicates"] == 1
    again = api.client.post("/v1/events", json=make_event(2, amount=5), headers=api.as_("operator"))
    assert again.json()["duplicates"] == 1 and again.json()["accepted"] == 0
    assert api.services.store.count_events() == 2
    assert api.client.get("/v1/events/evt_2", headers=api.as_("viewer")).json()["amount"] == 1999


def test_malformed_json_is_rejected_and_dead_lettered(api: Api) -> None:
    body = b'{"event_id": "evt_1", "amount": '
    r = api.client.post(
        "/v1/events",
        content=body,
        headers={**api.as_("operator"), "content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_json"
    letters = api.client.get("/v1/dead-letters", headers=api.as_("admin")).json()["items"]
    assert len(letters) == 1
    assert letters[0]["raw"] == body.decode() and "invalid JSON" in letters[0]["reason"]


def test_wrong_types_name_the_field(api: Api) -> None:
    r = api.client.post(
        "/v1/events", json=make_event(1, amount="lots", attempt=[1]), headers=api.as_("operator")
    )
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_error"
    assert {e["field"] for e in body["errors"]} == {"amount", "attempt"}


def test_booleans_are_not_numbers(api: Api) -> None:
    r = api.client.post(
        "/v1/events",
        json=make_event(1, amount=True, latency_ms=False),
        headers=api.as_("operator"),
    )
    assert r.status_code == 422
    errors = r.json()["errors"]
    assert {e["field"] for e in errors} == {"amount", "latency_ms"}
    assert all("not a boolean" in e["message"] for e in errors)


def test_unknown_currency_is_rejected_with_reason(api: Api) -> None:
    r = api.client.post(
        "/v1/events", json=make_event(1, currency="XYZ"), headers=api.as_("operator")
    )
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert error["field"] == "currency" and "ISO 4217" in error["message"]
    assert api.services.store.count_dead_letters() == 1


def test_partial_batch_keeps_the_good_events(api: Api) -> None:
    batch = [make_event(1), make_event(2, status="exploded"), make_event(3), {"nope": 1}]
    r = api.client.post("/v1/events", json=batch, headers=api.as_("operator"))
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 2
    assert [x["index"] for x in body["rejected"]] == [1, 3]
    assert body["rejected"][0]["errors"][0]["field"] == "status"
    assert api.services.store.count_events() == 2
    assert api.services.store.count_dead_letters() == 2


def test_batch_of_a_thousand_is_accepted_and_oversize_refused(api: Api) -> None:
    batch = [make_event(i) for i in range(1000)]
    r = api.client.post("/v1/events", json=batch, headers=api.as_("operator"))
    assert r.status_code == 200 and r.json()["accepted"] == 1000
    limit = api.services.settings.max_batch_events
    too_many = [make_event(i) for i in range(limit + 1)]
    r = api.client.post(
        "/v1/events",
        content=orjson.dumps(too_many),
        headers={**api.as_("operator"), "content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["code"] == "batch_too_large"
    assert api.services.store.count_events() == 1000


def test_raw_card_number_is_refused_and_not_echoed(api: Api) -> None:
    r = api.client.post(
        "/v1/events",
        json=make_event(1, fingerprint="4242424242424242"),
        headers=api.as_("operator"),
    )
    assert r.status_code == 422
    assert "4242424242424242" not in r.text
    letters = api.client.get("/v1/dead-letters", headers=api.as_("admin")).json()["items"]
    assert "4242424242424242" not in letters[0]["raw"]


def test_listing_filters_and_pagination(api: Api) -> None:
    events = [
        make_event(
            i,
            connector="adyen" if i % 2 else "stripe",
            status="failed" if i % 3 == 0 else "succeeded",
            occurred_at=f"2026-11-25T10:{i:02d}:00Z",
        )
        for i in range(30)
    ]
    api.client.post("/v1/events", json=events, headers=api.as_("operator"))
    seen, cursor = [], None
    while True:
        params = {"limit": 7, "connector": "adyen", **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/events", params=params, headers=api.as_("viewer")).json()
        seen += [e["event_id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [f"evt_{i}" for i in range(29, 0, -2)]
    failed = api.client.get(
        "/v1/events",
        params={"status": "failed", "since": "2026-11-25T10:10:00Z"},
        headers=api.as_("viewer"),
    ).json()["items"]
    assert {e["event_id"] for e in failed} == {f"evt_{i}" for i in (12, 15, 18, 21, 24, 27)}
    bad = api.client.get("/v1/events", params={"limit": 0}, headers=api.as_("viewer"))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "limit"
    naive = api.client.get(
        "/v1/events", params={"since": "2026-11-25T10:10:00"}, headers=api.as_("viewer")
    )
    assert (naive.status_code, naive.json()["errors"][0]["field"]) == (422, "since"), naive.text


def test_a_nul_character_rejects_that_event_only(api: Api) -> None:
    # PostgreSQL text cannot hold U+0000: without the check the whole batch was a 500.
    events = [make_event(1), make_event(2, error_message="declined\x00"), make_event(3)]
    r = api.client.post("/v1/events", json=events, headers=api.as_("operator"))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["accepted"], [x["index"] for x in answer["rejected"]]) == (2, [1])
    assert answer["rejected"][0]["errors"][0]["field"] == "error_message"
    assert api.services.store.count_dead_letters() == 1
    stored = api.client.get("/v1/events", headers=api.as_("viewer")).json()["items"]
    assert {e["event_id"] for e in stored} == {"evt_1", "evt_3"}


def test_foreign_cursors_are_a_client_error(api: Api) -> None:
    for path in ("/v1/events", "/v1/dead-letters", "/v1/audit"):
        r = api.client.get(path, params={"cursor": "garbage!"}, headers=api.as_("admin"))
        assert r.status_code == 422, path
        assert r.json()["code"] == "invalid_cursor"


def test_oversize_body_is_refused_before_it_is_stored(api: Api) -> None:
    limit = api.services.settings.max_body_bytes
    body = orjson.dumps(make_event(1)) + b" " * limit  # valid JSON, one byte per space too many
    headers = {**api.as_("operator"), "content-type": "application/json"}
    r = api.client.post("/v1/events", content=body, headers=headers)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    # Without a Content-Length (chunked upload) the limit is enforced while reading.
    step = 1 << 20
    chunks = iter([body[i : i + step] for i in range(0, len(body), step)])
    r = api.client.post("/v1/events", content=chunks, headers=headers)
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    assert api.services.store.count_events() == 0
