"""What the proxy reads from a request body, and the one change it makes to it.

Only three top-level members matter: ``model``, ``stream`` and ``stream_options``. Small bodies
are parsed with ``json.loads``. Bodies can also be 20 MiB of base64 images, and ``json.loads`` of
that holds the event loop for tens of milliseconds (every other stream waits meanwhile), so a
large body is not parsed whole: a scanner walks the top-level object, skips each value without
building it (strings with ``bytes.find``, nested values by their brackets), and parses only the
three values it needs. Its results are those of ``json.loads`` for any JSON object (duplicate keys
included: the last one counts); what it accepts beyond JSON the upstream rejects anyway.

Asking for the usage chunk inserts or replaces one member in place, so the client's bytes are
otherwise sent exactly as they came.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NamedTuple

from proxy import fastjson
from proxy.pricing import OTHER_MODEL, PriceBook

__all__ = ["Call", "Members", "model_named", "read_call", "top_level_members"]

_QUOTE: Final = ord('"')
_BACKSLASH: Final = ord("\\")
_OPENERS: Final = frozenset(b"{[")
_WHITESPACE: Final = re.compile(rb"[ \t\n\r]*")
_STRUCTURE: Final = re.compile(rb'["{}\[\]]')
_SCALAR_END: Final = re.compile(rb"[,}\]\s]")
_WANTED: Final = frozenset({"model", "stream", "stream_options"})
# Below this, json.loads is the faster way (the scanner's Python loop costs more per value).
_PARSE_WHOLE_LIMIT: Final = 64 * 1024
# Routes whose streams report usage only when asked with stream_options.include_usage.
_USAGE_OPTION_ROUTES: Final = frozenset({"chat", "completions"})


class _NotAnObject(ValueError):
    """The body is not a JSON object the scanner can walk."""


def _skip_string(body: bytes, start: int) -> int:
    """The index just after the string that opens at ``start``."""
    position = start + 1
    while True:
        quote = body.find(b'"', position)
        if quote < 0:
            raise _NotAnObject("unterminated string")
        backslashes = 0
        while body[quote - 1 - backslashes] == _BACKSLASH:
            backslashes += 1
        if backslashes % 2 == 0:
            return quote + 1
        position = quote + 1


def _skip_value(body: bytes, start: int) -> int:
    """The index just after the value that starts at ``start``."""
    if start >= len(body):
        raise _NotAnObject("value expected")
    first = body[start]
    if first == _QUOTE:
        return _skip_string(body, start)
    if first not in _OPENERS:
        match = _SCALAR_END.search(body, start)
        end = match.start() if match is not None else len(body)
        if end == start:
            raise _NotAnObject("value expected")
        return end
    depth = 0
    position = start
    while (match := _STRUCTURE.search(body, position)) is not None:
        character = body[match.start()]
        if character == _QUOTE:
            position = _skip_string(body, match.start())
            continue
        depth += 1 if character in _OPENERS else -1
        position = match.end()
        if depth == 0:
            return position
    raise _NotAnObject("unbalanced brackets")


def _skip_whitespace(body: bytes, position: int) -> int:
    match = _WHITESPACE.match(body, position)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _expect(body: bytes, position: int, character: bytes) -> int:
    position = _skip_whitespace(body, position)
    if body[position : position + 1] != character:
        raise _NotAnObject(f"{character!r} expected")
    return position + 1


class Members(NamedTuple):
    """Where things are in a body that is a JSON object."""

    inside: int  # the index just after the opening "{"
    spans: dict[str, tuple[int, int]]  # (start, end) of the value of each member found


def top_level_members(body: bytes, names: frozenset[str]) -> Members | None:
    """Where the values of the top-level members ``names`` are; None if not a JSON object."""
    try:
        position = _expect(body, 0, b"{")
        inside = position
        spans: dict[str, tuple[int, int]] = {}
        position = _skip_whitespace(body, position)
        if body[position : position + 1] == b"}":
            position += 1
        else:
            while True:
                key_start = _skip_whitespace(body, position)
                if body[key_start : key_start + 1] != b'"':
                    raise _NotAnObject("key expected")
                key_end = _skip_string(body, key_start)
                raw_key = body[key_start + 1 : key_end - 1]
                key = json.loads(body[key_start:key_end]) if b"\\" in raw_key else raw_key.decode()
                value_start = _skip_whitespace(body, _expect(body, key_end, b":"))
                value_end = _skip_value(body, value_start)
                if key in names:
                    spans[key] = (value_start, value_end)
                position = _skip_whitespace(body, value_end)
                separator = body[position : position + 1]
                position += 1
                if separator == b"}":
                    break
                if separator != b",":
                    raise _NotAnObject("',' or '}' expected")
        if _skip_whitespace(body, position) != len(body):
            raise _NotAnObject("trailing data")
    except (_NotAnObject, UnicodeDecodeError, ValueError, IndexError):
        return None
    return Members(inside, spans)


def _read_members(body: bytes) -> tuple[dict[str, Any], Members] | None:
    """The wanted members' values, and where to change ``stream_options``; None if not an object."""
    if len(body) <= _PARSE_WHOLE_LIMIT:
        # Every request comes this way: written for as few steps as the checks allow.
        inside = 1 if body[:1] == b"{" else _skip_whitespace(body, 0) + 1
        if body[inside - 1 : inside] != b"{":
            return None
        try:
            document = fastjson.loads(body)
            if type(document) is dict and "stream_options" in document:
                document = json.loads(body)  # its numbers are written back: exactly as sent
        except (ValueError, RecursionError):
            return None
        if type(document) is not dict:
            return None
        values: dict[str, Any] = {}
        for name in _WANTED:
            if name in document:
                values[name] = document[name]
        if "stream_options" not in values:
            return values, Members(inside, {})  # only a member to be replaced needs its place
        members = top_level_members(body, _WANTED)
        return None if members is None else (values, members)
    members = top_level_members(body, _WANTED)
    if members is None:
        return None
    try:
        values = {name: json.loads(body[start:end]) for name, (start, end) in members.spans.items()}
    except (ValueError, RecursionError):
        return None
    return values, members


