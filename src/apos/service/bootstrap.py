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

from apos import __version__
from apos.adapters.alerts import AlertDispatcher, AlertSink, SlackSink, WebhookSink
from apos.adapters.bus import build_bus
from apos.adapters.bus.redis_streams import StreamTail
from apos.adapters.db import SqlStore, upgrade_database
from apos.adapters.db.anomalies import AnomalyStore
from apos.adapters.db.decisions import DecisionStore
from apos.adapters.db.outbox import OutboxStore
from apos.adapters.db.snapshots import SavedSnapshot, SnapshotStore
from apos.adapters.ports import AuditEntry, BusMessage, DeadLetter, EventBus, Store
from apos.core.config import EngineConfig
from apos.core.engine import Engine
from apos.core.events import PaymentEvent, events_from_json
from apos.gc_tuning import tune_gc
from apos.service.applied import (
    APPLIED_CHUNK,
    AppliedPublisher,
    relearn_outbox,
)
from apos.service.auth import KeyVerifier
from apos.service.detection import DETECTION_SNAPSHOT, DetectionService
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
    outbox: OutboxStore
    version: str = __version__
    started_at: float = field(default_factory=time.time)
    workers: list[BackgroundWorker] = field(default_factory=list)
    publisher: AppliedPublisher | None = None  # with Redis
    anomalies: AnomalyStore | None = None
    detection: DetectionService | None = None  # unless detection_enabled is off
    alerts: AlertDispatcher | None = None
    stream_position: Callable[[], str | None] = lambda: None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def start(self) -> None:
        tune_gc()  # a long-running process from here on: apos.gc_tuning
        self.writer.start()
        if self.alerts is not None:
            self.alerts.start()
        for worker in self.workers:
            worker.start()

    def stop_workers(self) -> None:
        # Producers first (the stream tail and consumer queue outcomes for the writer),
        # then the writer's last flush, then the snapshot: nothing is queued after it.
        for worker in self.workers:
            worker.stop()
        self.writer.stop()  # flushes; logs (never raises) if the database is down
        if self.detection is not None:
            try:  # queued findings before the snapshot that is past them (a clearing one
                self.detection.write_step()  # is sent once: lost, it leaves an incident open)
            except Exception:
                log.exception("could not write the queued findings at shutdown")
        try:
            save_snapshot(self)
        except Exception:
            log.exception("could not save the engine snapshot at shutdown")

    def close(self) -> None:
        self.stop_workers()
        if self.alerts is not None:
            self.alerts.stop()
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
    latest = settings.event_time_window.latest(time.time())
    if engine.clock > latest:
        # Saved by a version that let one far-future event move the engine's clock: every
        # statistic in it has decayed to nothing against that clock. Start cold instead.
        log.warning(
            "engine snapshot is dated past the accepted event time; starting cold",
            snapshot_clock=engine.clock,
            latest_accepted=latest,
        )
        return Engine(settings.connectors, seed=seed, config=config)
    return engine


def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    """Build the store, bus, metrics, ingestion and routing described by ``settings``."""
    if migrate:
        upgrade_database(settings.database_url)
    store = SqlStore(settings.database_url)
    metrics = Metrics()
    bus = build_bus(settings, on_poison=lambda message: poison_to_dead_letter(store, message))
    ingestor = Ingestor(store, metrics, settings.event_time_window)
    decisions = DecisionStore(store.engine)
    snapshots = SnapshotStore(store.engine)
    saved = _load_snapshot(snapshots)
    engine = build_engine(settings, saved)
    writer = DecisionWriter(
        decisions,
        flush_interval_s=settings.decision_flush_ms / 1000,
        dead_letter=store.add_dead_letters,
    )
    routing = RoutingService(
        engine,
        metrics,
        writer,
        follow_event_time=settings.clock == "event",
        window=settings.event_time_window,
    )
    if saved is not None:
        routing.events_learned = saved.events_learned
        routing.outcomes_applied = saved.outcomes_applied
        routing.outcomes_digest = saved.outcomes_digest
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
        outbox=OutboxStore(store.engine),
        anomalies=AnomalyStore(store.engine),
    )
    detection = services.detection = _detection(services)
    services.workers.append(_stream_consumer(services))
    if settings.redis_url:
        _share_state_through_redis(services, saved)
    else:
        # Learnt here, and durably once a snapshot holds it: the snapshot deletes the
        # outbox rows it covers, and what a crash left in the outbox is learnt now.
        def learn(events: Sequence[PaymentEvent], row: int | None) -> None:
            if detection is not None:  # first: see apos.service.detection, "Snapshots"
                detection.observe(events, outbox_id=row)
            routing.learn(events, outbox_id=row)

        ingestor.add_batch_listener(learn)
        try:
            relearnt = relearn_outbox(services.outbox, learn)
        except Exception:
            # Database down at start: the rows stay, and the next start learns them.
            log.exception("could not read the outbox; what it holds is learnt next start")
            relearnt = 0
        if detection is not None:
            detection.replay_done()
        if relearnt:
            log.warning("learnt stored batches the last run had not saved", batches=relearnt)
    services.workers.append(_ticker(services))
    services.workers.append(_snapshotter(services))
    if detection is not None:
        interval = settings.tick_interval_s
        ticks = BackgroundWorker("detection-tick", lambda: detection.tick() * 0, interval)
        services.workers.append(ticks)
        services.workers.append(BackgroundWorker("anomaly-writer", _anomaly_writer(detection)))
    return services


