"""The production event bus: a Redis Streams consumer group (Redis >= 6.2; 7 recommended).

Delivery guarantee
    At-least-once. An entry is acknowledged (XACK) only after the handler returned, i.e. after
    its events are durable in the store. Entries a consumer read but never acknowledged (it
    crashed, or its handler raised) stay in the group's pending list and are delivered again:
    by the same consumer on its next call, or by any consumer via XAUTOCLAIM once they have
    been idle ``reclaim_idle_ms``. A publish retried after a network error may also add an
    entry twice. So duplicates happen, by design; the store ignores an event whose
    ``event_id`` it already holds, which makes the whole effectively-once *storage*.

One ``consume_once`` call hands over at most one batch, taken from the first source that has
entries:

1. this consumer's own pending entries (at start, and after a handler failure), re-read with
   XREADGROUP id ``0`` ONE AT A TIME, so a bad message fails alone and good messages that
   shared its batch do not pile up deliveries;
2. entries idle longer than ``reclaim_idle_ms`` in any consumer's pending list (XAUTOCLAIM);
3. new entries: XREADGROUP ``>`` with COUNT ``read_count`` and BLOCK ``block_ms``.

Poison: a message delivered more than ``max_deliveries`` times goes to ``on_poison`` (the
service dead-letters it) and is acknowledged, so it cannot block the stream forever.
Limitation: a message that kills the *process* (not just raises) takes the rest of its
reclaimed batch with it each time, so those messages also reach ``on_poison``; they are
dead-lettered, never dropped.

Trimming: XADD ``MAXLEN ~ maxlen`` trims regardless of the group, so entries not yet read are
lost if the backlog ever exceeds ``maxlen``; size it far above any backlog. Entries trimmed
or deleted while pending are acknowledged away.

Threads: ``publish``, ``pending_count`` and ``ping`` may be called from any thread;
``consume_once`` from one thread per instance. Scale out with more instances (distinct
consumer names) in the same group.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from apos.adapters.bus._poison import (
    DEFAULT_MAX_DELIVERIES,
    PoisonHandler,
    give_up_on,
    split_poison,
)
from apos.adapters.ports import BatchHandler, BusMessage

EVENT_FIELD = b"event"

# (entry id, fields) as redis-py returns them; fields are empty/None for a deleted entry.
_Entry = tuple[Any, Any]


def connect(url: str, block_ms: int = 1_000) -> redis.Redis:
    """A client suited to stream work: bytes responses, RESP2 shapes, short bounded retries."""
    return redis.Redis.from_url(
        url,
        # Pinned: the parsing below relies on RESP2 reply shapes, whatever redis-py defaults to.
        protocol=2,
        socket_connect_timeout=2.0,
        # A blocking read legitimately waits block_ms; the socket must outlast it.
        socket_timeout=block_ms / 1000 + 5.0,
        retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.01), retries=3),
    )


def _decode_id(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _block(block_ms: int) -> int | None:
    # BLOCK 0 means "forever" to Redis; here 0 means "do not block".
    return block_ms if block_ms > 0 else None


def _to_message(entry_id: Any, fields: Any, deliveries: int) -> BusMessage:
    payload = fields.get(EVENT_FIELD)
    if payload is None:
        # Not written by publish(): keep its content so the consumer can dead-letter it.
        payload = json.dumps(
            {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
        ).encode()
    return BusMessage(id=_decode_id(entry_id), payload=payload, deliveries=deliveries)


class RedisStreamsBus:
    """:class:`~apos.adapters.ports.EventBus` on a Redis stream with one consumer group.

    Nothing touches Redis in the constructor (so a bus can be built, and ``ping`` answer
    False, while Redis is down); the group is created on first use.
    """

    def __init__(
        self,
        url: str,
        stream: str,
        group: str,
        consumer: str,
        *,
        reclaim_idle_ms: int = 30_000,
        read_count: int = 1_000,
        block_ms: int = 1_000,
        maxlen: int = 1_000_000,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        on_poison: PoisonHandler | None = None,
    ) -> None:
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._reclaim_idle_ms = reclaim_idle_ms
        self._read_count = read_count
        self._block_ms = block_ms
        self._maxlen = maxlen
        self._max_deliveries = max_deliveries
        self._on_poison = on_poison
        self._client = connect(url, block_ms)
        self._group_ready = False
        # A previous process with this consumer name may have left entries unacknowledged.
        self._own_pending = True
        self._claim_cursor = "0-0"
        self._next_claim_at = 0.0  # time.monotonic(); reclaim scans are throttled

    # -- EventBus ------------------------------------------------------------------------

    def publish(self, payloads: Sequence[bytes]) -> list[str]:
        """Append the payloads in order (one pipelined round trip); returns their entry ids."""
        if not payloads:
            return []
        pipe = self._client.pipeline(transaction=False)
        for payload in payloads:
            pipe.xadd(self.stream, {EVENT_FIELD: payload}, maxlen=self._maxlen, approximate=True)
        return [_decode_id(entry_id) for entry_id in pipe.execute()]

    def consume_once(self, handler: BatchHandler) -> int:
        """Read or reclaim one batch, hand it to ``handler``, ack it. Returns its size.

        Returns 0 when nothing arrived within ``block_ms``. If ``handler`` or ``on_poison``
        raises, what is not yet acknowledged stays pending and the exception propagates.
        """
        if not self._group_ready:
            self.ensure_group()
        try:
            batch = self._next_batch()
        except redis.ResponseError as exc:
            if str(exc).startswith("NOGROUP"):  # stream deleted under us: recreate next call
                self._group_ready = False
                return 0
            raise
        except BaseException:
            # The read may have reached Redis even though the reply did not reach us.
            self._own_pending = True
            raise
        if not batch:
            return 0
        healthy, poison = split_poison(batch, self._max_deliveries)
        try:
            for message in poison:
                give_up_on(message, self._on_poison)
                self._ack([message.id])
            if healthy:
                handler(healthy)
                self._ack([m.id for m in healthy])
        except BaseException:
            self._own_pending = True  # re-read what is left, one message at a time
            raise
        return len(batch)

    def pending_count(self) -> int:
        """Entries not yet acknowledged by the group: delivered-unacked + not yet delivered.

        Same meaning as ``InProcessBus.pending_count``. Undelivered entries come from the
        group's ``lag`` (Redis 7); when Redis cannot tell it, the stream length stands in as
        an upper bound.
        """
        if not self._group_ready:
            self.ensure_group()
        for info in self._client.xinfo_groups(self.stream):
            if _decode_id(info["name"]) == self.group:
                lag = info.get("lag")
                if lag is None:
                    lag = self._client.xlen(self.stream)
                return int(info["pending"]) + int(lag)
        return 0

    def ping(self) -> bool:
        """True if Redis answers; never raises."""
        try:
            return bool(self._client.ping())
        except Exception:
            return False

    def close(self) -> None:
        """Release the connections."""
        self._client.close()

    # -- extras ------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the stream and group (from the stream's start) if missing; idempotent."""
        try:
            self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    # -- internals ---------------------------------------------------------------------------

    def _next_batch(self) -> list[BusMessage]:
        if self._own_pending:
            batch = self._read_own_pending()
            if batch:
                return batch
            self._own_pending = False
        if time.monotonic() >= self._next_claim_at:
            batch = self._reclaim()
            if batch:
                return batch
        entries = self._read_group(">", self._read_count, _block(self._block_ms))
        return [_to_message(entry_id, fields, 1) for entry_id, fields in entries]

    def _read_own_pending(self) -> list[BusMessage]:
        while True:
            entries = self._read_group("0", 1, None)
            if not entries:
                return []
            batch = self._with_deliveries(entries)
            if batch:  # else it was deleted while pending and is now acked: read on
                return batch

    def _reclaim(self) -> list[BusMessage]:
        reply: Any = self._client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            self._reclaim_idle_ms,
            start_id=self._claim_cursor,
            count=self._read_count,
        )
        cursor, claimed = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []  # Redis >= 7 lists trimmed entries
        if deleted:
            self._ack(deleted)
        self._claim_cursor = _decode_id(cursor)
        if not claimed and self._claim_cursor == "0-0":
            # A full pass found nothing idle; nothing can become idle much sooner than this.
            self._next_claim_at = time.monotonic() + self._reclaim_idle_ms / 4000
        return self._with_deliveries(claimed)

    def _read_group(self, from_id: str, count: int, block: int | None) -> list[_Entry]:
        # redis-py's declared reply unions cover shapes RESP2 never produces; parse as Any.
        reply: Any = self._client.xreadgroup(
            self.group, self.consumer, {self.stream: from_id}, count=count, block=block
        )
        return list(reply[0][1]) if reply else []

    def _with_deliveries(self, entries: list[_Entry]) -> list[BusMessage]:
        """Messages for entries this consumer owns again, with their delivery counts."""
        live = [(entry_id, fields) for entry_id, fields in entries if entry_id and fields]
        gone = [entry_id for entry_id, fields in entries if entry_id and not fields]
        if gone:
            self._ack(gone)
        if not live:
            return []
        # Counts are only in the pending list; one range query covers the batch, which is
        # everything this consumer has pending between its first and last id.
        rows: Any = self._client.xpending_range(
            self.stream,
            self.group,
            min=live[0][0],
            max=live[-1][0],
            count=len(entries),
            consumername=self.consumer,
        )
        counts = {_decode_id(row["message_id"]): int(row["times_delivered"]) for row in rows}
        # A re-delivered entry has been delivered at least twice, even if the lookup missed.
        return [
            _to_message(entry_id, fields, counts.get(_decode_id(entry_id), 2))
            for entry_id, fields in live
        ]

    def _ack(self, entry_ids: Sequence[bytes | str]) -> None:
        self._client.xack(self.stream, self.group, *entry_ids)


