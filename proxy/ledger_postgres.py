"""The ledger's queries on PostgreSQL (:class:`~sheepdog.core.postgres.PostgresDatabase`).

Every replica adds its own deltas (``usd = ledger_usage.usd + excluded.usd``), so concurrent
writers never overwrite each other; each batch's rows are written in key order, so two replicas'
batches never wait on each other in a circle.
"""

from __future__ import annotations

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
from sheepdog.core.postgres import Connection, PostgresDatabase

__all__ = ["PostgresLedgerStore"]


def _upsert(table: str, keys: tuple[str, ...], counters: tuple[str, ...]) -> str:
    columns = (*keys, *counters)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - fixed names
        f"VALUES ({', '.join(f'${n}' for n in range(1, len(columns) + 1))}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
        + ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in counters)
    )


_ADD: Final = _upsert("ledger_usage", ("month", "client", "model"), COUNTERS)
_ADD_NAME: Final = _upsert("ledger_unpriced", ("month", "name"), UNPRICED_COUNTERS)
_READ: Final = (
    f"SELECT month, client, model, {', '.join(COUNTERS)} FROM ledger_usage "  # noqa: S608
    "WHERE month = $1 ORDER BY client, model"
)
_READ_UNPRICED: Final = (
    f"SELECT month, name, {', '.join(UNPRICED_COUNTERS)} FROM ledger_unpriced "  # noqa: S608
    "WHERE month = $1 ORDER BY requests DESC, name"
)


class PostgresLedgerStore:
    def __init__(self, db: Database) -> None:
        assert isinstance(db, PostgresDatabase)
        self.db = db
        db.add_migrations("ledger", MIGRATIONS)

    async def add_and_total(
        self,
        batch: Mapping[LedgerKey, LedgerDelta],
        names: Mapping[NameKey, LedgerDelta],
        month: str,
    ) -> MonthTotals:
        rows = sorted((*key, *delta.values()) for key, delta in batch.items())
        name_rows = sorted((*key, *delta.values(UNPRICED_COUNTERS)) for key, delta in names.items())

        async def work(conn: Connection) -> MonthTotals:
            if rows:
                await conn.executemany(_ADD, rows)
            if name_rows:
                await conn.executemany(_ADD_NAME, name_rows)
            spend = await conn.fetch(
                "SELECT client, SUM(usd) AS usd FROM ledger_usage WHERE month = $1 GROUP BY client",
                month,
            )
            known = await conn.fetch("SELECT name FROM ledger_unpriced WHERE month = $1", month)
            return MonthTotals(
                {row["client"]: float(row["usd"]) for row in spend},
                {row["name"] for row in known},
            )

        return await self.db.run(work, readonly=not (rows or name_rows))

    async def read_month(self, month: str) -> list[LedgerRow]:
        async def work(conn: Connection) -> list[LedgerRow]:
            return [LedgerRow(*row.values()) for row in await conn.fetch(_READ, month)]

        return await self.db.run(work, readonly=True)

    async def read_unpriced(self, month: str) -> list[UnpricedRow]:
        async def work(conn: Connection) -> list[UnpricedRow]:
            return [UnpricedRow(*row.values()) for row in await conn.fetch(_READ_UNPRICED, month)]

        return await self.db.run(work, readonly=True)
