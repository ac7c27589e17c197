"""A local DingTalk (钉钉) custom robot: the webhook as open.dingtalk.com documents it.

``POST /robot/send?access_token=T`` with ``{"msgtype": "markdown", "markdown": {"title",
"text"}, "at": {…}}``. Like the real robot it answers HTTP 200 with an ``errcode``:

- 0 ok;
- 400101 no such access_token;
- 310000 the security check failed: with a 加签 secret, a ``timestamp`` (ms) more than an hour
  from the robot's clock (``invalid timestamp``) or a ``sign`` that is not
  base64(HMAC-SHA256(secret, "<timestamp>\\n<secret>")) (``sign not match``); with keywords,
  none of them in the title or text (``keywords not in content``);
- 410100 too fast: past ``per_minute`` (20) messages in any 60 seconds the robot refuses every
  message for ``throttle_seconds`` (10 minutes), as DingTalk does;
- 460101 a body over 20,000 bytes; 400105 an unknown msgtype; 40035 a body it cannot read.

The minute and the throttle are measured on ``clock`` (injectable, so tests can move time by
hand); the signature's timestamp on ``wall_clock``, the robot's own time of day. Answers can be
scripted, every accepted message is recorded with whether its signature was checked, and
:func:`markdown_actions` parses what the client acts on: links, images, ``<font>`` colours, and
mentions (a mobile or user id of the ``at`` lists written as ``@…`` in the text; ``isAtAll``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

__all__ = ["Delivered", "DingTalkRobot", "Scripted", "markdown_actions", "visible_text"]

_LINK = re.compile(r"(!?)\[([^\[\]]*)\]\(([^()\s]*)\)")
_FONT = re.compile(r"<font\s+color\s*=\s*[\"']?([^\"'>\s]+)[\"']?\s*>")
_ZERO_WIDTH = "\u200b"
_TYPES = ("text", "link", "markdown", "actionCard", "feedCard")
_HOUR_MS = 3600 * 1000


def markdown_actions(text: str, at: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """What the DingTalk client acts on in a markdown text: ``("link", url)``,
    ``("image", url)``, ``("font", colour)`` in order, then ``("mention", who)``."""
    found: list[tuple[int, tuple[str, str]]] = []
    for match in _LINK.finditer(text):
        kind = "image" if match.group(1) else "link"
        found.append((match.start(), (kind, match.group(3))))
    found += [(m.start(), ("font", m.group(1))) for m in _FONT.finditer(text)]
    actions = [action for _, action in sorted(found)]
    at = at or {}
    for person in [*at.get("atMobiles", []), *at.get("atUserIds", [])]:
        if f"@{person}" in text:
            actions.append(("mention", str(person)))
    if at.get("isAtAll"):
        actions.append(("mention", "all"))
    return actions


def visible_text(text: str) -> str:
    """The text as a reader sees it (zero-width characters show as nothing)."""
    return text.replace(_ZERO_WIDTH, "")


@dataclass
class Scripted:
    """A scripted answer: an errcode (HTTP 200), or an HTTP status with a raw body."""

    errcode: int | None = None
    errmsg: str = "scripted"
    http_status: int = 200
    body: str | None = None
    delay: float = 0.0


@dataclass
class Delivered:
    token: str
    body: dict[str, Any]
    at: float
    signed: bool
    """Whether the request carried a signature the robot checked."""

    @property
    def title(self) -> str:
        return str(self.body.get("markdown", {}).get("title", ""))

    @property
    def text(self) -> str:
        kind = self.body.get("msgtype", "")
        part = self.body.get(kind, {})
        return str(part.get("text") or part.get("content") or "")

    @property
    def actions(self) -> list[tuple[str, str]]:
        return markdown_actions(self.text, self.body.get("at"))


@dataclass
class DingTalkRobot:
    tokens: Mapping[str, str | None] = field(default_factory=lambda: {"robot-token": None})
    """Each robot's access_token and its 加签 secret (None: the robot does not sign)."""
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    per_minute: int = 20
    throttle_seconds: float = 600.0
    body_limit: int = 20_000
    keywords: tuple[str, ...] = ()
    messages: list[Delivered] = field(default_factory=list)
    rejections: list[tuple[str, int, str]] = field(default_factory=list)
    """Every errcode answered other than 0: ``(token, errcode, errmsg)``."""
    arrivals: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tokens = dict(self.tokens)
        self._script: deque[Scripted] = deque()
        self._sent: dict[str, deque[float]] = defaultdict(deque)
        self._throttled_until: dict[str, float] = {}
        self._server: TestServer | None = None

    def script(self, *answers: Scripted) -> None:
        """Answer the next requests (any token) with ``answers``, in order."""
        self._script.extend(answers)

    def url(self, token: str | None = None) -> str:
        assert self._server is not None, "start() first"
        token = token if token is not None else next(iter(self.tokens))
        return str(self._server.make_url(f"/robot/send?access_token={token}"))

    def errcodes(self) -> list[int]:
        return [code for _, code, _ in self.rejections]

    async def start(self) -> DingTalkRobot:
        app = web.Application()
        app.router.add_post("/robot/send", self._send)
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
        token = request.query.get("access_token", "")
        if token not in self.tokens:
            return self._errcode(token, 400101, "access_token不存在")
        secret = self.tokens[token]
        if secret is not None:
            refusal = self._check_signature(secret, request.query)
            if refusal is not None:
                return self._errcode(token, 310000, refusal)
        if self._script:
            answer = self._script.popleft()
            if answer.delay:
                await asyncio.sleep(answer.delay)
            if answer.errcode is not None:
                return self._errcode(token, answer.errcode, answer.errmsg)
            return web.Response(status=answer.http_status, text=answer.body or "")
        if self._throttled_until.get(token, float("-inf")) > now:
            return self._errcode(token, 410100, "send too fast, exceed 20 times per minute")
        window = self._sent[token]
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= self.per_minute:
            self._throttled_until[token] = now + self.throttle_seconds
            return self._errcode(token, 410100, "send too fast, exceed 20 times per minute")
        if len(raw) > self.body_limit:
            return self._errcode(token, 460101, "message too long, exceed 20000 bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._errcode(token, 40035, "缺少参数 json")
        if not isinstance(body, dict) or body.get("msgtype") not in _TYPES:
            return self._errcode(token, 400105, "不支持的消息类型")
        content = body.get(body["msgtype"])
        if body["msgtype"] == "markdown" and not (
            isinstance(content, dict)
            and isinstance(content.get("title"), str)
            and isinstance(content.get("text"), str)
            and content["title"]
            and content["text"]
        ):
            return self._errcode(token, 40035, "缺少参数 markdown")
        delivered = Delivered(token, body, now, signed=secret is not None)
        if self.keywords and not any(
            word in delivered.title + delivered.text for word in self.keywords
        ):
            return self._errcode(token, 310000, "keywords not in content")
        window.append(now)
        self.messages.append(delivered)
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    def _check_signature(self, secret: str, query: Mapping[str, str]) -> str | None:
        """Why the signature is refused, or None. ``query`` is decoded already, so ``sign`` is
        the base64 text itself."""
        stamp, signature = query.get("timestamp", ""), query.get("sign", "")
        if not stamp.isdigit() or abs(int(stamp) - self.wall_clock() * 1000) > _HOUR_MS:
            return "invalid timestamp"
        expected = base64.b64encode(
            hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(), hashlib.sha256).digest()
        ).decode()
        if not hmac.compare_digest(signature, expected):
            return "sign not match"
        return None

    def _errcode(self, token: str, errcode: int, errmsg: str) -> web.Response:
        self.rejections.append((token, errcode, errmsg))
        return web.json_response({"errcode": errcode, "errmsg": errmsg})
