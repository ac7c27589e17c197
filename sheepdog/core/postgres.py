"""PostgreSQL (``database.url``): the state that several sheepdog processes and replicas share.

A small asyncpg pool per process. Each :meth:`PostgresDatabase.run` is one transaction on one
pooled connection. The pool is opened on first use and the schema migrated then, under an
advisory lock so that replicas starting together migrate once. A server that is down, restarting
or refusing connections makes calls raise :class:`DatabaseUnavailable` (asyncpg reconnects a
pooled connection the server dropped on its next use); errors never carry the password, and
:attr:`PostgresDatabase.where` names host, port and database only.

:meth:`PostgresDatabase.watch` keeps one more connection, which LISTENs on the channels watched
(a writer sends ``pg_notify`` in its transaction, so the news comes with the commit); it is
opened again a second after the server drops it, and the watchers are then called once, for
whatever was announced while nobody listened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from sheepdog.core.db import SCHEMA_TABLE, Database, DatabaseUnavailable, pending_migrations
from sheepdog.core.secret import Secret

__all__ = ["Connection", "PostgresDatabase", "describe_url"]

log = logging.getLogger("sheepdog.db")

T = TypeVar("T")
if TYPE_CHECKING:
    Connection = PoolConnectionProxy[Any]
else:  # asyncpg's classes take no type parameters at run time
    Connection = PoolConnectionProxy

_CONNECT_TIMEOUT_SECONDS: Final = 5.0
_COMMAND_TIMEOUT_SECONDS: Final = 10.0
_POOL_SIZE: Final = 8
"""Connections per process at most: the outbox writer, the ledger, one per destination worker
at a time; a call beyond them waits for one to be free (never counted as the server down)."""
_LISTEN_RETRY_SECONDS: Final = 1.0
_LISTEN_KEEPALIVE_SECONDS: Final = 30.0
# pg_advisory_xact_lock key for migrations: any fixed number, the same in every replica.
_MIGRATION_LOCK: Final = 0x5EED_D06
# SQLSTATE classes that say the server cannot be used right now, not that the query is wrong:
# connection (08), invalid authorization (28), read-only transaction (25, a standby), database
# missing (3D), serialization or deadlock (40), resources (53), shutdown (57), system (58).
_UNAVAILABLE_CLASSES: Final = frozenset({"08", "25", "28", "3D", "40", "53", "57", "58"})


def describe_url(url: str) -> str:
    """``host:port/database`` of a PostgreSQL URL: where it points, without user or password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "postgresql (unreadable URL)"
    database = parts.path.lstrip("/") or "(default database)"
    host = f"[{host}]" if ":" in host else host
    return f"postgresql://{host}:{port}/{database}"


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the server cannot be used now (worth retrying later)."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.InternalClientError):  # a connection the server broke off
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _UNAVAILABLE_CLASSES
    return False


