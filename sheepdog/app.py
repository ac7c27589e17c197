"""The application factory: one aiohttp app holding the proxy, the bridge and the ops endpoints.

Part of the composition root: here the halves are built from their sections of the config, and
each registers how it prepares for a reload.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import disable_created_metrics

import bridge
import proxy
from sheepdog.config import Config, load_config
from sheepdog.console import setup_console
from sheepdog.core.backends import database_for
from sheepdog.core.clock import Clock, SystemClock
from sheepdog.core.db import Database
from sheepdog.core.exposition import MetricsRegistry
from sheepdog.core.ops import setup_ops
from sheepdog.core.runtime import RUNTIME, ConfigLoader, Prepared, ReadinessCheck, Runtime
from sheepdog.core.workers import WorkerSet

# Big enough for any request body the halves accept; each half enforces its own, smaller limit
# and answers with its own error shape.
_CLIENT_MAX_SIZE = 1024**3


def create_app(
    config: Config,
    *,
    registry: MetricsRegistry | None = None,
    clock: Clock | None = None,
    config_loader: ConfigLoader | None = None,
    database: Database | None = None,
    workers: WorkerSet | None = None,
    request_reload_of_all: Callable[[], None] | None = None,
) -> web.Application:
    """Build the service from a validated config. Parses no argv and reads no file itself.

    ``registry`` defaults to a fresh one (so tests never share metrics); ``config_loader`` is what
    a reload calls, by default reading ``config.source`` again; ``database`` defaults to the
    one the config names (PostgreSQL with ``database.url``, else SQLite in ``state_dir``);
    ``workers`` is this process's place among several serving ``listen`` (``sheepdog serve``
    with ``workers`` > 1), and ``request_reload_of_all`` how it asks them all to reload.
    """
    # No `*_created` samples: Prometheus stores each as a series of its own, and they were half of
    # every scrape's samples. (A process-wide switch of prometheus_client; idempotent.)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    app = web.Application(client_max_size=_CLIENT_MAX_SIZE)
    runtime = Runtime(
        settings=config,
        registry=registry if registry is not None else MetricsRegistry(),
        clock=clock if clock is not None else SystemClock(),
        db=database if database is not None else database_for(config),
        load_config=config_loader or (lambda: load_config(config.source, os.environ)),
        workers=workers,
        request_reload_of_all=request_reload_of_all,
    )
    app[RUNTIME] = runtime
    runtime.readiness_checks["database"] = _database_readiness(runtime.db)
    app.cleanup_ctx.append(_database_context)
    setup_ops(app)
    relay = proxy.setup(app, config.proxy)
    alerts = bridge.setup(app, config.bridge)
    setup_console(app)

    def prepare_proxy(new: Config) -> Prepared:
        return proxy.prepare(relay, new.proxy)

    def prepare_bridge(new: Config) -> Prepared:
        return alerts.prepare(new.bridge)

    runtime.reload_parts += [prepare_proxy, prepare_bridge]
    return app


async def _database_context(app: web.Application) -> AsyncIterator[None]:
    db = app[RUNTIME].db
    await db.open()
    yield
    await db.close()


def _database_readiness(db: Database) -> ReadinessCheck:
    # Every process touches the database at least once a second (the spend ledger's sync), so
    # this says within a second or so when it stops answering, and when it is back.
    def check() -> str | None:
        if db.is_open and db.last_error is None:
            return None
        return f"database unavailable ({db.where}): {db.last_error or 'not open'}"

    return check
