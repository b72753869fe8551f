"""The composition root: the only place that builds adapters from settings.

``build_services(settings)`` returns everything the app and the background workers need;
tests call it with embedded or real URLs. Nothing else constructs a store or a Redis client.
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.exceptions import RedisError

from apos import __version__
from apos.adapters.bus import build_bus
from apos.adapters.bus.redis_streams import StreamTail, connect
from apos.adapters.db import SqlStore, upgrade_database
from apos.adapters.db.decisions import DecisionStore
from apos.adapters.db.snapshots import SavedSnapshot, SnapshotStore
from apos.adapters.ports import AuditEntry, BusMessage, DeadLetter, EventBus, Store
from apos.core.config import EngineConfig
from apos.core.engine import Engine
from apos.core.events import PaymentEvent, events_from_json, events_to_json
from apos.service.auth import KeyVerifier
from apos.service.ingest import Ingestor, dead_letter_text
from apos.service.logs import get_logger
from apos.service.metrics import Metrics
from apos.service.routing import DecisionWriter, RoutingService
from apos.settings import Settings

log = get_logger("bootstrap")

SNAPSHOT_NAME = "default"


class BackgroundWorker:
    """Runs ``step()`` in a daemon thread until stopped; an error backs off, never kills it.

    ``step`` returns how much work it did; after a step that did none, the worker waits
    ``idle_sleep`` seconds (steps that block on their own, like a stream read, use 0).
    """

    def __init__(self, name: str, step: Callable[[], int], idle_sleep: float = 0.0) -> None:
        self.name = name
        self._step = step
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle_sleep = idle_sleep
        self.failures = 0  # consecutive failed steps

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def status(self) -> str:
        """``running``, ``failing`` (its last step raised; it is backing off) or ``stopped``."""
        if not self.running:
            return "stopped"
        return "failing" if self.failures else "running"

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                did = self._step()
                backoff = 0.1
                self.failures = 0
                if not did and self._idle_sleep:
                    self._stop.wait(self._idle_sleep)
            except Exception:
                self.failures += 1
                log.exception(
                    "background worker step failed; backing off",
                    worker=self.name,
                    backoff_s=backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)


@dataclass
class Services:
    """Everything a running APOS holds; owned by the app, closed on shutdown."""

    settings: Settings
    store: SqlStore
    bus: EventBus
    metrics: Metrics
    ingestor: Ingestor
    keys: KeyVerifier
    routing: RoutingService
    decisions: DecisionStore
    snapshots: SnapshotStore
    writer: DecisionWriter
    version: str = __version__
    started_at: float = field(default_factory=time.time)
    workers: list[BackgroundWorker] = field(default_factory=list)
    stream_position: Callable[[], str | None] = lambda: None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def start(self) -> None:
        self.writer.start()
        for worker in self.workers:
            worker.start()

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.writer.stop()
        try:
            save_snapshot(self)
        except Exception:
            log.exception("could not save the engine snapshot at shutdown")

    def close(self) -> None:
        self.stop_workers()
        for closer in self._closers:
            closer()
        self.bus.close()
        self.store.close()


def load_engine_config(settings: Settings) -> EngineConfig:
    """The routing configuration: the file named by ``routing_config``, or the defaults."""
    path = settings.routing_config
    if path is None:
        return EngineConfig()
    text = path.read_text()
    data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    return EngineConfig.model_validate(data)


def instance_seed(settings: Settings) -> int:
    """The engine seed of this process: the configured seed mixed with the consumer name,
    so that instances draw different random numbers (and decision ids) from each other."""
    return (settings.engine_seed * 1_000_003 + zlib.crc32(settings.consumer_name.encode())) & (
        2**31 - 1
    )


def build_engine(settings: Settings, saved: SavedSnapshot | None) -> Engine:
    """A new engine, or one continuing from ``saved`` (then reseeded for this instance)."""
    config = load_engine_config(settings)
    seed = instance_seed(settings)
    if saved is None:
        return Engine(settings.connectors, seed=seed, config=config)
    # The configured connectors plus the snapshot's (load_snapshot reads old formats too).
    engine = Engine(settings.connectors, seed=seed, config=config)
    engine.load_snapshot(saved.state)
    engine.reseed(seed)
    return engine


def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    """Build the store, bus, metrics, ingestion and routing described by ``settings``."""
    if migrate:
        upgrade_database(settings.database_url)
    store = SqlStore(settings.database_url)
    metrics = Metrics()
    bus = build_bus(settings, on_poison=lambda message: poison_to_dead_letter(store, message))
    ingestor = Ingestor(store, metrics)
    decisions = DecisionStore(store.engine)
    snapshots = SnapshotStore(store.engine)
    saved = _load_snapshot(snapshots)
    engine = build_engine(settings, saved)
    writer = DecisionWriter(decisions, flush_interval_s=settings.decision_flush_ms / 1000)
    routing = RoutingService(engine, metrics, writer, follow_event_time=settings.clock == "event")
    if saved is not None:
        routing.events_learned = saved.events_learned
    services = Services(
        settings=settings,
        store=store,
        bus=bus,
        metrics=metrics,
        ingestor=ingestor,
        keys=KeyVerifier(store),
        routing=routing,
        decisions=decisions,
        snapshots=snapshots,
        writer=writer,
    )
    services.workers.append(_stream_consumer(services))
    if settings.redis_url:
        _share_state_through_redis(services, saved)
    else:
        ingestor.add_listener(routing.learn)
    services.workers.append(_ticker(services))
    services.workers.append(_snapshotter(services))
    return services


def _load_snapshot(snapshots: SnapshotStore) -> SavedSnapshot | None:
    try:
        saved = snapshots.load(SNAPSHOT_NAME)
    except Exception:
        log.exception("could not read the engine snapshot; starting cold")
        return None
    if saved is not None:
        log.info(
            "warm start from engine snapshot",
            saved_at=saved.saved_at.isoformat(),
            events_learned=saved.events_learned,
        )
    return saved


# Most events one entry of the applied stream carries.
APPLIED_CHUNK = 100


class _AppliedRetention:
    """How many entries the applied stream keeps so that it holds about ``events`` events.

    XADD trims by entries; entries carry 1 to APPLIED_CHUNK events (single webhooks, whole
    stream batches). The running mean of this instance's chunk sizes converts one into the
    other, so the stream keeps ~``events`` events (the history a restarted instance can
    replay from its snapshot position) whatever the mix, never more than ``events`` entries.
    """

    def __init__(self, events: int) -> None:
        self._events = events
        self._mean = 1.0

    def entries_after(self, chunk: int) -> int:
        """Record a chunk of ``chunk`` events; the MAXLEN for its XADD."""
        self._mean += (chunk - self._mean) * 0.01
        return max(1_000, int(self._events / max(self._mean, 1.0)))


class AppliedPublisher:
    """Appends newly stored events to the applied stream, which every instance tails.

    An ingestor listener: the service adds one, and so does ``apos ingest`` when Redis is
    configured, so that running instances learn from events whoever stored them. The
    service also sends its control messages through :meth:`control`.
    """

    def __init__(self, settings: Settings) -> None:
        if not settings.redis_url:
            raise ValueError("the applied stream needs a Redis URL")
        self.stream = settings.applied_stream
        self._client = connect(settings.redis_url)
        self._retention = _AppliedRetention(settings.stream_maxlen)

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self._client.ping())
        except RedisError:
            return False

    def __call__(self, events: Sequence[PaymentEvent]) -> None:
        # An entry per chunk (a JSON array): ~1 µs an event to encode and one XADD per
        # chunk, where an entry per event cost ~18 µs an event here and ~14 on every tail.
        pipe = self._client.pipeline(transaction=False)
        for i in range(0, len(events), APPLIED_CHUNK):
            chunk = events[i : i + APPLIED_CHUNK]
            maxlen = self._retention.entries_after(len(chunk))
            pipe.xadd(
                self.stream, {"event": events_to_json(chunk)}, maxlen=maxlen, approximate=True
            )
        pipe.execute()

    def control(self, message: dict[str, Any]) -> None:
        """Append a control message (experiment start or stop), in order with the events."""
        maxlen = self._retention.entries_after(1)
        self._client.xadd(
            self.stream, {"event": orjson.dumps(message)}, maxlen=maxlen, approximate=True
        )

    def close(self) -> None:
        self._client.close()


def _share_state_through_redis(services: Services, saved: SavedSnapshot | None) -> None:
    """Every instance appends what it stored to the applied stream and learns from a tail
    of it, so all instances learn from every event exactly once each."""
    settings = services.settings
    publisher = AppliedPublisher(settings)
    stream = publisher.stream
    services.ingestor.add_listener(publisher)
    services.routing.share_controls(publisher.control)
    # From the snapshot's position if there is one; otherwise from what the stream still
    # holds, so a new instance warms up from recent history rather than from nothing.
    start = saved.stream_position if saved is not None and saved.stream_position else "0"
    tail = StreamTail(
        settings.redis_url or "",
        stream,
        start_id=start,
        # At most ~1,000 events per read: learn() holds the routing lock for the whole read,
        # and a catching-up tail must not stall /v1/route for longer than that.
        count=max(1, 1_000 // APPLIED_CHUNK),
        block_ms=min(settings.stream_block_ms, 500),
    )
    routing = services.routing

    def step() -> int:
        messages = tail.read()
        if not messages:
            return 0
        events: list[PaymentEvent] = []
        upto: str | None = None  # the last entry whose effect is in ``events`` (or applied)
        for message in messages:
            try:
                entry = _applied_entry(message.payload)
            except ValueError:
                log.warning("unreadable entry on the applied stream", entry=message.id)
                upto = message.id
                continue
            if isinstance(entry, dict):  # a control message: after the events before it
                routing.learn(events, upto)
                events = []
                routing.apply_control(entry, message.id)
            else:
                events.extend(entry)
            upto = message.id
        routing.learn(events, upto)
        return len(messages)

    services.workers.append(BackgroundWorker("state-tail", step))
    # What the engine holds, not what the tail has read: both are set under the routing lock.
    routing.stream_position = saved.stream_position if saved is not None else None
    services.stream_position = lambda: routing.stream_position
    services._closers.extend([publisher.close, tail.close])


def _applied_entry(payload: bytes) -> list[PaymentEvent] | dict[str, Any]:
    """One applied-stream entry: a batch of events (a JSON array) or a control message (an
    object with ``control``), both written by :class:`AppliedPublisher`, or one event (an
    object), as earlier versions wrote them.

    Raises:
        ValueError: None of these.
    """
    if payload[:1] == b"[":
        return events_from_json(payload)
    data = orjson.loads(payload)
    if isinstance(data, dict) and "control" in data:
        return data
    return [PaymentEvent.model_validate(data)]


def _stream_consumer(services: Services) -> BackgroundWorker:
    """Drains the event bus into the store; acknowledges only durable batches."""
    ingestor = services.ingestor
    source = "redis" if services.settings.redis_url else "bus"

    def handle(messages: Sequence[BusMessage]) -> None:
        ingestor.ingest_messages(messages, source=source)

    return BackgroundWorker("stream-consumer", lambda: services.bus.consume_once(handle))


def _ticker(services: Services) -> BackgroundWorker:
    """Engine housekeeping once a tick: breaker transitions are audited and logged."""
    interval = services.settings.tick_interval_s
    last = [0.0]

    def step() -> int:
        if time.monotonic() - last[0] < interval:
            return 0
        last[0] = time.monotonic()
        report = services.routing.tick()
        if report.transitions:
            entries = [
                AuditEntry(
                    actor="system:breaker",
                    action=f"connector.{t.to_state.value}",
                    target=t.connector,
                    merchant_id=t.merchant_id,
                    details={
                        "from": t.from_state.value,
                        "to": t.to_state.value,
                        "reason": t.reason,
                        "event_time": t.at,
                    },
                )
                for t in report.transitions
            ]
            services.store.append_audit(entries)
            for t in report.transitions:
                log.warning(
                    "connector breaker changed",
                    connector=t.connector,
                    merchant_id=t.merchant_id,
                    to=t.to_state.value,
                    reason=t.reason,
                )
        return 1

    return BackgroundWorker("engine-tick", step, idle_sleep=min(interval, 0.25))


def save_snapshot(services: Services) -> None:
    """Persist the engine's learnt state with the stream position it includes."""
    with services.routing.lock:
        state = services.routing.engine.snapshot()
        position = services.stream_position()
        learned = services.routing.events_learned
    services.snapshots.save(
        SavedSnapshot(SNAPSHOT_NAME, datetime.now(UTC), position, learned, state)
    )


def _snapshotter(services: Services) -> BackgroundWorker:
    interval = services.settings.snapshot_interval_s
    last = [time.monotonic()]

    def step() -> int:
        if time.monotonic() - last[0] < interval:
            return 0
        last[0] = time.monotonic()
        save_snapshot(services)
        return 1

    return BackgroundWorker("engine-snapshot", step, idle_sleep=1.0)


def poison_to_dead_letter(store: Store, message: BusMessage) -> None:
    """What to do with a bus entry that failed too many times: keep it, with why."""
    store.add_dead_letters(
        [
            DeadLetter(
                source="redis",
                raw=dead_letter_text(message.payload),
                reason=f"gave up after {message.deliveries} deliveries",
                received_at=datetime.now(UTC),
            )
        ]
    )
