"""Several upstreams: failover before the answer starts, passive health, routing by model.

Two local upstreams, each a real HTTP server; the first one refuses connections, hangs, answers
500 or 429, and the client (the openai or anthropic SDK) gets the second one's answer, metered
once, with the failover counted. Nothing is retried once a byte has reached the client.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import openai
import pytest

from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import (
    TEAM_A_KEY,
    TEAM_B_KEY,
    Proxy,
    StartProxy,
    SteppingClock,
    proxy_config,
)
from tests.support.ports import free_port

FIRST_KEY = "sk-first-SENTINEL-5d21a0"
SECOND_KEY = "sk-second-SENTINEL-c07e93"
MESSAGES: Any = [{"role": "user", "content": "Hello"}]
GPT = {"model": "gpt-4.1", "route": "chat", "client": "team-a"}
SONNET = "claude-sonnet-4-6"


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock(datetime(2026, 11, 15, 12, 0, tzinfo=UTC))


@pytest.fixture
async def second() -> AsyncIterator[FakeUpstream]:
    fake = await FakeUpstream().start()
    yield fake
    await fake.close()


def two_upstreams(
    first: FakeUpstream | str, second: FakeUpstream, **first_changes: Any
) -> dict[str, Any]:
    """team-a and team-b in front of ``first`` (or a URL) and then ``second``."""
    config = proxy_config(second)
    del config["proxy"]["upstream"]
    base = first if isinstance(first, str) else first.base_url
    config["proxy"]["upstreams"] = [
        {
            "name": "first",
            "base_url": base,
            "api_key": FIRST_KEY,
            "timeout_seconds": 1,
            "connect_timeout_seconds": 1,
            **first_changes,
        },
        {"name": "second", "base_url": second.base_url, "api_key": SECOND_KEY},
    ]
    return config


def answered_by_second(second: FakeUpstream) -> None:
    for model in ("gpt-4.1", "deepseek-v3.2"):
        second.script(model, content=("from ", "the second"))
    second.anthropic.script(SONNET, content=("from ", "the second"))


def attempts(proxy: Proxy, upstream: str, code: str) -> float:
    return proxy.value("llm_upstream_requests_total", upstream=upstream, code=code) or 0.0


def failovers(proxy: Proxy) -> float:
    return proxy.value("llm_upstream_failovers_total", **{"from": "first", "to": "second"}) or 0.0


def up(proxy: Proxy, upstream: str) -> float | None:
    return proxy.value("llm_upstream_up", upstream=upstream)


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


async def ask(proxy: Proxy, model: str = "gpt-4.1", **options: Any) -> str | None:
    async with proxy.client(**options) as client:
        reply = await client.chat.completions.create(model=model, messages=MESSAGES)
    return reply.choices[0].message.content


@pytest.mark.parametrize("failure", ["refused", "hangs", "500", "429", "503"])
async def test_the_client_gets_the_second_upstreams_answer_metered_once(
    start_proxy: StartProxy, upstream: FakeUpstream, second: FakeUpstream, failure: str
) -> None:
    """Whichever way the first fails before answering, the SDK gets the second's answer; it is
    counted once (one request, its tokens once), the attempts and the failover too."""
    answered_by_second(second)
    first: FakeUpstream | str = upstream
    if failure == "refused":
        first = closed_port_url()
    elif failure == "hangs":
        upstream.script("gpt-4.1", hang=True)
    else:
        upstream.script("gpt-4.1", status=int(failure))
    proxy = await start_proxy(two_upstreams(first, second))

    assert await ask(proxy) == "from the second"

    code = {"refused": "error", "hangs": "timeout"}.get(failure, failure)
    assert attempts(proxy, "first", code) == 1
    assert attempts(proxy, "second", "200") == 1
    assert failovers(proxy) == 1
    assert proxy.requests(**GPT, code="200") == 1
    assert proxy.requests(**GPT, code=code) == 0
    assert proxy.value("llm_tokens_total", model="gpt-4.1", type="input", client="team-a") == 12
    assert proxy.value("llm_tokens_total", model="gpt-4.1", type="output", client="team-a") == 4
    await proxy.flush_ledger()
    # The body was read once and sent whole to each; each upstream got its own key, never a
    # client's.
    assert len(second.received) == 1
    sent = second.received[0]
    assert sent.headers["Authorization"] == f"Bearer {SECOND_KEY}"
    if isinstance(first, FakeUpstream) and failure != "hangs":
        assert first.received[0].body == sent.body
        assert first.received[0].headers["Authorization"] == f"Bearer {FIRST_KEY}"
    for received in (*upstream.received, *second.received):
        assert TEAM_A_KEY not in str(dict(received.headers))


async def test_a_stream_fails_over_before_its_first_byte_and_is_metered_once(
    start_proxy: StartProxy, upstream: FakeUpstream, second: FakeUpstream
) -> None:
    answered_by_second(second)
    upstream.script("gpt-4.1", status=502)
    proxy = await start_proxy(two_upstreams(upstream, second))
    async with proxy.client() as client:
        stream = await client.chat.completions.create(
            model="gpt-4.1", messages=MESSAGES, stream=True
        )
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == "from the second"
    assert failovers(proxy) == 1
    assert proxy.value("llm_tokens_total", model="gpt-4.1", type="input", client="team-a") == 12
    assert proxy.requests(**GPT, code="200") == 1


async def test_a_stream_cut_after_its_first_byte_is_not_retried(
    start_proxy: StartProxy, upstream: FakeUpstream, second: FakeUpstream
) -> None:
    """Once the first upstream's answer has started, it is the client's: a stream it breaks off
    is broken for the client (the SDK raises), the second upstream never sees the request."""
    upstream.script("gpt-4.1", break_after_events=2)
    proxy = await start_proxy(two_upstreams(upstream, second))
    pieces: list[str] = []
    async with proxy.client() as client:
        stream = await client.chat.completions.create(
            model="gpt-4.1", messages=MESSAGES, stream=True
        )

        async def read() -> None:
            async for chunk in stream:
                pieces.append(chunk.choices[0].delta.content or "")

        with pytest.raises(openai.APIConnectionError):
            await read()
    assert pieces == ["", "Hello"]
    assert second.received == []
    assert failovers(proxy) == 0
    assert attempts(proxy, "first", "200") == 1


async def test_the_last_upstreams_answer_passes_through_when_every_one_fails(
    start_proxy: StartProxy, upstream: FakeUpstream, second: FakeUpstream
) -> None:
    """Both answer 500: the client gets the last one's answer unchanged; both unreachable: 502."""
    upstream.script("gpt-4.1", status=500)
    second.script("gpt-4.1", status=503, retry_after="7")
    proxy = await start_proxy(two_upstreams(upstream, second))
    async with proxy.client() as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["Retry-After"] == "7"
    assert proxy.requests(**GPT, code="503") == 1

    config = two_upstreams(closed_port_url(), second)
    config["proxy"]["upstreams"][1]["base_url"] = closed_port_url()
    unreachable = await start_proxy(config)
    async with unreachable.client() as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_unreachable"  # type: ignore[index]
    assert attempts(unreachable, "first", "error") == 1
    assert attempts(unreachable, "second", "error") == 1


