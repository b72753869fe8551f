"""The event bus: the in-process queue, and Redis Streams against the real Redis.

The Redis tests use a fresh stream (``stream_name``) and a fresh group per test, short
``block_ms`` / ``reclaim_idle_ms`` so they stay fast, and deadlines rather than fixed sleeps
wherever they wait for something.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import redis

from apos.adapters.bus import (
    BusClosedError,
    BusFullError,
    InProcessBus,
    RedisStreamsBus,
    StreamTail,
    build_bus,
)
from apos.adapters.ports import BusMessage, EventBus
from apos.settings import Settings


def payloads(n: int, tag: str = "p") -> list[bytes]:
    """~300-byte payloads carrying every byte value, so any text decoding would show."""
    return [f'{{"event_id":"{tag}_{i:06d}"}}'.encode() + bytes(range(256)) for i in range(n)]


class Recorder:
    """A handler that records every message it is given; optionally fails on some payloads."""

    def __init__(self, fail_on: Callable[[BusMessage], bool] = lambda m: False) -> None:
        self.messages: list[BusMessage] = []
        self.batches: list[list[BusMessage]] = []
        self.calls = 0
        self._fail_on = fail_on

    def __call__(self, batch: Sequence[BusMessage]) -> None:
        self.calls += 1
        if any(self._fail_on(m) for m in batch):
            raise RuntimeError("handler failed")
        self.batches.append(list(batch))
        self.messages.extend(batch)

    @property
    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]


def consume_until(
    bus: EventBus, handler: Recorder, expected: int, timeout_s: float = 5.0
) -> list[Exception]:
    """Call consume_once until ``expected`` messages were handled; returns handler errors."""
    errors: list[Exception] = []
    deadline = time.monotonic() + timeout_s
    while len(handler.messages) < expected:
        assert time.monotonic() < deadline, f"only {len(handler.messages)}/{expected} handled"
        try:
            bus.consume_once(handler)
        except RuntimeError as exc:
            errors.append(exc)
    return errors


# -- in-process bus ------------------------------------------------------------------------


def test_memory_round_trip_preserves_bytes_and_order() -> None:
    bus = InProcessBus(batch_size=1000, wait_ms=10)
    sent = payloads(2500)
    ids = bus.publish(sent)
    assert len(set(ids)) == 2500
    assert bus.pending_count() == 2500

    handler = Recorder()
    consume_until(bus, handler, 2500)

    assert [len(b) for b in handler.batches] == [1000, 1000, 500]
    assert handler.payloads == sent
    assert [m.id for m in handler.messages] == ids
    assert all(m.deliveries == 1 for m in handler.messages)
    assert bus.pending_count() == 0
    assert bus.consume_once(handler) == 0


def test_memory_failed_batch_goes_back_to_the_front_and_is_retried_one_by_one() -> None:
    bus = InProcessBus(wait_ms=10)
    bus.publish([b"a", b"b", b"c"])
    failing = Recorder(fail_on=lambda m: True)
    with pytest.raises(RuntimeError):
        bus.consume_once(failing)
    assert bus.pending_count() == 3  # nothing accepted is lost
    bus.publish([b"d"])

    handler = Recorder()
    consume_until(bus, handler, 4)

    assert handler.payloads == [b"a", b"b", b"c", b"d"]
    assert [len(b) for b in handler.batches] == [1, 1, 1, 1]  # failed ones alone; d fresh
    assert [m.deliveries for m in handler.messages] == [2, 2, 2, 1]
    assert bus.pending_count() == 0


def test_memory_poison_message_goes_to_on_poison_and_good_ones_survive() -> None:
    poisoned: list[BusMessage] = []
    bus = InProcessBus(wait_ms=10, max_deliveries=3, on_poison=poisoned.append)
    bus.publish([b"good-1", b"bad", b"good-2"])
    handler = Recorder(fail_on=lambda m: m.payload == b"bad")

    consume_until(bus, handler, 2)
    while bus.pending_count():
        bus.consume_once(handler)

    assert handler.payloads == [b"good-1", b"good-2"]
    assert [(m.payload, m.deliveries) for m in poisoned] == [(b"bad", 4)]
    assert bus.pending_count() == 0


def test_memory_on_poison_failure_keeps_the_message() -> None:
    def broken_dead_letter(message: BusMessage) -> None:
        raise OSError("dead-letter store down")

    bus = InProcessBus(wait_ms=10, max_deliveries=1, on_poison=broken_dead_letter)
    bus.publish([b"bad"])
    with pytest.raises(RuntimeError):
        bus.consume_once(Recorder(fail_on=lambda m: True))
    with pytest.raises(OSError, match="dead-letter"):
        bus.consume_once(Recorder())
    assert bus.pending_count() == 1


def test_memory_bus_is_bounded() -> None:
    bus = InProcessBus(capacity=3, wait_ms=10, publish_timeout_ms=20)
    bus.publish([b"1", b"2", b"3"])
    with pytest.raises(BusFullError):
        bus.publish([b"4"])
    with pytest.raises(BusFullError):
        bus.publish([b"x"] * 4)  # can never fit: refused without waiting

    handler = Recorder()
    bus.consume_once(handler)
    assert bus.publish([b"4"]) == ["4"]


def test_memory_publish_waits_for_room_made_by_a_consumer() -> None:
    bus = InProcessBus(capacity=2, wait_ms=10, publish_timeout_ms=5_000)
    bus.publish([b"1", b"2"])
    consumer = threading.Timer(0.05, bus.consume_once, args=(Recorder(),))
    consumer.start()
    started = time.monotonic()
    bus.publish([b"3"])
    assert time.monotonic() - started < 2
    consumer.join()


def test_memory_consume_waits_briefly_then_returns_zero_or_wakes_on_publish() -> None:
    bus = InProcessBus(wait_ms=50)
    started = time.monotonic()
    assert bus.consume_once(Recorder()) == 0
    assert 0.04 <= time.monotonic() - started < 1

    slow = InProcessBus(wait_ms=5_000)
    threading.Timer(0.05, slow.publish, args=([b"x"],)).start()
    started = time.monotonic()
    assert slow.consume_once(Recorder()) == 1
    assert time.monotonic() - started < 2


def test_memory_many_producers_and_consumers_lose_and_duplicate_nothing() -> None:
    bus = InProcessBus(capacity=500, batch_size=64, wait_ms=10)
    producers = [
        threading.Thread(target=lambda t=t: [bus.publish([p]) for p in payloads(500, f"t{t}")])
        for t in range(4)
    ]
    received: list[bytes] = []
    lock = threading.Lock()
    done = threading.Event()

    def handle(batch: Sequence[BusMessage]) -> None:
        with lock:
            received.extend(m.payload for m in batch)

    def consume() -> None:
        while not done.is_set() or bus.pending_count():
            bus.consume_once(handle)

    consumers = [threading.Thread(target=consume) for _ in range(2)]
    for thread in producers + consumers:
        thread.start()
    for thread in producers:
        thread.join()
    done.set()
    for thread in consumers:
        thread.join(timeout=10)

    expected = [p for t in range(4) for p in payloads(500, f"t{t}")]
    assert sorted(received) == sorted(expected)


def test_memory_close_refuses_publishes() -> None:
    bus = InProcessBus(wait_ms=10)
    assert bus.ping()
    bus.close()
    assert not bus.ping()
    with pytest.raises(BusClosedError):
        bus.publish([b"x"])
    assert bus.consume_once(Recorder()) == 0


# -- Redis Streams ---------------------------------------------------------------------------

BusFactory = Callable[..., RedisStreamsBus]


@pytest.fixture
def group() -> str:
    return f"apos-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_bus(redis_url: str, stream_name: str, group: str) -> Iterator[BusFactory]:
    """Builds buses on this test's stream and group; closes them afterwards."""
    buses: list[RedisStreamsBus] = []

    def make(consumer: str = "c1", **options: Any) -> RedisStreamsBus:
        options.setdefault("block_ms", 50)
        options.setdefault("reclaim_idle_ms", 200)
        bus = RedisStreamsBus(redis_url, stream_name, group, consumer, **options)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, protocol=2)
    yield client
    client.close()


