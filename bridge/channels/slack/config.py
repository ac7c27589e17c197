"""A Slack target's config: ``type: slack`` and the incoming webhook's URL."""

from __future__ import annotations

from typing import Literal

from bridge.channels.base import WebhookTargetConfig
from sheepdog.core.config import NonNegativeNumber

__all__ = ["SlackTarget"]


class SlackTarget(WebhookTargetConfig):
    type: Literal["slack"]
    rate_per_minute: NonNegativeNumber = 60.0
    """Slack takes about one message a second per channel."""
