"""Engine construction: one place that knows how SQLite and PostgreSQL must be configured."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

__all__ = ["create_engine", "normalize_url"]

# How long a SQLite writer waits for another thread's or process's write lock.
SQLITE_BUSY_TIMEOUT_MS = 15_000
# Bounded so that ping() and startup fail fast when PostgreSQL is down or unroutable.
PG_CONNECT_TIMEOUT_S = 5


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``, mapping plain ``postgresql://`` to the psycopg 3 driver we ship."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_engine(url: str | URL, **overrides: Any) -> sa.Engine:
    """An engine configured for multi-threaded use by the service.

    SQLite: WAL (readers never block the writer), a busy timeout so concurrent writers queue
    instead of failing, and connections shareable across threads. PostgreSQL: a small pool
    with pre-ping (connections dropped by a restart or a proxy are replaced transparently)
    and sessions in UTC.
    """
    parsed = normalize_url(url)
    kwargs: dict[str, Any]
    if parsed.get_backend_name() == "sqlite":
        kwargs = {"connect_args": {"check_same_thread": False}}
        if parsed.database in (None, "", ":memory:"):
            # Every connection to :memory: is a new empty database: share one.
            kwargs["poolclass"] = StaticPool
        kwargs.update(overrides)
        engine = sa.create_engine(parsed, **kwargs)
        sa.event.listen(engine, "connect", _configure_sqlite_connection)
        sa.event.listen(engine, "begin", _begin_sqlite_transaction)
        return engine
    if parsed.get_backend_name() == "postgresql":
        kwargs = {
            "pool_pre_ping": True,
            "connect_args": {
                "connect_timeout": PG_CONNECT_TIMEOUT_S,
                "options": "-c TimeZone=UTC",
                "application_name": "apos",
            },
        }
        if "poolclass" not in overrides:
            # Worker threads hold a connection only for one statement or batch.
            kwargs.update(pool_size=5, max_overflow=5, pool_recycle=1800)
        kwargs.update(overrides)
        return sa.create_engine(parsed, **kwargs)
    raise ValueError(
        f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql"
    )


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's own transaction handling only opens a transaction before DML,
    # so DDL (migrations) and multi-statement reads would run outside one. Turn it off and
    # emit BEGIN ourselves when SQLAlchemy starts a transaction (the documented recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # In WAL mode NORMAL survives application crashes; only an OS crash or power loss
        # can drop the last commits. SQLite is the embedded default, PostgreSQL the record.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _begin_sqlite_transaction(connection: sa.Connection) -> None:
    # Deferred: the write lock is taken by the first write, and every write transaction of
    # the store starts with its write, so waiting for it is covered by busy_timeout.
    connection.exec_driver_sql("BEGIN")