def group_pending(raw: redis.Redis, stream: str, group: str) -> dict[str, int]:
    """Delivered-but-unacknowledged entries per consumer, from XPENDING."""
    summary: Any = raw.xpending(stream, group)
    return {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}


@pytest.mark.redis
def test_redis_round_trip_preserves_bytes_order_and_ids(make_bus: BusFactory) -> None:
    bus = make_bus(read_count=1000)
    sent = payloads(2500)
    ids = bus.publish(sent)
    assert len(ids) == 2500
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert bus.pending_count() == 2500  # published, not yet acknowledged

    handler = Recorder()
    consume_until(bus, handler, 2500)

    assert [len(b) for b in handler.batches] == [1000, 1000, 500]
    assert handler.payloads == sent
    assert [m.id for m in handler.messages] == ids
    assert all(m.deliveries == 1 for m in handler.messages)
    assert bus.pending_count() == 0
    assert bus.consume_once(handler) == 0


@pytest.mark.redis
def test_redis_acks_only_after_the_handler_succeeds(
    make_bus: BusFactory, raw: redis.Redis, stream_name: str, group: str
) -> None:
    bus = make_bus()
    bus.publish([b"a", b"b", b"c"])
    with pytest.raises(RuntimeError):
        bus.consume_once(Recorder(fail_on=lambda m: True))
    assert group_pending(raw, stream_name, group) == {"c1": 3}
    assert bus.pending_count() == 3

    handler = Recorder()
    consume_until(bus, handler, 3)  # redelivered at once, one at a time

    assert handler.payloads == [b"a", b"b", b"c"]
    assert [m.deliveries for m in handler.messages] == [2, 2, 2]
    assert [len(b) for b in handler.batches] == [1, 1, 1]
    assert group_pending(raw, stream_name, group) == {}
    assert bus.pending_count() == 0


