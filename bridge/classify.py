"""Whether a delivery attempt worked, is worth trying again, or never will: one decision, here.

Every notifier hands what came back (an HTTP status and body, an SMTP reply code, an exception)
to a function of this module and acts on the :class:`Verdict`. The reason is a short word from
:data:`REASONS`, a bounded set, so it can be a metric label.
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
    "Outcome",
    "Verdict",
    "classify_exception",
    "classify_response",
    "classify_smtp_reply",
    "parse_retry_after",
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
    "errcode",
    "invalid_payload",
    "forbidden",
    "channel_not_found",
    "channel_archived",
    "auth_failed",
    "smtp_transient",
    "smtp_permanent",
    "tls_error",
    "template_error",
)

# WeChat Work answers HTTP 200 even on failure; the errcode says what happened.
_WECHAT_RETRY_ERRCODES: Final = {-1: "system_busy", 45009: "rate_limited"}
_WECHAT_FAIL_ERRCODES: Final = {93000: "invalid_key", 40058: "too_long"}

# Slack incoming webhooks name the error in a plain-text body.
_SLACK_BODY_REASONS: Final = {
    "invalid_payload": "invalid_payload",
    "invalid_blocks": "invalid_payload",
    "no_text": "invalid_payload",
    "too_many_attachments": "invalid_payload",
    "action_prohibited": "forbidden",
    "invalid_token": "forbidden",
    "no_service": "forbidden",
    "channel_not_found": "channel_not_found",
    "channel_is_archived": "channel_archived",
}

# HTTP statuses worth another try whoever answers them; every other 4xx is final.
_RETRY_STATUSES: Final = {408: "timeout", 425: "rate_limited", 429: "rate_limited"}

_MAX_DETAIL: Final = 200


def classify_response(
    channel: str, status: int, body: bytes | str, headers: Mapping[str, str] | None = None
) -> Verdict:
    """Decide on an HTTP answer from ``channel`` (``wechat`` or ``slack``)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    retry_after = parse_retry_after((headers or {}).get("Retry-After"))
    if status >= 500:
        return Verdict(Outcome.RETRY, "server_error", _detail(status, text), retry_after)
    if status in _RETRY_STATUSES:
        return Verdict(Outcome.RETRY, _RETRY_STATUSES[status], _detail(status, text), retry_after)
    if channel == "wechat":
        return _classify_wechat(status, text)
    if channel == "slack":
        return _classify_slack(status, text)
    if 200 <= status < 300:
        return Verdict(Outcome.SENT, "ok")
    return Verdict(Outcome.FAILED, "client_error", _detail(status, text))


def _classify_wechat(status: int, text: str) -> Verdict:
    if not 200 <= status < 300:
        return Verdict(Outcome.FAILED, "client_error", _detail(status, text))
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        answer = None
    errcode = answer.get("errcode") if isinstance(answer, dict) else None
    if not isinstance(errcode, int) or isinstance(errcode, bool):
        # Something between us and WeChat (a proxy, a portal) answered: we cannot know whether
        # the group got the message, and losing it is worse than sending it twice.
        return Verdict(Outcome.RETRY, "bad_response", _detail(status, text))
    errmsg = str(answer.get("errmsg", "")) if isinstance(answer, dict) else ""
    detail = _clip(f"errcode {errcode}: {errmsg}")
    if errcode == 0:
        return Verdict(Outcome.SENT, "ok")
    if errcode in _WECHAT_RETRY_ERRCODES:
        return Verdict(Outcome.RETRY, _WECHAT_RETRY_ERRCODES[errcode], detail)
    return Verdict(Outcome.FAILED, _WECHAT_FAIL_ERRCODES.get(errcode, "errcode"), detail)


def _classify_slack(status: int, text: str) -> Verdict:
    word = text.strip()
    if 200 <= status < 300:
        if word == "ok":
            return Verdict(Outcome.SENT, "ok")
        return Verdict(Outcome.RETRY, "bad_response", _detail(status, text))
    reason = _SLACK_BODY_REASONS.get(word)
    if reason is None:
        reason = {
            400: "invalid_payload",
            403: "forbidden",
            404: "channel_not_found",
            410: "channel_archived",
        }.get(status, "client_error")
    return Verdict(Outcome.FAILED, reason, _detail(status, text))


def classify_smtp_reply(code: int, message: str) -> Verdict:
    """Decide on an SMTP reply code: 4xx is transient, 5xx permanent (535: bad login)."""
    detail = _clip(f"SMTP {code}: {message}")
    if 400 <= code < 500:
        return Verdict(Outcome.RETRY, "smtp_transient", detail)
    if code in (530, 534, 535, 538):
        return Verdict(Outcome.FAILED, "auth_failed", detail)
    if 500 <= code < 600:
        return Verdict(Outcome.FAILED, "smtp_permanent", detail)
    # Not a reply code at all (aiosmtplib uses -1 for a dropped connection): try again.
    return Verdict(Outcome.RETRY, "connection_error", detail)


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


def _detail(status: int, text: str) -> str:
    return _clip(f"HTTP {status}: {' '.join(text.split())}" if text.strip() else f"HTTP {status}")


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
