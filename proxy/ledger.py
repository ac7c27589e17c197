"""The spend ledger: per calendar month (UTC), per client, per model — requests, tokens, USD.

Tokens are kept by kind: input and output (totals), and of them cache reads, cache writes and
reasoning; with the USD the cache reads saved. The names clients sent that had no price (metered
as model ``other``) are kept too, with their request and token counts, up to
:data:`UNPRICED_NAMES_PER_MONTH` distinct names a month (the rest count under one empty name), so
that an operator can see what to price.

It lives in the shared SQLite database (tables ``ledger_usage``, ``ledger_unpriced``) so that spend
survives restarts and
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
from typing import Final, TypeVar

from proxy.tokens import Usage
from sheepdog.core.clock import Clock
from sheepdog.core.db import Database, DatabaseUnavailable

__all__ = [
    "FLUSH_INTERVAL_SECONDS",
    "UNPRICED_NAMES_PER_MONTH",
    "LedgerRow",
    "SpendLedger",
    "UnpricedRow",
    "create_ledger_schema",
    "month_bounds",
    "month_of",
    "read_month",
    "read_unpriced",
]

log = logging.getLogger("sheepdog.proxy.ledger")

FLUSH_INTERVAL_SECONDS: Final = 1.0
UNPRICED_NAMES_PER_MONTH: Final = 100
_MAX_NAME_CHARS: Final = 100
# Columns added in 0.2, to ledgers created by 0.1.
_ADDED_COLUMNS: Final = (
    ("cache_read_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("cache_write_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("reasoning_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("cache_savings_usd", "REAL NOT NULL DEFAULT 0"),
)


def create_ledger_schema(conn: sqlite3.Connection) -> None:
    """Create the ledger tables if they are not there yet, and add the columns 0.1 lacked."""
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS ledger_usage (
            month              TEXT    NOT NULL,  -- 'YYYY-MM', calendar month in UTC
            client             TEXT    NOT NULL,  -- configured client name, or 'anonymous'
            model              TEXT    NOT NULL,  -- the model label: a priced model, or 'other'
            requests           INTEGER NOT NULL DEFAULT 0,
            input_tokens       INTEGER NOT NULL DEFAULT 0,  -- all input, cache included
            output_tokens      INTEGER NOT NULL DEFAULT 0,  -- all output, reasoning included
            usd                REAL    NOT NULL DEFAULT 0,  -- at list price
            cache_read_tokens  INTEGER NOT NULL DEFAULT 0,  -- of input_tokens
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,  -- of input_tokens
            reasoning_tokens   INTEGER NOT NULL DEFAULT 0,  -- of output_tokens
            cache_savings_usd  REAL    NOT NULL DEFAULT 0,  -- what cache reads saved, list price
            PRIMARY KEY (month, client, model)
        ) WITHOUT ROWID
        """
    )
    present = {row[1] for row in conn.execute("PRAGMA table_info(ledger_usage)")}
    for column, definition in _ADDED_COLUMNS:
        if column not in present:
            conn.execute(f"ALTER TABLE ledger_usage ADD COLUMN {column} {definition}")
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS ledger_unpriced (
            month         TEXT    NOT NULL,  -- 'YYYY-MM', calendar month in UTC
            name          TEXT    NOT NULL,  -- as the client sent it (clipped); '' for the rest
            requests      INTEGER NOT NULL DEFAULT 0,
            input_tokens  INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (month, name)
        ) WITHOUT ROWID
        """
    )


def month_of(moment: datetime) -> str:
    """The ledger's month key, ``YYYY-MM``, of the calendar month (UTC) holding ``moment``."""
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


