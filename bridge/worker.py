"""One delivery worker per destination: takes the notifications of every target that posts
there from the outbox, in order, and sends them.

A destination is what a channel says its targets post to (a robot's URL, a webhook, a mail
relay and its recipients): two targets on one WeChat robot share its 20 messages a minute and
its FIFO order, so there is one worker and one rate limit for the robot, not one per target.

The loop, in short: wait until the oldest waiting notification is due and the rate limit has
room; if sending the waiting notifications one by one, as fast as the destination's windows
allow, would hold the last back more than a few seconds, merge those of the oldest one's
target into one digest (templates and mentions differ between targets, so a digest never
mixes them), else take the oldest alone; load its payload and render it into messages (parts,
mention follow-up); send them one by one, each waiting for the rate limit; on a retryable
failure wait (backoff, ``Retry-After``) and go on from the message that failed; on a permanent
failure, or past the give-up time, dead-letter the notifications. A notification is marked sent
only when all its messages are.

The worker reads its targets from its :class:`Routes` at every step and every message, so a
reload takes effect at once; a notification whose target moved to another destination (or was
removed) is given back to the queue for the right worker.

Several processes may share the outbox (``workers`` > 1, replicas on PostgreSQL): then only the
one holding the destination's lease delivers to it, renewing the lease as it goes (also while it
waits to retry) and giving up the batch if another process took the destination over. When it
takes a destination over, it adopts the send times the last holder kept, so the rate limit holds
across processes, and queues again the rows the last holder had claimed.

All waiting goes through the clock's ``sleep`` when it has one (tests pass a clock that moves
time by hand), else ``asyncio.sleep``; deadlines come from ``clock.now()`` and the rate limit
from ``clock.monotonic()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from bridge.channels.base import Message, Notifier, TargetConfig
from bridge.classify import Outcome, Verdict
from bridge.config import RetryConfig
from bridge.digest import merge
from bridge.metrics import BridgeMetrics
from bridge.outbox import Outbox, Row
from bridge.pacing import RateLimits, backoff_delay
from bridge.render import TemplateFailure, humanize_seconds
from sheepdog.core.clock import Clock
from sheepdog.core.db import DatabaseUnavailable
from sheepdog.core.process import process_name

__all__ = [
    "DIGEST_AFTER_SECONDS",
    "IDLE_POLL_SECONDS",
    "MAX_DIGEST_NOTIFICATIONS",
    "DestinationWorker",
    "Route",
    "Routes",
    "Sleep",
]

log = logging.getLogger("sheepdog.bridge.worker")

Sleep = Callable[[float], Awaitable[None]]

IDLE_POLL_SECONDS: Final = 5.0
"""How often an idle worker looks for work it was not told about (``sheepdog outbox retry``)."""
MAX_DIGEST_NOTIFICATIONS: Final = 500
DIGEST_AFTER_SECONDS: Final = 5.0
"""Waiting notifications are merged into a digest only when sending them one by one, as fast
as the destination's windows allow, would hold the last one back longer than this."""
_TROUBLE_PAUSE: Final = 5.0
DEFAULT_LEASE_SECONDS: Final = 30.0
_WORKER_NUMBERS: Final = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Route:
    """A target as its destination's worker sees it."""

    target: TargetConfig
    notifier: Notifier
    destination: str


class Routes(Protocol):
    """Where the worker finds its targets: the bridge's current (committed) configuration."""

    @property
    def retry(self) -> RetryConfig: ...

    def on(self, destination: str) -> Mapping[str, Route]:
        """The targets posting to ``destination`` now, by name."""
        ...


