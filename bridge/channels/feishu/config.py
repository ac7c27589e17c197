"""A Feishu / Lark target's config: ``type: feishu``, the bot's webhook, its signing secret and
who to mention."""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import field_validator

from bridge.channels.base import WebhookTargetConfig
from sheepdog.core.config import ConfigModel, NonNegativeNumber, Text, config_error, section
from sheepdog.core.secret import Secret

__all__ = ["USER_ID", "FeishuMentions", "FeishuTarget"]

USER_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""An open_id (``ou_…``) or user_id: what ``<at id=…></at>`` takes."""


class FeishuMentions(ConfigModel):
    user_ids: tuple[Text, ...] = ()
    """Mentioned as ``<at id=…></at>``: open_ids (``ou_…``) or user_ids. A custom bot cannot
    mention by mobile number or email."""
    all: bool = False
    """Mention everyone (``<at id=all></at>``) whenever something fires; the group must allow
    it, or Feishu refuses the card."""

    @field_validator("user_ids")
    @classmethod
    def _plain_ids(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for index, value in enumerate(values):
            if not USER_ID.match(value):
                raise config_error(
                    f"{value!r} is not an open_id or user_id (letters, digits, '_' and '-')", index
                )
        return values


class FeishuTarget(WebhookTargetConfig):
    type: Literal["feishu"]
    rate_per_minute: NonNegativeNumber = 100.0
    """The bot takes 100 messages a minute, and never more than 5 a second whatever this says."""
    secret: Secret | None = None
    """The bot's signature-verification secret (签名校验): each request is signed when sent."""
    mentions: FeishuMentions = section()
