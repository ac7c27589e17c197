"""The Anthropic Messages API on its way through: which requests speak it, and its event stream.

A request speaks the Anthropic API when its path is ``/v1/messages`` or below it
(``/v1/messages/count_tokens``, batches), or when it carries an ``anthropic-version`` header (the
anthropic SDKs and Claude Code send one on every call, ``GET /v1/models`` included). Such
requests go to ``{anthropic_base_url}/...`` with the upstream key as ``x-api-key``, and the errors
sheepdog makes for them are Anthropic-shaped.

A stream (Anthropic's "Streaming Messages" documentation) is ``message_start`` (a ``Message``
with its ``usage``: input, cache reads and writes, and the first output count), then content
blocks (``content_block_start``, ``content_block_delta``..., ``content_block_stop``), then one or
more ``message_delta`` whose ``usage`` is cumulative, then ``message_stop``; ``ping`` events may
come anywhere, and an ``error`` event (``overloaded_error``, ...) may end it early. Usage is
merged as the anthropic SDK merges it: ``message_start``'s, each field then replaced by a
``message_delta``'s where that one has it. Time to first token is the first
``content_block_delta``. Events are told apart by their ``event:`` line, so only the two usage
events are ever parsed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from proxy.encoding import Decoder
from proxy.streaming import SseMeter
from proxy.tokens import anthropic_usage

__all__ = ["MESSAGES_PREFIX", "MessagesMeter", "speaks_anthropic"]

MESSAGES_PREFIX: Final = "/v1/messages"
_VERSION_HEADER: Final = "anthropic-version"
_EVENT_NAME: Final = re.compile(rb"^event:[ \t]*([A-Za-z_]+)", re.MULTILINE)
_DATA: Final = re.compile(rb"^data:[ ]?(.*)$", re.MULTILINE)


def speaks_anthropic(path: str, headers: Mapping[str, str]) -> bool:
    """Whether a request is an Anthropic API call (see the module)."""
    if path == MESSAGES_PREFIX or path.startswith(MESSAGES_PREFIX + "/"):
        return True
    return _VERSION_HEADER in headers


class MessagesMeter(SseMeter):
    """Meters one Messages stream: first content delta, merged usage, an error event."""

    __slots__ = ("_to_read", "_usage_fields")

    def __init__(self, *, monotonic: Callable[[], float], decoder: Decoder) -> None:
        super().__init__(drop_usage_only=False, monotonic=monotonic, decoder=decoder)
        self._usage_fields: dict[str, Any] = {}
        # Events with usage, parsed once the chunk that brought them has gone out: message_start
        # comes in the chunk with the first token, which would otherwise wait for its parse.
        self._to_read: list[tuple[bytes, bytes]] = []

    def _inspect(self, event: bytes) -> bool:
        match = _EVENT_NAME.search(event)
        if match is None:
            return True
        name = match.group(1)
        if name == b"content_block_delta":
            if self._first_token_at is None:
                self._first_token_at = self._arrived  # when the chunk bringing it arrived
        elif name in (b"message_start", b"message_delta"):
            self._to_read.append((name, event))
        elif name == b"error":
            self.stream_error = True
        return True

    def read_deferred(self) -> None:
        """Read the events with usage (the relay calls this once their chunk is written, and
        before it takes the usage)."""
        to_read = self._to_read
        if to_read:
            self._to_read = []
            for name, event in to_read:
                payload = _payload(event)
                if payload is None:
                    continue
                if name == b"message_start":
                    message = payload.get("message")
                    if isinstance(message, dict):
                        self._merge(message.get("usage"))
                else:
                    self._merge(payload.get("usage"))
        super().read_deferred()

    def _worth_reading(self, events: bytes) -> bool:
        # Usage arrives in message_start and message_delta; an error event marks the stream.
        return any(name != b"content_block_delta" for name in _EVENT_NAME.findall(events))

    def _merge(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        self._usage_fields.update({key: value for key, value in usage.items() if value is not None})
        merged = anthropic_usage(self._usage_fields)
        if merged is not None:
            self.usage = merged


def _payload(event: bytes) -> dict[str, Any] | None:
    data = b"\n".join(match.group(1).rstrip(b"\r") for match in _DATA.finditer(event))
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None
