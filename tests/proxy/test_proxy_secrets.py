"""Keys stay where they belong: not in logs, metrics or error bodies, never across the proxy."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from proxy import RELAY
from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import (
    TEAM_A_KEY,
    TEAM_B_KEY,
    UPSTREAM_KEY,
    StartProxy,
    proxy_config,
)

BAD_KEY = "sd-bad-SENTINEL-77d0e2"
SENTINELS = (UPSTREAM_KEY, TEAM_A_KEY, TEAM_B_KEY, BAD_KEY, "SENTINEL")


async def test_no_key_leaks_anywhere(
    start_proxy: StartProxy,
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    refused_port: int,
) -> None:
    """Across success, streams and every error, no key shows up where it must not."""
    caplog.set_level(logging.DEBUG)
    upstream.script("deepseek-v3.2", status=500)
    upstream.script("gpt-4.1-mini", hang=True)
    upstream.script("gpt-4.1-nano", status=401)
    upstream.script("gpt-4o", gzip=True)
    proxy = await start_proxy()
    # Only the hanging upstream call goes through the short timeout: a busy machine must not
    # turn the other answers into 504s.
    impatient = await start_proxy(proxy_config(upstream, upstream={"timeout_seconds": 0.3}))
    down = await start_proxy(
        proxy_config(upstream, upstream={"base_url": f"http://127.0.0.1:{refused_port}/v1"})
    )

    seen_by_clients: list[str] = []
    async with aiohttp.ClientSession() as session:

        async def call(target: str, key: str | None, model: str, stream: bool = False) -> None:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            body = {"model": model, "messages": [], "stream": stream}
            async with session.post(target, json=body, headers=headers) as response:
                seen_by_clients.append(str(response.headers))
                seen_by_clients.append((await response.read()).decode("utf-8", "replace"))

        url = proxy.url("/v1/chat/completions")
        for key, model, stream in [
            (TEAM_A_KEY, "gpt-4.1", False),
            (TEAM_A_KEY, "gpt-4.1", True),
            (TEAM_B_KEY, "gpt-4o", False),
            (TEAM_A_KEY, "deepseek-v3.2", False),
            (TEAM_A_KEY, "gpt-4.1-nano", False),
            (BAD_KEY, "gpt-4.1", False),
            (None, "gpt-4.1", False),
        ]:
            await call(url, key, model, stream)
        await call(impatient.url("/v1/chat/completions"), TEAM_A_KEY, "gpt-4.1-mini")
        await call(down.url("/v1/chat/completions"), TEAM_A_KEY, "gpt-4.1")
        metrics = ""
        for served in (proxy, impatient, down):
            async with session.get(served.url("/metrics")) as response:
                metrics += await response.text()

    client_side = "\n".join(seen_by_clients)
    assert UPSTREAM_KEY not in client_side
    for sentinel in SENTINELS:
        assert sentinel not in metrics
        assert sentinel not in caplog.text
        assert sentinel not in repr(proxy.app[RELAY].settings)
    for received in upstream.received:
        assert TEAM_A_KEY not in str(received.headers) and TEAM_A_KEY not in str(received.body)
        assert TEAM_B_KEY not in str(received.headers)
        assert received.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    # Make sure the traffic above really exercised the error paths it claims to.
    for code in ("200", "500", "401"):
        assert f'code="{code}"' in proxy.exposition()
    assert 'code="504"' in impatient.exposition()
    assert 'code="502"' in down.exposition()
    assert any(record.name.startswith("sheepdog.proxy") for record in caplog.records)
