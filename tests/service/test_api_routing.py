"""Routing over HTTP: decisions, learning from outcomes, the decision log, experiments."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

import pytest
import sqlalchemy.exc
import structlog

from apos.service.api.route_endpoint import MAX_BODY, RouteEndpoint
from tests.service.conftest import Api, make_event

PAYMENT = {
    "payment_id": "pay_r1",
    "merchant_id": "m_alpha",
    "amount": 1999,
    "currency": "USD",
    "payment_method": "card",
    "card_network": "visa",
    "country": "US",
}


def route(api: Api, who: str = "operator", **overrides: Any) -> Any:
    return api.client.post("/v1/route", json={**PAYMENT, **overrides}, headers=api.as_(who))


def teach(api: Api, connector: str, successes: int, failures: int, start: int) -> None:
    events = []
    for i in range(successes + failures):
        events.append(
            make_event(
                start + i,
                connector=connector,
                payment_id=f"pay_t{start + i}",
                status="succeeded" if (i * 37) % (successes + failures) < successes else "failed",
                occurred_at=time.time() - 5,
            )
        )
    r = api.client.post("/v1/events", json=events, headers=api.as_("operator"))
    assert r.json()["accepted"] == len(events)


def test_route_returns_a_full_decision(api: Api) -> None:
    r = route(api)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["connector"] in {"stripe", "adyen", "checkout"}
    assert {a["connector"] for a in d["alternatives"]} == {"stripe", "adyen", "checkout"}
    assert d["alternatives"][0]["connector"] == d["connector"]
    assert 0.0 <= d["confidence"] <= 1.0 and 0.0 < d["propensity"] <= 1.0
    assert d["decision_id"].startswith("dec_") and d["model_version"] and d["reasons"]


def test_route_respects_eligible_connectors(api: Api) -> None:
    for i in range(20):
        d = route(api, payment_id=f"p{i}", eligible_connectors=["adyen"]).json()
        assert d["connector"] == "adyen"


def test_route_validation_and_scope(api: Api) -> None:
    r = route(api, currency="XYZ", amount=-1)
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"currency", "amount"}
    assert route(api, who="viewer").status_code == 403
    assert route(api, who="beta").json()["code"] == "forbidden_merchant"
    assert route(api, who="alpha").status_code == 200
    assert api.client.post("/v1/route", json=PAYMENT).status_code == 401


def test_route_answers_errors_in_the_standard_shape(api: Api) -> None:
    headers = {**api.as_("operator"), "X-Request-ID": "req-42"}
    r = api.client.get("/v1/route", headers=headers)
    assert (r.status_code, r.json()["code"], r.headers["allow"]) == (
        405,
        "method_not_allowed",
        "POST",
    )
    assert r.json()["request_id"] == "req-42" and r.headers["x-request-id"] == "req-42"
    r = api.client.post("/v1/route", content=b'{"payment_id": ', headers=headers)
    assert (r.status_code, r.json()["code"]) == (422, "validation_error")
    padded = {**PAYMENT, "payment_id": "p" * (MAX_BODY + 1)}
    r = api.client.post("/v1/route", json=padded, headers=headers)
    assert (r.status_code, r.json()["code"]) == (413, "payload_too_large")
    r = api.client.post("/v1/route", json=PAYMENT, headers={"Authorization": "Bearer apos_key_x_y"})
    assert (r.status_code, r.json()["code"]) == (401, "invalid_api_key")
    assert r.headers["www-authenticate"] == "Bearer"
    ok = api.client.post("/v1/route", json=PAYMENT, headers={"X-API-Key": api.tokens["operator"]})
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"


def _call_route_endpoint(api: Api, messages: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """Drive RouteEndpoint directly with these ASGI receive messages, as a server does for a
    chunked upload (TestClient would join the pieces before the app saw them)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    token = api.tokens["operator"].encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/route",
        "headers": [(b"authorization", b"Bearer " + token)],
        "state": {},
    }
    asyncio.run(RouteEndpoint(api.services)(scope, receive, send))
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def _pieces(body: bytes, size: int) -> list[dict[str, Any]]:
    starts = range(0, len(body), size)
    return [
        {"type": "http.request", "body": body[i : i + size], "more_body": i + size < len(body)}
        for i in starts
    ]


