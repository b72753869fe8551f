"""The composition root: the only place that builds adapters from settings.

``build_services(settings)`` returns everything the app and the background workers need;
tests call it with embedded or real URLs. Nothing else constructs a store or a Redis client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apos import __version__
from apos.adapters.bus import build_bus
from apos.adapters.db import SqlStore, upgrade_database
from apos.adapters.ports import BusMessage, DeadLetter, EventBus, Store
from apos.service.auth import KeyVerifier
from apos.service.ingest import Ingestor
from apos.service.logs import get_logger
from apos.service.metrics import Metrics
from apos.settings import Settings

log = get_logger("bootstrap")


@dataclass
class Services:
    """Everything a running APOS holds; owned by the app, closed on shutdown."""

    settings: Settings
    store: Store
    bus: EventBus
    metrics: Metrics
    ingestor: Ingestor
    keys: KeyVerifier
    version: str = __version__
    started_at: float = field(default_factory=time.time)
    workers: list[BackgroundWorker] = field(default_factory=list)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.bus.close()
        self.store.close()


class BackgroundWorker:
    """Runs ``step()`` in a daemon thread until stopped; an error backs off, never kills it."""

    def __init__(self, name: str, step: Callable[[], int], idle_sleep: float = 0.0) -> None:
        self.name = name
        self._step = step
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._idle_sleep = idle_sleep

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                did = self._step()
                backoff = 0.1
                if not did and self._idle_sleep:
                    self._stop.wait(self._idle_sleep)
            except Exception:
                log.exception(
                    "background worker step failed; backing off",
                    worker=self.name,
                    backoff_s=backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)


def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    """Build the store, bus, metrics and ingestion pipeline described by ``settings``."""
    if migrate:
        upgrade_database(settings.database_url)
    store = SqlStore(settings.database_url)
    metrics = Metrics()
    bus = build_bus(settings, on_poison=lambda message: poison_to_dead_letter(store, message))
    ingestor = Ingestor(store, metrics)
    services = Services(
        settings=settings,
        store=store,
        bus=bus,
        metrics=metrics,
        ingestor=ingestor,
        keys=KeyVerifier(store),
    )
    services.workers.append(_stream_consumer(services))
    return services


def _stream_consumer(services: Services) -> BackgroundWorker:
    """Drains the event bus into the store; acknowledges only durable batches."""
    ingestor = services.ingestor

    def handle(messages: Sequence[BusMessage]) -> None:
        ingestor.ingest_messages(messages, source="redis" if services.settings.redis_url else "bus")

    def step() -> int:
        return services.bus.consume_once(handle)

    return BackgroundWorker("stream-consumer", step)


def poison_to_dead_letter(store: Store, message: BusMessage) -> None:
    """What to do with a bus entry that failed too many times: keep it, with why."""
    store.add_dead_letters(
        [
            DeadLetter(
                source="redis",
                raw=message.payload.decode("utf-8", errors="replace"),
                reason=f"gave up after {message.deliveries} deliveries",
                received_at=datetime.now(UTC),
            )
        ]
    )
