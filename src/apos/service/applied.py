"""The applied stream: how every instance learns every stored event, exactly once.

Stored means learnt, even across a crash (docs/ARCHITECTURE.md). The transaction that
stores a batch also writes its row in the outbox of learning (``applied_outbox``). Then:

* :meth:`AppliedPublisher.publish_batch`, an ingestor listener, appends the batch to
  ``<stream>:applied`` (chunks of :data:`APPLIED_CHUNK` events, JSON arrays), which every
  instance tails, and queues the row for deletion;
* :meth:`AppliedPublisher.relay_step`, run by a worker on every instance, deletes the
  queued rows in bulk and publishes the rows older than ``outbox_grace_s``: batches whose
  instance died between commit and publish, or whose publish failed (Redis down);
* publishing is idempotent: a marker per outbox row, set atomically with the appends
  (:class:`~apos.adapters.bus.redis_streams.OnceAppender`), so a crash between the append
  and the delete, or the relay racing a slow live publisher, never appends a batch twice.

Embedded (no Redis) there is no stream: the engine learns in-process and an outbox row is
deleted with the snapshot that contains its events (:func:`relearn_outbox` teaches what a
crash left behind at the next start).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from redis.exceptions import RedisError

from apos.adapters.bus.redis_streams import OnceAppender, connect
from apos.adapters.db.outbox import OutboxStore
from apos.core.events import PaymentEvent, events_to_json
from apos.service.logs import get_logger
from apos.settings import Settings

__all__ = ["APPLIED_CHUNK", "AppliedPublisher", "relearn_outbox"]

log = get_logger("applied")

# Most events one entry of the applied stream carries.
APPLIED_CHUNK = 100

# Outbox rows the relay publishes per step.
_RELAY_BATCH = 50


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


def _chunks(events: Sequence[PaymentEvent]) -> list[bytes]:
    # An entry per chunk (a JSON array): ~1 µs an event to encode and one XADD per chunk,
    # where an entry per event cost ~18 µs an event here and ~14 on every tail.
    return [
        events_to_json(events[i : i + APPLIED_CHUNK]) for i in range(0, len(events), APPLIED_CHUNK)
    ]


class AppliedPublisher:
    """Appends newly stored events to the applied stream, which every instance tails.

    An ingestor batch listener: the service adds one, and so does ``apos ingest`` when
    Redis is configured, so that running instances learn from events whoever stored them.
    With an ``outbox`` it settles the batches' outbox rows and relays what others left
    (module docstring). The service also sends its control messages through :meth:`control`.
    """

    def __init__(self, settings: Settings, outbox: OutboxStore | None = None) -> None:
        if not settings.redis_url:
            raise ValueError("the applied stream needs a Redis URL")
        self.stream = settings.applied_stream
        self._client = connect(settings.redis_url)
        self._once = OnceAppender(self._client, settings.outbox_marker_ttl_s)
        self._retention = _AppliedRetention(settings.stream_maxlen)
        self._outbox = outbox
        self._grace = timedelta(seconds=settings.outbox_grace_s)
        self._relay_every = min(1.0, settings.outbox_grace_s / 2)
        self._next_relay = 0.0  # time.monotonic(): the first step relays at once
        self._lock = threading.Lock()
        self._settled: list[int] = []  # published rows, to delete
        self.relayed = 0  # outbox rows this instance's relay published (others left them)

    def ping(self) -> bool:
        """Whether Redis answers."""
        try:
            return bool(self._client.ping())
        except RedisError:
            return False

    def __call__(self, events: Sequence[PaymentEvent]) -> None:
        """Append ``events`` (no outbox row: not idempotent)."""
        self.publish_batch(events, None)

    def publish_batch(self, events: Sequence[PaymentEvent], outbox_id: int | None) -> bool:
        """Append a stored batch, once per outbox row; True if it was appended now.

        False means the row's batch was on the stream already (a relay or a retry got there
        first); either way its row is queued for deletion.
        """
        if not events:
            return False
        chunks = _chunks(events)
        maxlen = 1_000
        for start in range(0, len(events), APPLIED_CHUNK):
            maxlen = self._retention.entries_after(len(events[start : start + APPLIED_CHUNK]))
        if outbox_id is None:
            pipe = self._client.pipeline(transaction=False)
            for chunk in chunks:
                pipe.xadd(self.stream, {"event": chunk}, maxlen=maxlen, approximate=True)
            pipe.execute()
            return True
        appended = self._once.append(self.stream, self._marker(outbox_id, events), chunks, maxlen)
        with self._lock:
            self._settled.append(outbox_id)
        return appended

    def _marker(self, outbox_id: int, events: Sequence[PaymentEvent]) -> str:
        # The row id alone would collide with the rows of an earlier database (ids restart);
        # the batch's smallest event id tells the batches apart. Both publishers know it.
        first = min(event.event_id for event in events)
        token = hashlib.blake2b(first.encode(), digest_size=6).hexdigest()
        return f"{self.stream}:published:{outbox_id}:{token}"

    def settle(self) -> int:
        """Delete the outbox rows of the batches published so far; how many."""
        if self._outbox is None:
            return 0
        with self._lock:
            done, self._settled = self._settled, []
        if not done:
            return 0
        try:
            self._outbox.delete(done)
        except Exception:
            with self._lock:  # kept for the next step; the relay would also find them
                self._settled.extend(done)
            raise
        return len(done)

    def relay(self, created_before: datetime) -> int:
        """Publish the outbox rows created before ``created_before``; how many."""
        if self._outbox is None:
            return 0
        rows = self._outbox.batches(created_before, limit=_RELAY_BATCH)
        for row in rows:
            events = self._outbox.events(row.event_ids)
            if not events:  # its events are gone: nothing left to teach
                with self._lock:
                    self._settled.append(row.id)
                continue
            if self.publish_batch(events, row.id):
                self.relayed += 1
                log.warning(
                    "relayed a stored batch that had not been published",
                    outbox_id=row.id,
                    events=len(events),
                    created_at=row.created_at.isoformat(),
                )
        self.settle()
        return len(rows)

    def relay_step(self) -> int:
        """One step of the relay worker: settle, and every so often relay old rows."""
        did = self.settle()
        if time.monotonic() >= self._next_relay:
            relayed = self.relay(datetime.now(UTC) - self._grace)
            if relayed < _RELAY_BATCH:  # else more are waiting: go on at once
                self._next_relay = time.monotonic() + self._relay_every
            did += relayed
        return did

    def backlog(self) -> int:
        """Outbox rows waiting (every instance's), or -1 without an outbox or a database."""
        if self._outbox is None:
            return -1
        try:
            return self._outbox.count()
        except Exception:
            return -1

    def control(self, message: dict[str, Any]) -> None:
        """Append a control message (experiment start or stop), in order with the events."""
        maxlen = self._retention.entries_after(1)
        self._client.xadd(
            self.stream, {"event": orjson.dumps(message)}, maxlen=maxlen, approximate=True
        )

    def close(self) -> None:
        """Delete what is settled (best effort: the relay finds the rest), then disconnect."""
        try:
            self.settle()
        except Exception:
            log.exception("could not delete settled outbox rows; the relay will")
        self._client.close()


def relearn_outbox(
    outbox: OutboxStore, learn: Callable[[Sequence[PaymentEvent], int], None]
) -> int:
    """Embedded start: teach the batches whose rows are still in the outbox (stored but not
    in the saved snapshot: the process died before the next one); how many batches."""
    taught = 0
    after = 0
    while rows := outbox.batches(after_id=after, limit=_RELAY_BATCH):
        for row in rows:
            learn(outbox.events(row.event_ids), row.id)
        taught += len(rows)
        after = rows[-1].id
    return taught
