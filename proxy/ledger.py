"""The spend ledger: per calendar month (UTC), per client, per model — requests, tokens, USD.

Tokens are kept by kind: input and output (totals), and of them cache reads, cache writes and
reasoning; with the USD the cache reads saved. The names clients sent that had no price (metered
as model ``other``) are kept too, with their request and token counts, up to about
:data:`UNPRICED_NAMES_PER_MONTH` distinct names a month (the rest count under one empty name; with
several processes each may add a few past the limit before it reads the others' back), so that
an operator can see what to price.

It lives in the database (tables ``ledger_usage`` and ``ledger_unpriced``: SQLite in
``state_dir``, or PostgreSQL shared by replicas) so that spend survives restarts and budgets hold
across them and across processes.
Requests never wait for the database: month-to-date spend is kept in memory, and once a second
(:meth:`SpendLedger.sync`) what this process spent since is added to the ledger in one
transaction, which also reads back every process's totals. So a budget counts every process's
spend within about a second (docs/proxy.md bounds the overshoot). A crash (``kill -9``, power
loss) can lose at most the last second of this process's metering; a clean stop loses nothing.
While the database cannot be reached the changes stay in memory and are written when it can be
again, and budgets go on from the last totals read plus this process's own spend.

The queries live in a :class:`LedgerStore`, one per backend (:mod:`proxy.ledger_sqlite`,
:mod:`proxy.ledger_postgres`); the counted columns are :data:`COUNTERS`, from which both write
their SQL, so a new counter is a migration (:mod:`proxy.ledger_schema`) and a name here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Final, Protocol, TypeVar

from proxy.tokens import Usage
from sheepdog.core.clock import Clock
from sheepdog.core.db import Database, DatabaseUnavailable

__all__ = [
    "COUNTERS",
    "FLUSH_INTERVAL_SECONDS",
    "UNPRICED_COUNTERS",
    "UNPRICED_NAMES_PER_MONTH",
    "LedgerDelta",
    "LedgerKey",
    "LedgerRow",
    "LedgerStore",
    "MonthTotals",
    "NameKey",
    "SpendLedger",
    "UnpricedRow",
    "month_bounds",
    "month_of",
    "store_for",
]

log = logging.getLogger("sheepdog.proxy.ledger")

FLUSH_INTERVAL_SECONDS: Final = 1.0
UNPRICED_NAMES_PER_MONTH: Final = 100
_MAX_NAME_CHARS: Final = 100


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


@dataclass(slots=True)
class LedgerDelta:
    """What one process counted for one key since its last write."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_savings_usd: float = 0.0

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

    def add(self, other: LedgerDelta) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def values(self, counters: tuple[str, ...] | None = None) -> tuple[int | float, ...]:
        return tuple(getattr(self, name) for name in counters or COUNTERS)


COUNTERS: Final = tuple(f.name for f in fields(LedgerDelta))
"""The ledger's counted columns, in table order after (month, client, model)."""
UNPRICED_COUNTERS: Final = ("requests", "input_tokens", "output_tokens")
"""What is counted for each unpriced name."""

LedgerKey = tuple[str, str, str]
"""month, client, model"""
NameKey = tuple[str, str]
"""month, unpriced name"""


@dataclass(frozen=True, slots=True)
class MonthTotals:
    """A month as every process has written it so far."""

    spend: dict[str, float]
    """USD per client."""
    unpriced_names: set[str]


class LedgerStore(Protocol):
    """The ledger's queries on one backend; a database that cannot be reached raises
    :class:`DatabaseUnavailable`."""

    async def add_and_total(
        self,
        batch: Mapping[LedgerKey, LedgerDelta],
        names: Mapping[NameKey, LedgerDelta],
        month: str,
    ) -> MonthTotals:
        """Add ``batch`` and ``names`` to the ledger and return ``month``'s totals, every
        process's, in one transaction."""
        ...

    async def read_month(self, month: str) -> list[LedgerRow]:
        """Every row of ``month``, ordered by client and model."""
        ...

    async def read_unpriced(self, month: str) -> list[UnpricedRow]:
        """The names metered as ``other`` in ``month``, most requested first."""
        ...


def store_for(db: Database) -> LedgerStore:
    """The ledger store for ``db``'s backend; registers the ledger's migrations on it."""
    if db.kind == "postgresql":
        from proxy.ledger_postgres import PostgresLedgerStore

        return PostgresLedgerStore(db)
    from proxy.ledger_sqlite import SqliteLedgerStore

    return SqliteLedgerStore(db)