class Call(NamedTuple):
    """What the proxy needs to know about a request, and the body to send upstream.

    A named tuple, made for every request: a frozen dataclass sets each field through
    ``object.__setattr__``, three times the cost.
    """

    model: str
    stream: bool
    drop_usage_only: bool
    body: bytes
    requested: str | None = None
    """The model name as sent, when it resolved to ``other`` (for the ledger's unpriced names)."""
    sent_model: str | None = None
    """The model name as sent, if the body named one (upstreams' ``models`` match it)."""


def read_call(route: str, body: bytes, prices: PriceBook, *, metered: bool) -> Call:
    """Read ``model`` and ``stream`` from a metered route's body; ask streams for usage."""
    if not metered or not body:
        return Call(OTHER_MODEL, False, False, body)
    found = _read_members(body)
    if found is None:
        # Not a JSON object: relayed as it is, for the upstream to say what is wrong with it.
        return Call(OTHER_MODEL, False, False, body)
    values, members = found
    sent = values.get("model")
    model = prices.label(sent)
    name = sent if isinstance(sent, str) else None
    requested = name if model == OTHER_MODEL else None
    stream = values.get("stream") is True
    options = values.get("stream_options")
    if not stream or route not in _USAGE_OPTION_ROUTES:
        return Call(model, stream, False, body, requested, name)
    if isinstance(options, dict) and options.get("include_usage") is True:
        return Call(model, stream, False, body, requested, name)
    if options is not None and not isinstance(options, dict):
        # Malformed: the upstream will say so.
        return Call(model, stream, False, body, requested, name)
    try:
        with_usage = _with_include_usage(body, members, options)
    except RecursionError:
        # Nested too deeply to write back: as it came.
        return Call(model, stream, False, body, requested, name)
    return Call(model, stream, True, with_usage, requested, name)


def model_named(body: bytes) -> str | None:
    """The ``model`` a body names, if it is a JSON object with a string ``model`` (for routing
    requests on routes that are not metered, such as ``/v1/messages/count_tokens``)."""
    found = _read_members(body) if body else None
    if found is None:
        return None
    model = found[0].get("model")
    return model if isinstance(model, str) else None


def _with_include_usage(body: bytes, members: Members, options: dict[str, Any] | None) -> bytes:
    """``body`` with ``stream_options.include_usage`` set: one member added or replaced."""
    view = memoryview(body)
    span = members.spans.get("stream_options")
    if span is None:
        member = b'"stream_options":{"include_usage":true},'
        return b"".join((view[: members.inside], member, view[members.inside :]))
    # ASCII with escapes: a string the client sent as an unpaired surrogate escape (valid JSON,
    # not encodable as UTF-8) goes back out as the same escape.
    merged = json.dumps({**(options or {}), "include_usage": True}, ensure_ascii=True)
    return b"".join((view[: span[0]], merged.encode("ascii"), view[span[1] :]))
