"""What every channel shares in deciding on an outcome: exceptions and ``Retry-After``.

Each channel's own answers are tested with it (``tests/bridge/channels/``), and every status
through every channel by the conformance kit.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

import aiohttp
import pytest

from bridge.channels.slack import answers as slack
from bridge.classify import Outcome, classify_exception, parse_retry_after

SENT, RETRY, FAILED = Outcome.SENT, Outcome.RETRY, Outcome.FAILED


def test_retry_after_is_carried() -> None:
    """A 429's Retry-After header is in the verdict, as seconds."""
    verdict = slack.classify(429, b"rate_limited", {"Retry-After": "30"})
    assert verdict.retry_after == 30.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("30", 30.0),
        (" 2 ", 2.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("1.5", 1.5),
        ("Thu, 26 Nov 2026 22:01:00 GMT", 60.0),
        ("Thu, 26 Nov 2026 21:00:00 GMT", 0.0),
        ("soon", None),
        ("nan", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    """Retry-After as delta-seconds or an HTTP date; nonsense is ignored."""
    now = datetime(2026, 11, 26, 22, 0, tzinfo=UTC)
    assert parse_retry_after(header, now) == seconds


def _connector_error() -> aiohttp.ClientConnectorError:
    key = aiohttp.client_reqrep.ConnectionKey("example.com", 443, True, None, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(111, "Connection refused"))


@pytest.mark.parametrize(
    ("exc", "outcome", "reason"),
    [
        (TimeoutError(), RETRY, "timeout"),
        (aiohttp.ServerTimeoutError(), RETRY, "timeout"),
        (ConnectionRefusedError(111, "Connection refused"), RETRY, "connection_error"),
        (ConnectionResetError(), RETRY, "connection_error"),
        (aiohttp.ServerDisconnectedError(), RETRY, "connection_error"),
        (aiohttp.ClientPayloadError("cut"), RETRY, "connection_error"),
        (OSError(101, "Network is unreachable"), RETRY, "connection_error"),
        (ssl.SSLError("handshake"), RETRY, "tls_error"),
        (ssl.SSLCertVerificationError("bad cert"), FAILED, "tls_error"),
        (RuntimeError("surprise"), RETRY, "connection_error"),
    ],
)
def test_exceptions(exc: BaseException, outcome: Outcome, reason: str) -> None:
    """Timeouts and connection errors are retried; an untrusted certificate is final."""
    verdict = classify_exception(exc)
    assert (verdict.outcome, verdict.reason) == (outcome, reason)


def test_exception_detail_names_no_url() -> None:
    """An exception's detail names its type, never the text that may hold the URL."""
    exc = aiohttp.InvalidURL("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=SECRET")
    verdict = classify_exception(exc)
    assert "SECRET" not in verdict.detail
    assert verdict.outcome is RETRY
    assert "SECRET" not in classify_exception(_connector_error()).detail


def test_long_bodies_are_clipped() -> None:
    """A peer's long error body is cut, so a log line stays a line."""
    verdict = slack.classify(400, b"x" * 10_000, {})
    assert len(verdict.detail) <= 200
