"""Slack incoming webhooks: everything about the ``slack`` channel.

- :mod:`.config`: a target's keys (``url``, ``rate_per_minute`` 60).
- :mod:`.answers`: what Slack's answers mean (``ok``, ``invalid_payload``, ...).
- :mod:`.notifier`: composing Block Kit within Slack's limits, and sending.
- ``templates/slack.json.j2``: the built-in message; every ``{{ … }}`` in it is escaped for a
  JSON string and for mrkdwn (``&``, ``<``, ``>``), so alert text cannot mention or link.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import jinja2
from markupsafe import Markup

from bridge.channels.base import Channel, Message, hashed_key
from bridge.channels.slack import answers
from bridge.channels.slack.config import SlackTarget

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import aiohttp

    from bridge.channels.base import Notifier
    from bridge.render import Renderer

__all__ = ["CHANNEL", "Slack", "mrkdwn_escape"]


def mrkdwn_escape(value: Any) -> str:
    """Escape the three characters Slack's mrkdwn treats specially."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _finalize(value: Any) -> Markup:
    # Every expression in the Slack template lands inside a JSON string: escape it for mrkdwn
    # and for JSON. Markup (from |tojson, |safe, blocks, macros) goes in as it is.
    if isinstance(value, Markup):
        return value
    if value is None or isinstance(value, jinja2.Undefined):
        return Markup("")
    return Markup(json.dumps(mrkdwn_escape(value), ensure_ascii=False)[1:-1])  # noqa: S704


class Slack(Channel):
    name = "slack"
    config = SlackTarget
    templates = ("slack.json.j2",)
    template_dir = Path(__file__).parent / "templates"
    reasons = answers.REASONS

    def jinja_options(self) -> dict[str, Any]:
        # Autoescape on, with finalize doing the escaping: what a block or macro produces is
        # then Markup, and is not escaped a second time when printed.
        return {"autoescape": True, "finalize": _finalize}

    def filters(self) -> Mapping[str, Callable[..., Any]]:
        return {"mrkdwn": mrkdwn_escape}

    def check_rendered(self, template: str, text: str) -> None:
        json.loads(text)

    def notifier(
        self,
        target: SlackTarget,
        renderer: Renderer,
        session: aiohttp.ClientSession | None,
        timeout: float,
    ) -> Notifier:
        from bridge.channels.slack.notifier import SlackNotifier

        return SlackNotifier(target, renderer, session, timeout)

    def destination_key(self, target: SlackTarget) -> str:
        # One webhook posts to one channel: targets sharing it share its rate.
        return hashed_key(self.name, target.url.reveal())

    def describe_destination(self, target: SlackTarget) -> str:
        from bridge.channels.webhook import url_host

        return url_host(target.url.reveal())

    def describe_message(self, message: Message) -> str:
        body = message.body
        blocks = sum(len(a.get("blocks", [])) for a in body.get("attachments", []))
        return f"Slack message, {blocks + len(body.get('blocks', []))} blocks"


CHANNEL: Final = Slack()
