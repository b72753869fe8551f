"""Card numbers and customer data stay out of everything APOS keeps or returns.

Card numbers go in through every input path (HTTP events, routing, Hyperswitch webhooks,
Redis Streams, ``apos ingest``, the decision-engine API, experiments, keys), in every
identifier and code field, as unknown field names, currencies, path parameters and request
ids; Hyperswitch webhooks carry a customer's e-mail, name, phone and addresses. Then every
row of every table, the Redis streams APOS wrote, the captured logs and every response (body
and headers) are scanned for them, in every spelling.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from apos.adapters.db.models import metadata
from apos.cli.main import app as cli_app
from apos.service.app import build_app
from apos.service.auth import Role
from apos.service.bootstrap import build_services
from apos.service.logs import configure_logging
from apos.settings import Settings
from tests.service.conftest import Api, make_event

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

FIXTURES = Path(__file__).parent.parent / "fixtures"

VISA = "4111111111111111"
MASTERCARD = "5555 5555 5555 4444"
AMEX = "3782-822463-10005"  # Amex grouping, with dashes
VISA_DASHED = "4111-1111-1111-1111"
MASTERCARD_COMPACT = MASTERCARD.replace(" ", "")
AMEX_COMPACT = AMEX.replace("-", "")

EMAIL = "jane.qpii.roe@example.com"
NAME = "Jane Qpii Roe"
PHONE = "7700900461"
LINE1 = "742 Qpii Evergreen Terrace"
CITY = "Qpiiville"
ZIP = "QP1 9ZZ"
CUSTOMER_ID = "cus_QpiiCustomer77"
PII = (EMAIL, NAME, PHONE, LINE1, CITY, ZIP, CUSTOMER_ID)


def spellings(card: str) -> set[str]:
    """A card number as sent, compact, and in groups of four with spaces and with dashes."""
    digits = "".join(c for c in card if c.isdigit())
    groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return {card, digits, " ".join(groups), "-".join(groups)}


FORBIDDEN = sorted(set().union(*(spellings(c) for c in (VISA, MASTERCARD, AMEX))) | set(PII))


class Recorder:
    """The test client; every response (status line, headers, body) is kept to be scanned."""

    def __init__(self, client: TestClient, api: Api) -> None:
        self.client = client
        self.api = api
        self.seen: list[str] = []

    def __call__(self, method: str, path: str, who: str = "operator", **kw: Any) -> httpx.Response:
        headers = {**self.api.as_(who), **kw.pop("headers", {})}
        response = self.client.request(method, path, headers=headers, **kw)
        self.seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response


def fields_of(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


def webhook(n: int, **object_changes: Any) -> dict[str, Any]:
    """A failed card payment webhook whose customer has an e-mail, name, phone, addresses."""
    payload = json.loads((FIXTURES / "hyperswitch" / "payment_failed_card.json").read_text())
    payload["event_id"] = f"evt_hs_{n}"  # each its own (dead letters are kept once per id)
    obj = payload["content"]["object"]
    address = {
        "address": {"line1": LINE1, "city": CITY, "zip": ZIP, "first_name": NAME},
        "phone": {"number": PHONE, "country_code": "+44"},
        "email": EMAIL,
    }
    obj.update(
        customer={"id": CUSTOMER_ID, "name": NAME, "email": EMAIL, "phone": PHONE},
        customer_id=CUSTOMER_ID,
        email=EMAIL,
        name=NAME,
        phone=PHONE,
        billing=copy.deepcopy(address),
        shipping=copy.deepcopy(address),
    )
    obj["payment_method_data"]["billing"] = copy.deepcopy(address)
    obj["payment_method_data"]["card"]["card_holder_name"] = NAME
    obj.update(object_changes)
    return payload


def dump_database(url: str) -> str:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        texts = [
            f"{table.name}: "
            + " | ".join(conn.execute(sa.text(f'SELECT t::text FROM "{table.name}" t')).scalars())
            for table in metadata.sorted_tables
        ]
    engine.dispose()
    return "\n".join(texts)


def dump_applied_stream(url: str, stream: str) -> str:
    """What APOS wrote to Redis (the input stream holds what the test itself sent)."""
    client = redis.Redis.from_url(url)
    entries = client.xrange(f"{stream}:applied")
    client.close()
    return repr(entries)


def test_card_numbers_and_customer_data_are_refused_and_never_kept_or_returned(
    postgres_url: str,
    redis_url: str,
    stream_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logs = io.StringIO()
    configure_logging("info", json=True, stream=logs)
    settings = Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        event_stream=stream_name,
        consumer_group="g",
        consumer_name="c1",
        stream_block_ms=50,
    )
    services = build_services(settings)
    app = build_app(settings, services)
    cli_output: list[str] = []
    try:
        with TestClient(app) as client:
            api = Api(client, services, {})
            api.add_key("admin", Role.ADMIN)
            api.add_key("operator", Role.OPERATOR)
            api.add_key("alpha", Role.OPERATOR, "m_alpha")
            call = Recorder(client, api)
            _events_api(call)
            _route_api(call)
            _webhooks(call)
            _decision_engine_api(call)
            _experiments_and_keys(call)
            _redis_stream(services, redis_url, stream_name)
        cli_output = _cli(postgres_url, tmp_path, monkeypatch)
        responses = "\n".join(call.seen)
    finally:
        services.close()
        logging.getLogger().handlers[:] = []

    stored = dump_database(postgres_url)
    assert "evt_ok_1" in stored and "evt_file_ok" in stored  # the valid inputs were stored
    assert "dead_letters: " in stored and stored.count("webhook.hyperswitch") >= 4
    applied = dump_applied_stream(redis_url, stream_name)
    assert "evt_ok_1" in applied
    for where, text in (
        ("the database", stored),
        ("the applied stream", applied),
        ("the logs", logs.getvalue()),
        ("the responses", responses),
        ("the CLI output", "\n".join(cli_output)),
    ):
        leaked = [value for value in FORBIDDEN if value in text]
        assert not leaked, f"{leaked} found in {where}"


def _events_api(call: Recorder) -> None:
    base = make_event(1, event_id="evt_ok_1")
    cases = {
        "event_id": VISA,
        "payment_id": f"pay_{AMEX}",
        "merchant_id": f"m-{VISA}",
        "profile_id": MASTERCARD_COMPACT,
        "connector": AMEX,
        "payment_method": f"card-{VISA_DASHED}",
        "payment_method_type": MASTERCARD_COMPACT,
        "card_network": VISA_DASHED,
        "error_code": f"declined {MASTERCARD}",
        "decision_id": f"dec_{AMEX_COMPACT}",
        "currency": MASTERCARD,
    }
    batch = [base] + [
        make_event(i + 10, **{field: value}) for i, (field, value) in enumerate(cases.items())
    ]
    batch.append({**make_event(99), VISA: "an unknown field named by a card number"})
    response = call("POST", "/v1/events", json=batch)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["accepted"] == 1
    rejected = {r["index"]: r for r in report["rejected"]}
    for index, field in enumerate(cases, start=1):
        assert field in fields_of(rejected[index]), (field, rejected[index])
        assert rejected[index]["event_id"] != VISA
    assert fields_of(rejected[len(batch) - 1]) == ["[card ****1111]"]

    single = call("POST", "/v1/events", json=make_event(5, event_id=VISA_DASHED))
    assert single.status_code == 422 and fields_of(single.json()) == ["event_id"]
    # A request id holding a card number is replaced, not sent back (nor logged).
    tagged = call("POST", "/v1/events", json=base, headers={"X-Request-ID": f"req {MASTERCARD}"})
    assert tagged.status_code == 200 and tagged.headers["x-request-id"]
    assert call("GET", f"/v1/events/{VISA}").status_code == 404
    assert call("GET", f"/v1/events?merchant_id={VISA}", who="alpha").status_code == 403


def _route_api(call: Recorder) -> None:
    base = {"payment_id": "pay_r1", "merchant_id": "m_alpha", "amount": 1000, "currency": "USD"}
    cases = {
        "payment_id": VISA,
        "merchant_id": f"m-{AMEX}",
        "payment_method": VISA_DASHED,
        "payment_method_type": MASTERCARD_COMPACT,
        "card_network": AMEX_COMPACT,
        "eligible_connectors": ["stripe", VISA_DASHED],
        "currency": MASTERCARD,
    }
    for field, value in cases.items():
        response = call("POST", "/v1/route", json={**base, field: value})
        assert response.status_code == 422, (field, response.text)
        assert any(f.startswith(field) for f in fields_of(response.json())), response.text
    unknown = call("POST", "/v1/route", json={**base, VISA: 1})
    assert unknown.status_code == 422 and fields_of(unknown.json()) == ["[card ****1111]"]
    assert call("POST", "/v1/route", json=base).status_code == 200


def _webhooks(call: Recorder) -> None:
    path = "/v1/webhooks/hyperswitch"
    for n, (changes, field) in enumerate(
        (
            ({"payment_id": f"pay_{VISA}"}, "content.object.payment_id"),
            ({"connector": AMEX}, "content.object.connector"),
            ({"error_code": MASTERCARD}, "content.object.error_code"),
        )
    ):
        response = call("POST", path, json=webhook(n, **changes))
        # Refused and dead-lettered (answered 2xx, so Hyperswitch does not retry it).
        assert response.status_code in (200, 422), response.text
        assert response.json().get("status") != "accepted", response.text
        assert field in fields_of(response.json()), response.text
    card_event = webhook(10)
    card_event["event_id"] = VISA_DASHED
    assert call("POST", path, json=card_event).json().get("status") != "accepted"
    accepted = call("POST", path, json=webhook(11))
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted", accepted.text
    # Unusable (a failure no connector handled) and not JSON at all: kept as dead letters.
    assert call("POST", path, json=webhook(12, connector=None)).status_code < 500
    broken = f'{{"email": "{EMAIL}", "name": "{NAME}", "content": {{"customer_id": "{CUSTOMER_ID}"'
    assert call("POST", path, content=broken.encode()).status_code == 400


def _decision_engine_api(call: Recorder) -> None:
    refused = call("POST", "/merchant-account/create", who="admin", json={"merchant_id": VISA})
    assert refused.status_code == 422, refused.text
    created = call("POST", "/merchant-account/create", who="admin", json={"merchant_id": "m_de"})
    assert created.status_code == 200, created.text
    assert call("GET", f"/merchant-account/{VISA}", who="admin").status_code == 404

    def decide_body(**info: Any) -> dict[str, Any]:
        body = json.loads(
            (FIXTURES / "decision_engine" / "decide_gateway_sr_based.json").read_text()
        )
        body["merchantId"] = info.pop("merchantId", "m_de")
        body["eligibleGatewayList"] = info.pop("eligibleGatewayList", ["stripe", "adyen"])
        body["paymentInfo"].update(info)
        return body

    for changes in (
        {"paymentId": VISA},
        {"merchantId": AMEX},
        {"eligibleGatewayList": ["stripe", MASTERCARD]},
        {"eligibleGatewayList": ["stripe", VISA_DASHED]},
        {"preferredGateway": VISA_DASHED},
        {"paymentMethod": MASTERCARD},
        {"paymentMethodType": AMEX},
        {"cardNetwork": VISA},
        {"currency": MASTERCARD},
    ):
        response = call("POST", "/decide-gateway", json=decide_body(**changes))
        assert response.status_code == 400, (changes, response.text)
    assert (
        call("POST", "/decide-gateway", json=decide_body(paymentId="pay_de_1")).status_code == 200
    )

    update = {
        "merchantId": "m_de",
        "gateway": "stripe",
        "status": "CHARGED",
        "paymentId": "pay_de_1",
    }
    for changes in ({"gateway": VISA_DASHED}, {"paymentId": MASTERCARD_COMPACT}):
        response = call("POST", "/update-gateway-score", json={**update, **changes})
        assert response.status_code == 400, (changes, response.text)
    assert call("POST", "/update-gateway-score", json=update).status_code == 200

    rule = {
        "merchant_id": "m_de",
        "config": {
            "type": "successRate",
            "data": {
                "defaultGatewayExtraScore": [{"gatewayName": VISA, "gatewaySigmaFactor": 1.0}],
                "subLevelInputConfig": [{"paymentMethod": AMEX, "bucketSize": 10}],
            },
        },
    }
    for path in ("/rule/create", "/rule/update"):
        response = call("POST", path, who="admin", json=rule)
        assert response.status_code == 400, response.text
        fields = [e["field"] for e in response.json()["data"]["errors"]]
        assert fields == ["defaultGatewayExtraScore.0.gatewayName"], response.text


def _experiments_and_keys(call: Recorder) -> None:
    arms = {"control": {"policy": "rules"}, "treatment": {"policy": "thompson"}}
    for body, field in (
        ({"experiment_id": VISA, **arms}, "experiment_id"),
        ({"experiment_id": "exp_1", "merchant_id": AMEX, **arms}, "merchant_id"),
        (
            {"experiment_id": "exp_1", **arms, "control": {"priority": [MASTERCARD_COMPACT]}},
            "control",
        ),
    ):
        response = call("POST", "/v1/experiments", who="admin", json=body)
        assert response.status_code == 422 and field in fields_of(response.json()), response.text
    assert call("GET", f"/v1/experiments/{VISA}").status_code == 404

    for body, field in (
        ({"name": f"checkout {VISA}", "role": "viewer"}, "name"),
        ({"name": "checkout", "role": "viewer", "merchant_id": AMEX}, "merchant_id"),
    ):
        response = call("POST", "/v1/keys", who="admin", json=body)
        assert response.status_code == 422 and fields_of(response.json()) == [field]
    assert call("DELETE", f"/v1/keys/{VISA}", who="admin").status_code == 404


def _redis_stream(services: Any, url: str, stream: str) -> None:
    before = services.store.count_dead_letters()
    payloads = [
        orjson.dumps(make_event(201, event_id=VISA)),
        orjson.dumps(make_event(202, connector=AMEX)),
        orjson.dumps(make_event(203, error_code=MASTERCARD)),
        orjson.dumps({**make_event(204), VISA_DASHED: 1}),
        f'{{"event_id": "{MASTERCARD}", broken'.encode(),
    ]
    client = redis.Redis.from_url(url)
    for payload in payloads:
        client.xadd(stream, {"event": payload})
    client.close()
    deadline = time.monotonic() + 20
    while services.store.count_dead_letters() < before + len(payloads):
        assert time.monotonic() < deadline, "the stream was not consumed in time"
        time.sleep(0.05)


def _cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("APOS_DATABASE_URL", database_url)
    monkeypatch.delenv("APOS_REDIS_URL", raising=False)
    runner = CliRunner()
    lines = [
        orjson.dumps(make_event(301, event_id="evt_file_ok")),
        orjson.dumps(make_event(302, payment_id=f"pay-{VISA_DASHED}")),
        orjson.dumps(make_event(303, card_network=AMEX_COMPACT)),
        orjson.dumps({**make_event(304), MASTERCARD: 1}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    ingested = runner.invoke(cli_app, ["ingest", str(path)])
    assert ingested.exit_code == 0, ingested.output
    assert '"accepted":1' in ingested.output and '"rejected":3' in ingested.output
    key = runner.invoke(cli_app, ["keys", "create", "--name", f"pos {VISA}"])
    assert key.exit_code == 2 and "--name" in key.output
    scoped = runner.invoke(cli_app, ["keys", "create", "--name", "pos", "--merchant-id", AMEX])
    assert scoped.exit_code == 2 and "--merchant-id" in scoped.output
    return [ingested.output, key.output, scoped.output]
