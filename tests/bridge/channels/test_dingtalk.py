"""The DingTalk channel: its profile for the conformance kit, and what is DingTalk's alone.

Answers as open.dingtalk.com documents them: HTTP 200 with an ``errcode`` even on failure; -1
(busy) and 410100 / 130101 (too fast; the robot then refuses everything for 10 minutes) are
worth another try, after those 10 minutes; 310000 (security check), 400013 / 400106 (robot or
group gone), 400102 (disabled), 400101 (token), 460101 (too long) and any other are final.
"""

from __future__ import annotations

import asyncio
import copy
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.channels.base import Message
from bridge.channels.dingtalk import answers
from bridge.channels.dingtalk.notifier import BODY_LIMIT, DingTalkNotifier
from bridge.channels.registry import CHANNELS, channel_of
from bridge.channels.webhook import json_bytes
from bridge.classify import Outcome
from bridge.payload import validate_payload
from bridge.render import Renderer
from sheepdog.config import Config, parse_config
from sheepdog.core.errors import ConfigError
from tests.bridge.channels.profile import Profile, SizeLimit
from tests.bridge.conftest import (
    AUTH,
    StartBridge,
    fixture_payload,
    make_payload,
    targets_config,
)
from tests.bridge.fakeclock import ROUNDING, FakeClock
from tests.bridge.test_delivery import outbox_rows
from tests.peers.dingtalk import DingTalkRobot, Scripted, markdown_actions, visible_text
from tests.support.polling import wait_until_async

SENT, RETRY, FAILED = Outcome.SENT, Outcome.RETRY, Outcome.FAILED

DINGTALK_CASES: list[tuple[int, str, Outcome, str]] = [
    # status, body, outcome, reason
    (200, '{"errcode":0,"errmsg":"ok"}', SENT, "ok"),
    (200, '{"errcode":-1,"errmsg":"系统繁忙"}', RETRY, "system_busy"),
    (200, '{"errcode":410100,"errmsg":"发送速度太快而限流"}', RETRY, "rate_limited"),
    (
        200,
        '{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}',
        RETRY,
        "rate_limited",
    ),
    (200, '{"errcode":310000,"errmsg":"sign not match"}', FAILED, "bad_signature"),
    (200, '{"errcode":310000,"errmsg":"invalid timestamp"}', FAILED, "bad_signature"),
    (200, '{"errcode":310000,"errmsg":"keywords not in content"}', FAILED, "keyword_missing"),
    (200, '{"errcode":310000,"errmsg":"ip 1.2.3.4 not in whitelist"}', FAILED, "ip_not_allowed"),
    (200, '{"errcode":310000,"errmsg":"消息校验未通过"}', FAILED, "security_check"),
    (200, '{"errcode":400013,"errmsg":"群已被解散"}', FAILED, "robot_gone"),
    (200, '{"errcode":400106,"errmsg":"机器人不存在"}', FAILED, "robot_gone"),
    (200, '{"errcode":400102,"errmsg":"机器人已停用"}', FAILED, "robot_disabled"),
    (200, '{"errcode":400101,"errmsg":"access_token不存在"}', FAILED, "invalid_key"),
    (200, '{"errcode":300001,"errmsg":"token is not exist"}', FAILED, "invalid_key"),
    (200, '{"errcode":400105,"errmsg":"不支持的消息类型"}', FAILED, "bad_request"),
    (
        200,
        '{"errcode":460101,"errmsg":"message too long, exceed 20000 bytes"}',
        FAILED,
        "too_long",
    ),
    (200, '{"errcode":430102,"errmsg":"含有不合适的文本"}', FAILED, "content_rejected"),
    (200, '{"errcode":12345,"errmsg":"new"}', FAILED, "errcode"),
    (200, "<html>portal</html>", RETRY, "bad_response"),
    (200, "", RETRY, "bad_response"),
    (200, '{"errmsg":"ok"}', RETRY, "bad_response"),
    (200, '{"errcode":"0"}', RETRY, "bad_response"),
    (500, "", RETRY, "server_error"),
    (502, "bad gateway", RETRY, "server_error"),
    (429, "", RETRY, "rate_limited"),
    (404, "", FAILED, "client_error"),
]


