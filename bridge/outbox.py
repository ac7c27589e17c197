"""The outbox: every accepted notification, in the database, until it is sent or dead-lettered.

A row is ``pending`` when accepted, ``in_flight`` while a worker holds it (sending, or waiting
to retry), then ``sent`` or ``dead``. Rows are never deleted before they are sent: dead letters
stay until an operator sends them again (``sheepdog outbox retry``); sent rows are pruned after
a week.

:class:`Outbox` is what the bridge, the command line and the console use; its queries live in
an :class:`OutboxStore`, one per backend (:mod:`bridge.outbox_sqlite`,
:mod:`bridge.outbox_postgres`), both held to the same tests.

Several processes may share one outbox (``workers`` > 1, or replicas on PostgreSQL). Then one
process at a time delivers to a destination: it holds the destination's lease
(:meth:`Outbox.lease`), which expires unless renewed, so that a process that died loses it and
another takes over. The lease row also keeps the destination's recent send times, so its rate
limit holds whichever process delivers. Rows a process claims carry its name; whoever takes a
destination over queues again the rows of its targets that another process had claimed. A
process alone on its SQLite file instead takes back, at start-up, everything left in flight
(:meth:`Outbox.recover`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from bridge.payload import Payload
from sheepdog.core.db import Database, DatabaseUnavailable

__all__ = [
    "CHANNEL",
    "DEDUP_WINDOW_SECONDS",
    "KEEP_SENT_SECONDS",
    "STATUSES",
    "Grant",
    "NewRow",
    "Outbox",
    "OutboxStore",
    "Row",
    "TargetStats",
    "store_for",
]

STATUSES: Final = ("pending", "in_flight", "sent", "dead")
CHANNEL: Final = "sheepdog_outbox"
"""What the database announces new rows on (:meth:`~sheepdog.core.db.Database.watch`)."""
KEEP_SENT_SECONDS: Final = 7 * 24 * 3600.0
DEDUP_WINDOW_SECONDS: Final = 15 * 60.0
"""How long an identical notification counts as Alertmanager retrying, not repeating.

Alertmanager retries a notification until its group interval ends (5 min by default); a repeat
of an unchanged group comes only after ``repeat_interval`` (4 h by default).
"""


@dataclass(frozen=True, slots=True)
class Row:
    """One notification in the outbox, without its payload (:meth:`Outbox.payloads`)."""

    id: int
    target: str
    status: str
    alert_status: str
    alert_names: tuple[str, ...]
    alert_count: int
    attempts: int
    created_at: float
    queued_at: float
    """When the row last joined the queue: accepted, or sent again by an operator."""
    next_attempt_at: float
    updated_at: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class TargetStats:
    """What the gauges and the console show of one target's rows."""

    waiting: int = 0
    """Rows pending or in flight."""
    oldest_created_at: float | None = None
    dead: int = 0
    last_sent_at: float | None = None
    """When a notification was last delivered (within the week sent rows are kept)."""
    last_failure_at: float | None = None
    """When a delivery attempt last failed (retried or dead-lettered)."""
    last_error: str | None = None
    """Why it failed."""


@dataclass(frozen=True, slots=True)
class NewRow:
    """A notification to store, unless it repeats one stored within ``window`` seconds."""

    target: str
    payload: Payload
    now: float
    window: float


@dataclass(frozen=True, slots=True)
class Grant:
    """A destination lease held: ``fresh`` when just taken (from nobody, a process that let it
    go, or one whose lease expired), with the send times (wall clock) its last holder kept."""

    fresh: bool
    sends: tuple[float, ...] = ()


