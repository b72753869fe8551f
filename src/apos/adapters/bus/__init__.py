"""Event bus adapters: the in-process queue (default) and Redis Streams (production).

Both acknowledge a batch only after the handler returned, hand a failed batch out again, and
give up on a message delivered more than ``max_deliveries`` times by passing it to
``on_poison``. ``build_bus`` picks one from the settings.
"""

from __future__ import annotations

from apos.adapters.bus._poison import DEFAULT_MAX_DELIVERIES, PoisonHandler
from apos.adapters.bus.memory import BusClosedError, BusFullError, InProcessBus
from apos.adapters.bus.redis_streams import RedisStreamsBus, StreamTail
from apos.adapters.ports import EventBus
from apos.settings import Settings

__all__ = [
    "DEFAULT_MAX_DELIVERIES",
    "BusClosedError",
    "BusFullError",
    "InProcessBus",
    "PoisonHandler",
    "RedisStreamsBus",
    "StreamTail",
    "build_bus",
]


def build_bus(
    settings: Settings,
    *,
    on_poison: PoisonHandler | None = None,
    max_deliveries: int = DEFAULT_MAX_DELIVERIES,
) -> EventBus:
    """The bus the settings ask for: Redis Streams when ``redis_url`` is set, else in-process."""
    if settings.redis_url is None:
        return InProcessBus(
            batch_size=settings.stream_read_count,
            wait_ms=settings.stream_block_ms,
            max_deliveries=max_deliveries,
            on_poison=on_poison,
        )
    return RedisStreamsBus(
        settings.redis_url,
        settings.event_stream,
        settings.consumer_group,
        settings.consumer_name,
        reclaim_idle_ms=settings.reclaim_idle_ms,
        read_count=settings.stream_read_count,
        block_ms=settings.stream_block_ms,
        maxlen=settings.stream_maxlen,
        max_deliveries=max_deliveries,
        on_poison=on_poison,
    )
