"""The relay when the upstream hangs or breaks off, and when clients walk away mid-stream.

sheepdog runs in this process on a local port in front of the local upstream
(:mod:`tests.peers.upstream`); clients are plain aiohttp sessions, one connection each, so that
closing one really drops its TCP connection. Leaks are looked for where they would be: tasks
left on the loop, connections left acquired in the upstream pool or open at the upstream,
``llm_active_requests`` left above 0.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from proxy import RELAY
from sheepdog.app import create_app
from sheepdog.config import parse_config
from sheepdog.core.exposition import MetricsRegistry
from tests.faults.conftest import FIGURES, LogRecorder
from tests.peers.upstream import FakeUpstream
from tests.support.polling import wait_until_async

CLIENT_KEY = "sd-faults-client-key"
UPSTREAM_KEY = "sk-faults-upstream-key"
CHAT = "/v1/chat/completions"
LABELS = {"model": "gpt-4.1", "route": "chat", "client": "team"}


class _NoCancellation(TestServer):
    """Handlers not cancelled when their client goes away (aiohttp's default)."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        kwargs["handler_cancellation"] = False
        return await super()._make_runner(**kwargs)


@dataclass
class Relay:
    app: web.Application
    server: TestServer
    registry: CollectorRegistry

    def url(self, path: str = CHAT) -> str:
        return str(self.server.make_url(path))

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def requests(self, code: int) -> float:
        return self.value("llm_requests_total", **LABELS, code=str(code))

    @property
    def active(self) -> float:
        return self.value("llm_active_requests", model="gpt-4.1")

    @property
    def client_connections(self) -> int:
        """Connections from clients that the proxy's server still has open."""
        assert self.server.runner is not None and self.server.runner.server is not None
        return len(self.server.runner.server.connections)

    @property
    def upstream_acquired(self) -> int:
        """Upstream connections taken from the pool and not given back (aiohttp's own count)."""
        session = self.app[RELAY].session
        assert session is not None
        return len(session.connector._acquired)  # type: ignore[union-attr]


@pytest.fixture
async def start_relay(upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    servers: list[TestServer] = []

    async def start(*, timeout: float = 5.0, cancellation: bool = True) -> Relay:
        config = parse_config(
            {
                "state_dir": str(tmp_path / "state"),
                "proxy": {
                    "upstream": {
                        "base_url": upstream.base_url,
                        "api_key": UPSTREAM_KEY,
                        "timeout_seconds": timeout,
                        "connect_timeout_seconds": 2,
                    },
                    "clients": [{"name": "team", "key": CLIENT_KEY}],
                },
                # No bridge target: no delivery worker polling, so every task is the relay's.
                "bridge": {"targets": {}},
            },
            env={},
        )
        registry = MetricsRegistry()
        app = create_app(config, registry=registry)
        server = (TestServer if cancellation else _NoCancellation)(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Relay(app, server, registry)

    yield start
    for server in servers:
        await server.close()


def chat(stream: bool = False, model: str = "gpt-4.1") -> dict[str, Any]:
    return {
        "json": {"model": model, "stream": stream, "messages": []},
        "headers": {"Authorization": f"Bearer {CLIENT_KEY}"},
    }


def other_tasks(baseline: set[asyncio.Task[Any]]) -> list[str]:
    """Tasks on the loop now that were not there at ``baseline``, except this test's own."""
    current = asyncio.current_task()
    return sorted(
        task.get_name() + ": " + repr(task.get_coro())
        for task in asyncio.all_tasks()
        if task not in baseline and task is not current and not task.done()
    )


@pytest.mark.parametrize(
    ("script", "stream"),
    [
        pytest.param({"hang": True}, False, id="hangs-before-answering"),
        pytest.param({"hang": True}, True, id="hangs-before-answering-a-stream"),
        pytest.param({"delay": 30}, False, id="answers-too-late"),
        pytest.param({"hang_after_events": 0}, True, id="sends-headers-then-hangs"),
    ],
)
async def test_hanging_upstream_is_504_after_the_timeout(
    start_relay: Callable[..., Any], upstream: FakeUpstream, script: dict[str, Any], stream: bool
) -> None:
    """An upstream that does not answer in time: 504 upstream_timeout, counted, nothing left."""
    upstream.script("gpt-4.1", **script)
    relay = await start_relay(timeout=0.3)
    async with (
        aiohttp.ClientSession() as session,
        session.post(relay.url(), **chat(stream)) as response,
    ):
        assert response.status == 504
        body = await response.json()
    assert body["error"]["code"] == "upstream_timeout"
    assert UPSTREAM_KEY not in json.dumps(body)
    assert relay.requests(504) == 1
    assert relay.active == 0
    await wait_until_async(lambda: upstream.active == 0, what="the upstream call closed")
    assert relay.upstream_acquired == 0
    FIGURES.fault("upstream hanging → 504")


async def test_upstream_closing_mid_stream_ends_the_client_stream_and_counts_it(
    start_relay: Callable[..., Any], upstream: FakeUpstream, logs: LogRecorder
) -> None:
    """An upstream dropping the connection mid-stream: the client's stream breaks, it is counted."""
    upstream.script("gpt-4.1", content=["a"] * 10, break_after_events=3)
    relay = await start_relay()
    received = b""
    async with (
        aiohttp.ClientSession() as session,
        session.post(relay.url(), **chat(stream=True)) as response,
    ):
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):  # noqa: PT012 - breaks mid-read
            async for chunk in response.content.iter_any():
                received += chunk
    assert received.count(b"data: ") == 3
    assert b"[DONE]" not in received
    assert relay.requests(200) == 1
    assert (
        relay.value("llm_upstream_interrupted_total", model="gpt-4.1", route="chat", reason="error")
        == 1
    )
    assert relay.active == 0
    assert relay.upstream_acquired == 0
    assert any(m == "upstream broke off the response" for m in logs.messages("sheepdog.proxy"))
    # The next request is served normally.
    upstream.script("gpt-4.1")
    async with aiohttp.ClientSession() as session, session.post(relay.url(), **chat()) as response:
        assert response.status == 200
    FIGURES.fault("upstream closing mid-stream")


@pytest.mark.parametrize("cancellation", [True, False], ids=["cancelled", "not-cancelled"])
async def test_hundred_clients_leaving_mid_stream_leak_nothing(
    start_relay: Callable[..., Any], upstream: FakeUpstream, cancellation: bool
) -> None:
    """100 clients gone mid-stream: 100 × 499, active 0, no task or connection left behind."""
    upstream.script("gpt-4.1", content=["tok"] * 200, event_delay=0.02)
    relay = await start_relay(cancellation=cancellation)
    baseline = set(asyncio.all_tasks())
    clients = 100

    async def leave_after_first_event() -> None:
        session = aiohttp.ClientSession()
        try:
            response = await session.post(relay.url(), **chat(stream=True))
            assert response.status == 200
            first = await response.content.readuntil(b"\n\n")
            assert first.startswith(b"data: ")
            response.close()  # drops the TCP connection mid-stream
        finally:
            await session.close()

    await asyncio.gather(*(leave_after_first_event() for _ in range(clients)))
    await wait_until_async(
        lambda: relay.requests(499) == clients, what="100 requests counted as 499"
    )
    await wait_until_async(lambda: upstream.active == 0, what="every upstream stream closed")
    await wait_until_async(
        lambda: relay.client_connections == 0, what="every client connection closed"
    )
    assert relay.active == 0
    assert relay.requests(200) == 0
    assert upstream.disconnects == clients
    assert relay.upstream_acquired == 0
    await wait_until_async(
        lambda: upstream.open_connections == 0, what="no upstream connection open"
    )
    await wait_until_async(
        lambda: not other_tasks(baseline),
        what="no task left behind",
        describe=lambda: other_tasks(baseline),
    )
    mode = "cancelled" if cancellation else "not cancelled"
    FIGURES.fault(f"client disconnecting mid-stream (handlers {mode} on disconnect)", clients)


async def test_clients_giving_up_on_a_silent_upstream_are_499(
    start_relay: Callable[..., Any], upstream: FakeUpstream
) -> None:
    """Clients leaving before the upstream's first byte: 499, upstream calls closed at once."""
    upstream.script("gpt-4.1", hang=True)
    relay = await start_relay(timeout=60)
    baseline = set(asyncio.all_tasks())
    clients = 20

    async def give_up() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(TimeoutError):
                await session.post(
                    relay.url(), **chat(stream=True), timeout=aiohttp.ClientTimeout(total=0.3)
                )

    await asyncio.gather(*(give_up() for _ in range(clients)))
    await wait_until_async(
        lambda: relay.requests(499) == clients, what="20 requests counted as 499"
    )
    await wait_until_async(lambda: upstream.active == 0, what="every upstream call closed")
    assert relay.active == 0
    assert relay.upstream_acquired == 0
    await wait_until_async(
        lambda: not other_tasks(baseline),
        what="no task left behind",
        describe=lambda: other_tasks(baseline),
    )
    FIGURES.fault("client giving up before the upstream answered", clients)
