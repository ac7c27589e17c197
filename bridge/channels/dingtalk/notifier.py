"""Sending to a DingTalk (钉钉) custom robot: markdown messages to a webhook holding the token.

``POST https://oapi.dingtalk.com/robot/send?access_token=T`` with ``{"msgtype": "markdown",
"markdown": {"title", "text"}, "at": {"atMobiles", "atUserIds", "isAtAll"}}``; the whole body
at most 20,000 bytes. A message over it is cut at alert boundaries (then line boundaries) into
numbered parts. Mentions go on the first part only: the ``at`` lists, and each mobile and user
id written as ``@…`` in the text, as DingTalk requires for the mention to notify anyone.

With a 加签 secret every request is signed when it is sent (a retry an hour later too): the URL
gets ``&timestamp=<ms>&sign=<s>``, ``s`` = urlencode(base64(HMAC-SHA256(key = secret,
msg = "<ms>\\n<secret>"))); DingTalk refuses a timestamp more than an hour off its clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote_plus

from bridge.channels.base import Message
from bridge.channels.compose import as_text, compose_parts, mentions_for, render_parsed
from bridge.channels.dingtalk import answers
from bridge.channels.dingtalk.config import USER_ID, DingTalkTarget
from bridge.channels.text import split_lines_to_fit, truncate_chars
from bridge.channels.webhook import SignedWebhookNotifier, json_bytes
from bridge.classify import Verdict
from bridge.payload import Payload
from bridge.render import Digest, Part
from sheepdog.core.secret import Secret

__all__ = ["BODY_LIMIT", "TEMPLATE", "TITLE_TEMPLATE", "DingTalkNotifier", "sign"]

BODY_LIMIT: Final = 20_000
"""Bytes of the whole JSON body (errcode 460101 past it)."""
TEMPLATE: Final = "dingtalk.md.j2"
TITLE_TEMPLATE: Final = "dingtalk.title.j2"
TITLE_LIMIT: Final = 100
"""Characters of the title (what the chat list and the notification show); cut beyond it."""

Alert = Mapping[str, Any]


def sign(secret: str, timestamp_ms: int) -> str:
    """The 加签 signature of a request made at ``timestamp_ms``, URL-encoded."""
    string_to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode("utf-8"), string_to_sign, hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode("ascii"))


class DingTalkNotifier(SignedWebhookNotifier):
    target: DingTalkTarget
    signed_note = ", signed when sent (加签)"

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> Verdict:
        return answers.classify(status, body, headers)

    def signing_secret(self) -> Secret | None:
        return self.target.secret

    def signed(
        self, url: str, body: Mapping[str, Any], secret: str, now: float
    ) -> tuple[str, Mapping[str, Any]]:
        timestamp = int(now * 1000)
        separator = "&" if "?" in url else "?"
        return f"{url}{separator}timestamp={timestamp}&sign={sign(secret, timestamp)}", body

    def compose(
        self, payload: Payload, *, now: datetime, digest: Digest | None = None
    ) -> list[Message]:
        configured = self.target.mentions
        wanted = mentions_for(payload["alerts"], configured.userids, configured.mobiles)
        firing = any(alert["status"] == "firing" for alert in payload["alerts"])
        wanted["all"] = wanted["all"] or (configured.all and firing)
        # An id from an annotation that is no user id is left out, not let into the text.
        wanted["userids"] = [user for user in wanted["userids"] if USER_ID.match(user)]
        at = _at(wanted)
        suffix = _mention_text(wanted)

        def render(alerts: Sequence[Alert], part: Part | None) -> dict[str, Any]:
            context = self._renderer.context(
                self.target, payload, alerts, now=now, part=part, digest=digest, mentions=wanted
            )
            title = render_parsed(self._renderer, self.target, TITLE_TEMPLATE, context, as_text)
            text = render_parsed(self._renderer, self.target, TEMPLATE, context, as_text)
            return _body(truncate_chars(" ".join(title.split()), TITLE_LIMIT), text)

        def fits(body: dict[str, Any]) -> bool:
            return _size(_with_mentions(body, suffix, at)) <= BODY_LIMIT

        def split(body: dict[str, Any]) -> list[dict[str, Any]]:
            # What the body costs without its text, the mentions and the part label included:
            # the text's share is the rest, measured as JSON writes it.
            empty = _label(_with_mentions(_body(body["markdown"]["title"], ""), suffix, at), _WIDE)
            room = BODY_LIMIT - _size(empty)
            pieces = split_lines_to_fit(body["markdown"]["text"], room, _json_len)
            return [_body(body["markdown"]["title"], piece) for piece in pieces]

        bodies = compose_parts(payload["alerts"], render, fits=fits, split=split, label=_label)
        bodies[0] = _with_mentions(bodies[0], suffix, at)
        return [Message("markdown", body) for body in bodies]

    def preview(self, message: Message) -> str:
        return json.dumps(message.body, ensure_ascii=False, indent=2)


# The widest part label there can be, for reserving its room.
_WIDE: Final = Part(9999, 9999)


def _body(title: str, text: str) -> dict[str, Any]:
    return {"msgtype": "markdown", "markdown": {"title": title, "text": text}}


def _label(body: dict[str, Any], part: Part) -> dict[str, Any]:
    """Part ``part`` of a message cut inside one alert: numbered in its title and text."""
    markdown = body["markdown"]
    number = f"({part.number}/{part.total})"
    labelled = dict(body)
    labelled["markdown"] = {
        "title": f"{markdown['title']} {number}",
        "text": f"**{number}**\n\n{markdown['text']}",
    }
    return labelled


def _at(mentions: Mapping[str, Any]) -> dict[str, Any] | None:
    if not (mentions["mobiles"] or mentions["userids"] or mentions["all"]):
        return None
    return {
        "atMobiles": list(mentions["mobiles"]),
        "atUserIds": list(mentions["userids"]),
        "isAtAll": bool(mentions["all"]),
    }


def _mention_text(mentions: Mapping[str, Any]) -> str:
    """``@13800000000 @zhangsan``: DingTalk notifies a mentioned person only if the text says
    ``@`` and their mobile or user id."""
    people = [*mentions["mobiles"], *mentions["userids"]]
    return "\n\n" + " ".join(f"@{person}" for person in people) if people else ""


def _with_mentions(body: dict[str, Any], suffix: str, at: dict[str, Any] | None) -> dict[str, Any]:
    if at is None:
        return body
    markdown = body["markdown"]
    return {**body, "markdown": {**markdown, "text": markdown["text"] + suffix}, "at": at}


def _size(body: Mapping[str, Any]) -> int:
    return len(json_bytes(body))


def _json_len(text: str) -> int:
    """Bytes ``text`` takes inside a JSON string: escaping is per character, so this adds up."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8")) - 2
