"""Poison-message rule shared by both buses: a message delivered too often leaves the stream.

A message that makes the handler raise every time would otherwise be redelivered forever and
hold back everything queued behind it. Past ``max_deliveries`` it is handed to ``on_poison``
(the service dead-letters it) and acknowledged instead of being given to the handler again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from apos.adapters.ports import BusMessage

PoisonHandler = Callable[[BusMessage], None]

DEFAULT_MAX_DELIVERIES = 10

_log = logging.getLogger("apos.adapters.bus")


def split_poison(
    batch: Sequence[BusMessage], max_deliveries: int
) -> tuple[list[BusMessage], list[BusMessage]]:
    """Split a batch into (healthy, poison); poison = delivered more than ``max_deliveries``."""
    healthy = [m for m in batch if m.deliveries <= max_deliveries]
    poison = [m for m in batch if m.deliveries > max_deliveries]
    return healthy, poison


def give_up_on(message: BusMessage, on_poison: PoisonHandler | None) -> None:
    """Hand a poison message to ``on_poison``; without one, log it loudly so it is not silent.

    If ``on_poison`` raises, the exception propagates and the caller must NOT acknowledge the
    message: it is retried later rather than lost.
    """
    if on_poison is not None:
        on_poison(message)
        return
    _log.error(
        "bus message %s dropped after %d deliveries (no on_poison handler): %r",
        message.id,
        message.deliveries,
        message.payload[:200],
    )
