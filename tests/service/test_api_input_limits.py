"""The same input limits on every path, and a 4xx (never a 500) for what is refused, on
SQLite and on the real PostgreSQL (which refuses U+0000 where SQLite stores it)."""

from __future__ import annotations

import dataclasses
import gzip
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from apos.adapters.db import SqlStore
from apos.adapters.db.decisions import DecisionStore
from apos.core.events import MAX_AMOUNT
from apos.service.app import build_app
from apos.service.auth import Role, issue_key
from apos.service.bootstrap import build_services
from apos.service.decision_engine import RULE_DATA_MAX_BYTES, RULE_DATA_MAX_DEPTH
from apos.settings import Settings
from tests.adapters.test_decision_store import make_decision
from tests.service.conftest import Api, make_event

NUL = "\x00"


def route_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "payment_id": "pay_1",
        "merchant_id": "m_alpha",
        "amount": 1999,
        "currency": "USD",
    }
    body.update(overrides)
    return body


def decide_body(**info: Any) -> dict[str, Any]:
    payment_info: dict[str, Any] = {
        "paymentId": "pay_de_1",
        "amount": 10.5,
        "currency": "USD",
        "paymentType": "ORDER_PAYMENT",
        "paymentMethodType": "CARD",
        "paymentMethod": "CREDIT",
    }
    payment_info.update(info)
    return {
        "merchantId": "m_alpha",
        "eligibleGatewayList": ["stripe", "adyen"],
        "rankingAlgorithm": "SR_BASED_ROUTING",
        "paymentInfo": payment_info,
    }


def rule_body(data: Any, kind: str = "successRate") -> dict[str, Any]:
    return {"merchant_id": "m_alpha", "config": {"type": kind, "data": data}}


def _merchant_account(api: Api) -> None:
    answer = api.client.post(
        "/merchant-account/create", json={"merchant_id": "m_alpha"}, headers=api.as_("admin")
    )
    assert answer.status_code == 200, answer.text


def _fields(answer: Any) -> list[str]:
    return [e["field"] for e in answer.json().get("errors", [])]


# -- 415 for a compressed body -------------------------------------------------------------


COMPRESSED = [
    ("/v1/events", make_event(), "operator"),
    ("/v1/route", route_body(), "operator"),
    ("/v1/keys", {"name": "k", "role": "viewer"}, "admin"),
    ("/decide-gateway", decide_body(), "operator"),
    ("/update-gateway-score", {"merchantId": "m_alpha"}, "operator"),
    ("/merchant-account/create", {"merchant_id": "m_gz"}, "admin"),
    ("/rule/update", rule_body({"defaultHedgingPercent": 5}), "admin"),
    ("/webhooks/hyperswitch", {"event_type": "payment_succeeded"}, "operator"),
]


def test_a_compressed_body_is_refused_with_415(api: Api) -> None:
    for path, body, who in COMPRESSED:
        for coding in ("gzip", "deflate, identity", "br"):
            answer = api.client.post(
                path,
                content=gzip.compress(orjson.dumps(body)),
                headers={
                    **api.as_(who),
                    "Content-Encoding": coding,
                    "Content-Type": "application/json",
                },
            )
            assert answer.status_code == 415, (path, coding, answer.text)
            assert answer.json()["code"] == "unsupported_media_type"
            assert _fields(answer) == ["Content-Encoding"]
            assert answer.headers["x-request-id"]
    # Refused before reading, not garbled into a dead letter.
    assert api.services.store.count_dead_letters() == 0
    identity = api.client.post(
        "/v1/route",
        content=orjson.dumps(route_body()),
        headers={**api.as_("operator"), "Content-Encoding": "identity"},
    )
    assert identity.status_code == 200, identity.text


# -- /v1/events: a refused event is a 4xx and a dead letter -------------------------------


UNSTORABLE_EVENTS = [
    make_event(1, merchant_id=f"m{NUL}x"),
    make_event(2, payment_id=f"pay{NUL}"),
    make_event(3, error_message=f"declined{NUL}"),
    make_event(4, error_code="do_not_honor\x07"),
]


def test_unstorable_text_in_an_event_is_422_and_dead_lettered(api: Api) -> None:
    for n, event in enumerate(UNSTORABLE_EVENTS, start=1):
        answer = api.client.post("/v1/events", json=event, headers=api.as_("operator"))
        assert answer.status_code == 422, answer.text
        assert api.services.store.count_dead_letters() == n
    assert api.services.store.count_events() == 0
    letters = api.services.store.list_dead_letters(None, 10, None).items
    assert {letter.merchant_id for letter in letters} <= {None, "m_alpha"}
    # Not JSON, with NUL bytes in it: 400, and kept (made storable) as a dead letter.
    broken = api.client.post(
        "/v1/events", content=b'{"event_id": "e\x00\xff', headers=api.as_("operator")
    )
    assert broken.status_code == 400, broken.text
    assert api.services.store.count_dead_letters() == len(UNSTORABLE_EVENTS) + 1


