"""Stored means learnt: the outbox relay publishes what was stored and not published, and
publishing is idempotent, so nothing reaches the applied stream twice (Redis); embedded, a
restart learns what the last run stored after its last snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from apos.adapters.bus.redis_streams import OnceAppender
from apos.adapters.ports import EventQuery
from apos.service.applied import APPLIED_CHUNK, AppliedPublisher
from apos.service.bootstrap import build_services
from apos.settings import Settings
from tests.service.test_routing_state import TRAINING, outcomes, shared_settings


def later() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=1)


@pytest.mark.redis
def test_appending_twice_under_one_marker_appends_once(redis_url: str, stream_name: str) -> None:
    client = redis.Redis.from_url(redis_url)
    once = OnceAppender(client, marker_ttl_s=60)
    marker = f"{stream_name}:published:1:x"
    try:
        assert once.append(stream_name, marker, [b"[1]", b"[2]"], maxlen=1_000)
        assert not once.append(stream_name, marker, [b"[1]", b"[2]"], maxlen=1_000)
        assert once.append(stream_name, f"{stream_name}:published:2:x", [b"[3]"], maxlen=1_000)
        assert [f[b"event"] for _, f in client.xrange(stream_name)] == [b"[1]", b"[2]", b"[3]"]
        assert 0 < client.ttl(marker) <= 60
    finally:
        client.delete(marker, f"{stream_name}:published:2:x")
        client.close()


@pytest.mark.redis
@pytest.mark.postgres
def test_a_batch_whose_publish_failed_is_relayed_once_and_its_row_deleted(
    postgres_url: str, redis_url: str, stream_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = build_services(Settings(**shared_settings(postgres_url, redis_url, stream_name)))
    publisher = services.publisher
    assert publisher is not None
    client = redis.Redis.from_url(redis_url)
    applied = services.settings.applied_stream
    try:
        # Redis fails between the commit and the publish (as a kill there would): stored,
        # acknowledged, not on the stream; the outbox row stays.
        with monkeypatch.context() as m:

            def down(*args: object, **kwargs: object) -> bool:
                raise RedisConnectionError("Redis is down")

            m.setattr(publisher._once, "append", down)
            report = services.ingestor.ingest(TRAINING, "http")
        assert report.accepted == 300
        assert client.xlen(applied) == 0
        assert services.outbox.count() == 1
        assert publisher.relay(later()) == 1
        assert client.xlen(applied) == 300 // APPLIED_CHUNK
        assert services.outbox.count() == 0
        assert publisher.relayed == 1
        assert publisher.relay(later()) == 0  # nothing left: nothing appended again
        assert client.xlen(applied) == 300 // APPLIED_CHUNK
    finally:
        client.close()
        services.close()


@pytest.mark.redis
@pytest.mark.postgres
def test_a_crash_between_publish_and_delete_publishes_nothing_twice(
    postgres_url: str, redis_url: str, stream_name: str
) -> None:
    settings = Settings(**shared_settings(postgres_url, redis_url, stream_name))
    services = build_services(settings)
    client = redis.Redis.from_url(redis_url)
    heir = AppliedPublisher(settings, services.outbox)  # another instance's relay
    try:
        services.ingestor.ingest(outcomes("adyen", 150, 0, 0), "http")
        # Published, but the process died before deleting the row.
        assert client.xlen(settings.applied_stream) == 2
        assert services.outbox.count() == 1
        assert heir.relay(later()) == 1
        assert services.outbox.count() == 0  # settled
        assert client.xlen(settings.applied_stream) == 2  # and not appended again
        assert heir.relayed == 0
        # the live publisher racing the relay on the same row appends nothing either
        row = services.ingestor.ingest(outcomes("adyen", 5, 0, 500), "http")
        assert row.accepted == 5
        assert client.xlen(settings.applied_stream) == 3
        # the newest five: the batch just stored, whose row is the only one left
        events = services.store.list_events(EventQuery(merchant_id="m_alpha", limit=5)).items
        assert not heir.publish_batch(events, _only_row(services))
        assert client.xlen(settings.applied_stream) == 3
    finally:
        heir.close()
        client.close()
        services.close()


def _only_row(services) -> int:  # type: ignore[no-untyped-def]
    rows = services.outbox.batches()
    assert len(rows) == 1
    return int(rows[0].id)


def test_embedded_a_restart_learns_what_was_stored_after_the_last_snapshot(
    sqlite_url: str,
) -> None:
    settings = Settings(database_url=sqlite_url, consumer_name="solo")
    first = build_services(settings)
    first.ingestor.ingest(TRAINING, "http")
    assert first.routing.events_learned == 300
    assert first.outbox.count() == 1  # learnt, not yet in a snapshot
    # killed: no snapshot at shutdown (the workers never ran, nothing was saved)
    first.store.close()
    second = build_services(settings)
    assert second.routing.events_learned == 300  # relearnt from the outbox
    applied, digest = second.routing.outcomes_applied, second.routing.outcomes_digest
    assert applied == 300
    second.close()  # the snapshot now holds them: their row goes with it
    assert second.outbox.count() == 0
    third = build_services(settings)
    assert third.routing.events_learned == 300  # from the snapshot, not learnt again
    assert (third.routing.outcomes_applied, third.routing.outcomes_digest) == (applied, digest)
    third.close()
