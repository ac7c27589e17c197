"""Memory: sheepdog's resident set with many concurrent slow streams open, and after they end."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

import aiohttp

from bench.procs import ProcessGroup, peak_rss_bytes, rss_bytes
from bench.service import (
    client_headers,
    model_name,
    proxy_available,
    start_sheepdog,
    start_upstream,
    upstream_stats,
)
from bench.streaming import chat_stream_body, measure_stream


@dataclass
class MemoryResult:
    """RSS in bytes; ``after_rss`` has one figure per round of streams (a leak would grow)."""

    streams: int
    completed: int
    errors: int
    upstream_peak_streams: int
    stream_seconds: float
    idle_rss: int
    peak_rss: int
    after_rss: list[int]
    hwm_rss: int
    idle_fds: int
    peak_fds: int
    after_fds: int


async def _streams(url: str, count: int, ramp_seconds: float) -> tuple[int, int]:
    """Open ``count`` streams, started evenly over ``ramp_seconds``; returns (completed, errors)."""
    body = chat_stream_body(model_name(0))
    headers = client_headers(0)
    completed = errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(delay: float) -> None:
            nonlocal completed, errors
            await asyncio.sleep(delay)
            try:
                await measure_stream(session, url, body, headers)
                completed += 1
            except (aiohttp.ClientError, RuntimeError, TimeoutError):
                errors += 1

        await asyncio.gather(*(one(ramp_seconds * i / count) for i in range(count)))
    return completed, errors


def open_fds(pid: int) -> int:
    """Open file descriptors of ``pid``: its sockets, mostly."""
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class _Samples:
    rss: int = 0
    fds: int = 0


async def _sample(pid: int, peak: _Samples, stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak.rss = max(peak.rss, rss_bytes(pid))
        peak.fds = max(peak.fds, open_fds(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def _measure(
    pid: int, url: str, streams: int, rounds: int, warmup_streams: int, settle: float
) -> tuple[int, int, int, _Samples, list[int], int]:
    await _streams(url, warmup_streams, 0.0)
    await asyncio.sleep(settle)
    idle_rss, idle_fds = rss_bytes(pid), open_fds(pid)
    peak = _Samples(idle_rss, idle_fds)
    after: list[int] = []
    completed = errors = 0
    for _ in range(rounds):
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(pid, peak, stop))
        done, failed = await _streams(url, streams, ramp_seconds=1.0)
        stop.set()
        await sampler
        completed, errors = completed + done, errors + failed
        await asyncio.sleep(settle)
        after.append(rss_bytes(pid))
    return idle_rss, idle_fds, completed, peak, after, errors


def measure_memory(
    group: ProcessGroup,
    *,
    streams: int,
    rounds: int,
    chunks: int,
    chunk_delay_ms: float,
    settle: float,
) -> MemoryResult | str:
    """Run a slow upstream and a fresh sheepdog, and measure. A string says why it could not.

    The streams are opened ``rounds`` times, one round after the other: memory that is only
    retained (by the allocator, or the pool of idle upstream connections) stays flat from one
    round to the next, where a leak would grow.
    """
    upstream = start_upstream(group, "upstream-slow", chunks=chunks, event_delay_ms=chunk_delay_ms)
    sheepdog = start_sheepdog(group, "sheepdog-memory", f"{upstream.url}/v1")
    try:
        available, why = proxy_available(sheepdog)
        if not available:
            return f"sheepdog does not relay yet ({why})"
        url = f"{sheepdog.url}/v1/chat/completions"
        idle, idle_fds, completed, peak, after, errors = asyncio.run(
            _measure(sheepdog.pid, url, streams, rounds, warmup_streams=20, settle=settle)
        )
        hwm = peak_rss_bytes(sheepdog.pid)
        after_fds = open_fds(sheepdog.pid)
        upstream_peak = upstream_stats(upstream)["peak_streams"]
    finally:
        group.stop(sheepdog)
        group.stop(upstream)
    return MemoryResult(
        streams=streams,
        completed=completed,
        errors=errors,
        upstream_peak_streams=upstream_peak,
        stream_seconds=chunks * chunk_delay_ms / 1000,
        idle_rss=idle,
        peak_rss=peak.rss,
        after_rss=after,
        hwm_rss=hwm,
        idle_fds=idle_fds,
        peak_fds=peak.fds,
        after_fds=after_fds,
    )
