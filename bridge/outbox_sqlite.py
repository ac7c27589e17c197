"""The outbox's queries on SQLite (:class:`~sheepdog.core.sqlite.SqliteDatabase`).

Every method is one transaction begun ``IMMEDIATE``: what it reads (an earlier copy of a
notification, a lease's holder) is still true when it writes, whichever process of this host
writes next.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from bridge.outbox import Grant, NewRow, Row, TargetStats
from bridge.outbox_schema import MIGRATIONS
from bridge.payload import Payload, alert_names, dedup_key
from sheepdog.core.db import Database
from sheepdog.core.sqlite import SqliteDatabase

__all__ = ["SqliteOutboxStore"]

COLUMNS: Final = (
    "id, target, status, alert_status, alert_names, alert_count, attempts, created_at, "
    "queued_at, next_attempt_at, updated_at, last_error"
)
_CHUNK: Final = 500  # ids per statement, within SQLite's limit on parameters


class SqliteOutboxStore:
    def __init__(self, db: Database) -> None:
        assert isinstance(db, SqliteDatabase)
        self.db = db
        db.add_migrations("outbox", MIGRATIONS)

    async def add(self, rows: Sequence[NewRow]) -> list[tuple[int, bool]]:
        return await self.db.run(lambda conn: [_add_row(conn, row) for row in rows])

    async def waiting(self, targets: Sequence[str], limit: int) -> list[Row]:
        if not targets:
            return []
        marks = ", ".join("?" for _ in targets)

        def work(conn: sqlite3.Connection) -> list[Row]:
            cursor = conn.execute(
                f"SELECT {COLUMNS} FROM outbox_notifications "  # noqa: S608 - fixed columns, marks
                f"WHERE target IN ({marks}) AND status = 'pending' ORDER BY id LIMIT ?",
                (*targets, limit),
            )
            return [row_of(values) for values in cursor.fetchall()]

        return await self.db.run(work, readonly=True)

    async def payloads(self, ids: Sequence[int]) -> dict[int, Payload]:
        def work(conn: sqlite3.Connection) -> dict[int, Payload]:
            payloads: dict[int, Payload] = {}
            for chunk in _chunks(ids):
                marks = ", ".join("?" for _ in chunk)
                for row_id, payload in conn.execute(
                    f"SELECT id, payload FROM outbox_notifications WHERE id IN ({marks})",  # noqa: S608
                    chunk,
                ):
                    payloads[row_id] = json.loads(payload)
            return payloads

        return await self.db.run(work, readonly=True)

    async def lease(
        self, destination: str, holder: str, now: float, seconds: float
    ) -> Grant | None:
        def work(conn: sqlite3.Connection) -> Grant | None:
            found = conn.execute(
                "SELECT holder, expires_at, sends FROM outbox_leases WHERE destination = ?",
                (destination,),
            ).fetchone()
            if found is not None and found[0] != holder and found[1] > now:
                return None
            conn.execute(
                "INSERT INTO outbox_leases (destination, holder, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (destination) DO UPDATE SET "
                "holder = excluded.holder, expires_at = excluded.expires_at",
                (destination, holder, now + seconds),
            )
            if found is not None and found[0] == holder:
                return Grant(fresh=False)
            return Grant(fresh=True, sends=tuple(json.loads(found[2])) if found else ())

        return await self.db.run(work)

    async def let_go(self, destination: str, holder: str) -> None:
        await self.db.run(
            lambda conn: conn.execute(
                "UPDATE outbox_leases SET expires_at = 0 WHERE destination = ? AND holder = ?",
                (destination, holder),
            )
        )

    async def record_sends(self, destination: str, holder: str, sends: Sequence[float]) -> None:
        text = json.dumps(list(sends))
        await self.db.run(
            lambda conn: conn.execute(
                "UPDATE outbox_leases SET sends = ? WHERE destination = ? AND holder = ?",
                (text, destination, holder),
            )
        )

    async def claim(self, ids: Sequence[int], holder: str, now: float) -> list[int]:
        def work(conn: sqlite3.Connection) -> list[int]:
            claimed = []
            for row_id in ids:
                cursor = conn.execute(
                    "UPDATE outbox_notifications SET status = 'in_flight', claimed_by = ?, "
                    "updated_at = ? WHERE id = ? AND status = 'pending'",
                    (holder, now, row_id),
                )
                if cursor.rowcount:
                    claimed.append(row_id)
            return claimed

        return await self.db.run(work)

    async def requeue_claimed_by_others(
        self, targets: Sequence[str], holder: str, now: float
    ) -> int:
        if not targets:
            return 0
        marks = ", ".join("?" for _ in targets)

        def work(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE outbox_notifications SET status = 'pending', claimed_by = NULL, "  # noqa: S608
                f"updated_at = ? WHERE status = 'in_flight' AND target IN ({marks}) "
                "AND (claimed_by IS NULL OR claimed_by != ?)",
                (now, *targets, holder),
            )
            return cursor.rowcount

        return await self.db.run(work)

    async def mark_sent(self, ids: Sequence[int], now: float) -> None:
        await self._update(
            ids, "status = 'sent', attempts = attempts + 1, claimed_by = NULL, updated_at = ?", now
        )

    async def mark_retry(
        self, ids: Sequence[int], now: float, next_attempt_at: float, error: str
    ) -> None:
        await self._update(
            ids,
            "attempts = attempts + 1, next_attempt_at = ?, last_error = ?, last_failure_at = ?, "
            "updated_at = ?",
            next_attempt_at,
            error,
            now,
            now,
        )

    async def mark_dead(self, ids: Sequence[int], now: float, error: str) -> None:
        await self._update(
            ids,
            "status = 'dead', attempts = attempts + 1, claimed_by = NULL, last_error = ?, "
            "last_failure_at = ?, updated_at = ?",
            error,
            now,
            now,
        )

    async def release(self, ids: Sequence[int], now: float) -> None:
        await self._update(
            ids,
            "status = 'pending', claimed_by = NULL, updated_at = ?",
            now,
            only_status="in_flight",
        )

    async def recover(self, now: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE outbox_notifications SET status = 'pending', claimed_by = NULL, "
                "updated_at = ? WHERE status = 'in_flight'",
                (now,),
            )
            # Every lease let go, its send times kept: the rate limit holds across the restart.
            conn.execute("UPDATE outbox_leases SET expires_at = 0")
            return cursor.rowcount

        return await self.db.run(work)

    async def prune(self, now: float, keep: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM outbox_notifications WHERE status = 'sent' AND updated_at < ?",
                (now - keep,),
            )
            return cursor.rowcount

        return await self.db.run(work)

    async def stats(self, *, history: bool = False) -> dict[str, TargetStats]:
        # Without the history only the rows still to deliver and the dead are read (an index
        # on status), not the week of sent ones.
        where = "" if history else "WHERE status IN ('pending', 'in_flight', 'dead') "

        def work(conn: sqlite3.Connection) -> dict[str, TargetStats]:
            stats: dict[str, TargetStats] = {}
            for target, waiting, oldest, dead, sent_at, failed_at in conn.execute(
                "SELECT target, "  # noqa: S608 - fixed fragments
                "COUNT(*) FILTER (WHERE status IN ('pending', 'in_flight')), "
                "MIN(created_at) FILTER (WHERE status IN ('pending', 'in_flight')), "
                "COUNT(*) FILTER (WHERE status = 'dead'), "
                "MAX(updated_at) FILTER (WHERE status = 'sent'), "
                f"MAX(last_failure_at) FROM outbox_notifications {where}GROUP BY target"
            ):
                error = None
                if history and failed_at is not None:
                    found = conn.execute(
                        "SELECT last_error FROM outbox_notifications "
                        "WHERE target = ? AND last_failure_at = ? LIMIT 1",
                        (target, failed_at),
                    ).fetchone()
                    error = found[0] if found else None
                stats[target] = (
                    TargetStats(
                        int(waiting or 0), oldest, int(dead or 0), sent_at, failed_at, error
                    )
                    if history
                    else TargetStats(int(waiting or 0), oldest, int(dead or 0))
                )
            return stats

        return await self.db.run(work, readonly=True)

    async def list_rows(self, statuses: Sequence[str], target: str | None) -> list[Row]:
        marks = ", ".join("?" for _ in statuses)
        query = f"SELECT {COLUMNS} FROM outbox_notifications WHERE status IN ({marks})"  # noqa: S608
        values: list[Any] = list(statuses)
        if target is not None:
            query += " AND target = ?"
            values.append(target)

        def work(conn: sqlite3.Connection) -> list[Row]:
            return [row_of(row) for row in conn.execute(query + " ORDER BY id", values)]

        return await self.db.run(work, readonly=True)

    async def retry_dead(
        self, ids: Sequence[int] | None, now: float
    ) -> tuple[list[int], dict[int, str]]:
        def work(conn: sqlite3.Connection) -> tuple[list[int], dict[int, str]]:
            wanted = ids
            if wanted is None:
                wanted = [
                    row[0]
                    for row in conn.execute(
                        "SELECT id FROM outbox_notifications WHERE status = 'dead' ORDER BY id"
                    )
                ]
            queued: list[int] = []
            refused: dict[int, str] = {}
            for row_id in wanted:
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
                    "UPDATE outbox_notifications SET status = 'pending', attempts = 0, "
                    "queued_at = ?, next_attempt_at = ?, updated_at = ? WHERE id = ?",
                    (now, now, now, row_id),
                )
                queued.append(row_id)
            return queued, refused

        return await self.db.run(work)

    async def _update(
        self,
        ids: Sequence[int],
        assignments: str,
        *values: Any,
        only_status: str | None = None,
    ) -> None:
        condition = " AND status = ?" if only_status else ""
        extra: tuple[Any, ...] = (only_status,) if only_status else ()
        statement = f"UPDATE outbox_notifications SET {assignments} WHERE id = ?{condition}"  # noqa: S608 - fixed fragments only

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(statement, [(*values, row_id, *extra) for row_id in ids])

        await self.db.run(work)


def _add_row(conn: sqlite3.Connection, row: NewRow) -> tuple[int, bool]:
    key = dedup_key(row.target, row.payload)
    earlier = conn.execute(
        "SELECT id FROM outbox_notifications WHERE dedup_key = ? AND target = ? "
        "AND created_at >= ? ORDER BY id DESC LIMIT 1",
        (key, row.target, row.now - row.window),
    ).fetchone()
    if earlier is not None:
        return int(earlier[0]), False
    payload = row.payload
    cursor = conn.execute(
        "INSERT INTO outbox_notifications (target, dedup_key, status, alert_status, "
        "alert_names, alert_count, payload, created_at, queued_at, next_attempt_at, updated_at) "
        "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.target,
            key,
            payload["status"],
            json.dumps(alert_names(payload), ensure_ascii=False),
            len(payload["alerts"]),
            json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
            row.now,
            row.now,
            row.now,
            row.now,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid, True


def _chunks(ids: Sequence[int]) -> list[list[int]]:
    return [list(ids[start : start + _CHUNK]) for start in range(0, len(ids), _CHUNK)]


def row_of(values: Sequence[Any]) -> Row:
    """A :class:`Row` from the values of :data:`COLUMNS`, in order."""
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
