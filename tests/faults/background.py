"""sheepdog served on a :class:`~tests.support.loop.LoopThread`, for services that must outlive
one test or one Hypothesis example: each example talks to it over loopback HTTP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from aiohttp import web
from yarl import URL

from sheepdog.app import create_app
from sheepdog.config import Config
from sheepdog.core.exposition import MetricsRegistry
from sheepdog.core.runtime import RUNTIME
from tests.support.loop import LoopThread
from tests.support.ports import LOOPBACK

T = TypeVar("T")


class Served:
    """An aiohttp app served on a loopback port of ``thread``'s loop, with a client session."""

    def __init__(self, thread: LoopThread, app: web.Application) -> None:
        self.thread = thread
        self.app = app
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        self.session: aiohttp.ClientSession | None = None
        self.base_url = ""

    @classmethod
    def create(cls, thread: LoopThread, config: Config) -> Served:
        """The whole service for ``config``, on a registry of its own, built on ``thread``'s
        loop and started."""

        async def build() -> Served:
            return cls(thread, create_app(config, registry=MetricsRegistry()))

        return thread.run(build()).start()

    @property
    def registry(self) -> MetricsRegistry:
        return self.app[RUNTIME].registry

    def start(self) -> Served:
        async def start() -> None:
            await self.runner.setup()
            await web.TCPSite(self.runner, LOOPBACK, 0).start()
            host, port = self.runner.addresses[0][:2]
            self.base_url = f"http://{host}:{port}"
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=30),
            )

        self.thread.run(start())
        return self

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        skip_auto_headers: tuple[str, ...] = (),
    ) -> tuple[int, bytes, dict[str, str]]:
        """One HTTP request; the status, the whole body and the headers of the answer."""

        async def call() -> tuple[int, bytes, dict[str, str]]:
            assert self.session is not None
            async with self.session.request(
                method,
                URL(self.base_url + path, encoded=True),  # the path goes out as written
                data=data,
                headers=headers,
                skip_auto_headers=skip_auto_headers,
            ) as response:
                return response.status, await response.read(), dict(response.headers)

        return self.thread.run(call())

    def call(self, function: Callable[[], Awaitable[T]]) -> T:
        """Run ``function()`` on the service's loop (to read its state safely)."""

        async def wrapper() -> T:
            return await function()

        return self.thread.run(wrapper())

    def stop(self) -> None:
        async def stop() -> None:
            if self.session is not None:
                await self.session.close()
            await self.runner.cleanup()

        self.thread.run(stop())
