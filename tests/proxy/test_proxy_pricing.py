"""Model names as clients spell them, and every kind of token at its list price."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest

from proxy.config import ProxyConfig
from proxy.models import CACHE_SIZE, OTHER_MODEL, canonical_name
from proxy.price_table import CATALOGUE
from proxy.pricing import Price, PriceBook
from proxy.tokens import Usage, anthropic_usage, openai_usage
from sheepdog.core.errors import ConfigError
from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import StartProxy, proxy_config

BOOK = ProxyConfig().prices


def spellings(name: str) -> list[str]:
    """How SDKs, relays and routers spell one model: dated, prefixed, hyphenated, -latest."""
    hyphenated = name.replace(".", "-")
    return [
        name,
        hyphenated,
        f"{name}-20250929",
        f"{hyphenated}-20250929",
        f"{name}-2025-04-14",
        f"{name}-latest",
        f"{name}@20250929",
        f"{name}-250615",
        f"openai/{name}",
        f"anthropic/{hyphenated}-20250929",
        f"openrouter/vendor/{name}",
        name.upper(),
    ]


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda entry: entry.name)
def test_every_spelling_of_a_catalogue_model_is_that_model(entry: object) -> None:
    """Each shipped model answers to its dated, prefixed, hyphenated and -latest spellings,
    and to nothing else in the catalogue."""
    name = entry.name  # type: ignore[attr-defined]
    for spelling in spellings(name):
        assert BOOK.label(spelling) == name, spelling
    assert BOOK.cost_usd(name, Usage(1000, 0)) == pytest.approx(
        1000 * entry.price.input / 1e6  # type: ignore[attr-defined]
    )


def test_the_catalogue_names_distinct_models_with_source_and_date() -> None:
    """No two entries canonicalise alike; every figure has a source and a YYYY-MM-DD date."""
    canonical = [canonical_name(entry.name) for entry in CATALOGUE]
    assert len(set(canonical)) == len(canonical)
    for entry in CATALOGUE:
        assert entry.source.startswith("https://"), entry.name
        assert len(entry.checked) == 10 and entry.checked[4] == "-", entry.name
    families = ("gpt-", "claude-", "gemini-", "deepseek-", "qwen", "glm-", "kimi-", "doubao-")
    for family in families:
        assert any(entry.name.startswith(family) for entry in CATALOGUE), family
    assert {"text-embedding-3-small", "gemini-embedding-001", "text-embedding-v4"} <= set(
        BOOK.models
    )


def test_ten_thousand_random_names_give_a_bounded_label_set() -> None:
    """Whatever names clients send, labels are priced names or "other", and the resolution
    cache stays bounded."""
    rng = random.Random(20261201)
    alphabet = string.ascii_letters + string.digits + "-._/@: "
    names = ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(10_000)]
    labels = {BOOK.label(name) for name in names}
    assert labels <= {*BOOK.models, OTHER_MODEL}
    assert BOOK.resolver.resolve.cache_info().currsize <= CACHE_SIZE
    for value in (None, 42, ["gpt-4.1"], {"a": 1}, "x" * 10_000, "gpt-4.1\x00"):
        assert BOOK.label(value) == OTHER_MODEL


def test_aliases_resolve_to_the_label_of_their_target(make_config: object) -> None:
    """model_aliases: a client-sent name priced as the model it names (by any spelling)."""
    config = make_config(  # type: ignore[operator]
        {"proxy": {"model_aliases": {"my-claude": "claude-sonnet-4-5-20250929"}}}
    )
    prices = config.proxy.prices
    assert prices.label("my-claude") == "claude-sonnet-4.5"
    assert prices.label("team/my-claude") == "claude-sonnet-4.5"
    assert prices.named == ("claude-sonnet-4.5",)


def test_an_alias_to_an_unpriced_model_is_a_config_error(make_config: object) -> None:
    """An alias whose target has no price names the key and says what to do."""
    with pytest.raises(ConfigError) as caught:
        make_config({"proxy": {"model_aliases": {"mine": "nobody-knows-v9"}}})  # type: ignore[operator]
    assert str(caught.value).startswith("proxy.model_aliases.mine: 'nobody-knows-v9' has no price")


def test_configured_prices_replace_the_catalogue_model_keeping_its_label(
    make_config: object,
) -> None:
    """proxy.pricing under another spelling of a catalogue model replaces its price, not its
    label: series and ledger rows keep one name per model."""
    config = make_config(  # type: ignore[operator]
        {"proxy": {"pricing": {"claude-sonnet-4-5": {"input": 1.0, "output": 2.0}}}}
    )
    prices = config.proxy.prices
    assert prices.label("claude-sonnet-4-5-20250929") == "claude-sonnet-4.5"
    assert prices.cost_usd("claude-sonnet-4.5", Usage(1_000_000, 1_000_000)) == pytest.approx(3.0)
    assert "claude-sonnet-4-5" not in prices.models


def test_each_kind_of_token_at_its_rate_and_tiers_by_total_input() -> None:
    """Cache reads, 5-minute and 1-hour writes, reasoning, and the tier chosen by all input."""
    sonnet = BOOK.prices["claude-sonnet-4.5"]
    book = PriceBook({"m": sonnet})
    below = Usage(200_000, 1000, cache_read_tokens=100_000, cache_write_tokens=50_000,
                  cache_write_1h_tokens=20_000, reasoning_tokens=400)  # fmt: skip
    assert book.cost_usd("m", below) == pytest.approx(
        (50_000 * 3 + 100_000 * 0.30 + 30_000 * 3.75 + 20_000 * 6 + 1000 * 15) / 1e6
    )
    above = Usage(200_001, 1000, cache_read_tokens=100_000)
    assert book.cost_usd("m", above) == pytest.approx(
        (100_001 * 6 + 100_000 * 0.60 + 1000 * 22.50) / 1e6
    )
    qwen = BOOK.prices["qwen3-max"]
    book = PriceBook({"q": qwen, "r": Price(1.0, 2.0, reasoning=5.0)})
    assert book.cost_usd("q", Usage(32_000, 0)) == pytest.approx(32_000 * 1.2 / 1e6)
    assert book.cost_usd("q", Usage(32_001, 0)) == pytest.approx(32_001 * 2.4 / 1e6)
    assert book.cost_usd("q", Usage(130_000, 10)) == pytest.approx((130_000 * 3 + 10 * 15) / 1e6)
    assert book.cost_usd("r", Usage(0, 100, reasoning_tokens=60)) == pytest.approx(
        (40 * 2 + 60 * 5) / 1e6
    )


def test_usage_readers_follow_each_protocol_and_its_quirks() -> None:
    """OpenAI, DeepSeek, Moonshot and Gemini usage objects; Anthropic's; nonsense gives None."""
    assert openai_usage(
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 80},
            "completion_tokens_details": {"reasoning_tokens": 30},
        }
    ) == Usage(100, 50, cache_read_tokens=80, reasoning_tokens=30)
    deepseek = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 64}
    assert openai_usage({**deepseek, "prompt_cache_miss_tokens": 36}) == Usage(100, 5, 64)
    assert openai_usage({"prompt_tokens": 10, "completion_tokens": 2, "cached_tokens": 8}) == Usage(
        10, 2, 8
    )
    gemini = {"prompt_tokens": 20, "completion_tokens": 151, "total_tokens": 553}
    assert openai_usage(gemini) == Usage(20, 533, reasoning_tokens=382)
    assert anthropic_usage(
        {
            "input_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 30,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
            "output_tokens": 7,
            "output_tokens_details": {"thinking_tokens": 5},
        }
    ) == Usage(140, 7, 100, 30, 20, 5)
    for nonsense in (None, [], {"prompt_tokens": -1}, {"input_tokens": "9"}, {"x": 1}):
        assert openai_usage(nonsense) is None
        assert anthropic_usage(nonsense) is None
    # Parts never exceed their totals.
    assert openai_usage(
        {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}}
    ) == Usage(5, 1, 5)


