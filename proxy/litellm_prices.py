"""Prices from a file in LiteLLM's ``model_prices_and_context_window.json`` format.

The community keeps that catalogue current (BerriAI/litellm); ``proxy.pricing_file`` points at a
copy of it, or at any JSON object of the same shape. What is read of each entry:

- ``input_cost_per_token``, ``output_cost_per_token`` (USD per token; an entry without an input
  price is skipped), ``cache_read_input_token_cost``, ``cache_creation_input_token_cost``,
  ``cache_creation_input_token_cost_above_1hr``, ``output_cost_per_reasoning_token``;
- long-context tiers, either as ``<field>_above_<N>k_tokens`` (N thousand input tokens) or as
  ``tiered_pricing``: a list of ``{"range": [from, to], <fields>}``;
- ``mode``: only ``chat``, ``completion``, ``responses`` and ``embedding`` entries (or those without
  a mode) are priced per token; image, audio and rerank models are left out.

Keys with a provider prefix (``dashscope/qwen3-max``) are read under the name after the last
``/``; an unprefixed key of the same name wins, then the model's own provider over resellers.
Entries that only spell one model differently (``gpt-4.1`` and ``gpt-4.1-2025-04-14``) and have the
same price become one model under the shortest spelling; a dated snapshot priced differently
keeps its own entry.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from proxy.models import canonical_name
from proxy.pricing import Price, Rates, Tier

__all__ = ["PriceFileError", "parse_litellm_prices", "read_litellm_prices"]

_PER_MILLION: Final = 1_000_000
_PRICED_MODES: Final = frozenset({"chat", "completion", "responses", "embedding"})
# Rates by our name: LiteLLM's field for it.
_FIELDS: Final = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cache_read": "cache_read_input_token_cost",
    "cache_write": "cache_creation_input_token_cost",
    "cache_write_1h": "cache_creation_input_token_cost_above_1hr",
    "reasoning": "output_cost_per_reasoning_token",
}
_TIER_SUFFIX: Final = re.compile(r"^(?P<field>.+)_above_(?P<thousands>\d+)k_tokens$")
# First-party providers, preferred over resellers when only prefixed keys name a model.
_FIRST_PARTY: Final = (
    "openai",
    "anthropic",
    "gemini",
    "vertex_ai-language-models",
    "vertex_ai-embedding-models",
    "deepseek",
    "dashscope",
    "zai",
    "moonshot",
    "volcengine",
    "xai",
    "mistral",
)
_MAX_BYTES: Final = 64 * 1024 * 1024


class PriceFileError(ValueError):
    """The price file cannot be read or is not a JSON object of entries; the message says why."""


def read_litellm_prices(path: Path) -> dict[str, Price]:
    """The per-token prices in the file at ``path``."""
    try:
        with path.open("rb") as file:
            raw = file.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise PriceFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(raw) > _MAX_BYTES:
        raise PriceFileError(f"{path} is larger than {_MAX_BYTES // (1024 * 1024)} MiB")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise PriceFileError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise PriceFileError(f"{path} is not a JSON object of model entries")
    return parse_litellm_prices(document)


def _rate(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value) * _PER_MILLION


def _rates(entry: Mapping[str, Any], suffix: str = "") -> Rates:
    return Rates(**{ours: _rate(entry.get(theirs + suffix)) for ours, theirs in _FIELDS.items()})


def _suffix_tiers(entry: Mapping[str, Any]) -> list[Tier]:
    thresholds: set[int] = set()
    for key in entry:
        match = _TIER_SUFFIX.match(key)
        if match is not None and match["field"] in _FIELDS.values():
            thresholds.add(int(match["thousands"]) * 1000)
    tiers = []
    for threshold in sorted(thresholds):
        suffix = f"_above_{threshold // 1000}k_tokens"
        rates = _rates(entry, suffix)
        # LiteLLM names the long-context 1-hour write ..._above_1hr_above_200k_tokens.
        one_hour = _rate(entry.get(_FIELDS["cache_write_1h"] + suffix))
        if one_hour is not None:
            rates = dataclasses.replace(rates, cache_write_1h=one_hour)
        if rates != Rates():
            tiers.append(Tier(threshold, rates))
    return tiers


def _range_tiers(entry: Mapping[str, Any]) -> tuple[Rates, list[Tier]] | None:
    ranges = entry.get("tiered_pricing")
    if not isinstance(ranges, list):
        return None
    parsed: list[tuple[int, Rates]] = []
    for item in ranges:
        if not isinstance(item, Mapping):
            return None
        bounds = item.get("range")
        if not isinstance(bounds, list) or not bounds or _rate(bounds[0]) is None:
            return None
        parsed.append((int(bounds[0]), _rates(item)))
    parsed.sort(key=lambda pair: pair[0])
    if not parsed or parsed[0][0] != 0:
        return None
    return parsed[0][1], [Tier(start, rates) for start, rates in parsed[1:]]


def _price(entry: Any) -> Price | None:
    if not isinstance(entry, Mapping):
        return None
    mode = entry.get("mode")
    if mode is not None and mode not in _PRICED_MODES:
        return None
    base = _rates(entry)
    tiers = _suffix_tiers(entry)
    ranged = _range_tiers(entry)
    if base.input is None and ranged is not None:
        base, tiers = ranged
    if base.input is None:
        return None
    return Price(
        base.input,
        base.output or 0.0,
        base.cache_read,
        base.cache_write,
        base.cache_write_1h,
        base.reasoning,
        tuple(tiers),
    )


def _preference(key: str, entry: Mapping[str, Any]) -> tuple[int, int]:
    if "/" not in key:
        return (0, 0)
    provider = entry.get("litellm_provider")
    if provider in _FIRST_PARTY:
        return (1, _FIRST_PARTY.index(provider))
    return (2, 0)


def parse_litellm_prices(document: Mapping[str, Any]) -> dict[str, Price]:
    """Per-token prices from a parsed LiteLLM catalogue (see the module for what is read)."""
    by_name: dict[str, tuple[tuple[int, int], Price]] = {}
    for key, entry in document.items():
        if not isinstance(key, str) or key == "sample_spec":
            continue
        price = _price(entry)
        if price is None:
            continue
        name = key.rpartition("/")[2].strip()
        if not name:
            continue
        rank = _preference(key, entry)
        held = by_name.get(name)
        if held is None or rank < held[0]:
            by_name[name] = (rank, price)
    return _collapse({name: price for name, (_, price) in by_name.items()})


def _collapse(prices: dict[str, Price]) -> dict[str, Price]:
    """One entry per model where several spellings carry the same price."""
    groups: dict[str, list[str]] = {}
    for name in prices:
        groups.setdefault(canonical_name(name), []).append(name)
    kept: dict[str, Price] = {}
    for names in groups.values():
        names.sort(key=lambda name: (len(name), name))
        representative = names[0]
        kept[representative] = prices[representative]
        for name in names[1:]:
            if prices[name] != prices[representative]:
                kept[name] = prices[name]
    return kept
