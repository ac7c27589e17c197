"""The SQLite database in ``state_dir``: one connection per process, used from one thread.

Every call goes through :meth:`SqliteDatabase.run` on a single worker thread, so SQLite never
sees two threads and the event loop never waits on a disk. Each call is one transaction, begun
``IMMEDIATE`` (it takes the write lock at once), so that what it reads is still true when it
writes even with other processes on the file (``workers`` > 1: WAL mode lets them read while one
writes). When the disk is full or ``state_dir`` is unwritable a call raises
:class:`DatabaseUnavailable`; the next call tries again, so the service recovers by itself when
the disk does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from sheepdog.core.db import (
    DATABASE_FILE,
    SCHEMA_TABLE,
    Database,
    DatabaseUnavailable,
    pending_migrations,
)

__all__ = ["SqliteDatabase"]

log = logging.getLogger("sheepdog.db")

T = TypeVar("T")

_BUSY_TIMEOUT_SECONDS: Final = 5.0
_WATCH_INTERVAL_SECONDS: Final = 0.2


class SqliteDatabase(Database):
    kind = "sqlite"

    def __init__(self, state_dir: Path, *, shared: bool = False) -> None:
        super().__init__()
        self.path = state_dir / DATABASE_FILE
        self.shared = shared
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sheepdog-db")
        self._watchers: list[Callable[[], None]] = []
        self._watching: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def open(self) -> None:
        try:
            await self.run(lambda conn: None)
        except DatabaseUnavailable as exc:
            log.error("database unavailable at start-up", extra={"reason": str(exc)})

    async def run(self, work: Callable[[sqlite3.Connection], T], *, readonly: bool = False) -> T:
        """Run ``work(connection)`` in one transaction on the database thread; commit if it
        succeeds. ``readonly`` work does not take the write lock."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run_sync, work, readonly)

    def run_sync(self, work: Callable[[sqlite3.Connection], T], *, readonly: bool = False) -> T:
        """The same as :meth:`run`, for command-line tools that have no event loop."""
        return self._executor.submit(self._run_sync, work, readonly).result()

    def watch(self, channel: str, callback: Callable[[], None]) -> None:
        """With other processes on the file: SQLite's ``data_version`` changes when another
        connection commits (any table: the channel is not told apart), read every 0.2 s from
        the file's shared memory, without touching the disk."""
        if not self.shared:
            return
        self._watchers.append(callback)
        if self._watching is None or self._watching.done():
            self._watching = asyncio.get_running_loop().create_task(
                self._watch(), name="sheepdog-db-watch"
            )

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        seen: int | None = None
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_SECONDS)
            try:
                version = await loop.run_in_executor(self._executor, self._data_version)
            except (DatabaseUnavailable, sqlite3.Error):
                continue
            if seen is not None and version != seen:
                for callback in self._watchers:
                    callback()
            seen = version

    def _data_version(self) -> int:
        return int(self._connect().execute("PRAGMA data_version").fetchone()[0])

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
            self._watching = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)

    def _run_sync(self, work: Callable[[sqlite3.Connection], T], readonly: bool) -> T:
        conn = self._connect()
        try:
            conn.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
            try:
                result = work(conn)
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._drop_connection()
            self.last_error = str(exc)
            raise DatabaseUnavailable(f"{self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            _rollback(conn)
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
            # Autocommit mode: _run_sync begins and ends every transaction itself.
            conn = sqlite3.connect(
                self.path,
                check_same_thread=False,
                timeout=_BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
            )
        except (OSError, sqlite3.Error) as exc:
            self.last_error = str(exc)
            raise DatabaseUnavailable(f"cannot open {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate(conn)
        except (sqlite3.Error, DatabaseUnavailable) as exc:
            conn.close()
            self.last_error = str(exc)
            if isinstance(exc, DatabaseUnavailable):
                raise
            raise DatabaseUnavailable(f"cannot prepare {self.path}: {exc}") from exc
        self._conn = conn
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} "
                "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            applied = dict(conn.execute(f"SELECT component, version FROM {SCHEMA_TABLE}"))  # noqa: S608
            for component, migration in pending_migrations(self.kind, self.migrations, applied):
                for step in migration.sqlite:
                    if isinstance(step, str):
                        conn.execute(step)
                    else:
                        step(conn)
                conn.execute(
                    f"INSERT INTO {SCHEMA_TABLE} (component, version) VALUES (?, ?) "  # noqa: S608
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    (component, migration.version),
                )
        except BaseException:
            _rollback(conn)
            raise
        conn.execute("COMMIT")

    def _drop_connection(self) -> None:
        # After an I/O error SQLite may hold a stale file state; a fresh connection is safest.
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _close_sync(self) -> None:
        self._drop_connection()


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may have rolled back by itself (disk full, I/O error): then there is nothing to undo.
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")
