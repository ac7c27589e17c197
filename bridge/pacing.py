"""How fast a worker may send, and how long it waits after a failure.

The rate limit is a sliding window (at most ``capacity`` sends in any ``window`` seconds), not
a token bucket: a bucket that is full after a quiet spell lets a burst through on top of the
steady rate, so "20 per minute" would become up to 40 in some minute, and the WeChat robot
answers errcode 45009 past 20 in a minute. Sends are recorded when they finish, so the peer
has seen each request by the time its slot is counted.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable
from typing import Final

from bridge.channels.base import Limit

__all__ = ["RateLimiter", "RateLimits", "backoff_delay", "combine_limits"]

_MINUTE: Final = 60.0


class RateLimiter:
    """At most ``rate_per_minute`` sends a minute, never more in any 60-second window.

    ``rate_per_minute`` 0 means no limit. A fractional rate widens the window instead
    (0.5 a minute: 1 send in any 120 s). Time is whatever monotonic clock the caller passes.
    """

    def __init__(self, rate_per_minute: float) -> None:
        self._sent: deque[float] = deque()
        self.capacity = 0
        self.window = 0.0
        self.configure(rate_per_minute)

    def configure(self, rate_per_minute: float) -> None:
        """Change the rate, keeping what was sent recently (a reload must not reset it)."""
        self.rate_per_minute = rate_per_minute
        if rate_per_minute <= 0:
            self.capacity, self.window = 0, 0.0
            self._sent.clear()
            return
        self.capacity = max(1, math.floor(rate_per_minute))
        self.window = _MINUTE * self.capacity / rate_per_minute

    @property
    def unlimited(self) -> bool:
        return self.capacity == 0

    def available(self, now: float) -> int:
        """How many sends may go now; a large number when there is no limit."""
        if self.unlimited:
            return 1 << 30
        self._forget(now)
        return max(0, self.capacity - len(self._sent))

    def wait_time(self, now: float) -> float:
        """Seconds until one more send may go (0 if one may go now)."""
        if self.available(now) > 0:
            return 0.0
        return max(0.0, self._sent[len(self._sent) - self.capacity] + self.window - now)

    def record(self, now: float) -> None:
        """Count one send (successful or not: the peer counts every request)."""
        if self.unlimited:
            return
        self._sent.append(now)
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self._sent and self._sent[0] + self.window <= now:
            self._sent.popleft()
        # Keep no more history than the window can need, whatever the rate was before.
        while len(self._sent) > self.capacity:
            self._sent.popleft()


class RateLimits:
    """Several sliding windows at once (a Feishu bot: 100 a minute and 5 a second), over one
    history of sends: a destination's pace. Reconfiguring keeps the history, so a reload (or a
    target moving here) never lets a burst through."""

    def __init__(self, limits: Iterable[Limit] = ()) -> None:
        self._sent: deque[float] = deque()
        self._windows: list[tuple[int, float]] = []
        self.configure(limits)

    def configure(self, limits: Iterable[Limit]) -> None:
        windows = []
        for limit in limits:
            if limit.count > 0 and limit.seconds > 0:
                capacity = max(1, math.floor(limit.count))
                windows.append((capacity, limit.seconds * capacity / limit.count))
        self._windows = windows

    @property
    def unlimited(self) -> bool:
        return not self._windows

    def available(self, now: float) -> int:
        """How many sends may go now; a large number when there is no limit."""
        if self.unlimited:
            return 1 << 30
        self._forget(now)
        return max(
            0, min(capacity - self._count(now, window) for capacity, window in self._windows)
        )

    def wait_time(self, now: float) -> float:
        """Seconds until one more send may go (0 if one may go now)."""
        wait = 0.0
        for capacity, window in self._windows:
            if self._count(now, window) >= capacity:
                wait = max(wait, self._sent[len(self._sent) - capacity] + window - now)
        return max(0.0, wait)

    def delay(self, count: int, now: float, most: float = math.inf) -> float:
        """Seconds from ``now`` until the last of ``count`` more sends could go, sent one
        after another as soon as every window allows (0 if all may go now). Stops counting
        once past ``most``: what a caller weighing "one by one or merged" needs to know."""
        if self.unlimited or count <= 0:
            return 0.0
        self._forget(now)
        sent = list(self._sent)
        at = now
        for _ in range(count):
            for capacity, window in self._windows:
                if len(sent) >= capacity:
                    at = max(at, sent[-capacity] + window)
            if at - now > most:
                break
            sent.append(at)
        return at - now

    def record(self, now: float) -> None:
        """Count one send (successful or not: the peer counts every request)."""
        self._sent.append(now)
        self._forget(now)

    def history(self) -> list[float]:
        """The recent sends, oldest first: what a process taking the destination over needs."""
        return list(self._sent)

    def adopt(self, sends: Iterable[float]) -> None:
        """Take the history another process kept for this destination in place of our own."""
        self._sent = deque(sorted(sends)[-max(_HISTORY, 1) :])

    def _count(self, now: float, window: float) -> int:
        count = 0
        for moment in reversed(self._sent):
            if moment + window <= now:
                break
            count += 1
        return count

    def _forget(self, now: float) -> None:
        # Keep only what some window may still need (all of it while none is configured,
        # up to a bound, so that limits configured later see the recent past).
        longest = max((window for _, window in self._windows), default=_MINUTE)
        while self._sent and self._sent[0] + longest <= now:
            self._sent.popleft()
        most = max((capacity for capacity, _ in self._windows), default=_HISTORY)
        while len(self._sent) > max(most, _HISTORY):
            self._sent.popleft()


_HISTORY: Final = 1000


def combine_limits(limit_sets: Iterable[Iterable[Limit]]) -> tuple[Limit, ...]:
    """The limits of a destination that several targets post to: for each window length, the
    smallest count any of them allows."""
    smallest: dict[float, float] = {}
    for limits in limit_sets:
        for limit in limits:
            current = smallest.get(limit.seconds)
            smallest[limit.seconds] = limit.count if current is None else min(current, limit.count)
    return tuple(Limit(count, seconds) for seconds, count in sorted(smallest.items()))


def backoff_delay(
    attempt: int, initial: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Seconds before retry number ``attempt`` (1 for the first retry).

    Exponential (``initial`` doubling up to ``maximum``) with jitter: a random point in the
    upper half of the step, so that retries spread out yet never come sooner than half of it.
    """
    step = min(maximum, initial * (2.0 ** max(0, attempt - 1)))
    return step * (0.5 + 0.5 * (rng or random).random())
