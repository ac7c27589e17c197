"""A local Slack incoming webhook: ``ok`` on success, Slack's error words otherwise.

Checks what Slack checks (valid JSON, some text or blocks, at most 50 blocks, section text up to
3000 characters, text up to 40,000) and records every message it accepts. :func:`mrkdwn_actions`
parses mrkdwn as Slack does: ``<@U123>`` and ``<!channel>`` mention, ``<url|text>`` links;
``&lt;`` is the text ``<``. Answers can be
scripted: 429 with ``Retry-After``, 404 ``channel_not_found``, 400 ``invalid_payload``, 500 ….
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

__all__ = ["Reply", "SlackWebhook", "mrkdwn_actions", "visible_text"]

_ANGLE = re.compile(r"<([^<>]*)>")


def mrkdwn_actions(text: str) -> list[tuple[str, str]]:
    """What Slack acts on in mrkdwn ``text``: ``("mention", "@U1")``, ``("mention", "!channel")``,
    ``("link", url)``, in order."""
    actions = []
    for match in _ANGLE.finditer(text):
        inner = match.group(1).split("|", 1)[0]
        if inner.startswith(("@", "!", "#")):
            actions.append(("mention", inner))
        elif inner:
            actions.append(("link", inner))
    return actions


def visible_text(text: str) -> str:
    """Escaped text as Slack shows it."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def message_texts(body: dict[str, Any]) -> list[str]:
    """Every mrkdwn text of a message: its ``text`` and each block's."""
    texts = [str(body.get("text", ""))]
    blocks = list(body.get("blocks") or [])
    for attachment in body.get("attachments") or []:
        blocks += attachment.get("blocks") or []
    for block in blocks:
        if isinstance(block.get("text"), dict):
            texts.append(str(block["text"].get("text", "")))
        texts += [str(e.get("text", "")) for e in block.get("elements", []) if isinstance(e, dict)]
    return texts


HOOK_PATH = "/services/T0SHEEP/B0DOG/sl4ckt0k3n"


@dataclass
class Reply:
    status: int
    body: str
    retry_after: str | None = None


@dataclass
class SlackWebhook:
    clock: Callable[[], float] = time.monotonic
    hook_path: str = HOOK_PATH
    """The webhook's path, token included: requests to any other path get 404 ``no_service``."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    replies: list[tuple[int, str, float]] = field(default_factory=list)
    """Every answer other than ``ok``: status, body and when."""

    def __post_init__(self) -> None:
        self._script: deque[Reply] = deque()
        self._server: TestServer | None = None
        self.requests: list[float] = []

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return str(self._server.make_url(self.hook_path))

    async def start(self) -> SlackWebhook:
        app = web.Application()
        app.router.add_post("/services/{team}/{bot}/{token}", self._post)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        return self

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    async def _post(self, request: web.Request) -> web.Response:
        raw = await request.read()
        now = self.clock()
        self.requests.append(now)
        if request.path != self.hook_path:
            return self._reply(Reply(404, "no_service"), now)
        if self._script:
            return self._reply(self._script.popleft(), now)
        try:
            body = json.loads(raw)
        except ValueError:
            return self._reply(Reply(400, "invalid_payload"), now)
        if not isinstance(body, dict):
            return self._reply(Reply(400, "invalid_payload"), now)
        blocks = list(body.get("blocks") or [])
        for attachment in body.get("attachments") or []:
            blocks += attachment.get("blocks") or []
        if not body.get("text") and not blocks:
            return self._reply(Reply(400, "no_text"), now)
        if len(str(body.get("text", ""))) > 40_000 or len(blocks) > 50:
            return self._reply(Reply(400, "invalid_blocks"), now)
        for block in blocks:
            text = block.get("text") if isinstance(block, dict) else None
            if isinstance(text, dict) and len(str(text.get("text", ""))) > 3000:
                return self._reply(Reply(400, "invalid_blocks"), now)
        self.messages.append(body)
        return web.Response(text="ok")

    def _reply(self, reply: Reply, now: float) -> web.Response:
        self.replies.append((reply.status, reply.body, now))
        headers = {"Retry-After": reply.retry_after} if reply.retry_after is not None else None
        return web.Response(status=reply.status, text=reply.body, headers=headers)
