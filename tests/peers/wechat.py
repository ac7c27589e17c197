"""A local WeChat Work group robot: the webhook API as its docs describe it, errors included.

``POST /cgi-bin/webhook/send?key=KEY`` with ``{"msgtype": "markdown"|"markdown_v2"|"text",
...}``. Like the real robot it answers HTTP 200 with an ``errcode``: 0 ok, 93000 unknown key,
40058 content over 4096 bytes (markdown, markdown_v2) or 2048 bytes (text), 45009 past 20
messages in any 60 seconds for a key.
The minute is measured on an injectable clock, so tests can move time by hand. Answers can be
scripted (``errcode -1``, HTTP 500, a non-JSON body) and every accepted message is recorded.

Like the real client it parses the markdown for what it would act on (:func:`markdown_actions`):
``<@userid>`` mentions, ``[text](url)`` links and ``<font color=...>`` tags; in markdown_v2
(:func:`markdown_v2_actions`), which has no colours or mentions, links and ``![text](url)``
images; in a text message, its ``mentioned_list`` and ``mentioned_mobile_list``. Tests can
assert that alert text never becomes any of them.

An outage (:meth:`WeChatRobot.fail`) answers every request with failures in turn, until it is
ended by hand or the clock reaches its end; ``None`` among the failures lets that request through,
for a robot that fails some of the time. Every request's arrival time is kept in ``arrivals``.

The benchmark runs the same robot in a process of its own (``python -m tests.peers.wechat --port
N --keys a,b``, see :func:`main`) and reads what it received from ``GET /peer/messages``: each
message's key, content and arrival time on ``time.monotonic()`` (one clock for every process on
Linux, so the sender can compute the delivery latency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

__all__ = [
    "Answer",
    "Delivered",
    "WeChatRobot",
    "markdown_actions",
    "markdown_v2_actions",
    "text_actions",
    "visible_text",
]

_MENTION = re.compile(r"<@([^<>\s]+)>")
_LINK = re.compile(r"\[([^\[\]]*)\]\(([^()\s]*)\)")
_LINK_OR_IMAGE = re.compile(r"(!?)\[([^\[\]]*)\]\(([^()\s]*)\)")
_FONT = re.compile(r"<font\s+color\s*=\s*[\"']?([^\"'>\s]+)[\"']?\s*>")
_ZERO_WIDTH = "\u200b"


def markdown_actions(content: str) -> list[tuple[str, str]]:
    """What the robot's markdown acts on in ``content``: ``("mention", userid)``,
    ``("link", url)`` and ``("font", colour)``, in order of appearance."""
    found: list[tuple[int, tuple[str, str]]] = []
    found += [(m.start(), ("mention", m.group(1))) for m in _MENTION.finditer(content)]
    found += [(m.start(), ("link", m.group(2))) for m in _LINK.finditer(content)]
    found += [(m.start(), ("font", m.group(1))) for m in _FONT.finditer(content)]
    return [action for _, action in sorted(found)]


def markdown_v2_actions(content: str) -> list[tuple[str, str]]:
    """What the robot's markdown_v2 acts on: ``("link", url)`` and ``("image", url)``."""
    return [
        ("image" if match.group(1) else "link", match.group(3))
        for match in _LINK_OR_IMAGE.finditer(content)
    ]


def text_actions(text: dict[str, Any]) -> list[tuple[str, str]]:
    """Whom a text message mentions: its ``mentioned_list`` and ``mentioned_mobile_list``."""
    people = [*text.get("mentioned_list", []), *text.get("mentioned_mobile_list", [])]
    return [("mention", str(person)) for person in people]


def visible_text(content: str) -> str:
    """The text as a reader sees it (zero-width characters show as nothing)."""
    return content.replace(_ZERO_WIDTH, "")


@dataclass
class Answer:
    """A scripted answer: an errcode (HTTP 200), or an HTTP status with a raw body, given after
    ``delay`` seconds of real time (a robot that hangs past the caller's timeout)."""

    errcode: int | None = None
    http_status: int = 200
    body: str | None = None
    delay: float = 0.0


@dataclass
class Delivered:
    key: str
    body: dict[str, Any]
    at: float

    @property
    def content(self) -> str:
        kind = self.body.get("msgtype", "")
        return str(self.body.get(kind, {}).get("content", ""))

    @property
    def actions(self) -> list[tuple[str, str]]:
        """What the robot acted on: markdown's mentions, links and colours; markdown_v2's links
        and images; a text message's mentions."""
        kind = self.body.get("msgtype")
        if kind == "markdown":
            return markdown_actions(self.content)
        if kind == "markdown_v2":
            return markdown_v2_actions(self.content)
        return text_actions(self.body.get("text", {}))


