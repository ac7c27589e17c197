"""The rate limits' counts and grants on SQLite (:class:`~sheepdog.core.sqlite.SqliteDatabase`),
shared by the ``workers`` of one host. Each exchange is one ``IMMEDIATE`` transaction, so the
processes' exchanges take turns (what :meth:`~proxy.limits.Round.grants` relies on)."""

from __future__ import annotations

import sqlite3
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
from sheepdog.core.sqlite import SqliteDatabase

__all__ = ["SqliteRateStore"]

_ADD: Final = (
    "INSERT INTO rate_limit_counts (slot, client, kind, process, amount) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (slot, client, kind, process) DO UPDATE SET amount = amount + excluded.amount"
)
_FORGET: Final = "DELETE FROM rate_limit_counts WHERE slot < ?"
_FORGET_GRANTS: Final = "DELETE FROM rate_limit_grants WHERE slot < ? OR process = ?"
_OTHERS: Final = (
    "SELECT client, kind, slot, SUM(amount) FROM rate_limit_counts "
    "WHERE slot >= ? AND process <> ? GROUP BY slot, client, kind"
)
_GRANTED: Final = (
    "SELECT client, kind, process, amount FROM rate_limit_grants WHERE slot >= ? AND process <> ?"
)
_ALIVE_COUNTED: Final = (
    "SELECT client, kind, SUM(amount) FROM rate_limit_counts WHERE slot >= ? AND process IN "
    "(SELECT process FROM rate_limit_grants WHERE slot >= ? AND process <> ?) "
    "GROUP BY client, kind"
)
_GRANT: Final = (
    "INSERT INTO rate_limit_grants (client, kind, process, amount, slot) VALUES (?, ?, ?, ?, ?)"
)


class SqliteRateStore:
    def __init__(self, db: Database) -> None:
        assert isinstance(db, SqliteDatabase)
        self.db = db
        db.add_migrations("rate_limits", MIGRATIONS)

    async def exchange(self, round_: Round) -> Exchanged:
        process = round_.process
        unsent = round_.unsent.items()
        rows = [(slot, client, kind, process, n) for (client, kind, slot), n in unsent]

        def work(conn: sqlite3.Connection) -> Exchanged:
            conn.executemany(_ADD, rows)
            conn.execute(_FORGET, (round_.since_slot,))
            others: dict[RateKey, int] = {}
            for client, kind, slot, amount in conn.execute(_OTHERS, (round_.since_slot, process)):
                key = rate_key(client, kind, slot)
                if key is not None:
                    others[key] = int(amount)
            granted: dict[LimitKey, int] = {}
            alive: set[str] = set()
            live_from = round_.slot - GRANT_SECONDS
            for client, kind, owner, amount in conn.execute(_GRANTED, (live_from, process)):
                alive.add(owner)
                limit = limit_key(client, kind)
                if limit is not None:
                    granted[limit] = granted.get(limit, 0) + int(amount)
            counted: dict[LimitKey, int] = {}
            live = (round_.since_slot, live_from, process)
            for client, kind, amount in conn.execute(_ALIVE_COUNTED, live):
                limit = limit_key(client, kind)
                if limit is not None:
                    counted[limit] = int(amount)
            grants = round_.grants(others, Alive(len(alive), granted, counted))
            conn.execute(_FORGET_GRANTS, (round_.since_slot, process))
            conn.executemany(_GRANT, round_.grant_rows(grants))
            return Exchanged(others, grants)

        return await self.db.run(work)
