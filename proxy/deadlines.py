"""Whole-request deadlines (``timeout_seconds``): one timer for every request in flight.

aiohttp's total timeout gives each request a timer handle on the loop's heap and a timeout context
entered on every read of the answer, which was one of the larger costs the relay had over a bare
pass-through (bench/analysis.md). Here a request's deadline is a dict entry, and one timer fires at
the earliest deadline and cancels the tasks whose deadlines are due, as ``asyncio.timeout`` does;
:meth:`Deadline.timed_out` then tells that cancellation from any other, as ``asyncio.timeout``
tells it apart to raise ``TimeoutError``.

Not ``asyncio.timeout`` itself: making and entering one asks for the running loop twice, and on
Linux each of those is a ``getpid`` system call (CPython checks the loop belongs to this process),
three a request with the loop's time; the loop is known here once the app has started.

Requests with the same timeout end their entries in the order they started: each timeout's
entries are kept in deadline order, and the earliest of them is the first.
"""

from __future__ import annotations

import asyncio
import math

__all__ = ["Deadline", "Deadlines"]


class Deadline:
    """One request's deadline: the task it cancels once due."""

    __slots__ = ("_cancelling", "_task", "expired", "timeout")

    def __init__(self, task: asyncio.Task[object], timeout: float) -> None:
        self._task = task
        self._cancelling = task.cancelling()
        self.timeout = timeout
        self.expired = False

    def timed_out(self) -> bool:
        """Whether the deadline ended the request: call once, after :meth:`Deadlines.leave`,
        where its task was cancelled or returned. A cancellation that was the deadline's is
        taken back (``Task.uncancel``), as ``asyncio.timeout`` does before raising
        ``TimeoutError``; one from elsewhere (the client went away) stays."""
        return self.expired and self._task.uncancel() <= self._cancelling

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()


class Deadlines:
    def __init__(self) -> None:
        self._by_timeout: dict[float, dict[Deadline, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop`` from now on (the app's, at start-up), without asking for it again."""
        self._loop = loop

    def enter(self, timeout: float) -> Deadline:
        """Cancel the current task ``timeout`` seconds from now, unless it leaves first."""
        loop = self._loop or asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None, "deadlines are entered by requests' tasks"
        deadline = Deadline(task, timeout)
        when = loop.time() + timeout
        scopes = self._by_timeout.get(timeout)
        if scopes is None:
            scopes = self._by_timeout[timeout] = {}
        scopes[deadline] = when
        if when < self._timer_at:
            self._schedule(loop, when)
        return deadline

    def leave(self, deadline: Deadline) -> None:
        """The request is done with its deadline: it will not be cancelled by it any more."""
        scopes = self._by_timeout.get(deadline.timeout)
        if scopes is not None:
            scopes.pop(deadline, None)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf
        self._loop = None

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
                deadline, when = next(iter(scopes.items()))
                if when > now:
                    earliest = min(earliest, when)
                    break
                del scopes[deadline]
                deadline._expire()  # due: its task is cancelled
            if not scopes:
                del self._by_timeout[timeout]
        if earliest < math.inf:
            self._schedule(loop, earliest)
