"""The rate limits' counts and grants on SQLite (:class:`~sheepdog.core.sqlite.SqliteDatabase`),
shared by the ``workers`` of one host. Each exchange is one ``IMMEDIATE`` transaction, so the
processes' exchanges take turns (what :meth:`~proxy.limits.Round.grants` relies on)."""

from __future__ import annotations

import sqlite3
from typing import Final

from proxy.limits import Exchanged, Round
from proxy.limits_queries import alive_since, exchanged, rate_queries
from proxy.limits_schema import MIGRATIONS
from sheepdog.core.db import Database
from sheepdog.core.sqlite import SqliteDatabase

__all__ = ["SqliteRateStore"]

_SQL: Final = rate_queries(lambda _: "?")


class SqliteRateStore:
    def __init__(self, db: Database) -> None:
        assert isinstance(db, SqliteDatabase)
        self.db = db
        db.add_migrations("rate_limits", MIGRATIONS)

    async def exchange(self, round_: Round) -> Exchanged:
        process, since, alive = round_.process, round_.since_slot, alive_since(round_)
        rows = [
            (slot, client, kind, process, n) for (client, kind, slot), n in round_.unsent.items()
        ]

        def work(conn: sqlite3.Connection) -> Exchanged:
            conn.executemany(_SQL.add, rows)
            conn.execute(_SQL.forget, (since,))
            result = exchanged(
                round_,
                conn.execute(_SQL.others, (since, process)).fetchall(),
                conn.execute(_SQL.granted, (alive, process)).fetchall(),
                conn.execute(_SQL.alive_counted, (since, alive, process)).fetchall(),
            )
            conn.execute(_SQL.forget_grants, (since, process))
            conn.executemany(_SQL.grant, round_.grant_rows(result.grants))
            return result

        return await self.db.run(work)
