"""The accepted window of event time, through the service (docs/api.md, "Event time")."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from apos.core.event_time import EventTimeWindow
from apos.core.events import parse_event
from apos.core.payment import Payment
from apos.service.bootstrap import build_services
from apos.service.routing import RoutingService
from apos.settings import Settings
from tests.service.conftest import Api, make_event


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def train(api: Api, merchant: str, key: str) -> None:
    now = time.time() - 1
    events = [
        make_event(
            i,
            event_id=f"evt_{merchant}_{connector}_{i}",
            payment_id=f"pay_{merchant}_{connector}_{i}",
            merchant_id=merchant,
            connector=connector,
            status="succeeded" if i % 20 < (19 if connector == "adyen" else 10) else "failed",
            occurred_at=iso(now),
        )
        for connector in ("adyen", "stripe")
        for i in range(200)
    ]
    answer = api.client.post("/v1/events", json=events, headers=api.as_(key))
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 400


def probe(api: Api, merchant: str) -> tuple[str, bool]:
    payment = Payment(
        payment_id="probe",
        merchant_id=merchant,
        amount=1999,
        currency="USD",
        card_network="visa",
        country="US",
    )
    decision = api.services.routing.route(payment)
    return decision.connector, decision.fallback


def test_a_far_future_event_is_refused_dead_lettered_and_harms_no_merchant(api: Api) -> None:
    train(api, "m_beta", "beta")
    assert probe(api, "m_beta") == ("adyen", False)
    letters_before = api.services.store.count_dead_letters()

    answer = api.client.post(
        "/v1/events",
        json=make_event(9, status="failed", occurred_at="9999-12-31T23:59:59Z"),
        headers=api.as_("alpha"),
    )
    assert answer.status_code == 422
    body = answer.json()
    assert [e["field"] for e in body["errors"]] == ["occurred_at"]
    assert "ahead of the time APOS received" in body["errors"][0]["message"]
    assert api.services.store.get_event("evt_9") is None
    assert api.services.store.count_dead_letters() == letters_before + 1
    assert api.services.store.count_dead_letters("m_alpha") == 1

    assert probe(api, "m_beta") == ("adyen", False)


def test_an_event_within_the_skew_is_accepted_and_one_past_the_horizon_is_stored_not_learnt(
    api: Api,
) -> None:
    routing = api.services.routing
    learnt = routing.events_learned
    soon = make_event(1, occurred_at=iso(time.time() + 120))
    old = make_event(2, occurred_at=iso(time.time() - 8 * 86_400))
    answer = api.client.post("/v1/events", json=[soon, old], headers=api.as_("alpha"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 2
    assert api.services.store.get_event("evt_2") is not None
    assert routing.events_learned == learnt + 1
    assert routing.events_not_learnt == 1


def test_the_window_is_configurable(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, event_max_future_s=10, event_max_age_s=60)
    services = build_services(settings)
    try:
        ahead = make_event(1, occurred_at=iso(time.time() + 30))
        report = services.ingestor.ingest([ahead], "http")
        assert report.accepted == 0
        assert [e.field for e in report.rejected[0].errors] == ["occurred_at"]
        assert "10 s ahead" in report.rejected[0].errors[0].message
    finally:
        services.close()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_an_event_clock_follows_events_but_never_past_receipt_plus_the_skew() -> None:
    from apos import Engine
    from apos.service.metrics import Metrics

    wall = FakeClock(1_795_600_000.0)
    routing = RoutingService(
        Engine(["stripe", "adyen"], seed=1),
        Metrics(),
        None,
        clock=wall,
        follow_event_time=True,
        window=EventTimeWindow(max_future_s=3_600, max_age_s=86_400),
    )
    ahead = parse_event(make_event(1, occurred_at=iso(wall.now + 1_800)))
    routing.learn([ahead])
    assert routing.now().timestamp() == wall.now + 1_800
    # Stored by an older version, or replayed from an old stream: not learnt, no clock move.
    far = parse_event(make_event(2, payment_id="pay_2", occurred_at="9999-12-31T23:59:59Z"))
    routing.learn([far])
    assert routing.now().timestamp() == wall.now + 1_800
    assert routing.events_learned == 1
    assert routing.events_not_learnt == 1


def test_a_snapshot_dated_past_the_window_is_not_restored(sqlite_url: str) -> None:
    from apos.service.bootstrap import save_snapshot

    settings = Settings(database_url=sqlite_url, consumer_name="one")
    first = build_services(settings)
    try:
        train_far = parse_event(make_event(1, occurred_at="9999-12-31T23:59:59Z"))
        # What an older version did: learn at the event's own far-future time.
        first.routing.engine.observe(train_far, train_far.occurred_ts)
        assert first.routing.engine.clock > time.time() + 86_400
        save_snapshot(first)
    finally:
        first.close()
    second = build_services(settings)
    try:
        assert second.routing.engine.clock < time.time() + settings.event_max_future_s
    finally:
        second.close()


def test_no_event_moves_the_detection_clock_past_the_wall_clock(sqlite_url: str) -> None:
    services = build_services(Settings(database_url=sqlite_url))
    try:
        detection = services.detection
        assert detection is not None
        ahead = make_event(1, occurred_at=iso(time.time() + 200))  # inside the skew
        assert services.ingestor.ingest([ahead], "http").accepted == 1
        assert detection.events_observed == 1
        assert detection.now <= time.time()
        # Past the window (stored by an older version, or replayed): not observed at all.
        far = parse_event(make_event(2, payment_id="pay_2", occurred_at="9999-12-31T23:59:59Z"))
        detection.observe([far])
        assert detection.now <= time.time()
        assert detection.events_outside_window == 1
    finally:
        services.close()
