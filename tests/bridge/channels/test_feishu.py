"""The Feishu / Lark channel: its profile for the conformance kit, and what is Feishu's alone.

Answers as open.feishu.cn documents them (and as the service answers a burst): code 0 sent;
11232, and 9499 ``too many request``, rate limited (retried, whatever the HTTP status); 9499
``Bad Request``, 19001, 19007, 19021, 19022, 19024, 19036 and any other code final.
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
from bridge.channels.feishu import answers
from bridge.channels.feishu.markup import lark_md
from bridge.channels.feishu.notifier import BODY_LIMIT, FeishuNotifier
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
from tests.bridge.fakeclock import FakeClock
from tests.bridge.test_delivery import outbox_rows
from tests.peers.feishu import FeishuBot, Scripted, card_actions, card_texts, visible_text
from tests.support.polling import wait_until_async

SENT, RETRY, FAILED = Outcome.SENT, Outcome.RETRY, Outcome.FAILED
SUCCESS = '{"StatusCode":0,"StatusMessage":"success","code":0,"data":{},"msg":"success"}'

FEISHU_CASES: list[tuple[int, str, Outcome, str]] = [
    # status, body, outcome, reason
    (200, SUCCESS, SENT, "ok"),
    (200, '{"code":0,"msg":"success","data":{}}', SENT, "ok"),
    (200, '{"Extra":null,"StatusCode":0,"StatusMessage":"success"}', SENT, "ok"),
    (200, '{"code":11232,"msg":"frequency limited"}', RETRY, "rate_limited"),
    (400, '{"code":11232,"msg":"frequency limited"}', RETRY, "rate_limited"),
    (400, '{"code":9499,"msg":"too many request","data":{}}', RETRY, "rate_limited"),
    (400, '{"code":9499,"msg":"Bad Request","data":{}}', FAILED, "bad_request"),
    (200, '{"code":9499,"msg":"Bad Request","data":{}}', FAILED, "bad_request"),
    (
        200,
        '{"code":19001,"msg":"param invalid: incoming webhook access token invalid"}',
        FAILED,
        "invalid_key",
    ),
    (200, '{"code":19007,"msg":"Bot Not Enabled"}', FAILED, "robot_disabled"),
    (
        200,
        '{"code":19021,"msg":"sign match fail or timestamp is not within one hour from '
        'current time"}',
        FAILED,
        "bad_signature",
    ),
    (200, '{"code":19022,"msg":"Ip Not Allowed"}', FAILED, "ip_not_allowed"),
    (200, '{"code":19024,"msg":"Key Words Not Found"}', FAILED, "keyword_missing"),
    (200, '{"code":19036,"msg":"The message exceeds the size limit"}', FAILED, "too_long"),
    (200, '{"code":12345,"msg":"new"}', FAILED, "errcode"),
    (200, "<html>portal</html>", RETRY, "bad_response"),
    (200, "", RETRY, "bad_response"),
    (200, '{"msg":"success"}', RETRY, "bad_response"),
    (500, "", RETRY, "server_error"),
    (503, SUCCESS, RETRY, "server_error"),
    (429, "", RETRY, "rate_limited"),
    (400, "", FAILED, "client_error"),
    (404, "404 page not found", FAILED, "client_error"),
]


def _part(message: Message) -> tuple[int, int] | None:
    title = message.body["card"]["header"]["title"]["content"]
    found = re.search(r"\((\d+)/(\d+)\)$", title)
    return (int(found.group(1)), int(found.group(2))) if found else None


PROFILE = Profile(
    target=lambda url: {"type": "feishu", "url": url, "rate_per_minute": 0},
    url=lambda base, secret: f"{base}/open-apis/bot/v2/hook/{secret}",
    success=(200, SUCCESS.encode()),
    codes=[
        (status, body.encode(), outcome, reason) for status, body, outcome, reason in FEISHU_CASES
    ],
    actions=lambda message: card_actions(message.body),
    visible=lambda message: "\n".join(card_texts(message.body)),
    size=SizeLimit(
        limit=BODY_LIMIT,
        measure=lambda message: len(json_bytes(message.body)),
        part=_part,
        texts=lambda message: card_texts(message.body),
    ),
    variants={"signed": {"secret": "SENTINEL-feishu-signing-c47a"}},
)

NOW = datetime(2026, 11, 26, 23, 2, 39, tzinfo=UTC)
HOOK = "https://open.feishu.cn/open-apis/bot/v2/hook/0a1b2c3d"


def _notifier(
    session: aiohttp.ClientSession | None = None, language: str = "en", **target: Any
) -> FeishuNotifier:
    document = {"language": language, "targets": {"f": {"type": "feishu", "url": HOOK, **target}}}
    config = parse_config({"bridge": document}, env={})
    notifier = channel_of("feishu").notifier(
        config.bridge.targets["f"], Renderer(config.bridge, CHANNELS), session, 5
    )
    assert isinstance(notifier, FeishuNotifier)
    return notifier


def _compose(payload: dict[str, Any], **target: Any) -> list[Message]:
    return _notifier(**target).compose(validate_payload(copy.deepcopy(payload)), now=NOW)


@pytest.mark.parametrize(("status", "body", "outcome", "reason"), FEISHU_CASES)
def test_feishu_answers(status: int, body: str, outcome: Outcome, reason: str) -> None:
    """code 0 sent; 11232 and 9499 "too many request" retried even with HTTP 400; the others
    final, each with its own reason."""
    verdict = answers.classify(status, body.encode(), {})
    assert (verdict.outcome, verdict.reason) == (outcome, reason)


def test_the_header_is_coloured_by_status_and_severity() -> None:
    """Red for a critical alert firing, orange for a warning, green once resolved."""
    critical = _compose(fixture_payload("firing-one.json"))[0]
    warning = _compose(make_payload(1))[0]
    resolved = _compose(fixture_payload("resolved-one.json"))[0]
    assert critical.body["card"]["header"]["template"] == "red"
    assert warning.body["card"]["header"]["template"] == "orange"
    assert resolved.body["card"]["header"]["template"] == "green"
    assert critical.body["card"]["header"]["title"]["content"].startswith("🔥 FIRING")
    assert resolved.body["card"]["header"]["title"]["content"].startswith("✅ RESOLVED")


def test_the_card_has_fields_and_buttons_for_graph_runbook_and_silence() -> None:
    """The labels as fields; buttons open the graph, the runbook and a pre-filled silence."""
    payload = fixture_payload("firing-one.json")
    payload["alerts"][0]["annotations"]["runbook_url"] = "https://runbooks.example/high-latency"
    (card,) = _compose(payload)
    elements = card.body["card"]["elements"]
    buttons = [
        (action["text"]["content"], action["url"])
        for element in elements
        if element["tag"] == "action"
        for action in element["actions"]
    ]
    assert [text for text, _ in buttons] == ["Graph", "Runbook", "Silence"]
    assert buttons[1][1] == "https://runbooks.example/high-latency"
    assert "/#/silences/new?filter=" in buttons[2][1]
    fields = [f["text"]["content"] for e in elements if "fields" in e for f in e["fields"]]
    assert any(field.startswith("**Started**\n") for field in fields)


def test_mentions_go_in_the_first_card() -> None:
    """Configured and annotated open_ids as <at id=…>, everyone as <at id=all>; a mobile
    number (which a custom bot cannot mention) and anything not an id are left out."""
    payload = make_payload(300, summary="上游中转服务不可用" * 8)
    payload["alerts"][0]["annotations"]["mention"] = "ou_annotated 13900000000 <b>x @all"
    cards = _compose(payload, mentions={"user_ids": ["ou_configured"]})
    assert len(cards) > 1
    mentions = [[a for a in card_actions(c.body) if a[0] == "mention"] for c in cards]
    assert mentions[0] == [
        ("mention", "ou_configured"),
        ("mention", "ou_annotated"),
        ("mention", "all"),
    ]
    assert all(m == [] for m in mentions[1:])
    assert all(len(json_bytes(c.body)) <= BODY_LIMIT for c in cards)


def test_a_user_id_that_is_not_one_is_a_config_error() -> None:
    """``mentions.user_ids`` must be ids: anything else would break the <at> tag."""
    with pytest.raises(ConfigError, match=r"mentions\.user_ids\[0\]: 'ou_<x>' is not an open_id"):
        _notifier(mentions={"user_ids": ["ou_<x>"]})


def test_alert_text_is_escaped_with_the_references_feishu_documents() -> None:
    """lark_md's own characters are written as &#…; and read back as themselves."""
    text = "<at id=all></at> **bold** [x](http://e/) _i_ ~s~ `c` & \\"
    assert visible_text(lark_md(text)) == text
    assert "<" not in lark_md(text) and "*" not in lark_md(text)


