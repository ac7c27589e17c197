"""Per-client rate limits through the official SDKs: 429 with the headers they read, their own
retry admitted once the 60-second window allows, tokens counted from the usage reported."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from proxy import RELAY, prepare
from proxy.clients import Caller
from proxy.limits import RateKey, RateLimiter, exchange_counts
from sheepdog.config import parse_config
from sheepdog.core.db import DatabaseUnavailable
from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import TEAM_A_KEY, TEAM_B_KEY, FakeClock, StartProxy, proxy_config

GPT = {"model": "gpt-4.1"}
MESSAGES: Any = [{"role": "user", "content": "Hello"}]
SONNET = "claude-sonnet-4-6"  # as the anthropic SDK spells it
START = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


class SteppingClock(FakeClock):
    """Wall and monotonic time that run as the real ones do, and jump when a test says: an SDK's
    own retry sleeps real time, and the window it waits for must pass in that time too."""

    def __init__(self, now: datetime) -> None:
        super().__init__(now)
        self._started = time.monotonic()
        self.offset = 0.0

    def now(self) -> datetime:
        return self.current + timedelta(seconds=time.monotonic() - self._started + self.offset)

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def skip(self, seconds: float) -> None:
        self.offset += seconds

    def seconds(self) -> float:
        """Seconds since ``START``, on this clock."""
        return (self.now() - START).total_seconds()


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock(START)


def limited(fake: FakeUpstream, **team_a: Any) -> dict[str, Any]:
    config = proxy_config(fake)
    config["proxy"]["clients"][0].update(team_a)
    return config


def at_start_of_a_second(clock: SteppingClock) -> float:
    """Move to just after the start of a second, so that the requests a test makes next fall
    in that second's slot; returns the moment."""
    clock.skip(math.floor(clock.seconds()) + 1.02 - clock.seconds())
    return clock.seconds()


def skip_to_window_end(clock: SteppingClock, first_request_at: float, margin: float) -> None:
    """Move to ``margin`` seconds before the slot of a request made at ``first_request_at``
    leaves the window (slot ``s`` counts until ``s + 61``)."""
    clock.skip(math.floor(first_request_at) + 61 - margin - clock.seconds())


async def test_over_its_rpm_a_client_gets_429_with_the_headers_and_the_sdk_retry_succeeds(
    start_proxy: StartProxy, upstream: FakeUpstream, clock: SteppingClock
) -> None:
    """Three requests a minute: the fourth is refused before going upstream, OpenAI-shaped, with
    Retry-After, retry-after-ms and x-ratelimit-*; then the SDK's own retry, after waiting as
    told, is admitted once the first request's second has left the window."""
    proxy = await start_proxy(limited(upstream, requests_per_minute=3))
    first_at = at_start_of_a_second(clock)
    async with proxy.client() as client:
        for _ in range(3):
            await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    error = caught.value
    body: Any = error.body
    assert body == {"message": body["message"], "type": "requests", "code": "rate_limit_exceeded"}
    assert body["message"].startswith(
        "Rate limit reached for client 'team-a' on requests per minute: limit 3, used 3 in the "
        "last 60 s. Try again in "
    )
    headers = error.response.headers
    # The window opens when the first request's second is 61 s old.
    retry_after = math.floor(first_at) + 61 - clock.seconds()
    assert 0 < float(headers["retry-after-ms"]) / 1000 - retry_after < 0.5
    assert int(headers["Retry-After"]) == math.ceil(float(headers["retry-after-ms"]) / 1000)
    assert headers["x-should-retry"] == "true"
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in headers  # no token limit configured
    assert len(upstream.received) == 3
    assert proxy.value("llm_rate_limited_total", client="team-a", limit="requests") == 1
    assert proxy.requests(**GPT, route="chat", code="429", client="team-a") == 1

    # 0.6 s before the first request's second leaves: refused once, then the SDK waits as told.
    skip_to_window_end(clock, first_at, 0.6)
    async with proxy.client(max_retries=2) as client:
        reply = await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello, world!"
    assert proxy.value("llm_rate_limited_total", client="team-a", limit="requests") == 2
    assert len(upstream.received) == 4
    assert proxy.requests(**GPT, route="chat", code="200", client="team-a") == 4
    # Another client is not affected, and has no series of a limit it does not have.
    async with proxy.client(TEAM_B_KEY) as other:
        for _ in range(5):
            await other.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert proxy.value("llm_rate_limited_total", client="team-b", limit="requests") is None
    assert proxy.value("llm_rate_limited_total", client="team-a", limit="tokens") is None


async def test_the_sync_sdk_retries_a_rate_limit_too(
    start_proxy: StartProxy, upstream: FakeUpstream, clock: SteppingClock
) -> None:
    """The synchronous client sleeps the retry-after-ms too, and then gets its answer."""
    proxy = await start_proxy(limited(upstream, requests_per_minute=1))
    first_at = at_start_of_a_second(clock)

    def call() -> str | None:
        with proxy.sync_client(max_retries=2) as client:
            client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
            skip_to_window_end(clock, first_at, 0.4)
            reply = client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        return reply.choices[0].message.content

    assert await asyncio.to_thread(call) == "Hello, world!"
    assert proxy.value("llm_rate_limited_total", client="team-a", limit="requests") == 1