async def test_after_failures_in_a_row_the_first_cools_down_then_gets_traffic_again(
    start_proxy: StartProxy, upstream: FakeUpstream, second: FakeUpstream, clock: SteppingClock
) -> None:
    """Three 500s in a row and the first is skipped (up = 0) for its cool-down; after it one
    trial request goes to it, and once that succeeds traffic goes back to it."""
    answered_by_second(second)
    upstream.script("gpt-4.1", status=500)
    proxy = await start_proxy(two_upstreams(upstream, second, cooldown_seconds=30))
    assert up(proxy, "first") == 1 and up(proxy, "second") == 1
    for _ in range(3):
        assert await ask(proxy) == "from the second"
    assert up(proxy, "first") == 0
    assert await ask(proxy) == "from the second"
    assert len(upstream.received) == 3  # skipped while cooling down
    assert failovers(proxy) == 3

    upstream.scripts.clear()  # the first recovers
    clock.skip(29)
    assert await ask(proxy) == "from the second"
    assert len(upstream.received) == 3
    clock.skip(2)
    assert await ask(proxy) == "Hello, world!"  # the trial
    assert up(proxy, "first") == 1
    for _ in range(3):
        assert await ask(proxy) == "Hello, world!"
    assert attempts(proxy, "first", "200") == 4
    assert len(second.received) == 5