def test_a_signed_card_stays_within_20_kb_with_its_signature() -> None:
    """With a secret, room is kept for the timestamp and sign that each attempt adds."""
    notifier = _notifier(secret="SEC-feishu")
    messages = notifier.compose(validate_payload(make_payload(400, summary="告警" * 20)), now=NOW)
    assert len(messages) > 1
    for message in messages:
        _, body = notifier.request(message)
        assert len(json_bytes(body)) <= BODY_LIMIT
        assert set(body) >= {"timestamp", "sign"}


async def test_each_attempt_is_signed_afresh_and_a_late_retry_still_passes() -> None:
    """The bot checks the timestamp against its clock: a retry three hours after the first
    attempt carries a signature of its own time, and is accepted."""
    clock = {"now": 1_800_000_000.0}
    bot = await FeishuBot(hooks={"h00k": "feishu-secret"}, wall_clock=lambda: clock["now"]).start()
    try:
        async with aiohttp.ClientSession() as session:
            notifier = _notifier(session, url=bot.url("h00k"), secret="feishu-secret")
            notifier.wall_clock = lambda: clock["now"]
            (message,) = notifier.compose(
                validate_payload(fixture_payload("firing-one.json")), now=NOW
            )
            bot.script(Scripted(code=11232, msg="frequency limited"))
            first = await notifier.send(message)
            clock["now"] += 3 * 3600
            second = await notifier.send(message)
    finally:
        await bot.close()
    assert (first.outcome, second.outcome) == (RETRY, SENT)
    assert [m.signed for m in bot.messages] == [True]


