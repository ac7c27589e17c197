"""WeChat Work (企业微信) group robots: markdown messages to a webhook that holds the key.

The robot takes markdown up to 4096 bytes (UTF-8) and 20 messages a minute. ``<@userid>`` in
markdown mentions a member; mobile numbers can only be mentioned in a ``text`` message, so when
there are some, a short text message follows the markdown, counted against the rate like any
other. Errors come back as HTTP 200 with an ``errcode``; :mod:`bridge.classify` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from bridge.notifiers.base import (
    Message,
    WebhookNotifier,
    compose_parts,
    mentions_for,
    render_template,
)
from bridge.notifiers.util import split_lines_to_fit, truncate_bytes
from bridge.payload import Payload
from bridge.render import Digest, Part, summary_of

__all__ = ["MARKDOWN_LIMIT", "TEXT_LIMIT", "WeChatNotifier"]

MARKDOWN_LIMIT: Final = 4096
TEXT_LIMIT: Final = 2048
TEMPLATE: Final = "wechat.md.j2"
_LABEL_RESERVE: Final = len("**(9999/9999)**\n")


class WeChatNotifier(WebhookNotifier):
    channel = "wechat"

    def compose(
        self, payload: Payload, *, now: datetime, digest: Digest | None = None
    ) -> list[Message]:
        mentions = mentions_for(self.target, payload["alerts"])

        def render(alerts: Sequence[Mapping[str, Any]], part: Part | None) -> str:
            context = self._renderer.context(
                self.target,
                payload,
                alerts,
                now=now,
                part=part,
                digest=digest,
                mentions=mentions,
            )
            return render_template(self._renderer, self.target, TEMPLATE, context).strip()

        contents = compose_parts(
            payload["alerts"],
            render,
            fits=lambda content: _size(content) <= MARKDOWN_LIMIT,
            split=lambda content: split_lines_to_fit(content, MARKDOWN_LIMIT - _LABEL_RESERVE),
            label=lambda content, part: f"**({part.number}/{part.total})**\n{content}",
        )
        messages = [
            Message("markdown", {"msgtype": "markdown", "markdown": {"content": content}})
            for content in contents
        ]
        if mentions["mobiles"] or mentions["all"]:
            messages.append(self._mention_message(payload, mentions))
        return messages

    def _mention_message(self, payload: Payload, mentions: Mapping[str, Any]) -> Message:
        firing = [alert for alert in payload["alerts"] if alert["status"] == "firing"]
        names = dict.fromkeys(a["labels"].get("alertname", "?") for a in firing)
        first = summary_of(firing[0]) if firing else ""
        content = f"🔥 {len(firing)} firing: {', '.join(names)}" + (f" — {first}" if first else "")
        text: dict[str, Any] = {"content": truncate_bytes(content, TEXT_LIMIT)}
        if mentions["mobiles"] or mentions["all"]:
            text["mentioned_mobile_list"] = list(mentions["mobiles"]) + (
                ["@all"] if mentions["all"] else []
            )
        return Message("text", {"msgtype": "text", "text": text})


def _size(content: str) -> int:
    return len(content.encode("utf-8"))
