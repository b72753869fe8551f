"""Redis Streams ingestion into the real PostgreSQL: acknowledged only when durable,
a consumer killed between read and acknowledge loses nothing and duplicates nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import orjson
import pytest
import redis

from apos.adapters.bus.redis_streams import RedisStreamsBus
from apos.service.bootstrap import build_services
from apos.settings import Settings
from tests.service.conftest import make_event

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def publish(url: str, stream: str, payloads: list[bytes]) -> None:
    client = redis.Redis.from_url(url)
    for payload in payloads:
        client.xadd(stream, {"event": payload})
    client.close()


def drain(services, until: int, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while services.store.count_events() + services.store.count_dead_letters() < until:
        assert time.time() < deadline, "stream was not drained in time"
        services.bus.consume_once(lambda batch: services.ingestor.ingest_messages(batch, "redis"))


def test_stream_events_are_stored_and_bad_ones_dead_lettered(
    postgres_url: str, redis_url: str, stream_name: str
) -> None:
    settings = Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        event_stream=stream_name,
        consumer_group="g",
        consumer_name="c1",
        stream_block_ms=50,
    )
    services = build_services(settings)
    good = [orjson.dumps(make_event(i)) for i in range(200)]
    publish(
        redis_url,
        stream_name,
        [
            *good,
            b"{not json",
            orjson.dumps(make_event(7)),
            orjson.dumps(make_event(999, currency="ZZZ")),
        ],
    )
    drain(services, until=202)
    assert services.store.count_events() == 200
    assert services.store.count_dead_letters() == 2
    assert services.bus.pending_count() == 0
    services.close()


def test_killed_consumer_entries_are_reclaimed_and_stored_exactly_once(
    postgres_url: str, redis_url: str, stream_name: str
) -> None:
    payloads = [orjson.dumps(make_event(i)) for i in range(300)]
    publish(redis_url, stream_name, payloads)
    # A real process reads a batch through the service's own pipeline and dies inside the
    # handler after the rows are committed but before the acknowledgement.
    script = textwrap.dedent(f"""
        import os
        from apos.service.bootstrap import build_services
        from apos.settings import Settings
        s = Settings(database_url={postgres_url!r}, redis_url={redis_url!r},
                     event_stream={stream_name!r}, consumer_group="g", consumer_name="doomed",
                     stream_read_count=120, stream_block_ms=50)
        services = build_services(s, migrate=False)
        def handler(batch):
            services.ingestor.ingest_messages(batch, "redis")
            os._exit(1)
        services.bus.consume_once(handler)
    """)
    proc = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True)
    assert proc.returncode == 1, proc.stderr.decode()[-2000:]
    client = redis.Redis.from_url(redis_url)
    assert client.xpending(stream_name, "g")["pending"] == 120
    settings = Settings(
        database_url=postgres_url,
        redis_url=redis_url,
        event_stream=stream_name,
        consumer_group="g",
        consumer_name="heir",
        reclaim_idle_ms=100,
        stream_block_ms=50,
    )
    services = build_services(settings, migrate=False)
    time.sleep(0.2)
    deadline = time.time() + 20
    while client.xpending(stream_name, "g")["pending"] or services.store.count_events() < 300:
        assert time.time() < deadline
        services.bus.consume_once(lambda batch: services.ingestor.ingest_messages(batch, "redis"))
    assert services.store.count_events() == 300  # all stored, none twice (event_id is unique)
    rollups = services.store.list_rollups(None, None, *_day())
    assert sum(r.attempts for r in rollups) == 300  # the replayed 120 were not re-counted
    assert services.bus.pending_count() == 0
    client.close()
    services.close()


def _day():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC)


def test_database_down_means_no_acknowledgement(redis_url: str, stream_name: str) -> None:
    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1:1/none",
        redis_url=redis_url,
        event_stream=stream_name,
        consumer_group="g",
        consumer_name="c1",
        stream_block_ms=50,
    )
    services = build_services(settings, migrate=False)
    publish(redis_url, stream_name, [orjson.dumps(make_event(1))])
    with pytest.raises(Exception):
        services.bus.consume_once(lambda b: services.ingestor.ingest_messages(b, "redis"))
    assert services.bus.pending_count() == 1
    services.close()


def test_bus_module_is_the_real_redis_one(redis_url: str, stream_name: str) -> None:
    settings = Settings(redis_url=redis_url, event_stream=stream_name)
    from apos.adapters.bus import build_bus

    assert isinstance(build_bus(settings), RedisStreamsBus)