async def test_a_wrong_secret_is_refused_with_19021() -> None:
    """A signature of the wrong secret: 19021, final, the reason says so."""
    bot = await FeishuBot(hooks={"h00k": "right"}).start()
    try:
        async with aiohttp.ClientSession() as session:
            notifier = _notifier(session, url=bot.url("h00k"), secret="wrong")
            (message,) = notifier.compose(
                validate_payload(fixture_payload("firing-one.json")), now=NOW
            )
            verdict = await notifier.send(message)
    finally:
        await bot.close()
    assert (verdict.outcome, verdict.reason) == (FAILED, "bad_signature")
    assert bot.codes() == [19021]


def test_lark_is_the_same_channel_on_its_own_host() -> None:
    """A Lark bot's URL (open.larksuite.com) is a feishu target: check-config names it Lark."""
    config = parse_config(
        {
            "bridge": {
                "targets": {
                    "l": {
                        "type": "feishu",
                        "url": "https://open.larksuite.com/open-apis/bot/v2/hook/abc",
                        "secret": "s",
                    }
                }
            }
        },
        env={},
    )
    described = channel_of("feishu").describe_destination(config.bridge.targets["l"])
    assert described == "open.larksuite.com (Lark), at most 5/s, signed"


def test_chinese_card() -> None:
    """bridge.language zh: the header, field names, buttons and durations in Chinese."""
    notifier = _notifier(language="zh")
    (card,) = notifier.compose(validate_payload(fixture_payload("firing-one.json")), now=NOW)
    assert card.body["card"]["header"]["title"]["content"] == "🔥 告警触发: LLMRelayHighErrorRate"
    texts = card_texts(card.body)
    assert "持续\n1 小时 5 分" in texts
    assert "图表" in texts and "静默" in texts


# Delivered through the whole bridge to the local bot -----------------------------------------