class StreamTail:
    """Follows the stream without a group (XREAD): every tail sees every entry.

    Each API instance uses one to keep its routing state current. Start from ``"$"`` (what
    arrives after the first ``read``), ``"0"`` (everything still in the stream) or a saved
    :attr:`last_id`. If the stream was trimmed past that id, reading resumes at the oldest
    entry still there.
    """

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        start_id: str = "$",
        count: int = 1_000,
        block_ms: int = 1_000,
    ) -> None:
        self.stream = stream
        self._last_id = start_id
        self._count = count
        self._block_ms = block_ms
        self._client = connect(url, block_ms)

    @property
    def last_id(self) -> str:
        """Id of the last entry returned (save it to resume); ``"$"`` until the first read."""
        return self._last_id

    def read(self) -> list[BusMessage]:
        """Entries after :attr:`last_id`, oldest first; waits up to ``block_ms`` for some."""
        if self._last_id == "$":
            # Pin "$" to a concrete id now, or entries arriving between reads would be missed.
            newest: Any = self._client.xrevrange(self.stream, count=1)
            self._last_id = _decode_id(newest[0][0]) if newest else "0-0"
        reply: Any = self._client.xread(
            {self.stream: self._last_id}, count=self._count, block=_block(self._block_ms)
        )
        if not reply:
            return []
        entries = reply[0][1]
        self._last_id = _decode_id(entries[-1][0])
        return [_to_message(entry_id, fields, 1) for entry_id, fields in entries if fields]

    def close(self) -> None:
        """Release the connections."""
        self._client.close()


