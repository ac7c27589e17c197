"""The rate limits' counts and grants on PostgreSQL
(:class:`~sheepdog.core.postgres.PostgresDatabase`), shared by every replica and worker.

Each exchange first takes a transaction-scoped advisory lock, so that the processes' exchanges
take turns (what :meth:`~proxy.limits.Round.grants` relies on: each reads the grants the
others wrote before it); one a second per process, each a few statements, so the wait is short.
"""

from __future__ import annotations

from typing import Final

from proxy.limits import Exchanged, Round
from proxy.limits_queries import alive_since, exchanged, rate_queries
from proxy.limits_schema import MIGRATIONS
from sheepdog.core.db import Database
from sheepdog.core.postgres import Connection, PostgresDatabase

__all__ = ["PostgresRateStore"]

_SQL: Final = rate_queries(lambda n: f"${n}")
# pg_advisory_xact_lock key of the exchanges: any fixed number, the same everywhere.
_EXCHANGE_LOCK: Final = 0x5EED_D07


class PostgresRateStore:
    def __init__(self, db: Database) -> None:
        assert isinstance(db, PostgresDatabase)
        self.db = db
        db.add_migrations("rate_limits", MIGRATIONS)

    async def exchange(self, round_: Round) -> Exchanged:
        process, since, alive = round_.process, round_.since_slot, alive_since(round_)
        rows = sorted(
            (slot, client, kind, process, n) for (client, kind, slot), n in round_.unsent.items()
        )

        async def work(conn: Connection) -> Exchanged:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _EXCHANGE_LOCK)
            if rows:
                await conn.executemany(_SQL.add, rows)
            await conn.execute(_SQL.forget, since)
            result = exchanged(
                round_,
                [tuple(row) for row in await conn.fetch(_SQL.others, since, process)],
                [tuple(row) for row in await conn.fetch(_SQL.granted, alive, process)],
                [tuple(row) for row in await conn.fetch(_SQL.alive_counted, since, alive, process)],
            )
            await conn.execute(_SQL.forget_grants, since, process)
            grants = round_.grant_rows(result.grants)
            if grants:
                await conn.executemany(_SQL.grant, grants)
            return result

        return await self.db.run(work)
