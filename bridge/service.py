"""The bridge as a whole: outbox, renderer, HTTP session and one worker per destination.

Its configuration is a :class:`Plan`: the bridge config with everything built from it once
(the renderer, every template compiled and tried on a sample, each target's notifier and
destination). :meth:`Bridge.prepare` builds a plan from a new config, raising if anything is
wrong, and :meth:`PreparedBridge.commit` swaps it in by steps that cannot fail: workers read the
current plan at every step, workers start for new destinations and stop for ones no target
uses any more, and each destination's rate-limit history stays, whichever targets post there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import web

from bridge.channels.base import Limit
from bridge.channels.registry import CHANNELS, channel_of
from bridge.config import BridgeConfig, RetryConfig, TargetConfig, WatchdogConfig
from bridge.language import humanize_seconds
from bridge.metrics import BridgeMetrics
from bridge.outbox import Outbox, TargetStats
from bridge.pacing import RateLimits, combine_limits
from bridge.payload import Payload
from bridge.render import Renderer
from bridge.watchdog import Watchdog, WatchdogStore
from bridge.worker import DestinationWorker, Route, Sleep
from sheepdog.core.db import Database, DatabaseUnavailable
from sheepdog.core.errors import ConfigError
from sheepdog.core.runtime import Runtime

__all__ = [
    "BRIDGE",
    "HOUSEKEEPING_SECONDS",
    "Bridge",
    "Plan",
    "PreparedBridge",
    "build_renderer",
]

log = logging.getLogger("sheepdog.bridge")

HOUSEKEEPING_SECONDS: Final = 3600.0
"""How often sent rows older than a week are pruned."""
RECOVERY_RETRY_SECONDS: Final = 5.0


def watchdog_store_for(db: Database) -> WatchdogStore:
    """The watchdog's store for ``db``'s backend; registers its migrations on it."""
    if db.kind == "postgresql":
        from bridge.watchdog_postgres import PostgresWatchdogStore

        return PostgresWatchdogStore(db)
    from bridge.watchdog_sqlite import SqliteWatchdogStore

    return SqliteWatchdogStore(db)


def build_renderer(config: BridgeConfig) -> Renderer:
    """The renderer for ``config``, every target's templates compiled and tried on a sample
    payload; or :class:`ConfigError` naming the target."""
    try:
        renderer = Renderer(config, CHANNELS)
    except (OSError, ValueError) as exc:
        raise ConfigError("bridge.templates_dir", f"cannot load templates: {exc}") from None
    for name, target in config.targets.items():
        renderer.check(target, f"bridge.targets.{name}.template")
    return renderer


@dataclass(frozen=True, slots=True)
class Plan:
    """One bridge config, with everything the workers need built from it."""

    config: BridgeConfig
    renderer: Renderer
    routes: Mapping[str, Route]
    """Every target by name."""
    destinations: Mapping[str, Mapping[str, Route]]
    """The targets of each destination, by name."""

    @property
    def retry(self) -> RetryConfig:
        return self.config.retry

    def on(self, destination: str) -> Mapping[str, Route]:
        return self.destinations.get(destination, {})

    @classmethod
    def build(
        cls, config: BridgeConfig, session: aiohttp.ClientSession | None, renderer: Renderer
    ) -> Plan:
        timeout = config.retry.timeout_seconds
        routes: dict[str, Route] = {}
        destinations: dict[str, dict[str, Route]] = {}
        for name, target in config.targets.items():
            channel = channel_of(target.type)
            route = Route(
                target=target,
                notifier=channel.notifier(target, renderer, session, timeout),
                destination=channel.destination_key(target),
            )
            routes[name] = route
            destinations.setdefault(route.destination, {})[name] = route
        return cls(config, renderer, routes, destinations)

    def limits_of(self, destination: str) -> tuple[Limit, ...]:
        """The pace of ``destination``: the strictest of its targets' limits."""
        return combine_limits(
            channel_of(route.target.type).limits(route.target)
            for route in self.on(destination).values()
        )