async def test_tokens_per_minute_are_counted_from_the_usage_each_answer_reports(
    start_proxy: StartProxy, upstream: FakeUpstream, clock: SteppingClock
) -> None:
    """16 tokens a request (12 in, 4 out), streamed or not: under 33 the third is admitted (32),
    the fourth refused with the exact count (48); a stream counts once it has ended."""
    proxy = await start_proxy(limited(upstream, tokens_per_minute=33))
    async with proxy.client() as client:
        stream = await client.chat.completions.create(
            model="gpt-4.1", messages=MESSAGES, stream=True
        )
        async for _ in stream:
            pass
        await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    error = caught.value
    body: Any = error.body
    assert body["type"] == "tokens"
    assert "on tokens per minute: limit 33, used 48 in the last 60 s" in body["message"]
    headers = error.response.headers
    assert headers["x-ratelimit-limit-tokens"] == "33"
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert "x-ratelimit-limit-requests" not in headers
    assert proxy.value("llm_rate_limited_total", client="team-a", limit="tokens") == 1
    assert len(upstream.received) == 3


async def test_a_stream_in_flight_counts_its_tokens_when_it_ends(
    start_proxy: StartProxy, upstream: FakeUpstream, clock: SteppingClock
) -> None:
    """Tokens are known when the usage arrives: while a stream is under way its tokens are not
    counted yet, so another request is admitted; once it ends, they are."""
    upstream.script("gpt-4.1", prompt_tokens=100, completion_tokens=50, event_delay=0.05)
    proxy = await start_proxy(limited(upstream, tokens_per_minute=100))
    async with proxy.client() as client:
        stream = await client.chat.completions.create(
            model="gpt-4.1", messages=MESSAGES, stream=True
        )
        await anext(aiter(stream))  # under way
        upstream.script("deepseek-v3.2", prompt_tokens=1, completion_tokens=1)
        await client.chat.completions.create(model="deepseek-v3.2", messages=MESSAGES)
        async for _ in stream:
            pass
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="deepseek-v3.2", messages=MESSAGES)
    body: Any = caught.value.body
    assert "used 152 in the last 60 s" in body["message"]


