"""A DingTalk target's config: ``type: dingtalk``, the robot URL, its 加签 secret, and who to
mention."""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import field_validator

from bridge.channels.base import WebhookTargetConfig
from sheepdog.core.config import ConfigModel, NonNegativeNumber, Text, config_error, section
from sheepdog.core.secret import Secret

__all__ = ["USER_ID", "DingTalkMentions", "DingTalkTarget"]

USER_ID: Final = re.compile(r"^[\w.-]{1,64}$")
"""A DingTalk user id: written as ``@<userid>`` in the text, so nothing that could be markup."""


class DingTalkMentions(ConfigModel):
    mobiles: tuple[Text, ...] = ()
    """Mentioned by mobile number (``at.atMobiles``, and ``@<mobile>`` in the text)."""
    userids: tuple[Text, ...] = ()
    """Mentioned by DingTalk user id (``at.atUserIds``, and ``@<userid>`` in the text)."""
    all: bool = False
    """Mention everyone (``at.isAtAll``) whenever something fires."""

    @field_validator("userids")
    @classmethod
    def _plain_ids(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for index, value in enumerate(values):
            if not USER_ID.match(value):
                raise config_error(
                    f"{value!r} is not a DingTalk user id (letters, digits, '_', '.', '-')", index
                )
        return values


class DingTalkTarget(WebhookTargetConfig):
    type: Literal["dingtalk"]
    rate_per_minute: NonNegativeNumber = 20.0
    """The robot takes 20 messages a minute; past that it refuses everything for 10 minutes."""
    secret: Secret | None = None
    """The robot's 加签 signing secret (``SEC…``): each request is signed when it is sent."""
    mentions: DingTalkMentions = section()