VICTIM = textwrap.dedent(
    """
    import os, sys
    from apos.adapters.bus.redis_streams import RedisStreamsBus

    url, stream, group = sys.argv[1:4]
    bus = RedisStreamsBus(url, stream, group, "victim", read_count=20, block_ms=2000)

    def die_before_ack(batch):
        print(len(batch), flush=True)
        os._exit(1)  # killed between read and acknowledge: no cleanup, no ack

    bus.consume_once(die_before_ack)
    os._exit(2)  # reached only if nothing was read
    """
)


@pytest.mark.redis
def test_redis_consumer_killed_between_read_and_ack_is_reclaimed_exactly_once(
    make_bus: BusFactory, raw: redis.Redis, redis_url: str, stream_name: str, group: str
) -> None:
    survivor = make_bus("survivor", reclaim_idle_ms=100)
    survivor.ensure_group()
    sent = payloads(50)
    survivor.publish(sent)

    victim = subprocess.run(
        [sys.executable, "-c", VICTIM, redis_url, stream_name, group],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert victim.returncode == 1, victim.stderr
    assert victim.stdout.strip() == "20"
    assert group_pending(raw, stream_name, group) == {"victim": 20}

    handler = Recorder()
    consume_until(survivor, handler, 50)
    time.sleep(0.15)  # past reclaim_idle_ms: anything still pending would now be reclaimed
    for _ in range(5):
        survivor.consume_once(handler)

    assert len(handler.payloads) == len(set(handler.payloads)) == 50  # no duplicates
    assert set(handler.payloads) == set(sent)
    deliveries = {m.payload: m.deliveries for m in handler.messages}
    assert {deliveries[p] for p in sent[:20]} == {2}  # the victim's, reclaimed
    assert {deliveries[p] for p in sent[20:]} == {1}
    assert group_pending(raw, stream_name, group) == {}
    assert survivor.pending_count() == 0


@pytest.mark.redis
def test_redis_poison_message_goes_to_on_poison_and_is_acked(
    make_bus: BusFactory, raw: redis.Redis, stream_name: str, group: str
) -> None:
    poisoned: list[BusMessage] = []
    bus = make_bus(max_deliveries=3, on_poison=poisoned.append)
    bus.publish([b"good-1", b"bad", b"good-2"])
    handler = Recorder(fail_on=lambda m: m.payload == b"bad")

    errors = consume_until(bus, handler, 2)
    while bus.pending_count():
        assert len(errors) < 10
        try:
            bus.consume_once(handler)
        except RuntimeError as exc:
            errors.append(exc)

    assert handler.payloads == [b"good-1", b"good-2"]  # not dead-lettered with the bad one
    assert [(m.payload, m.deliveries) for m in poisoned] == [(b"bad", 4)]
    assert len(errors) == 3  # the batch once, then "bad" alone twice
    assert group_pending(raw, stream_name, group) == {}


@pytest.mark.redis
def test_redis_poison_without_handler_is_logged_and_acked(
    make_bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bus = make_bus(max_deliveries=1)
    bus.publish([b"bad"])
    with pytest.raises(RuntimeError):
        bus.consume_once(Recorder(fail_on=lambda m: True))
    with caplog.at_level(logging.ERROR, logger="apos.adapters.bus"):
        assert bus.consume_once(Recorder()) == 1
    assert "dropped after 2 deliveries" in caplog.text
    assert bus.pending_count() == 0


@pytest.mark.redis
def test_redis_group_creation_is_idempotent_and_starts_at_the_beginning(
    make_bus: BusFactory, raw: redis.Redis, stream_name: str, group: str
) -> None:
    early = make_bus()
    early.publish([b"before-any-group"])  # published before the group exists
    first, second = make_bus("c1"), make_bus("c2")
    first.ensure_group()
    first.ensure_group()
    second.ensure_group()

    groups: Any = raw.xinfo_groups(stream_name)
    assert [g["name"].decode() for g in groups] == [group]
    handler = Recorder()
    consume_until(second, handler, 1)
    assert handler.payloads == [b"before-any-group"]


@pytest.mark.redis
def test_redis_group_is_created_on_first_consume_with_the_stream(
    make_bus: BusFactory, raw: redis.Redis, stream_name: str
) -> None:
    bus = make_bus()
    assert bus.consume_once(Recorder()) == 0
    assert raw.exists(stream_name) == 1
    assert bus.pending_count() == 0


@pytest.mark.redis
def test_redis_two_live_consumers_split_the_work_without_overlap(make_bus: BusFactory) -> None:
    sent = payloads(200)
    make_bus("producer").publish(sent)
    # Each consumer's first batch waits until the other also holds one: proof they overlap in
    # time, so the split below is a real concurrent split, not one consumer doing it all.
    barrier = threading.Barrier(2, timeout=5)
    seen: dict[str, list[bytes]] = {"a": [], "b": []}
    lock = threading.Lock()

    def run(name: str) -> None:
        bus = make_bus(name, read_count=10, reclaim_idle_ms=10_000)
        first = True

        def handle(batch: Sequence[BusMessage]) -> None:
            nonlocal first
            with lock:
                seen[name].extend(m.payload for m in batch)
            if first:
                first = False
                barrier.wait()

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if len(seen["a"]) + len(seen["b"]) >= len(sent):
                    return
            bus.consume_once(handle)

    threads = [threading.Thread(target=run, args=(name,)) for name in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert seen["a"]
    assert seen["b"]
    assert not set(seen["a"]) & set(seen["b"])
    assert sorted(seen["a"] + seen["b"]) == sorted(sent)


@pytest.mark.redis
def test_redis_entries_deleted_while_pending_are_acked_away(
    make_bus: BusFactory, raw: redis.Redis, stream_name: str, group: str
) -> None:
    owner, other = make_bus("owner"), make_bus("other", reclaim_idle_ms=100)
    ids = owner.publish([b"a", b"b", b"c", b"d"])
    with pytest.raises(RuntimeError):
        owner.consume_once(Recorder(fail_on=lambda m: True))
    raw.xdel(stream_name, ids[0], ids[2])

    # Its owner re-reads its pending list: deleted entries are acked, the rest handled.
    mine = Recorder()
    consume_until(owner, mine, 1)
    assert mine.payloads == [b"b"]

    # Another consumer reclaims the idle rest (XAUTOCLAIM reports deleted entries).
    time.sleep(0.15)
    theirs = Recorder()
    consume_until(other, theirs, 1)
    assert theirs.payloads == [b"d"]
    assert group_pending(raw, stream_name, group) == {}


@pytest.mark.redis
def test_redis_recovers_when_the_stream_is_deleted_under_it(
    make_bus: BusFactory, raw: redis.Redis, stream_name: str
) -> None:
    bus = make_bus()
    bus.ensure_group()
    raw.delete(stream_name)
    assert bus.consume_once(Recorder()) == 0  # NOGROUP: group recreated on the next call
    bus.publish([b"after"])
    handler = Recorder()
    consume_until(bus, handler, 1)
    assert handler.payloads == [b"after"]


@pytest.mark.redis
def test_redis_foreign_entry_keeps_its_content(
    make_bus: BusFactory, raw: redis.Redis, stream_name: str
) -> None:
    bus = make_bus()
    bus.ensure_group()
    raw.xadd(stream_name, {"payment_id": "pay_1", "status": "charged"})
    handler = Recorder()
    consume_until(bus, handler, 1)
    assert handler.payloads == [b'{"payment_id": "pay_1", "status": "charged"}']


@pytest.mark.redis
def test_redis_ping(make_bus: BusFactory, stream_name: str) -> None:
    assert make_bus().ping()
    down = RedisStreamsBus("redis://127.0.0.1:1/0", stream_name, "g", "c")
    started = time.monotonic()
    assert down.ping() is False
    assert time.monotonic() - started < 3
    down.close()


@pytest.mark.redis
def test_stream_tail_follows_the_stream_without_a_group(
    make_bus: BusFactory, redis_url: str, stream_name: str
) -> None:
    bus = make_bus()
    bus.publish([b"old-1", b"old-2"])
    from_start = StreamTail(redis_url, stream_name, start_id="0", block_ms=50)
    from_now = StreamTail(redis_url, stream_name, block_ms=50)
    try:
        assert from_now.read() == []  # "$": only what comes after the first read
        assert [m.payload for m in from_start.read()] == [b"old-1", b"old-2"]
        bus.publish([b"new"])
        assert [m.payload for m in from_now.read()] == [b"new"]
        assert [m.payload for m in from_start.read()] == [b"new"]  # both see everything

        saved = from_start.last_id
        bus.publish([b"later"])
        resumed = StreamTail(redis_url, stream_name, start_id=saved, block_ms=50)
        assert [m.payload for m in resumed.read()] == [b"later"]
        resumed.close()
    finally:
        from_start.close()
        from_now.close()


def test_build_bus_defaults_to_the_in_process_bus() -> None:
    bus = build_bus(Settings(redis_url=None))
    assert isinstance(bus, InProcessBus)
    bus.close()


@pytest.mark.redis
def test_build_bus_uses_redis_when_configured(redis_url: str, stream_name: str) -> None:
    settings = Settings(redis_url=redis_url, event_stream=stream_name, consumer_name="c1")
    bus = build_bus(settings)
    assert isinstance(bus, RedisStreamsBus)
    assert (bus.stream, bus.group, bus.consumer) == (stream_name, "apos-ingest", "c1")
    assert bus.ping()
    bus.close()
