"""The ledger's queries on PostgreSQL (:class:`~sheepdog.core.postgres.PostgresDatabase`).

Every replica adds its own deltas (``usd = ledger_usage.usd + excluded.usd``), so concurrent
writers never overwrite each other; each batch's rows are written in key order, so two replicas'
batches never wait on each other in a circle.
"""

from __future__ import annotations

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
from sheepdog.core.postgres import Connection, PostgresDatabase

__all__ = ["PostgresLedgerStore"]


_SQL: Final = ledger_queries(lambda n: f"${n}")


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
                await conn.executemany(_SQL.add, rows)
            if name_rows:
                await conn.executemany(_SQL.add_name, name_rows)
            spend = await conn.fetch(_SQL.spend, month)
            known = await conn.fetch(_SQL.known_names, month)
            return MonthTotals(
                {row["client"]: float(row["usd"]) for row in spend},
                {row["name"] for row in known},
            )

        return await self.db.run(work, readonly=not (rows or name_rows))

    async def read_month(self, month: str) -> list[LedgerRow]:
        async def work(conn: Connection) -> list[LedgerRow]:
            return [LedgerRow(*row.values()) for row in await conn.fetch(_SQL.read, month)]

        return await self.db.run(work, readonly=True)

    async def read_unpriced(self, month: str) -> list[UnpricedRow]:
        async def work(conn: Connection) -> list[UnpricedRow]:
            rows = await conn.fetch(_SQL.read_unpriced, month)
            return [UnpricedRow(*row.values()) for row in rows]

        return await self.db.run(work, readonly=True)