OPENAI_CASES = {
    # name: (script, expected tokens (input, output, cache_read, reasoning), expected USD)
    "cached gpt-4.1": (
        {"model": "gpt-4.1", "prompt_tokens": 10_000, "completion_tokens": 500,
         "cached_tokens": 8000},
        (10_000, 500, 8000, 0),
        (2000 * 2.00 + 8000 * 0.50 + 500 * 8.00) / 1e6,
    ),
    "reasoning gpt-5": (
        {"model": "gpt-5-2025-08-07", "prompt_tokens": 1000, "completion_tokens": 3000,
         "reasoning_tokens": 2500},
        (1000, 3000, 0, 2500),
        (1000 * 1.25 + 3000 * 10.00) / 1e6,
    ),
    "DeepSeek cache hits": (
        {"model": "deepseek-v4-flash", "prompt_tokens": 10_000, "completion_tokens": 1000,
         "cached_tokens": 6000, "usage_style": "deepseek"},
        (10_000, 1000, 6000, 0),
        (4000 * 0.14 + 6000 * 0.0028 + 1000 * 0.28) / 1e6,
    ),
    "Gemini thinking only in total_tokens": (
        {"model": "gemini-2.5-flash", "prompt_tokens": 2000, "completion_tokens": 1200,
         "reasoning_tokens": 1000, "usage_style": "gemini"},
        (2000, 1200, 0, 1000),
        (2000 * 0.30 + 1200 * 2.50) / 1e6,
    ),
}  # fmt: skip
LABELS = {"gpt-5-2025-08-07": "gpt-5"}


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize("case", sorted(OPENAI_CASES))
async def test_openai_shaped_usage_is_priced_exactly(
    start_proxy: StartProxy, upstream: FakeUpstream, case: str, stream: bool
) -> None:
    """Cached, reasoning, DeepSeek and Gemini usage through chat completions, streamed or not:
    tokens by kind and USD as a hand calculation at list prices."""
    script, (inputs, outputs, cached, reasoning), usd = OPENAI_CASES[case]
    script = dict(script)
    model = script.pop("model")
    upstream.script(model, **script)
    proxy = await start_proxy()
    async with proxy.client() as client:
        if stream:
            chunks = await client.chat.completions.create(model=model, messages=[], stream=True)
            received = [chunk async for chunk in chunks]
            assert "".join(c.choices[0].delta.content or "" for c in received) == "Hello, world!"
        else:
            await client.chat.completions.create(model=model, messages=[])
    labels = {"model": LABELS.get(model, model), "client": "team-a"}
    assert proxy.value("llm_tokens_total", type="input", **labels) == inputs
    assert proxy.value("llm_tokens_total", type="output", **labels) == outputs
    details = {"cache_read": cached, "reasoning": reasoning}
    for kind, count in details.items():
        assert (proxy.value("llm_token_details_total", type=kind, **labels) or 0) == count
    assert proxy.value("llm_cost_usd_total", **labels) == pytest.approx(usd, rel=1e-12)