def _part(message: Message) -> tuple[int, int] | None:
    found = re.search(r"\((\d+)/(\d+)\)$", str(message.body["markdown"]["title"]))
    return (int(found.group(1)), int(found.group(2))) if found else None


def _text(message: Message) -> str:
    return str(message.body["markdown"]["text"])


PROFILE = Profile(
    target=lambda url: {"type": "dingtalk", "url": url, "rate_per_minute": 0},
    url=lambda base, secret: f"{base}/robot/send?access_token={secret}",
    success=(200, b'{"errcode":0,"errmsg":"ok"}'),
    codes=[
        (status, body.encode(), outcome, reason) for status, body, outcome, reason in DINGTALK_CASES
    ],
    actions=lambda message: markdown_actions(_text(message), message.body.get("at")),
    visible=lambda message: visible_text(message.body["markdown"]["title"] + "\n" + _text(message)),
    size=SizeLimit(
        limit=BODY_LIMIT,
        measure=lambda message: len(json_bytes(message.body)),
        part=_part,
        texts=lambda message: [_text(message)],
    ),
    variants={"signed": {"secret": "SENTINEL-dingtalk-signing-6b1e"}},
)

NOW = datetime(2026, 11, 26, 23, 2, 39, tzinfo=UTC)


def _notifier(session: aiohttp.ClientSession | None = None, **target: Any) -> DingTalkNotifier:
    settings = {"type": "dingtalk", "url": "https://oapi.example/robot/send?access_token=t"}
    config = parse_config({"bridge": {"targets": {"d": {**settings, **target}}}}, env={})
    notifier = channel_of("dingtalk").notifier(
        config.bridge.targets["d"], Renderer(config.bridge, CHANNELS), session, 5
    )
    assert isinstance(notifier, DingTalkNotifier)
    return notifier


def _compose(payload: dict[str, Any], **target: Any) -> list[Message]:
    return _notifier(**target).compose(validate_payload(copy.deepcopy(payload)), now=NOW)


@pytest.mark.parametrize(("status", "body", "outcome", "reason"), DINGTALK_CASES)
def test_dingtalk_answers(status: int, body: str, outcome: Outcome, reason: str) -> None:
    """errcode 0 sent; -1, 410100 and 130101 retried; 310000 and the robot's other errcodes
    final, each with its own reason."""
    verdict = answers.classify(status, body.encode(), {})
    assert (verdict.outcome, verdict.reason) == (outcome, reason)


def test_too_fast_waits_out_the_ten_minute_throttle() -> None:
    """Past 20 a minute DingTalk refuses everything for 10 minutes: the retry waits that long
    (a pause, not a dead letter), instead of spending attempts that prolong nothing."""
    for errcode in (410100, 130101):
        body = f'{{"errcode":{errcode},"errmsg":"send too fast"}}'.encode()
        verdict = answers.classify(200, body, {})
        assert verdict.outcome is RETRY
        assert verdict.retry_after == 600.0


def test_mentions_go_in_the_at_lists_and_the_text_of_the_first_part() -> None:
    """Mobiles, user ids and everyone from the config and the alert's mention annotation: in
    ``at``, and each written as @… in the text, as DingTalk needs it to notify anyone."""
    payload = fixture_payload("firing-one.json")
    payload["alerts"][0]["annotations"]["mention"] = "13900000000 lisi @all"
    (message,) = _compose(payload, mentions={"mobiles": ["13800000000"], "userids": ["zhangsan"]})
    at = message.body["at"]
    assert at == {
        "atMobiles": ["13800000000", "13900000000"],
        "atUserIds": ["zhangsan", "lisi"],
        "isAtAll": True,
    }
    text = message.body["markdown"]["text"]
    assert text.endswith("@13800000000 @13900000000 @zhangsan @lisi")
    assert set(markdown_actions(text, at)) >= {
        ("mention", "13800000000"),
        ("mention", "13900000000"),
        ("mention", "zhangsan"),
        ("mention", "lisi"),
        ("mention", "all"),
    }