# -- /v1/route: the rules of /v1/events -----------------------------------------------------


ROUTE_LIMITS: list[tuple[dict[str, Any], str]] = [
    ({"payment_id": f"pay{NUL}"}, "payment_id"),
    ({"merchant_id": "m alpha"}, "merchant_id"),
    ({"payment_id": "p" * 129}, "payment_id"),
    ({"eligible_connectors": ["stripe", f"a{NUL}b"]}, "eligible_connectors.1"),
    ({"card_network": "visa\x1b[31m"}, "card_network"),
    ({"payment_method": "c" * 65}, "payment_method"),
    ({"payment_method_type": f"credit{NUL}"}, "payment_method_type"),
    ({"amount": MAX_AMOUNT + 1}, "amount"),
    ({"amount": True}, "amount"),
    ({"currency": "XXY"}, "currency"),
    ({"country": "QQ"}, "country"),
]


def test_route_applies_the_limits_of_events(api: Api) -> None:
    for overrides, field in ROUTE_LIMITS:
        answer = api.client.post(
            "/v1/route", json=route_body(**overrides), headers=api.as_("operator")
        )
        assert answer.status_code == 422, (overrides, answer.text)
        assert answer.json()["code"] == "validation_error"
        assert _fields(answer) == [field]


def test_a_refused_route_does_not_stop_the_decision_log(api: Api) -> None:
    headers = api.as_("operator")
    bad = route_body(payment_id=f"pay{NUL}", eligible_connectors=[f"a{NUL}b"])
    assert api.client.post("/v1/route", json=bad, headers=headers).status_code == 422
    good = api.client.post("/v1/route", json=route_body(payment_id="pay_2"), headers=headers)
    assert good.status_code == 200
    api.services.writer.flush()
    assert api.services.decisions.get(good.json()["decision_id"]) is not None


# -- decision-engine API --------------------------------------------------------------------


DECIDE_LIMITS: list[tuple[dict[str, Any], str]] = [
    (decide_body(amount=MAX_AMOUNT / 100 + 1), "paymentInfo.amount"),
    (decide_body(customerId=f"cust{NUL}"), "paymentInfo.customerId"),
    (decide_body(paymentId="pay_1\n"), "paymentInfo.paymentId"),
    (decide_body(currency="ABC"), "paymentInfo.currency"),
    (decide_body(country="ZZ"), "paymentInfo.country"),
    ({**decide_body(), "eligibleGatewayList": [f"stripe{NUL}"]}, "eligibleGatewayList.0"),
    ({**decide_body(), "merchantId": "m_alpha\n"}, "merchantId"),
    ({**decide_body(), "udfs": {"note": f"x{NUL}"}}, "udfs.note"),
]


def test_decide_gateway_applies_the_limits_of_events(api: Api) -> None:
    _merchant_account(api)
    for body, field in DECIDE_LIMITS:
        answer = api.client.post("/decide-gateway", json=body, headers=api.as_("operator"))
        assert answer.status_code == 400, answer.text
        assert answer.json()["error_info"]["code"] == "INVALID_INPUT"
        assert field in answer.json()["error_info"]["developer_message"]
    score = {
        "merchantId": "m_alpha",
        "gateway": "stripe",
        "gatewayReferenceId": f"ref{NUL}",
        "status": "CHARGED",
        "paymentId": "pay_de_1",
    }
    answer = api.client.post("/update-gateway-score", json=score, headers=api.as_("operator"))
    assert answer.status_code == 400, answer.text
    assert "gatewayReferenceId" in answer.json()["error_info"]["developer_message"]


def _deep(levels: int) -> dict[str, Any]:
    document: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        document = {"next": document}
    return document


RULE_LIMITS: list[tuple[Any, str, str]] = [
    ({"defaultHedgingPercent": 5, f"x{NUL}": "y"}, "successRate", "config.data"),
    (
        {"merchant_category_code": f"5411{NUL}", "acquirer_country": "US"},
        "debitRouting",
        "config.data.merchant_category_code",
    ),
    ({"threshold": 0.4, "txnLatency": _deep(RULE_DATA_MAX_DEPTH)}, "elimination", "config.data"),
    (
        {"threshold": 0.4, "txnLatency": "x" * RULE_DATA_MAX_BYTES},
        "elimination",
        "config.data",
    ),
    ({"defaultBucketSize": 2**70}, "successRate", "defaultBucketSize"),
]


