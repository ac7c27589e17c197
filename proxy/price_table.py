"""List prices that ship with sheepdog, in USD per 1M tokens, each with its source and date.

The models people send through relays (OpenAI, Anthropic, Google, DeepSeek, Qwen, GLM, Kimi,
Doubao, and the embedding models), under their undated names: dated, prefixed and hyphenated
spellings resolve to these (see :mod:`proxy.models`). Figures are the providers' list prices for
pay-as-you-go API use, standard tier (no batch or priority discounts), as published on the page
named in ``source`` and checked on the date given. Where a provider lists in CNY only, the USD
figures are those of its international (USD) price list, which the source names.

``proxy.pricing_file`` and ``proxy.pricing`` go over this table; a model in neither and not here
is metered as ``other`` with no cost: sheepdog never guesses a price.
"""

# One model a line, so the table reads as a table.
# ruff: noqa: E501

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from proxy.pricing import Price, Rates, Tier

__all__ = ["CATALOGUE", "Listed", "catalogue_prices"]


@dataclass(frozen=True, slots=True)
class Listed:
    """One catalogue entry: a model, its price, where the figures come from and when."""

    name: str
    price: Price
    source: str
    checked: str  # YYYY-MM-DD


def _price(
    input: float,
    output: float,
    cache_read: float | None = None,
    cache_write: float | None = None,
    cache_write_1h: float | None = None,
    *,
    reasoning: float | None = None,
    tiers: tuple[Tier, ...] = (),
) -> Price:
    return Price(input, output, cache_read, cache_write, cache_write_1h, reasoning, tiers)


def _above(
    tokens: int,
    input: float,
    output: float,
    cache_read: float | None = None,
    cache_write: float | None = None,
    cache_write_1h: float | None = None,
    *,
    reasoning: float | None = None,
) -> Tier:
    return Tier(tokens, Rates(input, output, cache_read, cache_write, cache_write_1h, reasoning))


# The providers' pricing pages. "LiteLLM" is BerriAI/litellm's model_prices_and_context_window.json
# as of the date given, which cites the provider page; figures were checked against that page
# where it could be read.
_OPENAI: Final = "https://openai.com/api/pricing (via LiteLLM)"
_ANTHROPIC: Final = "https://docs.anthropic.com/en/docs/about-claude/pricing (via LiteLLM)"
_GOOGLE: Final = "https://ai.google.dev/gemini-api/docs/pricing (via LiteLLM)"
_DEEPSEEK: Final = "https://api-docs.deepseek.com/quick_start/pricing"
_QWEN: Final = (
    "https://www.alibabacloud.com/help/en/model-studio/models (international, via LiteLLM)"
)
_QWEN_EMBEDDING: Final = (
    "https://www.alibabacloud.com/help/en/model-studio/embedding-interfaces-compatible-with-openai"
)
_GLM: Final = "https://docs.z.ai/guides/overview/pricing (via LiteLLM)"
_KIMI: Final = "https://platform.kimi.ai/docs/pricing (via LiteLLM)"
_DOUBAO: Final = "https://docs.byteplus.com/docs/ModelArk/1099320 (BytePlus ModelArk, USD)"
_DOUBAO_2: Final = "https://www.volcengine.com/docs/82379/1330310 (CNY, in USD via LiteLLM)"
_LITELLM_DATE: Final = "2026-07-24"

_K: Final = 1000

# Anthropic: 5-minute cache writes 1.25x input, 1-hour writes 2x, reads 0.1x; Sonnet 4 and 4.5
# price the whole request at the long-context rates above 200K input tokens.
_SONNET_LONG: Final = _above(200 * _K, 6.00, 22.50, 0.60, 7.50, 12.00)

