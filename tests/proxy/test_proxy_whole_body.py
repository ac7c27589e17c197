"""Non-streamed bodies: small ones are sent in one piece, large ones streamed, both unchanged."""

from __future__ import annotations

import aiohttp
import pytest

from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import TEAM_A_KEY, StartProxy

AUTH = {"Authorization": f"Bearer {TEAM_A_KEY}"}
GPT = {"model": "gpt-4.1", "client": "team-a"}


@pytest.mark.parametrize(
    "size",
    [100, 512 * 1024, 3 * 1024 * 1024],
    # 512 KiB is read whole but too large to parse: its usage is found in its tail.
    ids=["small", "whole-512KiB", "over-1MiB"],
)
async def test_body_arrives_byte_for_byte_with_its_length_and_is_metered(
    start_proxy: StartProxy, upstream: FakeUpstream, size: int
) -> None:
    """Whether read whole (small) or streamed through (large), a body is the upstream's bytes,
    with the upstream's Content-Length and Content-Type, and its usage is counted."""
    upstream.script("gpt-4.1", content=["x" * size], prompt_tokens=7, completion_tokens=3)
    proxy = await start_proxy()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            proxy.url("/v1/chat/completions"),
            json={"model": "gpt-4.1", "messages": []},
            headers=AUTH,
        ) as response,
    ):
        raw = await response.read()
        assert response.status == 200
        assert response.headers["Content-Length"] == str(len(raw))
        assert response.headers["Content-Type"].startswith("application/json")
    assert raw == upstream.sent[-1]
    assert len(raw) > size
    assert proxy.requests(**GPT, route="chat", code="200") == 1
    assert proxy.value("llm_tokens_total", type="input", **GPT) == 7
    assert proxy.value("llm_tokens_total", type="output", **GPT) == 3


async def test_upstream_error_body_of_known_length_passes_through(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """An upstream error answered whole keeps its status, reason and body."""
    upstream.script("gpt-4.1", status=429)
    proxy = await start_proxy()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            proxy.url("/v1/chat/completions"),
            json={"model": "gpt-4.1", "messages": []},
            headers=AUTH,
        ) as response,
    ):
        raw = await response.read()
        assert response.status == 429
        assert response.reason == "Too Many Requests"
    assert raw == upstream.sent[-1]
    assert proxy.requests(**GPT, route="chat", code="429") == 1
