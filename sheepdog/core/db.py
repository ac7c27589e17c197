"""Where the state lives: SQLite in ``state_dir`` (one host), or PostgreSQL (``database.url``).

The outbox and the spend ledger each own their tables. Each registers its migrations here, per
component, with the SQL of both backends side by side; at every open the database applies those
it has not applied yet, recorded in the ``sheepdog_schema`` table (component, version), by one
code path (:func:`pending_migrations`) for both backends. Each part keeps its queries in a store
of its own, one implementation per backend, chosen by :attr:`Database.kind`.

Every failure to reach or write the database raises :class:`DatabaseUnavailable`; the next call
tries again, so the service recovers by itself when the disk or the database server does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "DATABASE_FILE",
    "SCHEMA_TABLE",
    "Database",
    "DatabaseUnavailable",
    "Kind",
    "Migration",
    "SqliteStep",
    "pending_migrations",
]

DATABASE_FILE: Final = "sheepdog.db"
SCHEMA_TABLE: Final = "sheepdog_schema"

Kind = Literal["sqlite", "postgresql"]
SqliteStep = Callable[[sqlite3.Connection], None]
"""A migration step SQLite's SQL cannot say (``ADD COLUMN`` only where it is missing)."""


class DatabaseUnavailable(Exception):
    """The database could not be reached, opened or written; the message says why (and holds
    no password)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of a component's schema, written for each backend."""

    version: int
    sqlite: tuple[str | SqliteStep, ...]
    postgresql: tuple[str, ...]


def pending_migrations(
    kind: Kind,
    registered: Mapping[str, Sequence[Migration]],
    applied: Mapping[str, int],
) -> list[tuple[str, Migration]]:
    """The migrations still to apply, in order: per component, those above its version.

    A component at a version this code does not know (a newer sheepdog migrated it) is refused:
    running old code on a newer schema could lose data.
    """
    steps: list[tuple[str, Migration]] = []
    for component, migrations in registered.items():
        current = applied.get(component, 0)
        known = max((m.version for m in migrations), default=0)
        if current > known:
            raise DatabaseUnavailable(
                f"the {component} schema is at version {current}, newer than this sheepdog "
                f"knows ({known}): run the newer sheepdog, or restore a backup"
            )
        steps.extend(
            (component, m)
            for m in sorted(migrations, key=lambda m: m.version)
            if m.version > current
        )
    return steps


class Database:
    """What every backend offers the parts: migrations, opening, closing, and its health."""

    kind: Kind
    shared: bool
    """Whether other processes may use the same state at the same time (always, for
    PostgreSQL; for SQLite when ``workers`` > 1). Only a database that is not shared may take
    back, at start-up, everything a previous run left claimed."""

    def __init__(self) -> None:
        self.migrations: dict[str, list[Migration]] = {}
        self.last_error: str | None = None

    def watch(self, channel: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` soon after another process changes what ``channel`` names (new
        notifications in the outbox: the process holding their destination delivers at once
        instead of at its next poll). Nothing to watch for a database that is not shared."""

    def add_migrations(self, component: str, migrations: Sequence[Migration]) -> None:
        """Register ``component``'s schema steps, applied at every open that finds them missing."""
        self.migrations.setdefault(component, []).extend(migrations)

    @property
    def where(self) -> str:
        """Where the state is, for messages (a path, or host, port and database: no password)."""
        raise NotImplementedError

    @property
    def is_open(self) -> bool:
        raise NotImplementedError

    async def open(self) -> None:
        """Open now, so a problem shows at start-up; a failure is logged and retried later."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError
