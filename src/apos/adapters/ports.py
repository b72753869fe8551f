"""The small interfaces the service depends on; each has an embedded and a real implementation.

=============  =======================================  ===================================
port           embedded (default)                       real (production, CI)
=============  =======================================  ===================================
``Store``      SQLite via SQLAlchemy (``adapters.db``)  PostgreSQL via SQLAlchemy
``EventBus``   in-process queue (``adapters.bus``)      Redis Streams consumer group
=============  =======================================  ===================================

Everything here is synchronous: the service calls the store from worker threads, which keeps
one code path for SQLite and PostgreSQL and keeps the event loop free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from apos.core.events import PaymentEvent, PaymentStatus


@dataclass(frozen=True, slots=True)
class InsertResult:
    """What a batch insert did: new rows written, and events already stored (by event_id)."""

    inserted: int
    duplicates: int
    inserted_ids: frozenset[str] = frozenset()
    # The batch's row in the outbox of learning (written with the events), if any were new.
    outbox_id: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Input that could not be turned into an event, kept with why, so nothing is lost."""

    source: str  # "http", "webhook.hyperswitch", "redis", "file:<name>"
    raw: str  # the payload as received (text; bytes are decoded with errors="replace")
    reason: str  # what was wrong, naming the field where there is one
    received_at: datetime
    merchant_id: str | None = None  # when it could be read from the raw payload
    id: int | None = None  # set by the store
    # A digest of the sender's id for this input (a Hyperswitch event_id): the store keeps
    # one letter per (source, dedupe_key), so a redelivery is not kept twice. None: always kept.
    dedupe_key: str | None = None


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters for listing stored events. ``None`` means "any"."""

    merchant_id: str | None = None
    connector: str | None = None
    status: PaymentStatus | None = None
    payment_id: str | None = None
    since: datetime | None = None  # occurred_at >= since
    until: datetime | None = None  # occurred_at < until
    limit: int = 100
    cursor: str | None = None  # opaque, from the previous Page


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of results, newest first; pass ``next_cursor`` back for the next one."""

    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored API key. Only the SHA-256 of the secret is kept, never the secret itself."""

    id: str  # public identifier, e.g. "key_3f9a..."; also the prefix of the secret
    name: str
    role: str  # "viewer" | "operator" | "admin"
    merchant_id: str | None  # None: all merchants
    key_hash: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the append-only audit log: who did what to what, and why."""

    actor: str  # "key:<id>", "system:<component>", "cli"
    action: str  # e.g. "api_key.create", "events.ingest", "healing.execute"
    target: str
    details: dict[str, Any] = field(default_factory=dict)
    merchant_id: str | None = None
    at: datetime | None = None  # set by the store when None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class MetricRollup:
    """Per-minute counts for one merchant x connector, maintained as events are written.

    Attributes:
        minute: The UTC minute of the events' ``occurred_at``.
        attempts: Events with a final outcome (``successes + failures``).
        successes: Succeeded or authorised events; the success rate is ``successes / attempts``.
        failures: Failed events.
        non_final: Pending, requires_action and cancelled events (not attempts).
        amount_minor: Sum of the attempts' amounts, in minor units (currencies mixed).
        latency_ms_sum: Sum of the attempts' latencies, over ``latency_count`` of them.
        latency_count: Attempts that reported a latency.
    """

    minute: datetime
    merchant_id: str
    connector: str
    attempts: int
    successes: int
    failures: int
    non_final: int
    amount_minor: int
    latency_ms_sum: float
    latency_count: int


class Store(Protocol):
    """The system of record. Implementations: ``apos.adapters.db.SqlStore``."""

    def ping(self) -> bool: ...
    def insert_events(
        self, events: Sequence[PaymentEvent], received_at: datetime
    ) -> InsertResult: ...
    def list_events(self, query: EventQuery) -> Page[PaymentEvent]: ...
    def get_event(self, event_id: str) -> PaymentEvent | None: ...
    def count_events(self, merchant_id: str | None = None) -> int: ...
    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> int: ...
    def list_dead_letters(
        self, merchant_id: str | None, limit: int, cursor: str | None
    ) -> Page[DeadLetter]: ...
    def count_dead_letters(self, merchant_id: str | None = None) -> int: ...
    def list_rollups(
        self,
        merchant_id: str | None,
        connector: str | None,
        since: datetime,
        until: datetime,
    ) -> list[MetricRollup]: ...
    def create_api_key(self, record: ApiKeyRecord) -> None: ...
    def get_api_key(self, key_id: str) -> ApiKeyRecord | None: ...
    def list_api_keys(self) -> list[ApiKeyRecord]: ...
    def revoke_api_key(self, key_id: str, at: datetime) -> bool: ...
    def touch_api_key(self, key_id: str, at: datetime) -> None: ...
    def append_audit(self, entries: Sequence[AuditEntry]) -> None: ...
    def list_audit(
        self, merchant_id: str | None, limit: int, cursor: str | None
    ) -> Page[AuditEntry]: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BusMessage:
    """One entry read from the bus: its id there and its payload (JSON text of one event)."""

    id: str
    payload: bytes
    deliveries: int = 1  # how many times it has been handed to a consumer


# Called with a batch; returning normally means every message in it is durable and may be
# acknowledged. Raising means none is: they stay pending and are delivered again.
BatchHandler = Callable[[Sequence[BusMessage]], None]


class EventBus(Protocol):
    """Carries raw event payloads from producers to the ingestion consumer(s).

    Implementations: ``apos.adapters.bus.memory.InProcessBus`` (default) and
    ``apos.adapters.bus.redis_streams.RedisStreamsBus`` (consumer groups, acknowledged after
    the handler returns, pending entries of dead consumers reclaimed).
    """

    def publish(self, payloads: Sequence[bytes]) -> list[str]: ...
    def consume_once(self, handler: BatchHandler) -> int:
        """Read (or reclaim) one batch, hand it to ``handler``, ack it. Returns its size."""
        ...

    def pending_count(self) -> int: ...
    def ping(self) -> bool: ...
    def close(self) -> None: ...
