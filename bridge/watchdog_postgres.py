"""The watchdog's state on PostgreSQL: one row of the table ``watchdog_state``, shared by every
replica. :meth:`PostgresWatchdogStore.update` reads it ``FOR UPDATE``, so that no other process
changes the row between its read and its write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from bridge.watchdog import WatchState
from bridge.watchdog_schema import COLUMNS, MIGRATIONS
from sheepdog.core.db import Database
from sheepdog.core.postgres import Connection, PostgresDatabase

__all__ = ["PostgresWatchdogStore"]

_READ: Final = f"SELECT {', '.join(COLUMNS)} FROM watchdog_state WHERE id = 1"  # noqa: S608
_WRITE: Final = (
    "UPDATE watchdog_state SET "  # noqa: S608 - fixed names
    + ", ".join(f"{column} = ${number}" for number, column in enumerate(COLUMNS, 1))
    + " WHERE id = 1"
)


class PostgresWatchdogStore:
    def __init__(self, db: Database) -> None:
        assert isinstance(db, PostgresDatabase)
        self.db = db
        db.add_migrations("watchdog", MIGRATIONS)

    async def read(self) -> WatchState:
        async def work(conn: Connection) -> WatchState:
            row = await conn.fetchrow(_READ)
            return WatchState(*row.values()) if row is not None else WatchState()

        return await self.db.run(work, readonly=True)

    async def update(
        self, change: Callable[[WatchState], WatchState]
    ) -> tuple[WatchState, WatchState]:
        async def work(conn: Connection) -> tuple[WatchState, WatchState]:
            row = await conn.fetchrow(_READ + " FOR UPDATE")
            before = WatchState(*row.values()) if row is not None else WatchState()
            after = change(before)
            if after != before:
                await conn.execute(_WRITE, *(getattr(after, column) for column in COLUMNS))
            return before, after

        return await self.db.run(work)
