"""The Slack channel: its profile for the conformance kit, and what is Slack's alone.

Answers as Slack's docs give them: 200 with the body ``ok``; 400 ``invalid_payload``, 403
``action_prohibited``, 404 ``channel_not_found``, 410 ``channel_is_archived`` final; 429 (with
``Retry-After``) and 5xx retried.
"""

from __future__ import annotations

import re

import pytest

from bridge.channels.base import Message
from bridge.channels.slack import answers
from bridge.channels.slack.notifier import SECTION_LIMIT
from bridge.classify import Outcome
from tests.bridge.channels.profile import Profile, SizeLimit
from tests.peers.slack import message_texts, mrkdwn_actions, visible_text

SENT, RETRY, FAILED = Outcome.SENT, Outcome.RETRY, Outcome.FAILED

SLACK_CASES: list[tuple[int, str, Outcome, str]] = [
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


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _largest_section(message: Message) -> int:
    return max(_utf16(text) for text in message_texts(message.body)[1:])


def _part(message: Message) -> tuple[int, int] | None:
    found = re.search(r"\((\d+)/(\d+)\)", str(message.body.get("text", "")))
    return (int(found.group(1)), int(found.group(2))) if found else None


PROFILE = Profile(
    target=lambda url: {"type": "slack", "url": url, "rate_per_minute": 0},
    url=lambda base, secret: f"{base}/services/T0SHEEP/B0DOG/{secret}",
    success=(200, b"ok"),
    codes=[
        (status, body.encode(), outcome, reason) for status, body, outcome, reason in SLACK_CASES
    ],
    actions=lambda message: [a for t in message_texts(message.body) for a in mrkdwn_actions(t)],
    visible=lambda message: visible_text("\n".join(message_texts(message.body))),
    size=SizeLimit(
        limit=SECTION_LIMIT,
        measure=_largest_section,
        part=_part,
        texts=lambda message: [visible_text(t) for t in message_texts(message.body)],
        per_message=False,
    ),
)


@pytest.mark.parametrize(("status", "body", "outcome", "reason"), SLACK_CASES)
def test_slack_answers(status: int, body: str, outcome: Outcome, reason: str) -> None:
    """200 "ok" sent; 429 and 5xx retried; 4xx errors final with their reason."""
    verdict = answers.classify(status, body.encode(), {})
    assert (verdict.outcome, verdict.reason) == (outcome, reason)
