"""Server-sent events on their way through: time to first token, usage, the usage-only chunk.

Bytes are forwarded as they arrive. Events are found on their boundaries (a blank line: ``\\n\\n``,
``\\r\\n\\r\\n`` or ``\\r\\r``), whatever the chunking; only the incomplete event at the end of what
has arrived is ever held back, and only while the usage-only chunk has to be removed. Otherwise
every chunk goes out at once and events are read from a copy.

Time to first token is the moment the first content-bearing event has completely arrived from the
upstream (it is written to the client right after, and read for the metric only once it has gone
out, so that reading it does not delay it): a chat or completion chunk whose ``delta`` carries
anything besides ``role`` (content, reasoning, tool calls, refusal) or whose ``text`` is not
empty, or a Responses API event whose ``type`` ends in ``.delta``. Role-only openers, keep-alive
comments, ``[DONE]`` and usage chunks are not tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

from proxy import fastjson
from proxy.encoding import Decoder
from proxy.tokens import Usage
from proxy.usage import usage_from

__all__ = ["SseMeter"]

# A line ending followed by another one: atomic groups keep "\r\n" from counting as two endings.
_EVENT_END: Final = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")
_LINE_END: Final = re.compile(rb"\r\n|\r|\n")
_USAGE_KEY: Final = b'"usage"'
_NULL_USAGE: Final = re.compile(rb'"usage"\s*:\s*null')
# An event larger than this is forwarded unread rather than held back for ever.
_MAX_EVENT_BYTES: Final = 1024 * 1024
# Events held for the time to first token before they are read regardless (keep-alives, say).
_MAX_UNREAD: Final = 64


def _event_data(event: bytes) -> bytes:
    """The ``data`` field of one event: its ``data:`` lines joined by newlines."""
    lines = []
    for line in _LINE_END.split(event):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines)


def _carries_content(payload: dict[str, Any]) -> bool:
    event_type = payload.get("type")
    if isinstance(event_type, str):
        return event_type.endswith(".delta")
    choices = payload.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if choice.get("text"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and any(v for k, v in delta.items() if k != "role"):
            return True
    return False


class SseMeter:
    """Meters one event stream; with ``drop_usage_only`` it also removes the usage-only chunk.

    ``decoder`` decodes a compressed stream for reading; removal needs the stream as sent, so it
    is only asked for on an uncompressed one.
    """

    __slots__ = (
        "_arrived",
        "_decoder",
        "_drop_usage_only",
        "_first_token_at",
        "_monotonic",
        "_pending",
        "_scanned",
        "_unread",
        "stream_error",
        "usage",
    )

    def __init__(
        self, *, drop_usage_only: bool, monotonic: Callable[[], float], decoder: Decoder
    ) -> None:
        self._drop_usage_only = drop_usage_only
        self._monotonic = monotonic
        self._decoder = decoder
        self._pending = bytearray()
        self._scanned = 0  # bytes of _pending already searched for an event end
        self._first_token_at: float | None = None
        # Events that may be the first token, not read yet, and when their chunk arrived.
        self._unread: list[bytes] = []
        self._arrived = 0.0
        # The upstream reported an error inside the stream, after a 2xx status went out.
        self.stream_error = False
        self.usage: Usage | None = None

    @property
    def first_token_at(self) -> float | None:
        """When the first content-bearing event arrived (``monotonic``), if one has."""
        self.read_deferred()
        return self._first_token_at

    def read_deferred(self) -> None:
        """Read the events held for the time to first token; the relay calls this once the
        chunk that brought them has been written to the client."""
        unread = self._unread
        while unread and self._first_token_at is None:
            payload = _payload(unread.pop(0), fastjson.loads)
            if payload is not None and _carries_content(payload):
                self._first_token_at = self._arrived
        unread.clear()

    def feed(self, chunk: bytes) -> bytes:
        """Take the next chunk from the upstream; return what to send to the client now."""
        if self._first_token_at is None:
            self._arrived = self._monotonic()
        decoded = self._decoder.decode(chunk)
        if (
            not self._pending
            and self._first_token_at is not None
            and decoded.endswith(b"\n\n")
            and b"\r" not in decoded
            and not self._worth_reading(decoded)
        ):
            # Whole events and none to read (no usage in them, the first token already seen):
            # the usual chunk of a long stream goes on as it came, without being split up.
            return chunk
        self._pending += decoded
        if not self._drop_usage_only:
            self._consume_events(None)
            return chunk
        out = bytearray()
        self._consume_events(out)
        if len(self._pending) > _MAX_EVENT_BYTES:
            out += self._pending
            self._pending.clear()
            self._scanned = 0
        return bytes(out)

    def _worth_reading(self, events: bytes) -> bool:
        """Whether any of these whole events has to be read, once the first token is known:
        here, whether one carries usage that is not null."""
        return events.count(_USAGE_KEY) > len(_NULL_USAGE.findall(events))

    def finish(self) -> bytes:
        """The stream ended: an unterminated last event still held back goes out now."""
        if not self._pending:
            return b""
        event = bytes(self._pending)
        self._pending.clear()
        keep = self._inspect(event)
        return event if self._drop_usage_only and keep else b""

    def _consume_events(self, out: bytearray | None) -> None:
        pending = self._pending
        start = 0
        # An event end may straddle chunks: look again at the last 3 bytes already searched.
        position = max(0, self._scanned - 3)
        # Without a "\r" the only event end is "\n\n", which bytes.find finds far faster.
        lf_only = b"\r" not in pending
        while True:
            if lf_only:
                found = pending.find(b"\n\n", position)
                if found < 0:
                    break
                end = found + 2
            else:
                match = _EVENT_END.search(pending, position)
                if match is None:
                    break
                end = match.end()
                if end == len(pending) and pending.endswith(b"\r"):
                    break  # the "\r" may be the first half of a "\r\n": wait for the next byte

            event = bytes(pending[start:end])
            keep = self._inspect(event)
            if out is not None and keep:
                out += event
            start = position = end
        if start:
            del pending[:start]
        self._scanned = len(pending)
        if out is None and len(pending) > _MAX_EVENT_BYTES:
            pending.clear()
            self._scanned = 0

    def _inspect(self, event: bytes) -> bool:
        """Read what matters from one event; False if it is the usage-only chunk to remove."""
        want_first = self._first_token_at is None
        usage_keys = event.count(_USAGE_KEY)
        # Chunks other than the last carry "usage": null; skip parsing them once the first token
        # has been seen, so a long stream costs a substring search per event and nothing more.
        has_usage = usage_keys > 0 and usage_keys > len(_NULL_USAGE.findall(event))
        if not has_usage:
            if want_first:
                if len(self._unread) >= _MAX_UNREAD:
                    self.read_deferred()
                self._unread.append(event)  # read after it has gone out: see read_deferred
            return True
        payload = _payload(event, json.loads)  # token counts: exactly as sent
        if payload is None:
            return True
        if want_first:
            self.read_deferred()  # any earlier event is the first token rather than this one
            if self._first_token_at is None and _carries_content(payload):
                self._first_token_at = self._arrived
        usage = usage_from(payload)
        if usage is not None:
            # Some servers repeat a running total in several chunks: the last one counts.
            self.usage = usage
            if self._drop_usage_only and payload.get("choices") == []:
                return False
        return True


def _payload(event: bytes, loads: Callable[[bytes], Any]) -> dict[str, Any] | None:
    """The event's data as a JSON object, or None if it is not one."""
    data = _event_data(event)
    if not data.startswith(b"{"):
        return None
    try:
        payload = loads(data)
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None
