"""The spend ledger: per calendar month (UTC), per client, per model — requests, tokens, USD.

It lives in the shared SQLite database (table ``ledger_usage``) so that spend survives restarts and
budgets hold across them. Requests never wait for the disk: month-to-date spend is kept in memory
(loaded from the ledger at start-up) and what changed is written in one transaction per second,
and once more at shutdown. A crash (``kill -9``, power loss) can therefore lose at most the last
second of metering; a clean stop loses nothing. While the database cannot be written the changes
stay in memory and are written when it can be again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from proxy.pricing import Usage
from sheepdog.core.clock import Clock
from sheepdog.core.db import Database, DatabaseUnavailable

__all__ = [
    "FLUSH_INTERVAL_SECONDS",
    "LedgerRow",
    "SpendLedger",
    "create_ledger_schema",
    "month_of",
    "read_month",
]

log = logging.getLogger("sheepdog.proxy.ledger")

FLUSH_INTERVAL_SECONDS: Final = 1.0


def create_ledger_schema(conn: sqlite3.Connection) -> None:
    """Create the ledger table if it is not there yet."""
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS ledger_usage (
            month         TEXT    NOT NULL,  -- 'YYYY-MM', calendar month in UTC
            client        TEXT    NOT NULL,  -- configured client name, or 'anonymous'
            model         TEXT    NOT NULL,  -- the model label: a priced model, or 'other'
            requests      INTEGER NOT NULL DEFAULT 0,
            input_tokens  INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            usd           REAL    NOT NULL DEFAULT 0,  -- at list price
            PRIMARY KEY (month, client, model)
        ) WITHOUT ROWID
        """
    )


def month_of(moment: datetime) -> str:
    """The ledger's month key, ``YYYY-MM``, of the calendar month (UTC) holding ``moment``."""
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


@dataclass(frozen=True, slots=True)
class LedgerRow:
    month: str
    client: str
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    usd: float


def read_month(conn: sqlite3.Connection, month: str) -> list[LedgerRow]:
    """Every row of ``month``, ordered by client and model."""
    cursor = conn.execute(
        "SELECT month, client, model, requests, input_tokens, output_tokens, usd "
        "FROM ledger_usage WHERE month = ? ORDER BY client, model",
        (month,),
    )
    return [LedgerRow(*row) for row in cursor.fetchall()]


class _Delta:
    __slots__ = ("input_tokens", "output_tokens", "requests", "usd")

    def __init__(self) -> None:
        self.requests = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.usd = 0.0

    def add(self, other: _Delta) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.usd += other.usd


_Key = tuple[str, str, str]  # month, client, model


def _write(conn: sqlite3.Connection, batch: dict[_Key, _Delta]) -> None:
    conn.executemany(
        """
        INSERT INTO ledger_usage (month, client, model, requests, input_tokens, output_tokens, usd)
        VALUES (?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (month, client, model) DO UPDATE SET
            requests      = requests      + excluded.requests,
            input_tokens  = input_tokens  + excluded.input_tokens,
            output_tokens = output_tokens + excluded.output_tokens,
            usd           = usd           + excluded.usd
        """,
        [
            (*key, delta.requests, delta.input_tokens, delta.output_tokens, delta.usd)
            for key, delta in batch.items()
        ],
    )


def _spend_by_client(conn: sqlite3.Connection, month: str) -> dict[str, float]:
    cursor = conn.execute(
        "SELECT client, SUM(usd) FROM ledger_usage WHERE month = ? GROUP BY client", (month,)
    )
    return {client: float(usd) for client, usd in cursor.fetchall()}


class SpendLedger:
    """Month-to-date spend in memory, written to the database in batches by :meth:`run`."""

    def __init__(
        self, db: Database, clock: Clock, flush_interval: float = FLUSH_INTERVAL_SECONDS
    ) -> None:
        self._db = db
        self._clock = clock
        self._flush_interval = flush_interval
        self._month = month_of(clock.now())
        self._spend: dict[str, float] = {}
        self._pending: dict[_Key, _Delta] = {}
        self._loaded = False
        self._problem: str | None = "not loaded yet"
        self._failing = False
        self._stopping = asyncio.Event()
        db.add_schema(create_ledger_schema)

    def record(self, client: str, model: str, usage: Usage | None, usd: float) -> None:
        """Count one relayed request; ``usage`` None when the upstream's usage was not readable."""
        month = self._current_month()
        self._spend[client] = self._spend.get(client, 0.0) + usd
        key = (month, client, model)
        delta = self._pending.get(key)
        if delta is None:
            delta = self._pending[key] = _Delta()
        delta.requests += 1
        delta.usd += usd
        if usage is not None:
            delta.input_tokens += usage.input_tokens
            delta.output_tokens += usage.output_tokens

    def month_spend(self, client: str) -> float:
        """USD ``client`` spent this calendar month (UTC), including what is not written yet."""
        self._current_month()
        return self._spend.get(client, 0.0)

    def month_spend_by_client(self, clients: Iterable[str]) -> dict[str, float]:
        """This month's spend of each of ``clients`` (zero for those with none)."""
        self._current_month()
        return {client: self._spend.get(client, 0.0) for client in clients}

    @property
    def problem(self) -> str | None:
        """None when the ledger is loaded and its last write succeeded, else why not."""
        return self._problem

    def _current_month(self) -> str:
        month = month_of(self._clock.now())
        if month != self._month:
            # A new month starts from zero; last month's unwritten changes stay pending.
            self._month = month
            self._spend = {}
        return month

    async def run(self) -> None:
        """Load this month's spend, then write changes every interval until :meth:`stop`."""
        while True:
            await self._step()
            if self._stopping.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval):
                    await self._stopping.wait()

    def stop(self) -> None:
        """Ask :meth:`run` to write what is pending and return."""
        self._stopping.set()

    async def _step(self) -> None:
        if not self._loaded:
            await self.load()
        if self._loaded:
            await self.flush()

    async def load(self) -> None:
        """Add the month-to-date spend in the database to what is in memory; retried by run."""
        if self._loaded:
            return
        # Nothing is written before this succeeds, so the ledger holds exactly what earlier runs
        # spent, and adding it to what this run recorded meanwhile gives the month's total.
        month = self._month
        try:
            stored = await self._db.run(lambda conn: _spend_by_client(conn, month))
        except DatabaseUnavailable as exc:
            self._set_problem(f"cannot load month-to-date spend: {exc}")
            return
        if month == self._current_month():
            for client, usd in stored.items():
                self._spend[client] = self._spend.get(client, 0.0) + usd
        self._loaded = True
        self._set_problem(None)

    async def flush(self) -> None:
        """Write pending changes in one transaction; on failure keep them for the next try."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await self._db.run(lambda conn: _write(conn, batch))
        except DatabaseUnavailable as exc:
            for key, delta in batch.items():
                pending = self._pending.get(key)
                if pending is None:
                    self._pending[key] = delta
                else:
                    delta.add(pending)
                    self._pending[key] = delta
            self._set_problem(f"cannot write spend: {exc}")
            return
        self._set_problem(None)

    def unwritten(self) -> tuple[int, float]:
        """Requests and USD recorded but not yet in the database."""
        return (
            sum(delta.requests for delta in self._pending.values()),
            sum(delta.usd for delta in self._pending.values()),
        )

    def _set_problem(self, problem: str | None) -> None:
        if problem is not None and not self._failing:
            log.error("spend ledger unavailable, changes kept in memory", extra={"reason": problem})
        elif problem is None and self._failing:
            log.info("spend ledger available again")
        self._failing = problem is not None
        self._problem = problem
