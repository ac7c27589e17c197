"""The outbox: every accepted notification, in SQLite, until it is sent or dead-lettered.

A row is ``pending`` when accepted, ``in_flight`` while a worker holds it (sending, or waiting
to retry), then ``sent`` or ``dead``. Rows are never deleted before they are sent: dead letters
stay until an operator sends them again (``sheepdog outbox retry``); sent rows are pruned after
a week. A crash leaves rows ``in_flight``; :meth:`Outbox.recover` puts them back in the queue.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bridge.payload import Payload, alert_names, dedup_key
from sheepdog.core.db import Database, DatabaseUnavailable

__all__ = [
    "STATUSES",
    "Outbox",
    "Row",
    "TargetStats",
]

STATUSES: Final = ("pending", "in_flight", "sent", "dead")
KEEP_SENT_SECONDS: Final = 7 * 24 * 3600.0
DEDUP_WINDOW_SECONDS: Final = 15 * 60.0
"""How long an identical notification counts as Alertmanager retrying, not repeating.

Alertmanager retries a notification until its group interval ends (5 min by default); a repeat
of an unchanged group comes only after ``repeat_interval`` (4 h by default).
"""

_COLUMNS: Final = (
    "id, target, status, alert_status, alert_names, alert_count, attempts, created_at, "
    "queued_at, next_attempt_at, updated_at, last_error"
)


def _schema(conn: sqlite3.Connection) -> None:
    conn.executescript(
        """
        CREATE TABLE IF NOT EXISTS outbox_notifications (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            target TEXT NOT NULL,
            dedup_key TEXT NOT NULL,
            status TEXT NOT NULL
                CHECK (status IN ('pending', 'in_flight', 'sent', 'dead')),
            alert_status TEXT NOT NULL,
            alert_names TEXT NOT NULL,
            alert_count INTEGER NOT NULL,
            payload TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            queued_at REAL NOT NULL,
            next_attempt_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_error TEXT
        );
        CREATE INDEX IF NOT EXISTS outbox_notifications_queue
            ON outbox_notifications (target, status, id);
        CREATE INDEX IF NOT EXISTS outbox_notifications_dedup
            ON outbox_notifications (dedup_key, created_at);
        CREATE INDEX IF NOT EXISTS outbox_notifications_status
            ON outbox_notifications (status, updated_at);
        """
    )


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
    waiting: int = 0
    """Rows pending or in flight."""
    oldest_created_at: float | None = None
    dead: int = 0


@dataclass(frozen=True, slots=True)
class _Add:
    """A notification waiting to be stored, and whoever waits for it to be."""

    target: str
    payload: Payload
    now: float
    window: float
    stored: asyncio.Future[tuple[int, bool]]

    # The waiter may have been cancelled (its client gone, or shutdown): then nobody listens.
    def succeed(self, result: tuple[int, bool]) -> None:
        if not self.stored.done():
            self.stored.set_result(result)

    def fail(self, exc: BaseException) -> None:
        if not self.stored.done():
            self.stored.set_exception(exc)


class Outbox:
    """Async access to the outbox table through the shared :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.add_schema(_schema)
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
        self._adds.append(_Add(target, payload, now, window, stored))
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
        def work(conn: sqlite3.Connection) -> list[tuple[int, bool]]:
            return [add_row(conn, a.target, a.payload, a.now, a.window) for a in batch]

        try:
            results = await self.db.run(work)
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
            result = await self.db.run(
                lambda conn: add_row(conn, add.target, add.payload, add.now, add.window)
            )
        except Exception as exc:
            add.fail(exc)
        else:
            add.succeed(result)

    async def waiting(self, targets: Sequence[str], limit: int) -> list[Row]:
        """The first ``limit`` pending rows of ``targets``, oldest (lowest id) first: their
        metadata only, so a backlog costs no decoding."""
        names = list(targets)
        return await self.db.run(lambda conn: _waiting(conn, names, limit))

    async def payloads(self, ids: Sequence[int]) -> dict[int, Payload]:
        """The payloads of the rows ``ids`` (a batch about to be delivered), decoded."""
        wanted = list(ids)
        return await self.db.run(lambda conn: _payloads(conn, wanted))

    async def lease(self, destination: str, holder: str, now: float, seconds: float) -> bool:
        """Whether ``holder`` may deliver to ``destination`` for the next ``seconds``.

        A destination's FIFO order and rate limit hold only if one process at a time delivers
        to it. A SQLite file has one process, so the answer is always yes; a shared backend
        grants a lease that expires (a process that died loses it) and answers no to others.
        """
        return True

    async def claim(self, ids: Sequence[int], now: float) -> None:
        await self._update(ids, "status = 'in_flight', updated_at = ?", (now,))

    async def mark_sent(self, ids: Sequence[int], now: float) -> None:
        await self._update(ids, "status = 'sent', attempts = attempts + 1, updated_at = ?", (now,))

    async def mark_retry(
        self, ids: Sequence[int], now: float, next_attempt_at: float, error: str
    ) -> None:
        """Record a failed attempt; the rows stay with their worker until ``next_attempt_at``."""
        await self._update(
            ids,
            "attempts = attempts + 1, next_attempt_at = ?, last_error = ?, updated_at = ?",
            (next_attempt_at, error, now),
        )

    async def mark_dead(self, ids: Sequence[int], now: float, error: str) -> None:
        await self._update(
            ids,
            "status = 'dead', attempts = attempts + 1, last_error = ?, updated_at = ?",
            (error, now),
        )

    async def release(self, ids: Sequence[int], now: float) -> None:
        """Give rows a worker held back to the queue (the worker is stopping)."""
        await self._update(
            ids, "status = 'pending', updated_at = ?", (now,), only_status="in_flight"
        )

    async def recover(self, now: float) -> int:
        """At start-up: rows left in flight by a crash go back to the queue, in order."""

        def work(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE outbox_notifications SET status = 'pending', updated_at = ? "
                "WHERE status = 'in_flight'",
                (now,),
            )
            return cursor.rowcount

        return await self.db.run(work)

    async def prune(self, now: float, keep: float = KEEP_SENT_SECONDS) -> int:
        """Delete rows sent more than ``keep`` seconds ago; returns how many."""

        def work(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM outbox_notifications WHERE status = 'sent' AND updated_at < ?",
                (now - keep,),
            )
            return cursor.rowcount

        return await self.db.run(work)

    async def stats(self) -> dict[str, TargetStats]:
        return await self.db.run(target_stats)

    async def _update(
        self,
        ids: Sequence[int],
        assignments: str,
        values: tuple[Any, ...],
        *,
        only_status: str | None = None,
    ) -> None:
        if not ids:
            return
        id_list = list(ids)

        def work(conn: sqlite3.Connection) -> None:
            condition = " AND status = ?" if only_status else ""
            extra: tuple[Any, ...] = (only_status,) if only_status else ()
            conn.executemany(
                f"UPDATE outbox_notifications SET {assignments} WHERE id = ?{condition}",  # noqa: S608 - fixed fragments only
                [(*values, row_id, *extra) for row_id in id_list],
            )

        await self.db.run(work)


