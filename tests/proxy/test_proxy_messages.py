"""The Anthropic Messages API through sheepdog, with the official anthropic SDK as the client."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import anthropic
import pytest

from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import TEAM_A_KEY, TEAM_B_KEY, UPSTREAM_KEY, StartProxy
from tests.support.polling import wait_until_async

SONNET = {"model": "claude-sonnet-4.6"}
DATED = "claude-sonnet-4-6"  # as the anthropic SDK spells it
MESSAGES = [{"role": "user", "content": "Hello"}]
# Sonnet 4.6 list prices, USD per 1M tokens: input 3, output 15, cache read 0.30, 5-minute write
# 3.75, 1-hour write 6.
CACHED = {
    "input_tokens": 1000,
    "cache_read_tokens": 90_000,
    "cache_write_5m_tokens": 5000,
    "cache_write_1h_tokens": 4000,
    "output_tokens": 500,
}
CACHED_USD = (1000 * 3 + 90_000 * 0.30 + 5000 * 3.75 + 4000 * 6 + 500 * 15) / 1e6  # 0.08025


def assert_cached_usage_metered(proxy: object, client: str = "team-a", times: int = 1) -> None:
    labels = {**SONNET, "client": client}
    value = proxy.value  # type: ignore[attr-defined]
    assert value("llm_tokens_total", type="input", **labels) == times * 100_000
    assert value("llm_tokens_total", type="output", **labels) == times * 500
    assert value("llm_token_details_total", type="cache_read", **labels) == times * 90_000
    assert value("llm_token_details_total", type="cache_write", **labels) == times * 9000
    assert value("llm_cost_usd_total", **labels) == pytest.approx(times * CACHED_USD, rel=1e-12)
    # Cache reads at 0.30 instead of 3.00.
    assert value("llm_cache_savings_usd_total", **labels) == pytest.approx(
        times * 90_000 * 2.70 / 1e6, rel=1e-12
    )


async def test_a_message_arrives_as_sent_and_is_metered_at_each_rate(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """A message (async SDK) is the upstream's bytes; every kind of token is priced at its rate."""
    upstream.anthropic.script(DATED, **CACHED)
    proxy = await start_proxy()
    async with proxy.anthropic() as client:
        raw = await client.messages.with_raw_response.create(
            model=DATED,
            max_tokens=1024,
            messages=MESSAGES,
            extra_headers={
                "anthropic-version": "2023-06-01",
                "anthropic-beta": "extended-cache-ttl-2025-04-11",
            },
        )
        message = await raw.parse()
    assert raw.http_response.content == upstream.sent[-1]
    assert message.content[0].type == "text" and message.content[0].text == "Hello, world!"
    assert message.usage.cache_read_input_tokens == 90_000
    sent = upstream.received[-1]
    assert (sent.path, sent.json["model"]) == ("/v1/messages", DATED)
    # The upstream key as x-api-key, never the client's key; Anthropic's headers as sent.
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    assert "Authorization" not in sent.headers
    assert TEAM_A_KEY not in str(dict(sent.headers))
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "extended-cache-ttl-2025-04-11"
    assert proxy.requests(**SONNET, route="messages", code="200", client="team-a") == 1
    assert proxy.value("llm_request_duration_seconds_count", **SONNET, route="messages") == 1
    assert_cached_usage_metered(proxy)
    assert proxy.value("llm_spend_month_usd", client="team-a") == pytest.approx(CACHED_USD)


