"""What sheepdog stored, read back by a test from whichever backend the service used."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg

__all__ = ["StoredState"]

_MARK = re.compile(r"\?")


class StoredState:
    """Queries (written with ``?`` marks) on the SQLite file in ``state_dir``, or on the
    PostgreSQL database at ``url``; each row as a dict. For polling from a test's own loop,
    PostgreSQL is read on a thread and loop of its own."""

    def __init__(self, state_dir: Path, url: str | None) -> None:
        self.state_dir = state_dir
        self.url = url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: Any = None

    @property
    def kind(self) -> str:
        return "postgresql" if self.url else "sqlite"

    def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if self.url is None:
            path = self.state_dir / "sheepdog.db"
            if not path.exists():
                return []
            with closing(sqlite3.connect(path)) as conn:
                conn.row_factory = sqlite3.Row
                try:
                    return [dict(row) for row in conn.execute(sql, args)]
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):
                        return []
                    raise
        numbered = iter(range(1, 1000))
        statement = _MARK.sub(lambda _: f"${next(numbered)}", sql)
        return asyncio.run_coroutine_threadsafe(
            self._fetch(statement, args), self._running()
        ).result(30)

    def statuses(self, target: str | None = None) -> list[str]:
        """The outbox's row statuses in id order (of one target, if given)."""
        if target is None:
            rows = self.query("SELECT status FROM outbox_notifications ORDER BY id")
        else:
            rows = self.query(
                "SELECT status FROM outbox_notifications WHERE target = ? ORDER BY id", target
            )
        return [row["status"] for row in rows]

    def outbox(self, target: str | None = None) -> list[dict[str, Any]]:
        """Every outbox row, in id order (of one target, if given)."""
        if target is None:
            return self.query("SELECT * FROM outbox_notifications ORDER BY id")
        return self.query("SELECT * FROM outbox_notifications WHERE target = ? ORDER BY id", target)

    def ledger(self, month: str) -> list[tuple[Any, ...]]:
        """The ledger rows of ``month`` as (month, client, model, requests, input, output, usd)."""
        rows = self.query(
            "SELECT month, client, model, requests, input_tokens, output_tokens, usd "
            "FROM ledger_usage WHERE month = ? ORDER BY client, model",
            month,
        )
        return [tuple(row.values()) for row in rows]

    def _running(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
            self._thread.start()
        return self._loop

    async def _fetch(self, statement: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.url)
        try:
            return [dict(row) for row in await self._conn.fetch(statement, *args)]
        except asyncpg.UndefinedTableError:
            return []
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
            # The server restarted under the test: read again on a new connection.
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = await asyncpg.connect(self.url)
            return [dict(row) for row in await self._conn.fetch(statement, *args)]

    def close(self) -> None:
        if self._loop is None:
            return

        async def finish() -> None:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()

        asyncio.run_coroutine_threadsafe(finish(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop.close()
        self._loop = None