def test_a_body_sent_in_pieces_is_read_whole_and_capped(api: Api) -> None:
    body = json.dumps(PAYMENT).encode()
    status, answer = _call_route_endpoint(api, _pieces(body, 7))
    assert status == 200, answer
    assert answer["decision_id"] and answer["connector"]
    # No content-length to trust: the running size stops the read past MAX_BODY.
    big = json.dumps({**PAYMENT, "payment_id": "p" * 2 * MAX_BODY}).encode()
    messages = _pieces(big, 4096)
    status, answer = _call_route_endpoint(api, messages)
    assert (status, answer["code"]) == (413, "payload_too_large")
    assert messages, "the read stopped at the cap instead of taking the whole body"


def test_a_client_that_disconnects_mid_body_gets_no_decision(api: Api) -> None:
    body = json.dumps(PAYMENT).encode()
    messages = [*_pieces(body, 10)[:2], {"type": "http.disconnect"}]
    status, answer = _call_route_endpoint(api, messages)
    assert (status, answer["code"]) == (400, "bad_request")


def test_the_route_endpoint_is_found_below_root_path_and_with_a_slash(api: Api) -> None:
    r = api.client.post("/v1/route/", json=PAYMENT, headers=api.as_("operator"))
    assert r.status_code == 200, r.text
    assert r.json()["connector"]
    # Mounted behind a proxy prefix: the ASGI path keeps the prefix, root_path names it.
    from fastapi.testclient import TestClient

    with TestClient(api.client.app, root_path="/apos") as prefixed:
        r = prefixed.post("/apos/v1/route", json=PAYMENT, headers=api.as_("operator"))
    assert r.status_code == 200, r.text


def test_only_the_first_authorization_header_counts(api: Api) -> None:
    good, bad = api.tokens["operator"], "apos_not_a_key"
    first_bad = [("authorization", f"Bearer {bad}"), ("authorization", f"Bearer {good}")]
    r = api.client.post("/v1/route", json=PAYMENT, headers=first_bad)
    assert (r.status_code, r.json()["code"]) == (401, "invalid_api_key")
    first_good = [("authorization", f"Bearer {good}"), ("authorization", f"Bearer {bad}")]
    assert api.client.post("/v1/route", json=PAYMENT, headers=first_good).status_code == 200
    # A later bearer header does not rescue a first non-bearer one...
    second = [("authorization", "Basic dXNlcjpwdw=="), ("authorization", f"Bearer {good}")]
    r = api.client.post("/v1/route", json=PAYMENT, headers=second)
    assert (r.status_code, r.json()["code"]) == (401, "unauthorized")
    # ...but X-API-Key does.
    basic = [("authorization", "Basic dXNlcjpwdw=="), ("x-api-key", good)]
    assert api.client.post("/v1/route", json=PAYMENT, headers=basic).status_code == 200


def _sqlite_error(message: str) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


@pytest.mark.parametrize(
    ("message", "status", "code"),
    [
        ("database is locked", 503, "unavailable"),
        ("unable to open database file", 503, "unavailable"),
        ("no such table: payment_events", 500, "internal_error"),
    ],
)
def test_only_transient_sqlite_errors_are_503(
    api: Api, monkeypatch: pytest.MonkeyPatch, message: str, status: int, code: str
) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise _sqlite_error(message)

    monkeypatch.setattr(api.services.routing, "route", failing)
    r = route(api)
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert ("retry-after" in r.headers) == (status == 503)
    monkeypatch.setattr(api.services.store, "list_events", failing)
    with structlog.testing.capture_logs() as logs:
        r = api.client.get("/v1/events", headers={**api.as_("viewer"), "X-Request-ID": "req-7"})
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    if status == 500:  # the log line carries the id the caller got back
        [line] = [x for x in logs if x["event"] == "unhandled error"]
        assert line["request_id"] == r.json()["request_id"] == "req-7"
    assert ("retry-after" in r.headers) == (status == 503)
    assert "payment_events" not in r.text


