"""A log target's config: ``type: log``, nothing else needed."""

from __future__ import annotations

from typing import Literal

from bridge.channels.base import TargetConfig
from sheepdog.core.config import NonNegativeNumber

__all__ = ["LogTarget"]


class LogTarget(TargetConfig):
    type: Literal["log"]
    rate_per_minute: NonNegativeNumber = 0.0
    """Standard output takes whatever comes: no limit."""
