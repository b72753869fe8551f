"""Ingestion: the one path by which payment events enter APOS, whatever their source.

HTTP, Hyperswitch webhooks, Redis Streams and files all call :class:`Ingestor`, so they
cannot drift apart. For each batch it validates every payload, writes the valid ones to the
store in one transaction (idempotent by ``event_id``), keeps every invalid one in the
dead-letter store with its reason, and only then tells listeners (the routing engine, the
shared stream) about the events that were new. A failure to store raises, so the caller does
not acknowledge what is not durable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from apos.adapters.db.refusals import write_isolating
from apos.adapters.ports import BusMessage, DeadLetter, InsertResult, Store
from apos.core.event_time import EventTimeWindow
from apos.core.events import EventValidationError, FieldError, PaymentEvent, parse_event
from apos.core.iso import contains_card_number, redact_card_numbers
from apos.service.logs import get_logger, mask_secret_pairs
from apos.service.metrics import Metrics

log = get_logger("ingest")

EventsListener = Callable[[Sequence[PaymentEvent]], None]
# Told each stored batch with its row in the outbox of learning (apos.adapters.db.outbox),
# which it settles: publishes the events (Redis) or learns them until a snapshot holds them.
BatchListener = Callable[[Sequence[PaymentEvent], int | None], object]
# Decides whether a caller may write an event for this merchant (merchant-scoped keys).
MerchantCheck = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class Rejection:
    """One payload that was not accepted: its position in the batch and what was wrong."""

    index: int
    code: str
    errors: list[FieldError]
    event_id: str | None = None


@dataclass(slots=True)
class IngestReport:
    """What happened to a batch."""

    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    accepted_events: list[PaymentEvent] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [
                {
                    "index": r.index,
                    "code": r.code,
                    "event_id": r.event_id,
                    "errors": [e.model_dump() for e in r.errors],
                }
                for r in self.rejected
            ],
        }


def dead_letter_text(payload: Any) -> str:
    """The payload as text for the dead-letter store, with card numbers and the values of
    secret-named fields (``client_secret``, ``password``, ...) redacted."""
    if isinstance(payload, bytes | bytearray):
        text = bytes(payload).decode("utf-8", errors="replace")
    elif isinstance(payload, str):
        text = payload
    else:
        try:
            text = orjson.dumps(payload, default=str).decode()
        except TypeError:
            text = repr(payload)
    return mask_secret_pairs(redact_card_numbers(text))


def _merchant_of(payload: Any) -> str | None:
    if isinstance(payload, dict):
        value = payload.get("merchant_id")
        # Filed under, listed and shown as is: never a card number (it would be refused too).
        if isinstance(value, str) and 0 < len(value) <= 128 and not contains_card_number(value):
            return value
    return None


def _event_id_of(payload: Any) -> str | None:
    if isinstance(payload, dict):
        value = payload.get("event_id")
        if isinstance(value, str) and len(value) <= 128 and not contains_card_number(value):
            return value
    return None


class Ingestor:
    """Validates, stores and dead-letters event batches; notifies listeners of new events."""

    def __init__(
        self, store: Store, metrics: Metrics, window: EventTimeWindow | None = None
    ) -> None:
        self._store = store
        self._metrics = metrics
        # Events dated too far ahead of receipt are refused (apos.core.event_time).
        self._window = window or EventTimeWindow()
        self._listeners: list[EventsListener] = []
        self._batch_listeners: list[BatchListener] = []

    def add_listener(self, listener: EventsListener) -> None:
        """Call ``listener`` with each batch of newly stored events (never duplicates)."""
        self._listeners.append(listener)

    def add_batch_listener(self, listener: BatchListener) -> None:
        """Call ``listener`` with the newly stored events of each committed transaction and
        its outbox row id, right after the commit (before the batch's other writes)."""
        self._batch_listeners.append(listener)

    def ingest(
        self,
        payloads: Sequence[Any],
        source: str,
        may_write: MerchantCheck | None = None,
        merchant_scope: str | None = None,
        dedupe_key: str | None = None,
    ) -> IngestReport:
        """Ingest decoded payloads (dicts); see the module docstring.

        ``merchant_scope`` is the caller's merchant when its key is scoped to one: what it
        sends that cannot be parsed is then filed under that merchant, whatever the payload
        claims, so a scoped key can neither plant dead letters in another merchant's view
        nor lose sight of its own. ``dedupe_key`` (one payload only, e.g. a webhook): the
        dead letter of a refused payload carries it, so a redelivery is not kept twice.
        """
        if dedupe_key is not None and len(payloads) != 1:
            raise ValueError("a dedupe_key identifies one payload")
        started = time.perf_counter()
        received_at = datetime.now(UTC)
        latest = self._window.latest(received_at.timestamp())
        report = IngestReport(received=len(payloads))
        valid: list[PaymentEvent] = []
        letters: list[DeadLetter] = []
        positions: dict[str, int] = {}  # event id -> index in the batch, for rejections
        for index, payload in enumerate(payloads):
            try:
                event = parse_event(payload)
                if event.occurred_ts > latest:
                    raise EventValidationError(
                        [FieldError(field="occurred_at", message=self._window.future_message())]
                    )
            except EventValidationError as exc:
                report.rejected.append(
                    Rejection(index, "invalid_event", exc.errors, _event_id_of(payload))
                )
                letters.append(
                    DeadLetter(
                        source=source,
                        raw=dead_letter_text(payload),
                        reason=str(exc),
                        received_at=received_at,
                        merchant_id=merchant_scope or _merchant_of(payload),
                        dedupe_key=dedupe_key,
                    )
                )
                continue
            if may_write is not None and not may_write(event.merchant_id):
                # Refused, not unparseable: the caller is told; nothing to dead-letter.
                report.rejected.append(
                    Rejection(
                        index,
                        "forbidden_merchant",
                        [
                            FieldError(
                                field="merchant_id",
                                message="this key may not write for this merchant",
                            )
                        ],
                        event.event_id,
                    )
                )
                continue
            valid.append(event)
            positions.setdefault(event.event_id, index)
        self._store_batch(valid, letters, received_at, source, report, positions)
        self._metrics.ingest_batch_seconds.labels(source).observe(time.perf_counter() - started)
        return report

    def ingest_raw(self, payload: bytes, source: str) -> IngestReport:
        """Ingest one raw payload that should decode to an event object (or a list of them)."""
        try:
            decoded = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            self.dead_letter(payload, f"invalid JSON: {exc}", source)
            report = IngestReport(received=1)
            report.rejected.append(
                Rejection(0, "invalid_json", [FieldError(field="", message=str(exc))])
            )
            return report
        return self.ingest(decoded if isinstance(decoded, list) else [decoded], source)

    def ingest_messages(self, messages: Sequence[BusMessage], source: str = "redis") -> None:
        """Bus handler: ingest a batch of bus entries. Raises if the batch is not durable."""
        payloads: list[Any] = []
        broken: list[DeadLetter] = []
        now = datetime.now(UTC)
        for message in messages:
            try:
                payloads.append(orjson.loads(message.payload))
            except orjson.JSONDecodeError as exc:
                broken.append(
                    DeadLetter(
                        source, dead_letter_text(message.payload), f"invalid JSON: {exc}", now
                    )
                )
        if broken:
            self._store.add_dead_letters(broken)
            self._metrics.dead_letters.labels(source).inc(len(broken))
            self._metrics.events_processed.labels(source, "rejected").inc(len(broken))
        if payloads:
            self.ingest(payloads, source)

    def dead_letter(
        self,
        raw: Any,
        reason: str,
        source: str,
        merchant_scope: str | None = None,
        dedupe_key: str | None = None,
    ) -> bool:
        """Keep something that could not be ingested, with why (never silently dropped);
        False if a letter of the same ``source`` and ``dedupe_key`` was already kept.

        ``merchant_scope``, ``dedupe_key``: as for :meth:`ingest`.
        """
        merchant = merchant_scope or _merchant_of(raw)
        letter = DeadLetter(
            source, dead_letter_text(raw), reason, datetime.now(UTC), merchant, None, dedupe_key
        )
        new = self._store.add_dead_letters([letter]) > 0
        if new:
            self._metrics.dead_letters.labels(source).inc()
        self._metrics.events_processed.labels(source, "rejected").inc()
        return new

    def _insert(
        self,
        valid: list[PaymentEvent],
        received_at: datetime,
        source: str,
        report: IngestReport,
        positions: dict[str, int],
    ) -> InsertResult:
        """Store ``valid``; an event the database refuses (it passed validation but, say,
        PostgreSQL cannot hold it) is isolated, dead-lettered and rejected
        (``refused_by_store``) so the others are stored. A database that is down raises:
        nothing is acknowledged, and what was stored before it failed is still learnt."""
        results: list[InsertResult] = []

        def write(batch: Sequence[PaymentEvent]) -> InsertResult:
            result = self._store.insert_events(batch, received_at)
            results.append(result)
            self._settle(batch, result)
            return result

        try:
            _, refused = write_isolating(write, valid)
        except Exception:
            if len(results) > 0:  # halves stored before the outage: learn them now
                stored = frozenset().union(*(r.inserted_ids for r in results))
                self._notify([e for e in valid if e.event_id in stored])
            raise
        inserted_ids = frozenset[str]().union(*(r.inserted_ids for r in results))
        if refused:
            letters = []
            for event, reason in refused:
                field = FieldError(field="", message=reason)
                report.rejected.append(
                    Rejection(
                        positions.get(event.event_id, -1),
                        "refused_by_store",
                        [field],
                        event.event_id,
                    )
                )
                letters.append(
                    DeadLetter(
                        source=source,
                        raw=dead_letter_text(event.__dict__),
                        reason=reason,
                        received_at=received_at,
                        merchant_id=event.merchant_id,
                    )
                )
            log.error("events refused by the database", source=source, events=len(refused))
            self._store.add_dead_letters(letters)
            self._metrics.dead_letters.labels(source).inc(len(letters))
        kept = len(valid) - len(refused)
        return InsertResult(
            inserted=len(inserted_ids),
            duplicates=kept - len(inserted_ids),
            inserted_ids=inserted_ids,
        )

    def _settle(self, batch: Sequence[PaymentEvent], result: InsertResult) -> None:
        """Hand one committed transaction's new events and outbox row to the batch
        listeners. Never raises: the events are durable, and a failed listener leaves the
        row for the relay (it must not look like a row the database refused, either)."""
        if not result.inserted or not self._batch_listeners:
            return
        if result.inserted == len(batch):
            fresh: Sequence[PaymentEvent] = batch
        else:  # the first occurrence of each id stored now, as the store kept it
            first = {e.event_id: e for e in reversed(batch) if e.event_id in result.inserted_ids}
            fresh = [e for e in batch if first.get(e.event_id) is e]
        for listener in self._batch_listeners:
            try:
                listener(fresh, result.outbox_id)
            except Exception:
                log.exception("batch listener failed", listener=repr(listener))

    def _notify(self, events: Sequence[PaymentEvent]) -> None:
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:
                log.exception("event listener failed", listener=repr(listener))

    def _store_batch(
        self,
        valid: list[PaymentEvent],
        letters: list[DeadLetter],
        received_at: datetime,
        source: str,
        report: IngestReport,
        positions: dict[str, int] | None = None,
    ) -> None:
        if letters:
            kept = self._store.add_dead_letters(letters)  # a redelivery is kept once
            self._metrics.dead_letters.labels(source).inc(kept)
        if valid:
            result = self._insert(valid, received_at, source, report, positions or {})
            report.accepted = result.inserted
            report.duplicates = result.duplicates
            if result.inserted == len(valid):
                report.accepted_events = valid
            else:
                ids = result.inserted_ids
                report.accepted_events = [e for e in valid if e.event_id in ids]
        counter = self._metrics.events_processed
        if report.accepted:
            counter.labels(source, "accepted").inc(report.accepted)
        if report.duplicates:
            counter.labels(source, "duplicate").inc(report.duplicates)
        if report.rejected:
            counter.labels(source, "rejected").inc(len(report.rejected))
        if report.accepted_events:
            for listener in self._listeners:
                try:
                    listener(report.accepted_events)
                except Exception:
                    # The events are durable already; a listener's failure must not undo
                    # the acknowledgement or stop the stream.
                    log.exception("event listener failed", listener=repr(listener))
