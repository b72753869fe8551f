"""SqlStore against real databases: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from apos.adapters.db import (
    DuplicateRecordError,
    InvalidCursorError,
    SqlStore,
    upgrade_database,
)
from apos.adapters.db.models import metadata
from apos.adapters.ports import ApiKeyRecord, AuditEntry, DeadLetter, EventQuery, MetricRollup
from apos.core.events import PaymentEvent, PaymentStatus

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def make_event(n: int, **overrides: Any) -> PaymentEvent:
    """A validated event; ``n`` picks the id and spreads the other fields around."""
    values: dict[str, Any] = {
        "event_id": f"evt_{n:05d}",
        "payment_id": f"pay_{n // 2:05d}",
        "attempt": 1 + n % 2,
        "merchant_id": f"m_{n % 3}",
        "connector": ("stripe", "adyen", "checkout")[n // 3 % 3],
        "status": list(PaymentStatus)[n % len(PaymentStatus)],
        "amount": 100 + n,
        "currency": "USD",
        "latency_ms": None if n % 5 == 0 else 10.0 + n,
        "occurred_at": T0 + timedelta(seconds=7 * n),
    }
    values.update(overrides)
    return PaymentEvent(**values)


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    s = SqlStore(database_url)
    yield s
    s.close()


def all_pages(store: SqlStore, query: EventQuery) -> list[list[PaymentEvent]]:
    pages = []
    cursor = None
    while True:
        page = store.list_events(replace(query, cursor=cursor))
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def newest_first(events: list[PaymentEvent]) -> list[PaymentEvent]:
    return sorted(events, key=lambda e: (e.occurred_at, e.event_id), reverse=True)


def expected_rollups(events: list[PaymentEvent]) -> list[MetricRollup]:
    """The rollups, computed independently of the store's own aggregation."""
    groups: dict[tuple[datetime, str, str], list[PaymentEvent]] = defaultdict(list)
    for e in events:
        minute = datetime.fromtimestamp(e.occurred_ts // 60 * 60, tz=UTC)
        groups[(minute, e.merchant_id, e.connector)].append(e)
    rollups = []
    for (minute, merchant, connector), group in sorted(groups.items()):
        final = [e for e in group if e.status in ("succeeded", "authorized", "failed")]
        rollups.append(
            MetricRollup(
                minute=minute,
                merchant_id=merchant,
                connector=connector,
                attempts=len(final),
                successes=sum(e.status in ("succeeded", "authorized") for e in final),
                failures=sum(e.status == "failed" for e in final),
                non_final=len(group) - len(final),
                amount_minor=sum(e.amount for e in final),
                latency_ms_sum=sum(e.latency_ms for e in final if e.latency_ms is not None),
                latency_count=sum(e.latency_ms is not None for e in final),
            )
        )
    return rollups


# Events ---------------------------------------------------------------------------------


def test_inserted_events_read_back_equal(store: SqlStore) -> None:
    full = PaymentEvent(
        event_id="evt_full",
        payment_id="pay_full",
        attempt=3,
        merchant_id="m_full",
        profile_id="pro_1",
        connector="adyen",
        status=PaymentStatus.FAILED,
        amount=10**15,  # the largest allowed amount must survive (BIGINT)
        currency="EUR",
        payment_method="wallet",
        payment_method_type="apple_pay",
        card_network="visa",
        issuer_country="DE",
        latency_ms=123.456,
        error_code="do_not_honor",
        error_message="Do not honor — ünïcödé",
        fingerprint="fp_0123456789abcdef",
        decision_id="dec_42",
        # A non-UTC offset with microseconds: stored as the same instant, returned in UTC.
        occurred_at=datetime(2026, 11, 25, 15, 30, 1, 123456, tzinfo=timezone(timedelta(hours=5))),
    )
    minimal = make_event(1)
    result = store.insert_events([full, minimal], RECEIVED)
    assert result.inserted == 2
    assert result.duplicates == 0
    assert result.inserted_ids == {"evt_full", "evt_00001"}

    got = store.get_event("evt_full")
    assert got == full
    assert got is not None
    assert got.status is PaymentStatus.FAILED
    assert got.occurred_at.tzinfo is UTC
    assert got.occurred_at == datetime(2026, 11, 25, 10, 30, 1, 123456, tzinfo=UTC)
    assert store.get_event("evt_00001") == minimal
    assert store.get_event("evt_missing") is None
    assert store.list_events(EventQuery()).items == [full, minimal]


def test_duplicates_within_and_across_batches_are_counted_and_not_applied(
    store: SqlStore,
) -> None:
    first = make_event(1, amount=111)
    same_id_other_amount = make_event(1, amount=999)
    batch = [first, make_event(2), same_id_other_amount, make_event(3), make_event(2)]

    result = store.insert_events(batch, RECEIVED)
    assert (result.inserted, result.duplicates) == (3, 2)
    assert result.inserted_ids == {"evt_00001", "evt_00002", "evt_00003"}
    stored = store.get_event("evt_00001")
    assert stored is not None
    assert stored.amount == 111  # the first occurrence in a batch wins

    again = store.insert_events([make_event(3), make_event(4), make_event(1, amount=5)], RECEIVED)
    assert (again.inserted, again.duplicates) == (1, 2)
    assert again.inserted_ids == {"evt_00004"}
    stored = store.get_event("evt_00001")
    assert stored is not None
    assert stored.amount == 111  # an already stored event is never overwritten
    assert store.count_events() == 4

    assert store.insert_events([], RECEIVED) == (empty := store.insert_events([], RECEIVED))
    assert (empty.inserted, empty.duplicates) == (0, 0)


def test_rollups_are_exact_under_duplicates_and_redelivery(store: SqlStore) -> None:
    events = [make_event(n) for n in range(60)]  # 7 s apart: spans several minutes
    store.insert_events(events[:25] + events[:5], RECEIVED)  # in-batch duplicates
    store.insert_events(events[20:45], RECEIVED)  # overlaps the first batch
    store.insert_events(events[40:] + events[40:], RECEIVED)
    store.insert_events(events, RECEIVED)  # full redelivery: nothing new

    rollups = store.list_rollups(None, None, T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert rollups == expected_rollups(events)
    assert sum(r.attempts + r.non_final for r in rollups) == 60
    # Pending, requires_action and cancelled are not attempts: only final outcomes are.
    assert all(r.attempts == r.successes + r.failures for r in rollups)
    assert sum(r.non_final for r in rollups) == 30


def test_rollups_count_final_outcomes_only(store: SqlStore) -> None:
    # A Hyperswitch payment reported "processing", then "succeeded"; and one that waited
    # on 3DS, then failed; and one still pending. Both in one batch and across batches.
    at = datetime(2026, 1, 1, 10, 0, 5, tzinfo=UTC)
    flow = [
        ("pending", 1, 11.0),
        ("succeeded", 1, 40.0),
        ("requires_action", 2, 12.0),
        ("failed", 2, 60.0),
        ("pending", 3, None),
        ("cancelled", 4, 5.0),
    ]
    events = [
        make_event(
            n,
            payment_id=f"pay_flow_{payment}",
            attempt=1,
            merchant_id="m",
            connector="stripe",
            status=status,
            amount=1000 * payment,
            latency_ms=latency,
            occurred_at=at + timedelta(seconds=n),
        )
        for n, (status, payment, latency) in enumerate(flow)
    ]
    store.insert_events(events[:1], RECEIVED)
    store.insert_events(events[1:4], RECEIVED)
    store.insert_events(events, RECEIVED)  # redelivery: nothing counted twice
    [rollup] = store.list_rollups("m", "stripe", at - timedelta(hours=1), at + timedelta(hours=1))
    assert (rollup.attempts, rollup.successes, rollup.failures, rollup.non_final) == (2, 1, 1, 4)
    assert rollup.successes / rollup.attempts == 0.5
    assert rollup.amount_minor == 1000 + 2000  # the attempts' amounts, each once
    assert (rollup.latency_ms_sum, rollup.latency_count) == (100.0, 2)

    store.insert_events(
        [make_event(10, merchant_id="m2", status="pending", occurred_at=at)], RECEIVED
    )
    [waiting] = store.list_rollups("m2", None, at - timedelta(hours=1), at + timedelta(hours=1))
    assert (waiting.attempts, waiting.non_final, waiting.amount_minor) == (0, 1, 0)
    assert waiting.latency_count == 0 and waiting.latency_ms_sum == 0.0


def test_rollups_bucket_by_utc_minute_of_event_time(store: SqlStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    events = [
        make_event(
            1,
            merchant_id="m",
            connector="stripe",
            status="succeeded",
            occurred_at=datetime(2026, 1, 1, 12, 0, 0, tzinfo=plus_two),
            latency_ms=10,
        ),
        make_event(
            2,
            merchant_id="m",
            connector="stripe",
            status="authorized",
            occurred_at=datetime(2026, 1, 1, 12, 0, 59, 999999, tzinfo=plus_two),
            latency_ms=None,
        ),
        make_event(
            3,
            merchant_id="m",
            connector="stripe",
            status="failed",
            occurred_at=datetime(2026, 1, 1, 10, 1, 0, tzinfo=UTC),
            latency_ms=30,
        ),
    ]
    store.insert_events(events, RECEIVED)
    rollups = store.list_rollups(
        "m", "stripe", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    )
    assert [(r.minute, r.attempts, r.successes, r.failures) for r in rollups] == [
        (datetime(2026, 1, 1, 10, 0, tzinfo=UTC), 2, 2, 0),
        (datetime(2026, 1, 1, 10, 1, tzinfo=UTC), 1, 0, 1),
    ]
    assert rollups[0].minute.tzinfo is UTC
    assert (rollups[0].latency_ms_sum, rollups[0].latency_count) == (10.0, 1)
    assert rollups[0].amount_minor == 101 + 102


def test_rollup_listing_filters_and_half_open_window(store: SqlStore) -> None:
    events = [make_event(n) for n in range(60)]
    store.insert_events(events, RECEIVED)
    expected = expected_rollups(events)
    since, until = T0 + timedelta(minutes=2), T0 + timedelta(minutes=5)

    window = store.list_rollups(None, None, since, until)
    assert window == [r for r in expected if since <= r.minute < until]
    assert {r.minute for r in window} == {
        since,
        since + timedelta(minutes=1),
        since + timedelta(minutes=2),
    }
    only = store.list_rollups("m_1", "adyen", T0, T0 + timedelta(hours=1))
    assert only
    assert only == [r for r in expected if (r.merchant_id, r.connector) == ("m_1", "adyen")]
    merchant = store.list_rollups("m_1", None, T0, T0 + timedelta(hours=1))
    assert merchant == [r for r in expected if r.merchant_id == "m_1"]
    assert {r.connector for r in merchant} == {"stripe", "adyen", "checkout"}
    connector = store.list_rollups(None, "adyen", T0, T0 + timedelta(hours=1))
    assert connector == [r for r in expected if r.connector == "adyen"]
    assert store.list_rollups("m_1", "worldpay", T0, T0 + timedelta(hours=1)) == []


def test_large_batch_with_duplicates(store: SqlStore) -> None:
    # 5000 rows x 21 columns is more bound parameters than one SQLite statement may carry.
    events = [make_event(n) for n in range(5000)]
    store.insert_events(events[:100], RECEIVED)
    result = store.insert_events(events + events[:10], RECEIVED)
    assert (result.inserted, result.duplicates) == (4900, 110)
    assert len(result.inserted_ids) == 4900
    assert store.count_events() == 5000
    totals = store.list_rollups(None, None, T0, T0 + timedelta(days=2))
    assert sum(r.attempts + r.non_final for r in totals) == 5000
    assert totals == expected_rollups(events)


def test_concurrent_writers_with_overlapping_batches(store: SqlStore) -> None:
    events = [make_event(n) for n in range(2000)]
    inserted: list[int] = []
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for start in range(offset, 2000, 250):
                # Every writer also resends the batch before its own: overlapping keys.
                chunk = events[max(0, start - 250) : start + 250]
                inserted.append(store.insert_events(chunk, RECEIVED).inserted)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i * 50,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(inserted) == 2000
    assert store.count_events() == 2000
    rollups = store.list_rollups(None, None, T0, T0 + timedelta(days=1))
    assert rollups == expected_rollups(events)


def test_naive_timestamps_are_refused(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.insert_events([make_event(1)], datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        store.list_events(EventQuery(since=datetime(2026, 1, 1)))
    assert store.count_events() == 0


# Listing and pagination -----------------------------------------------------------------


def test_pagination_covers_every_row_once_newest_first(store: SqlStore) -> None:
    # Many events share a timestamp, so the event_id tie-breaker is exercised.
    events = [make_event(n, occurred_at=T0 + timedelta(seconds=n // 4)) for n in range(57)]
    store.insert_events(events, RECEIVED)

    pages = all_pages(store, EventQuery(limit=10))
    assert [len(p) for p in pages] == [10, 10, 10, 10, 10, 7]
    flat = [e for page in pages for e in page]
    assert flat == newest_first(events)

    exact = all_pages(store, EventQuery(limit=19))  # 57 = 3 x 19: no empty trailing page
    assert [len(p) for p in exact] == [19, 19, 19]

    merchant = all_pages(store, EventQuery(merchant_id="m_2", limit=4))
    assert [e for p in merchant for e in p] == newest_first(
        [e for e in events if e.merchant_id == "m_2"]
    )


def test_rows_inserted_between_pages_do_not_shift_the_listing(store: SqlStore) -> None:
    events = [make_event(n) for n in range(30)]
    store.insert_events(events, RECEIVED)
    first = store.list_events(EventQuery(limit=10))
    store.insert_events([make_event(100, occurred_at=T0 + timedelta(days=1))], RECEIVED)
    second = store.list_events(EventQuery(limit=10, cursor=first.next_cursor))
    assert second.items == newest_first(events)[10:20]


@pytest.mark.parametrize(
    ("query", "predicate"),
    [
        (EventQuery(merchant_id="m_1"), lambda e: e.merchant_id == "m_1"),
        (EventQuery(connector="adyen"), lambda e: e.connector == "adyen"),
        (EventQuery(status=PaymentStatus.FAILED), lambda e: e.status is PaymentStatus.FAILED),
        (EventQuery(payment_id="pay_00007"), lambda e: e.payment_id == "pay_00007"),
        (
            EventQuery(since=T0 + timedelta(seconds=70)),
            lambda e: e.occurred_at >= T0 + timedelta(seconds=70),
        ),
        (
            EventQuery(until=T0 + timedelta(seconds=70)),
            lambda e: e.occurred_at < T0 + timedelta(seconds=70),
        ),
        (
            EventQuery(
                merchant_id="m_0",
                status=PaymentStatus.SUCCEEDED,
                since=T0 + timedelta(seconds=7),
                until=T0 + timedelta(seconds=300),
            ),
            lambda e: (
                e.merchant_id == "m_0"
                and e.status is PaymentStatus.SUCCEEDED
                and T0 + timedelta(seconds=7) <= e.occurred_at < T0 + timedelta(seconds=300)
            ),
        ),
        (EventQuery(merchant_id="nobody"), lambda e: False),
    ],
)
def test_each_filter(store: SqlStore, query: EventQuery, predicate: Any) -> None:
    events = [make_event(n) for n in range(60)]
    store.insert_events(events, RECEIVED)
    expected = newest_first([e for e in events if predicate(e)])
    assert expected or query.merchant_id == "nobody"  # the data set exercises each filter
    pages = all_pages(store, replace(query, limit=7))
    assert [e for p in pages for e in p] == expected


def test_since_accepts_any_offset(store: SqlStore) -> None:
    events = [make_event(n) for n in range(20)]
    store.insert_events(events, RECEIVED)
    cut_utc = T0 + timedelta(seconds=70)
    cut_local = cut_utc.astimezone(timezone(timedelta(hours=-7)))
    page = store.list_events(EventQuery(since=cut_local))
    assert page.items == newest_first([e for e in events if e.occurred_at >= cut_utc])


def test_counts_per_merchant(store: SqlStore) -> None:
    store.insert_events([make_event(n) for n in range(10)], RECEIVED)
    assert store.count_events() == 10
    assert store.count_events("m_0") == 4
    assert store.count_events("m_1") == 3
    assert store.count_events("nobody") == 0


def test_foreign_or_garbage_cursor_is_refused(store: SqlStore) -> None:
    store.add_dead_letters([DeadLetter("http", "{}", "bad", RECEIVED) for _ in range(3)])
    dead_cursor = store.list_dead_letters(None, 1, None).next_cursor
    assert dead_cursor is not None
    for cursor in ("not-a-cursor", "", "eyJ4IjoxfQ", dead_cursor):
        with pytest.raises(InvalidCursorError):
            store.list_events(EventQuery(cursor=cursor))
    with pytest.raises(InvalidCursorError):
        store.list_audit(None, 10, dead_cursor)


def test_page_size_is_bounded(store: SqlStore) -> None:
    store.insert_events([make_event(n) for n in range(3)], RECEIVED)
    assert len(store.list_events(EventQuery(limit=0)).items) == 1
    assert len(store.list_events(EventQuery(limit=10**9)).items) == 3


# Dead letters -----------------------------------------------------------------------------


def test_dead_letters_round_trip_with_merchant_filter(store: SqlStore) -> None:
    letters = [
        DeadLetter(
            source="webhook.hyperswitch" if i % 2 else "http",
            raw='{"amount": -5, "note": "ünïcödé \\u0000"}' + "x" * i,
            reason=f"amount: must be >= 0 ({i})",
            received_at=RECEIVED + timedelta(seconds=i),
            merchant_id=(None, "m_a", "m_b")[i % 3],
        )
        for i in range(11)
    ]
    store.add_dead_letters(letters[:6])
    store.add_dead_letters(letters[6:])
    store.add_dead_letters([])

    everything: list[DeadLetter] = []
    cursor = None
    while True:
        page = store.list_dead_letters(None, 4, cursor)
        everything += page.items
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [d.reason for d in everything] == [d.reason for d in reversed(letters)]
    ids = [d.id for d in everything]
    assert all(i is not None for i in ids)
    assert ids == sorted(ids, reverse=True)
    for got, sent in zip(everything, reversed(letters), strict=True):
        assert (got.source, got.raw, got.merchant_id, got.received_at) == (
            sent.source,
            sent.raw,
            sent.merchant_id,
            sent.received_at,
        )

    only_a = store.list_dead_letters("m_a", 100, None)
    assert [d.reason for d in only_a.items] == [
        d.reason for d in reversed(letters) if d.merchant_id == "m_a"
    ]
    assert only_a.next_cursor is None
    assert store.count_dead_letters() == 11
    assert store.count_dead_letters("m_a") == 4
    assert store.count_dead_letters("m_b") == 3


# API keys ---------------------------------------------------------------------------------


def make_key(n: int, **overrides: Any) -> ApiKeyRecord:
    values: dict[str, Any] = {
        "id": f"key_{n}",
        "name": f"key number {n}",
        "role": ("viewer", "operator", "admin")[n % 3],
        "merchant_id": None if n % 2 else f"m_{n}",
        "key_hash": f"{n:064x}",
        "created_at": T0 + timedelta(minutes=n),
    }
    values.update(overrides)
    return ApiKeyRecord(**values)


def test_api_key_lifecycle(store: SqlStore) -> None:
    keys = [make_key(n) for n in (2, 1, 3)]
    for key in keys:
        store.create_api_key(key)
    assert store.get_api_key("key_1") == keys[1]
    assert store.get_api_key("key_none") is None
    assert store.list_api_keys() == sorted(keys, key=lambda k: k.created_at)

    with pytest.raises(DuplicateRecordError):
        store.create_api_key(make_key(1, key_hash="f" * 64))  # same id
    with pytest.raises(DuplicateRecordError):
        store.create_api_key(make_key(9, key_hash=keys[0].key_hash))  # same secret hash
    assert len(store.list_api_keys()) == 3

    used = T0 + timedelta(hours=1)
    store.touch_api_key("key_1", used)
    store.touch_api_key("key_1", used - timedelta(minutes=5))  # a late, older touch
    store.touch_api_key("key_missing", used)
    got = store.get_api_key("key_1")
    assert got is not None
    assert got.last_used_at == used

    revoked = T0 + timedelta(hours=2)
    assert store.revoke_api_key("key_1", revoked) is True
    assert store.revoke_api_key("key_1", revoked + timedelta(hours=1)) is True
    assert store.revoke_api_key("key_missing", revoked) is False
    got = store.get_api_key("key_1")
    assert got is not None
    assert got.revoked_at == revoked  # the first revocation time is kept
    assert got.revoked_at.tzinfo is UTC
    other = store.get_api_key("key_2")
    assert other is not None
    assert other.revoked_at is None


# Audit log ------------------------------------------------------------------------------


def test_audit_append_and_list(store: SqlStore) -> None:
    before = datetime.now(UTC)
    entries = [
        AuditEntry(
            actor=f"key:key_{i}",
            action="healing.execute" if i % 2 else "api_key.create",
            target=f"connector:stripe:{i}",
            details={"n": i, "nested": {"ok": True, "list": [1, "two", None]}},
            merchant_id=(None, "m_a")[i % 2],
            at=None if i == 0 else T0 + timedelta(seconds=i),
        )
        for i in range(7)
    ]
    store.append_audit(entries[:3])
    store.append_audit(entries[3:])
    store.append_audit([])

    pages = []
    cursor = None
    while True:
        page = store.list_audit(None, 3, cursor)
        pages.append(page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    got = [e for p in pages for e in p]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e.target for e in got] == [e.target for e in reversed(entries)]
    assert [e.details for e in got] == [e.details for e in reversed(entries)]
    assert got[-1].at is not None
    assert got[-1].at >= before  # set by the store when not given
    assert got[0].at == T0 + timedelta(seconds=6)
    assert all(e.id is not None for e in got)

    only_a = store.list_audit("m_a", 100, None).items
    assert [e.target for e in only_a] == [
        e.target for e in reversed(entries) if e.merchant_id == "m_a"
    ]


def test_audit_log_refuses_update_and_delete(store: SqlStore) -> None:
    store.append_audit([AuditEntry(actor="cli", action="api_key.create", target="key_1")])
    for statement in (
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
    ):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as c:
            c.execute(sa.text(statement))
    [entry] = store.list_audit(None, 10, None).items
    assert entry.actor == "cli"


def test_store_has_no_way_to_change_audit_entries() -> None:
    assert not [
        name
        for name in dir(SqlStore)
        if "audit" in name and not name.startswith(("append_", "list_"))
    ]


# Health, configuration, schema ----------------------------------------------------------


def test_ping(store: SqlStore) -> None:
    assert store.ping() is True


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        "postgresql://nobody:wrong@127.0.0.1:1/nowhere",  # plain scheme: mapped to psycopg
        "sqlite:////nonexistent-directory/for/apos.db",
    ],
)
def test_ping_is_false_when_unreachable(url: str) -> None:
    store = SqlStore(url)
    assert store.ping() is False
    store.close()


def test_sqlite_runs_in_wal_mode_with_busy_timeout(sqlite_url: str) -> None:
    store = SqlStore(sqlite_url)
    with store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    store.close()


def test_migrated_schema_matches_models(database_url: str) -> None:
    upgrade_database(database_url)  # idempotent: the fixture already migrated
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
        # At the single newest revision (get_current_head refuses a branched history).
        from alembic.script import ScriptDirectory

        from apos.adapters.db.migrate import alembic_config

        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert context.get_current_revision() == head

        # The comparison is not vacuous: a schema that differs is reported.
        changed = sa.MetaData()
        for table in metadata.sorted_tables:
            table.to_metadata(changed)
        changed.tables["payment_events"].append_column(sa.Column("extra", sa.Integer))
        changed.tables["api_keys"].c.name.type = sa.Integer()
        kinds = {
            diff[0][0] if isinstance(diff, list) else diff[0]
            for diff in compare_metadata(context, changed)
        }
        assert {"add_column", "modify_type"} <= kinds
    engine.dispose()


def _rollups_as_of_0003(events: list[PaymentEvent]) -> list[tuple[Any, ...]]:
    """The rollups revision 0003 kept: every event an attempt, every event in the sums."""
    restated = []
    for r in expected_rollups(events):
        group = [
            e
            for e in events
            if (e.merchant_id, e.connector) == (r.merchant_id, r.connector)
            and r.minute <= e.occurred_at < r.minute + timedelta(minutes=1)
        ]
        latencies = [e.latency_ms for e in group if e.latency_ms is not None]
        restated.append(
            (
                r.minute,
                r.merchant_id,
                r.connector,
                len(group),
                r.successes,
                r.failures,
                sum(e.amount for e in group),
                sum(latencies),
                len(latencies),
            )
        )
    return restated


def test_migration_0004_restates_stored_rollups(database_url: str) -> None:
    from alembic import command

    from apos.adapters.db.migrate import alembic_config
    from apos.adapters.db.types import UtcDateTime

    events = [make_event(n) for n in range(150)]
    store = SqlStore(database_url)
    store.insert_events(events, RECEIVED)
    store.close()
    old = sa.table(
        "metric_rollups",
        sa.column("minute", UtcDateTime()),
        *(
            sa.column(name)
            for name in (
                "merchant_id",
                "connector",
                "attempts",
                "successes",
                "failures",
                "amount_minor",
                "latency_ms_sum",
                "latency_count",
            )
        ),
    )
    engine = sa.create_engine(database_url)
    try:
        command.downgrade(alembic_config(database_url), "0003")
        with engine.connect() as connection:
            stored = connection.execute(sa.select(old).order_by(*old.c[:3])).all()
        assert [tuple(row) for row in stored] == _rollups_as_of_0003(events)
    finally:
        engine.dispose()
        upgrade_database(database_url)  # back to head, which restates them again
    store = SqlStore(database_url)
    assert store.list_rollups(None, None, T0, T0 + timedelta(days=1)) == expected_rollups(events)
    store.close()