# Synchronous functions on a connection: used by the async methods above and by the CLI.


def add_row(
    conn: sqlite3.Connection, target: str, payload: Payload, now: float, window: float
) -> tuple[int, bool]:
    key = dedup_key(target, payload)
    earlier = conn.execute(
        "SELECT id FROM outbox_notifications WHERE dedup_key = ? AND target = ? "
        "AND created_at >= ? ORDER BY id DESC LIMIT 1",
        (key, target, now - window),
    ).fetchone()
    if earlier is not None:
        return int(earlier[0]), False
    cursor = conn.execute(
        "INSERT INTO outbox_notifications (target, dedup_key, status, alert_status, "
        "alert_names, alert_count, payload, created_at, queued_at, next_attempt_at, updated_at) "
        "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            target,
            key,
            payload["status"],
            json.dumps(alert_names(payload), ensure_ascii=False),
            len(payload["alerts"]),
            json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
            now,
            now,
            now,
            now,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid, True


def _waiting(conn: sqlite3.Connection, targets: list[str], limit: int) -> list[Row]:
    if not targets:
        return []
    marks = ", ".join("?" for _ in targets)
    cursor = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox_notifications "  # noqa: S608 - fixed columns, marks
        f"WHERE target IN ({marks}) AND status = 'pending' ORDER BY id LIMIT ?",
        (*targets, limit),
    )
    return [_row(values) for values in cursor.fetchall()]


