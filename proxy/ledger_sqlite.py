"""The ledger's queries on SQLite (:class:`~sheepdog.core.sqlite.SqliteDatabase`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Final

from proxy.ledger import (
    COUNTERS,
    UNPRICED_COUNTERS,
    LedgerDelta,
    LedgerKey,
    LedgerRow,
    MonthTotals,
    NameKey,
    UnpricedRow,
)
from proxy.ledger_schema import MIGRATIONS
from sheepdog.core.db import Database
from sheepdog.core.sqlite import SqliteDatabase

__all__ = ["SqliteLedgerStore"]


def _upsert(table: str, keys: tuple[str, ...], counters: tuple[str, ...]) -> str:
    columns = (*keys, *counters)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - fixed names
        f"VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
        + ", ".join(f"{name} = {name} + excluded.{name}" for name in counters)
    )


_ADD: Final = _upsert("ledger_usage", ("month", "client", "model"), COUNTERS)
_ADD_NAME: Final = _upsert("ledger_unpriced", ("month", "name"), UNPRICED_COUNTERS)
_READ: Final = (
    f"SELECT month, client, model, {', '.join(COUNTERS)} FROM ledger_usage "  # noqa: S608
    "WHERE month = ? ORDER BY client, model"
)
_READ_UNPRICED: Final = (
    f"SELECT month, name, {', '.join(UNPRICED_COUNTERS)} FROM ledger_unpriced "  # noqa: S608
    "WHERE month = ? ORDER BY requests DESC, name"
)


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
                conn.executemany(_ADD, rows)
            if name_rows:
                conn.executemany(_ADD_NAME, name_rows)
            spend = conn.execute(
                "SELECT client, SUM(usd) FROM ledger_usage WHERE month = ? GROUP BY client",
                (month,),
            )
            known = conn.execute("SELECT name FROM ledger_unpriced WHERE month = ?", (month,))
            return MonthTotals(
                {client: float(usd) for client, usd in spend.fetchall()},
                {name for (name,) in known.fetchall()},
            )

        return await self.db.run(work, readonly=not (rows or name_rows))

    async def read_month(self, month: str) -> list[LedgerRow]:
        def work(conn: sqlite3.Connection) -> list[LedgerRow]:
            return [LedgerRow(*row) for row in conn.execute(_READ, (month,))]

        return await self.db.run(work, readonly=True)

    async def read_unpriced(self, month: str) -> list[UnpricedRow]:
        def work(conn: sqlite3.Connection) -> list[UnpricedRow]:
            return [UnpricedRow(*row) for row in conn.execute(_READ_UNPRICED, (month,))]

        return await self.db.run(work, readonly=True)
