"""An event loop in a thread of its own, for services that must outlive one test or one example.

Hypothesis runs each example as a plain function call; the service under test (sheepdog, in
this process, with its peers) keeps running on this loop between examples, as it would between
requests in production, and each example talks to it over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from yarl import URL

T = TypeVar("T")


class LoopThread:
    """A running event loop on a daemon thread; :meth:`run` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="faults-loop")
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_the_rest() -> None:
            current = asyncio.current_task()
            rest = [task for task in asyncio.all_tasks() if task is not current]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


class Served:
    """An aiohttp app served on a loopback port of ``thread``'s loop, with a client session."""

    def __init__(self, thread: LoopThread, app: web.Application) -> None:
        self.thread = thread
        self.app = app
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        self.session: aiohttp.ClientSession | None = None
        self.base_url = ""

    def start(self) -> Served:
        async def start() -> None:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None and server.sockets
            port = server.sockets[0].getsockname()[1]
            self.base_url = f"http://127.0.0.1:{port}"
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