# Appends entries only if the marker key was not set yet, and sets it: one atomic step, as
# a Lua script runs alone on the server. The marker is set first, so an error after it
# (nothing short of a script fault can fail an XADD of valid arguments) loses rather than
# repeats; Redis refuses a writing script under OOM before its first write.
_APPEND_ONCE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return -1
end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[i])
end
return #ARGV - 2
"""


class OnceAppender:
    """Appends a group of entries to a stream at most once per marker (idempotent publish).

    :meth:`append` with the same ``marker`` twice appends nothing the second time, as long
    as the marker lives (``marker_ttl_s``): a publisher that retries, or two publishers
    racing on the same batch, never put it on the stream twice. A Lua script makes the
    check, the marker and the appends one atomic step.
    """

    def __init__(self, client: redis.Redis, marker_ttl_s: int) -> None:
        self._script = client.register_script(_APPEND_ONCE)
        self._ttl = max(1, int(marker_ttl_s))

    def append(self, stream: str, marker: str, payloads: Sequence[bytes], maxlen: int) -> bool:
        """Append ``payloads`` (field ``event``, MAXLEN ~ ``maxlen``) unless ``marker`` is
        set; True if they were appended now."""
        done = self._script(keys=[marker, stream], args=[self._ttl, maxlen, *payloads])
        return int(done) >= 0