class SpendLedger:
    """Month-to-date spend in memory, synchronised with the database by :meth:`run`."""

    def __init__(
        self, db: Database, clock: Clock, flush_interval: float = FLUSH_INTERVAL_SECONDS
    ) -> None:
        self.store = store_for(db)
        self._clock = clock
        self._flush_interval = flush_interval
        self._stored: dict[str, float] = {}
        """This month's totals per client, every process's, as last read from the database."""
        self._spend: dict[str, float] = {}
        """``_stored`` plus what this process recorded since (not written yet)."""
        self._pending: dict[LedgerKey, LedgerDelta] = {}
        self._pending_names: dict[NameKey, LedgerDelta] = {}
        self._names: set[str] = set()
        """This month's unpriced names: every process's as last read, and this one's since."""
        self._loaded = False
        self._problem: str | None = "not loaded yet"
        self._failing = False
        self._stopping = asyncio.Event()
        # One sync at a time: a flush asked for (tests, a stop) while the writer's own is under
        # way waits for it, so the older one cannot finish last and undo what the newer saw.
        self._syncing = asyncio.Lock()
        # Every request asks for the month: a comparison of the clock's seconds with the
        # month's bounds is all it costs (set by the first _current_month).
        self._month = ""
        self._month_start = self._month_end = 0.0
        self._current_month()

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
            delta = self._pending[key] = LedgerDelta()
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
            delta = self._pending_names[key] = LedgerDelta()
        delta.count(usage, 0.0, 0.0)

    def month_spend(self, client: str) -> float:
        """USD ``client`` spent this calendar month (UTC): every process's, as of the last
        sync, and this one's since."""
        self._current_month()
        return self._spend.get(client, 0.0)

    def month_spend_by_client(self, clients: Iterable[str]) -> dict[str, float]:
        """This month's spend of each of ``clients`` (zero for those with none)."""
        self._current_month()
        return {client: self._spend.get(client, 0.0) for client in clients}

    async def read_month(self, month: str) -> list[LedgerRow]:
        """``month``'s rows as the database has them (the console and ``sheepdog report``)."""
        return await self.store.read_month(month)

    async def read_unpriced(self, month: str) -> list[UnpricedRow]:
        """``month``'s names without a price as the database has them."""
        return await self.store.read_unpriced(month)

    @property
    def problem(self) -> str | None:
        """None when the ledger is loaded and its last write succeeded, else why not."""
        return self._problem

    def _current_month(self) -> str:
        if self._month_start <= self._clock.time() < self._month_end:
            return self._month
        now = self._clock.now()
        month = month_of(now)
        start, end = month_bounds(now)
        self._month_start, self._month_end = start.timestamp(), end.timestamp()
        if month != self._month:
            # A new month starts from zero; last month's unwritten changes stay pending.
            self._month = month
            self._spend = {}
            self._stored = {}
            self._names = set()
        return month

    async def run(self) -> None:
        """Synchronise every interval until :meth:`stop`, then once more."""
        while not self._stopping.is_set():
            await self.sync()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval):
                    await self._stopping.wait()
        # After the stop: what was recorded since, including during a sync the stop came in.
        await self.sync()

    def stop(self) -> None:
        """Ask :meth:`run` to write what is pending and return."""
        self._stopping.set()

    async def load(self) -> None:
        """Read the month-to-date spend (before serving); retried by :meth:`run`."""
        await self.sync()

    async def flush(self) -> None:
        """Write pending changes now and read the totals back."""
        await self.sync()

    async def sync(self) -> None:
        """Add what this process spent since the last sync to the ledger and read every
        process's totals back, in one transaction; on failure keep the changes for the next."""
        async with self._syncing:
            await self._sync()

    async def _sync(self) -> None:
        batch, self._pending = self._pending, {}
        names, self._pending_names = self._pending_names, {}
        month = self._current_month()
        try:
            totals = await self.store.add_and_total(batch, names, month)
        except DatabaseUnavailable as exc:
            _put_back(batch, self._pending)
            _put_back(names, self._pending_names)
            self._set_problem(
                f"cannot write spend: {exc}" if self._loaded else f"cannot load spend: {exc}"
            )
            return
        if month == self._current_month():
            self._stored = totals.spend
            self._names |= totals.unpriced_names
            spend = dict(totals.spend)
            for (pending_month, client, _), delta in self._pending.items():
                if pending_month == month:
                    spend[client] = spend.get(client, 0.0) + delta.usd
            self._spend = spend
        self._loaded = True
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


_K = TypeVar("_K", LedgerKey, NameKey)


def _put_back(batch: dict[_K, LedgerDelta], pending: dict[_K, LedgerDelta]) -> None:
    """Return a batch that could not be written to what is pending, adding up the same keys."""
    for key, delta in batch.items():
        newer = pending.get(key)
        if newer is not None:
            delta.add(newer)
        pending[key] = delta


def _clean_name(name: str) -> str:
    """A name fit to be stored and shown: clipped, with control characters replaced."""
    clipped = name[:_MAX_NAME_CHARS]
    if clipped.isprintable():
        return clipped
    return "".join(char if char.isprintable() else "?" for char in clipped)