async def test_the_anthropic_sdk_gets_an_anthropic_429_and_its_retry_succeeds(
    start_proxy: StartProxy, upstream: FakeUpstream, clock: SteppingClock
) -> None:
    """On /v1/messages: rate_limit_error with anthropic-ratelimit-* (reset as RFC 3339) beside
    the OpenAI-style headers; tokens are the Messages usage (input, cache, output)."""
    upstream.anthropic.script(SONNET, input_tokens=10, cache_read_tokens=20, output_tokens=5)
    proxy = await start_proxy(limited(upstream, requests_per_minute=5, tokens_per_minute=35))
    first_at = at_start_of_a_second(clock)
    async with proxy.anthropic() as client:
        await client.messages.create(model=SONNET, max_tokens=64, messages=MESSAGES)
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(model=SONNET, max_tokens=64, messages=MESSAGES)
    error = caught.value
    body: Any = error.body
    message = body["error"]["message"]
    assert body == {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
    assert "on tokens per minute: limit 35, used 35" in message
    headers = error.response.headers
    assert headers["x-should-retry"] == "true"
    assert headers["anthropic-ratelimit-tokens-limit"] == "35"
    assert headers["anthropic-ratelimit-tokens-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-limit"] == "5"
    assert headers["anthropic-ratelimit-requests-remaining"] == "4"
    reset = datetime.fromisoformat(headers["anthropic-ratelimit-tokens-reset"])
    assert reset == START + timedelta(seconds=math.floor(first_at) + 61)
    assert headers["x-ratelimit-limit-tokens"] == "35"

    skip_to_window_end(clock, first_at, 0.5)
    async with proxy.anthropic(max_retries=2) as client:
        message = await client.messages.create(model=SONNET, max_tokens=64, messages=MESSAGES)
    assert message.content[0].text == "Hello, world!"  # type: ignore[union-attr]
    assert proxy.value("llm_rate_limited_total", client="team-a", limit="tokens") == 2


async def test_budget_refusals_stay_final_and_limits_hold_across_a_reload(
    start_proxy: StartProxy, upstream: FakeUpstream, clock: SteppingClock
) -> None:
    """A client over its budget gets the budget's 429 (not retried) even when also limited; a
    reload that keeps the limit keeps the count, one that lifts it admits at once."""
    proxy = await start_proxy(limited(upstream, requests_per_minute=2))
    async with aiohttp.ClientSession() as session:

        async def status() -> int:
            async with session.post(
                proxy.url("/v1/chat/completions"),
                json={"model": "gpt-4.1", "messages": []},
                headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
            ) as response:
                return response.status

        assert [await status() for _ in range(3)] == [200, 200, 429]
        await _reload(proxy, limited(upstream, requests_per_minute=2, monthly_budget_usd=5))
        assert await status() == 429
        await _reload(proxy, limited(upstream))
        assert await status() == 200
        await _reload(proxy, limited(upstream, monthly_budget_usd=0, requests_per_minute=1))
        async with session.post(
            proxy.url("/v1/chat/completions"),
            json={"model": "gpt-4.1", "messages": []},
            headers={"Authorization": f"Bearer {TEAM_A_KEY}"},
        ) as response:
            assert response.status == 429
            assert response.headers["x-should-retry"] == "false"
            assert (await response.json())["error"]["code"] == "budget_exceeded"


async def _reload(proxy: Any, config: dict[str, Any]) -> None:
    relay = proxy.app[RELAY]
    built = parse_config(config, env={}, base_dir=None)
    prepare(relay, built.proxy).commit()


# --------------------------------------------------------------------------------------------
# The windows themselves, and the seam for counts shared between processes.


class _Clock(FakeClock):
    def __init__(self, seconds: float) -> None:
        super().__init__(START)
        self.set(seconds)

    def set(self, seconds: float) -> None:
        self.current = START + timedelta(seconds=seconds)


def test_never_more_than_the_limit_in_any_60_seconds() -> None:
    """Requests every 0.25 s for five minutes, at a limit of 10 a minute: in every 60-second
    span at most 10 are admitted, and one is admitted within a second of the window allowing."""
    clock = _Clock(0)
    limiter = RateLimiter(clock)
    caller = Caller("team-a", requests_per_minute=10)
    admitted: list[float] = []
    for step in range(5 * 60 * 4):
        clock.set(step / 4)
        if limiter.admit(caller) is None:
            admitted.append(step / 4)
    for index, moment in enumerate(admitted):
        assert sum(1 for other in admitted[index:] if other < moment + 60) <= 10
    assert len(admitted) >= 5 * 10 - 1
    for earlier, later in zip(admitted, admitted[10:], strict=False):
        assert later - earlier <= 61.25


def test_retry_after_is_when_the_request_would_be_admitted() -> None:
    """Waiting the Retry-After a refusal gives is enough, and a quarter second less is not."""
    clock = _Clock(100.3)
    limiter = RateLimiter(clock)
    caller = Caller("team-a", requests_per_minute=2, tokens_per_minute=1000)
    assert limiter.admit(caller) is None
    clock.set(130.7)
    assert limiter.admit(caller) is None
    limiter.count_tokens("team-a", 5)
    clock.set(150.0)
    refusal = limiter.admit(caller)
    assert refusal is not None and refusal.limit == "requests"
    assert refusal.retry_after == pytest.approx(161 - 150.0)
    assert refusal.requests is not None and refusal.requests.reset_seconds == pytest.approx(41)
    assert refusal.tokens is not None and refusal.tokens.remaining == 995
    clock.set(150.0 + refusal.retry_after - 0.25)
    assert limiter.admit(caller) is not None
    clock.set(150.0 + refusal.retry_after)
    assert limiter.admit(caller) is None


def test_processes_sharing_counts_hold_one_limit_between_them() -> None:
    """Two limiters (two processes) exchanging counts through a store: after an exchange each
    refuses what the other admitted, and counts a failed exchange did not carry go with the next.
    (The store here is a dict; sheepdog's own store per database backend is not written yet.)"""
    clock = _Clock(0)

    class Store:
        def __init__(self) -> None:
            self.rows: dict[tuple[str, RateKey], int] = {}
            self.failing = False

        async def exchange(
            self, process: str, unsent: Mapping[RateKey, int], since_slot: int
        ) -> dict[RateKey, int]:
            if self.failing:
                raise DatabaseUnavailable("down")
            for key, amount in unsent.items():
                self.rows[(process, key)] = self.rows.get((process, key), 0) + amount
            others: dict[RateKey, int] = {}
            for (owner, key), amount in self.rows.items():
                if owner != process and key[2] >= since_slot:
                    others[key] = others.get(key, 0) + amount
            return others

    store = Store()
    first, second = RateLimiter(clock), RateLimiter(clock)
    first.share()
    second.share()
    caller = Caller("team-a", requests_per_minute=4)

    async def sync(limiter: RateLimiter, name: str) -> None:
        await exchange_counts(limiter, store, name)

    for _ in range(3):
        assert first.admit(caller) is None
    assert second.admit(caller) is None  # it knows nothing yet
    clock.set(1.0)
    asyncio.run(sync(first, "one"))
    asyncio.run(sync(second, "two"))
    refusal = second.admit(caller)
    assert refusal is not None and refusal.requests is not None and refusal.requests.used == 4
    asyncio.run(sync(first, "one"))
    assert first.admit(caller) is not None
    # A failed exchange: the counts wait for the next one.
    clock.set(62.0)  # the first four have left the window
    assert second.admit(caller) is None
    store.failing = True
    with pytest.raises(DatabaseUnavailable):
        asyncio.run(sync(second, "two"))
    store.failing = False
    asyncio.run(sync(second, "two"))
    asyncio.run(sync(first, "one"))
    for _ in range(3):
        assert first.admit(caller) is None
    assert first.admit(caller) is not None