_ENTRIES: Final[tuple[tuple[str, Price, str, str], ...]] = (
    # OpenAI. GPT-5.4 and later price the whole request higher above 272K input tokens.
    ("gpt-5.6", _price(5.00, 30.00, 0.50, 6.25, tiers=(_above(272 * _K, 10.00, 45.00, 1.00, 12.50),)), _OPENAI, _LITELLM_DATE),
    ("gpt-5.5", _price(5.00, 30.00, 0.50, tiers=(_above(272 * _K, 10.00, 45.00, 1.00),)), _OPENAI, _LITELLM_DATE),
    ("gpt-5.5-pro", _price(30.00, 180.00, 3.00, tiers=(_above(272 * _K, 60.00, 270.00, 6.00),)), _OPENAI, _LITELLM_DATE),
    ("gpt-5.4", _price(2.50, 15.00, 0.25, tiers=(_above(272 * _K, 5.00, 22.50, 0.50),)), _OPENAI, _LITELLM_DATE),
    ("gpt-5.4-pro", _price(30.00, 180.00, 3.00, tiers=(_above(272 * _K, 60.00, 270.00, 6.00),)), _OPENAI, _LITELLM_DATE),
    ("gpt-5.4-mini", _price(0.75, 4.50, 0.075), _OPENAI, _LITELLM_DATE),
    ("gpt-5.4-nano", _price(0.20, 1.25, 0.02), _OPENAI, _LITELLM_DATE),
    ("gpt-5.3-codex", _price(1.75, 14.00, 0.175), _OPENAI, _LITELLM_DATE),
    ("gpt-5.3-chat", _price(1.75, 14.00, 0.175), _OPENAI, _LITELLM_DATE),
    ("gpt-5.2", _price(1.75, 14.00, 0.175), _OPENAI, _LITELLM_DATE),
    ("gpt-5.2-chat", _price(1.75, 14.00, 0.175), _OPENAI, _LITELLM_DATE),
    ("gpt-5.2-codex", _price(1.75, 14.00, 0.175), _OPENAI, _LITELLM_DATE),
    ("gpt-5.2-pro", _price(21.00, 168.00), _OPENAI, _LITELLM_DATE),
    ("gpt-5.1", _price(1.25, 10.00, 0.125), _OPENAI, _LITELLM_DATE),
    ("gpt-5.1-chat", _price(1.25, 10.00, 0.125), _OPENAI, _LITELLM_DATE),
    ("gpt-5.1-codex", _price(1.25, 10.00, 0.125), _OPENAI, _LITELLM_DATE),
    ("gpt-5.1-codex-max", _price(1.25, 10.00, 0.125), _OPENAI, _LITELLM_DATE),
    ("gpt-5.1-codex-mini", _price(0.25, 2.00, 0.025), _OPENAI, _LITELLM_DATE),
    ("gpt-5", _price(1.25, 10.00, 0.125), _OPENAI, _LITELLM_DATE),
    ("gpt-5-chat", _price(1.25, 10.00, 0.125), _OPENAI, _LITELLM_DATE),
    ("gpt-5-codex", _price(1.25, 10.00, 0.125), _OPENAI, _LITELLM_DATE),
    ("gpt-5-pro", _price(15.00, 120.00), _OPENAI, _LITELLM_DATE),
    ("gpt-5-mini", _price(0.25, 2.00, 0.025), _OPENAI, _LITELLM_DATE),
    ("gpt-5-nano", _price(0.05, 0.40, 0.005), _OPENAI, _LITELLM_DATE),
    ("gpt-4.1", _price(2.00, 8.00, 0.50), _OPENAI, _LITELLM_DATE),
    ("gpt-4.1-mini", _price(0.40, 1.60, 0.10), _OPENAI, _LITELLM_DATE),
    ("gpt-4.1-nano", _price(0.10, 0.40, 0.025), _OPENAI, _LITELLM_DATE),
    ("gpt-4o", _price(2.50, 10.00, 1.25), _OPENAI, _LITELLM_DATE),
    ("gpt-4o-mini", _price(0.15, 0.60, 0.075), _OPENAI, _LITELLM_DATE),
    ("o3", _price(2.00, 8.00, 0.50), _OPENAI, _LITELLM_DATE),
    ("o3-pro", _price(20.00, 80.00), _OPENAI, _LITELLM_DATE),
    ("o3-mini", _price(1.10, 4.40, 0.55), _OPENAI, _LITELLM_DATE),
    ("o4-mini", _price(1.10, 4.40, 0.275), _OPENAI, _LITELLM_DATE),
    ("text-embedding-3-small", _price(0.02, 0.00), _OPENAI, _LITELLM_DATE),
    ("text-embedding-3-large", _price(0.13, 0.00), _OPENAI, _LITELLM_DATE),
    ("text-embedding-ada-002", _price(0.10, 0.00), _OPENAI, _LITELLM_DATE),
    # Anthropic: input, output, cache read, 5-minute write, 1-hour write.
    ("claude-opus-5", _price(5.00, 25.00, 0.50, 6.25, 10.00), _ANTHROPIC, _LITELLM_DATE),
    ("claude-sonnet-5", _price(2.00, 10.00, 0.20, 2.50, 4.00), _ANTHROPIC, _LITELLM_DATE),
    ("claude-opus-4.8", _price(5.00, 25.00, 0.50, 6.25, 10.00), _ANTHROPIC, _LITELLM_DATE),
    ("claude-opus-4.7", _price(5.00, 25.00, 0.50, 6.25, 10.00), _ANTHROPIC, _LITELLM_DATE),
    ("claude-opus-4.6", _price(5.00, 25.00, 0.50, 6.25, 10.00), _ANTHROPIC, _LITELLM_DATE),
    ("claude-opus-4.5", _price(5.00, 25.00, 0.50, 6.25, 10.00), _ANTHROPIC, _LITELLM_DATE),
    ("claude-opus-4.1", _price(15.00, 75.00, 1.50, 18.75, 30.00), _ANTHROPIC, _LITELLM_DATE),
    ("claude-opus-4", _price(15.00, 75.00, 1.50, 18.75, 30.00), _ANTHROPIC, _LITELLM_DATE),
    ("claude-sonnet-4.6", _price(3.00, 15.00, 0.30, 3.75, 6.00), _ANTHROPIC, _LITELLM_DATE),
    ("claude-sonnet-4.5", _price(3.00, 15.00, 0.30, 3.75, 6.00, tiers=(_SONNET_LONG,)), _ANTHROPIC, _LITELLM_DATE),
    ("claude-sonnet-4", _price(3.00, 15.00, 0.30, 3.75, 6.00, tiers=(_SONNET_LONG,)), _ANTHROPIC, _LITELLM_DATE),
    ("claude-3-7-sonnet", _price(3.00, 15.00, 0.30, 3.75, 6.00), _ANTHROPIC, _LITELLM_DATE),
    ("claude-haiku-4.5", _price(1.00, 5.00, 0.10, 1.25, 2.00), _ANTHROPIC, _LITELLM_DATE),
    ("claude-3-5-haiku", _price(0.80, 4.00, 0.08, 1.00, 1.60), _ANTHROPIC, _LITELLM_DATE),
    # Google. The Pro models price the whole request higher above 200K input tokens.
    ("gemini-3.6-flash", _price(1.50, 7.50, 0.15), _GOOGLE, _LITELLM_DATE),
    ("gemini-3.5-flash", _price(1.50, 9.00, 0.15), _GOOGLE, _LITELLM_DATE),
    ("gemini-3.5-flash-lite", _price(0.30, 2.50, 0.03), _GOOGLE, _LITELLM_DATE),
    ("gemini-3.1-pro-preview", _price(2.00, 12.00, 0.20, tiers=(_above(200 * _K, 4.00, 18.00, 0.40),)), _GOOGLE, _LITELLM_DATE),
    ("gemini-3.1-flash-lite", _price(0.25, 1.50, 0.025), _GOOGLE, _LITELLM_DATE),
    ("gemini-3.1-flash-lite-preview", _price(0.25, 1.50, 0.025), _GOOGLE, _LITELLM_DATE),
    ("gemini-3-pro-preview", _price(2.00, 12.00, 0.20, tiers=(_above(200 * _K, 4.00, 18.00, 0.40),)), _GOOGLE, _LITELLM_DATE),
    ("gemini-3-flash-preview", _price(0.50, 3.00, 0.05), _GOOGLE, _LITELLM_DATE),
    ("gemini-2.5-pro", _price(1.25, 10.00, 0.125, tiers=(_above(200 * _K, 2.50, 15.00, 0.25),)), _GOOGLE, _LITELLM_DATE),
    ("gemini-2.5-flash", _price(0.30, 2.50, 0.03), _GOOGLE, _LITELLM_DATE),
    ("gemini-2.5-flash-lite", _price(0.10, 0.40, 0.01), _GOOGLE, _LITELLM_DATE),
    ("gemini-2.0-flash", _price(0.10, 0.40, 0.025), _GOOGLE, _LITELLM_DATE),
    ("gemini-embedding-001", _price(0.15, 0.00), _GOOGLE, _LITELLM_DATE),
    ("gemini-embedding-2", _price(0.20, 0.00), _GOOGLE, _LITELLM_DATE),
    # DeepSeek: cache hits are "cache_read". deepseek-chat and deepseek-reasoner are DeepSeek's
    # names for V4-Flash (non-thinking and thinking) since 2026-04; relays still accept them.
    # deepseek-v3.2 is V3.2's price at its release (2025-09-29), as relays still serve it.
    ("deepseek-v4-pro", _price(0.435, 0.87, 0.003625), _DEEPSEEK, "2026-05-22"),
    ("deepseek-v4-flash", _price(0.14, 0.28, 0.0028), _DEEPSEEK, "2026-05-22"),
    ("deepseek-chat", _price(0.14, 0.28, 0.0028), _DEEPSEEK, "2026-05-22"),
    ("deepseek-reasoner", _price(0.14, 0.28, 0.0028), _DEEPSEEK, "2026-05-22"),
    ("deepseek-v3.2", _price(0.28, 0.42, 0.028), "https://api-docs.deepseek.com/news/news250929", "2025-09-29"),
    # Qwen (Alibaba Cloud Model Studio, international): tiers by input tokens.
    ("qwen3-max", _price(1.20, 6.00, tiers=(_above(32 * _K, 2.40, 12.00), _above(128 * _K, 3.00, 15.00))), _QWEN, _LITELLM_DATE),
    ("qwen3.5-plus", _price(0.40, 2.40, tiers=(_above(256 * _K, 0.50, 3.00),)), _QWEN, _LITELLM_DATE),
    ("qwen-plus", _price(0.40, 1.20, reasoning=4.00, tiers=(_above(256 * _K, 1.20, 3.60, reasoning=12.00),)), _QWEN, _LITELLM_DATE),
    ("qwen-flash", _price(0.05, 0.40, tiers=(_above(256 * _K, 0.25, 2.00),)), _QWEN, _LITELLM_DATE),
    ("qwen-turbo", _price(0.05, 0.20, reasoning=0.50), _QWEN, _LITELLM_DATE),
    ("qwen-max", _price(1.60, 6.40), _QWEN, _LITELLM_DATE),
    ("qwen3-coder-plus", _price(1.00, 5.00, 0.10, tiers=(_above(32 * _K, 1.80, 9.00, 0.18), _above(128 * _K, 3.00, 15.00, 0.30), _above(256 * _K, 6.00, 60.00, 0.60))), _QWEN, _LITELLM_DATE),
    ("qwen3-coder-flash", _price(0.30, 1.50, 0.08, tiers=(_above(32 * _K, 0.50, 2.50, 0.12), _above(128 * _K, 0.80, 4.00, 0.20), _above(256 * _K, 1.60, 9.60, 0.40))), _QWEN, _LITELLM_DATE),
    ("text-embedding-v4", _price(0.07, 0.00), _QWEN_EMBEDDING, "2025-12-15"),
    # GLM (Z.ai).
    ("glm-5.1", _price(1.40, 4.40, 0.26), _GLM, _LITELLM_DATE),
    ("glm-5", _price(1.00, 3.20, 0.20), _GLM, _LITELLM_DATE),
    ("glm-4.7", _price(0.60, 2.20, 0.11), _GLM, _LITELLM_DATE),
    ("glm-4.6", _price(0.60, 2.20, 0.11), _GLM, _LITELLM_DATE),
    ("glm-4.5", _price(0.60, 2.20), _GLM, _LITELLM_DATE),
    ("glm-4.5-air", _price(0.20, 1.10), _GLM, _LITELLM_DATE),
    # Kimi (Moonshot).
    ("kimi-k2.6", _price(0.95, 4.00, 0.16), _KIMI, _LITELLM_DATE),
    ("kimi-k2.5", _price(0.60, 3.00, 0.10), _KIMI, _LITELLM_DATE),
    ("kimi-k2-thinking", _price(0.60, 2.50, 0.15), _KIMI, _LITELLM_DATE),
    ("kimi-k2-0905-preview", _price(0.60, 2.50, 0.15), _KIMI, _LITELLM_DATE),
    ("kimi-k2-turbo-preview", _price(1.15, 8.00, 0.15), _KIMI, _LITELLM_DATE),
    # Doubao (ByteDance Seed): tiers by prompt length.
    ("doubao-seed-1.8", _price(0.25, 2.00, 0.05, tiers=(_above(128 * _K, 0.50, 4.00, 0.05),)), _DOUBAO, _LITELLM_DATE),
    ("doubao-seed-1.6", _price(0.25, 2.00, 0.05, tiers=(_above(128 * _K, 0.50, 4.00, 0.05),)), _DOUBAO, _LITELLM_DATE),
    ("doubao-seed-1.6-flash", _price(0.075, 0.30, 0.015, tiers=(_above(128 * _K, 0.10, 0.80, 0.015),)), _DOUBAO, _LITELLM_DATE),
    ("doubao-seed-2.0-pro", _price(0.46, 2.30, tiers=(_above(32 * _K, 0.70, 3.50), _above(128 * _K, 1.40, 7.00))), _DOUBAO_2, _LITELLM_DATE),
    ("doubao-seed-2.0-lite", _price(0.087, 0.52, tiers=(_above(32 * _K, 0.13, 0.78), _above(128 * _K, 0.26, 1.60))), _DOUBAO_2, _LITELLM_DATE),
    ("doubao-seed-2.0-mini", _price(0.029, 0.29, tiers=(_above(32 * _K, 0.058, 0.58), _above(128 * _K, 0.12, 1.20))), _DOUBAO_2, _LITELLM_DATE),
)  # fmt: skip

CATALOGUE: Final[tuple[Listed, ...]] = tuple(Listed(*entry) for entry in _ENTRIES)


def catalogue_prices() -> dict[str, Price]:
    """The shipped prices by model name, in catalogue order."""
    return {entry.name: entry.price for entry in CATALOGUE}
