"""Whole-request deadlines (``timeout_seconds``): one timer for every request in flight.

aiohttp's total timeout gives each request a timer handle on the loop's heap and a timeout context
entered on every read of the answer, which was one of the larger costs the relay had over a bare
pass-through (bench/analysis.md). Here a request runs inside an ``asyncio.timeout(None)`` scope
that costs no timer; the scope is a dict entry, and one timer fires at the earliest deadline and
expires the scopes that are due (``Timeout.reschedule``), so a request past its deadline gets
asyncio's own ``TimeoutError`` at the end of its scope, as with ``asyncio.timeout``.

Requests with the same timeout end their entries in the order they started: each timeout's
entries are kept in deadline order, and the earliest of them is the first.
"""

from __future__ import annotations

import asyncio
import math

__all__ = ["Deadlines"]


class Deadlines:
    def __init__(self) -> None:
        self._by_timeout: dict[float, dict[asyncio.Timeout, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def add(self, scope: asyncio.Timeout, timeout: float) -> None:
        """Expire ``scope`` (entered, not yet left) ``timeout`` seconds from now."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        scopes = self._by_timeout.get(timeout)
        if scopes is None:
            scopes = self._by_timeout[timeout] = {}
        scopes[scope] = deadline
        if deadline < self._timer_at:
            self._schedule(loop, deadline)

    def discard(self, scope: asyncio.Timeout, timeout: float) -> None:
        """The request is done (call before leaving the scope)."""
        scopes = self._by_timeout.get(timeout)
        if scopes is not None:
            scopes.pop(scope, None)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf

    def _schedule(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = loop.call_at(when, self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = loop.time()
        earliest = math.inf
        for timeout, scopes in list(self._by_timeout.items()):
            while scopes:
                scope, deadline = next(iter(scopes.items()))
                if deadline > now:
                    earliest = min(earliest, deadline)
                    break
                del scopes[scope]
                scope.reschedule(now)  # due: its task is cancelled and gets TimeoutError
            if not scopes:
                del self._by_timeout[timeout]
        if earliest < math.inf:
            self._schedule(loop, earliest)
