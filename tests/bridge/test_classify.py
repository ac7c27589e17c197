"""The one decision on every delivery outcome: sent, retry or failed, and why."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

import aiohttp
import pytest

from bridge.channels.email.answers import classify_smtp_reply
from bridge.channels.slack import answers as slack
from bridge.channels.wechat import answers as wechat
from bridge.classify import Outcome, classify_exception, parse_retry_after

SENT, RETRY, FAILED = Outcome.SENT, Outcome.RETRY, Outcome.FAILED

WECHAT_CASES = [
    # status, body, outcome, reason
    (200, '{"errcode":0,"errmsg":"ok"}', SENT, "ok"),
    (200, '{"errcode":45009,"errmsg":"api freq out of limit"}', RETRY, "rate_limited"),
    (200, '{"errcode":-1,"errmsg":"system busy"}', RETRY, "system_busy"),
    (200, '{"errcode":93000,"errmsg":"invalid webhook url"}', FAILED, "invalid_key"),
    (200, '{"errcode":40058,"errmsg":"content exceed max length"}', FAILED, "too_long"),
    (200, '{"errcode":40008,"errmsg":"invalid message type"}', FAILED, "errcode"),
    (200, '{"errcode":44004,"errmsg":"empty content"}', FAILED, "errcode"),
    (200, "<html>portal</html>", RETRY, "bad_response"),
    (200, "", RETRY, "bad_response"),
    (200, '{"errmsg":"ok"}', RETRY, "bad_response"),
    (200, '{"errcode":"0"}', RETRY, "bad_response"),
    (200, "[]", RETRY, "bad_response"),
    (500, "oops", RETRY, "server_error"),
    (502, "", RETRY, "server_error"),
    (503, '{"errcode":0}', RETRY, "server_error"),
    (504, "", RETRY, "server_error"),
    (429, "", RETRY, "rate_limited"),
    (408, "", RETRY, "timeout"),
    (400, "bad", FAILED, "client_error"),
    (403, "", FAILED, "client_error"),
    (404, "", FAILED, "client_error"),
]

SLACK_CASES = [
    (200, "ok", SENT, "ok"),
    (200, "ok\n", SENT, "ok"),
    (200, "", RETRY, "bad_response"),
    (200, "<html>", RETRY, "bad_response"),
    (400, "invalid_payload", FAILED, "invalid_payload"),
    (400, "no_text", FAILED, "invalid_payload"),
    (400, "invalid_blocks", FAILED, "invalid_payload"),
    (400, "something_new", FAILED, "invalid_payload"),
    (403, "action_prohibited", FAILED, "forbidden"),
    (403, "invalid_token", FAILED, "forbidden"),
    (404, "channel_not_found", FAILED, "channel_not_found"),
    (404, "no_service", FAILED, "forbidden"),
    (410, "channel_is_archived", FAILED, "channel_archived"),
    (401, "", FAILED, "client_error"),
    (429, "rate_limited", RETRY, "rate_limited"),
    (500, "", RETRY, "server_error"),
    (503, "", RETRY, "server_error"),
]
# Something in between answering JSON nested past Python's recursion limit: not an answer.
WECHAT_CASES.append((200, "[" * 100_000 + "]" * 100_000, RETRY, "bad_response"))


@pytest.mark.parametrize(("status", "body", "outcome", "reason"), WECHAT_CASES)
def test_wechat_answers(status: int, body: str, outcome: Outcome, reason: str) -> None:
    """WeChat: errcode 0 sent; 45009 and -1 retried; 93000, 40058 and other errcodes final."""
    verdict = wechat.classify(status, body.encode(), {})
    assert (verdict.outcome, verdict.reason) == (outcome, reason)


@pytest.mark.parametrize(("status", "body", "outcome", "reason"), SLACK_CASES)
def test_slack_answers(status: int, body: str, outcome: Outcome, reason: str) -> None:
    """Slack: 200 "ok" sent; 429 and 5xx retried; 4xx errors final with their reason."""
    verdict = slack.classify(status, body.encode(), {})
    assert (verdict.outcome, verdict.reason) == (outcome, reason)


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


@pytest.mark.parametrize(
    ("code", "outcome", "reason"),
    [
        (421, RETRY, "smtp_transient"),
        (450, RETRY, "smtp_transient"),
        (451, RETRY, "smtp_transient"),
        (452, RETRY, "smtp_transient"),
        (454, RETRY, "smtp_transient"),
        (530, FAILED, "auth_failed"),
        (534, FAILED, "auth_failed"),
        (535, FAILED, "auth_failed"),
        (550, FAILED, "smtp_permanent"),
        (552, FAILED, "smtp_permanent"),
        (554, FAILED, "smtp_permanent"),
        (-1, RETRY, "connection_error"),
    ],
)
def test_smtp_replies(code: int, outcome: Outcome, reason: str) -> None:
    """SMTP: 4xx replies are retried, 5xx are final (535 is a refused login)."""
    verdict = classify_smtp_reply(code, "text")
    assert (verdict.outcome, verdict.reason) == (outcome, reason)


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
