"""The integrations, one module each, all behind :class:`~bridge.notifiers.base.Notifier`."""

from __future__ import annotations

import aiohttp

from bridge.notifiers.base import Message, Notifier
from bridge.notifiers.email import EmailNotifier
from bridge.notifiers.log import LogNotifier
from bridge.notifiers.slack import SlackNotifier
from bridge.notifiers.wechat import WeChatNotifier
from bridge.render import Renderer
from sheepdog.config import TargetConfig

__all__ = ["Message", "Notifier", "make_notifier"]


def make_notifier(
    target: TargetConfig,
    renderer: Renderer,
    session: aiohttp.ClientSession | None,
    timeout: float,
) -> Notifier:
    """The notifier for ``target``. ``session`` may be None where nothing is sent (render)."""
    if target.type == "wechat":
        return WeChatNotifier(target, renderer, session, timeout)
    if target.type == "slack":
        return SlackNotifier(target, renderer, session, timeout)
    if target.type == "email":
        return EmailNotifier(target, renderer, timeout)
    return LogNotifier(target, renderer)
