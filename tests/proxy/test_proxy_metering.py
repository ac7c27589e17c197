"""What the metrics say after known traffic: tokens and USD to the price, every status code."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from sheepdog.core.ops import reload_config
from sheepdog.core.runtime import RUNTIME
from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import TEAM_A_KEY, TEAM_B_KEY, StartProxy, proxy_config

# Default list prices, USD per 1M tokens: gpt-4.1 2.00/8.00, deepseek-v3.2 0.28/0.42,
# text-embedding-3-small 0.02/0.
GPT = {"model": "gpt-4.1"}


def usd(input_tokens: int, output_tokens: int, input_price: float, output_price: float) -> float:
    return input_tokens * input_price / 1e6 + output_tokens * output_price / 1e6


async def test_tokens_and_cost_are_exact_after_known_traffic(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """Streamed and plain calls of every metered route add exactly their tokens and list price."""
    upstream.script("gpt-4.1", prompt_tokens=1000, completion_tokens=500)
    upstream.script("deepseek-v3.2", prompt_tokens=70_000, completion_tokens=3_000)
    upstream.script("text-embedding-3-small", prompt_tokens=5000)
    proxy = await start_proxy()
    async with proxy.client() as team_a, proxy.client(TEAM_B_KEY) as team_b:
        await team_a.chat.completions.create(model="gpt-4.1", messages=[])
        stream = await team_a.chat.completions.create(model="gpt-4.1", messages=[], stream=True)
        _ = [chunk async for chunk in stream]
        await team_a.responses.create(model="gpt-4.1", input="hi")
        stream = await team_a.responses.create(model="gpt-4.1", input="hi", stream=True)
        _ = [event async for event in stream]
        stream = await team_a.completions.create(model="gpt-4.1", prompt="hi", stream=True)
        _ = [chunk async for chunk in stream]
        await team_a.embeddings.create(model="text-embedding-3-small", input="hi")
        await team_b.chat.completions.create(model="deepseek-v3.2", messages=[])
        stream = await team_b.chat.completions.create(
            model="deepseek-v3.2",
            messages=[],
            stream=True,
            stream_options={"include_usage": True},
        )
        _ = [chunk async for chunk in stream]

    a = {"client": "team-a"}
    b = {"client": "team-b"}
    assert proxy.value("llm_tokens_total", type="input", **GPT, **a) == 5 * 1000
    assert proxy.value("llm_tokens_total", type="output", **GPT, **a) == 5 * 500
    assert proxy.value("llm_cost_usd_total", **GPT, **a) == pytest.approx(
        5 * usd(1000, 500, 2.00, 8.00), rel=1e-12
    )
    embedding = {"model": "text-embedding-3-small", **a}
    assert proxy.value("llm_tokens_total", type="input", **embedding) == 5000
    assert proxy.value("llm_tokens_total", type="output", **embedding) == 0
    assert proxy.value("llm_cost_usd_total", **embedding) == pytest.approx(0.0001, rel=1e-12)
    deepseek = {"model": "deepseek-v3.2", **b}
    assert proxy.value("llm_tokens_total", type="input", **deepseek) == 140_000
    assert proxy.value("llm_tokens_total", type="output", **deepseek) == 6_000
    assert proxy.value("llm_cost_usd_total", **deepseek) == pytest.approx(
        2 * usd(70_000, 3_000, 0.28, 0.42), rel=1e-12
    )
    assert proxy.value("llm_usage_missing_total", **GPT, route="chat") is None

    for route, count in (("chat", 2), ("responses", 2), ("completions", 1)):
        assert proxy.requests(**GPT, route=route, code="200", **a) == count
        assert proxy.value("llm_request_duration_seconds_count", **GPT, route=route) == count
    # One TTFT observation per stream that produced a token: 3 for gpt-4.1, 1 for deepseek.
    assert proxy.value("llm_time_to_first_token_seconds_count", **GPT) == 3
    assert proxy.value("llm_time_to_first_token_seconds_count", model="deepseek-v3.2") == 1
    assert proxy.value("llm_active_requests", **GPT) == 0
    spend_a = 5 * usd(1000, 500, 2.00, 8.00) + 0.0001
    assert proxy.value("llm_spend_month_usd", **a) == pytest.approx(spend_a, rel=1e-12)
    assert proxy.value("llm_spend_month_usd", **b) == pytest.approx(
        2 * usd(70_000, 3_000, 0.28, 0.42), rel=1e-12
    )


async def test_unpriced_models_are_counted_as_other_at_no_cost(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """A model without a price is labelled "other": its tokens count, its cost is zero."""
    upstream.script("my-finetune-v7", prompt_tokens=10, completion_tokens=20)
    proxy = await start_proxy()
    async with proxy.client() as client:
        await client.chat.completions.create(model="my-finetune-v7", messages=[])
    other = {"model": "other", "client": "team-a"}
    assert proxy.value("llm_tokens_total", type="input", **other) == 10
    assert proxy.value("llm_tokens_total", type="output", **other) == 20
    assert proxy.value("llm_cost_usd_total", **other) == 0
    assert "my-finetune-v7" not in proxy.exposition()


async def test_series_exist_at_zero_from_startup(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """Before any traffic, every client has its token, cost, budget and spend series at zero."""
    proxy = await start_proxy()
    for client in ("team-a", "team-b"):
        for model in ("gpt-4.1", "deepseek-v3.2", "other"):
            labels = {"model": model, "client": client}
            assert proxy.value("llm_tokens_total", type="input", **labels) == 0
            assert proxy.value("llm_tokens_total", type="output", **labels) == 0
            assert proxy.value("llm_cost_usd_total", **labels) == 0
        assert proxy.value("llm_spend_month_usd", client=client) == 0
    assert proxy.value("llm_budget_usd", client="team-a") == 10
    assert proxy.value("llm_budget_usd", client="team-b") is None  # no budget configured
    assert proxy.value("llm_billing_usd_rate", currency="CNY") == 1.0
    assert proxy.value("llm_market_usd_rate", currency="CNY") == 7.3
    for reason in ("missing_key", "invalid_key", "upstream_rejected"):
        assert proxy.value("llm_auth_failures_total", reason=reason) == 0
    assert proxy.value("llm_active_requests", model="other") == 0


async def test_open_proxy_meters_callers_as_anonymous(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """With no clients configured, any key is accepted and the client label is "anonymous"."""
    proxy = await start_proxy(proxy_config(upstream, clients=[]))
    async with proxy.client("whatever") as client:
        await client.chat.completions.create(model="gpt-4.1", messages=[])
    assert proxy.requests(**GPT, route="chat", code="200", client="anonymous") == 1
    assert proxy.value("llm_spend_month_usd", client="anonymous") == pytest.approx(
        usd(12, 4, 2.00, 8.00)
    )


async def test_bad_and_missing_keys_get_401_and_are_counted(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """Unknown or missing keys get an OpenAI-shaped 401, counted by reason; none goes upstream."""
    proxy = await start_proxy()
    async with proxy.client("sd-not-a-key") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="gpt-4.1", messages=[])
    assert caught.value.body == {
        "message": "Incorrect API key provided: it is not a client key of this proxy.",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
    async with aiohttp.ClientSession() as session, session.get(proxy.url("/v1/models")) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="sheepdog"'
        assert (await response.json())["error"]["code"] == "missing_api_key"
    assert upstream.received == []
    assert proxy.value("llm_auth_failures_total", reason="invalid_key") == 1
    assert proxy.value("llm_auth_failures_total", reason="missing_key") == 1
    assert proxy.requests(model="other", route="chat", code="401", client="anonymous") == 1
    assert proxy.requests(model="other", route="other", code="401", client="anonymous") == 1


async def test_upstream_rejecting_our_key_is_an_auth_failure_passed_through(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """An upstream 401 or 403 reaches the client unchanged and counts as upstream_rejected."""
    upstream.script("gpt-4.1", status=401)
    upstream.script("deepseek-v3.2", status=403)
    proxy = await start_proxy()
    async with proxy.client() as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="gpt-4.1", messages=[])
        assert caught.value.body == {
            "message": "upstream says 401",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
        with pytest.raises(openai.PermissionDeniedError):
            await client.chat.completions.create(model="deepseek-v3.2", messages=[])
    assert proxy.value("llm_auth_failures_total", reason="upstream_rejected") == 2
    assert proxy.requests(**GPT, route="chat", code="401", client="team-a") == 1
    assert proxy.requests(model="deepseek-v3.2", route="chat", code="403", client="team-a") == 1
    assert proxy.value("llm_usage_missing_total", **GPT, route="chat") is None


async def test_upstream_500_is_counted_with_its_code(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """An upstream 500 is counted as code 500 and costs nothing."""
    upstream.script("gpt-4.1", status=500)
    proxy = await start_proxy()
    async with proxy.client() as client:
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="gpt-4.1", messages=[], stream=True)
    assert proxy.requests(**GPT, route="chat", code="500", client="team-a") == 1
    assert proxy.value("llm_cost_usd_total", **GPT, client="team-a") == 0
    assert proxy.value("llm_usage_missing_total", **GPT, route="chat") is None


async def test_upstream_timeout_is_504(start_proxy: StartProxy, upstream: FakeUpstream) -> None:
    """An upstream that does not answer within timeout_seconds gets the client an OpenAI 504."""
    upstream.script("gpt-4.1", hang=True)
    config = proxy_config(upstream, upstream={"timeout_seconds": 0.3})
    proxy = await start_proxy(config)
    async with proxy.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-4.1", messages=[])
    assert caught.value.status_code == 504
    assert caught.value.body == {
        "message": "The upstream API did not answer in time.",
        "type": "server_error",
        "code": "upstream_timeout",
    }
    assert proxy.requests(**GPT, route="chat", code="504", client="team-a") == 1
    # It may have billed for the work: counted as usage missing, never as guessed tokens.
    assert proxy.value("llm_usage_missing_total", **GPT, route="chat") == 1
    assert proxy.value("llm_active_requests", **GPT) == 0


async def test_upstream_down_is_502(
    start_proxy: StartProxy, upstream: FakeUpstream, refused_port: int
) -> None:
    """An upstream that refuses connections gets the client an OpenAI-shaped 502."""
    config = proxy_config(upstream, upstream={"base_url": f"http://127.0.0.1:{refused_port}/v1"})
    proxy = await start_proxy(config)
    async with proxy.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="gpt-4.1", messages=[], stream=True)
    assert caught.value.status_code == 502
    assert caught.value.body == {
        "message": "The upstream API could not be reached.",
        "type": "server_error",
        "code": "upstream_unreachable",
    }
    assert proxy.requests(**GPT, route="chat", code="502", client="team-a") == 1
    assert proxy.value("llm_usage_missing_total", **GPT, route="chat") is None


async def test_missing_usage_is_counted_not_invented(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """When the upstream reports no usage, llm_usage_missing_total counts it; no tokens appear."""
    upstream.script("gpt-4.1", usage=False)
    proxy = await start_proxy()
    async with proxy.client() as client:
        await client.chat.completions.create(model="gpt-4.1", messages=[])
        stream = await client.chat.completions.create(model="gpt-4.1", messages=[], stream=True)
        _ = [chunk async for chunk in stream]
        stream = await client.responses.create(model="gpt-4.1", input="hi", stream=True)
        _ = [event async for event in stream]
    assert proxy.value("llm_usage_missing_total", **GPT, route="chat") == 2
    assert proxy.value("llm_usage_missing_total", **GPT, route="responses") == 1
    assert proxy.value("llm_tokens_total", **GPT, type="input", client="team-a") == 0
    assert proxy.requests(**GPT, route="chat", code="200", client="team-a") == 2


async def test_reload_brings_new_clients_keys_and_prices(
    start_proxy: StartProxy, upstream: FakeUpstream, make_config
) -> None:
    """A reload swaps keys, budgets and prices; new clients get their series at once."""
    proxy = await start_proxy()
    config = proxy_config(upstream)
    config["proxy"]["clients"] = [{"name": "team-c", "key": "sd-team-c", "monthly_budget_usd": 5}]
    config["proxy"]["pricing"] = {"my-model": {"input": 1.0, "output": 1.0}}
    proxy.app[RUNTIME].load_config = lambda: make_config(config)
    assert await reload_config(proxy.app) is None

    assert proxy.value("llm_budget_usd", client="team-c") == 5
    assert proxy.value("llm_budget_usd", client="team-a") is None
    assert proxy.value("llm_tokens_total", model="my-model", type="input", client="team-c") == 0
    async with proxy.client(TEAM_A_KEY) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()
    async with proxy.client("sd-team-c") as client:
        await client.chat.completions.create(model="my-model", messages=[])
    assert proxy.value("llm_cost_usd_total", model="my-model", client="team-c") == pytest.approx(
        16 / 1e6
    )