class Bridge:
    def __init__(
        self, runtime: Runtime, config: BridgeConfig, *, rng: random.Random | None = None
    ) -> None:
        self.runtime = runtime
        self.outbox = Outbox(runtime.db)
        self.metrics = BridgeMetrics(runtime.registry)
        self.plan = Plan.build(config, None, build_renderer(config))
        self.workers: dict[str, DestinationWorker] = {}
        self.limits: dict[str, RateLimits] = {}
        """Each destination's pace, kept across reloads (and targets moving between them)."""
        self.session: aiohttp.ClientSession | None = None
        self._rng = rng
        self._sleep: Sleep = getattr(runtime.clock, "sleep", None) or asyncio.sleep
        self._stats: dict[str, TargetStats] = {}
        self._housekeeping: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._refresh_again = False
        self._started = False
        self.metrics.add_targets(self._reasons(config), self.age_of)
        self.watchdog = Watchdog(
            store=watchdog_store_for(runtime.db),
            clock=runtime.clock,
            sleep=self._sleep,
            registry=runtime.registry,
            settings=lambda: self.config,
            accept=self.accept,
        )
        """Heartbeats in (``POST /alerts/watchdog``), "monitoring is silent" out."""

    @property
    def config(self) -> BridgeConfig:
        return self.plan.config

    @property
    def renderer(self) -> Renderer:
        return self.plan.renderer

    # Life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Queue again what a crash left in flight, then start the workers.

        If the outbox cannot be opened yet, this goes on trying in the background: the workers
        start only after the recovery, so that none of them holds a row being reset.
        """
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.retry.timeout_seconds),
            trust_env=True,
        )
        self.plan = Plan.build(self.config, self.session, self.renderer)
        self.watchdog.start()
        if not await self._recover():
            self._housekeeping = asyncio.create_task(self._boot(), name="sheepdog-bridge-boot")
            return
        self._start_all()

    async def _recover(self) -> bool:
        now = self.runtime.clock.now().timestamp()
        try:
            # Alone on the outbox, everything in flight is ours from before a crash; shared,
            # rows in flight may be another process's, and come back when its lease runs out.
            recovered = 0 if self.runtime.db.shared else await self.outbox.recover(now)
            await self.outbox.prune(now)
            await self.refresh()
        except DatabaseUnavailable as exc:
            log.error("outbox unavailable at start-up; trying again", extra={"reason": str(exc)})
            return False
        if recovered:
            log.warning(
                "notifications left in flight by the last run are queued again",
                extra={"count": recovered},
            )
        return True

    async def _boot(self) -> None:
        while not await self._recover():
            await self._sleep(RECOVERY_RETRY_SECONDS)
        self._start_all()

    def _start_all(self) -> None:
        self._started = True
        # Notifications another process stores are delivered at once by whichever of them
        # holds the destination, not at its next poll.
        self.outbox.watch(self._wake_workers)
        self._reconcile_workers()
        self._housekeeping = asyncio.create_task(self._housekeep(), name="sheepdog-bridge-prune")

    async def stop(self) -> None:
        await self.watchdog.stop()
        for task in (self._housekeeping, self._refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(worker.stop() for worker in self.workers.values()))
        await asyncio.gather(*self._stopping)
        self.workers.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None
        self._started = False

    def _reconcile_workers(self) -> None:
        """One running worker per destination of the plan: start the new, stop the unused.
        Cannot fail: it creates tasks and nothing else."""
        if not self._started:
            return
        wanted = set(self.plan.destinations)
        for destination in sorted(set(self.workers) - wanted):
            task = asyncio.create_task(self.workers.pop(destination).stop())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        for destination in sorted(wanted):
            limits = self.limits.setdefault(destination, RateLimits())
            limits.configure(self.plan.limits_of(destination))
            worker = self.workers.get(destination)
            if worker is None:
                worker = DestinationWorker(
                    destination=destination,
                    routes=self,
                    limits=limits,
                    outbox=self.outbox,
                    clock=self.runtime.clock,
                    sleep=self._sleep,
                    metrics=self.metrics,
                    on_change=self.refresh,
                    rng=self._rng,
                    lease_seconds=self.runtime.settings.database.lease_seconds,
                    shared=self.runtime.db.shared,
                )
                self.workers[destination] = worker
                worker.start()
            else:
                worker.wake()

    # What the workers read (the Routes protocol) ---------------------------------------------

    @property
    def retry(self) -> RetryConfig:
        return self.plan.retry

    def on(self, destination: str) -> Mapping[str, Route]:
        return self.plan.on(destination)

    def _wake_workers(self) -> None:
        for worker in self.workers.values():
            worker.wake()

    def worker_of(self, target: str) -> DestinationWorker | None:
        route = self.plan.routes.get(target)
        return self.workers.get(route.destination) if route is not None else None

    # Receiving -------------------------------------------------------------------------------

    async def accept(self, target: str, payload: Payload) -> tuple[int, bool]:
        """Store ``payload`` durably; ``(id, False)`` if it repeats one stored a moment ago."""
        now = self.runtime.clock.now().timestamp()
        row_id, is_new = await self.outbox.add(target, payload, now)
        if is_new:
            for alert in payload["alerts"]:
                self.metrics.alerts_received.labels(target, alert["status"]).inc()
            worker = self.worker_of(target)
            if worker is not None:
                worker.wake()
            self._refresh_soon()
        return row_id, is_new

    async def retry_dead(self, ids: list[int] | None) -> tuple[list[int], dict[int, str]]:
        """Put dead letters back in the queue (``ids``, or all when None), as ``sheepdog outbox
        retry`` does, and have the workers send them now. Returns the ids queued again and,
        for each given id that was not, why."""
        now = self.runtime.clock.now().timestamp()
        queued, refused = await self.outbox.retry_dead(ids, now)
        if queued:
            self._wake_workers()
            self._refresh_soon()
        return queued, refused

    def _refresh_soon(self) -> None:
        """Refresh the gauges after answering rather than before: the counts scan every row
        still queued, which in an alert storm is thousands. One refresh serves every accept that
        arrives while it runs."""
        if self._refreshing is not None and not self._refreshing.done():
            self._refresh_again = True
            return
        self._refreshing = asyncio.create_task(
            self._refresh_until_current(), name="sheepdog-bridge-refresh"
        )

    async def _refresh_until_current(self) -> None:
        self._refresh_again = True
        while self._refresh_again:
            self._refresh_again = False
            with contextlib.suppress(DatabaseUnavailable):
                await self.refresh()

    # Metrics ---------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the outbox's counts again for the gauges."""
        self._stats = await self.outbox.stats()
        for name in self.config.targets:
            stats = self._stats.get(name, TargetStats())
            self.metrics.pending.labels(name).set(stats.waiting)
            self.metrics.dead.labels(name).set(stats.dead)

    def age_of(self, target: str) -> float:
        oldest = self._stats.get(target, TargetStats()).oldest_created_at
        if oldest is None:
            return 0.0
        return max(0.0, self.runtime.clock.now().timestamp() - oldest)

    async def _housekeep(self) -> None:
        while True:
            await self._sleep(HOUSEKEEPING_SECONDS)
            try:
                pruned = await self.outbox.prune(self.runtime.clock.now().timestamp())
                if pruned:
                    log.info("pruned sent notifications older than a week", extra={"count": pruned})
                await self.refresh()
            except DatabaseUnavailable as exc:
                log.warning("could not prune the outbox", extra={"reason": str(exc)})

    @staticmethod
    def _reasons(config: BridgeConfig) -> dict[str, tuple[str, ...]]:
        return {name: channel_of(t.type).reasons for name, t in config.targets.items()}

    # Readiness and reload --------------------------------------------------------------------

    def readiness(self) -> str | None:
        if not self._started:
            return "bridge workers not started"
        stopped = sorted(
            name
            for destination, worker in self.workers.items()
            if not worker.running
            for name in self.plan.on(destination)
        )
        missing = sorted(
            name
            for name, route in self.plan.routes.items()
            if route.destination not in self.workers
        )
        if stopped or missing:
            return f"bridge workers not running: {', '.join(stopped + missing)}"
        return None

    def adopt(self, plan: Plan) -> None:
        """Make ``plan`` the current one (a reload's commit). Cannot fail: it assigns, creates
        metric series and starts or stops worker tasks."""
        old = set(self.plan.routes)
        new = set(plan.routes)
        self.plan = plan
        for name in sorted(old - new):
            stats = self._stats.get(name)
            if stats is not None and stats.waiting:
                log.warning(
                    "target removed from the config; its notifications stay in the "
                    "outbox until it comes back",
                    extra={"target": name, "waiting": stats.waiting},
                )
        self.metrics.remove_targets(old - new)
        reasons = self._reasons(plan.config)
        self.metrics.add_targets({name: reasons[name] for name in sorted(new - old)}, self.age_of)
        self._reconcile_workers()
        self._refresh_soon()
        self.watchdog.wake()

    def prepare(self, config: BridgeConfig) -> PreparedBridge:
        """Everything built from ``config`` (templates compiled once, notifiers, destinations),
        raising :class:`ConfigError` if anything is wrong; nothing changes until commit."""
        return PreparedBridge(self, Plan.build(config, self.session, build_renderer(config)))


class PreparedBridge:
    """A bridge plan ready to replace the current one."""

    def __init__(self, bridge: Bridge, plan: Plan) -> None:
        self._bridge = bridge
        self.plan = plan

    def commit(self) -> None:
        self._bridge.adopt(self.plan)


def describe_target(target: TargetConfig) -> str:
    """``→ host, 20/min``: where a target's messages go, for ``check-config``."""
    channel = channel_of(target.type)
    rate = f", {target.rate_per_minute:g}/min" if target.rate_per_minute else ""
    return f"→ {channel.describe_destination(target)}{rate}"


def describe_watchdog(watchdog: WatchdogConfig | None) -> str:
    """Where "monitoring is silent" goes, and after how long, for ``check-config``."""
    if watchdog is None:
        return "off (heartbeats at /alerts/watchdog are recorded; nothing is sent)"
    silence = watchdog.silence_seconds
    return (
        f"→ {watchdog.target} after {humanize_seconds(silence)} ({silence:g}s) without a "
        "heartbeat at /alerts/watchdog"
    )


BRIDGE: Final = web.AppKey("sheepdog.bridge", Bridge)
