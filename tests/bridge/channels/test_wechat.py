"""The WeChat Work channel: its profile for the conformance kit, and what is WeChat's alone.

Answers as the robot's docs give them: HTTP 200 with an ``errcode`` even on failure; 45009
(rate limited) and -1 (busy) are worth another try, 93000 (invalid key) and 40058 (too long) are
final, and so is any other errcode.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.channels.base import Message
from bridge.channels.registry import CHANNELS, channel_of
from bridge.channels.wechat import answers
from bridge.channels.wechat.markup import ZERO_WIDTH_SPACE, neutralize
from bridge.classify import Outcome
from bridge.payload import validate_payload
from bridge.render import Renderer
from sheepdog.config import parse_config
from tests.bridge.channels.profile import Profile, SizeLimit
from tests.bridge.conftest import make_payload
from tests.peers.wechat import markdown_actions, visible_text

SENT, RETRY, FAILED = Outcome.SENT, Outcome.RETRY, Outcome.FAILED

WECHAT_CASES: list[tuple[int, str, Outcome, str]] = [
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

# Something in between answering JSON nested past Python's recursion limit: not an answer.
WECHAT_CASES.append((200, "[" * 100_000 + "]" * 100_000, RETRY, "bad_response"))


def _content(message: Message) -> str:
    kind = message.body.get("msgtype", "")
    return str(message.body.get(kind, {}).get("content", ""))


def _actions(message: Message) -> list[tuple[str, str]]:
    if message.kind == "markdown":
        return markdown_actions(_content(message))
    return [("mention", m) for m in message.body["text"].get("mentioned_mobile_list", [])]


def _part(message: Message) -> tuple[int, int] | None:
    head = "\n".join(_content(message).splitlines()[:1])
    found = re.search(r"\((\d+)/(\d+)\)", head)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _markdown_bytes(message: Message) -> int:
    return len(_content(message).encode("utf-8")) if message.kind == "markdown" else 0


PROFILE = Profile(
    target=lambda url: {"type": "wechat", "url": url, "rate_per_minute": 0},
    url=lambda base, secret: f"{base}/cgi-bin/webhook/send?key={secret}",
    success=(200, b'{"errcode":0,"errmsg":"ok"}'),
    codes=[
        (status, body.encode(), outcome, reason) for status, body, outcome, reason in WECHAT_CASES
    ],
    actions=_actions,
    visible=lambda message: visible_text(_content(message)),
    size=SizeLimit(
        limit=4096,
        measure=_markdown_bytes,
        part=_part,
        texts=lambda message: [_content(message)],
    ),
)

NOW = datetime(2026, 11, 26, 23, 2, 39, tzinfo=UTC)


def _compose(payload: dict[str, Any], **target: Any) -> list[Message]:
    config = parse_config(
        {
            "bridge": {
                "targets": {"w": {"type": "wechat", "url": "https://q.example/x?key=k", **target}}
            }
        },
        env={},
    )
    settings = config.bridge.targets["w"]
    notifier = channel_of("wechat").notifier(settings, Renderer(config.bridge, CHANNELS), None, 10)
    return notifier.compose(validate_payload(copy.deepcopy(payload)), now=NOW)


def test_the_templates_own_markup_still_acts() -> None:
    """Escaping alert text leaves the template's colours, links and configured mentions working."""
    messages = _compose(make_payload(), mentions={"userids": ["zhangsan"]})
    actions = _actions(messages[0])
    assert ("font", "warning") in actions
    assert ("link", "http://prometheus:9090/graph?g0.expr=up") in actions
    assert ("mention", "zhangsan") in actions
    assert any(kind == "link" and "/#/silences/new?filter=" in url for kind, url in actions)


def test_a_url_with_brackets_cannot_end_the_link_early() -> None:
    """A generator URL holding ``)`` or spaces stays one link to the whole URL."""
    payload = make_payload()
    payload["alerts"][0]["generatorURL"] = "http://prom/graph?x=(a) [b](http://evil)"
    links = [url for kind, url in _actions(_compose(payload)[0]) if kind == "link"]
    assert not any("evil" in url and not url.startswith("http://prom") for url in links)


@pytest.mark.parametrize(
    "text", ["<@zhangsan>", '<font color="info">x</font>', "[x](http://evil)", "a]( b", "plain"]
)
def test_neutralized_text_reads_the_same_and_acts_as_nothing(text: str) -> None:
    """A zero-width space after ``<`` and inside ``](`` leaves the visible text alone."""
    shown = neutralize(text)
    assert shown.replace(ZERO_WIDTH_SPACE, "") == text
    assert markdown_actions(shown) == []


@pytest.mark.parametrize(("status", "body", "outcome", "reason"), WECHAT_CASES)
def test_wechat_answers(status: int, body: str, outcome: Outcome, reason: str) -> None:
    """errcode 0 sent; 45009 and -1 retried; 93000, 40058 and other errcodes final."""
    verdict = answers.classify(status, body.encode(), {})
    assert (verdict.outcome, verdict.reason) == (outcome, reason)