def month_bounds(moment: datetime) -> tuple[datetime, datetime]:
    """The start of the calendar month (UTC) holding ``moment``, and the start of the next."""
    utc = moment.astimezone(UTC)
    start = datetime(utc.year, utc.month, 1, tzinfo=UTC)
    year, month = (utc.year + 1, 1) if utc.month == 12 else (utc.year, utc.month + 1)
    return start, datetime(year, month, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    month: str
    client: str
    model: str
    requests: int
    input_tokens: int
    output_tokens: int
    usd: float
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_savings_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class UnpricedRow:
    """A model name metered as ``other`` in one month ('' for the names past the limit)."""

    month: str
    name: str
    requests: int
    input_tokens: int
    output_tokens: int


def read_month(conn: sqlite3.Connection, month: str) -> list[LedgerRow]:
    """Every row of ``month``, ordered by client and model."""
    cursor = conn.execute(
        "SELECT month, client, model, requests, input_tokens, output_tokens, usd, "
        "cache_read_tokens, cache_write_tokens, reasoning_tokens, cache_savings_usd "
        "FROM ledger_usage WHERE month = ? ORDER BY client, model",
        (month,),
    )
    return [LedgerRow(*row) for row in cursor.fetchall()]


def read_unpriced(conn: sqlite3.Connection, month: str) -> list[UnpricedRow]:
    """The names metered as ``other`` in ``month``, most requested first."""
    cursor = conn.execute(
        "SELECT month, name, requests, input_tokens, output_tokens FROM ledger_unpriced "
        "WHERE month = ? ORDER BY requests DESC, name",
        (month,),
    )
    return [UnpricedRow(*row) for row in cursor.fetchall()]


class _Delta:
    __slots__ = (
        "cache_read_tokens",
        "cache_savings_usd",
        "cache_write_tokens",
        "input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "requests",
        "usd",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.usd = 0.0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.cache_savings_usd = 0.0

    def count(self, usage: Usage | None, usd: float, cache_savings_usd: float) -> None:
        self.requests += 1
        self.usd += usd
        if usage is not None:
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            self.cache_read_tokens += usage.cache_read_tokens
            self.cache_write_tokens += usage.cache_write_tokens
            self.reasoning_tokens += usage.reasoning_tokens
            self.cache_savings_usd += cache_savings_usd

    def add(self, other: _Delta) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


_Key = tuple[str, str, str]  # month, client, model
_K = TypeVar("_K", bound=tuple[str, ...])
_NameKey = tuple[str, str]  # month, name


def _write(
    conn: sqlite3.Connection, batch: dict[_Key, _Delta], names: dict[_NameKey, _Delta]
) -> None:
    conn.executemany(
        """
        INSERT INTO ledger_usage (month, client, model, requests, input_tokens, output_tokens,
            usd, cache_read_tokens, cache_write_tokens, reasoning_tokens, cache_savings_usd)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (month, client, model) DO UPDATE SET
            requests           = requests           + excluded.requests,
            input_tokens       = input_tokens       + excluded.input_tokens,
            output_tokens      = output_tokens      + excluded.output_tokens,
            usd                = usd                + excluded.usd,
            cache_read_tokens  = cache_read_tokens  + excluded.cache_read_tokens,
            cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
            reasoning_tokens   = reasoning_tokens   + excluded.reasoning_tokens,
            cache_savings_usd  = cache_savings_usd  + excluded.cache_savings_usd
        """,
        [
            (
                *key,
                delta.requests,
                delta.input_tokens,
                delta.output_tokens,
                delta.usd,
                delta.cache_read_tokens,
                delta.cache_write_tokens,
                delta.reasoning_tokens,
                delta.cache_savings_usd,
            )
            for key, delta in batch.items()
        ],
    )
    conn.executemany(
        """
        INSERT INTO ledger_unpriced (month, name, requests, input_tokens, output_tokens)
        VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (month, name) DO UPDATE SET
            requests      = requests      + excluded.requests,
            input_tokens  = input_tokens  + excluded.input_tokens,
            output_tokens = output_tokens + excluded.output_tokens
        """,
        [
            (*key, delta.requests, delta.input_tokens, delta.output_tokens)
            for key, delta in names.items()
        ],
    )


def _unpriced_names(conn: sqlite3.Connection, month: str) -> set[str]:
    cursor = conn.execute("SELECT name FROM ledger_unpriced WHERE month = ?", (month,))
    return {name for (name,) in cursor.fetchall()}


def _clean_name(name: str) -> str:
    """A name fit to be stored and shown: clipped, with control characters replaced."""
    clipped = name[:_MAX_NAME_CHARS]
    if clipped.isprintable():
        return clipped
    return "".join(char if char.isprintable() else "?" for char in clipped)


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
        now = clock.now()
        self._month = month_of(now)
        # Every request asks for the month: a comparison with its bounds is all it costs.
        self._month_start, self._month_end = month_bounds(now)
        self._spend: dict[str, float] = {}
        self._pending: dict[_Key, _Delta] = {}
        self._pending_names: dict[_NameKey, _Delta] = {}
        self._names: set[str] = set()  # this month's unpriced names, stored or pending
        self._loaded = False
        self._problem: str | None = "not loaded yet"
        self._failing = False
        self._stopping = asyncio.Event()
        db.add_schema(create_ledger_schema)

    def record(
        self,
        client: str,
        model: str,
        usage: Usage | None,
        usd: float,
        unpriced_name: str | None = None,
        cache_savings_usd: float = 0.0,
    ) -> None:
        """Count one relayed request; ``usage`` None when the upstream's usage was not readable,
        ``unpriced_name`` the name the client sent when it had no price."""
        month = self._current_month()
        self._spend[client] = self._spend.get(client, 0.0) + usd
        key = (month, client, model)
        delta = self._pending.get(key)
        if delta is None:
            delta = self._pending[key] = _Delta()
        delta.count(usage, usd, cache_savings_usd)
        if unpriced_name is not None:
            self._count_unpriced(month, unpriced_name, usage)

    def _count_unpriced(self, month: str, name: str, usage: Usage | None) -> None:
        name = _clean_name(name)
        if name not in self._names:
            if len(self._names) >= UNPRICED_NAMES_PER_MONTH:
                name = ""
            self._names.add(name)
        key = (month, name)
        delta = self._pending_names.get(key)
        if delta is None:
            delta = self._pending_names[key] = _Delta()
        delta.count(usage, 0.0, 0.0)

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
        now = self._clock.now()
        if self._month_start <= now < self._month_end:
            return self._month
        month = month_of(now)
        self._month_start, self._month_end = month_bounds(now)
        if month != self._month:
            # A new month starts from zero; last month's unwritten changes stay pending.
            self._month = month
            self._spend = {}
            self._names = set()
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
            stored, names = await self._db.run(
                lambda conn: (_spend_by_client(conn, month), _unpriced_names(conn, month))
            )
        except DatabaseUnavailable as exc:
            self._set_problem(f"cannot load month-to-date spend: {exc}")
            return
        if month == self._current_month():
            for client, usd in stored.items():
                self._spend[client] = self._spend.get(client, 0.0) + usd
            self._names |= names
        self._loaded = True
        self._set_problem(None)

    async def flush(self) -> None:
        """Write pending changes in one transaction; on failure keep them for the next try."""
        if not self._pending and not self._pending_names:
            return
        batch, self._pending = self._pending, {}
        names, self._pending_names = self._pending_names, {}
        try:
            await self._db.run(lambda conn: _write(conn, batch, names))
        except DatabaseUnavailable as exc:
            _put_back(batch, self._pending)
            _put_back(names, self._pending_names)
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


def _put_back(batch: dict[_K, _Delta], pending: dict[_K, _Delta]) -> None:
    """Return a batch that could not be written to what is pending, adding up the same keys."""
    for key, delta in batch.items():
        newer = pending.get(key)
        if newer is not None:
            delta.add(newer)
        pending[key] = delta