def test_rule_writes_refuse_unstorable_deep_or_large_data(api: Api) -> None:
    _merchant_account(api)
    admin = api.as_("admin")
    for verb in ("create", "update"):
        for data, kind, field in RULE_LIMITS:
            answer = api.client.post(f"/rule/{verb}", json=rule_body(data, kind), headers=admin)
            assert answer.status_code in (400, 422), (verb, data, answer.text)
            assert field in answer.text
            stored = api.client.post(
                "/rule/get", json={"merchant_id": "m_alpha", "algorithm": kind}, headers=admin
            )
            if verb == "create" or kind != "successRate":
                assert stored.status_code == 404, stored.text
            else:
                assert stored.json()["config"]["data"] == {"defaultHedgingPercent": 5.0}
        if verb == "create":
            created = api.client.post(
                "/rule/create", json=rule_body({"defaultHedgingPercent": 5}), headers=admin
            )
            assert created.status_code == 200, created.text


def test_rule_data_within_the_limits_is_stored_as_given(api: Api) -> None:
    _merchant_account(api)
    latency = _deep(RULE_DATA_MAX_DEPTH - 1)
    body = rule_body({"threshold": 0.4, "txnLatency": latency}, "elimination")
    answer = api.client.post("/rule/create", json=body, headers=api.as_("admin"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["config"]["data"]["txnLatency"] == latency


CONFIG_LIMITS: list[tuple[str, dict[str, Any], str]] = [
    (
        "/merchant-account/create",
        {"merchant_id": "m_x", "gateway_success_rate_based_decider_input": NUL},
        "gateway_success_rate_based_decider_input",
    ),
    ("/merchant-account/create", {"merchant_id": f"m{NUL}"}, "merchant_id"),
    ("/rule/get", {"merchant_id": f"m{NUL}", "algorithm": "successRate"}, "merchant_id"),
    ("/rule/delete", {"merchant_id": "m_alpha\n", "algorithm": "successRate"}, "merchant_id"),
]


def test_config_endpoints_refuse_unstorable_text(api: Api) -> None:
    for path, body, field in CONFIG_LIMITS:
        answer = api.client.post(path, json=body, headers=api.as_("admin"))
        assert answer.status_code in (400, 422), (path, answer.text)
        assert field in answer.text


# -- APOS's own configuration inputs --------------------------------------------------------


def test_keys_and_experiments_refuse_unstorable_text(api: Api) -> None:
    key = api.client.post(
        "/v1/keys", json={"name": f"ci{NUL}", "role": "viewer"}, headers=api.as_("admin")
    )
    assert key.status_code == 422, key.text
    assert _fields(key) == ["name"]
    scoped = api.client.post(
        "/v1/keys",
        json={"name": "ci", "role": "viewer", "merchant_id": f"m{NUL}"},
        headers=api.as_("admin"),
    )
    assert scoped.status_code == 422, scoped.text
    rules = [{"name": f"r{NUL}", "connectors": ["stripe"]}]
    experiment = {
        "experiment_id": "exp_1",
        "control": {"policy": "rules", "rules": rules},
        "treatment": {"policy": "thompson"},
    }
    answer = api.client.post("/v1/experiments", json=experiment, headers=api.as_("admin"))
    assert answer.status_code == 422, answer.text
    assert _fields(answer) == ["control"]


# -- shutdown writes what is buffered -----------------------------------------------------


def test_buffered_decisions_are_written_at_shutdown(database_url: str) -> None:
    # A flush interval far beyond the test: only the shutdown flush can write them.
    settings = Settings(database_url=database_url, consumer_name="test", decision_flush_ms=600_000)
    services = build_services(settings)
    issued = issue_key("op", Role.OPERATOR, None, datetime.now(UTC))
    services.store.create_api_key(issued.record)
    headers = {"Authorization": f"Bearer {issued.token}"}
    ids = []
    with TestClient(build_app(settings, services)) as client:
        for n in range(5):
            answer = client.post("/v1/route", json=route_body(payment_id=f"p{n}"), headers=headers)
            assert answer.status_code == 200
            ids.append(answer.json()["decision_id"])
        # A row the database refuses, queued past validation, must not keep them out.
        services.writer.add_decision(dataclasses.replace(make_decision(999), payment_id="p\ud800"))
        assert services.decisions.count() == 0
    services.close()
    store = SqlStore(database_url)
    try:
        stored = DecisionStore(store.engine)
        assert all(stored.get(i) is not None for i in ids)
        assert stored.count() == 5
        assert store.count_dead_letters() == 1
    finally:
        store.close()


@pytest.mark.parametrize(
    "path",
    ["/v1/events", "/v1/dead-letters", "/v1/audit", "/v1/anomalies", "/v1/decisions"],
)
def test_a_nul_in_any_query_parameter_is_a_422_naming_it(api: Api, path: str) -> None:
    answer = api.client.get(
        path, params={"merchant_id": "m\x00x", "connector": "a"}, headers=api.as_("admin")
    )
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == ["query.merchant_id"]
