"""A clock for tests: time moves only when told to, or (autojump) whenever everyone waits.

It is a :class:`sheepdog.core.clock.Clock` with an async ``sleep``, which the bridge's workers use
for all their waiting. ``advance(seconds)`` wakes the sleepers due in between, in order. With
``autojump`` set, a background task jumps to the next sleeper's deadline once nothing has
happened for that many real seconds, so a test can wait for "24 hours" in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from datetime import UTC, datetime, timedelta

__all__ = ["ROUNDING", "FakeClock"]

# Fake times are sums of floats, and a wait is measured as a difference of two of them: a 120 s
# wait can measure 119.99999999999977. Lower bounds on measured waits allow this much.
ROUNDING = 1e-6


class FakeClock:
    def __init__(
        self,
        start: datetime = datetime(2026, 11, 26, 22, 0, tzinfo=UTC),
        *,
        autojump: float | None = None,
    ) -> None:
        self._start_wall = start
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._begun = 0
        self._activity = 0
        self._autojump = autojump
        self._jumper: asyncio.Task[None] | None = None
        self._closed = False

    # Clock ------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self._start_wall + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return 1000.0 + self._elapsed

    def time(self) -> float:
        return self.now().timestamp()

    async def sleep(self, seconds: float) -> None:
        self._ensure_jumper()
        self._activity += 1
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._begun += 1
        entry = (self._elapsed + seconds, next(self._order), future)
        heapq.heappush(self._sleepers, entry)
        try:
            await future
        finally:
            if not future.done():
                future.cancel()
            self._activity += 1

    # Moving time -----------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        """Seconds moved since the start."""
        return self._elapsed

    @property
    def sleeps_begun(self) -> int:
        """How many sleeps (longer than 0) have begun so far."""
        return self._begun

    def asleep_until(self, deadline: float, *, begun_after: int) -> int:
        """How many of the sleeps begun after the first ``begun_after`` wait until ``deadline``
        (seconds since the start): a test can tell that its tasks have gone back to sleep."""
        return sum(
            1
            for when, order, future in self._sleepers
            if order >= begun_after and when == deadline and not future.done()
        )

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its deadline and letting it run."""
        target = self._elapsed + seconds
        while True:
            await _settle()
            deadline = self._next_deadline()
            if deadline is None or deadline > target:
                break
            self._wake_until(deadline)
        self._elapsed = max(self._elapsed, target)
        await _settle()

    def _next_deadline(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def _wake_until(self, deadline: float) -> None:
        self._elapsed = max(self._elapsed, deadline)
        while self._sleepers and self._sleepers[0][0] <= deadline:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        self._activity += 1

    def _ensure_jumper(self) -> None:
        # Not after close(): a worker still sleeping while the test tears down would start a task
        # that its loop then destroys pending, which asyncio logs as an error at some later GC.
        if self._closed or self._autojump is None:
            return
        if self._jumper is None or self._jumper.done():
            self._jumper = asyncio.get_running_loop().create_task(self._jump_when_idle())

    async def _jump_when_idle(self) -> None:
        assert self._autojump is not None
        seen = -1
        while True:
            await asyncio.sleep(self._autojump)
            if self._activity == seen:
                deadline = self._next_deadline()
                if deadline is not None:
                    self._wake_until(deadline)
            seen = self._activity

    async def close(self) -> None:
        self._closed = True
        if self._jumper is not None:
            self._jumper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._jumper


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)
