"""Errors the proxy itself answers with, shaped as the OpenAI API shapes them.

``{"error": {"message", "type", "code"}}``: the openai SDKs turn these into their usual exception
classes (``AuthenticationError``, ``RateLimitError``, ...). No message ever echoes a key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from aiohttp import hdrs, web

__all__ = [
    "body_too_large",
    "budget_exceeded",
    "error_response",
    "invalid_key",
    "missing_key",
    "path_not_relayed",
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
        "No API key provided. Send your sheepdog client key as 'Authorization: Bearer <key>'.",
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