HOOK_ID = "SENTINEL-feishu-hook-0e9b"
SIGNING = "SENTINEL-feishu-secret-3f21"


async def _bot(fake_clock: FakeClock | None = None, **options: Any) -> FeishuBot:
    clock = {"clock": fake_clock.monotonic} if fake_clock is not None else {}
    return await FeishuBot(**clock, **options).start()


def _config(tmp_path: Path, **target: Any) -> Config:
    return parse_config(targets_config(tmp_path, {"ops": {"type": "feishu", **target}}), env={})


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
async def test_real_payloads_arrive_firing_then_resolved(
    signed: bool, start_bridge: StartBridge, tmp_path: Path
) -> None:
    """Alertmanager 0.25's firing and resolved payloads reach the bot in order, as cards it
    accepts (signed, when the bot checks signatures): red then green, reading as what happened."""
    bot = await _bot(hooks={HOOK_ID: SIGNING if signed else None})
    try:
        secret = {"secret": SIGNING} if signed else {}
        client = await start_bridge(_config(tmp_path, url=bot.url(HOOK_ID), **secret))
        for count, name in enumerate(("firing-one.json", "resolved-one.json"), 1):
            response = await client.post("/alerts/ops", json=fixture_payload(name), headers=AUTH)
            assert response.status == 200
            await wait_until_async(lambda n=count: len(bot.messages) == n, what=f"message {count}")
    finally:
        await bot.close()
    firing, resolved = bot.messages
    assert bot.rejections == []
    assert [m.signed for m in bot.messages] == [signed, signed]
    assert firing.title == "🔥 FIRING: LLMRelayHighErrorRate"
    assert ("color", "red") in firing.actions and ("color", "green") in resolved.actions
    assert "错误率超过 1%" in "\n".join(firing.texts)
    assert resolved.title == "✅ RESOLVED: LLMRelayHighErrorRate"
    await wait_until_async(
        lambda: [r["status"] for r in outbox_rows(tmp_path)] == ["sent", "sent"],
        what="both rows sent",
    )


async def test_a_wrong_secret_ends_in_a_dead_letter_with_the_reason(
    start_bridge: StartBridge, tmp_path: Path
) -> None:
    """The bot refuses the signature (19021): dead-lettered at once, the reason in the outbox."""
    bot = await _bot(hooks={HOOK_ID: "the-right-one"})
    try:
        client = await start_bridge(_config(tmp_path, url=bot.url(HOOK_ID), secret=SIGNING))
        await client.post("/alerts/ops", json=fixture_payload("firing-one.json"), headers=AUTH)
        await wait_until_async(
            lambda: outbox_rows(tmp_path)[0]["status"] == "dead", what="dead letter"
        )
    finally:
        await bot.close()
    row = outbox_rows(tmp_path)[0]
    assert row["attempts"] == 1
    assert row["last_error"] == (
        "bad_signature: code 19021: sign match fail or timestamp is not within one hour from "
        "current time"
    )
    assert bot.messages == []


