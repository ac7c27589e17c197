"""A fast local OpenAI-compatible upstream: what sheepdog, the pass-through and nginx relay to.

``POST /v1/chat/completions`` answers at once with a usage object, or, with ``"stream": true``,
streams ``--chunks`` SSE chunks ``--chunk-delay-ms`` apart, then the usage-only chunk when
``stream_options.include_usage`` is set, then ``[DONE]``, as OpenAI does; the request headers
``X-Bench-Chunks`` and ``X-Bench-Chunk-Delay-Ms`` override both for one stream (relays pass them
on). ``GET /v1/models`` lists a model. ``GET /bench/stats`` says how many streams were open at
once at most.

    python -m bench.upstream --port 9001 [--chunks 20] [--chunk-delay-ms 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

PROMPT_TOKENS = 12
COMPLETION_TEXT = "Hello from the bench upstream."
COMPLETION_TOKENS = 8


@dataclass
class Settings:
    chunks: int
    chunk_delay: float
    first_delay: float


@dataclass
class Stats:
    requests: int = 0
    streams: int = 0
    active_streams: int = 0
    peak_streams: int = 0


SETTINGS = web.AppKey("settings", Settings)
STATS = web.AppKey("stats", Stats)
_COMPLETIONS: dict[str, bytes] = {}


def _completion(model: str) -> bytes:
    cached = _COMPLETIONS.get(model)
    if cached is None:
        cached = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": COMPLETION_TEXT},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
            },
            separators=(",", ":"),
        ).encode()
        if len(_COMPLETIONS) < 1000:
            _COMPLETIONS[model] = cached
    return cached


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    event = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


def _usage_chunk(model: str, completion_tokens: int) -> bytes:
    event = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": completion_tokens,
            "total_tokens": PROMPT_TOKENS + completion_tokens,
        },
    }
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    stats = request.app[STATS]
    stats.requests += 1
    try:
        body = json.loads(await request.read())
    except ValueError:
        return web.json_response({"error": {"message": "not JSON", "type": "invalid"}}, status=400)
    model = str(body.get("model", "unknown"))
    if not body.get("stream"):
        return web.Response(body=_completion(model), content_type="application/json")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return await _stream(request, model, include_usage)


async def _stream(request: web.Request, model: str, include_usage: bool) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    stats = request.app[STATS]
    chunks = int(request.headers.get("X-Bench-Chunks", settings.chunks))
    delay_ms = request.headers.get("X-Bench-Chunk-Delay-Ms")
    chunk_delay = float(delay_ms) / 1000 if delay_ms is not None else settings.chunk_delay
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    stats.streams += 1
    stats.active_streams += 1
    stats.peak_streams = max(stats.peak_streams, stats.active_streams)
    try:
        await response.prepare(request)
        if settings.first_delay:
            await asyncio.sleep(settings.first_delay)
        for index in range(chunks):
            delta = (
                {"role": "assistant", "content": "Hello"}
                if index == 0
                else {"content": f" tok{index}"}
            )
            await response.write(_chunk(model, delta, None))
            if chunk_delay:
                await asyncio.sleep(chunk_delay)
        await response.write(_chunk(model, {}, "stop"))
        if include_usage:
            await response.write(_usage_chunk(model, chunks))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    finally:
        stats.active_streams -= 1
    return response


async def models(request: web.Request) -> web.Response:
    model = {"id": "bench-model-00", "object": "model", "owned_by": "bench"}
    return web.json_response({"object": "list", "data": [model]})


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def stats_handler(request: web.Request) -> web.Response:
    stats = request.app[STATS]
    return web.json_response(vars(stats))


async def reset_handler(request: web.Request) -> web.Response:
    stats = request.app[STATS]
    stats.requests = stats.streams = stats.peak_streams = 0
    stats.peak_streams = stats.active_streams
    return web.json_response(vars(stats))


def create_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[STATS] = Stats()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/bench/health", health)
    app.router.add_get("/bench/stats", stats_handler)
    app.router.add_post("/bench/reset", reset_handler)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--chunk-delay-ms", type=float, default=2.0)
    parser.add_argument("--first-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    settings = Settings(args.chunks, args.chunk_delay_ms / 1000, args.first_delay_ms / 1000)
    web.run_app(
        create_app(settings),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
