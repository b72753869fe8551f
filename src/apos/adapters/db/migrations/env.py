"""Alembic environment for APOS, configured programmatically (no alembic.ini).

:func:`apos.adapters.db.migrate.upgrade_database` passes an open connection in
``config.attributes["connection"]``; the alembic CLI can also be used with
``sqlalchemy.url`` and ``script_location`` set in a config of its own.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from apos.adapters.db.engine import create_engine
from apos.adapters.db.models import metadata

config = context.config


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        **kwargs,  # type: ignore[arg-type]
    )


def _run_online(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (given := config.attributes.get("connection")) is not None:
    _run_online(given)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url or pass a connection in config.attributes")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            _run_online(connection)
            connection.commit()
    finally:
        engine.dispose()
