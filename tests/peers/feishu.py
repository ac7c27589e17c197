"""A local Feishu (飞书) / Lark custom bot: the webhook as open.feishu.cn documents it.

``POST /open-apis/bot/v2/hook/<id>`` with ``{"msg_type": "interactive", "card": {…}}`` (or
``text``, ``post``). Answers, as the docs give them:

- ``{"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}``;
- 19001 no such webhook;
- 19021 with a secret: a ``timestamp`` (seconds) more than an hour from the bot's clock, or a
  ``sign`` that is not base64(HMAC-SHA256(key = "<timestamp>\\n<secret>", msg = ""));
- 19024 with keywords: none of them in the message's texts (links do not count);
- 9499 ``Bad Request`` (HTTP 400): not JSON, not a message, a card that is not one, a link that
  is not http(s), or a body over 20 KB (20,000 bytes, the stricter reading);
- 9499 ``too many request`` (HTTP 400), as the service answers a burst: past ``per_minute``
  (100) in any 60 seconds or ``per_second`` (5) in any second, on ``clock``.

The timestamp is checked on ``wall_clock``, the bot's time of day. Answers can be scripted and
every accepted message is recorded. :func:`card_actions` parses what the client acts on in a
card: the header colour, ``<at …>`` mentions, links (``[text](url)``, ``<a href>``, ``<link>``,
buttons) and ``<font>`` / ``<text_tag>`` colours in lark_md; :func:`card_texts` the texts a
reader sees (character references decoded, as the client shows them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

__all__ = ["Delivered", "FeishuBot", "Scripted", "card_actions", "card_texts", "visible_text"]

SUCCESS = {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}
_ELEMENTS = {"div", "hr", "note", "action", "markdown", "img", "column_set", "column", "button"}
_TYPES = ("text", "post", "interactive", "image", "share_chat")
_AT = re.compile(r"<at\s+(?:id|ids|email|user_id)\s*=\s*[\"']?([^\"'>\s]+)[\"']?\s*>")
_PERSON = re.compile(r"<person\s+id\s*=\s*[\"']?([^\"'>\s]+)")
_MD_LINK = re.compile(r"\[([^\[\]]*)\]\(([^()\s]*)\)")
_HREF = re.compile(r"<(?:a\s+href|link[^>]*?\burl)\s*=\s*[\"']?([^\"'>\s]+)")
_FONT = re.compile(r"<(font|text_tag)\s+color\s*=\s*[\"']?([^\"'>\s]+)")
_TAG = re.compile(r"<[^<>]*>")
_HTTP = re.compile(r"^https?://")


def _lark_md(node: Any) -> Iterator[str]:
    """Every lark_md (or markdown element) text of a card."""
    if isinstance(node, dict):
        if node.get("tag") in ("lark_md", "markdown") and isinstance(node.get("content"), str):
            yield node["content"]
        for value in node.values():
            yield from _lark_md(value)
    elif isinstance(node, list):
        for item in node:
            yield from _lark_md(item)


def _buttons(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if node.get("tag") == "button":
            if isinstance(node.get("url"), str):
                yield node["url"]
            for url in (node.get("multi_url") or {}).values():
                yield str(url)
        for value in node.values():
            yield from _buttons(value)
    elif isinstance(node, list):
        for item in node:
            yield from _buttons(item)


def card_actions(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the client acts on in a message: ``("color", header)``, ``("mention", id)``,
    ``("link", url)``, ``("font", colour)``, in order of appearance in each text."""
    card = body.get("card") or {}
    actions: list[tuple[str, str]] = []
    header = card.get("header") if isinstance(card, dict) else None
    if isinstance(header, dict) and header.get("template"):
        actions.append(("color", str(header["template"])))
    for text in _lark_md(card):
        found: list[tuple[int, tuple[str, str]]] = []
        found += [(m.start(), ("mention", m.group(1))) for m in _AT.finditer(text)]
        found += [(m.start(), ("mention", m.group(1))) for m in _PERSON.finditer(text)]
        found += [(m.start(), ("link", m.group(2))) for m in _MD_LINK.finditer(text)]
        found += [(m.start(), ("link", m.group(1))) for m in _HREF.finditer(text)]
        found += [(m.start(), ("font", m.group(2))) for m in _FONT.finditer(text)]
        actions += [action for _, action in sorted(found)]
    actions += [("link", url) for url in _buttons(card)]
    return actions


def visible_text(text: str) -> str:
    """A lark_md text as a reader sees it: tags and bold marks gone, character references
    decoded (last, so that an escaped ``*`` or ``<`` shows as itself)."""
    return html.unescape(_TAG.sub("", text).replace("**", ""))


def card_texts(body: Mapping[str, Any]) -> list[str]:
    """Every text of a message as a reader sees it: lark_md decoded, plain_text as it is."""
    texts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            content = node.get("content")
            if isinstance(content, str):
                lark = node.get("tag") in ("lark_md", "markdown")
                texts.append(visible_text(content) if lark else content)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body.get("card") or body.get("content") or {})
    return texts


