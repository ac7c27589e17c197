"""What webhook channels share: the request is computed at every attempt, so a channel that
signs its requests signs each one afresh."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.channels.base import Message, WebhookTargetConfig
from bridge.channels.registry import CHANNELS
from bridge.channels.webhook import WebhookNotifier
from bridge.classify import Outcome, Verdict
from bridge.render import Renderer
from sheepdog.config import parse_config


class _Signing(WebhookNotifier):
    """A channel that signs each request with the time it is sent (as DingTalk does)."""

    clock = itertools.count(1_000)

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> Verdict:
        return Verdict(Outcome.SENT if status == 200 else Outcome.RETRY, "ok")

    def compose(self, payload: Any, *, now: datetime, digest: Any = None) -> list[Any]:
        raise NotImplementedError

    def request(self, message: Any) -> tuple[str, Mapping[str, Any]]:
        url, body = super().request(message)
        return f"{url}&timestamp={next(self.clock)}", body


async def test_a_signed_request_is_made_afresh_at_every_attempt() -> None:
    """Two attempts at one message carry two signatures: a retry is never sent stale."""
    seen: list[str] = []

    async def peer(request: web.Request) -> web.Response:
        seen.append(request.query["timestamp"])
        return web.Response(status=500 if len(seen) == 1 else 200)

    app = web.Application()
    app.router.add_post("/send", peer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/send?access_token=SENTINEL-token"))
        target = WebhookTargetConfig(name="d", type="signed", rate_per_minute=0, url=url)
        renderer = Renderer(parse_config({}, env={}).bridge, CHANNELS)
        message = Message("text", {"msgtype": "text", "text": {"content": "hello"}})
        async with aiohttp.ClientSession() as session:
            signing = _Signing(target, renderer, session, 5)
            first = await signing.send(message)
            second = await signing.send(message)
    finally:
        await server.close()
    assert (first.outcome, second.outcome) == (Outcome.RETRY, Outcome.SENT)
    assert len(seen) == 2 and seen[0] != seen[1]
