"""Routing state survives restarts (snapshots) and is shared across instances (Redis)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from apos.core.events import parse_event
from apos.core.payment import Payment
from apos.service.app import build_app
from apos.service.applied import APPLIED_CHUNK, _AppliedRetention
from apos.service.auth import Role, issue_key
from apos.service.bootstrap import build_services, save_snapshot
from apos.settings import Settings
from tests.service.conftest import make_event


def outcomes(connector: str, ok: int, bad: int, start: int) -> list[dict[str, object]]:
    now = time.time() - 1
    return [
        make_event(
            start + i,
            connector=connector,
            payment_id=f"pay_{start + i}",
            status="succeeded" if (i * 37) % (ok + bad) < ok else "failed",
            occurred_at=now,
        )
        for i in range(ok + bad)
    ]


def shared_settings(postgres_url: str, redis_url: str, stream: str) -> dict[str, object]:
    """Settings for instances sharing one PostgreSQL and one Redis."""
    return {
        "database_url": postgres_url,
        "redis_url": redis_url,
        "event_stream": stream,
        "stream_block_ms": 50,
    }


def scores(services) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The learnt score (posterior mean) of each connector for the training context."""
    payment = Payment(
        payment_id="probe",
        merchant_id="m_alpha",
        amount=1999,
        currency="USD",
        card_network="visa",
        country="US",
    )
    return dict(services.routing.route(payment).alternatives)


def learnt_adyen_best(services) -> bool:  # type: ignore[no-untyped-def]
    s = scores(services)
    return s["adyen"] > 0.8 and s["stripe"] < 0.3 and s["checkout"] < 0.3


TRAINING = [
    *outcomes("stripe", 5, 95, 0),
    *outcomes("checkout", 5, 95, 100),
    *outcomes("adyen", 95, 5, 200),
]


def test_restarted_instance_warms_up_from_the_snapshot(database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, consumer_name="one")
    first = build_services(settings)
    first.ingestor.ingest(TRAINING, "test")
    assert learnt_adyen_best(first)
    learnt = scores(first)
    save_snapshot(first)
    first.close()
    second = build_services(settings)
    assert second.routing.events_learned == 300
    assert learnt_adyen_best(second)  # warm: no events were replayed
    assert scores(second) == pytest.approx(learnt, abs=0.02)
    cold = build_services(Settings(database_url=f"sqlite:///{tmp_path / 'cold.db'}"))
    cold_scores = scores(cold)
    assert cold_scores["adyen"] == pytest.approx(cold_scores["stripe"])  # nothing learnt
    for services in (second, cold):
        services.close()


def test_restored_instances_draw_distinct_decision_ids(sqlite_url: str) -> None:
    a = build_services(Settings(database_url=sqlite_url, consumer_name="a"))
    save_snapshot(a)
    b = build_services(Settings(database_url=sqlite_url, consumer_name="b"))
    c = build_services(Settings(database_url=sqlite_url, consumer_name="c"))
    payment = Payment(payment_id="p", merchant_id="m", amount=1, currency="USD")
    assert b.routing.route(payment).decision_id != c.routing.route(payment).decision_id
    for s in (a, b, c):
        s.close()


@pytest.mark.redis
@pytest.mark.postgres
def test_instances_share_learning_through_the_applied_stream(
    postgres_url: str, redis_url: str, stream_name: str
) -> None:
    common = shared_settings(postgres_url, redis_url, stream_name)
    a = build_services(Settings(**common, consumer_name="a"))
    b = build_services(Settings(**common, consumer_name="b"))
    a.start()
    b.start()
    try:
        a.ingestor.ingest(TRAINING, "http")  # stored once, by instance a
        deadline = time.time() + 10
        while b.routing.events_learned < 300 or a.routing.events_learned < 300:
            assert time.time() < deadline, (a.routing.events_learned, b.routing.events_learned)
            time.sleep(0.05)
        assert a.routing.events_learned == b.routing.events_learned == 300
        assert learnt_adyen_best(b)
        # a restarted b resumes after its snapshot's stream position: nothing learnt twice
        b.close()
        b2 = build_services(Settings(**common, consumer_name="b"))
        b2.start()
        a.ingestor.ingest(outcomes("adyen", 10, 0, 900), "http")
        deadline = time.time() + 10
        while b2.routing.events_learned < 310:
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        assert b2.routing.events_learned == 310
        b2.close()
    finally:
        a.close()


