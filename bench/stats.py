"""Percentiles and the small result records every measurement returns."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class LoadResult:
    """What one fixed-duration HTTP load run measured. Latencies are in seconds."""

    requests: int
    ok: int
    duration: float
    p50: float
    p90: float
    p99: float
    max: float
    errors: dict[str, int] = field(default_factory=dict)
    generator: str = ""

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.ok / self.duration if self.duration > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())
