"""Time as the service sees it, injectable so tests can move to a new month or skip an hour."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards, for durations and deadlines."""
        ...

    def time(self) -> float:
        """:meth:`now` as seconds since the epoch: what the request path compares with, as
        reading a number costs a fraction of making a ``datetime``."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    # The C functions themselves, not methods calling them: read several times a request.
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)
