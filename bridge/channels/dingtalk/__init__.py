"""DingTalk (钉钉) custom robots: everything about the ``dingtalk`` channel.

- :mod:`.config`: a target's keys (``url``, ``secret`` for 加签, ``mentions``,
  ``rate_per_minute`` 20).
- :mod:`.answers`: what the robot's errcodes mean (the 10-minute throttle is a pause).
- :mod:`.notifier`: composing (bodies of at most 20,000 bytes, mentions) and signing each request.
- ``templates/dingtalk.md.j2`` and ``templates/dingtalk.title.j2``: the built-in markdown and
  its title. Alert text cannot act as markup (:mod:`bridge.channels.markdown`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bridge.channels import markdown
from bridge.channels.base import Channel, Markdown, MarkdownSubset, Message, hashed_key
from bridge.channels.dingtalk import answers
from bridge.channels.dingtalk.config import DingTalkTarget

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import aiohttp

    from bridge.channels.base import Notifier
    from bridge.render import Renderer

__all__ = ["CHANNEL", "DingTalk"]


# What the client renders (自定义机器人, markdown: headings, quotes, bold, italic, links,
# images, lists) and the <font color=#RRGGBB> the built-in template colours with.
MARKDOWN: Final = MarkdownSubset(
    italic=True, images=True, lists=True, inline_code=False, hex_colors=True
)


class DingTalk(Channel):
    name = "dingtalk"
    config = DingTalkTarget
    templates = ("dingtalk.md.j2", "dingtalk.title.j2")
    template_dir = Path(__file__).parent / "templates"
    reasons = answers.REASONS

    def jinja_options(self) -> dict[str, Any]:
        return {"autoescape": False, "finalize": markdown.finalize}

    def filters(self) -> Mapping[str, Callable[..., Any]]:
        return {"markdown_link": markdown.markdown_link, "join_markup": markdown.join_markup}

    def notifier(
        self,
        target: DingTalkTarget,
        renderer: Renderer,
        session: aiohttp.ClientSession | None,
        timeout: float,
    ) -> Notifier:
        from bridge.channels.dingtalk.notifier import DingTalkNotifier

        return DingTalkNotifier(target, renderer, session, timeout)

    def destination_key(self, target: DingTalkTarget) -> str:
        # The robot is its access token: targets posting to it share its 20 a minute.
        return hashed_key(self.name, target.url.reveal())

    def describe_destination(self, target: DingTalkTarget) -> str:
        from bridge.channels.webhook import url_host

        signed = ", signed (加签)" if target.secret is not None else ""
        return url_host(target.url.reveal()) + signed

    def describe_message(self, message: Message) -> str:
        from bridge.channels.dingtalk.notifier import BODY_LIMIT
        from bridge.channels.webhook import json_bytes

        size = len(json_bytes(message.body))
        at = message.body.get("at") or {}
        people = [*at.get("atMobiles", []), *at.get("atUserIds", [])]
        people += ["everyone"] if at.get("isAtAll") else []
        mentioning = f", mentioning {', '.join(people)}" if people else ""
        return f"DingTalk markdown, {size} of {BODY_LIMIT} bytes{mentioning}"

    def markdown(self, message: Message) -> Markdown | None:
        markdown = message.body["markdown"]
        return Markdown(str(markdown["text"]), MARKDOWN, title=str(markdown["title"]))


CHANNEL: Final = DingTalk()
