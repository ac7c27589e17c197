"""The bridge as a whole: outbox, renderer, HTTP session and one worker per target.

It is the bridge's reload hook (a new config is checked, templates included, before anything
changes; applying it starts, reconfigures or stops workers without losing a row) and its
readiness check (every configured target has a running worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Final

import aiohttp
from aiohttp import web

from bridge.metrics import BridgeMetrics
from bridge.notifiers import make_notifier
from bridge.outbox import Outbox, TargetStats
from bridge.payload import Payload
from bridge.render import Renderer
from bridge.worker import Sleep, TargetWorker
from sheepdog.config import BridgeConfig, Config
from sheepdog.core.db import DatabaseUnavailable
from sheepdog.core.errors import ConfigError
from sheepdog.core.runtime import Runtime

__all__ = ["BRIDGE", "HOUSEKEEPING_SECONDS", "Bridge", "check_bridge_config"]

log = logging.getLogger("sheepdog.bridge")

HOUSEKEEPING_SECONDS: Final = 3600.0
"""How often sent rows older than a week are pruned."""
RECOVERY_RETRY_SECONDS: Final = 5.0


def check_bridge_config(config: BridgeConfig) -> Renderer:
    """Build the renderer for ``config`` and load every target's templates, or raise
    :class:`ConfigError` naming the target."""
    try:
        renderer = Renderer(config)
    except (OSError, ValueError) as exc:
        raise ConfigError("bridge.templates_dir", f"cannot load templates: {exc}") from None
    for name, target in config.targets.items():
        renderer.check(target, f"bridge.targets.{name}.template")
    return renderer


class Bridge:
    def __init__(self, runtime: Runtime, *, rng: random.Random | None = None) -> None:
        self.runtime = runtime
        self.outbox = Outbox(runtime.db)
        self.metrics = BridgeMetrics(runtime.registry)
        self.renderer = check_bridge_config(runtime.config.bridge)
        self.workers: dict[str, TargetWorker] = {}
        self.session: aiohttp.ClientSession | None = None
        self._rng = rng
        self._sleep: Sleep = getattr(runtime.clock, "sleep", None) or asyncio.sleep
        self._stats: dict[str, TargetStats] = {}
        self._housekeeping: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._refresh_again = False
        self._started = False
        self.metrics.add_targets(runtime.config.bridge.targets, self.age_of)

    # Life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Queue again what a crash left in flight, then start the workers.

        If the outbox cannot be opened yet, this goes on trying in the background: the workers
        start only after the recovery, so that none of them holds a row being reset.
        """
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.runtime.config.bridge.retry.timeout_seconds),
            trust_env=True,
        )
        if not await self._recover():
            self._housekeeping = asyncio.create_task(self._boot(), name="sheepdog-bridge-boot")
            return
        self._start_all()

    async def _recover(self) -> bool:
        now = self.runtime.clock.now().timestamp()
        try:
            recovered = await self.outbox.recover(now)
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
        for name in self.runtime.config.bridge.targets:
            self._start_worker(name, self.runtime.config)
        self._housekeeping = asyncio.create_task(self._housekeep(), name="sheepdog-bridge-prune")
        self._started = True

    async def stop(self) -> None:
        for task in (self._housekeeping, self._refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(worker.stop() for worker in self.workers.values()))
        self.workers.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None
        self._started = False

    def _start_worker(self, name: str, config: Config) -> None:
        target = config.bridge.targets[name]
        worker = TargetWorker(
            target=target,
            notifier=make_notifier(
                target, self.renderer, self.session, config.bridge.retry.timeout_seconds
            ),
            outbox=self.outbox,
            clock=self.runtime.clock,
            sleep=self._sleep,
            retry=config.bridge.retry,
            metrics=self.metrics,
            on_change=self.refresh,
            rng=self._rng,
        )
        self.workers[name] = worker
        worker.start()

    # Receiving -------------------------------------------------------------------------------

    async def accept(self, target: str, payload: Payload) -> tuple[int, bool]:
        """Store ``payload`` durably; ``(id, False)`` if it repeats one stored a moment ago."""
        now = self.runtime.clock.now().timestamp()
        row_id, is_new = await self.outbox.add(target, payload, now)
        if is_new:
            for alert in payload["alerts"]:
                self.metrics.alerts_received.labels(target, alert["status"]).inc()
            worker = self.workers.get(target)
            if worker is not None:
                worker.wake()
            self._refresh_soon()
        return row_id, is_new

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
        for name in self.runtime.config.bridge.targets:
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

    # Readiness and reload --------------------------------------------------------------------

    def readiness(self) -> str | None:
        if not self._started:
            return "bridge workers not started"
        stopped = sorted(name for name, worker in self.workers.items() if not worker.running)
        missing = sorted(set(self.runtime.config.bridge.targets) - set(self.workers))
        if stopped or missing:
            return f"bridge workers not running: {', '.join(stopped + missing)}"
        return None

    def check(self, new: Config) -> None:
        check_bridge_config(new.bridge)

    async def apply(self, new: Config) -> None:
        self.renderer = check_bridge_config(new.bridge)
        old_names = set(self.workers)
        new_names = set(new.bridge.targets)
        for name in sorted(old_names - new_names):
            await self.workers.pop(name).stop()
            stats = self._stats.get(name)
            if stats is not None and stats.waiting:
                log.warning(
                    "target removed from the config; its notifications stay in the "
                    "outbox until it comes back",
                    extra={"target": name, "waiting": stats.waiting},
                )
        self.metrics.remove_targets(old_names - new_names)
        self.metrics.add_targets(sorted(new_names - old_names), self.age_of)
        for name in sorted(new_names & old_names):
            target = new.bridge.targets[name]
            notifier = make_notifier(
                target, self.renderer, self.session, new.bridge.retry.timeout_seconds
            )
            self.workers[name].reconfigure(target, notifier, new.bridge.retry)
        if self._started:
            for name in sorted(new_names - old_names):
                self._start_worker(name, new)
        with contextlib.suppress(DatabaseUnavailable):
            await self.refresh()


BRIDGE: Final = web.AppKey("sheepdog.bridge", Bridge)