async def test_200_alerts_arrive_complete_in_numbered_parts(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """200 alerts with long Chinese text in one notification: numbered cards, each accepted by
    the bot (≤ 20 KB with its signature), every alert named."""
    bot = await _bot(fake_clock, hooks={HOOK_ID: SIGNING})
    try:
        config = _config(tmp_path, url=bot.url(HOOK_ID), secret=SIGNING)
        client = await start_bridge(config, clock=fake_clock)
        payload = make_payload(200, name="RelayDown", summary="上游中转服务不可用 🔥" * 12)
        await client.post("/alerts/ops", json=payload, headers=AUTH)
        await wait_until_async(
            lambda: outbox_rows(tmp_path)[0]["status"] == "sent", what="all parts"
        )
    finally:
        await bot.close()
    parts = bot.messages
    assert bot.rejections == []
    assert len(parts) > 1
    for number, part in enumerate(parts, 1):
        assert part.title.endswith(f"({number}/{len(parts)})")
    shown = "\n".join(text for part in parts for text in part.texts)
    assert all(f"host-{index}:9100" in shown for index in range(200))


async def test_a_burst_of_60_notifications_stays_within_5_a_second(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """60 notifications at once to one bot: never more than 5 in any second nor 100 in any
    minute, so the bot never answers "too many request"; every alert named."""
    bot = await _bot(fake_clock, hooks={HOOK_ID: None})
    try:
        client = await start_bridge(_config(tmp_path, url=bot.url(HOOK_ID)), clock=fake_clock)
        names = [f"Burst{n:02d}" for n in range(60)]
        answers = await asyncio.gather(
            *(
                client.post("/alerts/ops", json=make_payload(2, name=name), headers=AUTH)
                for name in names
            )
        )
        assert [a.status for a in answers] == [200] * 60

        def everything_named() -> bool:
            shown = "\n".join(text for m in bot.messages for text in m.texts)
            return all(f"{name}" in shown for name in names)

        await wait_until_async(everything_named, what="every alert named")
        await wait_until_async(
            lambda: all(r["status"] == "sent" for r in outbox_rows(tmp_path)), what="every row sent"
        )
    finally:
        await bot.close()
    assert bot.rejections == []
    times = [m.at for m in bot.messages]
    assert all(sum(1 for t in times if start <= t < start + 1) <= 5 for start in times)
    assert all(sum(1 for t in times if start <= t < start + 60) <= 100 for start in times)


async def _burst(client: Any, names: list[str]) -> None:
    answers = await asyncio.gather(
        *(
            client.post("/alerts/ops", json=make_payload(1, name=name), headers=AUTH)
            for name in names
        )
    )
    assert [a.status for a in answers] == [200] * len(names)


def _within_feishu_limits(times: list[float]) -> bool:
    return all(sum(1 for t in times if start <= t < start + 1) <= 5 for start in times) and all(
        sum(1 for t in times if start <= t < start + 60) <= 100 for start in times
    )


@pytest.mark.parametrize("count", [3, 20])
async def test_a_small_burst_arrives_as_one_card_per_notification(
    count: int, start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """3 or 20 notifications at once: one by one, at 5 a second, even the last would go within
    4 s, so each arrives as its own card (an SRE reads 20 alerts, not one digest of them), and
    the bot's windows hold."""
    bot = await _bot(fake_clock, hooks={HOOK_ID: None})
    try:
        client = await start_bridge(_config(tmp_path, url=bot.url(HOOK_ID)), clock=fake_clock)
        names = [f"Small{n:02d}" for n in range(count)]
        await _burst(client, names)
        await wait_until_async(
            lambda: [r["status"] for r in outbox_rows(tmp_path)] == ["sent"] * count,
            what="all sent",
        )
    finally:
        await bot.close()
    assert bot.rejections == []
    assert len(bot.messages) == count
    for message in bot.messages:  # one alert a card, none of them a digest
        shown = "\n".join(message.texts)
        assert sum(1 for name in names if name in shown) == 1, message.title
    assert _within_feishu_limits([m.at for m in bot.messages])


async def test_a_burst_of_300_is_merged_into_digests_within_the_minute(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """300 notifications at once: one by one they would trickle in for three minutes (100 a
    minute); merged into digests every alert reaches the group in far fewer cards than the
    minute's 100 (so none waits for the next minute), never past 5 a second or 100 a minute."""
    bot = await _bot(fake_clock, hooks={HOOK_ID: None})
    try:
        client = await start_bridge(_config(tmp_path, url=bot.url(HOOK_ID)), clock=fake_clock)
        names = [f"Storm{n:03d}" for n in range(300)]
        await _burst(client, names)

        def everything_named() -> bool:
            shown = "\n".join(text for m in bot.messages for text in m.texts)
            return all(name in shown for name in names)

        await wait_until_async(everything_named, what="every alert named")
        await wait_until_async(
            lambda: all(r["status"] == "sent" for r in outbox_rows(tmp_path)), what="all sent"
        )
    finally:
        await bot.close()
    assert bot.rejections == []
    times = [m.at for m in bot.messages]
    assert len(bot.messages) < 100
    assert _within_feishu_limits(times)
