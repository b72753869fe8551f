"""Readiness, status, metrics, OpenAPI and error shapes."""

from __future__ import annotations

import time

from apos.service.bootstrap import BackgroundWorker
from tests.service.conftest import Api, make_event


def test_ready_checks_database_and_bus(api: Api) -> None:
    r = api.client.get("/ready")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok", "bus": "ok"}


def test_status_reports_components_counts_and_mode(api: Api) -> None:
    api.client.post(
        "/v1/events",
        json=[make_event(1), make_event(2, currency="nope")],
        headers=api.as_("operator"),
    )
    body = api.client.get("/v1/status", headers=api.as_("viewer")).json()
    assert body["version"] and body["autonomy_mode"] == "propose"
    assert body["counts"] == {"events": 1, "dead_letters": 1}
    assert body["components"]["database"]["status"] == "ok"
    assert body["components"]["event_bus"]["backend"] == "in_process"


def test_metrics_use_the_seed_names_and_count_events(api: Api) -> None:
    api.client.post("/v1/events", json=[make_event(1), make_event(1)], headers=api.as_("operator"))
    text = api.client.get("/metrics").text
    for name in (
        "apos_events_processed_total",
        "apos_decisions_total",
        "apos_anomalies_detected_total",
        "apos_healing_actions_total",
        "apos_decision_latency_bucket",
    ):
        assert name in text or name.replace("_total", "") in text, name
    assert 'apos_events_processed_total{result="accepted",source="http"} 1.0' in text
    assert 'apos_events_processed_total{result="duplicate",source="http"} 1.0' in text


def test_openapi_documents_the_event_schema(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    assert "/v1/events" in doc["paths"] and "/v1/webhooks/hyperswitch" in doc["paths"]
    event = doc["components"]["schemas"]["PaymentEvent"]
    assert {"event_id", "amount", "currency", "occurred_at"} <= set(event["required"])


def test_errors_carry_code_message_and_request_id(api: Api) -> None:
    r = api.client.get("/v1/nothing-here", headers={**api.as_("viewer"), "X-Request-ID": "abc"})
    assert r.status_code == 404
    assert r.json()["code"] == "not_found" and r.json()["request_id"] == "abc"
    assert r.headers["x-request-id"] == "abc"


def test_status_shows_a_failing_or_stopped_worker() -> None:
    failing = BackgroundWorker("flaky", lambda: 1 // 0)
    idle = BackgroundWorker("idle", lambda: 0, idle_sleep=0.01)
    assert failing.status == idle.status == "stopped"
    failing.start()
    idle.start()
    try:
        deadline = time.time() + 5
        while failing.failures == 0:
            assert time.time() < deadline
            time.sleep(0.01)
        assert (failing.status, idle.status) == ("failing", "running")
    finally:
        failing.stop()
        idle.stop()
    assert failing.status == "stopped"


def test_status_lists_each_worker_with_its_state(api: Api) -> None:
    first, *others = api.services.workers
    workers = api.client.get("/v1/status", headers=api.as_("viewer")).json()["components"][
        "workers"
    ]
    assert workers == {w.name: "running" for w in api.services.workers}
    first.stop()  # a worker that died is reported, not shown as running
    workers = api.client.get("/v1/status", headers=api.as_("viewer")).json()["components"][
        "workers"
    ]
    assert workers[first.name] == "stopped"
    assert all(workers[w.name] == "running" for w in others)
    first.start()
