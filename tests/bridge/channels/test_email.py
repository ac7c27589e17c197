"""The email channel: its profile for the conformance kit, and its SMTP replies."""

from __future__ import annotations

from html import unescape
from html.parser import HTMLParser

import pytest

from bridge.channels.base import Message
from bridge.channels.email.answers import classify_smtp_reply
from bridge.classify import Outcome
from tests.bridge.channels.profile import Profile

SENT, RETRY, FAILED = Outcome.SENT, Outcome.RETRY, Outcome.FAILED


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.actions: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src"):
                self.actions.append(("link", value or ""))
        self.actions.append(("tag", tag))


def _html_actions(message: Message) -> list[tuple[str, str]]:
    """What a mail client acts on: the HTML part's tags and links."""
    parser = _Tags()
    parser.feed(message.body["html"])
    return parser.actions


def _visible(message: Message) -> str:
    body = message.body
    return "\n".join((body["subject"], body["text"], unescape(body["html"])))


PROFILE = Profile(
    target=lambda url: {
        "type": "email",
        "smtp": {"host": "127.0.0.1", "security": "none"},
        "from": "alerts@example.com",
        "to": ["oncall@example.com"],
    },
    actions=_html_actions,
    visible=_visible,
)


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
