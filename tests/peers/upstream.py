"""A local OpenAI-compatible upstream: a real HTTP server that answers as the OpenAI API does.

Each model name can be given a :class:`Script` saying how requests for it are answered: the text,
token counts, status, delays, compression, hanging, breaking off mid-stream. Everything received
(method, path, headers, body) and every byte sent is recorded, so tests can check what crossed
the proxy in each direction. Unscripted models get a plain successful answer.

Shapes follow the OpenAI API reference: ``chat.completion`` and ``chat.completion.chunk`` (with
``stream_options.include_usage``: ``"usage": null`` on every chunk, then a chunk with
``"choices": []`` and the usage before ``data: [DONE]``), legacy ``text_completion``, embeddings,
and Responses API events ending in ``response.completed`` (or ``response.incomplete``; no
``[DONE]``). Usage carries cached and reasoning tokens where scripted, in the shape of the
upstream being imitated (``usage_style``): OpenAI's ``*_tokens_details``; DeepSeek's
``prompt_cache_hit_tokens``; or Gemini's OpenAI-compatible endpoint, whose ``completion_tokens``
leaves thinking out (``total_tokens`` has it) and whose stream has a running usage in every chunk.
The Anthropic Messages API is served too, by :mod:`tests.peers.anthropic`.

The benchmark runs the same upstream in a process of its own (``python -m tests.peers.upstream
--port N``, see :func:`main`), without recording (``record=False``: a run relays hundreds of
thousands of requests). A request can pace its own stream with the headers
``X-Upstream-Chunks`` (content events) and ``X-Upstream-Event-Delay-Ms``, which relays pass on;
``GET /peer/stats`` counts requests, streams (the most open at once, too) and stream events. Both
(:mod:`tests.peers.pace`) hold for Messages API streams too.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from aiohttp import web
from multidict import CIMultiDict

from tests.peers.anthropic import AnthropicPeer, MessagesScript
from tests.peers.pace import Stats, content, paced

__all__ = ["FakeUpstream", "Received", "Script"]

WriteMode = Literal["per-event", "split", "batched"]
UsageStyle = Literal["openai", "deepseek", "gemini"]


@dataclass
class Script:
    """How the upstream answers requests for one model."""

    content: Sequence[str] = ("Hello", ", ", "world", "!")
    prompt_tokens: int = 12  # cached tokens included
    completion_tokens: int = 4  # reasoning tokens included
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    usage_style: UsageStyle = "openai"
    # Responses API: end with response.incomplete (max_output_tokens reached) instead.
    incomplete: bool = False
    status: int = 200
    # With an error status: the Retry-After header to send with it.
    retry_after: str | None = None
    # Report usage at all (a stream then never sends the usage chunk, a body has no "usage").
    usage: bool = True
    # Seconds to wait before answering, and between stream events.
    delay: float = 0.0
    event_delay: float = 0.0
    # Never answer: wait until the caller goes away.
    hang: bool = False
    # In a stream: after this many events, hang (before_hang) or cut the connection (break_after).
    hang_after_events: int | None = None
    break_after_events: int | None = None
    # Compress non-streamed bodies with gzip when the request accepts it.
    gzip: bool = False
    # per-event: one write per event; split: each event in two writes, cut mid-line;
    # batched: the whole stream in one write.
    write_mode: WriteMode = "per-event"
    line_ending: str = "\n"
    # A chat stream opens with a role-only event, as OpenAI's do; without it the first content
    # event carries the role and goes out at once (event_delay comes after it).
    role_opener: bool = True


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: CIMultiDict[str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeUpstream:
    scripts: dict[str, Script] = field(default_factory=dict)
    # The answer for models without a script of their own.
    default: Script = field(default_factory=Script)
    # Keep what was received and sent (tests read it); a benchmark turns this off.
    record: bool = True
    stats: Stats = field(default_factory=Stats)
    received: list[Received] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    active: int = 0
    disconnects: int = 0
    anthropic: AnthropicPeer = field(default_factory=AnthropicPeer)
    _runner: web.AppRunner | None = None
    _port: int = 0
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def open_connections(self) -> int:
        """TCP connections from callers that are open right now."""
        assert self._runner is not None and self._runner.server is not None
        return len(self._runner.server.connections)

    async def start(self, port: int = 0, backlog: int = 128) -> FakeUpstream:
        """Listen on ``port`` of loopback (0: any free one)."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/models", self._models)
        # Without recording (the bench), what it sends is not kept either.
        send = self.sent.append if self.record else _discard
        self.anthropic.add_routes(app, self._record, send, self.stats)
        app.router.add_get("/peer/stats", self._stats)
        # Cancelled on disconnect, so a caller going away is seen at once and counted.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port, backlog=backlog).start()
        self._port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def script(self, model: str, **changes: Any) -> Script:
        """Script answers for ``model``; returns the script."""
        self.scripts[model] = Script(**changes)
        return self.scripts[model]

    # ----------------------------------------------------------------------------------------
    # Handlers

    async def _record(self, request: web.Request) -> tuple[Received, Any]:
        body = await request.read()
        received = Received(
            request.method, request.path, request.query_string, CIMultiDict(request.headers), body
        )
        if self.record:
            self.received.append(received)
        try:
            payload = json.loads(body) if body else {}
        except (ValueError, RecursionError):
            payload = {}
        return received, payload if isinstance(payload, dict) else {}

    async def _answer(self, request: web.Request, kind: str) -> web.StreamResponse:
        self.active += 1
        try:
            _, payload = await self._record(request)
            self.stats.requests += 1
            script = self._script_for(request, payload)
            if script.delay:
                await asyncio.sleep(script.delay)
            if script.hang:
                await asyncio.Event().wait()
            if script.status != 200:
                return self._error(script.status, script.retry_after)
            if payload.get("stream") is True:
                events = self._events(kind, payload, script)
                with self.stats.stream():
                    return await self._stream(request, events, script)
            return self._json(request, self._body(kind, payload, script), script)
        except (asyncio.CancelledError, ConnectionError):
            self.disconnects += 1
            raise
        finally:
            self.active -= 1

    def _script_for(self, request: web.Request, payload: dict[str, Any]) -> Script:
        script = self.scripts.get(str(payload.get("model")), self.default)
        changes = paced(request.headers)
        return replace(script, **changes) if changes else script

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.stats))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "completions")

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "embeddings")

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "responses")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        body = {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 1700000000, "owned_by": "upstream"}
                for name in ("gpt-4.1", "deepseek-v3.2", "text-embedding-3-small")
            ],
        }
        return self._send(
            web.Response(body=json.dumps(body).encode(), content_type="application/json")
        )

    # ----------------------------------------------------------------------------------------
    # Bodies

    def _error(self, status: int, retry_after: str | None = None) -> web.Response:
        codes = {401: "invalid_api_key", 403: "forbidden", 429: "rate_limit_exceeded"}
        body = {
            "error": {
                "message": f"upstream says {status}",
                "type": "invalid_request_error" if status < 500 else "server_error",
                "code": codes.get(status, "server_error"),
            }
        }
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        return self._send(
            web.Response(
                status=status,
                body=json.dumps(body).encode(),
                content_type="application/json",
                headers=headers,
            )
        )

    def _usage(self, kind: str, script: Script, completed: int | None = None) -> dict[str, Any]:
        """The usage object; ``completed``: output tokens so far (a running usage)."""
        output = script.completion_tokens if completed is None else completed
        total = script.prompt_tokens + output
        if kind == "responses":
            return {
                "input_tokens": script.prompt_tokens,
                "input_tokens_details": {"cached_tokens": script.cached_tokens},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": script.reasoning_tokens},
                "total_tokens": total,
            }
        if kind == "embeddings":
            return {"prompt_tokens": script.prompt_tokens, "total_tokens": script.prompt_tokens}
        if script.usage_style == "gemini":
            # Thinking is counted in total_tokens only.
            usage: dict[str, Any] = {
                "prompt_tokens": script.prompt_tokens,
                "completion_tokens": max(0, output - script.reasoning_tokens),
                "total_tokens": total,
            }
            if script.cached_tokens:
                usage["prompt_tokens_details"] = {"cached_tokens": script.cached_tokens}
            return usage
        usage = {
            "prompt_tokens": script.prompt_tokens,
            "completion_tokens": output,
            "total_tokens": total,
        }
        if script.usage_style == "deepseek":
            usage["prompt_cache_hit_tokens"] = script.cached_tokens
            usage["prompt_cache_miss_tokens"] = script.prompt_tokens - script.cached_tokens
        else:
            usage["prompt_tokens_details"] = {"cached_tokens": script.cached_tokens}
        usage["completion_tokens_details"] = {"reasoning_tokens": script.reasoning_tokens}
        return usage

    def _body(self, kind: str, payload: dict[str, Any], script: Script) -> dict[str, Any]:
        model = payload.get("model", "")
        text = "".join(script.content)
        number = next(self._ids)
        body: dict[str, Any]
        if kind == "chat":
            body = {
                "id": f"chatcmpl-{number}",
                "object": "chat.completion",
                "created": 1700000000,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
            }
        elif kind == "completions":
            body = {
                "id": f"cmpl-{number}",
                "object": "text_completion",
                "created": 1700000000,
                "model": model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            }
        elif kind == "embeddings":
            inputs = payload.get("input", "")
            count = len(inputs) if isinstance(inputs, list) else 1
            body = {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.25, -0.5, 0.125]}
                    for i in range(count)
                ],
                "model": model,
            }
        else:
            body = self._response_object(number, model, text, "completed")
        if script.usage:
            body["usage"] = self._usage(kind, script)
        return body

    def _response_object(self, number: int, model: str, text: str, status: str) -> dict[str, Any]:
        output = []
        if status in ("completed", "incomplete"):
            output = [
                {
                    "type": "message",
                    "id": f"msg_{number}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ]
        return {
            "id": f"resp_{number}",
            "object": "response",
            "created_at": 1700000000,
            "status": status,
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": None,
            **(
                {"incomplete_details": {"reason": "max_output_tokens"}}
                if status == "incomplete"
                else {}
            ),
        }

    def _events(self, kind: str, payload: dict[str, Any], script: Script) -> list[bytes]:
        """The whole event stream for one request, event by event."""
        model = payload.get("model", "")
        number = next(self._ids)
        end = script.line_ending
        events: list[bytes] = []

        def data(obj: Any, event: str | None = None) -> None:
            head = f"event: {event}{end}" if event else ""
            events.append(f"{head}data: {json.dumps(obj)}{end}{end}".encode())

        if kind == "responses":
            response = self._response_object(number, model, "", "in_progress")
            data(
                {"type": "response.created", "sequence_number": 0, "response": response},
                "response.created",
            )
            for index, piece in enumerate(script.content, start=1):
                data(
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": index,
                        "item_id": f"msg_{number}",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": piece,
                    },
                    "response.output_text.delta",
                )
            status = "incomplete" if script.incomplete else "completed"
            done = self._response_object(number, model, "".join(script.content), status)
            if script.usage:
                done["usage"] = self._usage(kind, script)
            data(
                {
                    "type": f"response.{status}",
                    "sequence_number": len(script.content) + 1,
                    "response": done,
                },
                f"response.{status}",
            )
            return events

        options = payload.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        chat = kind == "chat"
        base = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{number}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": 1700000000,
            "model": model,
        }
        extra = {"usage": None} if include_usage else {}

        def choice(piece: str | None, finish: str | None) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {} if piece is None else {"content": piece}
                if piece == "":
                    delta["role"] = "assistant"
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}

        gemini = script.usage_style == "gemini" and script.usage
        pieces = len(script.content)

        def running(done: int) -> dict[str, Any]:
            # Gemini: a running usage in every chunk, whether asked for or not.
            if not gemini:
                return extra
            return {"usage": self._usage(kind, script, script.completion_tokens * done // pieces)}

        if chat and script.role_opener:
            data({**base, "choices": [choice("", None)], **running(0)})
        for index, piece in enumerate(script.content, start=1):
            content = choice(piece, None)
            if chat and index == 1 and not script.role_opener:
                content["delta"]["role"] = "assistant"
            data({**base, "choices": [content], **running(index)})
        data({**base, "choices": [choice(None, "stop")], **running(pieces)})
        if include_usage and script.usage and not gemini:
            data({**base, "choices": [], "usage": self._usage(kind, script)})
        events.append(f"data: [DONE]{end}{end}".encode())
        return events

    # ----------------------------------------------------------------------------------------
    # Sending

    def _send(self, response: web.Response) -> web.Response:
        assert isinstance(response.body, bytes)
        if self.record:
            self.sent.append(response.body)
        return response

    def _json(self, request: web.Request, body: dict[str, Any], script: Script) -> web.Response:
        raw = json.dumps(body).encode()
        response = web.Response(body=raw, content_type="application/json")
        if script.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            response.body = gzip.compress(raw)
            response.headers["Content-Encoding"] = "gzip"
        return self._send(response)

    async def _stream(
        self, request: web.Request, events: list[bytes], script: Script
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)
        sent = bytearray()
        record = self.record
        if record:
            self.sent.append(b"")
        if script.write_mode == "batched":
            events = [b"".join(events)]
        for index, event in enumerate(events):
            if script.break_after_events is not None and index == script.break_after_events:
                assert request.transport is not None
                request.transport.close()
                if record:
                    self.sent[-1] = bytes(sent)
                return response
            if script.hang_after_events is not None and index == script.hang_after_events:
                await asyncio.Event().wait()
            if index and script.event_delay:
                await asyncio.sleep(script.event_delay)
            if script.write_mode == "split":
                # Cut inside the event, so that it reaches the proxy in two reads.
                middle = len(event) // 2
                await response.write(event[:middle])
                await asyncio.sleep(0.002)
                await response.write(event[middle:])
            else:
                await response.write(event)
            self.stats.events += 1
            if record:
                sent += event
                self.sent[-1] = bytes(sent)
        await response.write_eof()
        return response


def _discard(body: bytes) -> None:
    pass


async def _serve(args: argparse.Namespace) -> None:
    text, delay = content(args.chunks), args.event_delay_ms / 1000
    default = Script(content=text, event_delay=delay, role_opener=not args.no_role_opener)
    # Messages API streams at the same pace.
    anthropic = AnthropicPeer(default=MessagesScript(content=text, event_delay=delay))
    upstream = FakeUpstream(default=default, record=False, anthropic=anthropic)
    await upstream.start(args.port, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await upstream.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.peers.upstream --port N``: the upstream in a process of its own."""
    parser = argparse.ArgumentParser(description="A local OpenAI-compatible upstream.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--chunks", type=int, default=20, help="content events per stream (both APIs)"
    )
    parser.add_argument("--event-delay-ms", type=float, default=2.0, help="between events")
    parser.add_argument(
        "--no-role-opener",
        action="store_true",
        help="no role-only first event: the first content event goes out at once",
    )
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
