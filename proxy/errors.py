"""Errors the proxy itself answers with, shaped as the API the client speaks shapes them.

OpenAI routes: ``{"error": {"message", "type", "code"}}``; the Anthropic Messages API:
``{"type": "error", "error": {"type", "message"}}``. Either SDK turns these into its usual
exception classes (``AuthenticationError``, ``RateLimitError``, ...), and ``x-should-retry:
false`` tells both not to retry what a retry cannot fix. A rate limit is the one 4xx worth
retrying: it says so (``x-should-retry: true``) and when (``retry-after-ms``, which both SDKs
read first, and ``Retry-After``). No message ever echoes a key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from aiohttp import hdrs, web

from proxy.limits import LimitState, RateRefusal

__all__ = [
    "ANTHROPIC",
    "OPENAI",
    "ErrorShape",
    "anthropic_error_response",
    "body_too_large",
    "budget_exceeded",
    "error_response",
    "invalid_key",
    "missing_key",
    "model_not_served",
    "path_not_relayed",
    "rate_limited",
    "upstream_timeout",
    "upstream_unreachable",
]

_JSON: Final = "application/json"


def error_response(
    status: int,
    message: str,
    error_type: str,
    code: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An OpenAI-shaped error body with ``status``."""
    body = {"error": {"message": message, "type": error_type, "code": code}}
    return web.Response(
        status=status,
        body=json.dumps(body).encode("utf-8"),
        content_type=_JSON,
        headers=headers,
    )


# The openai SDKs retry 429 and 5xx unless told otherwise; none of these 4xx is worth a retry.
_NO_RETRY: Final = {"x-should-retry": "false"}
_CHALLENGE: Final = {hdrs.WWW_AUTHENTICATE: 'Bearer realm="sheepdog"', **_NO_RETRY}


def missing_key() -> web.Response:
    return error_response(
        401,
        "No API key provided. Send your sheepdog client key as 'Authorization: Bearer <key>' "
        "or 'x-api-key: <key>'.",
        "invalid_request_error",
        "missing_api_key",
        _CHALLENGE,
    )


def invalid_key() -> web.Response:
    return error_response(
        401,
        "Incorrect API key provided: it is not a client key of this proxy.",
        "invalid_request_error",
        "invalid_api_key",
        _CHALLENGE,
    )


def budget_exceeded(client: str, budget_usd: float, retry_after_seconds: int) -> web.Response:
    """429 until the month ends; ``Retry-After`` says when that is."""
    return error_response(
        429,
        f"Client {client!r} has used its monthly budget of ${budget_usd:,.2f} "
        "(calendar month, UTC). It resets at the start of next month.",
        "insufficient_quota",
        "budget_exceeded",
        {hdrs.RETRY_AFTER: str(retry_after_seconds), **_NO_RETRY},
    )


def _duration(seconds: float) -> str:
    """As OpenAI writes ``x-ratelimit-reset-*``: ``120ms``, ``1.5s``, ``6m0s``."""
    milliseconds = max(0, math.ceil(seconds * 1000))
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    minutes, rest = divmod(milliseconds, 60_000)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text