class OutboxStore(Protocol):
    """The outbox's queries on one backend. Each method is one transaction; a database that
    cannot be reached raises :class:`DatabaseUnavailable`."""

    async def add(self, rows: Sequence[NewRow]) -> list[tuple[int, bool]]: ...

    async def waiting(self, targets: Sequence[str], limit: int) -> list[Row]: ...

    async def payloads(self, ids: Sequence[int]) -> dict[int, Payload]: ...

    async def lease(
        self, destination: str, holder: str, now: float, seconds: float
    ) -> Grant | None: ...

    async def let_go(self, destination: str, holder: str) -> None: ...

    async def record_sends(self, destination: str, holder: str, sends: Sequence[float]) -> None: ...

    async def claim(self, ids: Sequence[int], holder: str, now: float) -> list[int]: ...

    async def requeue_claimed_by_others(
        self, targets: Sequence[str], holder: str, now: float
    ) -> int: ...

    async def mark_sent(self, ids: Sequence[int], now: float) -> None: ...

    async def mark_retry(
        self, ids: Sequence[int], now: float, next_attempt_at: float, error: str
    ) -> None: ...

    async def mark_dead(self, ids: Sequence[int], now: float, error: str) -> None: ...

    async def release(self, ids: Sequence[int], now: float) -> None: ...

    async def recover(self, now: float) -> int: ...

    async def prune(self, now: float, keep: float) -> int: ...

    async def stats(self, *, history: bool = False) -> dict[str, TargetStats]: ...

    async def list_rows(self, statuses: Sequence[str], target: str | None) -> list[Row]: ...

    async def retry_dead(
        self, ids: Sequence[int] | None, now: float
    ) -> tuple[list[int], dict[int, str]]: ...


def store_for(db: Database) -> OutboxStore:
    """The outbox store for ``db``'s backend; registers the outbox's migrations on it."""
    if db.kind == "postgresql":
        from bridge.outbox_postgres import PostgresOutboxStore

        return PostgresOutboxStore(db)
    from bridge.outbox_sqlite import SqliteOutboxStore

    return SqliteOutboxStore(db)


@dataclass(frozen=True, slots=True)
class _Add:
    """A notification waiting to be stored, and whoever waits for it to be."""

    row: NewRow
    stored: asyncio.Future[tuple[int, bool]]

    # The waiter may have been cancelled (its client gone, or shutdown): then nobody listens.
    def succeed(self, result: tuple[int, bool]) -> None:
        if not self.stored.done():
            self.stored.set_result(result)

    def fail(self, exc: BaseException) -> None:
        if not self.stored.done():
            self.stored.set_exception(exc)