async def test_a_stream_arrives_byte_for_byte_with_ttft_and_cumulative_usage(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """A stream (async SDK): the upstream's events unchanged, pings and thinking included; usage
    merged from message_start and the cumulative message_delta; TTFT at the first delta."""
    upstream.anthropic.script(
        DATED, **CACHED, thinking=["Let me", " think"], thinking_tokens=120, event_delay=0.01
    )
    proxy = await start_proxy()
    async with proxy.anthropic() as client:
        async with client.messages.with_streaming_response.create(
            model=DATED, max_tokens=1024, messages=MESSAGES, stream=True
        ) as raw:
            body = await raw.read()
        async with client.messages.stream(
            model=DATED, max_tokens=1024, messages=MESSAGES
        ) as stream:
            text = await stream.get_final_text()
            final = await stream.get_final_message()
    assert body == upstream.sent[-2]
    assert b"event: ping" in body and b"thinking_delta" in body
    assert text == "Hello, world!"
    assert (final.usage.output_tokens, final.usage.cache_read_input_tokens) == (500, 90_000)
    assert_cached_usage_metered(proxy, times=2)
    labels = {**SONNET, "client": "team-a"}
    assert proxy.value("llm_token_details_total", type="reasoning", **labels) == 2 * 120
    assert proxy.value("llm_time_to_first_token_seconds_count", **SONNET) == 2
    assert proxy.value("llm_usage_missing_total", **SONNET, route="messages") is None


async def test_the_sync_sdk_gets_messages_and_streams(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """The synchronous anthropic SDK (in a thread), plain and streamed, with its key as a Bearer
    token (auth_token) too."""
    upstream.anthropic.script(DATED, **CACHED)
    proxy = await start_proxy()

    def call() -> tuple[str, str]:
        with proxy.sync_anthropic() as client:
            message = client.messages.create(model=DATED, max_tokens=64, messages=MESSAGES)
            with client.messages.stream(model=DATED, max_tokens=64, messages=MESSAGES) as stream:
                streamed = "".join(stream.text_stream)
        with anthropic.Anthropic(
            base_url=proxy.url(""), auth_token=TEAM_B_KEY, max_retries=0
        ) as bearer:
            bearer.messages.create(model=DATED, max_tokens=64, messages=MESSAGES)
        block = message.content[0]
        assert block.type == "text"
        return block.text, streamed

    assert await asyncio.to_thread(call) == ("Hello, world!", "Hello, world!")
    assert_cached_usage_metered(proxy, times=2)
    assert_cached_usage_metered(proxy, client="team-b")


async def test_an_error_event_mid_stream_reaches_the_sdk_and_what_was_reported_is_metered(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """An overloaded_error event after some deltas: the SDK raises it; the input tokens from
    message_start are metered, and the stream counts as interrupted (stream_error)."""
    upstream.anthropic.script(DATED, **CACHED, error_after_events=5)
    proxy = await start_proxy()
    async with proxy.anthropic() as client:
        with pytest.raises(anthropic.APIStatusError) as caught:  # noqa: PT012
            stream = await client.messages.create(
                model=DATED, max_tokens=64, messages=MESSAGES, stream=True
            )
            async for _ in stream:
                pass
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    labels = {**SONNET, "client": "team-a"}
    assert proxy.value("llm_tokens_total", type="input", **labels) == 100_000
    assert proxy.value("llm_tokens_total", type="output", **labels) == 1  # message_start's count
    assert proxy.requests(**SONNET, route="messages", code="200", client="team-a") == 1
    assert (
        proxy.value(
            "llm_upstream_interrupted_total", **SONNET, route="messages", reason="stream_error"
        )
        == 1
    )


async def test_overloaded_529_passes_through_as_the_sdks_overloaded_error(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """An upstream 529 reaches the SDK unchanged (OverloadedError) and costs nothing."""
    upstream.anthropic.script(DATED, status=529)
    proxy = await start_proxy()
    async with proxy.anthropic() as client:
        with pytest.raises(anthropic.OverloadedError) as caught:
            await client.messages.create(model=DATED, max_tokens=64, messages=MESSAGES)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "upstream says 529"},
    }
    assert proxy.requests(**SONNET, route="messages", code="529", client="team-a") == 1
    assert proxy.value("llm_cost_usd_total", **SONNET, client="team-a") is None


async def test_keys_are_checked_and_refusals_are_anthropic_shaped(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """A wrong or missing key on /v1/messages: 401 authentication_error, the SDK's
    AuthenticationError; nothing goes upstream."""
    proxy = await start_proxy()
    async with proxy.anthropic("sd-not-a-key") as client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client.messages.create(model=DATED, max_tokens=64, messages=MESSAGES)
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "authentication_error",
            "message": "Incorrect API key provided: it is not a client key of this proxy.",
        },
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(proxy.url("/v1/messages"), json={"model": DATED}) as response,
    ):
        assert response.status == 401
        assert (await response.json())["error"]["type"] == "authentication_error"
    assert upstream.received == []
    assert proxy.requests(model="other", route="messages", code="401", client="anonymous") == 2


async def test_a_client_over_budget_gets_a_429_the_sdk_does_not_retry(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """Over budget through /v1/messages: an Anthropic-shaped 429 rate_limit_error, which the SDK
    raises as RateLimitError without retrying (x-should-retry: false)."""
    # 1M uncached input tokens of Sonnet at $3 and 500K output at $15: $10.50, over team-a's $10.
    upstream.anthropic.script(DATED, input_tokens=1_000_000, output_tokens=500_000)
    proxy = await start_proxy()
    async with proxy.anthropic(max_retries=3) as client:
        await client.messages.create(model=DATED, max_tokens=64, messages=MESSAGES)
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(model=DATED, max_tokens=64, messages=MESSAGES)
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "Client 'team-a' has used its monthly budget of $10.00 (calendar month, "
            "UTC). It resets at the start of next month.",
        },
    }
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.response.headers["Retry-After"] == str((15 * 24 + 12) * 3600)
    assert len(upstream.received) == 1
    assert proxy.requests(**SONNET, route="messages", code="429", client="team-a") == 1


