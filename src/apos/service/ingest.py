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

from apos.adapters.ports import BusMessage, DeadLetter, Store
from apos.core.events import EventValidationError, FieldError, PaymentEvent, parse_event
from apos.core.iso import redact_card_numbers
from apos.service.logs import get_logger, mask_secret_pairs
from apos.service.metrics import Metrics

log = get_logger("ingest")

EventsListener = Callable[[Sequence[PaymentEvent]], None]
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
        if isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return None


def _event_id_of(payload: Any) -> str | None:
    if isinstance(payload, dict):
        value = payload.get("event_id")
        if isinstance(value, str) and len(value) <= 128:
            return value
    return None


class Ingestor:
    """Validates, stores and dead-letters event batches; notifies listeners of new events."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._listeners: list[EventsListener] = []

    def add_listener(self, listener: EventsListener) -> None:
        """Call ``listener`` with each batch of newly stored events (never duplicates)."""
        self._listeners.append(listener)

    def ingest(
        self,
        payloads: Sequence[Any],
        source: str,
        may_write: MerchantCheck | None = None,
        merchant_scope: str | None = None,
    ) -> IngestReport:
        """Ingest decoded payloads (dicts); see the module docstring.

        ``merchant_scope`` is the caller's merchant when its key is scoped to one: what it
        sends that cannot be parsed is then filed under that merchant, whatever the payload
        claims, so a scoped key can neither plant dead letters in another merchant's view
        nor lose sight of its own.
        """
        started = time.perf_counter()
        received_at = datetime.now(UTC)
        report = IngestReport(received=len(payloads))
        valid: list[PaymentEvent] = []
        letters: list[DeadLetter] = []
        for index, payload in enumerate(payloads):
            try:
                event = parse_event(payload)
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
        self._store_batch(valid, letters, received_at, source, report)
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
        self, raw: Any, reason: str, source: str, merchant_scope: str | None = None
    ) -> None:
        """Keep something that could not be ingested, with why (never silently dropped).

        ``merchant_scope``: as for :meth:`ingest`.
        """
        merchant = merchant_scope or _merchant_of(raw)
        letter = DeadLetter(source, dead_letter_text(raw), reason, datetime.now(UTC), merchant)
        self._store.add_dead_letters([letter])
        self._metrics.dead_letters.labels(source).inc()
        self._metrics.events_processed.labels(source, "rejected").inc()

    def _store_batch(
        self,
        valid: list[PaymentEvent],
        letters: list[DeadLetter],
        received_at: datetime,
        source: str,
        report: IngestReport,
    ) -> None:
        if letters:
            self._store.add_dead_letters(letters)
            self._metrics.dead_letters.labels(source).inc(len(letters))
        if valid:
            result = self._store.insert_events(valid, received_at)
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
