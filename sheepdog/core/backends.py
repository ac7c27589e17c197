"""The database a config asks for: PostgreSQL with ``database.url``, else SQLite in
``state_dir``."""

from __future__ import annotations

from sheepdog.core.db import Database
from sheepdog.core.settings import CoreSettings

__all__ = ["database_for"]


def database_for(settings: CoreSettings) -> Database:
    """A new, unopened database for ``settings``; the parts register their migrations on it."""
    url = settings.database.url
    if url is not None:
        from sheepdog.core.postgres import PostgresDatabase  # asyncpg only where it is used

        return PostgresDatabase(url)
    from sheepdog.core.sqlite import SqliteDatabase

    return SqliteDatabase(settings.state_dir, shared=settings.workers > 1)
