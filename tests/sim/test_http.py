"""The HTTP mode: the adapter's requests, and a run against the real service app."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from apos.core.payment import Payment
from apos.sim.http import HttpRouter, Pacer, run_http
from apos.sim.scenario import parse_scenario
from apos.sim.stream import build_stream
from tests.sim.conftest import tiny_doc


def test_adapter_posts_payment_and_batched_events_with_the_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/route":
            body = json.loads(request.content)
            return httpx.Response(
                200,
                json={
                    "connector": body["eligible_connectors"][0],
                    "decision_id": "dec_1",
                    "explored": True,
                },
            )
        return httpx.Response(202, json={"accepted": len(json.loads(request.content))})

    client = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://apos")
    router = HttpRouter(api_key="k_secret", client=client, batch_size=2)
    payment = Payment("pay_1", "m1", 1999, "USD", "card", "visa", "US", "credit", ("b", "a"))
    decision = router.route(payment, 0.0)
    assert decision == ("b", "dec_1", True)
    route = seen[0]
    assert route.headers["authorization"] == "Bearer k_secret"
    assert json.loads(route.content) == {
        "payment_id": "pay_1",
        "merchant_id": "m1",
        "amount": 1999,
        "currency": "USD",
        "payment_method": "card",
        "card_network": "visa",
        "country": "US",
        "payment_method_type": "credit",
        "eligible_connectors": ["b", "a"],
    }
    stream = build_stream(parse_scenario(tiny_doc()), seed=1, payments=50)
    from apos.sim.runner import outcome_event

    events = [
        outcome_event(stream, i, payment, "b", i % 2 == 0, 1, 250.0, 10.0 + i, "dec_1")
        for i in range(3)
    ]
    router.observe(events[0], 11.0)
    assert len(seen) == 1  # queued
    router.observe(events[1], 12.0)
    assert len(seen) == 2  # a full batch is posted
    router.observe(events[2], 13.0)
    router.tick(14.0)  # the tick posts the rest
    posted = [json.loads(r.content) for r in seen[1:]]
    assert [len(b) for b in posted] == [2, 1]
    assert posted[0][0]["event_id"] == events[0].event_id
    assert posted[0][1]["error_code"] == "do_not_honor"
    assert router.events_posted == 3


def test_errors_are_raised_with_the_answer() -> None:
    client = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(401, json={"code": "unauthorized"})),
        base_url="http://apos",
    )
    with pytest.raises(RuntimeError, match="401"):
        HttpRouter(client=client).route(Payment("p", "m", 1, "USD"), 0.0)


def test_pacer_follows_simulated_time() -> None:
    pacer = Pacer(speed=100.0)
    began = time.monotonic()
    pacer.wait(1000.0)
    pacer.wait(1010.0)  # 10 simulated seconds at 100x: 0.1 s
    assert 0.09 <= time.monotonic() - began < 0.5


def test_run_against_the_real_service(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from apos.adapters.db import upgrade_database
    from apos.service.app import build_app
    from apos.service.auth import Role, issue_key
    from apos.service.bootstrap import build_services
    from apos.settings import Settings

    url = f"sqlite:///{tmp_path / 'apos.db'}"
    upgrade_database(url)
    doc = tiny_doc()
    doc["connectors"][0]["name"], doc["connectors"][1]["name"] = "stripe", "adyen"
    doc["events"][0]["connector"] = "stripe"
    scenario = parse_scenario(doc)
    # Unpaced, simulated time runs ahead of the wall clock: run the service as apos demo
    # does, on event time with a skew that covers the scenario (docs/api.md, "Event time").
    settings = Settings(
        database_url=url, clock="event", event_max_future_s=scenario.traffic.duration + 300
    )
    services = build_services(settings)
    issued = issue_key("sim", Role.OPERATOR, None, datetime.now(UTC))
    services.store.create_api_key(issued.record)
    try:
        with TestClient(build_app(settings, services)) as client:
            result = run_http(
                scenario,
                api_key=issued.token,
                client=client,
                speed=None,
                payments=300,
                baselines=("round_robin", "oracle"),
            )
            listed = client.get(
                "/v1/events",
                params={"limit": 5},
                headers={"Authorization": f"Bearer {issued.token}"},
            )
    finally:
        services.close()
    apos = result.routers["apos"]
    assert apos.payments == 300 and apos.invalid == 0
    assert set(result.routers) == {"apos", "round_robin", "oracle"}
    assert listed.status_code == 200 and listed.json()["items"]