async def test_count_tokens_is_relayed_with_the_upstream_key_and_not_metered(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """/v1/messages/count_tokens reaches the upstream as the Anthropic API wants, route other."""
    upstream.anthropic.script(DATED, input_tokens=1234)
    proxy = await start_proxy()
    async with proxy.anthropic() as client:
        counted = await client.messages.count_tokens(model=DATED, messages=MESSAGES)
    assert counted.input_tokens == 1234
    assert upstream.received[-1].path == "/v1/messages/count_tokens"
    assert upstream.received[-1].headers["x-api-key"] == UPSTREAM_KEY
    assert proxy.requests(model="other", route="other", code="200", client="team-a") == 1
    assert proxy.value("llm_tokens_total", type="input", **SONNET, client="team-a") is None


async def test_a_client_leaving_a_message_stream_is_499_with_usage_so_far(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """A client that leaves mid-stream: code 499, the input tokens of message_start metered."""
    upstream.anthropic.script(DATED, **CACHED, content=["tok"] * 40, event_delay=0.05)
    proxy = await start_proxy()
    async with proxy.anthropic() as client:
        stream = await client.messages.create(
            model=DATED, max_tokens=64, messages=MESSAGES, stream=True
        )
        async for event in stream:
            if event.type == "content_block_delta":
                break
        await stream.close()
    await wait_until_async(
        lambda: proxy.requests(**SONNET, route="messages", code="499", client="team-a") == 1,
        what="the request counted as 499",
    )
    await wait_until_async(
        lambda: proxy.value("llm_active_requests", **SONNET) == 0, what="no request active"
    )
    assert proxy.value("llm_tokens_total", type="input", **SONNET, client="team-a") == 100_000


async def test_client_keys_are_accepted_as_x_api_key_on_openai_routes(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """x-api-key identifies the client on every route; upstream it is replaced by the Bearer key."""
    proxy = await start_proxy()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            proxy.url("/v1/chat/completions"),
            json={"model": "gpt-4.1", "messages": []},
            headers={"x-api-key": TEAM_B_KEY},
        ) as response,
    ):
        assert response.status == 200
        assert json.loads(await response.read())["choices"][0]["message"]["content"]
    assert proxy.requests(model="gpt-4.1", route="chat", code="200", client="team-b") == 1
    sent = upstream.received[-1].headers
    assert sent["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "x-api-key" not in sent
