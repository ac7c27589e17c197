"""A WeChat Work target's config: ``type: wechat``, the robot URL, who to mention."""

from __future__ import annotations

from typing import Literal

from bridge.channels.base import WebhookTargetConfig
from sheepdog.core.config import ConfigModel, NonNegativeNumber, Text, section

__all__ = ["Mentions", "WeChatTarget"]


class Mentions(ConfigModel):
    userids: tuple[Text, ...] = ()
    """Mentioned as ``<@userid>`` in the markdown."""
    mobiles: tuple[Text, ...] = ()
    """Mentioned in a short text message after the markdown (markdown cannot)."""


class WeChatTarget(WebhookTargetConfig):
    type: Literal["wechat"]
    rate_per_minute: NonNegativeNumber = 20.0
    """The robot takes 20 messages a minute and answers errcode 45009 past that."""
    mentions: Mentions = section()
