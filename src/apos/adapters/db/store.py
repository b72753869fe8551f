"""``SqlStore``: the :class:`~apos.adapters.ports.Store` port on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from apos.adapters.db import rows
from apos.adapters.db.cursors import (
    decode_event_cursor,
    decode_id_cursor,
    encode_event_cursor,
    encode_id_cursor,
)
from apos.adapters.db.engine import create_engine
from apos.adapters.db.event_writer import (
    aggregate_rollups,
    dedupe_batch,
    insert_new_events,
    upsert_rollups,
)
from apos.adapters.db.models import (
    api_keys,
    audit_log,
    dead_letters,
    metric_rollups,
    payment_events,
)
from apos.adapters.db.outbox import add_outbox_row
from apos.adapters.db.refusals import (
    dead_letter_raw,
    storable_document,
    storable_text,
    write_isolating,
)
from apos.adapters.db.types import UtcDateTime
from apos.adapters.ports import (
    ApiKeyRecord,
    AuditEntry,
    DeadLetter,
    EventQuery,
    InsertResult,
    MetricRollup,
    Page,
)
from apos.core.events import PaymentEvent

__all__ = ["MAX_PAGE_SIZE", "DuplicateRecordError", "SqlStore"]

# Larger requested pages are cut to this: one listing must not hold a worker for long.
MAX_PAGE_SIZE = 1_000


class DuplicateRecordError(ValueError):
    """A record with the same unique key (e.g. an API key id or hash) already exists."""


def _page_size(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE_SIZE))


def _require_aware(name: str, value: datetime | None) -> None:
    # Checked up front: inside SQLAlchemy the same error would surface as a StatementError.
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")


class SqlStore:
    """The system of record on SQLite (embedded default) or PostgreSQL, chosen by ``url``.

    Thread-safe: every method takes a pooled connection for its own short transaction. The
    schema must exist (:func:`apos.adapters.db.upgrade_database`); constructing the store
    does not connect.
    """

    def __init__(self, url: str) -> None:
        self._engine = create_engine(url)

    @property
    def engine(self) -> sa.Engine:
        """The underlying engine (for health details and tests)."""
        return self._engine

    def ping(self) -> bool:
        """Whether the database answers. Never raises."""
        try:
            with self._engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except Exception:  # anything at all means "not reachable" to a health check
            return False
        return True

    # Events ---------------------------------------------------------------------------

    def insert_events(self, events: Sequence[PaymentEvent], received_at: datetime) -> InsertResult:
        """Store the events not stored yet, count them into the rollups and name them in the
        outbox of learning (:mod:`apos.adapters.db.outbox`), atomically.

        Idempotent on ``event_id``: an id already stored, or repeated within ``events``
        (the first occurrence wins), is counted as a duplicate and changes nothing.
        """
        _require_aware("received_at", received_at)
        if not events:
            return InsertResult(inserted=0, duplicates=0)
        unique = dedupe_batch(events)
        outbox_id: int | None = None
        with self._engine.begin() as connection:
            inserted_ids = insert_new_events(connection, unique, received_at)
            if inserted_ids:
                fresh = (
                    unique
                    if len(inserted_ids) == len(unique)
                    else [e for e in unique if e.event_id in inserted_ids]
                )
                upsert_rollups(connection, aggregate_rollups(fresh))
                outbox_id = add_outbox_row(connection, [e.event_id for e in fresh], received_at)
        return InsertResult(
            inserted=len(inserted_ids),
            duplicates=len(events) - len(inserted_ids),
            inserted_ids=inserted_ids,
            outbox_id=outbox_id,
        )

    def list_events(self, query: EventQuery) -> Page[PaymentEvent]:
        """Events matching ``query``, newest ``occurred_at`` first (ties: larger id first)."""
        _require_aware("since", query.since)
        _require_aware("until", query.until)
        limit = _page_size(query.limit)
        pe = payment_events
        stmt = sa.select(*rows.EVENT_COLUMNS)
        if query.merchant_id is not None:
            stmt = stmt.where(pe.c.merchant_id == query.merchant_id)
        if query.connector is not None:
            stmt = stmt.where(pe.c.connector == query.connector)
        if query.status is not None:
            stmt = stmt.where(pe.c.status == str(query.status))
        if query.payment_id is not None:
            stmt = stmt.where(pe.c.payment_id == query.payment_id)
        if query.since is not None:
            stmt = stmt.where(pe.c.occurred_at >= query.since)
        if query.until is not None:
            stmt = stmt.where(pe.c.occurred_at < query.until)
        if query.cursor is not None:
            after_at, after_id = decode_event_cursor(query.cursor)
            # A row-value comparison the (…, occurred_at, event_id) indexes can serve. The
            # literals are typed explicitly: tuple_() would not apply UtcDateTime to them.
            stmt = stmt.where(
                sa.tuple_(pe.c.occurred_at, pe.c.event_id)
                < sa.tuple_(sa.literal(after_at, UtcDateTime), sa.literal(after_id, sa.String))
            )
        stmt = stmt.order_by(pe.c.occurred_at.desc(), pe.c.event_id.desc()).limit(limit + 1)
        with self._engine.connect() as connection:
            found = [rows.event_from_row(r) for r in connection.execute(stmt)]
        if len(found) <= limit:
            return Page(items=found, next_cursor=None)
        last = found[limit - 1]
        return Page(
            items=found[:limit], next_cursor=encode_event_cursor(last.occurred_at, last.event_id)
        )

    def get_event(self, event_id: str) -> PaymentEvent | None:
        """The stored event with this id, if any."""
        stmt = sa.select(*rows.EVENT_COLUMNS).where(payment_events.c.event_id == event_id)
        with self._engine.connect() as connection:
            row = connection.execute(stmt).first()
        return None if row is None else rows.event_from_row(row)

    def count_events(self, merchant_id: str | None = None) -> int:
        """How many events are stored (for one merchant, or all)."""
        stmt = sa.select(sa.func.count()).select_from(payment_events)
        if merchant_id is not None:
            stmt = stmt.where(payment_events.c.merchant_id == merchant_id)
        with self._engine.connect() as connection:
            return int(connection.execute(stmt).scalar_one())

    # Dead letters ---------------------------------------------------------------------

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        """Keep inputs that could not be parsed (their ``id`` is assigned here); how many
        were new. A letter whose ``(source, dedupe_key)`` is already kept is skipped."""
        if not letters:
            return 0
        # Whatever was refused must still be kept: text the database cannot hold (NUL, lone
        # surrogates) is replaced, and a merchant id that is not one is not filed under.
        values = [
            {
                "source": storable_text(letter.source)[:128],
                "raw": storable_text(letter.raw),
                "reason": storable_text(letter.reason),
                "merchant_id": _merchant_column(letter.merchant_id),
                "received_at": letter.received_at,
                "dedupe_key": letter.dedupe_key,
            }
            for letter in letters
        ]
        insert = _DEAD_LETTER_INSERTS[self._engine.dialect.name]
        with self._engine.begin() as connection:
            return len(connection.execute(insert, values).all())

    def list_dead_letters(
        self, merchant_id: str | None, limit: int, cursor: str | None
    ) -> Page[DeadLetter]:
        """Dead letters, newest first; ``merchant_id=None`` means every merchant's."""
        size = _page_size(limit)
        stmt = sa.select(dead_letters)
        if merchant_id is not None:
            stmt = stmt.where(dead_letters.c.merchant_id == merchant_id)
        if cursor is not None:
            stmt = stmt.where(dead_letters.c.id < decode_id_cursor(cursor, "d"))
        stmt = stmt.order_by(dead_letters.c.id.desc()).limit(size + 1)
        with self._engine.connect() as connection:
            found = [rows.dead_letter_from_row(r) for r in connection.execute(stmt)]
        return _id_page(found, size, "d")

    def count_dead_letters(self, merchant_id: str | None = None) -> int:
        """How many dead letters are kept (for one merchant, or all)."""
        stmt = sa.select(sa.func.count()).select_from(dead_letters)
        if merchant_id is not None:
            stmt = stmt.where(dead_letters.c.merchant_id == merchant_id)
        with self._engine.connect() as connection:
            return int(connection.execute(stmt).scalar_one())

    # Rollups --------------------------------------------------------------------------

    def list_rollups(
        self,
        merchant_id: str | None,
        connector: str | None,
        since: datetime,
        until: datetime,
    ) -> list[MetricRollup]:
        """Per-minute rollups with ``since <= minute < until``, oldest minute first."""
        _require_aware("since", since)
        _require_aware("until", until)
        mr = metric_rollups
        stmt = sa.select(mr).where(mr.c.minute >= since, mr.c.minute < until)
        if merchant_id is not None:
            stmt = stmt.where(mr.c.merchant_id == merchant_id)
        if connector is not None:
            stmt = stmt.where(mr.c.connector == connector)
        stmt = stmt.order_by(mr.c.minute, mr.c.merchant_id, mr.c.connector)
        with self._engine.connect() as connection:
            return [rows.rollup_from_row(r) for r in connection.execute(stmt)]

    # API keys -------------------------------------------------------------------------

    def create_api_key(self, record: ApiKeyRecord) -> None:
        """Store a new key; raises :class:`DuplicateRecordError` if its id or hash exists."""
        values = {
            "id": record.id,
            "name": record.name,
            "role": record.role,
            "merchant_id": record.merchant_id,
            "key_hash": record.key_hash,
            "created_at": record.created_at,
            "revoked_at": record.revoked_at,
            "last_used_at": record.last_used_at,
        }
        try:
            with self._engine.begin() as connection:
                connection.execute(sa.insert(api_keys).values(values))
        except sa.exc.IntegrityError:
            raise DuplicateRecordError(f"API key {record.id!r} (or its hash) exists") from None

    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, revoked or not."""
        stmt = sa.select(api_keys).where(api_keys.c.id == key_id)
        with self._engine.connect() as connection:
            row = connection.execute(stmt).first()
        return None if row is None else rows.api_key_from_row(row)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, oldest first, revoked ones included."""
        stmt = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        with self._engine.connect() as connection:
            return [rows.api_key_from_row(r) for r in connection.execute(stmt)]

    def revoke_api_key(self, key_id: str, at: datetime) -> bool:
        """Revoke a key. True if the key exists (revoking twice keeps the first time)."""
        with self._engine.begin() as connection:
            connection.execute(
                sa.update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
            exists = connection.execute(
                sa.select(sa.literal(1)).where(api_keys.c.id == key_id)
            ).first()
        return exists is not None

    def touch_api_key(self, key_id: str, at: datetime) -> None:
        """Record that the key was used at ``at`` (never moves ``last_used_at`` back)."""
        with self._engine.begin() as connection:
            connection.execute(
                sa.update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < at),
                )
                .values(last_used_at=at)
            )

    # Audit log ------------------------------------------------------------------------

    def append_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Append entries (``at`` defaults to now). There is no way to change or remove one."""
        if not entries:
            return
        now = datetime.now(UTC)
        values: list[dict[str, Any]] = [
            {
                "at": entry.at if entry.at is not None else now,
                "actor": entry.actor,
                "action": entry.action,
                "target": entry.target,
                "merchant_id": entry.merchant_id,
                "details": entry.details,
            }
            for entry in entries
        ]
        _, refused = write_isolating(partial(_append_rows, self._engine, audit_log), values)
        if not refused:
            return
        # The action happened: its entry is still written, with what the database cannot
        # hold replaced and the refusal noted, and the original kept as a dead letter.
        kept = []
        letters = []
        for row, reason in refused:
            kept.append(
                {
                    "at": row["at"],
                    "actor": storable_text(row["actor"])[:128],
                    "action": storable_text(row["action"])[:128],
                    "target": storable_text(row["target"])[:256],
                    "merchant_id": _merchant_column(row["merchant_id"]),
                    "details": {
                        "stored_as_sanitised": reason,
                        "details": storable_document(row["details"]),
                    },
                }
            )
            letters.append(
                {
                    "source": "audit_log",
                    "raw": dead_letter_raw({**row, "at": row["at"].isoformat()}),
                    "reason": reason,
                    "merchant_id": _merchant_column(row["merchant_id"]),
                    "received_at": now,
                }
            )
        with self._engine.begin() as connection:
            connection.execute(sa.insert(audit_log), kept)
            connection.execute(sa.insert(dead_letters), letters)

    def list_audit(
        self, merchant_id: str | None, limit: int, cursor: str | None
    ) -> Page[AuditEntry]:
        """Audit entries, newest first; ``merchant_id=None`` means every merchant's."""
        size = _page_size(limit)
        stmt = sa.select(audit_log)
        if merchant_id is not None:
            stmt = stmt.where(audit_log.c.merchant_id == merchant_id)
        if cursor is not None:
            stmt = stmt.where(audit_log.c.id < decode_id_cursor(cursor, "a"))
        stmt = stmt.order_by(audit_log.c.id.desc()).limit(size + 1)
        with self._engine.connect() as connection:
            found = [rows.audit_entry_from_row(r) for r in connection.execute(stmt)]
        return _id_page(found, size, "a")

    def close(self) -> None:
        """Close pooled connections. The store may not be used afterwards."""
        self._engine.dispose()


# Redelivered inputs (same source and dedupe key) are kept once; RETURNING counts the new.
_DEAD_LETTER_INSERTS: dict[str, Any] = {
    name: dialect.insert(dead_letters)
    .on_conflict_do_nothing(index_elements=[dead_letters.c.source, dead_letters.c.dedupe_key])
    .returning(dead_letters.c.id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


def _append_rows(engine: sa.Engine, table: sa.Table, values: Sequence[dict[str, Any]]) -> None:
    with engine.begin() as connection:
        connection.execute(sa.insert(table), list(values))


def _merchant_column(merchant_id: str | None) -> str | None:
    if merchant_id is None or len(merchant_id) > 128 or storable_text(merchant_id) != merchant_id:
        return None
    return merchant_id


def _id_page(found: list[Any], size: int, kind: str) -> Page[Any]:
    if len(found) <= size:
        return Page(items=found, next_cursor=None)
    return Page(items=found[:size], next_cursor=encode_id_cursor(kind, found[size - 1].id))
