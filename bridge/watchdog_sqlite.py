"""The watchdog's state on SQLite: one row of the table ``watchdog_state``.

:meth:`SqliteWatchdogStore.update` takes the write lock before it reads (``BEGIN IMMEDIATE``),
so that no other connection to the file changes the row between its read and its write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Final

from bridge.watchdog import WatchState
from bridge.watchdog_schema import COLUMNS, MIGRATIONS
from sheepdog.core.db import Database
from sheepdog.core.sqlite import SqliteDatabase

__all__ = ["SqliteWatchdogStore"]

_COLUMNS: Final = COLUMNS
_READ: Final = f"SELECT {', '.join(_COLUMNS)} FROM watchdog_state WHERE id = 1"  # noqa: S608
_WRITE: Final = f"UPDATE watchdog_state SET {', '.join(f'{c} = ?' for c in _COLUMNS)} WHERE id = 1"  # noqa: S608


def _read(conn: sqlite3.Connection) -> WatchState:
    # fetchall, not fetchone: a statement left unfinished keeps its read transaction open, and
    # the connection would go on seeing the database as it was then.
    rows = conn.execute(_READ).fetchall()
    return WatchState(*rows[0]) if rows else WatchState()


def _values(state: WatchState) -> tuple[Any, ...]:
    return tuple(getattr(state, column) for column in _COLUMNS)


class SqliteWatchdogStore:
    def __init__(self, db: Database) -> None:
        assert isinstance(db, SqliteDatabase)
        self.db = db
        db.add_migrations("watchdog", MIGRATIONS)

    async def read(self) -> WatchState:
        return await self.db.run(_read, readonly=True)

    async def update(
        self, change: Callable[[WatchState], WatchState]
    ) -> tuple[WatchState, WatchState]:
        def work(conn: sqlite3.Connection) -> tuple[WatchState, WatchState]:
            before = _read(conn)  # the transaction began IMMEDIATE: the row is ours till commit
            after = change(before)
            if after != before:
                conn.execute(_WRITE, _values(after))
            return before, after

        return await self.db.run(work)
