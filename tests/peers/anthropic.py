"""A local Anthropic Messages API, served by :class:`tests.peers.upstream.FakeUpstream` beside the
OpenAI one (relays such as HolySheep serve both under one ``/v1``).

It answers as Anthropic's API reference and "Streaming Messages" guide say:

- ``POST /v1/messages`` needs ``x-api-key`` (else 401 ``authentication_error``) and
  ``anthropic-version`` (else 400 ``invalid_request_error``); errors are
  ``{"type": "error", "error": {"type", "message"}}`` with a ``request-id`` header, 529 being
  ``overloaded_error``.
- A body is a ``Message`` whose ``usage`` has ``input_tokens`` (not counting the cache),
  ``cache_creation_input_tokens``, ``cache_read_input_tokens``, ``cache_creation`` (5-minute and
  1-hour writes) and ``output_tokens`` (with ``output_tokens_details.thinking_tokens``).
- A stream is ``message_start`` (the usage so far, ``output_tokens`` 1), ``content_block_start``,
  ``ping``, a ``thinking`` block when scripted, the text's ``content_block_delta`` events,
  ``content_block_stop``, ``message_delta`` with the *cumulative* usage, ``message_stop``; or, when
  scripted, an ``error`` event (``overloaded_error``) after some events, ending the stream.
- ``POST /v1/messages/count_tokens`` answers ``{"input_tokens": N}``.

A stream's events up to its first ``content_block_delta`` go out at once, then one every
``event_delay``; the pace headers of :mod:`tests.peers.pace` set the deltas and the delay, and
requests, streams and events are counted in the server's :class:`~tests.peers.pace.Stats`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from tests.peers.pace import Stats, paced

__all__ = ["AnthropicPeer", "MessagesScript"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class MessagesScript:
    """How the Messages API answers requests for one model."""

    content: Sequence[str] = ("Hello", ", ", "world", "!")
    thinking: Sequence[str] = ()
    input_tokens: int = 25  # not counting cache reads and writes
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 15
    thinking_tokens: int = 0
    status: int = 200
    # In a stream: after this many events, an error event ends it (overloaded_error).
    error_after_events: int | None = None
    # Between events, from the first content delta on (everything before it goes at once).
    event_delay: float = 0.0


_DELTA = b"event: content_block_delta"

Record = Callable[[web.Request], Awaitable[tuple[Any, dict[str, Any]]]]
Send = Callable[[bytes], None]


@dataclass
class AnthropicPeer:
    scripts: dict[str, MessagesScript] = field(default_factory=dict)
    # The answer for models without a script of their own.
    default: MessagesScript = field(default_factory=MessagesScript)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def script(self, model: str, **changes: Any) -> MessagesScript:
        """Script answers for ``model``; returns the script."""
        self.scripts[model] = MessagesScript(**changes)
        return self.scripts[model]

    def add_routes(self, app: web.Application, record: Record, send: Send, stats: Stats) -> None:
        """Serve the Messages API on ``app``; ``record`` and ``send`` keep what crossed, ``stats``
        counts it."""

        async def messages(request: web.Request) -> web.StreamResponse:
            _, payload = await record(request)
            stats.requests += 1
            refusal = _check_headers(request)
            if refusal is not None:
                return _sent(refusal, send)
            script = self._script_for(request, payload)
            if script.status != 200:
                return _sent(_error(script.status, f"upstream says {script.status}"), send)
            if payload.get("stream") is True:
                with stats.stream():
                    return await self._stream(request, payload, script, send, stats)
            body = json.dumps(self._message(payload, script, final=True)).encode()
            return _sent(web.Response(body=body, content_type="application/json"), send)

        async def count_tokens(request: web.Request) -> web.StreamResponse:
            _, payload = await record(request)
            stats.requests += 1
            refusal = _check_headers(request)
            if refusal is not None:
                return _sent(refusal, send)
            script = self._script_for(request, payload)
            body = json.dumps({"input_tokens": script.input_tokens}).encode()
            return _sent(web.Response(body=body, content_type="application/json"), send)

        app.router.add_post("/v1/messages", messages)
        app.router.add_post("/v1/messages/count_tokens", count_tokens)

    def _script_for(self, request: web.Request, payload: dict[str, Any]) -> MessagesScript:
        script = self.scripts.get(str(payload.get("model")), self.default)
        changes = paced(request.headers)
        return replace(script, **changes) if changes else script

    def _usage(self, script: MessagesScript, output_tokens: int) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "input_tokens": script.input_tokens,
            "cache_creation_input_tokens": script.cache_write_5m_tokens
            + script.cache_write_1h_tokens,
            "cache_read_input_tokens": script.cache_read_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": script.cache_write_5m_tokens,
                "ephemeral_1h_input_tokens": script.cache_write_1h_tokens,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }
        if script.thinking_tokens:
            usage["output_tokens_details"] = {"thinking_tokens": script.thinking_tokens}
        return usage

    def _message(
        self, payload: dict[str, Any], script: MessagesScript, *, final: bool
    ) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if final:
            if script.thinking:
                content.append(
                    {"type": "thinking", "thinking": "".join(script.thinking), "signature": "sig"}
                )
            content.append({"type": "text", "text": "".join(script.content)})
        return {
            "id": f"msg_{next(self._ids):024d}",
            "type": "message",
            "role": "assistant",
            "model": payload.get("model", ""),
            "content": content,
            "stop_reason": "end_turn" if final else None,
            "stop_sequence": None,
            "usage": self._usage(script, script.output_tokens if final else 1),
        }

    def _events(self, payload: dict[str, Any], script: MessagesScript) -> list[bytes]:
        events: list[bytes] = []

        def event(name: str, data: dict[str, Any]) -> None:
            events.append(f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode())

        event("message_start", {"message": self._message(payload, script, final=False)})
        index = 0
        if script.thinking:
            event(
                "content_block_start",
                {
                    "index": 0,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
            )
            for piece in script.thinking:
                event(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "thinking_delta", "thinking": piece}},
                )
            event(
                "content_block_delta",
                {"index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
            )
            event("content_block_stop", {"index": 0})
            index = 1
        text_block = {"type": "text", "text": ""}
        event("content_block_start", {"index": index, "content_block": text_block})
        event("ping", {})
        for piece in script.content:
            event(
                "content_block_delta",
                {"index": index, "delta": {"type": "text_delta", "text": piece}},
            )
        event("content_block_stop", {"index": index})
        # Cumulative usage, as the API now sends it (input and cache counts included).
        usage = self._usage(script, script.output_tokens)
        usage.pop("cache_creation")
        usage.pop("service_tier")
        event(
            "message_delta",
            {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": usage},
        )
        event("message_stop", {})
        return events

    async def _stream(
        self,
        request: web.Request,
        payload: dict[str, Any],
        script: MessagesScript,
        send: Send,
        stats: Stats,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "request-id": "req_peer"}
        )
        await response.prepare(request)
        sent = bytearray()
        events = self._events(payload, script)
        if script.error_after_events is not None:
            overloaded = {"type": "overloaded_error", "message": "Overloaded"}
            error = {"type": "error", "error": overloaded}
            events = [
                *events[: script.error_after_events],
                f"event: error\ndata: {json.dumps(error)}\n\n".encode(),
            ]
        # The first content delta goes out with what precedes it, at once: time to first token
        # is then the relay's own.
        deltas = (i for i, chunk in enumerate(events) if chunk.startswith(_DELTA))
        first_delta = next(deltas, len(events))
        for index, chunk in enumerate(events):
            if index > first_delta and script.event_delay:
                await asyncio.sleep(script.event_delay)
            await response.write(chunk)
            stats.events += 1
            sent += chunk
        send(bytes(sent))
        await response.write_eof()
        return response


def _check_headers(request: web.Request) -> web.Response | None:
    if not request.headers.get("x-api-key"):
        return _error(401, "x-api-key header is required")
    if not request.headers.get("anthropic-version"):
        return _error(400, "anthropic-version: header is required")
    return None


def _error(status: int, message: str) -> web.Response:
    error = {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}
    body = {"type": "error", "error": error}
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers={"request-id": "req_peer"},
    )


def _sent(response: web.Response, send: Send) -> web.Response:
    assert isinstance(response.body, bytes)
    send(response.body)
    return response
