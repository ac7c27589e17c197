"""The WeChat Work channel: its profile for the conformance kit, and what is WeChat's alone.

Answers as the robot's docs give them: HTTP 200 with an ``errcode`` even on failure; 45009
(rate limited) and -1 (busy) are worth another try, 93000 (invalid key) and 40058 (too long) are
final, and so is any other errcode.
"""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.channels.base import Message
from bridge.channels.registry import CHANNELS, channel_of
from bridge.channels.wechat import answers
from bridge.channels.wechat.markup import ZERO_WIDTH_SPACE, neutralize
from bridge.channels.wechat.notifier import MARKDOWN_LIMIT
from bridge.classify import Outcome
from bridge.payload import validate_payload
from bridge.render import Renderer
from sheepdog.config import parse_config
from tests.bridge.channels.profile import Profile, SizeLimit
from tests.bridge.conftest import (
    AUTH,
    StartBridge,
    fixture_payload,
    make_payload,
    targets_config,
)
from tests.peers.wechat import (
    WeChatRobot,
    markdown_actions,
    markdown_v2_actions,
    text_actions,
    visible_text,
)
from tests.support.polling import wait_until_async

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
    if message.kind == "markdown_v2":
        return markdown_v2_actions(_content(message))
    return text_actions(message.body["text"])


def _part(message: Message) -> tuple[int, int] | None:
    head = "\n".join(_content(message).splitlines()[:1])
    found = re.search(r"\((\d+)/(\d+)\)", head)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _markdown_bytes(message: Message) -> int:
    return len(_content(message).encode("utf-8")) if message.kind != "text" else 0


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
    variants={"markdown_v2": {"format": "markdown_v2"}},
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


# format: markdown_v2 -------------------------------------------------------------------------


def test_markdown_v2_shows_several_alerts_as_a_table() -> None:
    """Several alerts: one table row each, a coloured dot for the severity, no <font> tags."""
    (markdown,) = _compose(make_payload(3), format="markdown_v2")
    assert markdown.kind == "markdown_v2"
    content = markdown.body["markdown_v2"]["content"]
    rows = [line for line in content.splitlines() if line.startswith("| 🟠 |")]
    assert len(rows) == 3
    assert "| | Alert | Labels | Summary | Firing for | |" in content
    assert "<font" not in content and "<@" not in content


def test_a_pipe_in_alert_text_stays_in_its_table_cell() -> None:
    """A label value holding | cannot add a column: every row has as many cells as the header."""
    payload = make_payload(3, extra_labels={"note": "a | b || c"})
    payload["alerts"][1]["annotations"]["summary"] = "x | y\nz"
    (markdown,) = _compose(payload, format="markdown_v2")
    content = markdown.body["markdown_v2"]["content"]
    lines = [line for line in content.splitlines() if line.startswith("|")]

    def cells(line: str) -> int:
        return len(re.split(r"(?<!\\)\|", line)) - 2

    assert len({cells(line) for line in lines}) == 1
    assert "a \\| b \\|\\| c" in content


def test_markdown_v2_mentions_everyone_in_a_text_message() -> None:
    """markdown_v2 cannot mention: user ids, mobiles and @all all go in the text that follows."""
    payload = fixture_payload("firing-one.json")
    payload["alerts"][0]["annotations"]["mention"] = "lisi 13900000000 @all"
    messages = _compose(
        payload,
        format="markdown_v2",
        mentions={"userids": ["zhangsan"], "mobiles": ["13800000000"]},
    )
    assert [m.kind for m in messages] == ["markdown_v2", "text"]
    text = messages[1].body["text"]
    assert text["mentioned_list"] == ["zhangsan", "lisi", "@all"]
    assert text["mentioned_mobile_list"] == ["13800000000", "13900000000"]
    assert "<@" not in messages[0].body["markdown_v2"]["content"]


def test_markdown_v2_splits_200_alerts_into_numbered_parts() -> None:
    """200 alerts: numbered parts of at most 4096 bytes, each with its own table, all named."""
    payload = make_payload(200, summary="上游中转服务不可用" * 4)
    contents = [m.body["markdown_v2"]["content"] for m in _compose(payload, format="markdown_v2")]
    assert len(contents) > 1
    for number, content in enumerate(contents, 1):
        assert len(content.encode()) <= MARKDOWN_LIMIT
        assert f"({number}/{len(contents)})" in content.splitlines()[0]
        assert "| :-: | :-- |" in content
    joined = "\n".join(contents)
    assert all(f"host-{index}:9100" in joined for index in range(200))


async def test_markdown_v2_reaches_the_robot(
    start_bridge: StartBridge, robot: WeChatRobot, tmp_path: Path
) -> None:
    """A markdown_v2 target delivers what the robot accepts, then the mention text."""
    targets = {
        "ops": {
            "type": "wechat",
            "url": robot.url(),
            "format": "markdown_v2",
            "mentions": {"userids": ["zhangsan"]},
        }
    }
    config = parse_config(targets_config(tmp_path, targets), env={})
    client = await start_bridge(config)
    await client.post("/alerts/ops", json=make_payload(4), headers=AUTH)
    await wait_until_async(lambda: len(robot.messages) == 2, what="markdown_v2 and mention")
    markdown, text = robot.messages
    assert markdown.body["msgtype"] == "markdown_v2"
    assert robot.rejections == []
    assert text.actions == [("mention", "zhangsan")]