def _detection(services: Services) -> DetectionService | None:
    """The monitor (continuing from its snapshot), fed like the engine; alerts if set."""
    settings = services.settings
    if not settings.detection_enabled:
        return None
    from apos.core.detect.config import DetectionConfig
    from apos.core.detect.monitor import Monitor

    # The configuration file is read (and checked) at every start; the saved monitor is
    # restored only if it ran that same configuration, else detection starts cold.
    path = settings.detection_config
    config = DetectionConfig()
    if path is not None:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        config = DetectionConfig.from_dict(data)
    saved = _load_snapshot(services.snapshots, DETECTION_SNAPSHOT)
    state = DetectionService.saved_monitor(saved)
    monitor: Monitor | None = None
    if state is not None and state.get("config", config.to_dict()) == config.to_dict():
        try:
            monitor = Monitor.restore(state)
        except (KeyError, TypeError, ValueError):
            log.exception("unreadable detection snapshot; detection starts cold")
    elif state is not None:
        log.warning("detection configuration changed since the snapshot; starting cold")
    if monitor is None:
        monitor = Monitor(config)
        saved = None
    metrics = services.metrics
    sinks: list[AlertSink] = [
        WebhookSink(url, _secret(settings.alert_webhook_secret))
        for url in settings.alert_webhook_urls
    ]
    sinks += [SlackSink(url.get_secret_value()) for url in settings.alert_slack_webhook_urls]
    alerts = None
    if sinks:
        alerts = services.alerts = AlertDispatcher(
            sinks,
            queue_size=settings.alert_queue_size,
            rate_per_minute=settings.alert_rate_per_minute,
            on_delivered=lambda sink: metrics.alerts_delivered.labels(sink).inc(),
            on_failed=lambda sink, reason: metrics.alert_failures.labels(sink).inc(),
        )
    assert services.anomalies is not None
    routing = services.routing
    return DetectionService(
        monitor,
        services.anomalies,
        metrics,
        clock=lambda: routing.now().timestamp(),
        window=settings.event_time_window,
        follow_event_time=settings.clock == "event",
        alerts=alerts,
        alert_min_severity=settings.alert_min_severity,
        saved=saved,
    )


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


def _anomaly_writer(detection: DetectionService) -> Callable[[], int]:
    def step() -> int:
        detection.wait_for_findings(0.5)
        return detection.write_step()

    return step


def _load_snapshot(snapshots: SnapshotStore, name: str = SNAPSHOT_NAME) -> SavedSnapshot | None:
    try:
        saved = snapshots.load(name)
    except Exception:
        log.exception("could not read the snapshot; starting cold", snapshot=name)
        return None
    if saved is not None:
        log.info(
            "warm start from engine snapshot",
            saved_at=saved.saved_at.isoformat(),
            events_learned=saved.events_learned,
        )
    return saved


def _share_state_through_redis(services: Services, saved: SavedSnapshot | None) -> None:
    """Every instance appends what it stored to the applied stream and learns from a tail
    of it, so all instances learn from every event exactly once each."""
    settings = services.settings
    publisher = AppliedPublisher(settings, services.outbox)
    stream = publisher.stream
    services.ingestor.add_batch_listener(publisher.publish_batch)
    services.publisher = publisher
    # Every instance relays what others left in the outbox (idempotent: see applied.py).
    services.workers.append(BackgroundWorker("outbox-relay", publisher.relay_step, 0.25))
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
    detection = services.detection

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
                if detection is not None:  # before the engine: see apos.service.detection
                    detection.observe(entry, message.id)
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
    """Persist the engine's learnt state with the stream position it includes; embedded,
    delete (in the same transaction) the outbox rows of the batches the state holds."""
    routing = services.routing
    with routing.lock:
        state = routing.engine.snapshot()
        position = services.stream_position()
        learned = routing.events_learned
        applied, digest = routing.outcomes_applied, routing.outcomes_digest
        settled = frozenset(routing.outbox_learnt)
    snapshot = SavedSnapshot(
        SNAPSHOT_NAME, datetime.now(UTC), position, learned, state, applied, digest
    )
    detection = services.detection
    if detection is not None:
        # Captured after the engine's state and written before it: apos.service.detection.
        detection.save(services.snapshots, deleting=settled)
    services.snapshots.save(snapshot, settled)
    if settled:
        with routing.lock:
            routing.outbox_learnt -= settled
        if detection is not None:
            detection.settled(settled)


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
