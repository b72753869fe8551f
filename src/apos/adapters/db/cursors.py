"""Opaque pagination cursors: a position in a newest-first listing, not a page number.

Keyset pagination stays correct and fast while rows are being inserted: a cursor names the
last row a client saw, and the next page starts strictly after it.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

__all__ = [
    "InvalidCursorError",
    "decode_event_cursor",
    "decode_id_cursor",
    "encode_event_cursor",
    "encode_id_cursor",
]


class InvalidCursorError(ValueError):
    """A cursor that this store did not issue (or issued for another listing)."""


def _encode(payload: list[object]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(cursor: str, kind: str) -> list[object]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidCursorError("cursor is not one this API issued") from None
    if not isinstance(payload, list) or not payload or payload[0] != kind:
        raise InvalidCursorError("cursor belongs to another listing")
    return payload


def encode_event_cursor(occurred_at: datetime, event_id: str) -> str:
    """Cursor after the event at (``occurred_at``, ``event_id``)."""
    return _encode(["e", occurred_at.isoformat(), event_id])


def decode_event_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_event_cursor`; raises :class:`InvalidCursorError`."""
    payload = _decode(cursor, "e")
    try:
        _, at_text, event_id = payload
        occurred_at = datetime.fromisoformat(str(at_text))
    except ValueError:
        raise InvalidCursorError("malformed event cursor") from None
    if occurred_at.tzinfo is None or not isinstance(event_id, str):
        raise InvalidCursorError("malformed event cursor")
    return occurred_at, event_id


def encode_id_cursor(kind: str, row_id: int) -> str:
    """Cursor after row ``row_id`` of an id-ordered listing named ``kind``."""
    return _encode([kind, row_id])


def decode_id_cursor(cursor: str, kind: str) -> int:
    """Inverse of :func:`encode_id_cursor`; raises :class:`InvalidCursorError`."""
    payload = _decode(cursor, kind)
    if len(payload) != 2 or type(payload[1]) is not int:
        raise InvalidCursorError(f"malformed {kind} cursor")
    return payload[1]


def encode_time_cursor(kind: str, at: datetime, key: str) -> str:
    """Cursor after the row at (``at``, ``key``) of a listing named ``kind``."""
    return _encode([kind, at.isoformat(), key])


def decode_time_cursor(cursor: str, kind: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_time_cursor`; raises :class:`InvalidCursorError`."""
    payload = _decode(cursor, kind)
    try:
        _, at_text, key = payload
        at = datetime.fromisoformat(str(at_text))
    except ValueError:
        raise InvalidCursorError("malformed cursor") from None
    if at.tzinfo is None or not isinstance(key, str):
        raise InvalidCursorError("malformed cursor")
    return at, key