def _rate_limit_headers(refusal: RateRefusal) -> dict[str, str]:
    headers = {
        hdrs.RETRY_AFTER: str(max(1, math.ceil(refusal.retry_after))),
        # Both SDKs prefer this to Retry-After: the retry comes when the window allows, not a
        # whole second late.
        "retry-after-ms": str(max(1, math.ceil(refusal.retry_after * 1000))),
        "x-should-retry": "true",
    }
    for kind, state in (("requests", refusal.requests), ("tokens", refusal.tokens)):
        if state is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(state.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(state.remaining)
            headers[f"x-ratelimit-reset-{kind}"] = _duration(state.reset_seconds)
    return headers


def _rate_limit_message(refusal: RateRefusal) -> str:
    state = refusal.requests if refusal.limit == "requests" else refusal.tokens
    assert state is not None
    what = "requests per minute" if refusal.limit == "requests" else "tokens per minute"
    share = (
        " (by every sheepdog process: this one's share of what is left is spent)"
        if refusal.share_spent
        else ""
    )
    return (
        f"Rate limit reached for client {refusal.client!r} on {what}: limit {state.limit}, "
        f"used {state.used} in the last 60 s{share}. "
        f"Try again in {refusal.retry_after:.1f} s."
    )


def rate_limited(refusal: RateRefusal) -> web.Response:
    """429 over ``requests_per_minute`` or ``tokens_per_minute``, as OpenAI answers it (its
    ``type`` is the limit: ``requests`` or ``tokens``)."""
    return error_response(
        429,
        _rate_limit_message(refusal),
        refusal.limit,
        "rate_limit_exceeded",
        _rate_limit_headers(refusal),
    )


def model_not_served(model: str) -> web.Response:
    """404 when no configured upstream serves the model (their ``models`` globs)."""
    shown = model if len(model) <= 100 else model[:100] + "..."
    return error_response(
        404,
        f"The model {shown!r} is not served by any upstream of this proxy.",
        "invalid_request_error",
        "model_not_found",
        _NO_RETRY,
    )


def path_not_relayed() -> web.Response:
    return error_response(
        400,
        "Paths with '.' or '..' segments are not relayed: only /v1/* reaches the upstream.",
        "invalid_request_error",
        "invalid_path",
        _NO_RETRY,
    )


def body_too_large(limit_bytes: int) -> web.Response:
    return error_response(
        413,
        f"Request body is larger than this proxy accepts ({limit_bytes} bytes).",
        "invalid_request_error",
        "request_too_large",
        _NO_RETRY,
    )


def upstream_unreachable() -> web.Response:
    return error_response(
        502,
        "The upstream API could not be reached.",
        "server_error",
        "upstream_unreachable",
    )


def upstream_timeout() -> web.Response:
    return error_response(
        504,
        "The upstream API did not answer in time.",
        "server_error",
        "upstream_timeout",
    )


# --------------------------------------------------------------------------------------------
# The Anthropic shape, for /v1/messages (its types as Anthropic's API documents them).


def anthropic_error_response(
    status: int, message: str, error_type: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An Anthropic-shaped error body with ``status``."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return web.Response(
        status=status,
        body=json.dumps(body).encode("utf-8"),
        content_type=_JSON,
        headers=headers,
    )


def _anthropic(
    openai_error: Callable[..., web.Response], error_type: str
) -> Callable[..., web.Response]:
    """The Anthropic form of one OpenAI-shaped error: same status, message and headers."""

    def make(*args: object) -> web.Response:
        openai = openai_error(*args)
        assert isinstance(openai.body, bytes)
        message = json.loads(openai.body)["error"]["message"]
        headers = {
            key: value
            for key, value in openai.headers.items()
            if key.lower() not in ("content-type", "content-length")
        }
        return anthropic_error_response(openai.status, message, error_type, headers)

    return make


def _rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(math.ceil(moment), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _anthropic_rate_limited(refusal: RateRefusal) -> web.Response:
    """As Anthropic answers a rate limit: ``rate_limit_error``, ``anthropic-ratelimit-*``
    headers (when each limit is wholly available again, RFC 3339), and the OpenAI-style ones."""
    headers = _rate_limit_headers(refusal)
    states: tuple[tuple[str, LimitState | None], ...] = (
        ("requests", refusal.requests),
        ("tokens", refusal.tokens),
    )
    for kind, state in states:
        if state is not None:
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(state.limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(state.remaining)
            headers[f"anthropic-ratelimit-{kind}-reset"] = _rfc3339(
                refusal.at + state.reset_seconds
            )
    return anthropic_error_response(429, _rate_limit_message(refusal), "rate_limit_error", headers)


@dataclass(frozen=True)
class ErrorShape:
    """The errors sheepdog answers with, for one API."""

    missing_key: Callable[[], web.Response]
    invalid_key: Callable[[], web.Response]
    budget_exceeded: Callable[[str, float, int], web.Response]
    rate_limited: Callable[[RateRefusal], web.Response]
    model_not_served: Callable[[str], web.Response]
    path_not_relayed: Callable[[], web.Response]
    body_too_large: Callable[[int], web.Response]
    upstream_unreachable: Callable[[], web.Response]
    upstream_timeout: Callable[[], web.Response]


OPENAI: Final = ErrorShape(
    missing_key,
    invalid_key,
    budget_exceeded,
    rate_limited,
    model_not_served,
    path_not_relayed,
    body_too_large,
    upstream_unreachable,
    upstream_timeout,
)
ANTHROPIC: Final = ErrorShape(
    _anthropic(missing_key, "authentication_error"),
    _anthropic(invalid_key, "authentication_error"),
    _anthropic(budget_exceeded, "rate_limit_error"),
    _anthropic_rate_limited,
    _anthropic(model_not_served, "not_found_error"),
    _anthropic(path_not_relayed, "invalid_request_error"),
    _anthropic(body_too_large, "request_too_large"),
    _anthropic(upstream_unreachable, "api_error"),
    _anthropic(upstream_timeout, "timeout_error"),
)
