"""Storage adapter: the ``Store`` port on SQLite (embedded default) and PostgreSQL.

``upgrade_database(url)`` applies the packaged alembic migrations; ``SqlStore(url)`` is the
store. The URL's scheme picks the database.
"""

from __future__ import annotations

from apos.adapters.db.cursors import InvalidCursorError
from apos.adapters.db.migrate import upgrade_database
from apos.adapters.db.store import DuplicateRecordError, SqlStore

__all__ = ["DuplicateRecordError", "InvalidCursorError", "SqlStore", "upgrade_database"]