@dataclass
class WeChatRobot:
    keys: Iterable[str] = ("robot-key",)
    clock: Callable[[], float] = time.monotonic
    per_minute: int = 20
    markdown_limit: int = 4096
    text_limit: int = 2048
    messages: list[Delivered] = field(default_factory=list)
    rejections: list[tuple[str, int]] = field(default_factory=list)
    """Every errcode answered other than 0, with the key: ``[("robot-key", 45009), ...]``."""
    arrivals: list[float] = field(default_factory=list)
    """When each request arrived (on ``clock``), whatever it was answered."""

    def __post_init__(self) -> None:
        self.keys = set(self.keys)
        self._script: deque[Answer] = deque()
        self._outage: list[Answer | None] = []
        self._outage_until: float | None = None
        self._outage_turn = 0
        self._sent: dict[str, deque[float]] = defaultdict(deque)
        self._server: TestServer | None = None

    def script(self, *answers: Answer) -> None:
        """Answer the next requests (any key) with ``answers``, in order."""
        self._script.extend(answers)

    def fail(self, *answers: Answer | None, until: float | None = None) -> None:
        """Answer every request with ``answers`` in turn (``None``: answer normally) until
        :meth:`recover`, or until ``clock()`` reaches ``until``."""
        self._outage = list(answers)
        self._outage_until = until
        self._outage_turn = 0

    def recover(self) -> None:
        """End the outage: answer as the robot normally does."""
        self._outage = []
        self._outage_until = None

    def _outage_answer(self, now: float) -> Answer | None:
        if not self._outage:
            return None
        if self._outage_until is not None and now >= self._outage_until:
            self.recover()
            return None
        answer = self._outage[self._outage_turn % len(self._outage)]
        self._outage_turn += 1
        return answer

    def url(self, key: str | None = None) -> str:
        assert self._server is not None, "start() first"
        key = key if key is not None else next(iter(sorted(self.keys)))
        return str(self._server.make_url(f"/cgi-bin/webhook/send?key={key}"))

    def errcodes(self) -> list[int]:
        return [code for _, code in self.rejections]

    async def start(self, port: int | None = None) -> WeChatRobot:
        """Listen on ``port`` of loopback (None: any free one)."""
        app = web.Application()
        app.router.add_post("/cgi-bin/webhook/send", self._send)
        app.router.add_get("/peer/messages", self._messages)
        self._server = TestServer(app, host="127.0.0.1", port=port)
        await self._server.start_server()
        return self

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    async def _send(self, request: web.Request) -> web.Response:
        key = request.query.get("key", "")
        raw = await request.read()
        now = self.clock()
        self.arrivals.append(now)
        if key not in self.keys:
            return self._errcode(key, 93000, "invalid webhook url, hint: [sheepdog-test]")
        answer = self._script.popleft() if self._script else self._outage_answer(now)
        if answer is not None:
            if answer.delay:
                await asyncio.sleep(answer.delay)
            if answer.errcode is not None:
                return self._errcode(key, answer.errcode, "scripted")
            return web.Response(status=answer.http_status, text=answer.body or "")
        window = self._sent[key]
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= self.per_minute:
            return self._errcode(key, 45009, "api freq out of limit")
        window.append(now)
        try:
            body = json.loads(raw)
        except ValueError:
            return self._errcode(key, 40016, "invalid json")
        kind = body.get("msgtype") if isinstance(body, dict) else None
        if kind not in ("markdown", "markdown_v2", "text"):
            return self._errcode(key, 40008, "invalid message type")
        content = body.get(kind, {}).get("content")
        if not isinstance(content, str) or not content:
            return self._errcode(key, 44004, "empty content")
        limit = self.text_limit if kind == "text" else self.markdown_limit
        if len(content.encode("utf-8")) > limit:
            return self._errcode(key, 40058, f"content exceed max length {limit}")
        self.messages.append(Delivered(key, body, now))
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _messages(self, request: web.Request) -> web.Response:
        return web.json_response(
            [{"key": m.key, "content": m.content, "at": m.at} for m in self.messages]
        )

    def _errcode(self, key: str, errcode: int, errmsg: str) -> web.Response:
        self.rejections.append((key, errcode))
        return web.json_response({"errcode": errcode, "errmsg": errmsg})


async def _serve(args: argparse.Namespace) -> None:
    robot = await WeChatRobot(keys=args.keys.split(","), per_minute=args.per_minute).start(
        args.port
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await robot.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.peers.wechat --port N --keys a,b``: the robot in a process of its own."""
    parser = argparse.ArgumentParser(description="A local WeChat Work group robot.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keys", default="robot-key", help="comma-separated robot keys")
    parser.add_argument(
        "--per-minute", type=int, default=20, help="messages a key may send in any 60 s"
    )
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