async def test_a_failed_trial_cools_the_upstream_down_again(
    start_proxy: StartProxy, upstream: FakeUpstream, second: FakeUpstream, clock: SteppingClock
) -> None:
    answered_by_second(second)
    proxy = await start_proxy(
        two_upstreams(closed_port_url(), second, cooldown_after_failures=1, cooldown_seconds=10)
    )
    assert await ask(proxy) == "from the second"
    assert up(proxy, "first") == 0
    clock.skip(11)
    assert await ask(proxy) == "from the second"  # the trial failed
    assert await ask(proxy) == "from the second"  # and it cools down again
    assert attempts(proxy, "first", "error") == 2
    assert up(proxy, "first") == 0


async def test_a_429_with_retry_after_benches_that_upstream_for_as_long(
    start_proxy: StartProxy, upstream: FakeUpstream, second: FakeUpstream, clock: SteppingClock
) -> None:
    """One 429 with Retry-After: 20 and the first is skipped for 20 s, not just after three."""
    answered_by_second(second)
    upstream.script("gpt-4.1", status=429, retry_after="20")
    proxy = await start_proxy(two_upstreams(upstream, second))
    assert await ask(proxy) == "from the second"
    assert up(proxy, "first") == 0
    upstream.scripts.clear()
    clock.skip(19)
    assert await ask(proxy) == "from the second"
    assert len(upstream.received) == 1
    clock.skip(2)
    assert await ask(proxy) == "Hello, world!"
    assert up(proxy, "first") == 1


async def test_a_single_upstream_is_always_tried_and_passes_its_answer_through(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """With the one `upstream` there is nowhere else to go: its health is shown, but every
    request still goes to it, and its 500 reaches the client as before."""
    upstream.script("gpt-4.1", status=500)
    proxy = await start_proxy(
        proxy_config(upstream, upstream={"cooldown_after_failures": 1, "name": "holysheep"})
    )
    async with proxy.client() as client:
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    assert len(upstream.received) == 3
    assert up(proxy, "holysheep") == 0
    upstream.scripts.clear()
    assert await ask(proxy) == "Hello, world!"
    assert up(proxy, "holysheep") == 1
    assert attempts(proxy, "holysheep", "500") == 3


async def test_a_model_routed_by_models_never_reaches_an_upstream_that_does_not_serve_it(
    start_proxy: StartProxy, upstream: FakeUpstream, second: FakeUpstream
) -> None:
    """The first serves gpt-* only, the second claude-* only: DeepSeek is served by neither
    (404 before anything goes upstream), GPT failing on the first is not sent to the second."""
    answered_by_second(second)
    config = two_upstreams(upstream, second, models=["gpt-*"])
    config["proxy"]["upstreams"][1]["models"] = ["claude-*"]
    proxy = await start_proxy(config)
    async with proxy.client() as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="deepseek-v3.2", messages=MESSAGES)
    assert caught.value.body == {
        "message": "The model 'deepseek-v3.2' is not served by any upstream of this proxy.",
        "type": "invalid_request_error",
        "code": "model_not_found",
    }
    upstream.script("gpt-4.1", status=500)
    async with proxy.client() as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    async with proxy.anthropic() as claude:
        message = await claude.messages.create(model=SONNET, max_tokens=16, messages=MESSAGES)
        assert message.content[0].text == "from the second"  # type: ignore[union-attr]
        # count_tokens is not metered, but routed by its model all the same.
        counted = await claude.messages.count_tokens(model=SONNET, messages=MESSAGES)
        assert counted.input_tokens == 25
    assert [r.path for r in upstream.received] == ["/v1/chat/completions"]
    assert [r.path for r in second.received] == ["/v1/messages", "/v1/messages/count_tokens"]
    assert proxy.requests(model="deepseek-v3.2", route="chat", code="404", client="team-a") == 1
    assert failovers(proxy) == 0