def test_an_annotation_cannot_mention_markup() -> None:
    """A mention annotation holding something that is no user id (a link, a tag) is left out:
    the text gets only real @mobile and @userid."""
    payload = fixture_payload("firing-one.json")
    payload["alerts"][0]["annotations"]["mention"] = "[x](http://evil.example/) <b>x zhangsan"
    (message,) = _compose(payload)
    assert message.body["at"]["atUserIds"] == ["zhangsan"]
    text = message.body["markdown"]["text"]
    assert text.endswith("\n\n@zhangsan")
    assert [a for a in markdown_actions(text) if a[0] == "link" and "evil" in a[1]] == []


def test_a_configured_user_id_that_is_not_one_is_a_config_error() -> None:
    """``mentions.userids`` must be ids, since they are written into the text."""
    with pytest.raises(ConfigError, match=r"mentions\.userids\[0\]: '<b>' is not a DingTalk"):
        _notifier(mentions={"userids": ["<b>"]})


def test_nobody_is_mentioned_for_a_resolution() -> None:
    """A resolved notification pings nobody, even with mentions.all configured."""
    (message,) = _compose(
        fixture_payload("resolved-one.json"), mentions={"mobiles": ["13800000000"], "all": True}
    )
    assert "at" not in message.body
    assert "@13800000000" not in message.body["markdown"]["text"]


def test_mentions_ride_on_the_first_part_only() -> None:
    """A split notification mentions people once, on part 1, and every part still fits."""
    payload = make_payload(300, summary="上游中转服务不可用" * 8)
    messages = _compose(payload, mentions={"mobiles": ["13800000000"]})
    assert len(messages) > 1
    assert [("at" in m.body) for m in messages] == [True] + [False] * (len(messages) - 1)
    assert all(len(json_bytes(m.body)) <= BODY_LIMIT for m in messages)
    assert "@13800000000" in messages[0].body["markdown"]["text"]


def test_the_title_says_what_happened_at_a_glance() -> None:
    """The title the chat list shows: status and alert, and 🔁 when Alertmanager reminds."""
    firing = _compose(fixture_payload("firing-one.json"))[0].body["markdown"]["title"]
    resolved = _compose(fixture_payload("resolved-one.json"))[0].body["markdown"]["title"]
    assert firing == "🔥 FIRING LLMRelayHighErrorRate"
    assert resolved == "✅ RESOLVED LLMRelayHighErrorRate"
    reminder = fixture_payload("firing-one.json")
    reminder["notification_reason"] = "repeat interval elapsed"
    title = _compose(reminder)[0].body["markdown"]["title"]
    assert title == "🔁 🔥 FIRING LLMRelayHighErrorRate"


def _signature_query(url: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(url).query))


async def test_each_attempt_is_signed_afresh_and_a_late_retry_still_passes() -> None:
    """加签: the robot checks the signature against its clock; an attempt an hour and more
    after the first is signed again at its own time, so the robot accepts it."""
    clock = {"now": 1_800_000_000.0}
    robot = await DingTalkRobot(
        tokens={"t0k3n": "SEC-signing-secret"}, wall_clock=lambda: clock["now"]
    ).start()
    try:
        async with aiohttp.ClientSession() as session:
            notifier = _notifier(session, url=robot.url("t0k3n"), secret="SEC-signing-secret")
            notifier.wall_clock = lambda: clock["now"]
            (message,) = notifier.compose(
                validate_payload(fixture_payload("firing-one.json")), now=NOW
            )
            robot.script(Scripted(errcode=-1, errmsg="系统繁忙"))
            first = await notifier.send(message)
            clock["now"] += 3 * 3600  # the retry comes three hours later
            second = await notifier.send(message)
    finally:
        await robot.close()
    assert (first.outcome, second.outcome) == (RETRY, SENT)
    assert [m.signed for m in robot.messages] == [True]
    assert robot.errcodes() == [-1]


