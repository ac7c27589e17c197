"""The channels sheepdog can deliver to. The rest of the bridge knows them only from here.

Adding a channel: a package in ``bridge/channels/<name>/`` defining a
:class:`~bridge.channels.base.Channel` and ``CHANNEL``, its tests, and one line below.
"""

from __future__ import annotations

from typing import Final

from bridge.channels import dingtalk, email, feishu, log, slack, wechat
from bridge.channels.base import Channel

__all__ = ["CHANNELS", "channel_of"]

CHANNELS: Final[dict[str, Channel]] = {
    channel.name: channel
    for channel in (
        wechat.CHANNEL,
        dingtalk.CHANNEL,
        feishu.CHANNEL,
        slack.CHANNEL,
        email.CHANNEL,
        log.CHANNEL,
    )
}


def channel_of(type_name: str) -> Channel:
    """The channel of a target's ``type``."""
    return CHANNELS[type_name]
