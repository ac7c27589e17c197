"""The relay: every ``/v1/*`` request goes to the upstream and its answer comes back as it arrives.

One request, in order: identify the client by its key (401), refuse paths that would leave /v1
upstream (400), read the body up to the limit (413), find the model and whether it streams,
check the month's budget and the client's per-minute limits (429, :mod:`proxy.limits`), send it
through the app's pooled session to the first upstream that serves the model and is not cooling
down (:mod:`proxy.upstreams`; 404 if none serves it), on to the next one if it fails before its
answer starts (502 unreachable, 504 no answer in time when it was the last), then pass status,
headers and body back unchanged, chunk by chunk, metering on the way. Whatever happens, the
request is counted once, in a ``finally``, with the status the client got (499 if it went away
first).

Failures after the response has started cannot change its status any more; the proxy then closes
the client's connection without ending the body properly, so the client sees a broken response
rather than a complete-looking short one (see ``llm_upstream_interrupted_total``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict

from proxy import errors
from proxy.clients import ANONYMOUS, Caller
from proxy.deadlines import Deadlines
from proxy.encoding import IDENTITY, decoder_for
from proxy.headers import client_response_headers, skipped_auto_headers, upstream_request_headers
from proxy.ledger import SpendLedger, month_bounds
from proxy.limits import RateLimiter
from proxy.messages import MessagesMeter, speaks_anthropic
from proxy.metrics import ProxyMetrics
from proxy.pricing import OTHER_MODEL, PriceBook, Usage
from proxy.request import Call, model_named, read_call
from proxy.settings import ProxySettings
from proxy.streaming import SseMeter
from proxy.tokens import UsageReader, anthropic_usage, openai_usage
from proxy.upstreams import (
    FAILOVER_STATUSES,
    Health,
    Upstream,
    UpstreamPool,
    retry_after_seconds,
)
from proxy.usage import BodyMeter, body_usage
from sheepdog.core.clock import Clock

__all__ = ["METERED_ROUTES", "Relay", "route_of"]

log = logging.getLogger("sheepdog.proxy")

_ROUTES: Final = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
}
OTHER_ROUTE: Final = "other"
METERED_ROUTES: Final = frozenset(_ROUTES.values())
CLIENT_CLOSED_REQUEST: Final = 499
# A body that is not an event stream and whose length is known up to this size is read whole and
# sent in one write with its headers: one system call instead of two, the largest single cost
# sheepdog had over a bare pass-through (see bench/RESULTS.md).
_WHOLE_BODY_LIMIT: Final = 1024 * 1024
_API_KEY: Final = "x-api-key"


def route_of(method: str, path: str) -> str:
    """The ``route`` label: the metered POST endpoints by name, anything else ``other``."""
    if method != hdrs.METH_POST:
        return OTHER_ROUTE
    return _ROUTES.get(path, OTHER_ROUTE)


def _escapes_v1(path: str) -> bool:
    """Whether ``path`` (decoded) has dot segments, which the upstream would resolve.

    ``/v1/../dashboard`` would otherwise reach the upstream's other APIs with the upstream key.
    """
    if "." not in path:
        return False  # the common case, without splitting the path
    return any(segment in (".", "..") for segment in path.replace("\\", "/").split("/"))


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole request body, or None if it is larger than ``limit`` bytes."""
    declared = request.content_length
    if declared is not None:
        return None if declared > limit else await request.read()
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _seconds_to_next_month(now: datetime) -> int:
    _, next_month = month_bounds(now)
    return max(1, int((next_month - now).total_seconds()))


@dataclass(slots=True)
class _Exchange:
    """One request's outcome, filled in as it goes and counted once at the end."""

    route: str
    anthropic: bool = False  # speaks the Anthropic API (proxy.messages.speaks_anthropic)
    model: str = OTHER_MODEL
    requested: str | None = None  # the name a client sent that resolved to "other"
    client: str = ANONYMOUS
    code: int = 500  # what aiohttp answers if the handler fails unexpectedly
    relayed: bool = False
    upstream_status: int | None = None
    sse: SseMeter | None = None
    body: BodyMeter | None = None
    # An uncompressed body read whole: its usage is read from it, without a meter's copy.
    whole_reader: UsageReader | None = None
    whole_usage: Usage | None = None
    response: web.StreamResponse | None = None  # once the answer has started to go out

    @property
    def errors(self) -> errors.ErrorShape:
        """The shape of the errors sheepdog answers this request with."""
        return errors.ANTHROPIC if self.anthropic else errors.OPENAI

    def usage(self) -> Usage | None:
        if self.sse is not None:
            self.sse.read_deferred()  # what it held back to read until its chunk had gone out
            return self.sse.usage
        if self.code != self.upstream_status:
            return None
        if self.body is not None:
            return self.body.usage()
        return self.whole_usage

    @property
    def usage_expected(self) -> bool:
        """Whether the upstream may bill for this request, so missing usage is worth counting."""
        if self.upstream_status is not None:
            return 200 <= self.upstream_status < 300
        # Given up on before the upstream answered: it may have done the work all the same.
        return self.code in (CLIENT_CLOSED_REQUEST, 504)