async def test_globs_match_the_name_as_sent_so_prefixed_names_stay_where_they_are_served(
    start_proxy: StartProxy, upstream: FakeUpstream, second: FakeUpstream
) -> None:
    """`models: [gpt-*, o[0-9]*]` on the first: `openai/gpt-4.1` (priced as gpt-4.1) and
    `GPT-4.1` are not names it serves (globs are case-sensitive) and go to the second; a request
    naming no model goes to the first in order."""
    proxy = await start_proxy(two_upstreams(upstream, second, models=["gpt-*", "o[0-9]*"]))
    for model in ("openai/gpt-4.1", "o3-mini", "gpt-4.1", "GPT-4.1"):
        assert await ask(proxy, model) == "Hello, world!"
    async with proxy.client() as client:
        models = await client.models.list()
    assert [model.id async for model in models][:1] == ["gpt-4.1"]
    assert [r.json.get("model") for r in upstream.received if r.body] == ["o3-mini", "gpt-4.1"]
    assert upstream.received[-1].path == "/v1/models"  # no model named: the first in order
    assert [r.json["model"] for r in second.received] == ["openai/gpt-4.1", "GPT-4.1"]


async def test_the_messages_api_fails_over_with_each_upstreams_key_and_anthropic_url(
    start_proxy: StartProxy, upstream: FakeUpstream, second: FakeUpstream
) -> None:
    """The first answers 529 overloaded: the anthropic SDK gets the second's message, sent to
    the second's anthropic_base_url with its own key as x-api-key."""
    answered_by_second(second)
    upstream.anthropic.script(SONNET, status=529)
    config = two_upstreams(upstream, second)
    config["proxy"]["upstreams"][1]["base_url"] = "http://127.0.0.1:9/unused/v1"
    config["proxy"]["upstreams"][1]["anthropic_base_url"] = second.base_url
    proxy = await start_proxy(config)
    async with proxy.anthropic() as client:
        message = await client.messages.create(model=SONNET, max_tokens=16, messages=MESSAGES)
    assert message.content[0].text == "from the second"  # type: ignore[union-attr]
    assert upstream.received[0].headers["x-api-key"] == FIRST_KEY
    assert second.received[0].headers["x-api-key"] == SECOND_KEY
    assert "Authorization" not in second.received[0].headers
    assert attempts(proxy, "first", "529") == 1
    assert failovers(proxy) == 1
    assert (
        proxy.value("llm_tokens_total", model="claude-sonnet-4.6", type="input", client="team-a")
        == 25
    )


async def test_an_anthropic_error_after_failover_is_anthropic_shaped(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    config = two_upstreams(closed_port_url(), upstream)
    config["proxy"]["upstreams"][1]["base_url"] = closed_port_url()
    proxy = await start_proxy(config)
    async with proxy.anthropic() as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model=SONNET, max_tokens=16, messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]


async def test_labels_stay_bounded_and_health_survives_a_reload(
    start_proxy: StartProxy, upstream: FakeUpstream, second: FakeUpstream
) -> None:
    """A thousand random model names through `models` routing: upstream series only ever carry
    the configured names. A reload keeping the first keeps its health; renaming it drops it."""
    answered_by_second(second)
    upstream.script("gpt-4.1", status=500)
    proxy = await start_proxy(
        two_upstreams(upstream, second, models=["gpt-*"], cooldown_after_failures=1)
    )
    rng = random.Random(16)
    async with proxy.client(TEAM_B_KEY) as client:
        for _ in range(1000):
            name = "".join(rng.choice("abcdefgh-*?[]./") for _ in range(rng.randrange(1, 40)))
            await client.chat.completions.create(model=name, messages=MESSAGES)
        await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)
    labels = {
        sample.labels["upstream"]
        for family in proxy.registry.collect()
        if family.name in ("llm_upstream_requests", "llm_upstream_up")
        for sample in family.samples
    }
    assert labels == {"first", "second"}
    assert up(proxy, "first") == 0

    from proxy import RELAY, prepare
    from sheepdog.config import parse_config

    relay = proxy.app[RELAY]
    same = two_upstreams(upstream, second, models=["gpt-*"], timeout_seconds=2)
    prepare(relay, parse_config(same, env={}, base_dir=None).proxy).commit()
    assert up(proxy, "first") == 0
    renamed = two_upstreams(upstream, second, models=["gpt-*"])
    renamed["proxy"]["upstreams"][0]["name"] = "primary"
    prepare(relay, parse_config(renamed, env={}, base_dir=None).proxy).commit()
    assert up(proxy, "primary") == 1
    assert up(proxy, "first") is None
