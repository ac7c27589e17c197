"""Token usage as each protocol reports it, normalised to one shape: what was billed, by kind.

:class:`Usage` keeps the SPEC's totals — ``input_tokens`` is every billed input token (cache reads
and writes included), ``output_tokens`` every output token (reasoning included) — and breaks out
the kinds priced at their own rates: cache reads, cache writes (of which 1-hour writes), and
reasoning. Each reader below turns one protocol's ``usage`` object into it:

- OpenAI chat, legacy completions and embeddings (:func:`openai_usage`): ``prompt_tokens`` holds
  the cached tokens (``prompt_tokens_details.cached_tokens``), ``completion_tokens`` the reasoning
  ones (``completion_tokens_details.reasoning_tokens``). DeepSeek reports its cache hits as
  ``prompt_cache_hit_tokens`` (``prompt_tokens`` = hits + misses), Moonshot as a top-level
  ``cached_tokens``, Qwen its explicit cache writes as
  ``prompt_tokens_details.cache_creation_input_tokens``. Gemini's OpenAI-compatible endpoint
  leaves thinking tokens out of ``completion_tokens`` but counts them in ``total_tokens``: output
  is then ``total_tokens - prompt_tokens``, the difference reasoning.
- The Responses API (also :func:`openai_usage`): ``input_tokens`` with
  ``input_tokens_details.cached_tokens``, ``output_tokens`` with
  ``output_tokens_details.reasoning_tokens``.
- Anthropic Messages (:func:`anthropic_usage`): ``input_tokens`` excludes the cache, so the input
  total is ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``; 1-hour
  writes are ``cache_creation.ephemeral_1h_input_tokens``, thinking
  ``output_tokens_details.thinking_tokens``.

A reader returns None for anything that is not a usage object of its shape: sheepdog never guesses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Usage", "UsageReader", "anthropic_usage", "openai_usage"]


class Usage(NamedTuple):
    """Tokens the upstream reported for one request.

    ``input_tokens`` and ``output_tokens`` are totals; the other counts are parts of them:
    ``cache_read_tokens`` and ``cache_write_tokens`` of the input (``cache_write_1h_tokens`` of the
    cache writes), ``reasoning_tokens`` of the output.

    A named tuple rather than a frozen dataclass: one is made for every request, and a frozen
    dataclass sets each field through ``object.__setattr__`` (three times the cost here).
    """

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0


UsageReader = Callable[[Any], "Usage | None"]
"""Turns one protocol's ``usage`` object into :class:`Usage` (None: not one)."""


def _count(value: Any) -> int | None:
    if type(value) is int and value >= 0:  # not a bool, nor a float
        return value
    return None


def _part(container: Any, key: str) -> int:
    """A count inside an optional details object; absent, null or malformed counts as 0."""
    if type(container) is not dict:
        return 0
    value = container.get(key)
    return value if type(value) is int and value > 0 else 0


def _usage(
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
    cache_write_1h: int,
    reasoning: int,
) -> Usage:
    # Parts never exceed their totals, whatever an upstream sends: a cost is never negative.
    cache_read = min(cache_read, input_tokens)
    cache_write = min(cache_write, input_tokens - cache_read)
    return Usage(
        input_tokens,
        output_tokens,
        cache_read,
        cache_write,
        min(cache_write_1h, cache_write),
        min(reasoning, output_tokens),
    )


def openai_usage(usage: Any) -> Usage | None:
    """Usage from an OpenAI-compatible ``usage`` object (chat, completions, embeddings,
    Responses)."""
    if type(usage) is not dict:
        return None
    get = usage.get
    if "prompt_tokens" in usage:
        input_tokens = usage["prompt_tokens"]
        output_tokens = get("completion_tokens", 0)
        input_details = get("prompt_tokens_details")
        output_details = get("completion_tokens_details")
    else:
        input_tokens = get("input_tokens")
        output_tokens = get("output_tokens", 0)
        input_details = get("input_tokens_details")
        output_details = get("output_tokens_details")
    # Counts are non-negative integers (not booleans, not floats); anything else is no usage.
    if type(input_tokens) is not int or input_tokens < 0:
        return None
    if type(output_tokens) is not int or output_tokens < 0:
        return None
    # The details are read inline, not with _part: this runs for every metered answer.
    cache_read = cache_write = reasoning = 0
    if type(input_details) is dict:
        value = input_details.get("cached_tokens")
        if type(value) is int and value > 0:
            cache_read = value
        value = input_details.get("cache_creation_input_tokens")
        if type(value) is int and value > 0:
            cache_write = value
    if not cache_read:
        cache_read = _part(usage, "prompt_cache_hit_tokens") or _part(usage, "cached_tokens")
    if type(output_details) is dict:
        value = output_details.get("reasoning_tokens")
        if type(value) is int and value > 0:
            reasoning = value
    total = get("total_tokens")
    if type(total) is int and total - input_tokens > output_tokens:
        # Thinking left out of completion_tokens (Gemini): the total counts it.
        unreported = total - input_tokens - output_tokens
        output_tokens += unreported
        reasoning = max(reasoning, unreported)
    if not (cache_read or cache_write or reasoning):
        return Usage(input_tokens, output_tokens)  # nothing to bound
    return _usage(input_tokens, output_tokens, cache_read, cache_write, 0, reasoning)


def anthropic_usage(usage: Any) -> Usage | None:
    """Usage from an Anthropic Messages ``usage`` object (a body's, or one merged from a stream)."""
    if type(usage) is not dict:
        return None
    uncached = _count(usage.get("input_tokens"))
    output_tokens = _count(usage.get("output_tokens", 0))
    if uncached is None or output_tokens is None:
        return None
    cache_read = _part(usage, "cache_read_input_tokens")
    cache_write = _part(usage, "cache_creation_input_tokens")
    cache_write_1h = _part(usage.get("cache_creation"), "ephemeral_1h_input_tokens")
    reasoning = _part(usage.get("output_tokens_details"), "thinking_tokens")
    return _usage(
        uncached + cache_read + cache_write,
        output_tokens,
        cache_read,
        cache_write,
        cache_write_1h,
        reasoning,
    )