class DestinationWorker:
    def __init__(
        self,
        *,
        destination: str,
        routes: Routes,
        limits: RateLimits,
        outbox: Outbox,
        clock: Clock,
        sleep: Sleep,
        metrics: BridgeMetrics,
        on_change: Callable[[], Awaitable[None]],
        rng: random.Random | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        shared: bool = False,
    ) -> None:
        self.destination = destination
        """The channel's key for it (a digest where it holds a secret): safe to log."""
        self.limits = limits
        self._routes = routes
        self._outbox = outbox
        self._clock = clock
        self._sleep = sleep
        self._metrics = metrics
        self._on_change = on_change
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._holder = f"{process_name()}:{next(_WORKER_NUMBERS)}"
        self._lease_seconds = lease_seconds
        self._shared = shared
        """Whether other processes deliver from the same outbox (then the lease is renewed
        during long waits; alone, nobody could take it)."""
        self._lease_until = 0.0
        """Wall-clock time until which this worker holds the destination's lease."""
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._held: list[int] = []
        """Rows this worker has claimed and is delivering (or waiting to retry)."""
        self._unrecorded: list[int] = []
        """Rows delivered whose ``sent`` mark the outbox could not take yet (disk full)."""

    @property
    def targets(self) -> list[str]:
        return list(self._routes.on(self.destination))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(
            self._run(), name=f"sheepdog-bridge-{','.join(self.targets) or self.destination}"
        )

    def wake(self) -> None:
        """New work was stored, or the configuration changed: look now."""
        self._wakeup.set()

    async def stop(self) -> None:
        """Stop, and give back to the queue whatever was held (it goes out after a restart)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._unrecorded:
            try:
                await self._record_unrecorded()
            except DatabaseUnavailable:
                log.warning(
                    "delivered notifications could not be marked sent; they will be sent "
                    "again after a restart",
                    extra={"targets": ",".join(self.targets), "ids": self._unrecorded},
                )
        if self._held:
            held, self._held = self._held, []
            try:
                await self._outbox.release(held, self._now())
            except DatabaseUnavailable:
                log.warning(
                    "could not release notifications; they are queued again at start-up",
                    extra={"targets": ",".join(self.targets), "ids": held},
                )
        if self._lease_until > 0:
            self._lease_until = 0.0
            with contextlib.suppress(DatabaseUnavailable):
                await self._outbox.let_go(self.destination, self._holder)

    # ----------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except DatabaseUnavailable as exc:
                log.warning(
                    "outbox unavailable, will try again",
                    extra={"targets": ",".join(self.targets), "reason": str(exc)},
                )
                await self._pause(_TROUBLE_PAUSE, wakeable=False)
            except Exception:
                log.exception(
                    "delivery worker hit an unexpected error; it carries on",
                    extra={"targets": ",".join(self.targets)},
                )
                await self._pause(_TROUBLE_PAUSE, wakeable=False)

    async def _step(self) -> None:
        if self._unrecorded:  # delivered while the outbox could not be written: say so first
            await self._record_unrecorded()
        if self._held:  # an earlier step broke off: its rows go back to the queue first
            await self._outbox.release(self._held, self._now())
            self._held = []
        routes = self._routes.on(self.destination)
        now = self._now()
        if not routes or not await self._hold(now):
            await self._pause(IDLE_POLL_SECONDS)
            return
        rows = await self._outbox.waiting(list(routes), MAX_DIGEST_NOTIFICATIONS)
        if not rows:
            await self._pause(IDLE_POLL_SECONDS)
            return
        if rows[0].next_attempt_at > now:  # still backing off from before a restart
            await self._pause(rows[0].next_attempt_at - now)
            return
        wait = self.limits.wait_time(self._clock.monotonic())
        if wait > 0:
            await self._pause(wait, wakeable=False)
            return
        due: list[Row] = []
        for row in rows:
            if row.next_attempt_at > now:
                break
            due.append(row)
        # Sending them one by one would hold the last back too long: a digest, of the oldest
        # notification's target only.
        delay = self.limits.delay(len(due), self._clock.monotonic(), most=DIGEST_AFTER_SECONDS)
        digest = len(due) > 1 and delay > DIGEST_AFTER_SECONDS
        await self._deliver(
            [row for row in due if row.target == due[0].target] if digest else due[:1]
        )

    async def _hold(self, now: float) -> bool:
        """Whether this worker holds the destination's lease, renewed once a third of it has
        passed. Taking it over from another process adopts its send times and queues again
        the rows it had claimed."""
        if not self._shared:  # alone on the outbox: nobody else could deliver
            return True
        if self._lease_until - now > self._lease_seconds * 2 / 3:
            return True
        grant = await self._outbox.lease(self.destination, self._holder, now, self._lease_seconds)
        if grant is None:
            self._lease_until = 0.0
            return False
        self._lease_until = now + self._lease_seconds
        if grant.fresh:
            self._adopt_sends(grant.sends)
            requeued = await self._outbox.requeue_claimed_by_others(
                list(self._routes.on(self.destination)), self._holder, now
            )
            if requeued:
                log.warning(
                    "took over a destination from a process that stopped holding it; its "
                    "notifications in flight are queued again",
                    extra={"targets": ",".join(self.targets), "count": requeued},
                )
        return True

    def _adopt_sends(self, sends: tuple[float, ...]) -> None:
        # Send times are kept on the wall clock (shared between processes); the rate limit
        # counts on the monotonic one.
        offset = self._clock.monotonic() - self._now()
        self.limits.adopt(moment + offset for moment in sends)

    async def _keep_sends(self) -> None:
        if self.limits.unlimited or not self._shared:
            return
        offset = self._now() - self._clock.monotonic()
        sends = [moment + offset for moment in self.limits.history()]
        with contextlib.suppress(DatabaseUnavailable):  # the next send writes it all again
            await self._outbox.record_sends(self.destination, self._holder, sends)

    async def _still_held(self) -> bool:
        """Before sending: if another process took the destination over, it has queued this
        batch again; this worker lets it go without touching the rows."""
        if await self._hold(self._now()):
            return True
        log.warning(
            "lost the destination to another process; it delivers these notifications",
            extra={"targets": ",".join(self.targets), "ids": self._held},
        )
        self._held = []
        return False

    async def _deliver(self, batch: list[Row]) -> None:
        name = batch[0].target
        ids = await self._outbox.claim([row.id for row in batch], self._holder, self._now())
        if len(ids) < len(batch):  # taken meanwhile (an operator, another process)
            claimed = set(ids)
            batch = [row for row in batch if row.id in claimed]
            if not batch:
                return
        self._held = ids
        loaded = await self._outbox.payloads(ids)
        payload, digest = merge([loaded[row_id] for row_id in ids if row_id in loaded])
        if digest is not None:
            self._metrics.merged.labels(name).inc(len(batch))
            log.info(
                "notifications merged into a digest to stay within the rate limit",
                extra={
                    "target": name,
                    "notifications": len(batch),
                    "alerts": len(payload["alerts"]),
                },
            )
        route = self._route(name)
        if route is None:
            return
        try:
            messages = route.notifier.compose(payload, now=self._clock.now(), digest=digest)
        except TemplateFailure as exc:
            self._metrics.failures.labels(name, "template_error").inc()
            await self._dead(batch, f"template_error: {exc}")
            return
        attempts = max(row.attempts for row in batch)
        deadline = min(row.queued_at for row in batch) + self._routes.retry.give_up_after_seconds
        index = 0
        while index < len(messages):
            if index > 0 or attempts > 0:
                await self._wait_for_rate()
            route = self._route(name)  # a reload may have changed it while we waited
            if route is None or not await self._still_held():
                return
            verdict = await self._send(name, route.notifier, messages[index])
            attempts += 1
            if verdict.outcome is Outcome.SENT:
                index += 1
                continue
            error = f"{verdict.reason}: {verdict.detail}" if verdict.detail else verdict.reason
            self._metrics.failures.labels(name, verdict.reason).inc()
            now = self._now()
            if verdict.outcome is Outcome.FAILED:
                await self._dead(batch, error)
                return
            if now >= deadline:
                age = humanize_seconds(now - min(row.queued_at for row in batch))
                await self._dead(batch, f"gave up after {attempts} attempts in {age}: {error}")
                return
            delay = min(self._retry_delay(verdict, attempts), max(0.0, deadline - now))
            self._metrics.notifications.labels(name, "retried").inc()
            try:
                await self._outbox.mark_retry(ids, now, now + delay, error)
            except DatabaseUnavailable as exc:
                # Only bookkeeping is lost: the rows stay in flight with this worker, which
                # goes on from the message that failed rather than starting them over.
                log.warning(
                    "could not record a failed attempt in the outbox; retrying all the same",
                    extra={"target": name, "ids": ids, "reason": str(exc)},
                )
            log.warning(
                "delivery failed, will retry",
                extra={
                    "target": name,
                    "ids": ids,
                    "attempt": attempts,
                    "retry_in": round(delay, 3),
                    "reason": verdict.reason,
                    "error": verdict.detail,
                },
            )
            await self._changed()
            await self._pause_holding(delay)
        log.info(
            "delivered",
            extra={
                "target": name,
                "ids": ids,
                "messages": len(messages),
                "destination": route.notifier.destination(),
            },
        )
        # From here on the rows must never go back to the queue: that would send them twice.
        self._held, self._unrecorded = [], ids
        await self._record_unrecorded()

    def _route(self, name: str) -> Route | None:
        """The target's current route, or None (its rows released) if it is no longer here."""
        route = self._routes.on(self.destination).get(name)
        if route is None:
            log.info(
                "target moved or removed by a reload; its notifications go back to the queue",
                extra={"target": name, "ids": self._held},
            )
        return route

    async def _record_unrecorded(self) -> None:
        """Mark delivered rows sent; if the outbox cannot be written, they stay to be marked
        at the next step (nothing else is sent before), never queued again."""
        ids = self._unrecorded
        await self._outbox.mark_sent(ids, self._now())
        self._unrecorded = []
        await self._changed()

    async def _changed(self) -> None:
        # The gauges can wait for the next change if the outbox cannot be read right now.
        with contextlib.suppress(DatabaseUnavailable):
            await self._on_change()

    async def _send(self, name: str, notifier: Notifier, message: Message) -> Verdict:
        started = self._clock.monotonic()
        verdict = await notifier.send(message)
        finished = self._clock.monotonic()
        self.limits.record(finished)
        await self._keep_sends()
        self._metrics.duration.labels(name).observe(max(0.0, finished - started))
        if verdict.outcome is Outcome.SENT:
            self._metrics.notifications.labels(name, "sent").inc()
        return verdict

    def _retry_delay(self, verdict: Verdict, attempts: int) -> float:
        if verdict.retry_after is not None:
            return verdict.retry_after
        retry = self._routes.retry
        return backoff_delay(attempts, retry.initial_seconds, retry.max_seconds, self._rng)

    async def _dead(self, batch: list[Row], error: str) -> None:
        ids = [row.id for row in batch]
        name = batch[0].target
        self._metrics.notifications.labels(name, "failed").inc()
        await self._outbox.mark_dead(ids, self._now(), error)
        self._held = []
        log.error(
            "notification dead-lettered; `sheepdog outbox retry` sends it again",
            extra={
                "target": name,
                "ids": ids,
                "error": error,
                "alerts": ",".join(sorted({n for r in batch for n in r.alert_names})),
            },
        )
        await self._changed()

    async def _wait_for_rate(self) -> None:
        while (wait := self.limits.wait_time(self._clock.monotonic())) > 0:
            await self._pause_holding(wait)

    async def _pause_holding(self, seconds: float) -> None:
        """Wait ``seconds`` (not woken by new work), renewing the lease on the way; the rows
        are checked again (:meth:`_still_held`) before the next send."""
        if not self._shared:
            await self._pause(seconds, wakeable=False)
            return
        end = self._clock.monotonic() + seconds
        while (left := end - self._clock.monotonic()) > 0:
            await self._pause(min(left, self._lease_seconds / 3), wakeable=False)
            if self._clock.monotonic() < end:
                with contextlib.suppress(DatabaseUnavailable):
                    await self._hold(self._now())

    async def _pause(self, seconds: float, *, wakeable: bool = True) -> None:
        seconds = max(0.0, seconds)
        if not wakeable:
            await self._sleep(seconds)
            return
        if self._wakeup.is_set():
            self._wakeup.clear()
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waker = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            await asyncio.gather(sleeper, waker, return_exceptions=True)
        self._wakeup.clear()

    def _now(self) -> float:
        return self._clock.now().timestamp()
