"""Sending to a WeChat Work (企业微信) group robot: markdown messages to a webhook holding the key.

The robot takes markdown up to 4096 bytes (UTF-8) and 20 messages a minute. ``<@userid>`` in
markdown mentions a member; mobile numbers can only be mentioned in a ``text`` message, so when
there are some, a short text message follows the markdown, counted against the rate like any
other. Errors come back as HTTP 200 with an ``errcode`` (:mod:`.answers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from bridge.channels.base import Message
from bridge.channels.compose import as_text, compose_parts, mentions_for, part_renderer
from bridge.channels.text import split_lines_to_fit, truncate_bytes, utf8_len
from bridge.channels.webhook import WebhookNotifier
from bridge.channels.wechat import answers
from bridge.channels.wechat.config import WeChatTarget
from bridge.classify import Verdict
from bridge.payload import Payload
from bridge.render import Digest, summary_of

__all__ = ["MARKDOWN_LIMIT", "TEMPLATE", "TEXT_LIMIT", "WeChatNotifier"]

MARKDOWN_LIMIT: Final = 4096
"""Bytes of UTF-8 in one markdown message."""
TEXT_LIMIT: Final = 2048
"""Bytes of UTF-8 in one text message."""
TEMPLATE: Final = "wechat.md.j2"
_LABEL_RESERVE: Final = len("**(9999/9999)**\n")


class WeChatNotifier(WebhookNotifier):
    target: WeChatTarget

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> Verdict:
        return answers.classify(status, body, headers)

    def compose(
        self, payload: Payload, *, now: datetime, digest: Digest | None = None
    ) -> list[Message]:
        mentions = self.target.mentions
        wanted = mentions_for(payload["alerts"], mentions.userids, mentions.mobiles)
        render = part_renderer(
            self._renderer,
            self.target,
            TEMPLATE,
            payload,
            as_text,
            now=now,
            digest=digest,
            mentions=wanted,
        )
        contents = compose_parts(
            payload["alerts"],
            render,
            fits=lambda content: utf8_len(content) <= MARKDOWN_LIMIT,
            split=lambda content: split_lines_to_fit(content, MARKDOWN_LIMIT - _LABEL_RESERVE),
            label=lambda content, part: f"**({part.number}/{part.total})**\n{content}",
        )
        messages = [
            Message("markdown", {"msgtype": "markdown", "markdown": {"content": content}})
            for content in contents
        ]
        if wanted["mobiles"] or wanted["all"]:
            messages.append(_mention_message(payload, wanted))
        return messages


def _mention_message(payload: Payload, mentions: Mapping[str, Any]) -> Message:
    firing = [alert for alert in payload["alerts"] if alert["status"] == "firing"]
    names = dict.fromkeys(a["labels"].get("alertname", "?") for a in firing)
    first = summary_of(firing[0]) if firing else ""
    content = f"🔥 {len(firing)} firing: {', '.join(names)}" + (f" — {first}" if first else "")
    text: dict[str, Any] = {"content": truncate_bytes(content, TEXT_LIMIT)}
    text["mentioned_mobile_list"] = list(mentions["mobiles"]) + (
        ["@all"] if mentions["all"] else []
    )
    return Message("text", {"msgtype": "text", "text": text})