async def test_responses_api_cached_and_reasoning_tokens_also_when_incomplete(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """The Responses API's usage details, in a body and in response.incomplete."""
    upstream.script("o4-mini", prompt_tokens=4000, completion_tokens=900, cached_tokens=3000,
                    reasoning_tokens=600, incomplete=True)  # fmt: skip
    proxy = await start_proxy()
    async with proxy.client() as client:
        await client.responses.create(model="o4-mini", input="hi")
        events = [event async for event in await client.responses.create(
            model="o4-mini", input="hi", stream=True)]  # fmt: skip
    assert events[-1].type == "response.incomplete"
    labels = {"model": "o4-mini", "client": "team-a"}
    assert proxy.value("llm_tokens_total", type="input", **labels) == 2 * 4000
    assert proxy.value("llm_token_details_total", type="cache_read", **labels) == 2 * 3000
    assert proxy.value("llm_token_details_total", type="reasoning", **labels) == 2 * 600
    assert proxy.value("llm_cost_usd_total", **labels) == pytest.approx(
        2 * (1000 * 1.10 + 3000 * 0.275 + 900 * 4.40) / 1e6, rel=1e-12
    )


@pytest.mark.filterwarnings("ignore:The model 'claude-sonnet-4-5-20250929' is deprecated")
async def test_a_sonnet_request_above_200k_input_tokens_is_priced_at_long_context_rates(
    start_proxy: StartProxy, upstream: FakeUpstream
) -> None:
    """150K uncached + 60K cache-read tokens is over 200K: every token at the long-context rate."""
    upstream.anthropic.script("claude-sonnet-4-5-20250929", input_tokens=150_000,
                              cache_read_tokens=60_000, output_tokens=1000)  # fmt: skip
    proxy = await start_proxy()
    async with proxy.anthropic() as client:
        await client.messages.create(model="claude-sonnet-4-5-20250929", max_tokens=64, messages=[])
    labels = {"model": "claude-sonnet-4.5", "client": "team-a"}
    assert proxy.value("llm_tokens_total", type="input", **labels) == 210_000
    assert proxy.value("llm_cost_usd_total", **labels) == pytest.approx(
        (150_000 * 6.00 + 60_000 * 0.60 + 1000 * 22.50) / 1e6, rel=1e-12
    )


def litellm_excerpt() -> dict[str, object]:
    """Entries as model_prices_and_context_window.json has them (2026-07-24), and a few others."""
    return {
        "sample_spec": {"input_cost_per_token": 0.0, "mode": "one of: chat, embedding, ..."},
        "gpt-4.1": {"cache_read_input_token_cost": 5e-07, "input_cost_per_token": 2e-06,
                    "litellm_provider": "openai", "mode": "chat", "output_cost_per_token": 8e-06},
        "gpt-4.1-2025-04-14": {"cache_read_input_token_cost": 5e-07, "input_cost_per_token": 2e-06,
                               "litellm_provider": "openai", "mode": "chat",
                               "output_cost_per_token": 8e-06},
        "gpt-4o-2024-05-13": {"input_cost_per_token": 5e-06, "litellm_provider": "openai",
                              "mode": "chat", "output_cost_per_token": 1.5e-05},
        "gpt-4o": {"cache_read_input_token_cost": 1.25e-06, "input_cost_per_token": 2.5e-06,
                   "litellm_provider": "openai", "mode": "chat", "output_cost_per_token": 1e-05},
        "claude-sonnet-4-5": {
            "cache_creation_input_token_cost": 3.75e-06,
            "cache_creation_input_token_cost_above_1hr": 6e-06,
            "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
            "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
            "cache_read_input_token_cost": 3e-07,
            "cache_read_input_token_cost_above_200k_tokens": 6e-07,
            "input_cost_per_token": 3e-06, "input_cost_per_token_above_200k_tokens": 6e-06,
            "litellm_provider": "anthropic", "mode": "chat", "output_cost_per_token": 1.5e-05,
            "output_cost_per_token_above_200k_tokens": 2.25e-05,
        },
        "dashscope/qwen3-max": {"litellm_provider": "dashscope", "mode": "chat", "tiered_pricing": [
            {"input_cost_per_token": 1.2e-06, "output_cost_per_token": 6e-06,
             "range": [0, 32000.0]},
            {"input_cost_per_token": 2.4e-06, "output_cost_per_token": 1.2e-05,
             "range": [32000.0, 128000.0]}]},
        "openrouter/vendor/house-model": {"input_cost_per_token": 9e-06,
                                          "litellm_provider": "openrouter", "mode": "chat"},
        "house-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                        "litellm_provider": "custom", "mode": "chat"},
        "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation",
                     "output_cost_per_image": 0.04},
        "broken": {"input_cost_per_token": "free", "mode": "chat"},
    }  # fmt: skip


