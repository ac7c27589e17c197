"""The rate limits' counts and grants on PostgreSQL
(:class:`~sheepdog.core.postgres.PostgresDatabase`), shared by every replica and worker.

Each exchange first takes a transaction-scoped advisory lock, so that the processes' exchanges
take turns (what :meth:`~proxy.limits.Round.grants` relies on: each reads the grants the
others wrote before it); one a second per process, each a few statements, so the wait is short.
"""

from __future__ import annotations

from typing import Final

from proxy.limits import (
    GRANT_SECONDS,
    Alive,
    Exchanged,
    LimitKey,
    RateKey,
    Round,
    limit_key,
    rate_key,
)
from proxy.limits_schema import MIGRATIONS
from sheepdog.core.db import Database
from sheepdog.core.postgres import Connection, PostgresDatabase

__all__ = ["PostgresRateStore"]

# pg_advisory_xact_lock key of the exchanges: any fixed number, the same everywhere.
_EXCHANGE_LOCK: Final = 0x5EED_D07
_ADD: Final = (
    "INSERT INTO rate_limit_counts (slot, client, kind, process, amount) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (slot, client, kind, process) "
    "DO UPDATE SET amount = rate_limit_counts.amount + excluded.amount"
)
_FORGET: Final = "DELETE FROM rate_limit_counts WHERE slot < $1"
_FORGET_GRANTS: Final = "DELETE FROM rate_limit_grants WHERE slot < $1 OR process = $2"
_OTHERS: Final = (
    "SELECT client, kind, slot, SUM(amount) AS amount FROM rate_limit_counts "
    "WHERE slot >= $1 AND process <> $2 GROUP BY slot, client, kind"
)
_GRANTED: Final = (
    "SELECT client, kind, process, amount FROM rate_limit_grants WHERE slot >= $1 AND process <> $2"
)
_ALIVE_COUNTED: Final = (
    "SELECT client, kind, SUM(amount) AS amount FROM rate_limit_counts WHERE slot >= $1 AND "
    "process IN (SELECT process FROM rate_limit_grants WHERE slot >= $2 AND process <> $3) "
    "GROUP BY client, kind"
)
_GRANT: Final = (
    "INSERT INTO rate_limit_grants (client, kind, process, amount, slot) "
    "VALUES ($1, $2, $3, $4, $5)"
)


class PostgresRateStore:
    def __init__(self, db: Database) -> None:
        assert isinstance(db, PostgresDatabase)
        self.db = db
        db.add_migrations("rate_limits", MIGRATIONS)

    async def exchange(self, round_: Round) -> Exchanged:
        process = round_.process
        rows = sorted(
            (slot, client, kind, process, n) for (client, kind, slot), n in round_.unsent.items()
        )

        async def work(conn: Connection) -> Exchanged:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _EXCHANGE_LOCK)
            if rows:
                await conn.executemany(_ADD, rows)
            await conn.execute(_FORGET, round_.since_slot)
            others: dict[RateKey, int] = {}
            for row in await conn.fetch(_OTHERS, round_.since_slot, process):
                key = rate_key(row["client"], row["kind"], row["slot"])
                if key is not None:
                    others[key] = int(row["amount"])
            granted: dict[LimitKey, int] = {}
            alive: set[str] = set()
            live_from = round_.slot - GRANT_SECONDS
            for row in await conn.fetch(_GRANTED, live_from, process):
                alive.add(row["process"])
                limit = limit_key(row["client"], row["kind"])
                if limit is not None:
                    granted[limit] = granted.get(limit, 0) + int(row["amount"])
            counted: dict[LimitKey, int] = {}
            for row in await conn.fetch(_ALIVE_COUNTED, round_.since_slot, live_from, process):
                limit = limit_key(row["client"], row["kind"])
                if limit is not None:
                    counted[limit] = int(row["amount"])
            grants = round_.grants(others, Alive(len(alive), granted, counted))
            await conn.execute(_FORGET_GRANTS, round_.since_slot, process)
            if grants:
                await conn.executemany(_GRANT, round_.grant_rows(grants))
            return Exchanged(others, grants)

        return await self.db.run(work)
