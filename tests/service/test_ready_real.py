"""/ready and /v1/status on the real PostgreSQL and Redis, and when either is unreachable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from fastapi.testclient import TestClient

from apos.service.app import build_app
from apos.service.auth import Role
from apos.service.bootstrap import build_services
from apos.settings import Settings
from tests.service.conftest import Api, make_event

UNREACHABLE_PG = "postgresql://postgres@127.0.0.1:1/none"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@contextmanager
def running(settings: Settings, migrate: bool = True) -> Iterator[Api]:
    services = build_services(settings, migrate=migrate)
    try:
        with TestClient(build_app(settings, services)) as client:
            api = Api(client, services, {})
            yield api
    finally:
        services.close()


def _settings(database_url: str, redis_url: str, stream: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        event_stream=stream,
        consumer_name="test",
        stream_block_ms=50,
    )


@pytest.mark.postgres
@pytest.mark.redis
def test_ready_and_status_on_postgres_and_redis(
    postgres_url: str, redis_url: str, stream_name: str
) -> None:
    with running(_settings(postgres_url, redis_url, stream_name)) as api:
        r = api.client.get("/ready")
        assert r.status_code == 200
        assert r.json() == {"status": "ready", "checks": {"database": "ok", "bus": "ok"}}
        api.add_key("operator", Role.OPERATOR)
        api.add_key("alpha", Role.VIEWER, "m_alpha")
        events = [make_event(1), make_event(2, merchant_id="m_beta"), make_event(3, currency="?")]
        api.client.post("/v1/events", json=events, headers=api.as_("operator"))
        body = api.client.get("/v1/status", headers=api.as_("operator")).json()
        assert body["components"]["database"] == {"status": "ok", "backend": "postgresql"}
        bus = body["components"]["event_bus"]
        assert bus["status"] == "ok" and bus["backend"] == "redis_streams"
        assert bus["stream"] == stream_name and bus["pending"] == 0
        assert body["counts"] == {"events": 2, "dead_letters": 1}
        scoped = api.client.get("/v1/status", headers=api.as_("alpha")).json()
        assert scoped["counts"] == {"events": 1, "dead_letters": 1}
    client = redis.Redis.from_url(redis_url)
    client.delete(f"{stream_name}:applied")  # the shared-state stream the app created
    client.close()


@pytest.mark.postgres
def test_not_ready_when_redis_is_unreachable(postgres_url: str) -> None:
    with running(_settings(postgres_url, UNREACHABLE_REDIS, "apos-test:unreachable")) as api:
        assert api.client.get("/health").status_code == 200  # alive, but not ready
        r = api.client.get("/ready")
        assert r.status_code == 503
        assert r.json() == {"status": "unavailable", "checks": {"database": "ok", "bus": "down"}}


@pytest.mark.slow  # the engine-snapshot load waits out the connect attempt
def test_not_ready_when_the_database_is_unreachable() -> None:
    settings = Settings(database_url=UNREACHABLE_PG, consumer_name="test")
    with running(settings, migrate=False) as api:
        assert api.client.get("/health").status_code == 200
        r = api.client.get("/ready")
        assert r.status_code == 503
        assert r.json() == {"status": "unavailable", "checks": {"database": "down", "bus": "ok"}}
        # Checking a key needs the database: a retryable 503, on FastAPI routes and the
        # hot path alike, never a 500.
        key = {"Authorization": "Bearer apos_key_0123456789ab_secret"}
        for r in (
            api.client.get("/v1/events", headers=key),
            api.client.post("/v1/route", json={"payment_id": "p"}, headers=key),
        ):
            assert (r.status_code, r.json()["code"]) == (503, "unavailable"), r.text
            assert r.headers["retry-after"] == "1"
