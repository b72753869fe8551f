"""The embedded event bus: a bounded, thread-safe queue inside the process.

Same contract as the Redis bus, minus durability: a message is acknowledged when the handler
returns, and a batch whose handler raises goes back to the FRONT of the queue (deliveries + 1),
so nothing accepted is lost while the process lives. Whatever is queued when the process dies
is gone; that is the trade for needing nothing installed (use Redis Streams in production).

``pending_count()`` is every accepted message not yet acknowledged: queued + handed out.
Capacity bounds that same number, so putting a failed batch back can never overflow.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence

from apos.adapters.bus._poison import (
    DEFAULT_MAX_DELIVERIES,
    PoisonHandler,
    give_up_on,
    split_poison,
)
from apos.adapters.ports import BatchHandler, BusMessage


class BusFullError(Exception):
    """The bounded queue has no room for the batch; the producer should back off (HTTP 503)."""


class BusClosedError(Exception):
    """The bus was closed; it accepts nothing more."""


class InProcessBus:
    """Bounded in-process :class:`~apos.adapters.ports.EventBus` (the default).

    ``publish`` is all-or-nothing: it waits up to ``publish_timeout_ms`` for room for the
    whole batch, then raises :class:`BusFullError`. ``consume_once`` waits up to ``wait_ms``
    for messages and hands at most ``batch_size`` to the handler. Safe to use from any number
    of producer and consumer threads.

    After a batch fails, its messages are handed out one at a time until each has been
    handled once more: a single bad message then fails alone, and only it reaches
    ``max_deliveries`` and ``on_poison``, not the good messages that shared its batch.
    """

    def __init__(
        self,
        *,
        capacity: int = 100_000,
        batch_size: int = 1_000,
        wait_ms: int = 100,
        publish_timeout_ms: int = 1_000,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        on_poison: PoisonHandler | None = None,
    ) -> None:
        if capacity < 1 or batch_size < 1 or max_deliveries < 1:
            raise ValueError("capacity, batch_size and max_deliveries must be >= 1")
        self._capacity = capacity
        self._batch_size = batch_size
        self._wait_s = wait_ms / 1000
        self._publish_timeout_s = publish_timeout_ms / 1000
        self._max_deliveries = max_deliveries
        self._on_poison = on_poison
        self._queue: deque[BusMessage] = deque()  # deliveries = hand-outs so far
        self._in_flight = 0
        self._isolate = 0  # messages at the front to hand out alone (they failed in a batch)
        self._ids = itertools.count(1)
        self._closed = False
        self._cond = threading.Condition()

    def publish(self, payloads: Sequence[bytes]) -> list[str]:
        """Queue the payloads in order and return their ids; all or none are accepted."""
        if not payloads:
            return []
        if len(payloads) > self._capacity:
            raise BusFullError(f"batch of {len(payloads)} exceeds capacity {self._capacity}")
        with self._cond:
            has_room = self._cond.wait_for(
                lambda: self._closed or self._unacked() + len(payloads) <= self._capacity,
                timeout=self._publish_timeout_s,
            )
            if self._closed:
                raise BusClosedError("bus is closed")
            if not has_room:
                raise BusFullError(f"bus full ({self._capacity} unacknowledged messages)")
            ids = [str(next(self._ids)) for _ in payloads]
            self._queue.extend(
                BusMessage(id=i, payload=p, deliveries=0)
                for i, p in zip(ids, payloads, strict=True)
            )
            self._cond.notify_all()
        return ids

    def consume_once(self, handler: BatchHandler) -> int:
        """Take up to ``batch_size`` messages, hand them over, ack them. Returns how many.

        Returns 0 if nothing arrived within ``wait_ms``. If ``handler`` (or ``on_poison``)
        raises, the unacknowledged messages go back to the front and the exception propagates.
        """
        batch = self._take()
        if not batch:
            return 0
        healthy, poison = split_poison(batch, self._max_deliveries)
        given_up: set[str] = set()
        try:
            for message in poison:
                give_up_on(message, self._on_poison)
                given_up.add(message.id)
            if healthy:
                handler(healthy)
        except BaseException:
            self._put_back([m for m in batch if m.id not in given_up], acked=len(given_up))
            raise
        self._ack(len(batch))
        return len(batch)

    def pending_count(self) -> int:
        """Accepted messages not yet acknowledged (queued + handed out to a handler)."""
        with self._cond:
            return self._unacked()

    def ping(self) -> bool:
        """True while the bus is open."""
        return not self._closed

    def close(self) -> None:
        """Refuse further publishes and wake waiting consumers (they may drain what is queued)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- internals -------------------------------------------------------------------------

    def _unacked(self) -> int:
        return len(self._queue) + self._in_flight

    def _take(self) -> list[BusMessage]:
        with self._cond:
            deadline = time.monotonic() + self._wait_s
            while not self._queue and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            size = 1 if self._isolate > 0 else self._batch_size
            batch: list[BusMessage] = []
            while self._queue and len(batch) < size:
                queued = self._queue.popleft()
                batch.append(
                    BusMessage(
                        id=queued.id, payload=queued.payload, deliveries=queued.deliveries + 1
                    )
                )
            self._isolate = max(0, self._isolate - len(batch))
            self._in_flight += len(batch)
            return batch

    def _put_back(self, messages: list[BusMessage], acked: int) -> None:
        with self._cond:
            self._in_flight -= len(messages) + acked
            self._queue.extendleft(reversed(messages))
            self._isolate += len(messages)
            self._cond.notify_all()

    def _ack(self, count: int) -> None:
        with self._cond:
            self._in_flight -= count
            self._cond.notify_all()  # publishers may be waiting for room
