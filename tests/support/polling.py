"""Waiting for something that happens in its own time, with a deadline that says what was awaited.

Poll where the code under test gives no signal to wait on (another process, a peer's inbox, a
gauge that settles). A fixed sleep races the machine's load; a poll only waits as long as needed,
and its timeout is a bound for a failing run, never a measurement.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["wait_until", "wait_until_async"]

T = TypeVar("T")


def _failure(what: str, timeout: float, describe: Callable[[], object] | None) -> AssertionError:
    detail = f"\n{describe()}" if describe is not None else ""
    return AssertionError(f"not within {timeout:g} s: {what}{detail}")


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float = 20.0,
    what: str,
    interval: float = 0.05,
    describe: Callable[[], object] | None = None,
) -> T:
    """Call ``condition`` until it returns something truthy, and return that.

    Raises AssertionError naming ``what`` (and ``describe()``, the state worth seeing) once
    ``timeout`` seconds have passed; ``condition`` is always tried once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, describe)
        time.sleep(interval)


async def wait_until_async(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 20.0,
    what: str,
    interval: float = 0.01,
    describe: Callable[[], object] | None = None,
) -> T:
    """As :func:`wait_until`, without blocking the event loop; ``condition`` may be async."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, describe)
        await asyncio.sleep(interval)
