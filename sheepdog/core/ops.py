"""Operations endpoints: ``/metrics``, ``/-/healthy``, ``/-/ready``, ``/-/reload``."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import platform
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import choose_encoder, gzip_accepted

from sheepdog import __version__
from sheepdog.core.auth import is_authorized, unauthorized
from sheepdog.core.errors import ConfigError
from sheepdog.core.exposition import MetricsRegistry, render
from sheepdog.core.runtime import RUNTIME, Prepared
from sheepdog.core.settings import CoreSettings
from sheepdog.core.workers import SiblingFailed, fetch_siblings, merge

log = logging.getLogger("sheepdog.ops")


class OpsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.build_info = Gauge(
            "sheepdog_build_info",
            "Always 1; labels say which sheepdog is running.",
            ["version", "python"],
            registry=registry,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.reload_successful = Gauge(
            "sheepdog_config_last_reload_successful",
            "1 if the last configuration reload succeeded (or none was tried), else 0.",
            registry=registry,
        )
        self.reload_successful.set(1)
        self.reload_timestamp = Gauge(
            "sheepdog_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            registry=registry,
        )
        self.reload_timestamp.set(time.time())


OPS_METRICS = web.AppKey("sheepdog.ops_metrics", OpsMetrics)


def setup_ops(app: web.Application) -> None:
    runtime = app[RUNTIME]
    app[OPS_METRICS] = OpsMetrics(runtime.registry)
    app.router.add_get("/metrics", _metrics)
    if runtime.workers is not None:
        app.cleanup_ctx.append(_own_exposition_socket)
    app.router.add_get("/-/healthy", _healthy)
    app.router.add_get("/-/ready", _ready)
    app.router.add_post("/-/reload", _reload_endpoint)


async def _metrics(request: web.Request) -> web.Response:
    """The exposition, rendered in a worker thread; with ``workers`` > 1, the whole service's.

    prometheus_client's aiohttp handler renders on the event loop and compresses at gzip level 9:
    with 50 models × 20 clients of series that held every relayed request and stream chunk for
    about 300 ms per scrape. Here the loop keeps serving while a thread renders, and gzip level 1
    costs a few milliseconds instead of tens. The proxy's label series format themselves
    (sheepdog/core/exposition.py): collect() alone cost ~9 µs a sample, ~7,400 samples at that size.
    """
    runtime = request.app[RUNTIME]
    accept = request.headers.get("Accept", "")
    compress = gzip_accepted(request.headers.get("Accept-Encoding", ""))
    names = request.query.getall("name[]", [])
    workers = runtime.workers
    if workers is None:
        body, content_type = await asyncio.to_thread(
            _render_exposition, runtime.registry, accept, names, compress
        )
    else:
        # Every process's exposition, summed (sheepdog/core/workers.py).
        query = [("name[]", name) for name in names]
        own = asyncio.to_thread(_render_exposition, runtime.registry, accept, names, False)
        try:
            (body, content_type), others = await asyncio.gather(
                own, fetch_siblings(workers, accept, query)
            )
        except SiblingFailed as exc:
            log.warning(
                "a worker process gave no metrics; scrape refused", extra={"reason": str(exc)}
            )
            return web.Response(status=503, text=f"worker metrics unavailable: {exc}\n")
        body = await asyncio.to_thread(_merge_exposition, body, others, compress)
    response = web.Response(body=body, headers={"Content-Type": content_type})
    if compress:
        response.headers["Content-Encoding"] = "gzip"
    return response


def _merge_exposition(own: bytes, others: list[str], compress: bool) -> bytes:
    body = merge([own.decode(), *others]).encode()
    return gzip.compress(body, compresslevel=1) if compress else body


async def _own_metrics(request: web.Request) -> web.Response:
    """This process's exposition alone (for the process that answers a scrape)."""
    registry = request.app[OWN_REGISTRY]
    names = request.query.getall("name[]", [])
    body, content_type = await asyncio.to_thread(
        _render_exposition, registry, request.headers.get("Accept", ""), names, False
    )
    return web.Response(body=body, headers={"Content-Type": content_type})


OWN_REGISTRY = web.AppKey("sheepdog.own_registry", MetricsRegistry)


