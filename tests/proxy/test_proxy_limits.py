"""Per-client rate limits through the official SDKs: 429 with the headers they read, their own
retry admitted once the 60-second window allows, tokens counted from the usage reported."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from proxy import RELAY, prepare
from proxy.clients import Caller
from proxy.limits import GRANT_SECONDS, RateLimiter, SharedCounts, exchange_counts, store_for
from sheepdog.config import parse_config
from sheepdog.core.db import Database, DatabaseUnavailable
from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import (
    TEAM_A_KEY,
    TEAM_B_KEY,
    FakeClock,
    StartProxy,
    SteppingClock,
    proxy_config,
)
from tests.support.state import StoredState

GPT = {"model": "gpt-4.1"}
MESSAGES: Any = [{"role": "user", "content": "Hello"}]
SONNET = "claude-sonnet-4-6"  # as the anthropic SDK spells it
START = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


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


SPREADS = {
    "all through one": (1, 0),
    "evenly": (1, 1),
    "three to one": (3, 1),
}


@pytest.mark.parametrize("spread", SPREADS)
async def test_two_processes_admit_one_limit_between_them(database: Database, spread: str) -> None:
    """Two processes' limiters on one database (each backend's store), a client limited to 20
    requests a minute bursting through them as a load balancer spreads it: between exchanges,
    and whatever the order of the exchanges, never more than 20 are admitted together, not 20
    each; after a few exchanges the two have admitted all 20. The refusals for a spent share
    ask again after the next exchange (1 s)."""
    clock = _Clock(1000.5)
    caller = Caller("team-a", requests_per_minute=20)
    processes = [(RateLimiter(clock), store_for(database), name) for name in ("a:1", "b:2")]
    for limiter, _, _ in processes:
        limiter.keep([caller])
        limiter.share()
    weights = SPREADS[spread]
    admitted = [0, 0]
    for exchange in range(6):
        order = processes if exchange % 2 == 0 else processes[::-1]
        for limiter, store, name in order:
            await exchange_counts(limiter, store, name)
        refused: set[int] = set()
        while len(refused) < sum(1 for w in weights if w):
            for index, weight in enumerate(weights):
                for _ in range(weight):
                    if index in refused:
                        continue
                    refusal = processes[index][0].admit(caller)
                    if refusal is None:
                        admitted[index] += 1
                    else:
                        assert refusal.limit == "requests"
                        assert refusal.share_spent or refusal.retry_after > 1
                        if refusal.share_spent:
                            assert refusal.retry_after == 1.0
                        refused.add(index)
        assert sum(admitted) <= 20, (exchange, admitted)
        clock.set(1000.5 + exchange + 1)
    assert sum(admitted) == 20


async def test_processes_share_their_counts_through_the_database(
    database: Database, stored: StoredState
) -> None:
    """Two processes' limiters on one database: requests and tokens counted by one are counted
    by the other after an exchange, a process never counts its own twice, a client the other
    process has not served yet is limited at its first request, counts that have left the
    window are deleted by the next exchange, and a process that stops gives back its grants."""
    store_a, store_b = store_for(database), store_for(database)
    clock = _Clock(1000.5)
    a, b = RateLimiter(clock), RateLimiter(clock)
    caller = Caller("team-a", requests_per_minute=4, tokens_per_minute=100)
    for limiter in (a, b):
        limiter.keep([caller])
        limiter.share()
    for _ in range(3):
        assert a.admit(caller) is None  # no grant yet: a limits alone
    a.count_tokens("team-a", 60)
    await exchange_counts(a, store_a, "host:1:a")
    await exchange_counts(a, store_a, "host:1:a")  # its own rows are not read back as others'
    await exchange_counts(b, store_b, "host:2:b")
    refusal = b.admit(caller)  # a holds the one request left
    assert refusal is not None and refusal.share_spent and refusal.limit == "requests"
    assert refusal.requests is not None and refusal.requests.used == 3
    assert refusal.tokens is not None and refusal.tokens.used == 60
    await exchange_counts(a, store_a, "host:1:a", leaving=True)  # a stops: its grant is free
    await exchange_counts(b, store_b, "host:2:b")
    assert b.admit(caller) is None  # the fourth
    refusal = b.admit(caller)
    assert refusal is not None and not refusal.share_spent
    assert refusal.requests is not None and refusal.requests.used == 4
    b.count_tokens("team-a", 50)
    await exchange_counts(b, store_b, "host:2:b")
    await exchange_counts(a, store_a, "host:1:a")
    refusal = a.admit(caller)
    assert refusal is not None and refusal.requests is not None and refusal.requests.used == 4
    assert refusal.tokens is not None and refusal.tokens.used == 110

    clock.set(1000.5 + 61)  # slot 1000 has left the window: all is admitted again
    await exchange_counts(b, store_b, "host:2:b")
    assert b.admit(caller) is None
    await exchange_counts(b, store_b, "host:2:b")
    rows = stored.query("SELECT slot, client, kind, process, amount FROM rate_limit_counts")
    slot = int(START.timestamp()) + 1061
    assert rows == [
        {"slot": slot, "client": "team-a", "kind": "requests", "process": "host:2:b", "amount": 1}
    ]


async def test_while_the_database_fails_each_process_limits_with_what_it_knows(
    database: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The exchange fails for a while: nothing raises, one error is logged, the process keeps to
    its last grant until it runs out (GRANT_SECONDS), then limits with its own counts and the
    others' as last read; once the database answers, what it counted meanwhile reaches the
    other process."""
    caplog.set_level(logging.INFO, logger="sheepdog.proxy.limits")
    store = store_for(database)
    clock = _Clock(2000.2)
    a, b = RateLimiter(clock), RateLimiter(clock)
    caller = Caller("team-a", requests_per_minute=5)
    for limiter in (a, b):
        limiter.keep([caller])
    shared_a = SharedCounts(a, store, "host:1:a")
    shared_b = SharedCounts(b, store, "host:2:b")
    for _ in range(2):
        assert b.admit(caller) is None
    await shared_b.exchange()
    await shared_a.exchange()
    real_run = database.run

    async def failing_run(work: Any, **options: Any) -> Any:
        raise DatabaseUnavailable("the server is gone")

    monkeypatch.setattr(database, "run", failing_run)
    granted = 0
    while a.admit(caller) is None:
        granted += 1
    assert granted < 3  # b holds some of the three left
    for _ in range(3):
        await shared_a.exchange()  # logged once, never raised
    clock.set(2000.2 + GRANT_SECONDS)  # the grant has run out: a limits alone
    while a.admit(caller) is None:
        granted += 1
    assert granted == 3  # b's two, as last read, and its own three
    refusal = a.admit(caller)
    assert refusal is not None and not refusal.share_spent
    assert refusal.requests is not None and refusal.requests.used == 5
    errors = [r for r in caplog.records if r.name == "sheepdog.proxy.limits"]
    assert [r.levelname for r in errors] == ["ERROR"]
    assert "the server is gone" in str(errors[0].__dict__.get("reason"))

    monkeypatch.setattr(database, "run", real_run)
    await shared_a.exchange()
    await shared_b.exchange()
    refusal = b.admit(caller)
    assert refusal is not None and refusal.requests is not None and refusal.requests.used == 5
    assert [r.levelname for r in caplog.records if r.name == "sheepdog.proxy.limits"] == [
        "ERROR",
        "INFO",
    ]