class PostgresDatabase(Database):
    kind = "postgresql"
    shared = True

    def __init__(self, url: Secret, *, pool_size: int = _POOL_SIZE) -> None:
        super().__init__()
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool[Any] | None = None
        self._opening = asyncio.Lock()
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self._listener: asyncio.Task[None] | None = None

    @property
    def where(self) -> str:
        return describe_url(self._url.reveal())

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def open(self) -> None:
        try:
            await self.run(_nothing)
        except DatabaseUnavailable as exc:
            log.error("database unavailable at start-up", extra={"reason": str(exc)})

    async def run(self, work: Callable[[Connection], Awaitable[T]], *, readonly: bool = False) -> T:
        """Run ``await work(connection)`` in one transaction; commit if it succeeds."""
        try:
            pool = await self._ensure_pool()
            conn = await pool.acquire()  # a new connection's own connect times out
            try:
                async with conn.transaction(readonly=readonly):
                    result = await work(conn)
            except BaseException as exc:
                if not isinstance(exc, asyncpg.PostgresError) or is_unavailable(exc):
                    # Broken off mid-protocol (the server went away, a timeout, a cancel): a
                    # connection in a state nobody knows is not given to the next caller.
                    conn.terminate()
                raise
            finally:
                await pool.release(conn)
        except DatabaseUnavailable as exc:
            self.last_error = str(exc)
            raise
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            reason = _reason(exc)
            self.last_error = reason
            raise DatabaseUnavailable(f"{self.where}: {reason}") from exc
        if self.last_error is not None:
            log.info("database available again", extra={"database": self.where})
            self.last_error = None
        return result

    def watch(self, channel: str, callback: Callable[[], None]) -> None:
        self._watchers.setdefault(channel, []).append(callback)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="sheepdog-db-listen"
            )

    async def _listen(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(self._url.reveal(), timeout=_CONNECT_TIMEOUT_SECONDS)
            except Exception as exc:
                if not is_unavailable(exc) and not isinstance(exc, asyncpg.PostgresError):
                    raise
                await asyncio.sleep(_LISTEN_RETRY_SECONDS)
                continue
            try:
                await self._listen_on(conn)
            except Exception as exc:
                if not is_unavailable(exc) and not isinstance(exc, asyncpg.PostgresError):
                    raise
            finally:
                conn.terminate()
            await asyncio.sleep(_LISTEN_RETRY_SECONDS)

    async def _listen_on(self, conn: asyncpg.Connection[Any]) -> None:
        """LISTEN on every channel watched until the connection is lost."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _: lost.set())
        for channel in self._watchers:
            await conn.add_listener(channel, self._notified)
        self._call_all()  # whatever was announced while nobody listened
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_LISTEN_KEEPALIVE_SECONDS):
                    await lost.wait()
            if not lost.is_set():  # a connection a network failure left half-open
                await conn.execute("SELECT 1", timeout=_CONNECT_TIMEOUT_SECONDS)

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        for callback in self._watchers.get(channel, ()):
            callback()

    def _call_all(self) -> None:
        for callbacks in self._watchers.values():
            for callback in callbacks:
                callback()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), _CONNECT_TIMEOUT_SECONDS)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                pool.terminate()

    async def _ensure_pool(self) -> asyncpg.Pool[Any]:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            opened = self._opened()  # by another call, while this one waited for the lock
            if opened is not None:
                return opened
            try:
                pool = await asyncpg.create_pool(
                    self._url.reveal(),
                    min_size=0,  # connect on demand: no reconnect loop while the server is down
                    max_size=self._pool_size,
                    timeout=_CONNECT_TIMEOUT_SECONDS,
                    command_timeout=_COMMAND_TIMEOUT_SECONDS,
                )
            except Exception as exc:
                if not is_unavailable(exc) and not isinstance(exc, asyncpg.PostgresError):
                    raise
                raise DatabaseUnavailable(
                    f"cannot connect to {self.where}: {_reason(exc)}"
                ) from exc
            try:
                async with pool.acquire() as conn:
                    await self._migrate(conn)
            except BaseException as exc:
                pool.terminate()
                if isinstance(exc, DatabaseUnavailable) or not is_unavailable(exc):
                    raise
                raise DatabaseUnavailable(f"cannot prepare {self.where}: {_reason(exc)}") from exc
            self._pool = pool
            return pool

    def _opened(self) -> asyncpg.Pool[Any] | None:
        return self._pool

    async def _migrate(self, conn: Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} "
                "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            rows = await conn.fetch(f"SELECT component, version FROM {SCHEMA_TABLE}")  # noqa: S608
            applied = {row["component"]: row["version"] for row in rows}
            for component, migration in pending_migrations(self.kind, self.migrations, applied):
                for statement in migration.postgresql:
                    await conn.execute(statement)
                await conn.execute(
                    f"INSERT INTO {SCHEMA_TABLE} (component, version) VALUES ($1, $2) "  # noqa: S608
                    "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    component,
                    migration.version,
                )


async def _nothing(conn: Connection) -> None:
    return None


def _reason(exc: BaseException) -> str:
    # asyncpg's messages name the user and the server's address, never the password.
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
