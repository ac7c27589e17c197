"""The relay proxy: OpenAI-compatible, metered, guarded by client keys and budgets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Final

import aiohttp
from aiohttp import web

from proxy.clients import ANONYMOUS
from proxy.config import ProxyConfig
from proxy.ledger import SpendLedger
from proxy.limits import LIMIT_KINDS, RateLimiter, RateStore, SharedCounts
from proxy.limits import store_for as rate_store_for
from proxy.metrics import Accounts, ProxyMetrics
from proxy.pricing import OTHER_MODEL
from proxy.relay import Relay
from proxy.settings import ProxySettings
from proxy.upstreams import UpstreamPool
from sheepdog.core.process import process_name
from sheepdog.core.runtime import RUNTIME

__all__ = ["RELAY", "PreparedProxy", "ProxyConfig", "prepare", "setup"]

log = logging.getLogger("sheepdog.proxy")

RELAY: Final = web.AppKey("sheepdog.proxy.relay", Relay)

# Streams last minutes, so the pool must hold many at once rather than queue them; the limit
# keeps the process within its file descriptors.
_MAX_UPSTREAM_CONNECTIONS: Final = 1024
_FIRST_EXCHANGE_SECONDS: Final = 2.0
"""How long start-up waits for the first exchange of rate-limit counts (then it goes on
limiting alone until one succeeds: a database that is down must not keep the service down)."""
# Idle upstream connections are kept this long, so most requests skip the TCP and TLS handshakes.
_KEEPALIVE_SECONDS: Final = 60.0


def setup(app: web.Application, config: ProxyConfig) -> Relay:
    """Add the proxy's routes, upstream session and ledger writer to ``app``; returns the relay,
    which :func:`prepare` reconfigures on a reload."""
    runtime = app[RUNTIME]
    ledger = SpendLedger(runtime.db, runtime.clock)
    relay: Relay  # the collectors only read it at scrape time, after it is assigned
    metrics = ProxyMetrics(runtime.registry, lambda: _accounts(relay), lambda: relay.upstreams.up())
    settings = ProxySettings.from_config(config)
    relay = Relay(
        settings,
        metrics,
        ledger,
        runtime.clock,
        RateLimiter(runtime.clock),
        UpstreamPool(settings.routes),
    )
    relay.limits.keep(settings.clients.callers())
    _prepare_series(relay)
    app[RELAY] = relay
    app.router.add_route("*", "/v1/{tail:.*}", relay.handle)
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_ledger_writer)
    # The table is part of the schema on every backend; the counts are exchanged only where
    # other processes may share the database: one process alone knows all its counts, and a
    # database write a second would buy it nothing.
    rate_store = rate_store_for(runtime.db)
    if runtime.db.shared:
        app.cleanup_ctx.append(_rate_counts_exchange(rate_store))
    runtime.readiness_checks["spend ledger"] = lambda: relay.ledger.problem
    return relay


def _accounts(relay: Relay) -> Accounts:
    settings = relay.settings
    billing = settings.billing
    return Accounts(
        currency=billing.currency,
        usd_rate=billing.usd_rate,
        market_usd_rate=billing.market_usd_rate,
        budgets_usd=settings.clients.budgets(),
        spend_month_usd=relay.ledger.month_spend_by_client(settings.clients.names or (ANONYMOUS,)),
    )


def _prepare_series(relay: Relay) -> None:
    # The models the operator named, not the whole catalogue: a price file can price thousands,
    # and series for each of them times each client would swamp /metrics. Others start at first use.
    settings = relay.settings
    relay.metrics.prepare_series(
        (*settings.prices.named, OTHER_MODEL), settings.clients.names or (ANONYMOUS,)
    )
    limited = [
        (
            caller.name,
            [
                kind
                for kind, limit in zip(
                    LIMIT_KINDS, (caller.requests_per_minute, caller.tokens_per_minute), strict=True
                )
                if limit is not None
            ],
        )
        for caller in settings.clients.callers()
    ]
    relay.metrics.prepare_guard_series(limited, settings.routes.names)


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    """One pooled session for every upstream call of the app's life."""
    relay = app[RELAY]
    connector = aiohttp.TCPConnector(
        limit=_MAX_UPSTREAM_CONNECTIONS, limit_per_host=0, keepalive_timeout=_KEEPALIVE_SECONDS
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=relay.settings.timeout,
        # Bodies go to clients exactly as sent; metering decodes a copy where it must.
        auto_decompress=False,
        # One session serves every client: cookies an upstream sets must not pass between them.
        cookie_jar=aiohttp.DummyCookieJar(),
        # No skip_auto_headers here: the relay passes them only to a request that lacks them
        # (proxy.headers.skipped_auto_headers): a session's are copied into every request.
    )
    relay.session = session
    relay.deadlines.bind(asyncio.get_running_loop())
    yield
    relay.session = None
    relay.deadlines.close()
    await session.close()


async def _ledger_writer(app: web.Application) -> AsyncIterator[None]:
    """Load this month's spend before serving; write changes every second; flush at shutdown."""
    ledger = app[RELAY].ledger
    await ledger.load()
    task = asyncio.create_task(ledger.run(), name="sheepdog-spend-ledger")
    yield
    ledger.stop()
    await task
    requests, usd = ledger.unwritten()
    if requests:
        log.error(
            "spend not written to the ledger at shutdown",
            extra={"requests": requests, "usd": round(usd, 6), "reason": ledger.problem},
        )


def _rate_counts_exchange(
    store: RateStore,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Exchange the rate limits' counts with the other processes about once a second: a first
    time before the service listens (so that it starts with its grants, not alone), waiting
    for the database only so long; a last time at shutdown, so that what this process counted
    last still counts for them and its grants are theirs again."""

    async def exchange(app: web.Application) -> AsyncIterator[None]:
        shared = SharedCounts(app[RELAY].limits, store, process_name())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_FIRST_EXCHANGE_SECONDS):
                await shared.exchange()
        task = asyncio.create_task(shared.run(), name="sheepdog-rate-limit-counts")
        yield
        shared.stop()
        await task

    return exchange


class PreparedProxy:
    """New client keys, budgets, limits, prices and upstreams, swapped in as one snapshot."""

    def __init__(self, relay: Relay, settings: ProxySettings) -> None:
        self._relay = relay
        self._settings = settings

    def commit(self) -> None:
        relay, settings = self._relay, self._settings
        # Health and rate windows carry over (by upstream, by client); then the new settings.
        relay.upstreams.adopt(settings.routes)
        relay.limits.keep(settings.clients.callers())
        relay.settings = settings
        _prepare_series(relay)


def prepare(relay: Relay, config: ProxyConfig) -> PreparedProxy:
    """Everything the relay needs from ``config``, built now (a reload's first step)."""
    return PreparedProxy(relay, ProxySettings.from_config(config))
