"""``sheepdog serve``: run the app on the configured address until SIGTERM or SIGINT.

SIGHUP reloads the config, as ``POST /-/reload`` does.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from sheepdog import __version__
from sheepdog.app import create_app
from sheepdog.config import Config
from sheepdog.core.heap import freeze_long_lived, tune_collector
from sheepdog.core.logs import configure_logging
from sheepdog.core.ops import reload_config
from sheepdog.core.runtime import RUNTIME

log = logging.getLogger("sheepdog")

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
    app = create_app(config)
    app[RUNTIME].reload_parts.append(_Logging)
    # Last, so that it is committed once every other part has swapped in what it built.
    app[RUNTIME].reload_parts.append(_Heap)
    app.on_startup.append(_on_startup)
    try:
        web.run_app(
            app,
            host=config.listen.host,
            port=config.listen.port,
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
    config = app[RUNTIME].settings
    log.info(
        "sheepdog started",
        extra={
            "version": __version__,
            "listen": str(config.listen),
            "config": str(getattr(config, "source", None) or "built-in defaults"),
        },
    )
