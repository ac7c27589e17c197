"""The ledger's queries on SQLite (:class:`~sheepdog.core.sqlite.SqliteDatabase`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Final

from proxy.ledger import (
    UNPRICED_COUNTERS,
    LedgerDelta,
    LedgerKey,
    LedgerRow,
    MonthTotals,
    NameKey,
    UnpricedRow,
)
from proxy.ledger_queries import ledger_queries
from proxy.ledger_schema import MIGRATIONS
from sheepdog.core.db import Database
from sheepdog.core.sqlite import SqliteDatabase

__all__ = ["SqliteLedgerStore"]


_SQL: Final = ledger_queries(lambda _: "?")


class SqliteLedgerStore:
    def __init__(self, db: Database) -> None:
        assert isinstance(db, SqliteDatabase)
        self.db = db
        db.add_migrations("ledger", MIGRATIONS)

    async def add_and_total(
        self,
        batch: Mapping[LedgerKey, LedgerDelta],
        names: Mapping[NameKey, LedgerDelta],
        month: str,
    ) -> MonthTotals:
        rows = [(*key, *delta.values()) for key, delta in batch.items()]
        name_rows = [(*key, *delta.values(UNPRICED_COUNTERS)) for key, delta in names.items()]

        def work(conn: sqlite3.Connection) -> MonthTotals:
            if rows:
                conn.executemany(_SQL.add, rows)
            if name_rows:
                conn.executemany(_SQL.add_name, name_rows)
            spend = conn.execute(_SQL.spend, (month,))
            known = conn.execute(_SQL.known_names, (month,))
            return MonthTotals(
                {client: float(usd) for client, usd in spend.fetchall()},
                {name for (name,) in known.fetchall()},
            )

        return await self.db.run(work, readonly=not (rows or name_rows))

    async def read_month(self, month: str) -> list[LedgerRow]:
        def work(conn: sqlite3.Connection) -> list[LedgerRow]:
            return [LedgerRow(*row) for row in conn.execute(_SQL.read, (month,))]

        return await self.db.run(work, readonly=True)

    async def read_unpriced(self, month: str) -> list[UnpricedRow]:
        def work(conn: sqlite3.Connection) -> list[UnpricedRow]:
            return [UnpricedRow(*row) for row in conn.execute(_SQL.read_unpriced, (month,))]

        return await self.db.run(work, readonly=True)