class Relay:
    """The ``/v1/*`` handler and what it needs; ``settings`` is swapped whole on reload."""

    def __init__(
        self,
        settings: ProxySettings,
        metrics: ProxyMetrics,
        ledger: SpendLedger,
        clock: Clock,
        limits: RateLimiter | None = None,
        upstreams: UpstreamPool | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ledger = ledger
        self.clock = clock
        self.limits = limits if limits is not None else RateLimiter(clock)
        self.upstreams = upstreams if upstreams is not None else UpstreamPool(settings.routes)
        self.session: aiohttp.ClientSession | None = None
        self.deadlines = Deadlines()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = self.clock.monotonic()
        settings = self.settings  # one config for the whole request, even across a reload
        exchange = _Exchange(route=route_of(request.method, request.path))
        headers = request.headers
        exchange.anthropic = speaks_anthropic(request.path, headers)
        shape = exchange.errors
        active = None
        try:
            caller = settings.clients.authenticate(
                headers.get(hdrs.AUTHORIZATION), headers.get(_API_KEY)
            )
            if not isinstance(caller, Caller):
                self.metrics.auth_failures.labels(caller).inc()
                exchange.code = 401
                return shape.missing_key() if caller == "missing_key" else shape.invalid_key()
            exchange.client = caller.name
            if _escapes_v1(request.path):
                exchange.code = 400
                return shape.path_not_relayed()

            body = await _read_body(request, settings.max_body_bytes)
            if body is None:
                exchange.code = 413
                return shape.body_too_large(settings.max_body_bytes)
            call = read_call(
                exchange.route,
                body,
                settings.prices,
                metered=exchange.route in METERED_ROUTES,
            )
            exchange.model = call.model
            exchange.requested = call.requested

            refusal = self._over_budget(caller, shape)
            if refusal is None and caller.rate_limited:
                refusal = self._over_rate(caller, shape)
            if refusal is not None:
                exchange.code = 429
                return refusal

            active = self.metrics.active_gauge(call.model)
            active.inc()
            return await self._relay(request, settings, call, exchange)
        except asyncio.CancelledError:
            exchange.code = CLIENT_CLOSED_REQUEST
            raise
        except ConnectionError:
            # The client went away while we read its body (handlers not cancelled on disconnect).
            exchange.code = CLIENT_CLOSED_REQUEST
            return web.Response(status=CLIENT_CLOSED_REQUEST)
        finally:
            if active is not None:
                active.dec()
            self._settle(exchange, settings.prices, started)

    def _over_budget(self, caller: Caller, shape: errors.ErrorShape) -> web.Response | None:
        budget = caller.monthly_budget_usd
        if budget is None or self.ledger.month_spend(caller.name) < budget:
            return None
        return shape.budget_exceeded(caller.name, budget, _seconds_to_next_month(self.clock.now()))

    def _over_rate(self, caller: Caller, shape: errors.ErrorShape) -> web.Response | None:
        refusal = self.limits.admit(caller)
        if refusal is None:
            return None
        self.metrics.rate_limited.labels(caller.name, refusal.limit).inc()
        return shape.rate_limited(refusal)

    async def _relay(
        self,
        request: web.Request,
        settings: ProxySettings,
        call: Call,
        exchange: _Exchange,
    ) -> web.StreamResponse:
        """Try the upstreams that serve the model in order, until one answers (see
        :mod:`proxy.upstreams`); that answer goes to the client."""
        assert self.session is not None, "the upstream session is opened at start-up"
        routes = settings.routes
        model = call.sent_model
        if model is None and not routes.every_model and exchange.route not in METERED_ROUTES:
            model = model_named(call.body)  # count_tokens and the like: routed by model too
        serving = routes.for_model(model)
        if not serving:
            exchange.code = 404
            return exchange.errors.model_not_served(model or "")
        candidates = (
            serving
            if len(serving) == 1  # the one upstream is tried whatever its health
            else self.upstreams.candidates(serving, self.clock.monotonic())
        )
        anthropic = exchange.anthropic
        # The client's own credentials never cross (proxy.headers); each attempt adds the key of
        # its upstream.
        headers = upstream_request_headers(request.headers, None, stream=call.stream)
        credential = _API_KEY if anthropic else hdrs.AUTHORIZATION
        exchange.relayed = True
        last = len(candidates) - 1
        for index, upstream in enumerate(candidates):
            key = upstream.key if anthropic else upstream.authorization
            if key is not None:
                headers[credential] = key.reveal()
            else:
                headers.popall(credential, None)
            answer = await self._try_in_time(
                request, upstream, call, headers, exchange, index < last
            )
            if isinstance(answer, str):
                self._fail_over(exchange, upstream, candidates[index + 1], answer)
                continue
            return answer
        raise AssertionError("the last upstream's outcome is returned")  # pragma: no cover

    async def _try_in_time(
        self,
        request: web.Request,
        upstream: Upstream,
        call: Call,
        headers: CIMultiDict[str],
        exchange: _Exchange,
        more: bool,
    ) -> web.StreamResponse | str:
        """:meth:`_try` within the upstream's ``timeout_seconds`` (proxy/deadlines.py): the
        answer the client gets; or, with ``more`` upstreams to go, why this one failed before its
        answer started (the next one is tried). Past the deadline before the answer, that is a
        timeout; after it began, a 504 or a cut stream."""
        health = self.upstreams.health(upstream)
        trial = False if health.up else health.begin(self.clock.monotonic())
        deadlines = self.deadlines
        deadline = deadlines.enter(upstream.timeout_seconds)
        try:
            answer = await self._try(request, upstream, health, call, headers, exchange, more)
        except asyncio.CancelledError:
            deadlines.leave(deadline)
            if not deadline.timed_out():
                if exchange.upstream_status is None:
                    health.abandoned(trial)  # the client went away: no verdict on the upstream
                raise
            if exchange.upstream_status is not None:  # its answer had begun
                return self._upstream_failed(request, exchange.response, exchange, "timeout")
            return self._no_answer(exchange, upstream, health, "timeout", more)
        except BaseException:
            deadlines.leave(deadline)
            if exchange.upstream_status is None:
                health.abandoned(trial)
            raise
        deadlines.leave(deadline)
        deadline.timed_out()  # due as it returned: the cancellation is taken back
        return answer

    async def _try(
        self,
        request: web.Request,
        upstream: Upstream,
        health: Health,
        call: Call,
        headers: CIMultiDict[str],
        exchange: _Exchange,
        more: bool,
    ) -> web.StreamResponse | str:
        """Send the request to ``upstream``; count the attempt, tell its health how it went,
        and pass its answer on unless it failed and ``more`` upstreams are left."""
        assert self.session is not None
        try:
            response = await self.session.request(
                request.method,
                upstream.url(request.raw_path, anthropic=exchange.anthropic),
                data=call.body or None,  # the same bytes for every attempt: read once
                headers=headers,
                skip_auto_headers=skipped_auto_headers(headers),
                allow_redirects=False,
                timeout=upstream.timeout,
            )
        except TimeoutError:  # aiohttp's own: a new connection not made in time
            return self._no_answer(exchange, upstream, health, "timeout", more)
        except (aiohttp.ClientError, OSError) as exc:
            return self._no_answer(exchange, upstream, health, "error", more, exc)
        status = response.status
        self.metrics.count_attempt(upstream.name, status)
        if status in FAILOVER_STATUSES:
            clock = self.clock
            health.failed(clock.monotonic(), retry_after_seconds(response.headers, clock.now()))
            if more:
                response.close()
                return str(status)
        else:
            health.succeeded()
        # The answer goes to the client from here, without more coroutines in between: each
        # level is resumed again at every read (bench/analysis.md).
        try:
            exchange.upstream_status = status
            if status in (401, 403):
                self.metrics.auth_failures.labels("upstream_rejected").inc()
            unchanged_length = self._meter(response, call, exchange)
            if unchanged_length is None:
                return await self._pass_back_whole(response, exchange)
            return await self._pass_back(request, response, exchange, unchanged_length)
        finally:
            # Closes the connection unless the body was read to the end (then it is reused).
            response.close()

    def _no_answer(
        self,
        exchange: _Exchange,
        upstream: Upstream,
        health: Health,
        outcome: str,
        more: bool,
        exc: BaseException | None = None,
    ) -> web.StreamResponse | str:
        """``upstream`` could not be reached (``error``) or did not answer in time
        (``timeout``): counted; the next one is tried, or the client gets a 502 or 504."""
        if outcome == "timeout":
            log.warning("upstream timed out", extra=_where(exchange, upstream))
        else:
            reason = _reason(exc) if exc is not None else outcome
            log.warning(
                "upstream unreachable", extra={**_where(exchange, upstream), "reason": reason}
            )
        self.metrics.count_attempt(upstream.name, outcome)
        health.failed(self.clock.monotonic())
        if more:
            return outcome
        if outcome == "timeout":
            exchange.code = 504
            return exchange.errors.upstream_timeout()
        exchange.code = 502
        return exchange.errors.upstream_unreachable()

    def _fail_over(
        self, exchange: _Exchange, failed: Upstream, following: Upstream, why: str
    ) -> None:
        log.warning(
            "trying the next upstream",
            extra={**_where(exchange, failed), "reason": why, "next": following.name},
        )
        self.metrics.upstream_failovers.labels(failed.name, following.name).inc()

    def _meter(
        self, upstream: aiohttp.ClientResponse, call: Call, exchange: _Exchange
    ) -> bool | None:
        """Set up metering of the answer; None when it is a body small enough to pass back
        whole, else whether its length stays as the upstream sent it (a stream changes when
        its usage-only event is taken out)."""
        headers = upstream.headers
        encoding = headers.get(hdrs.CONTENT_ENCODING)
        is_event_stream = _is_event_stream(headers.get(hdrs.CONTENT_TYPE))
        metered = exchange.route in METERED_ROUTES and exchange.usage_expected
        messages = exchange.route == "messages"
        reader = anthropic_usage if messages else openai_usage
        length = upstream.content_length
        whole = not is_event_stream and length is not None and length <= _WHOLE_BODY_LIMIT
        if whole and metered and encoding is None:
            # The most common answer: its usage is read from the body once it is read whole.
            exchange.whole_reader = reader
            return None
        decoder = decoder_for(encoding)
        # The usage-only chunk can only be taken out of a stream that is not compressed.
        drop_usage_only = call.drop_usage_only and (encoding or IDENTITY).lower() == IDENTITY
        sse: SseMeter | None = None
        if is_event_stream and metered and decoder is not None:
            if messages:
                sse = MessagesMeter(monotonic=self.clock.monotonic, decoder=decoder)
            else:
                sse = SseMeter(
                    drop_usage_only=drop_usage_only, monotonic=self.clock.monotonic, decoder=decoder
                )
            exchange.sse = sse
        elif metered and decoder is not None:
            exchange.body = BodyMeter(decoder, reader)
        if whole:
            return None
        return sse is None or not drop_usage_only

    async def _pass_back(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        exchange: _Exchange,
        unchanged_length: bool,
    ) -> web.StreamResponse:
        """Pass the answer on chunk by chunk as it arrives, metering on the way."""
        sse = exchange.sse
        body_meter = exchange.body
        response: web.StreamResponse | None = None
        chunks = upstream.content.iter_any()
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                chunk = b""
            except TimeoutError:
                return self._upstream_failed(request, response, exchange, "timeout")
            except (aiohttp.ClientError, OSError) as exc:
                return self._upstream_failed(request, response, exchange, "error", exc)
            if not chunk:
                break
            if body_meter is not None:
                body_meter.feed(chunk)
            out = sse.feed(chunk) if sse is not None else chunk
            if not out:
                continue
            try:
                if response is None:
                    response = await _start(request, upstream, unchanged_length, exchange)
                await response.write(out)
                if sse is not None:
                    sse.read_deferred()  # for the metric, once the chunk is on its way
            except ConnectionError:
                exchange.code = CLIENT_CLOSED_REQUEST
                return response or web.Response(status=CLIENT_CLOSED_REQUEST)
        try:
            tail = sse.finish() if sse is not None else b""
            if response is None:
                response = await _start(request, upstream, unchanged_length, exchange)
            if tail:
                await response.write(tail)
            await response.write_eof()
        except ConnectionError:
            exchange.code = CLIENT_CLOSED_REQUEST
            return response or web.Response(status=CLIENT_CLOSED_REQUEST)
        exchange.code = upstream.status
        return response

    async def _pass_back_whole(
        self, upstream: aiohttp.ClientResponse, exchange: _Exchange
    ) -> web.StreamResponse:
        """Read a small body whole, then send status, headers and body in one write."""
        try:
            body = await upstream.read()
        except TimeoutError:
            log.warning("upstream failed before answering", extra=_where(exchange))
            exchange.code = 504
            return exchange.errors.upstream_timeout()
        except (aiohttp.ClientError, OSError) as exc:
            details = {**_where(exchange), "reason": _reason(exc)}
            log.warning("upstream failed before answering", extra=details)
            exchange.code = 502
            return exchange.errors.upstream_unreachable()
        if exchange.whole_reader is not None:
            exchange.whole_usage = body_usage(body, exchange.whole_reader)
        elif exchange.body is not None:
            exchange.body.feed(body)
        exchange.code = upstream.status
        return web.Response(
            status=upstream.status,
            reason=upstream.reason,
            body=body,
            headers=client_response_headers(upstream.headers),
        )

    def _upstream_failed(
        self,
        request: web.Request,
        response: web.StreamResponse | None,
        exchange: _Exchange,
        reason: str,
        exc: BaseException | None = None,
    ) -> web.StreamResponse:
        details = {**_where(exchange), "reason": _reason(exc) if exc else "timed out"}
        if response is None or not response.prepared:
            # Nothing sent yet: the client can still get a proper error.
            log.warning("upstream failed before answering", extra=details)
            if reason == "timeout":
                exchange.code = 504
                return exchange.errors.upstream_timeout()
            exchange.code = 502
            return exchange.errors.upstream_unreachable()
        log.warning("upstream broke off the response", extra=details)
        self.metrics.upstream_interrupted.labels(exchange.model, exchange.route, reason).inc()
        exchange.code = response.status
        if request.transport is not None:
            request.transport.close()
        return response

    def _settle(self, exchange: _Exchange, prices: PriceBook, started: float) -> None:
        metrics = self.metrics
        model, route, client = exchange.model, exchange.route, exchange.client
        series = metrics.request_series(model, route, client)
        series.count(exchange.code)
        if not exchange.relayed:
            return
        series.observe_duration(self.clock.monotonic() - started)
        sse = exchange.sse
        if sse is not None:
            if sse.first_token_at is not None:
                metrics.time_to_first_token.labels(model).observe(sse.first_token_at - started)
            if sse.stream_error:
                metrics.upstream_interrupted.labels(model, route, "stream_error").inc()
        if route not in METERED_ROUTES:
            return
        usage = exchange.usage()
        usd = saved = 0.0
        if usage is not None:
            usd, saved = prices.charge(model, usage)
            series.count_usage(usage, usd, saved)
            self.limits.count_tokens(client, usage.input_tokens + usage.output_tokens)
        elif exchange.usage_expected:
            metrics.usage_missing.labels(model, route).inc()
        self.ledger.record(client, model, usage, usd, exchange.requested, saved)


async def _start(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    unchanged_length: bool,
    exchange: _Exchange,
) -> web.StreamResponse:
    """Send the upstream's status and headers to the client."""
    response = web.StreamResponse(
        status=upstream.status,
        reason=upstream.reason,
        headers=client_response_headers(upstream.headers),
    )
    if unchanged_length and upstream.content_length is not None:
        response.content_length = upstream.content_length
    exchange.response = response
    await response.prepare(request)
    return response


def _is_event_stream(content_type: str | None) -> bool:
    """Whether a Content-Type is ``text/event-stream`` (parameters and case aside), as aiohttp's
    ``content_type`` says, without the parse it does for it."""
    if content_type is None or content_type.startswith("application/json"):
        return False  # the usual answer, told without the parse
    return content_type.partition(";")[0].strip().lower() == "text/event-stream"


def _where(exchange: _Exchange, upstream: Upstream | None = None) -> dict[str, str]:
    where = {"route": exchange.route, "model": exchange.model, "client": exchange.client}
    if upstream is not None:
        where["upstream"] = upstream.name
    return where


def _reason(exc: BaseException) -> str:
    # aiohttp's messages name the host and port, never a header: safe to log.
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