def test_an_unexpected_failure_is_a_logged_500_not_a_crash(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(payment: object) -> None:
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(api.services.routing, "route", broken)
    r = route(api)
    assert (r.status_code, r.json()["code"]) == (500, "internal_error")
    assert "exploded" not in r.text
    monkeypatch.undo()
    assert route(api).status_code == 200


def test_openapi_documents_the_route_endpoint(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    post = doc["paths"]["/v1/route"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/RouteRequest"
    assert {"payment_id", "merchant_id", "amount", "currency"} <= set(
        doc["components"]["schemas"]["RouteRequest"]["required"]
    )
    assert {"200", "401", "403", "413", "422"} <= set(post["responses"])


def test_outcomes_teach_the_router(api: Api) -> None:
    teach(api, "stripe", successes=5, failures=95, start=0)
    teach(api, "checkout", successes=10, failures=90, start=1000)
    teach(api, "adyen", successes=95, failures=5, start=2000)
    chosen = [route(api, payment_id=f"p{i}").json()["connector"] for i in range(50)]
    assert chosen.count("adyen") >= 45


def test_decisions_are_logged_and_joined_to_outcomes(api: Api) -> None:
    decision = route(api).json()
    outcome = make_event(
        1,
        payment_id="pay_r1",
        connector=decision["connector"],
        decision_id=decision["decision_id"],
        occurred_at=time.time(),
    )
    api.client.post("/v1/events", json=outcome, headers=api.as_("operator"))
    api.services.writer.flush()
    api.services.writer.flush()
    stored = api.client.get(
        f"/v1/decisions/{decision['decision_id']}", headers=api.as_("viewer")
    ).json()
    assert stored["connector"] == decision["connector"]
    assert stored["outcome"]["status"] == "succeeded"
    assert stored["outcome"]["event_id"] == "evt_1"
    listed = api.client.get("/v1/decisions", headers=api.as_("alpha")).json()["items"]
    assert [d["decision_id"] for d in listed] == [decision["decision_id"]]
    assert api.client.get("/v1/decisions", headers=api.as_("beta")).json()["items"] == []
    assert (
        api.client.get(
            f"/v1/decisions/{decision['decision_id']}", headers=api.as_("beta")
        ).status_code
        == 404
    )


def test_experiments_split_and_report(api: Api) -> None:
    created = api.client.post(
        "/v1/experiments",
        json={
            "experiment_id": "rules-vs-ts",
            "control": {"policy": "rules"},
            "treatment": {"policy": "thompson"},
            "merchant_id": "m_alpha",
        },
        headers=api.as_("admin"),  # a configuration change (docs/api.md, roles)
    )
    assert created.status_code == 201, created.text
    arms = {route(api, payment_id=f"px{i}").json()["experiment"]["arm"] for i in range(40)}
    assert arms == {"control", "treatment"}
    got = api.client.get("/v1/experiments/rules-vs-ts", headers=api.as_("viewer")).json()
    assert got["running"] is True and "ci95" in got
    assert (
        api.client.post(
            "/v1/experiments",
            json={
                "experiment_id": "rules-vs-ts",
                "control": {"policy": "rules"},
                "treatment": {"policy": "thompson"},
            },
            headers=api.as_("admin"),
        ).status_code
        == 409
    )
    stopped = api.client.post("/v1/experiments/rules-vs-ts/stop", headers=api.as_("admin"))
    assert stopped.json()["running"] is False
    assert route(api, payment_id="after").json()["experiment"] is None
    assert api.client.get("/v1/experiments/rules-vs-ts", headers=api.as_("beta")).status_code == 404


def test_connectors_lists_breaker_states(api: Api) -> None:
    body = api.client.get("/v1/connectors", headers=api.as_("viewer")).json()
    assert {c["connector"]: c["state"] for c in body["items"]} == {
        "stripe": "closed",
        "adyen": "closed",
        "checkout": "closed",
    }


def test_an_experiment_change_not_yet_applied_here_is_a_202_and_audited(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(message: dict[str, Any], timeout: float = 5.0) -> None:
        raise TimeoutError("shared, not yet applied here")

    monkeypatch.setattr(api.services.routing, "control", slow)
    body = {"experiment_id": "late", "control": {"policy": "rules"}, "treatment": {}}
    r = api.client.post("/v1/experiments", json=body, headers=api.as_("admin"))
    assert (r.status_code, r.json()["status"]) == (202, "pending"), r.text
    assert r.headers["retry-after"] == "1"
    audit = api.client.get("/v1/audit", headers=api.as_("admin")).json()["items"]
    assert [(a["action"], a["target"]) for a in audit][:1] == [("experiment.start", "late")]
