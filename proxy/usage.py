"""Reading token usage out of what the upstream answered, without holding up the answer.

The OpenAI-compatible shapes: chat and legacy completions report ``usage.prompt_tokens`` and
``usage.completion_tokens``; embeddings ``usage.prompt_tokens`` only; the Responses API
``usage.input_tokens`` and ``usage.output_tokens`` (in a stream, inside ``response.completed``).
Reasoning tokens are part of the output count and cached input tokens part of the input count, so
both are metered at the model's list price.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from proxy.encoding import Decoder
from proxy.pricing import Usage

__all__ = ["BodyMeter", "usage_from"]

# A body larger than this is not parsed whole: json.loads of 16 MB of embeddings holds the event
# loop (every other stream) for a third of a second. Only its tail is kept, and the last "usage"
# object in it is read: OpenAI-compatible servers put usage last. This also bounds the copy.
_FULL_PARSE_LIMIT: Final = 256 * 1024
_TAIL_BYTES: Final = 64 * 1024
# A "usage" object with at most one level of nested objects (prompt_tokens_details, ...).
_USAGE_OBJECT: Final = re.compile(rb'"usage"\s*:\s*(\{(?:[^{}]|\{[^{}]*\})*\})')


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def usage_from_object(usage: Any) -> Usage | None:
    """Usage from a ``usage`` object of any of the OpenAI-compatible shapes, if it is one."""
    if not isinstance(usage, dict):
        return None
    input_tokens = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
    if input_tokens is None:
        return None
    output_tokens = _count(usage.get("completion_tokens", usage.get("output_tokens", 0)))
    if output_tokens is None:
        return None
    return Usage(input_tokens, output_tokens)


def usage_from(payload: Any) -> Usage | None:
    """Usage from a response body or a stream event: top-level ``usage``, or ``response.usage``."""
    if not isinstance(payload, dict):
        return None
    usage = payload.get("usage")
    if usage is None:
        response = payload.get("response")
        if isinstance(response, dict):
            usage = response.get("usage")
    return usage_from_object(usage)


class BodyMeter:
    """Keeps a decoded copy of a JSON body as it passes through, to read ``usage`` at the end."""

    __slots__ = ("_buffer", "_decoder", "_tail_only")

    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder
        self._buffer = bytearray()
        self._tail_only = False

    def feed(self, chunk: bytes) -> None:
        self._buffer += self._decoder.decode(chunk)
        if self._tail_only:
            del self._buffer[:-_TAIL_BYTES]
        elif len(self._buffer) > _FULL_PARSE_LIMIT:
            self._tail_only = True
            del self._buffer[:-_TAIL_BYTES]

    def usage(self) -> Usage | None:
        """The body's usage, or None if it has none we can read."""
        if self._decoder.failed:
            return None
        if not self._tail_only:
            try:
                return usage_from(json.loads(self._buffer))
            except (ValueError, RecursionError):
                return None
        found = _USAGE_OBJECT.findall(self._buffer)
        if not found:
            return None
        try:
            return usage_from_object(json.loads(found[-1]))
        except ValueError:
            return None
