"""Streaming as one client sees it: time to the first token and to the last chunk, per path.

The paths are interleaved request by request, so drift on the machine hits all of them alike.
(Many concurrent streams are driven by wrk: see ``bench/__main__.py``.) A stream is a chat
completion (:data:`CHAT`: the first chunk with content, then ``data: [DONE]``) or a Messages API
one (:data:`MESSAGES`: the first ``content_block_delta`` with text, then ``message_stop``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

from bench.stats import percentile
from tests.peers.pace import CHUNKS_HEADER, EVENT_DELAY_HEADER

# Bytes checks rather than a JSON parse per event: the client must cost as little as it can, since
# it shares the machine's cores with the servers it measures.
_CONTENT = re.compile(rb'"(?:content|text)"\s*:\s*"[^"]')
_USAGE_ONLY = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_TEXT = re.compile(rb'"text"\s*:\s*"[^"]')

Event = Literal["content", "usage", "other", "last", "none"]
"""What an event is to the client: content (its first one is the first token), a usage-only chunk,
another chunk, the stream's last event, or no chunk at all (an SSE comment)."""


def _chat_event(event: bytes) -> Event:
    """A chat completion chunk is ``data: {...}``; the last event ``data: [DONE]``."""
    if not event.startswith(b"data: "):
        return "none"
    payload = event[6:]
    if payload == b"[DONE]":
        return "last"
    if b'"usage"' in payload and _USAGE_ONLY.search(payload):
        return "usage"
    return "content" if _CONTENT.search(payload) else "other"


def _messages_event(event: bytes) -> Event:
    """A Messages API event is ``event: <type>`` then ``data: {...}``; the last ``message_stop``.
    Content is a ``content_block_delta`` with text (a thinking delta is not)."""
    if event.startswith(b"event: content_block_delta"):
        return "content" if _TEXT.search(event) else "other"
    if event.startswith(b"event: message_stop"):
        return "last"
    return "other" if event.startswith(b"event: ") else "none"


def chat_stream_body(model: str) -> bytes:
    """A streaming chat request, without ``stream_options``: what most clients send."""
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Count to twenty."}],
            "stream": True,
        }
    ).encode()


def messages_stream_body(model: str) -> bytes:
    """A streaming Messages API request (``max_tokens`` is required there)."""
    return json.dumps(
        {
            "model": model,
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "Count to twenty."}],
            "stream": True,
        }
    ).encode()


@dataclass(frozen=True)
class Api:
    """One API's streams: where they are asked for, with what body, and how to read an event."""

    path: str
    body: Callable[[str], bytes]
    read: Callable[[bytes], Event]


CHAT = Api("/v1/chat/completions", chat_stream_body, _chat_event)
MESSAGES = Api("/v1/messages", messages_stream_body, _messages_event)


@dataclass
class StreamTiming:
    ttft: float
    last: float
    chunks: int
    usage_chunks: int


@dataclass
class StreamStats:
    """Timings of many streams on one path. Times are in seconds."""

    ttft: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    errors: int = 0
    usage_leaks: int = 0
    chunks: int = 0

    def add(self, timing: StreamTiming) -> None:
        self.ttft.append(timing.ttft)
        self.last.append(timing.last)
        self.chunks = max(self.chunks, timing.chunks)
        if timing.usage_chunks:
            self.usage_leaks += 1

    def summary(self) -> dict[str, float]:
        return {
            "n": len(self.ttft),
            "ttft_p50": percentile(self.ttft, 50),
            "ttft_p99": percentile(self.ttft, 99),
            "last_p50": percentile(self.last, 50),
            "last_p99": percentile(self.last, 99),
            "errors": self.errors,
            "usage_leaks": self.usage_leaks,
        }


async def measure_stream(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    api: Api = CHAT,
) -> StreamTiming:
    """POST one stream of ``api`` and time its first content token and its last event."""
    started = time.perf_counter()
    ttft: float | None = None
    last: float | None = None
    chunks = usage_chunks = 0
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}: {(await response.text())[:200]}")
        buffer = b""
        async for data in response.content.iter_any():
            now = time.perf_counter()
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                kind = api.read(event)
                if kind == "none":
                    continue
                if kind == "last":
                    last = now - started
                    continue
                chunks += 1
                if kind == "usage":
                    usage_chunks += 1
                elif kind == "content" and ttft is None:
                    ttft = now - started
    if ttft is None or last is None:
        raise RuntimeError(f"{url}: stream ended without content or its last event")
    return StreamTiming(ttft, last, chunks, usage_chunks)


def _session(limit: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def sequential(
    paths: dict[str, tuple[str, dict[str, str], Api]],
    model: str,
    rounds: int,
    warmup: int = 5,
    chunk_delay_ms: float | None = None,
) -> dict[str, StreamStats]:
    """One stream at a time, path after path, ``rounds`` times. ``paths``: name → (the server's
    URL, headers, API).

    ``chunk_delay_ms`` asks the upstream for that pace of tokens instead of its default.
    """
    extra = {EVENT_DELAY_HEADER: f"{chunk_delay_ms:g}"} if chunk_delay_ms is not None else {}
    requests = {
        name: (f"{server}{api.path}", api.body(model), {**headers, **extra}, api)
        for name, (server, headers, api) in paths.items()
    }
    results = {name: StreamStats() for name in paths}
    async with _session() as session:
        for index in range(warmup + rounds):
            for name, (url, body, headers, api) in requests.items():
                try:
                    timing = await measure_stream(session, url, body, headers, api)
                except (aiohttp.ClientError, RuntimeError, TimeoutError):
                    if index >= warmup:
                        results[name].errors += 1
                    continue
                if index >= warmup:
                    results[name].add(timing)
    return results


def pace_headers(chunks: int, event_delay_ms: float) -> dict[str, str]:
    """Request headers asking the upstream for streams of ``chunks`` events this far apart."""
    return {CHUNKS_HEADER: str(chunks), EVENT_DELAY_HEADER: f"{event_delay_ms:g}"}
