"""Mapping between table rows and the domain types of :mod:`apos.adapters.ports`.

Table columns carry the same names as the dataclass fields, so most rows map one to one.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from apos.adapters.db.event_writer import EVENT_FIELDS
from apos.adapters.db.models import payment_events
from apos.adapters.ports import ApiKeyRecord, AuditEntry, DeadLetter, MetricRollup
from apos.core.events import PaymentEvent, PaymentStatus

__all__ = [
    "EVENT_COLUMNS",
    "api_key_from_row",
    "audit_entry_from_row",
    "dead_letter_from_row",
    "event_from_row",
    "rollup_from_row",
]

# payment_events minus received_at: exactly the PaymentEvent fields.
EVENT_COLUMNS: tuple[sa.Column[Any], ...] = tuple(payment_events.c[name] for name in EVENT_FIELDS)

_STATUS = {status.value: status for status in PaymentStatus}


def event_from_row(row: sa.Row[Any]) -> PaymentEvent:
    """A stored event. Rows were validated on the way in, so validation is skipped."""
    values = dict(row._mapping)
    values["status"] = _STATUS[values["status"]]
    return PaymentEvent.model_construct(**values)


def dead_letter_from_row(row: sa.Row[Any]) -> DeadLetter:
    """A stored dead letter, with its id."""
    return DeadLetter(**row._mapping)


def api_key_from_row(row: sa.Row[Any]) -> ApiKeyRecord:
    """A stored API key (hash only)."""
    return ApiKeyRecord(**row._mapping)


def audit_entry_from_row(row: sa.Row[Any]) -> AuditEntry:
    """A stored audit entry, with its id and time."""
    return AuditEntry(**row._mapping)


def rollup_from_row(row: sa.Row[Any]) -> MetricRollup:
    """One stored per-minute rollup."""
    return MetricRollup(**row._mapping)