def _card_problem(card: Any) -> str | None:
    """Why a card is not one Feishu would show, or None."""
    if not isinstance(card, dict):
        return "card is not an object"
    holder = card.get("body") if isinstance(card.get("body"), dict) else card
    elements = holder.get("elements")
    if not isinstance(elements, list) or not elements:
        return "card has no elements"
    for element in elements:
        if not isinstance(element, dict) or element.get("tag") not in _ELEMENTS:
            return f"unknown element {element!r:.40}"
        if element.get("tag") == "div" and not (element.get("text") or element.get("fields")):
            return "div without text or fields"
    if any(not _HTTP.match(url) for url in _buttons(card)):
        return "link without http(s)"
    return None


def _strings(node: Any, skip: frozenset[str] = frozenset({"url", "href", "tag"})) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in skip:
                yield from _strings(value, skip)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, skip)
    elif isinstance(node, str):
        yield node


@dataclass
class Scripted:
    """A scripted answer: a code (with HTTP status ``http_status``), or a raw body."""

    code: int | None = None
    msg: str = "scripted"
    http_status: int = 200
    body: str | None = None


@dataclass
class Delivered:
    hook: str
    body: dict[str, Any]
    at: float
    signed: bool

    @property
    def actions(self) -> list[tuple[str, str]]:
        return card_actions(self.body)

    @property
    def texts(self) -> list[str]:
        return card_texts(self.body)

    @property
    def title(self) -> str:
        header = (self.body.get("card") or {}).get("header") or {}
        return str((header.get("title") or {}).get("content", ""))


@dataclass
class FeishuBot:
    hooks: Mapping[str, str | None] = field(default_factory=lambda: {"hook-id": None})
    """Each bot's webhook id and its signature secret (None: the bot does not check one)."""
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    per_minute: int = 100
    per_second: int = 5
    body_limit: int = 20_000
    keywords: tuple[str, ...] = ()
    messages: list[Delivered] = field(default_factory=list)
    rejections: list[tuple[str, int, str]] = field(default_factory=list)
    """Every code answered other than 0: ``(hook, code, msg)``."""
    arrivals: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hooks = dict(self.hooks)
        self._script: deque[Scripted] = deque()
        self._sent: dict[str, deque[float]] = defaultdict(deque)
        self._server: TestServer | None = None

    def script(self, *answers: Scripted) -> None:
        self._script.extend(answers)

    def url(self, hook: str | None = None) -> str:
        assert self._server is not None, "start() first"
        hook = hook if hook is not None else next(iter(self.hooks))
        return str(self._server.make_url(f"/open-apis/bot/v2/hook/{hook}"))

    def codes(self) -> list[int]:
        return [code for _, code, _ in self.rejections]

    async def start(self) -> FeishuBot:
        app = web.Application()
        app.router.add_post("/open-apis/bot/v2/hook/{hook}", self._send)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    async def _send(self, request: web.Request) -> web.Response:
        raw = await request.read()
        now = self.clock()
        self.arrivals.append(now)
        hook = request.match_info["hook"]
        if hook not in self.hooks:
            return self._code(hook, 19001, "param invalid: incoming webhook access token invalid")
        if len(raw) > self.body_limit:
            return self._code(hook, 9499, "Bad Request", 400)
        try:
            body = json.loads(raw)
        except ValueError:
            return self._code(hook, 9499, "Bad Request", 400)
        if not isinstance(body, dict):
            return self._code(hook, 9499, "Bad Request", 400)
        secret = self.hooks[hook]
        if secret is not None and not self._signed(secret, body):
            return self._code(
                hook, 19021, "sign match fail or timestamp is not within one hour from current time"
            )
        if self._script:
            answer = self._script.popleft()
            if answer.code is not None:
                return self._code(hook, answer.code, answer.msg, answer.http_status)
            return web.Response(status=answer.http_status, text=answer.body or "")
        window = self._sent[hook]
        while window and window[0] <= now - 60.0:
            window.popleft()
        in_a_second = sum(1 for moment in window if moment > now - 1.0)
        if len(window) >= self.per_minute or in_a_second >= self.per_second:
            return self._code(hook, 9499, "too many request", 400)
        kind = body.get("msg_type")
        if kind not in _TYPES:
            return self._code(hook, 9499, "Bad Request", 400)
        if kind == "interactive" and _card_problem(body.get("card")) is not None:
            return self._code(hook, 9499, "Bad Request", 400)
        content = body.get("card") if kind == "interactive" else body.get("content")
        if self.keywords and not any(
            word in text for text in _strings(content) for word in self.keywords
        ):
            return self._code(hook, 19024, "Key Words Not Found")
        window.append(now)
        self.messages.append(Delivered(hook, body, now, signed=secret is not None))
        return web.json_response(SUCCESS)

    def _signed(self, secret: str, body: Mapping[str, Any]) -> bool:
        stamp, signature = body.get("timestamp"), body.get("sign")
        if not isinstance(stamp, str) or not stamp.isdigit() or not isinstance(signature, str):
            return False
        if abs(int(stamp) - self.wall_clock()) > 3600:
            return False
        key = f"{stamp}\n{secret}".encode()
        expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
        return hmac.compare_digest(signature, expected)

    def _code(self, hook: str, code: int, msg: str, status: int = 200) -> web.Response:
        self.rejections.append((hook, code, msg))
        return web.json_response({"code": code, "msg": msg, "data": {}}, status=status)