class Outbox:
    """The outbox on whichever database the service uses."""

    def __init__(self, db: Database, store: OutboxStore | None = None) -> None:
        self.db = db
        self.store = store if store is not None else store_for(db)
        self._adds: list[_Add] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(
        self, target: str, payload: Payload, now: float, window: float = DEDUP_WINDOW_SECONDS
    ) -> tuple[int, bool]:
        """Store ``payload`` for ``target``; returns ``(id, True)``, or the earlier row's
        ``(id, False)`` when this is a retry of a notification stored within ``window``.

        Returns once the row is committed. Notifications that arrive while a commit is under way
        are stored together in the next one (group commit): one disk sync serves many of them,
        where one each capped an alert storm at the disk's syncs per second.
        """
        stored: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        self._adds.append(_Add(NewRow(target, payload, now, window), stored))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._store_adds(), name="sheepdog-outbox-add")
        return await stored

    async def _store_adds(self) -> None:
        batch: list[_Add] = []
        try:
            while self._adds:
                batch, self._adds = self._adds, []
                await self._store_batch(batch)
        except BaseException as exc:  # cancelled at shutdown: nobody may wait for ever
            stopped = DatabaseUnavailable(f"outbox writer stopped: {exc!r}")
            for add in [*batch, *self._adds]:
                add.fail(stopped)
            self._adds = []
            raise

    async def _store_batch(self, batch: list[_Add]) -> None:
        try:
            results = await self.store.add([add.row for add in batch])
        except DatabaseUnavailable as exc:
            for add in batch:
                add.fail(exc)
            return
        except Exception:
            # One notification that cannot be written must not fail the others with it.
            for add in batch:
                await self._store_one(add)
            return
        for add, result in zip(batch, results, strict=True):
            add.succeed(result)

    async def _store_one(self, add: _Add) -> None:
        try:
            [result] = await self.store.add([add.row])
        except Exception as exc:
            add.fail(exc)
        else:
            add.succeed(result)

    async def waiting(self, targets: Sequence[str], limit: int) -> list[Row]:
        """The first ``limit`` pending rows of ``targets``, oldest (lowest id) first: their
        metadata only, so a backlog costs no decoding."""
        return await self.store.waiting(list(targets), limit)

    async def payloads(self, ids: Sequence[int]) -> dict[int, Payload]:
        """The payloads of the rows ``ids`` (a batch about to be delivered), decoded."""
        return await self.store.payloads(list(ids))

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when another process stores a notification or queues one again."""
        self.db.watch(CHANNEL, callback)

    async def lease(
        self, destination: str, holder: str, now: float, seconds: float
    ) -> Grant | None:
        """Take or renew ``holder``'s lease on ``destination`` until ``now + seconds``; None
        while another process holds it. A destination's FIFO order and rate limit hold only if
        one process at a time delivers to it."""
        return await self.store.lease(destination, holder, now, seconds)

    async def let_go(self, destination: str, holder: str) -> None:
        """End ``holder``'s lease now (a clean stop), so another process takes over at once."""
        await self.store.let_go(destination, holder)

    async def record_sends(self, destination: str, holder: str, sends: Sequence[float]) -> None:
        """Keep the destination's recent send times (wall clock) with its lease."""
        await self.store.record_sends(destination, holder, list(sends))

    async def claim(self, ids: Sequence[int], holder: str, now: float) -> list[int]:
        """Mark the pending rows among ``ids`` in flight with ``holder``; returns those."""
        return await self.store.claim(list(ids), holder, now)

    async def requeue_claimed_by_others(
        self, targets: Sequence[str], holder: str, now: float
    ) -> int:
        """Rows of ``targets`` in flight with another process go back to the queue (that
        process lost the destination: it died, or its lease ran out)."""
        return await self.store.requeue_claimed_by_others(list(targets), holder, now)

    async def mark_sent(self, ids: Sequence[int], now: float) -> None:
        if ids:
            await self.store.mark_sent(list(ids), now)

    async def mark_retry(
        self, ids: Sequence[int], now: float, next_attempt_at: float, error: str
    ) -> None:
        """Record a failed attempt; the rows stay with their worker until ``next_attempt_at``."""
        if ids:
            await self.store.mark_retry(list(ids), now, next_attempt_at, error)

    async def mark_dead(self, ids: Sequence[int], now: float, error: str) -> None:
        if ids:
            await self.store.mark_dead(list(ids), now, error)

    async def release(self, ids: Sequence[int], now: float) -> None:
        """Give rows a worker held back to the queue (the worker is stopping)."""
        if ids:
            await self.store.release(list(ids), now)

    async def recover(self, now: float) -> int:
        """At start-up, alone on the outbox: rows left in flight by a crash go back to the
        queue, in order, and every destination lease is let go."""
        return await self.store.recover(now)

    async def prune(self, now: float, keep: float = KEEP_SENT_SECONDS) -> int:
        """Delete rows sent more than ``keep`` seconds ago; returns how many."""
        return await self.store.prune(now, keep)

    # The read side: the gauges, `sheepdog outbox` and the console -------------------------

    async def stats(self) -> dict[str, TargetStats]:
        """Per target: waiting and dead counts and the oldest waiting (for the gauges: rows
        still to deliver or dead only, however many were sent this week)."""
        return await self.store.stats()

    async def overview(self) -> dict[str, TargetStats]:
        """:meth:`stats` with when each target last delivered and last failed, and why (for
        the console: this reads the week of sent rows too)."""
        return await self.store.stats(history=True)

    async def list_rows(self, statuses: Iterable[str], target: str | None = None) -> list[Row]:
        """Rows in the given statuses (oldest first), without payloads."""
        wanted = [status for status in statuses if status in STATUSES]
        return await self.store.list_rows(wanted, target) if wanted else []

    async def dead_letters(self, target: str | None = None) -> list[Row]:
        """Notifications that could not be delivered, oldest first, with their reason."""
        return await self.list_rows(("dead",), target)

    async def retry_dead(
        self, ids: Sequence[int] | None, now: float
    ) -> tuple[list[int], dict[int, str]]:
        """Put dead letters back in the queue: the given ``ids``, or every one when None.

        Returns the ids queued again and, for each given id that was not, why.
        """
        return await self.store.retry_dead(None if ids is None else list(ids), now)
