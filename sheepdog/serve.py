"""``sheepdog serve``: run the app on the configured address until SIGTERM or SIGINT.

SIGHUP reloads the config, as ``POST /-/reload`` does.

With ``workers: N`` (N > 1) this process forks N worker processes, each serving ``listen`` on a
socket of its own (SO_REUSEPORT: the kernel spreads connections over them), and supervises
them: SIGTERM and SIGINT stop them all, SIGHUP reloads them all, and a worker that dies is
started again. They share the state through the database (SQLite in WAL mode on this host, or
PostgreSQL); ``/metrics`` on any of them is the whole service's (sheepdog/core/workers.py).

On SQLite, ``state_dir`` is locked for the life of ``serve``: one service at a time owns it, so
whatever a previous run left in flight can be queued again at start-up, before any worker runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from aiohttp import web

from sheepdog import __version__
from sheepdog.app import create_app
from sheepdog.config import Config
from sheepdog.core.heap import freeze_long_lived, tune_collector
from sheepdog.core.logs import configure_logging
from sheepdog.core.ops import reload_config
from sheepdog.core.runtime import RUNTIME
from sheepdog.core.workers import WorkerSet

log = logging.getLogger("sheepdog")

LOCK_FILE: Final = "sheepdog.lock"
_RESTART_PAUSE_SECONDS: Final = 1.0
_STOP_TIMEOUT_SECONDS: Final = 20.0
_STARTUP_SECONDS: Final = 3.0
# As many as the relay holds upstream connections (proxy/__init__.py): 1,000 streams at once.
_LISTEN_BACKLOG = 1024


class _Logging:
    """A reloaded ``log_format`` and ``log_level``, applied on commit."""

    def __init__(self, new: Config) -> None:
        self._new = new

    def commit(self) -> None:
        configure_logging(self._new.log_format, self._new.log_level)


class _Heap:
    """Freezes a reloaded config's objects as start-up's were (see sheepdog/core/heap.py)."""

    def __init__(self, new: Config) -> None:
        return None

    def commit(self) -> None:
        freeze_long_lived()


def serve(config: Config) -> int:
    configure_logging(config.log_format, config.log_level)
    with _state_dir_lock(config) as locked:
        if not locked:
            return 1
        if config.workers == 1:
            return _serve_one(config)
        if config.database.url is None:
            _recover_sqlite_outbox(config)
        return _Supervisor(config).run()


@contextlib.contextmanager
def _state_dir_lock(config: Config) -> Iterator[bool]:
    """On SQLite, hold an exclusive lock on ``state_dir`` (False if another serve holds it)."""
    if config.database.url is not None:
        yield True
        return
    path = config.state_dir / LOCK_FILE
    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError as exc:
        # The database reports the same problem and the service recovers when it is fixed.
        log.warning("cannot lock state_dir", extra={"path": str(path), "reason": str(exc)})
        yield True
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.error(
                "another sheepdog serve is using this state_dir; give each its own, or share "
                "the state through database.url",
                extra={"state_dir": str(config.state_dir)},
            )
            yield False
            return
        yield True


def _recover_sqlite_outbox(config: Config) -> None:
    """Before any worker starts: what a previous run left in flight goes back to the queue."""
    from bridge.outbox import Outbox
    from sheepdog.core.db import DatabaseUnavailable
    from sheepdog.core.sqlite import SqliteDatabase

    async def recover() -> int:
        db = SqliteDatabase(config.state_dir)
        try:
            return await Outbox(db).recover(time.time())
        finally:
            await db.close()

    try:
        recovered = asyncio.run(recover())
    except DatabaseUnavailable as exc:
        log.error("outbox unavailable at start-up", extra={"reason": str(exc)})
        return
    if recovered:
        log.warning(
            "notifications left in flight by the last run are queued again",
            extra={"count": recovered},
        )


def _serve_one(config: Config, workers: WorkerSet | None = None) -> int:
    request_reload = None if workers is None else _ask_parent_to_reload
    app = create_app(config, workers=workers, request_reload_of_all=request_reload)
    app[RUNTIME].reload_parts.append(_Logging)
    # Last, so that it is committed once every other part has swapped in what it built.
    app[RUNTIME].reload_parts.append(_Heap)
    app.on_startup.append(_on_startup)
    try:
        web.run_app(
            app,
            host=config.listen.host,
            port=config.listen.port,
            reuse_port=workers is not None,
            access_log=None,
            print=None,
            # Connections queued before they are accepted: aiohttp's default of 128 drops the
            # SYNs of a burst of clients beyond that (each then waits a second or more to retry).
            backlog=_LISTEN_BACKLOG,
            shutdown_timeout=10.0,
            handle_signals=True,
            # Cancel a handler when its client goes away, so a proxied request to a silent
            # upstream stops at once (and stops being billed) instead of at its next chunk.
            handler_cancellation=True,
        )
    except OSError as exc:
        log.error("cannot listen", extra={"listen": str(config.listen), "reason": str(exc)})
        return 1
    log.info("stopped")
    return 0


def _ask_parent_to_reload() -> None:
    # The supervisor passes SIGHUP on to every worker (this one too: a second reload of the
    # same file changes nothing).
    os.kill(os.getppid(), signal.SIGHUP)


async def _on_startup(app: web.Application) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[str | None]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reload_config(app))
        tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    # Every start-up step has run by now (on_startup runs the cleanup contexts first).
    tune_collector()
    freeze_long_lived()
    runtime = app[RUNTIME]
    config = runtime.settings
    log.info(
        "sheepdog started",
        extra={
            "version": __version__,
            "listen": str(config.listen),
            "config": str(getattr(config, "source", None) or "built-in defaults"),
            **({"worker": runtime.workers.index} if runtime.workers is not None else {}),
        },
    )


class _Supervisor:
    """Forks the workers and keeps them running until told to stop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.children: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # worker index -> when it was forked
        self.stopping = False
        self.reload = False
        self.directory = Path(tempfile.mkdtemp(prefix="sheepdog-workers-"))

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        log.info(
            "starting workers",
            extra={"workers": self.config.workers, "listen": str(self.config.listen)},
        )
        try:
            for index in range(self.config.workers):
                self._start(index)
            failed = self._supervise()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
        log.info("stopped")
        return 1 if failed else 0

    def _start(self, index: int) -> None:
        workers = WorkerSet(index, self.config.workers, self.directory)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                # A process group of its own: a terminal's Ctrl-C reaches the supervisor only,
                # which stops the workers once (a second signal would break their clean stop).
                os.setpgid(0, 0)
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(signum, signal.SIG_DFL)
                code = _serve_one(self.config, workers)
            except BaseException:
                log.exception("worker failed", extra={"worker": index})
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = index
        self.started[index] = time.monotonic()

    def _supervise(self) -> bool:
        failed = False
        deadline: float | None = None
        while self.children:
            if self.reload:
                self.reload = False
                self._signal_all(signal.SIGHUP)
            if self.stopping and deadline is None:
                deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
                self._signal_all(signal.SIGTERM)
            if deadline is not None and time.monotonic() > deadline:
                self._signal_all(signal.SIGKILL)
                deadline = float("inf")
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.1)
                continue
            index = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                failed = failed or code not in (0, -signal.SIGTERM)
                continue
            if code == 1 and time.monotonic() - self.started[index] < _STARTUP_SECONDS:
                # Failed while starting (cannot listen, say): starting it again would not help.
                log.error("worker failed at start-up; stopping", extra={"worker": index})
                self.stopping, failed = True, True
                continue
            log.error(
                "worker exited; starting it again",
                extra={"worker": index, "pid": pid, "exit": code},
            )
            time.sleep(_RESTART_PAUSE_SECONDS)
            if not self.stopping:
                self._start(index)
        return failed

    def _signal_all(self, signum: int) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _on_reload(self, signum: int, frame: object) -> None:
        self.reload = True