async def test_a_wrong_secret_is_refused_as_the_robot_says() -> None:
    """The robot answers 310000 ``sign not match``: final, with a reason saying so."""
    robot = await DingTalkRobot(tokens={"t0k3n": "SEC-right"}).start()
    try:
        async with aiohttp.ClientSession() as session:
            notifier = _notifier(session, url=robot.url("t0k3n"), secret="SEC-wrong")
            (message,) = notifier.compose(
                validate_payload(fixture_payload("firing-one.json")), now=NOW
            )
            verdict = await notifier.send(message)
    finally:
        await robot.close()
    assert (verdict.outcome, verdict.reason) == (FAILED, "bad_signature")
    assert "sign not match" in verdict.detail
    assert "SEC-wrong" not in verdict.detail


def test_chinese_words_and_durations() -> None:
    """bridge.language zh: status words, field words and durations in Chinese."""
    config = parse_config(
        {
            "bridge": {
                "language": "zh",
                "targets": {"d": {"type": "dingtalk", "url": "https://d.example/robot/send"}},
            }
        },
        env={},
    )
    notifier = channel_of("dingtalk").notifier(
        config.bridge.targets["d"], Renderer(config.bridge, CHANNELS), None, 5
    )
    (firing,) = notifier.compose(validate_payload(fixture_payload("firing-one.json")), now=NOW)
    assert firing.body["markdown"]["title"] == "🔥 告警触发 LLMRelayHighErrorRate"
    assert (
        "开始于 2026-11-27 05:57:39 CST，已持续 **1 小时 5 分**" in firing.body["markdown"]["text"]
    )
    (resolved,) = notifier.compose(validate_payload(fixture_payload("resolved-one.json")), now=NOW)
    assert resolved.body["markdown"]["title"] == "✅ 已恢复 LLMRelayHighErrorRate"
    assert "持续了 11 秒" in resolved.body["markdown"]["text"]


# Delivered through the whole bridge to the local robot ---------------------------------------

TOKEN = "SENTINEL-dingtalk-token-5d0c"
SIGNING = "SECSENTINEL-dingtalk-secret-77aa"


async def _robot(fake_clock: FakeClock | None = None, **options: Any) -> DingTalkRobot:
    clock = {"clock": fake_clock.monotonic} if fake_clock is not None else {}
    return await DingTalkRobot(**clock, **options).start()


def _config(tmp_path: Path, **target: Any) -> Config:
    return parse_config(targets_config(tmp_path, {"ops": {"type": "dingtalk", **target}}), env={})


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
async def test_real_payloads_arrive_firing_then_resolved(
    signed: bool, start_bridge: StartBridge, tmp_path: Path
) -> None:
    """Alertmanager 0.25's firing and resolved payloads reach the robot in order, as markdown
    it accepts (signed, when the robot signs), reading as what happened."""
    robot = await _robot(tokens={TOKEN: SIGNING if signed else None})
    try:
        secret = {"secret": SIGNING} if signed else {}
        client = await start_bridge(_config(tmp_path, url=robot.url(TOKEN), **secret))
        for count, name in enumerate(("firing-one.json", "resolved-one.json"), 1):
            response = await client.post("/alerts/ops", json=fixture_payload(name), headers=AUTH)
            assert response.status == 200
            await wait_until_async(
                lambda n=count: len(robot.messages) == n, what=f"message {count}"
            )
    finally:
        await robot.close()
    firing, resolved = robot.messages
    assert robot.rejections == []
    assert [m.signed for m in robot.messages] == [signed, signed]
    assert firing.title == "🔥 FIRING LLMRelayHighErrorRate"
    assert "错误率超过 1%" in firing.text and "[Graph](http://prometheus:9090/" in firing.text
    assert resolved.title == "✅ RESOLVED LLMRelayHighErrorRate"
    await wait_until_async(
        lambda: [r["status"] for r in outbox_rows(tmp_path)] == ["sent", "sent"],
        what="both rows sent",
    )