async def _own_exposition_socket(app: web.Application) -> AsyncIterator[None]:
    """Serve this process's own exposition on its Unix socket, for the others."""
    runtime = app[RUNTIME]
    workers = runtime.workers
    assert workers is not None
    own = web.Application()
    own[OWN_REGISTRY] = runtime.registry
    own.router.add_get("/metrics", _own_metrics)
    runner = web.AppRunner(own, access_log=None)
    await runner.setup()
    path = workers.own_socket
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a process of this slot that was killed
    await web.UnixSite(runner, str(path)).start()
    yield
    await runner.cleanup()


def _render_exposition(
    registry: MetricsRegistry, accept: str, names: list[str], compress: bool
) -> tuple[bytes, str]:
    encoder, content_type = choose_encoder(accept)
    # render() gives the same bytes as encoder(registry), but large label families of ours
    # format only their numbers.
    body = encoder(registry.restricted_registry(names)) if names else render(registry, encoder)
    return (gzip.compress(body, compresslevel=1) if compress else body), content_type


async def _healthy(request: web.Request) -> web.Response:
    return web.Response(text="sheepdog is healthy.\n")


async def _ready(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    problems = {
        name: reason
        for name, check in runtime.readiness_checks.items()
        if (reason := check()) is not None
    }
    if problems:
        lines = "".join(f"{name}: {reason}\n" for name, reason in sorted(problems.items()))
        return web.Response(status=503, text=f"sheepdog is not ready.\n{lines}")
    return web.Response(text="sheepdog is ready.\n")


async def _reload_endpoint(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    if not is_authorized(request, runtime.settings.auth):
        return unauthorized()
    error = await reload_config(request.app)
    if error is not None:
        return web.json_response({"status": "refused", "error": error}, status=400)
    if runtime.workers is not None and runtime.request_reload_of_all is not None:
        runtime.request_reload_of_all()  # the other processes read the same file again
    return web.json_response({"status": "reloaded"})


async def reload_config(app: web.Application) -> str | None:
    """Load the config again; every part prepares from it, then all are committed at once.

    Any failure, in loading or in any part's preparing, changes nothing: the old config stays,
    ``sheepdog_config_last_reload_successful`` goes to 0 and the reason is logged. Returns None
    on success, else the error (which names the key path and holds no secret).
    """
    runtime = app[RUNTIME]
    metrics = app[OPS_METRICS]
    async with runtime.reload_lock:
        try:
            new = runtime.load_config()
            _check_fixed_settings(runtime.settings, new)
            prepared = [prepare(new) for prepare in runtime.reload_parts]
        except ConfigError as exc:
            return _refused(metrics, str(exc))
        except Exception as exc:
            # Not a config error: a bug, or the machine (a file that vanished). The old config
            # stays all the same. The type only: an exception's text may quote a secret.
            log.error(
                "config reload failed unexpectedly, the old config stays",
                extra={"reason": type(exc).__name__},
                exc_info=True,
            )
            return _refused(metrics, f"reload failed: {type(exc).__name__}", logged=True)
        runtime.settings = new
        _commit_all(prepared)
        metrics.reload_successful.set(1)
        metrics.reload_timestamp.set(time.time())
        source = getattr(new, "source", None)
        log.info("config reloaded", extra={"source": str(source or "built-in defaults")})
        return None


def _commit_all(prepared: list[Prepared]) -> None:
    for part in prepared:
        part.commit()


def _refused(metrics: OpsMetrics, reason: str, *, logged: bool = False) -> str:
    metrics.reload_successful.set(0)
    if not logged:
        log.error("config reload refused, the old config stays", extra={"reason": reason})
    return reason


def _check_fixed_settings(old: CoreSettings, new: CoreSettings) -> None:
    # The socket, the database and the processes are set up once; changing them needs a restart.
    if new.listen != old.listen:
        raise ConfigError("listen", "cannot change on reload; restart sheepdog to move it")
    if new.state_dir.resolve() != old.state_dir.resolve():
        raise ConfigError("state_dir", "cannot change on reload; restart sheepdog to move it")
    if new.database != old.database:
        raise ConfigError("database", "cannot change on reload; restart sheepdog to change it")
    if new.workers != old.workers:
        raise ConfigError("workers", "cannot change on reload; restart sheepdog to change it")
