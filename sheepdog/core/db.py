"""The SQLite database in ``state_dir``: one connection, used from one thread, reopened on demand.

The outbox and the spend ledger each own their tables and register a schema function here. Every
call goes through :meth:`Database.run` on a single worker thread, so SQLite never sees two threads
and the event loop never waits on a disk. When the disk is full or ``state_dir`` is unwritable a
call raises :class:`DatabaseUnavailable`; the next call tries again, so the service recovers by
itself when the disk does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("sheepdog.db")

T = TypeVar("T")
Schema = Callable[[sqlite3.Connection], None]

DATABASE_FILE = "sheepdog.db"


class DatabaseUnavailable(Exception):
    """The database could not be opened or written; the message says why."""


class Database:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DATABASE_FILE
        self._schemas: list[Schema] = []
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sheepdog-db")
        self.last_error: str | None = None

    def add_schema(self, schema: Schema) -> None:
        """Register a function that creates tables (idempotently) each time the file is opened."""
        self._schemas.append(schema)

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def open(self) -> None:
        """Open now, so a problem shows at start-up; a failure is logged and retried later."""
        try:
            await self.run(lambda conn: None)
        except DatabaseUnavailable as exc:
            log.error("database unavailable at start-up", extra={"reason": str(exc)})

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` on the database thread; commit if it succeeds."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run_sync, work)

    def run_sync(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """The same as :meth:`run`, for command-line tools that have no event loop."""
        return self._executor.submit(self._run_sync, work).result()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)

    def _run_sync(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connect()
        try:
            with conn:  # commits on success, rolls back on an exception
                result = work(conn)
        except sqlite3.OperationalError as exc:
            self._drop_connection()
            self.last_error = str(exc)
            raise DatabaseUnavailable(f"{self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            self.last_error = str(exc)
            raise DatabaseUnavailable(f"{self.path}: {exc}") from exc
        if self.last_error is not None:
            log.info("database available again", extra={"path": str(self.path)})
            self.last_error = None
        return result

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
        except (OSError, sqlite3.Error) as exc:
            self.last_error = str(exc)
            raise DatabaseUnavailable(f"cannot open {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            with conn:
                for schema in self._schemas:
                    schema(conn)
        except sqlite3.Error as exc:
            conn.close()
            self.last_error = str(exc)
            raise DatabaseUnavailable(f"cannot prepare {self.path}: {exc}") from exc
        self._conn = conn
        return conn

    def _drop_connection(self) -> None:
        # After an I/O error SQLite may hold a stale file state; a fresh connection is safest.
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _close_sync(self) -> None:
        self._drop_connection()
