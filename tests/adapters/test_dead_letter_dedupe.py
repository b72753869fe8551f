"""Dead letters with a sender's id are kept once per (source, dedupe key), on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from apos.adapters.db import SqlStore, upgrade_database
from apos.adapters.ports import DeadLetter

RECEIVED = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    store = SqlStore(database_url)
    yield store
    store.close()


def letter(key: str | None, source: str = "webhook.hyperswitch", raw: str = "{}") -> DeadLetter:
    return DeadLetter(source, raw, "unusable", RECEIVED, "m1", dedupe_key=key)


def test_a_redelivered_input_is_kept_once_and_reported_as_not_new(store: SqlStore) -> None:
    assert store.add_dead_letters([letter("k1", raw="first")]) == 1
    assert store.add_dead_letters([letter("k1", raw="again")]) == 0
    # in one batch too, next to new ones
    assert store.add_dead_letters([letter("k1"), letter("k2"), letter("k2")]) == 1
    kept = store.list_dead_letters(None, 10, None).items
    assert sorted((d.dedupe_key, d.raw) for d in kept) == [("k1", "first"), ("k2", "{}")]


def test_letters_without_a_key_or_from_another_source_are_all_kept(store: SqlStore) -> None:
    assert store.add_dead_letters([letter(None), letter(None)]) == 2
    assert store.add_dead_letters([letter("k1"), letter("k1", source="http")]) == 2
    assert store.count_dead_letters() == 4


def test_migration_0006_keeps_existing_letters(database_url: str) -> None:
    from alembic import command

    from apos.adapters.db.migrate import alembic_config

    old = sa.table(
        "dead_letters",
        *(sa.column(c) for c in ("source", "raw", "reason", "merchant_id", "received_at")),
    )
    engine = sa.create_engine(database_url)
    try:
        command.downgrade(alembic_config(database_url), "0005")
        with engine.begin() as connection:
            for _ in range(2):
                connection.execute(
                    sa.insert(old).values(
                        source="webhook.hyperswitch",
                        raw="{}",
                        reason="old",
                        merchant_id="m1",
                        received_at=RECEIVED,
                    )
                )
    finally:
        engine.dispose()
        upgrade_database(database_url)
    store = SqlStore(database_url)
    try:
        assert store.count_dead_letters() == 2  # NULL keys never conflict
        assert store.add_dead_letters([letter("k1"), letter("k1")]) == 1
    finally:
        store.close()
