"""The outbox's queries on PostgreSQL (:class:`~sheepdog.core.postgres.PostgresDatabase`).

Shared by every replica. An Alertmanager retry that reaches another replica is recognised
because storing takes a transaction-scoped advisory lock on each notification's dedupe key
(in one order, so two replicas never wait on each other in a circle) before looking for an
earlier copy. Claiming takes only rows still pending, skipping rows another transaction has
locked (``FOR UPDATE SKIP LOCKED``); a destination's lease row is read ``FOR UPDATE``, so two
processes never both take it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bridge.outbox import CHANNEL, Grant, NewRow, Row, TargetStats
from bridge.outbox_schema import MIGRATIONS
from bridge.payload import Payload, alert_names, dedup_key
from sheepdog.core.db import Database
from sheepdog.core.postgres import Connection, PostgresDatabase

__all__ = ["PostgresOutboxStore"]

_COLUMNS = (
    "id, target, status, alert_status, alert_names, alert_count, attempts, created_at, "
    "queued_at, next_attempt_at, updated_at, last_error"
)


class PostgresOutboxStore:
    def __init__(self, db: Database) -> None:
        assert isinstance(db, PostgresDatabase)
        self.db = db
        db.add_migrations("outbox", MIGRATIONS)

    async def add(self, rows: Sequence[NewRow]) -> list[tuple[int, bool]]:
        keyed = [(dedup_key(row.target, row.payload), row) for row in rows]
        # Encoded before the transaction: a payload that cannot be stored fails here, alone.
        encoded = [_encode(row) for _, row in keyed]

        async def work(conn: Connection) -> list[tuple[int, bool]]:
            await conn.execute(
                "SELECT pg_advisory_xact_lock(h) FROM "
                "(SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) AS k "
                "ORDER BY h) AS keys",
                sorted({key for key, _ in keyed}),
            )
            oldest = min(row.now - row.window for _, row in keyed)
            earlier: dict[tuple[str, str], list[tuple[int, float]]] = {}
            for found in await conn.fetch(
                "SELECT id, dedup_key, target, created_at FROM outbox_notifications "
                "WHERE dedup_key = ANY($1::text[]) AND created_at >= $2 ORDER BY id DESC",
                [key for key, _ in keyed],
                oldest,
            ):
                earlier.setdefault((found["dedup_key"], found["target"]), []).append(
                    (found["id"], found["created_at"])
                )
            # Each notification: a retry of an earlier row, of one earlier in this batch, or
            # new. The new ones go in with one statement, in order (ids follow arrival).
            first_new: dict[tuple[str, str], tuple[int, float]] = {}  # index, when stored
            fresh: list[int] = []
            repeats: dict[int, tuple[int, bool] | int] = {}
            for index, (key, row) in enumerate(keyed):
                since = row.now - row.window
                stored = earlier.get((key, row.target), [])
                match = next((row_id for row_id, created in stored if created >= since), None)
                in_batch = first_new.get((key, row.target))
                if match is not None:
                    repeats[index] = (match, False)
                elif in_batch is not None and in_batch[1] >= since:
                    repeats[index] = in_batch[0]
                else:
                    first_new[key, row.target] = (index, row.now)
                    fresh.append(index)
            ids: dict[tuple[str, str], int] = {}
            if fresh:
                inserted = await conn.fetch(
                    "INSERT INTO outbox_notifications (target, dedup_key, status, alert_status, "
                    "alert_names, alert_count, payload, created_at, queued_at, next_attempt_at, "
                    "updated_at) SELECT target, dedup_key, 'pending', alert_status, alert_names, "
                    "alert_count, payload, at, at, at, at FROM unnest($1::text[], $2::text[], "
                    "$3::text[], $4::text[], $5::int[], $6::text[], $7::float8[]) WITH "
                    "ORDINALITY AS u(target, dedup_key, alert_status, alert_names, alert_count, "
                    "payload, at, ord) ORDER BY ord RETURNING id, dedup_key, target",
                    [keyed[i][1].target for i in fresh],
                    [keyed[i][0] for i in fresh],
                    [keyed[i][1].payload["status"] for i in fresh],
                    [encoded[i][0] for i in fresh],
                    [len(keyed[i][1].payload["alerts"]) for i in fresh],
                    [encoded[i][1] for i in fresh],
                    [keyed[i][1].now for i in fresh],
                )
                ids = {(found["dedup_key"], found["target"]): found["id"] for found in inserted}
            results: list[tuple[int, bool]] = []
            for index, (key, row) in enumerate(keyed):
                repeat = repeats.get(index)
                if repeat is None:
                    results.append((ids[key, row.target], True))
                elif isinstance(repeat, tuple):
                    results.append(repeat)
                else:
                    results.append((ids[keyed[repeat][0], keyed[repeat][1].target], False))
            if any(new for _, new in results):
                await conn.execute("SELECT pg_notify($1, '')", CHANNEL)  # sent at the commit
            return results

        return await self.db.run(work)

    async def waiting(self, targets: Sequence[str], limit: int) -> list[Row]:
        if not targets:
            return []

        async def work(conn: Connection) -> list[Row]:
            found = await conn.fetch(
                f"SELECT {_COLUMNS} FROM outbox_notifications "  # noqa: S608 - fixed columns
                "WHERE target = ANY($1::text[]) AND status = 'pending' ORDER BY id LIMIT $2",
                list(targets),
                limit,
            )
            return [_row(values) for values in found]

        return await self.db.run(work, readonly=True)

    async def payloads(self, ids: Sequence[int]) -> dict[int, Payload]:
        async def work(conn: Connection) -> dict[int, Payload]:
            found = await conn.fetch(
                "SELECT id, payload FROM outbox_notifications WHERE id = ANY($1::bigint[])",
                list(ids),
            )
            return {row["id"]: json.loads(row["payload"]) for row in found}

        return await self.db.run(work, readonly=True)

    async def lease(
        self, destination: str, holder: str, now: float, seconds: float
    ) -> Grant | None:
        async def work(conn: Connection) -> Grant | None:
            found = await conn.fetchrow(
                "SELECT holder, expires_at, sends FROM outbox_leases WHERE destination = $1 "
                "FOR UPDATE",
                destination,
            )
            if found is None:
                taken = await conn.fetchval(
                    "INSERT INTO outbox_leases (destination, holder, expires_at) "
                    "VALUES ($1, $2, $3) ON CONFLICT (destination) DO NOTHING RETURNING 1",
                    destination,
                    holder,
                    now + seconds,
                )
                return Grant(fresh=True) if taken else None  # None: another took it just now
            if found["holder"] != holder and found["expires_at"] > now:
                return None
            await conn.execute(
                "UPDATE outbox_leases SET holder = $2, expires_at = $3 WHERE destination = $1",
                destination,
                holder,
                now + seconds,
            )
            if found["holder"] == holder:
                return Grant(fresh=False)
            return Grant(fresh=True, sends=tuple(json.loads(found["sends"])))

        return await self.db.run(work)

    async def let_go(self, destination: str, holder: str) -> None:
        await self._execute(
            "UPDATE outbox_leases SET expires_at = 0 WHERE destination = $1 AND holder = $2",
            destination,
            holder,
        )

    async def record_sends(self, destination: str, holder: str, sends: Sequence[float]) -> None:
        await self._execute(
            "UPDATE outbox_leases SET sends = $3 WHERE destination = $1 AND holder = $2",
            destination,
            holder,
            json.dumps(list(sends)),
        )

    async def claim(self, ids: Sequence[int], holder: str, now: float) -> list[int]:
        async def work(conn: Connection) -> list[int]:
            found = await conn.fetch(
                "UPDATE outbox_notifications SET status = 'in_flight', claimed_by = $2, "
                "updated_at = $3 WHERE id IN (SELECT id FROM outbox_notifications "
                "WHERE id = ANY($1::bigint[]) AND status = 'pending' FOR UPDATE SKIP LOCKED) "
                "RETURNING id",
                list(ids),
                holder,
                now,
            )
            claimed = {row["id"] for row in found}
            return [row_id for row_id in ids if row_id in claimed]

        return await self.db.run(work)

    async def requeue_claimed_by_others(
        self, targets: Sequence[str], holder: str, now: float
    ) -> int:
        if not targets:
            return 0
        return await self._count(
            "UPDATE outbox_notifications SET status = 'pending', claimed_by = NULL, "
            "updated_at = $3 WHERE status = 'in_flight' AND target = ANY($1::text[]) "
            "AND claimed_by IS DISTINCT FROM $2",
            list(targets),
            holder,
            now,
        )

    async def mark_sent(self, ids: Sequence[int], now: float) -> None:
        await self._execute(
            "UPDATE outbox_notifications SET status = 'sent', attempts = attempts + 1, "
            "claimed_by = NULL, updated_at = $2 WHERE id = ANY($1::bigint[])",
            list(ids),
            now,
        )

    async def mark_retry(
        self, ids: Sequence[int], now: float, next_attempt_at: float, error: str
    ) -> None:
        await self._execute(
            "UPDATE outbox_notifications SET attempts = attempts + 1, next_attempt_at = $3, "
            "last_error = $4, last_failure_at = $2, updated_at = $2 WHERE id = ANY($1::bigint[])",
            list(ids),
            now,
            next_attempt_at,
            _text(error),
        )

    async def mark_dead(self, ids: Sequence[int], now: float, error: str) -> None:
        await self._execute(
            "UPDATE outbox_notifications SET status = 'dead', attempts = attempts + 1, "
            "claimed_by = NULL, last_error = $3, last_failure_at = $2, updated_at = $2 "
            "WHERE id = ANY($1::bigint[])",
            list(ids),
            now,
            _text(error),
        )

    async def release(self, ids: Sequence[int], now: float) -> None:
        await self._execute(
            "UPDATE outbox_notifications SET status = 'pending', claimed_by = NULL, "
            "updated_at = $2 WHERE id = ANY($1::bigint[]) AND status = 'in_flight'",
            list(ids),
            now,
        )

    async def recover(self, now: float) -> int:
        # Other replicas may hold rows right now: only rows whose holder holds no live lease
        # are taken back (a process that died with nothing else claimed, for instance).
        return await self._count(
            "UPDATE outbox_notifications SET status = 'pending', claimed_by = NULL, "
            "updated_at = $1 WHERE status = 'in_flight' AND (claimed_by IS NULL OR claimed_by "
            "NOT IN (SELECT holder FROM outbox_leases WHERE expires_at > $1))",
            now,
        )

    async def prune(self, now: float, keep: float) -> int:
        return await self._count(
            "DELETE FROM outbox_notifications WHERE status = 'sent' AND updated_at < $1",
            now - keep,
        )

    async def stats(self, *, history: bool = False) -> dict[str, TargetStats]:
        # Without the history only the rows still to deliver and the dead are read.
        where = "" if history else "WHERE status IN ('pending', 'in_flight', 'dead') "

        async def work(conn: Connection) -> dict[str, TargetStats]:
            found = await conn.fetch(
                "SELECT target, "  # noqa: S608 - fixed fragments
                "COUNT(*) FILTER (WHERE status IN ('pending', 'in_flight')) AS waiting, "
                "MIN(created_at) FILTER (WHERE status IN ('pending', 'in_flight')) AS oldest, "
                "COUNT(*) FILTER (WHERE status = 'dead') AS dead, "
                "MAX(updated_at) FILTER (WHERE status = 'sent') AS sent_at, "
                "MAX(last_failure_at) AS failed_at, "
                "(array_agg(last_error ORDER BY last_failure_at DESC NULLS LAST))[1] AS error "
                f"FROM outbox_notifications {where}GROUP BY target"
            )
            return {
                row["target"]: TargetStats(
                    row["waiting"],
                    row["oldest"],
                    row["dead"],
                    row["sent_at"] if history else None,
                    row["failed_at"] if history else None,
                    row["error"] if history and row["failed_at"] is not None else None,
                )
                for row in found
            }

        return await self.db.run(work, readonly=True)

    async def list_rows(self, statuses: Sequence[str], target: str | None) -> list[Row]:
        async def work(conn: Connection) -> list[Row]:
            found = await conn.fetch(
                f"SELECT {_COLUMNS} FROM outbox_notifications "  # noqa: S608 - fixed columns
                "WHERE status = ANY($1::text[]) AND ($2::text IS NULL OR target = $2) "
                "ORDER BY id",
                list(statuses),
                target,
            )
            return [_row(values) for values in found]

        return await self.db.run(work, readonly=True)

    async def retry_dead(
        self, ids: Sequence[int] | None, now: float
    ) -> tuple[list[int], dict[int, str]]:
        async def work(conn: Connection) -> tuple[list[int], dict[int, str]]:
            if ids is None:
                found = await conn.fetch(
                    "SELECT id, status FROM outbox_notifications WHERE status = 'dead' "
                    "ORDER BY id FOR UPDATE"
                )
                wanted = [row["id"] for row in found]
            else:
                found = await conn.fetch(
                    "SELECT id, status FROM outbox_notifications WHERE id = ANY($1::bigint[]) "
                    "FOR UPDATE",
                    list(ids),
                )
                wanted = list(ids)
            statuses = {row["id"]: row["status"] for row in found}
            queued: list[int] = []
            refused: dict[int, str] = {}
            for row_id in wanted:
                status = statuses.get(row_id)
                if status is None:
                    refused[row_id] = "no such notification"
                elif status != "dead":
                    refused[row_id] = f"is {status}, not dead"
                else:
                    queued.append(row_id)
            await conn.execute(
                "UPDATE outbox_notifications SET status = 'pending', attempts = 0, "
                "queued_at = $2, next_attempt_at = $2, updated_at = $2 "
                "WHERE id = ANY($1::bigint[])",
                queued,
                now,
            )
            if queued:
                await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
            return queued, refused

        return await self.db.run(work)

    async def _execute(self, statement: str, *args: Any) -> None:
        async def work(conn: Connection) -> None:
            await conn.execute(statement, *args)

        await self.db.run(work)

    async def _count(self, statement: str, *args: Any) -> int:
        async def work(conn: Connection) -> int:
            status = await conn.execute(statement, *args)
            return int(status.rsplit(" ", 1)[-1])  # "UPDATE 3", "DELETE 0"

        return await self.db.run(work)


def _text(error: str) -> str:
    # A peer's answer quoted in an error may hold NUL, which a PostgreSQL text cannot.
    return error.replace("\x00", "\\0")


def _encode(row: NewRow) -> tuple[str, str]:
    return (
        json.dumps(alert_names(row.payload), ensure_ascii=False),
        json.dumps(row.payload, ensure_ascii=False, separators=(",", ":")),
    )


def _row(values: Any) -> Row:
    return Row(
        id=values["id"],
        target=values["target"],
        status=values["status"],
        alert_status=values["alert_status"],
        alert_names=tuple(json.loads(values["alert_names"])),
        alert_count=values["alert_count"],
        attempts=values["attempts"],
        created_at=values["created_at"],
        queued_at=values["queued_at"],
        next_attempt_at=values["next_attempt_at"],
        updated_at=values["updated_at"],
        last_error=values["last_error"],
    )
