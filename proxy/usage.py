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

import orjson

from proxy.encoding import Decoder
from proxy.tokens import Usage, UsageReader, openai_usage

__all__ = ["BodyMeter", "body_usage", "usage_from"]

# A body larger than this is not parsed whole: json.loads of 16 MB of embeddings holds the event
# loop (every other stream) for a third of a second. Only its tail is kept, and the last "usage"
# object in it is read: OpenAI-compatible servers put usage last. This also bounds the copy.
_FULL_PARSE_LIMIT: Final = 256 * 1024
_TAIL_BYTES: Final = 64 * 1024
# A "usage" object with at most one level of nested objects (prompt_tokens_details, ...).
_USAGE_OBJECT: Final = re.compile(rb'"usage"\s*:\s*(\{(?:[^{}]|\{[^{}]*\})*\})')
_WHITESPACE: Final = b" \t\n\r\x0b\x0c"
# From a "usage" key to the end of the body: the key, its object value, and the closing brace of
# the object it is a member of (only JSON's own whitespace between them).
_LAST_MEMBER: Final = re.compile(
    rb'"usage"[ \t\n\r]*:[ \t\n\r]*(\{.*\})[ \t\n\r]*\}[ \t\n\r]*', re.DOTALL
)


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


def body_usage(body: bytes | bytearray, reader: UsageReader = openai_usage) -> Usage | None:
    """The usage of a whole decoded JSON body, or None if it has none we can read (what
    :class:`BodyMeter` reads, for a body at hand: no copy of it is made)."""
    if len(body) > _FULL_PARSE_LIMIT:
        return _tail_usage(body[-_TAIL_BYTES:], reader)
    last = _last_member_usage(body, reader)
    if last is not None:
        return last
    try:
        return usage_from(json.loads(body), reader)
    except (ValueError, RecursionError):
        return None


def _last_member_usage(body: bytes | bytearray, reader: UsageReader) -> Usage | None:
    """Usage read without parsing the whole body, where it is the document's last member.

    Chat, completions and embeddings answers end with their top-level ``usage``: parsing that
    object alone costs a fraction of parsing the answer (the largest part of the relay's own work
    per request, bench/analysis.md). The match is exact: a ``"usage":`` outside any string is a
    key when what comes before it is ``{`` or ``,`` (a quote inside a string is escaped, so is
    preceded by a backslash), and what lies between it and the body's closing brace is that
    member's value when it parses as one JSON object, which at the end of the body makes it a
    member of the top-level object.
    Anything else (``response.usage``, ``"usage": null``, usage not last) gives None, and the
    caller parses the whole body as before.
    """
    start = body.rfind(b'"usage"')
    if start < 0:
        return None
    before = start - 1
    while before >= 0 and body[before] in _WHITESPACE:
        before -= 1
    if before < 0 or body[before] not in b"{,":
        return None
    member = _LAST_MEMBER.fullmatch(body, start)
    if member is None:
        return None
    value = member[1]
    try:
        usage = orjson.loads(value)
        if not _exact(usage):
            usage = json.loads(value)  # an integer past 64 bits: as json reads it
    except (ValueError, RecursionError):  # orjson's JSONDecodeError is a ValueError
        return None
    return reader(usage)


def _exact(value: dict[str, Any]) -> bool:
    """Whether an object orjson parsed holds no float, which may be an integer past 64 bits
    (orjson reads those as floats, json as they are written)."""
    for item in value.values():
        kind = type(item)
        if kind is dict:
            # A usage object's details (one level, in every API): looked at here, not by a call.
            for inner in item.values():
                inner_kind = type(inner)
                if inner_kind is float or inner_kind is list:
                    return False
                if inner_kind is dict and not _exact(inner):
                    return False
        elif kind is float or kind is list:
            return False
    return True


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
            return body_usage(self._buffer, self._reader)
        return _tail_usage(self._buffer, self._reader)


def _tail_usage(tail: bytes | bytearray, reader: UsageReader) -> Usage | None:
    """The last ``usage`` object in the tail of a body too large to parse whole."""
    found = _USAGE_OBJECT.findall(tail)
    if not found:
        return None
    try:
        return reader(json.loads(found[-1]))
    except ValueError:
        return None
