"""Streams under stress: clients leaving, upstreams stalling or breaking off, many at once."""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai import AsyncStream
from openai.types.chat import ChatCompletionChunk

from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import StartProxy, proxy_config
from tests.support.polling import wait_until_async

GPT = {"model": "gpt-4.1"}
SLOW = {"content": ["tok"] * 40, "event_delay": 0.05}


async def read_until_broken(stream: AsyncStream[ChatCompletionChunk]) -> list[ChatCompletionChunk]:
    """The chunks a stream delivered before it broke; fails if it ended normally."""
    received = []
    with pytest.raises(openai.APIConnectionError):  # noqa: PT012 - the break is mid-iteration
        async for chunk in stream:
            received.append(chunk)
    return received


@pytest.mark.parametrize("cancel_on_disconnect", [True, False])
async def test_client_leaving_mid_stream_is_499_and_closes_the_upstream(
    start_proxy: StartProxy, upstream: FakeUpstream, cancel_on_disconnect: bool
) -> None:
    """A client that goes away mid-stream: upstream closed at once, code 499, nothing active."""
    upstream.script("gpt-4.1", **SLOW)
    proxy = await start_proxy(cancel_on_disconnect=cancel_on_disconnect)
    async with proxy.client() as client:
        stream = await client.chat.completions.create(model="gpt-4.1", messages=[], stream=True)
        async for chunk in stream:
            if chunk.choices[0].delta.content:
                break
        await stream.close()
    await wait_until_async(
        lambda: proxy.requests(**GPT, route="chat", code="499", client="team-a") == 1,
        what="the request counted as 499",
    )
    await wait_until_async(lambda: upstream.active == 0, what="the upstream call closed")
    assert upstream.disconnects == 1
    assert proxy.value("llm_active_requests", **GPT) == 0
    assert proxy.value("llm_usage_missing_total", **GPT, route="chat") == 1
    assert proxy.value("llm_time_to_first_token_seconds_count", **GPT) == 1
    assert proxy.requests(**GPT, route="chat", code="200", client="team-a") == 0


async def test_usage_seen_before_the_client_leaves_is_still_counted(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """Tokens the upstream reported before the client went away are metered all the same."""
    upstream.script("gpt-4.1", prompt_tokens=100, completion_tokens=7)
    proxy = await start_proxy()
    async with proxy.client() as client:
        stream = await client.chat.completions.create(
            model="gpt-4.1", messages=[], stream=True, stream_options={"include_usage": True}
        )
        async for chunk in stream:
            if chunk.usage is not None:
                break
        await stream.close()
    await wait_until_async(
        lambda: proxy.value("llm_active_requests", **GPT) == 0, what="no request active"
    )
    assert proxy.value("llm_tokens_total", **GPT, type="input", client="team-a") == 100
    assert proxy.value("llm_tokens_total", **GPT, type="output", client="team-a") == 7


async def test_upstream_stalling_mid_stream_breaks_the_client_stream(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """A stream the upstream stalls past the timeout is cut off, never ended as if complete."""
    upstream.script("gpt-4.1", hang_after_events=3)
    proxy = await start_proxy(proxy_config(upstream, upstream={"timeout_seconds": 0.5}))
    async with proxy.client() as client:
        stream = await client.chat.completions.create(model="gpt-4.1", messages=[], stream=True)
        received = await read_until_broken(stream)
    assert len(received) == 3
    # The status was already sent: it stays the code; the interruption is counted apart.
    assert proxy.requests(**GPT, route="chat", code="200", client="team-a") == 1
    assert proxy.value("llm_upstream_interrupted_total", **GPT, route="chat", reason="timeout") == 1
    assert proxy.value("llm_usage_missing_total", **GPT, route="chat") == 1
    await wait_until_async(lambda: upstream.active == 0, what="the upstream call closed")


async def test_upstream_stalling_before_any_event_is_504(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """When the upstream stalls before the first event, the client still gets a proper 504."""
    upstream.script("gpt-4.1", hang_after_events=0)
    proxy = await start_proxy(proxy_config(upstream, upstream={"timeout_seconds": 0.3}))
    async with proxy.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-4.1", messages=[], stream=True)
    assert caught.value.status_code == 504
    assert proxy.requests(**GPT, route="chat", code="504", client="team-a") == 1


async def test_upstream_breaking_off_mid_stream_breaks_the_client_stream(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """An upstream that drops the connection mid-stream: the client's stream breaks too."""
    upstream.script("gpt-4.1", break_after_events=2)
    proxy = await start_proxy()
    async with proxy.client() as client:
        stream = await client.chat.completions.create(model="gpt-4.1", messages=[], stream=True)
        received = await read_until_broken(stream)
    assert len(received) == 2
    assert proxy.value("llm_upstream_interrupted_total", **GPT, route="chat", reason="error") == 1
    # The proxy still serves the next request normally.
    upstream.script("gpt-4.1")
    async with proxy.client() as client:
        await client.chat.completions.create(model="gpt-4.1", messages=[])


async def test_two_hundred_concurrent_streams_leave_nothing_behind(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """200 concurrent streams (some abandoned): active back to 0, no upstream connection left."""
    upstream.script("gpt-4.1", content=["a", "b", "c", "d"], event_delay=0.02)
    proxy = await start_proxy()

    async def one(index: int, client: openai.AsyncOpenAI) -> str:
        stream = await client.chat.completions.create(model="gpt-4.1", messages=[], stream=True)
        text = ""
        async for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            if index % 10 == 0 and text:
                await stream.close()  # every tenth client goes away after its first token
                break
        return text

    async with proxy.client() as client:
        texts = await asyncio.gather(*(one(index, client) for index in range(200)))
    assert texts.count("abcd") == 180
    await wait_until_async(
        lambda: proxy.requests(**GPT, route="chat", code="499", client="team-a") == 20,
        what="20 requests counted as 499",
    )
    assert proxy.requests(**GPT, route="chat", code="200", client="team-a") == 180
    assert proxy.value("llm_active_requests", **GPT) == 0
    await wait_until_async(lambda: upstream.active == 0, what="the upstream call closed")
    # Idle keep-alive connections may stay pooled; none may outlive the proxy.
    assert upstream.open_connections <= 200
    await proxy.close()
    await wait_until_async(
        lambda: upstream.open_connections == 0, what="no upstream connection open"
    )
