"""Feishu (飞书) and Lark custom bots: everything about the ``feishu`` channel.

- :mod:`.config`: a target's keys (``url``, ``secret``, ``mentions``, ``rate_per_minute`` 100;
  never more than 5 a second).
- :mod:`.answers`: what the bot's codes mean.
- :mod:`.markup`: how alert text is kept from acting as the card's markup.
- :mod:`.notifier`: composing (cards of at most 20 KB, mentions) and signing each request.
- ``templates/feishu.json.j2``: the built-in interactive card, its header coloured by status
  and severity.

Lark (``open.larksuite.com``) is the same service under another host: a Lark target is a
``feishu`` target with a Lark URL.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bridge.channels.base import Channel, Limit, Message, hashed_key
from bridge.channels.feishu import answers, markup
from bridge.channels.feishu.config import FeishuTarget
from bridge.render import severity_colorizer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import aiohttp

    from bridge.channels.base import Notifier
    from bridge.render import Renderer

__all__ = ["CHANNEL", "PER_SECOND", "Feishu"]

PER_SECOND: Final = 5
"""The bot's limit a second, whatever ``rate_per_minute`` says."""
_MENTION: Final = re.compile(r"<at id=([^<>\s]+)></at>")

# Card header colours (its "template"), and a dot for each alert in the text.
_HEADERS: Final = {
    "critical": "red",
    "error": "red",
    "warning": "orange",
    "info": "blue",
    "resolved": "green",
    "other": "grey",
}
_ICONS: Final = {
    "critical": "🔴",
    "error": "🔴",
    "warning": "🟠",
    "info": "🔵",
    "resolved": "🟢",
    "other": "⚪",
}


class Feishu(Channel):
    name = "feishu"
    config = FeishuTarget
    templates = ("feishu.json.j2",)
    template_dir = Path(__file__).parent / "templates"
    reasons = answers.REASONS

    def jinja_options(self) -> dict[str, Any]:
        # As for Slack: autoescape on, finalize doing the escaping (for lark_md and for JSON),
        # so that what a block, macro or filter makes is Markup and is not escaped twice.
        return {"autoescape": True, "finalize": markup.finalize}

    def filters(self) -> Mapping[str, Callable[..., Any]]:
        return {
            "severity_color": severity_colorizer(_HEADERS),
            "severity_icon": severity_colorizer(_ICONS),
            "plain": markup.plain,
            "url": markup.url,
            "md_link": markup.md_link,
        }

    def check_rendered(self, template: str, text: str) -> None:
        json.loads(text)

    def notifier(
        self,
        target: FeishuTarget,
        renderer: Renderer,
        session: aiohttp.ClientSession | None,
        timeout: float,
    ) -> Notifier:
        from bridge.channels.feishu.notifier import FeishuNotifier

        return FeishuNotifier(target, renderer, session, timeout)

    def destination_key(self, target: FeishuTarget) -> str:
        # The bot is its webhook: targets posting to it share its 100 a minute and 5 a second.
        return hashed_key(self.name, target.url.reveal())

    def limits(self, target: FeishuTarget) -> tuple[Limit, ...]:
        per_second = Limit(PER_SECOND, 1.0)
        rate = float(target.rate_per_minute)
        return (Limit(rate, 60.0), per_second) if rate > 0 else (per_second,)

    def describe_destination(self, target: FeishuTarget) -> str:
        from bridge.channels.webhook import url_host

        host = url_host(target.url.reveal())
        service = "Lark" if "larksuite" in host else "Feishu"
        signed = ", signed" if target.secret is not None else ""
        return f"{host} ({service}), at most {PER_SECOND}/s{signed}"

    def describe_message(self, message: Message) -> str:
        from bridge.channels.feishu.notifier import BODY_LIMIT, card_texts
        from bridge.channels.webhook import json_bytes

        size = len(json_bytes(message.body))
        mentions = [found for text in card_texts(message.body) for found in _MENTION.findall(text)]
        mentioning = f", mentioning {', '.join(mentions)}" if mentions else ""
        return f"Feishu/Lark card, {size} of {BODY_LIMIT} bytes{mentioning}"


CHANNEL: Final = Feishu()
