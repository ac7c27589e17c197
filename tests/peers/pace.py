"""What the local upstreams share for the benchmark: a stream's pace asked for by the request, and
the counters ``GET /peer/stats`` reads back.

The OpenAI-compatible upstream (:mod:`tests.peers.upstream`) and the Anthropic Messages API
(:mod:`tests.peers.anthropic`) run in one server and count into one :class:`Stats`, so a
benchmark counts chunks and waits for streams to end the same way whichever API it streams.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["CHUNKS_HEADER", "EVENT_DELAY_HEADER", "Stats", "content", "paced"]

CHUNKS_HEADER = "X-Upstream-Chunks"
"""Content events in the stream (the text in that many pieces)."""
EVENT_DELAY_HEADER = "X-Upstream-Event-Delay-Ms"
"""Milliseconds between a stream's events, the first content event being sent at once."""


def content(chunks: int) -> tuple[str, ...]:
    """``chunks`` pieces of text, one per content event."""
    return ("Hello", *(f" tok{index}" for index in range(1, chunks)))


def paced(headers: Mapping[str, str]) -> dict[str, Any]:
    """The changes to a script that a request's pace headers ask for (``content``,
    ``event_delay`` in seconds); none without them."""
    changes: dict[str, Any] = {}
    chunks = headers.get(CHUNKS_HEADER)
    if chunks is not None:
        changes["content"] = content(int(chunks))
    delay = headers.get(EVENT_DELAY_HEADER)
    if delay is not None:
        changes["event_delay"] = float(delay) / 1000
    return changes


@dataclass
class Stats:
    """What a benchmark reads back: requests answered, streams started, most open at once."""

    requests: int = 0
    streams: int = 0
    active_streams: int = 0
    peak_streams: int = 0
    events: int = 0  # stream events written, every kind

    @contextmanager
    def stream(self) -> Iterator[None]:
        """Count one stream as open while the block runs (it may end by a disconnect)."""
        self.streams += 1
        self.active_streams += 1
        self.peak_streams = max(self.peak_streams, self.active_streams)
        try:
            yield
        finally:
            self.active_streams -= 1
