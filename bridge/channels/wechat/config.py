"""A WeChat Work target's config: ``type: wechat``, the robot URL, who to mention, the format."""

from __future__ import annotations

from typing import Literal

from bridge.channels.base import WebhookTargetConfig
from sheepdog.core.config import ConfigModel, NonNegativeNumber, Text, section

__all__ = ["Mentions", "WeChatFormat", "WeChatTarget"]

WeChatFormat = Literal["markdown", "markdown_v2"]


class Mentions(ConfigModel):
    userids: tuple[Text, ...] = ()
    """``markdown``: mentioned as ``<@userid>`` in the markdown. ``markdown_v2`` cannot mention:
    they are mentioned in a short text message after it (``mentioned_list``)."""
    mobiles: tuple[Text, ...] = ()
    """Mentioned in a short text message after the markdown (markdown cannot)."""


class WeChatTarget(WebhookTargetConfig):
    type: Literal["wechat"]
    rate_per_minute: NonNegativeNumber = 20.0
    """The robot takes 20 messages a minute and answers errcode 45009 past that."""
    mentions: Mentions = section()
    format: WeChatFormat = "markdown"
    """``markdown`` (colours, ``<@userid>``) or ``markdown_v2`` (tables, lists, code blocks; no
    colours, no mentions; clients older than 4.1.36 show it as plain text)."""
