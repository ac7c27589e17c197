"""WeChat Work (企业微信) group robots: everything about the ``wechat`` channel.

- :mod:`.config`: a target's keys (``url``, ``mentions``, ``rate_per_minute`` 20, ``format``).
- :mod:`.answers`: what the robot's errcodes mean.
- :mod:`.markup`: how alert text is kept from acting as markdown.
- :mod:`.notifier`: composing (parts of at most 4096 bytes, the mention follow-up) and sending.
- ``templates/wechat.md.j2``: the built-in ``markdown`` message; ``templates/wechat.md_v2.j2``
  the ``markdown_v2`` one (tables, no colours).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bridge.channels.base import Channel, Markdown, MarkdownSubset, Message, hashed_key
from bridge.channels.wechat import answers, markup
from bridge.channels.wechat.config import WeChatTarget
from bridge.render import severity_colorizer

if TYPE_CHECKING:
    import aiohttp

    from bridge.channels.base import Notifier
    from bridge.render import Renderer

__all__ = ["CHANNEL", "WeChat"]

# WeChat markdown knows three named colours only; markdown_v2 none, so it shows a coloured dot.
_COLORS: Final = {
    "critical": "warning",
    "error": "warning",
    "warning": "warning",
    "info": "comment",
    "resolved": "info",
    "other": "comment",
}
_ICONS: Final = {
    "critical": "🔴",
    "error": "🔴",
    "warning": "🟠",
    "info": "🔵",
    "resolved": "🟢",
    "other": "⚪",
}


# What the client renders (the robot's docs: 群机器人配置说明, markdown and markdown_v2).
MARKDOWN: Final = MarkdownSubset(
    mentions=True,
    font_colors={"info": "#2EB67D", "comment": "#9E9E9E", "warning": "#F5A623"},
)
MARKDOWN_V2: Final = MarkdownSubset(
    italic=True, images=True, code_blocks=True, lists=True, tables=True
)


class WeChat(Channel):
    name = "wechat"
    config = WeChatTarget
    templates = ("wechat.md.j2", "wechat.md_v2.j2")
    template_dir = Path(__file__).parent / "templates"
    reasons = answers.REASONS

    def jinja_options(self) -> dict[str, Any]:
        return {"autoescape": False, "finalize": markup.finalize}

    def filters(self) -> Mapping[str, Callable[..., Any]]:
        return {
            "severity_color": severity_colorizer(_COLORS),
            "severity_icon": severity_colorizer(_ICONS),
            "markdown_link": markup.markdown_link,
            "join_markup": markup.join_markup,
            "cell": markup.table_cell,
        }

    def notifier(
        self,
        target: WeChatTarget,
        renderer: Renderer,
        session: aiohttp.ClientSession | None,
        timeout: float,
    ) -> Notifier:
        from bridge.channels.wechat.notifier import WeChatNotifier

        return WeChatNotifier(target, renderer, session, timeout)

    def destination_key(self, target: WeChatTarget) -> str:
        # The robot is the URL (its key): two targets posting to it share its 20 a minute.
        return hashed_key(self.name, target.url.reveal())

    def describe_destination(self, target: WeChatTarget) -> str:
        from bridge.channels.webhook import url_host

        return url_host(target.url.reveal())

    def describe_message(self, message: Message) -> str:
        from bridge.channels.wechat.notifier import MARKDOWN_LIMIT

        if message.kind in ("markdown", "markdown_v2"):
            size = len(message.body[message.kind]["content"].encode("utf-8"))
            return f"WeChat {message.kind}, {size} of {MARKDOWN_LIMIT} bytes"
        text = message.body["text"]
        people = [*text.get("mentioned_list", []), *text.get("mentioned_mobile_list", [])]
        return f"WeChat text mentioning {', '.join(dict.fromkeys(people))}"

    def markdown(self, message: Message) -> Markdown | None:
        if message.kind not in ("markdown", "markdown_v2"):
            return None
        subset = MARKDOWN if message.kind == "markdown" else MARKDOWN_V2
        return Markdown(str(message.body[message.kind]["content"]), subset)


CHANNEL: Final = WeChat()
