"""Schema migrations: apply the alembic revisions shipped inside this package."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.pool import NullPool

from apos.adapters.db.engine import create_engine, normalize_url

__all__ = ["MIGRATIONS_DIR", "alembic_config", "upgrade_database"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Any constant works; it only has to be the same for every APOS process.
_PG_MIGRATION_LOCK = 0x41504F53  # "APOS"


def alembic_config(url: str | None = None) -> Config:
    """An alembic ``Config`` pointing at the packaged migrations (for tooling and tests)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolates '%': a password may contain one.
        rendered = normalize_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def upgrade_database(url: str) -> None:
    """Bring the database at ``url`` to the latest schema. Safe to call on every start.

    On PostgreSQL the whole upgrade runs in one transaction under an advisory lock, so
    several instances starting together migrate once and the others wait, then find
    nothing to do.
    """
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()
