"""A DingTalk target's config: ``type: dingtalk``, the robot URL, its 加签 secret, and who to
mention."""

from __future__ import annotations

from typing import Literal

from bridge.channels.base import WebhookTargetConfig
from sheepdog.core.config import ConfigModel, NonNegativeNumber, Text, section
from sheepdog.core.secret import Secret

__all__ = ["DingTalkMentions", "DingTalkTarget"]


class DingTalkMentions(ConfigModel):
    mobiles: tuple[Text, ...] = ()
    """Mentioned by mobile number (``at.atMobiles``, and ``@<mobile>`` in the text)."""
    userids: tuple[Text, ...] = ()
    """Mentioned by DingTalk user id (``at.atUserIds``, and ``@<userid>`` in the text)."""
    all: bool = False
    """Mention everyone (``at.isAtAll``) whenever something fires."""


class DingTalkTarget(WebhookTargetConfig):
    type: Literal["dingtalk"]
    rate_per_minute: NonNegativeNumber = 20.0
    """The robot takes 20 messages a minute; past that it refuses everything for 10 minutes."""
    secret: Secret | None = None
    """The robot's 加签 signing secret (``SEC…``): each request is signed when it is sent."""
    mentions: DingTalkMentions = section()