async def test_a_wrong_secret_ends_in_a_dead_letter_with_the_reason(
    start_bridge: StartBridge, tmp_path: Path
) -> None:
    """The robot refuses the signature (310000 sign not match): dead-lettered at once, the
    reason in the outbox, nothing in the group."""
    robot = await _robot(tokens={TOKEN: "SEC-the-right-one"})
    try:
        client = await start_bridge(_config(tmp_path, url=robot.url(TOKEN), secret=SIGNING))
        await client.post("/alerts/ops", json=fixture_payload("firing-one.json"), headers=AUTH)
        await wait_until_async(
            lambda: outbox_rows(tmp_path)[0]["status"] == "dead", what="dead letter"
        )
    finally:
        await robot.close()
    row = outbox_rows(tmp_path)[0]
    assert row["attempts"] == 1
    assert row["last_error"] == "bad_signature: errcode 310000: sign not match"
    assert robot.messages == []


async def test_200_alerts_arrive_complete_in_numbered_parts(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """200 alerts with long Chinese text in one notification: numbered parts, each accepted by
    the robot (≤ 20,000 bytes), every alert named, within 20 a minute."""
    robot = await _robot(fake_clock, tokens={TOKEN: None})
    try:
        client = await start_bridge(_config(tmp_path, url=robot.url(TOKEN)), clock=fake_clock)
        payload = make_payload(200, name="RelayDown", summary="上游中转服务不可用 🔥" * 12)
        await client.post("/alerts/ops", json=payload, headers=AUTH)
        await wait_until_async(
            lambda: outbox_rows(tmp_path)[0]["status"] == "sent", what="all parts"
        )
    finally:
        await robot.close()
    parts = robot.messages
    assert robot.rejections == []
    assert len(parts) > 1
    for number, part in enumerate(parts, 1):
        assert part.title.endswith(f"({number}/{len(parts)})")
        assert len(json_bytes(part.body)) <= BODY_LIMIT
    shown = "\n".join(part.text for part in parts)
    assert all(f"host-{index}:9100" in shown for index in range(200))


async def test_a_burst_of_60_notifications_stays_within_20_a_minute(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """60 notifications at once to one robot: merged into digests, never more than 20 in any
    minute, so the robot never throttles; every alert named."""
    robot = await _robot(fake_clock, tokens={TOKEN: SIGNING})
    try:
        config = _config(tmp_path, url=robot.url(TOKEN), secret=SIGNING)
        client = await start_bridge(config, clock=fake_clock)
        names = [f"Burst{n:02d}" for n in range(60)]
        answers = await asyncio.gather(
            *(
                client.post("/alerts/ops", json=make_payload(2, name=name), headers=AUTH)
                for name in names
            )
        )
        assert [a.status for a in answers] == [200] * 60

        def everything_named() -> bool:
            shown = "\n".join(m.text for m in robot.messages)
            return all(f"**{name}**" in shown for name in names)

        await wait_until_async(everything_named, what="every alert named")
        await wait_until_async(
            lambda: all(r["status"] == "sent" for r in outbox_rows(tmp_path)), what="every row sent"
        )
    finally:
        await robot.close()
    assert robot.rejections == []
    times = [m.at for m in robot.messages]
    assert all(sum(1 for t in times if start <= t < start + 60) <= 20 for start in times)
    assert len(robot.messages) <= 30


async def test_the_ten_minute_throttle_is_a_pause_not_a_dead_letter(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """Someone else filled the robot's minute: it answers 410100 and refuses everything for
    10 minutes. The notification waits those 10 minutes, once, and then goes."""
    robot = await _robot(fake_clock, tokens={TOKEN: None})
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(20):  # another sender on the same robot
                body = {"msgtype": "markdown", "markdown": {"title": "x", "text": "other"}}
                async with session.post(robot.url(TOKEN), json=body) as response:
                    assert (await response.json())["errcode"] == 0
        client = await start_bridge(_config(tmp_path, url=robot.url(TOKEN)), clock=fake_clock)
        started = fake_clock.elapsed
        await client.post("/alerts/ops", json=fixture_payload("firing-one.json"), headers=AUTH)
        await wait_until_async(
            lambda: outbox_rows(tmp_path)[0]["status"] == "sent", what="delivery"
        )
    finally:
        await robot.close()
    assert robot.errcodes() == [410100]
    assert fake_clock.elapsed - started >= 600 - ROUNDING
    assert outbox_rows(tmp_path)[0]["attempts"] == 2
