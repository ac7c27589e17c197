"""Whether a delivery attempt worked, is worth trying again, or never will.

Every notifier turns what came back (an HTTP status and body, an SMTP reply, an exception) into
a :class:`Verdict` and the worker acts on it. What is the same for every channel is here: the
HTTP statuses whoever answers them (:func:`classify_http_status`), exceptions, ``Retry-After``.
What a channel's answers mean (WeChat's errcodes, Slack's ``ok``) is in the channel's package.
The reason is a short word from :data:`REASONS` or the channel's own ``reasons``, a bounded set,
so it can be a metric label.
"""

from __future__ import annotations

import asyncio
import enum
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import aiohttp

__all__ = [
    "REASONS",
    "ErrcodeAnswer",
    "Outcome",
    "Verdict",
    "classify_exception",
    "classify_http_status",
    "clip",
    "http_detail",
    "parse_retry_after",
    "read_errcode_answer",
]


class Outcome(enum.Enum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str
    """One of :data:`REASONS`: short, stable, fit for a metric label."""
    detail: str = ""
    """For people: what the peer said. Never holds a URL or a key."""
    retry_after: float | None = None
    """Seconds the peer asked us to wait (``Retry-After``), if it said."""

    @property
    def retryable(self) -> bool:
        return self.outcome is Outcome.RETRY


REASONS: Final = (
    "rate_limited",
    "server_error",
    "system_busy",
    "bad_response",
    "timeout",
    "connection_error",
    "client_error",
    "invalid_key",
    "too_long",
    "tls_error",
    "template_error",
)
"""Reasons any channel may give; a channel adds its own in ``Channel.reasons``."""

# HTTP statuses worth another try whoever answers them; every other 4xx is final.
_RETRY_STATUSES: Final = {408: "timeout", 425: "rate_limited", 429: "rate_limited"}

_MAX_DETAIL: Final = 200


def classify_http_status(
    status: int, text: str, headers: Mapping[str, str] | None = None
) -> Verdict | None:
    """The verdict on ``status`` that holds whatever the channel: 5xx, 408, 425 and 429 are
    retried (honouring ``Retry-After``); None for the channel to decide on the body."""
    if status >= 500 or status in _RETRY_STATUSES:
        retry_after = parse_retry_after((headers or {}).get("Retry-After"))
        reason = "server_error" if status >= 500 else _RETRY_STATUSES[status]
        return Verdict(Outcome.RETRY, reason, http_detail(status, text), retry_after)
    return None


def classify_exception(exc: BaseException) -> Verdict:
    """Decide on an exception raised while sending (HTTP or SMTP).

    The detail names the exception's type only, plus a reply code where there is one: the
    text of a client library's exception may carry the URL, and the URL carries the key.
    """
    name = type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError | aiohttp.ClientConnectorCertificateError):
        return Verdict(Outcome.FAILED, "tls_error", f"{name}: the peer's certificate is untrusted")
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return Verdict(Outcome.RETRY, "timeout", name)
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return Verdict(Outcome.RETRY, "tls_error", name)
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return Verdict(Outcome.RETRY, "connection_error", name)
    if isinstance(exc, ConnectionError | OSError):
        return Verdict(Outcome.RETRY, "connection_error", f"{name}: {exc.strerror or ''}".strip())
    return Verdict(Outcome.RETRY, "connection_error", name)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def http_detail(status: int, text: str) -> str:
    """``HTTP 403: <what the peer said>`` on one line, clipped; the caller scrubs secrets."""
    return clip(f"HTTP {status}: {' '.join(text.split())}" if text.strip() else f"HTTP {status}")


def clip(text: str) -> str:
    """``text`` cut to a length fit for a log line and the outbox's last error."""
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


@dataclass(frozen=True, slots=True)
class ErrcodeAnswer:
    """A robot's ``{"errcode": N, "errmsg": "…"}`` answer with N other than 0: the channel
    decides what N means."""

    errcode: int
    errmsg: str
    detail: str
    """``errcode N: <errmsg>``, clipped, for the log and the outbox."""


def read_errcode_answer(
    status: int, body: bytes, headers: Mapping[str, str]
) -> Verdict | ErrcodeAnswer:
    """What the robots that answer HTTP 200 with an ``errcode`` whatever happened (WeChat Work,
    DingTalk) share: the HTTP statuses, a body that is not their answer, and errcode 0 are
    decided here; any other errcode is returned for the channel to decide."""
    text = body.decode("utf-8", "replace")
    shared = classify_http_status(status, text, headers)
    if shared is not None:
        return shared
    if not 200 <= status < 300:
        return Verdict(Outcome.FAILED, "client_error", http_detail(status, text))
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        answer = None
    errcode = answer.get("errcode") if isinstance(answer, dict) else None
    if not isinstance(errcode, int) or isinstance(errcode, bool):
        # Not the robot's answer (a proxy, a portal, a firewall page): the group may or may not
        # have the message, and losing it is worse than sending it twice.
        return Verdict(Outcome.RETRY, "bad_response", http_detail(status, text))
    if errcode == 0:
        return Verdict(Outcome.SENT, "ok")
    errmsg = str(answer.get("errmsg", "")) if isinstance(answer, dict) else ""
    return ErrcodeAnswer(errcode, errmsg, clip(f"errcode {errcode}: {errmsg}"))
