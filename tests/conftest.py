"""Shared fixtures: embedded and real backends.

Real backends come from ``APOS_TEST_POSTGRES_URL`` / ``APOS_TEST_REDIS_URL`` (defaults: the
local PostgreSQL and Redis). When one cannot be reached the tests that need it are skipped on
a developer's machine but FAIL under CI (``CI=true``): CI must prove the real adapters work.

Each pytest process gets its own PostgreSQL database (created and dropped here) and its own
Redis key prefix, so parallel runs on one machine do not step on each other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get(
    "APOS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("APOS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test yesterday's code: a compiled module older than its source."""
    from apos.accel import stale

    old = stale()
    if old:
        raise pytest.UsageError(
            f"compiled {', '.join(old)} older than the source: run `make accel` "
            "(or `make pure` to test as plain Python)"
        )


def pytest_report_header() -> str:
    from apos.accel import compiled

    built = compiled()
    return f"apos hot path: compiled {', '.join(built)}" if built else "apos: pure Python"


def _unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} is not reachable: {exc}"
    if UNDER_CI:
        pytest.fail(message + " (CI requires the real services)", pytrace=False)
    pytest.skip(message)


@contextmanager
def scratch_pg_database(prefix: str = "apos_test") -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped afterwards (skip or fail if PostgreSQL
    is unreachable, as every real-backend test does)."""
    import sqlalchemy as sa

    from apos.adapters.db import upgrade_database

    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    upgrade_database(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    with scratch_pg_database() as url:
        yield url


def _truncate_all(url: str) -> None:
    import sqlalchemy as sa

    from apos.adapters.db.models import metadata

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database file."""
    from apos.adapters.db import upgrade_database

    url = f"sqlite:///{tmp_path / 'apos.db'}"
    upgrade_database(url)
    return url


@pytest.fixture
def postgres_url(pg_database_url: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    _truncate_all(pg_database_url)
    return pg_database_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs twice: on embedded SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def redis_url() -> str:
    """The real Redis; fails under CI if it is down."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL)
        client.ping()
        client.close()
    except Exception as exc:
        _unavailable("Redis", exc)
    return REDIS_URL


@pytest.fixture
def stream_name(redis_url: str) -> Iterator[str]:
    """A stream key unique to this test, deleted afterwards."""
    import redis

    name = f"apos-test:{uuid.uuid4().hex[:12]}:events"
    yield name
    client = redis.Redis.from_url(redis_url)
    client.delete(name, f"{name}:applied")  # the stream and the stream of applied events
    client.close()