async def test_a_litellm_price_file_prices_models_under_proxy_pricing(
    start_proxy: StartProxy, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """proxy.pricing_file in LiteLLM's format: per-kind rates, tiers (both encodings), provider
    prefixes, one model for equally priced spellings; proxy.pricing goes over it."""
    path = tmp_path / "model_prices.json"
    path.write_text(json.dumps(litellm_excerpt()))
    config = proxy_config(upstream, pricing_file=str(path))
    config["proxy"]["pricing"] = {"gpt-4o": {"input": 1.0, "output": 1.0}}
    upstream.script("house-model", prompt_tokens=1000, completion_tokens=1000)
    upstream.script("gpt-4o-2024-05-13", prompt_tokens=1000, completion_tokens=0)
    proxy = await start_proxy(config)
    async with proxy.client() as client:
        await client.chat.completions.create(model="house-model", messages=[])
        await client.chat.completions.create(model="gpt-4o-2024-05-13", messages=[])
        await client.chat.completions.create(model="openai/gpt-4o", messages=[])
    team = {"client": "team-a"}
    assert proxy.value("llm_cost_usd_total", model="house-model", **team) == pytest.approx(
        (1000 * 1.0 + 1000 * 2.0) / 1e6
    )
    # A dated snapshot with its own price keeps it; proxy.pricing replaces gpt-4o's.
    assert proxy.value("llm_cost_usd_total", model="gpt-4o-2024-05-13", **team) == pytest.approx(
        1000 * 5.0 / 1e6
    )
    assert proxy.value("llm_cost_usd_total", model="gpt-4o", **team) == pytest.approx(
        (12 * 1.0 + 4 * 1.0) / 1e6
    )


def test_price_file_entries_read_as_litellm_means_them(make_config: object, tmp_path: Path) -> None:
    """Each LiteLLM encoding read to the same rates as the shipped catalogue has."""
    path = tmp_path / "model_prices.json"
    path.write_text(json.dumps(litellm_excerpt()))
    prices = make_config({"proxy": {"pricing_file": str(path)}}).proxy.prices  # type: ignore[operator]
    book_from_file = prices
    usage = Usage(210_000, 1000, cache_read_tokens=60_000, cache_write_tokens=30_000,
                  cache_write_1h_tokens=10_000)  # fmt: skip
    assert book_from_file.cost_usd("claude-sonnet-4.5", usage) == pytest.approx(
        BOOK.cost_usd("claude-sonnet-4.5", usage), rel=1e-12
    )
    for tokens in (1000, 40_000):
        assert book_from_file.cost_usd("qwen3-max", Usage(tokens, 100)) == pytest.approx(
            BOOK.cost_usd("qwen3-max", Usage(tokens, 100)), rel=1e-12
        )
    assert book_from_file.label("gpt-4.1-2025-04-14") == "gpt-4.1"
    assert book_from_file.label("dall-e-3") == OTHER_MODEL
    assert book_from_file.label("broken") == OTHER_MODEL


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "proxy.pricing_file: cannot read"),
        ("{not json", "is not JSON"),
        ("[1, 2]", "is not a JSON object of model entries"),
    ],
)
def test_a_bad_price_file_is_a_config_error_naming_the_key(
    make_config: object, tmp_path: Path, content: str | None, message: str
) -> None:
    """A price file that is missing, not JSON, or not an object: an error at proxy.pricing_file."""
    path = tmp_path / "prices.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        make_config({"proxy": {"pricing_file": str(path)}})  # type: ignore[operator]
    assert str(caught.value).startswith("proxy.pricing_file: ")
    assert message in str(caught.value)