@pytest.mark.redis
@pytest.mark.postgres
def test_the_applied_stream_carries_chunks_and_still_reads_single_event_entries(
    postgres_url: str, redis_url: str, stream_name: str
) -> None:
    settings = Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        event_stream=stream_name,
        stream_block_ms=50,
        consumer_name="a",
    )
    a = build_services(settings)
    a.start()
    client = redis.Redis.from_url(redis_url)
    try:
        a.ingestor.ingest(TRAINING, "http")
        assert client.xlen(settings.applied_stream) == 300 // APPLIED_CHUNK
        # an entry as earlier versions wrote it (one event object), then an unreadable one
        legacy = parse_event(make_event(5_000, connector="adyen", occurred_at=time.time() - 1))
        client.xadd(settings.applied_stream, {"event": legacy.model_dump_json()})
        client.xadd(settings.applied_stream, {"event": b"[{not json"})
        deadline = time.time() + 10
        while a.routing.events_learned < 301:
            assert time.time() < deadline, a.routing.events_learned
            time.sleep(0.05)
        a.ingestor.ingest(outcomes("adyen", 3, 0, 6_000), "http")  # the tail reads on
        while a.routing.events_learned < 304:
            assert time.time() < deadline, a.routing.events_learned
            time.sleep(0.05)
    finally:
        client.close()
        a.close()


def test_the_applied_stream_keeps_about_stream_maxlen_events_whatever_the_chunk_size() -> None:
    retention = _AppliedRetention(200_000)
    assert retention.entries_after(1) == 200_000  # single events: one entry each
    for _ in range(2_000):
        maxlen = retention.entries_after(APPLIED_CHUNK)
    assert maxlen == pytest.approx(200_000 // APPLIED_CHUNK, rel=0.01)
    for _ in range(2_000):
        maxlen = retention.entries_after(10)
    assert maxlen == pytest.approx(200_000 // 10, rel=0.01)
    # a small stream_maxlen still keeps enough entries for a restarted tail to resume
    small = _AppliedRetention(5_000)
    assert [small.entries_after(APPLIED_CHUNK) for _ in range(1_000)][-1] == 1_000


def _until(check, what: str, seconds: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + seconds
    while not check():
        assert time.time() < deadline, what
        time.sleep(0.05)


@pytest.mark.redis
@pytest.mark.postgres
def test_an_experiment_started_on_one_instance_runs_and_counts_on_every_instance(
    postgres_url: str, redis_url: str, stream_name: str
) -> None:
    common = shared_settings(postgres_url, redis_url, stream_name)
    settings_a = Settings(**common, consumer_name="a")
    settings_b = Settings(**common, consumer_name="b")
    a, b = build_services(settings_a), build_services(settings_b)
    with (
        TestClient(build_app(settings_a, a)) as on_a,
        TestClient(build_app(settings_b, b)) as on_b,
    ):
        # an admin: experiments are configuration; it may route and send events too
        issued = issue_key("ops", Role.ADMIN, None, datetime.now(UTC))
        a.store.create_api_key(issued.record)
        key = {"Authorization": f"Bearer {issued.token}"}
        body = {
            "experiment_id": "exp_shared",
            "control": {"policy": "rules"},
            "treatment": {"policy": "thompson"},
            "merchant_id": "m_alpha",
        }
        r = on_a.post("/v1/experiments", json=body, headers=key)
        assert r.status_code == 201, r.text
        # b learns of it from the stream, without a restart, and splits its own traffic
        _until(
            lambda: on_b.get("/v1/experiments/exp_shared", headers=key).status_code == 200,
            "b never saw the experiment",
        )
        payment = {"merchant_id": "m_alpha", "amount": 1999, "currency": "USD"}
        d = on_b.post("/v1/route", json={**payment, "payment_id": "pay_x1"}, headers=key).json()
        assert d["experiment"]["id"] == "exp_shared"
        # its outcome, stored by a, counts on both; an unrouted payment's counts nowhere
        events = [
            make_event(
                1, payment_id="pay_x1", connector=d["connector"], decision_id=d["decision_id"]
            ),
            make_event(2, payment_id="pay_x2", connector="stripe"),
        ]
        for event in events:
            event["occurred_at"] = time.time()
        assert on_a.post("/v1/events", json=events, headers=key).json()["accepted"] == 2

        def attempts(client: TestClient) -> int:
            got = client.get("/v1/experiments/exp_shared", headers=key).json()
            return int(got["control"]["attempts"] + got["treatment"]["attempts"])

        _until(lambda: attempts(on_a) == 1 and attempts(on_b) == 1, "outcome not counted")
        time.sleep(0.3)
        assert attempts(on_a) == attempts(on_b) == 1
        # the id is taken everywhere; stopping on b stops it on a
        assert on_b.post("/v1/experiments", json=body, headers=key).status_code == 409
        stopped = on_b.post("/v1/experiments/exp_shared/stop", headers=key)
        assert stopped.status_code == 200 and stopped.json()["running"] is False
        _until(
            lambda: on_a.get("/v1/experiments/exp_shared", headers=key).json()["running"] is False,
            "a never saw the stop",
        )
        d = on_a.post("/v1/route", json={**payment, "payment_id": "pay_x3"}, headers=key).json()
        assert d["experiment"] is None
    a.close()
    b.close()