def _payloads(conn: sqlite3.Connection, ids: list[int]) -> dict[int, Payload]:
    payloads: dict[int, Payload] = {}
    for start in range(0, len(ids), 500):  # within SQLite's limit on parameters
        chunk = ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        for row_id, payload in conn.execute(
            f"SELECT id, payload FROM outbox_notifications WHERE id IN ({marks})",  # noqa: S608
            chunk,
        ):
            payloads[row_id] = json.loads(payload)
    return payloads


def list_rows(
    conn: sqlite3.Connection, statuses: Iterable[str], target: str | None = None
) -> list[Row]:
    """Rows in the given statuses (oldest first), without payloads: for ``sheepdog outbox``."""
    wanted = [status for status in statuses if status in STATUSES]
    marks = ", ".join("?" for _ in wanted)
    query = f"SELECT {_COLUMNS} FROM outbox_notifications WHERE status IN ({marks})"  # noqa: S608
    values: list[Any] = list(wanted)
    if target is not None:
        query += " AND target = ?"
        values.append(target)
    cursor = conn.execute(query + " ORDER BY id", values)
    return [_row(row) for row in cursor.fetchall()]


def retry_dead(
    conn: sqlite3.Connection, ids: Sequence[int] | None, now: float
) -> tuple[list[int], dict[int, str]]:
    """Put dead letters back in the queue: the given ``ids``, or every one when None.

    Returns the ids queued again and, for each given id that was not, why.
    """
    if ids is None:
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM outbox_notifications WHERE status = 'dead' ORDER BY id"
            )
        ]
    queued: list[int] = []
    refused: dict[int, str] = {}
    for row_id in ids:
        found = conn.execute(
            "SELECT status FROM outbox_notifications WHERE id = ?", (row_id,)
        ).fetchone()
        if found is None:
            refused[row_id] = "no such notification"
            continue
        if found[0] != "dead":
            refused[row_id] = f"is {found[0]}, not dead"
            continue
        conn.execute(
            "UPDATE outbox_notifications SET status = 'pending', attempts = 0, queued_at = ?, "
            "next_attempt_at = ?, updated_at = ? WHERE id = ?",
            (now, now, now, row_id),
        )
        queued.append(row_id)
    return queued, refused


def target_stats(conn: sqlite3.Connection) -> dict[str, TargetStats]:
    stats: dict[str, TargetStats] = {}
    for target, waiting, oldest, dead in conn.execute(
        "SELECT target, "
        "SUM(status IN ('pending', 'in_flight')), "
        "MIN(CASE WHEN status IN ('pending', 'in_flight') THEN created_at END), "
        "SUM(status = 'dead') "
        "FROM outbox_notifications WHERE status IN ('pending', 'in_flight', 'dead') "
        "GROUP BY target"
    ):
        stats[target] = TargetStats(int(waiting or 0), oldest, int(dead or 0))
    return stats


def _row(values: Sequence[Any]) -> Row:
    return Row(
        id=values[0],
        target=values[1],
        status=values[2],
        alert_status=values[3],
        alert_names=tuple(json.loads(values[4])),
        alert_count=values[5],
        attempts=values[6],
        created_at=values[7],
        queued_at=values[8],
        next_attempt_at=values[9],
        updated_at=values[10],
        last_error=values[11],
    )
