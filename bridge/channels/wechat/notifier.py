"""Sending to a WeChat Work (企业微信) group robot: markdown messages to a webhook holding the key.

The robot takes markdown (``markdown`` or ``markdown_v2``) up to 4096 bytes (UTF-8) and 20
messages a minute. In ``markdown``, ``<@userid>`` mentions a member, but mobile numbers can only
be mentioned in a ``text`` message, so when there are some, a short text message follows the
markdown. ``markdown_v2`` cannot mention anyone, so every mention (user ids, mobiles, everyone)
goes in that text message (``mentioned_list``, ``mentioned_mobile_list``). The follow-up counts
against the rate like any other message. Errors come back as HTTP 200 with an ``errcode``
(:mod:`.answers`).
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
from bridge.render import Digest, Renderer, summary_of

__all__ = ["MARKDOWN_LIMIT", "TEMPLATE", "TEMPLATES", "TEXT_LIMIT", "WeChatNotifier"]

MARKDOWN_LIMIT: Final = 4096
"""Bytes of UTF-8 in one markdown (or markdown_v2) message."""
TEXT_LIMIT: Final = 2048
"""Bytes of UTF-8 in one text message."""
TEMPLATE: Final = "wechat.md.j2"
TEMPLATES: Final = {"markdown": TEMPLATE, "markdown_v2": "wechat.md_v2.j2"}
"""The built-in template of each ``format``."""
_LABEL_RESERVE: Final = len("**(9999/9999)**\n")


class WeChatNotifier(WebhookNotifier):
    target: WeChatTarget

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> Verdict:
        return answers.classify(status, body, headers)

    def compose(
        self, payload: Payload, *, now: datetime, digest: Digest | None = None
    ) -> list[Message]:
        kind = self.target.format
        mentions = self.target.mentions
        wanted = mentions_for(payload["alerts"], mentions.userids, mentions.mobiles)
        render = part_renderer(
            self._renderer,
            self.target,
            TEMPLATES[kind],
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
        messages = [Message(kind, {"msgtype": kind, kind: {"content": c}}) for c in contents]
        # markdown mentions user ids itself; a text message carries whom it cannot.
        userids = wanted["userids"] if kind == "markdown_v2" else []
        if userids or wanted["mobiles"] or wanted["all"]:
            messages.append(_mention_message(self._renderer, payload, wanted, userids))
        return messages


def _mention_message(
    renderer: Renderer, payload: Payload, mentions: Mapping[str, Any], userids: list[str]
) -> Message:
    firing = [alert for alert in payload["alerts"] if alert["status"] == "firing"]
    names = ", ".join(dict.fromkeys(a["labels"].get("alertname", "?") for a in firing))
    first = summary_of(firing[0]) if firing else ""
    words = renderer.gettext("%(count)s firing: %(names)s") % {"count": len(firing), "names": names}
    content = f"🔥 {words}" + (f" — {first}" if first else "")
    text: dict[str, Any] = {"content": truncate_bytes(content, TEXT_LIMIT)}
    everyone = ["@all"] if mentions["all"] else []
    if userids:
        text["mentioned_list"] = [*userids, *everyone]
        everyone = []
    if mentions["mobiles"] or everyone:
        text["mentioned_mobile_list"] = [*mentions["mobiles"], *everyone]
    return Message("text", {"msgtype": "text", "text": text})
