"""Reading token usage out of what the upstream answered, without holding up the answer.

The ``usage`` object is found where each API puts it: top-level in a chat, completion, embedding or
Messages body, inside ``response`` in a Responses API body or stream event
(``response.completed``, ``response.incomplete``). What its fields mean is the business of the
protocol's reader in :mod:`proxy.tokens` (cache reads and writes, reasoning, upstream quirks).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from proxy.encoding import Decoder
from proxy.tokens import Usage, UsageReader, openai_usage

__all__ = ["BodyMeter", "usage_from"]

# A body larger than this is not parsed whole: json.loads of 16 MB of embeddings holds the event
# loop (every other stream) for a third of a second. Only its tail is kept, and the last "usage"
# object in it is read: OpenAI-compatible servers put usage last. This also bounds the copy.
_FULL_PARSE_LIMIT: Final = 256 * 1024
_TAIL_BYTES: Final = 64 * 1024
# A "usage" object with at most one level of nested objects (prompt_tokens_details, ...).
_USAGE_OBJECT: Final = re.compile(rb'"usage"\s*:\s*(\{(?:[^{}]|\{[^{}]*\})*\})')
_USAGE_KEY: Final = re.compile(r'"usage"\s*:\s*(?=\{)')
_DOCUMENT_END: Final = re.compile(r"\s*\}\s*")
_JSON: Final = json.JSONDecoder()


usage_from_object: UsageReader = openai_usage
"""Usage from a ``usage`` object of any of the OpenAI-compatible shapes, if it is one."""


def usage_from(payload: Any, reader: UsageReader = openai_usage) -> Usage | None:
    """Usage from a response body or a stream event: top-level ``usage``, or ``response.usage``."""
    if not isinstance(payload, dict):
        return None
    usage = payload.get("usage")
    if usage is None:
        response = payload.get("response")
        if isinstance(response, dict):
            usage = response.get("usage")
    return reader(usage)


def _last_member_usage(body: bytearray, reader: UsageReader) -> Usage | None:
    """Usage read without parsing the whole body, where it is the document's last member.

    Chat, completions and embeddings answers end with their top-level ``usage``: parsing that
    object alone costs a fraction of parsing the answer (the largest part of the relay's own work
    per request, bench/analysis.md). The match is exact: a ``"usage":`` outside any string is a
    key when what comes before it is ``{`` or ``,`` (a quote inside a string is escaped, so is
    preceded by a backslash), and an object followed only by a closing brace is a member of the
    object that brace closes, which at the end of the body is the top-level one.
    Anything else (``response.usage``, ``"usage": null``, usage not last) gives None, and the
    caller parses the whole body as before.
    """
    start = body.rfind(b'"usage"')
    if start < 0:
        return None
    before = body[max(0, start - 64) : start].rstrip()
    if not before.endswith((b"{", b",")):
        return None
    try:
        text = body[start:].decode()
        key = _USAGE_KEY.match(text)
        if key is None:
            return None
        usage, end = _JSON.raw_decode(text, key.end())
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if _DOCUMENT_END.fullmatch(text, end) is None:
        return None
    return reader(usage)


class BodyMeter:
    """Keeps a decoded copy of a JSON body as it passes through, to read ``usage`` at the end."""

    __slots__ = ("_buffer", "_decoder", "_reader", "_tail_only")

    def __init__(self, decoder: Decoder, reader: UsageReader = openai_usage) -> None:
        self._decoder = decoder
        self._reader = reader
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
            last = _last_member_usage(self._buffer, self._reader)
            if last is not None:
                return last
            try:
                return usage_from(json.loads(self._buffer), self._reader)
            except (ValueError, RecursionError):
                return None
        found = _USAGE_OBJECT.findall(self._buffer)
        if not found:
            return None
        try:
            return self._reader(json.loads(found[-1]))
        except ValueError:
            return None
