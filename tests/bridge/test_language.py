"""bridge.language and notification_reason: every built-in template in English and Chinese, and
Alertmanager's reason for a notification shown where it gives one."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import jinja2
import pytest

from bridge.channels.base import Message
from bridge.channels.registry import CHANNELS, channel_of
from bridge.digest import merge
from bridge.language import CODE_MESSAGES, LANGUAGES, catalog, humanize_seconds, reason_words
from bridge.payload import validate_payload
from bridge.render import Renderer
from bridge.sample import SAMPLE_PAYLOAD
from sheepdog.config import parse_config
from tests.bridge.conftest import fixture_payload, make_payload

NOW = datetime(2026, 11, 26, 23, 2, 39, tzinfo=UTC)
URLS = {
    "wechat": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k",
    "dingtalk": "https://oapi.dingtalk.com/robot/send?access_token=t",
    "feishu": "https://open.feishu.cn/open-apis/bot/v2/hook/h",
    "slack": "https://hooks.slack.com/services/T0/B0/x",
}
TARGETS: dict[str, dict[str, Any]] = {
    **{name: {"type": name, "url": url} for name, url in URLS.items()},
    "wechat-v2": {"type": "wechat", "url": URLS["wechat"], "format": "markdown_v2"},
    "email": {
        "type": "email",
        "smtp": {"host": "smtp.example.com"},
        "from": "a@example.com",
        "to": ["b@example.com"],
    },
    "log": {"type": "log"},
}
# English words of the built-in templates that a Chinese message must not show.
ENGLISH = ("FIRING", "RESOLVED", "Digest", "Started", "firing for", "Graph", "Runbook", "lasted")


def _shown(messages: list[Message]) -> str:
    """Everything a list of messages shows, as one text (JSON bodies decoded)."""
    return "\n".join(json.dumps(m.body, ensure_ascii=False) for m in messages)


def _compose(
    target: str, payload: dict[str, Any], language: str = "en", **options: Any
) -> list[Message]:
    config = parse_config(
        {"bridge": {"language": language, "targets": {"t": TARGETS[target]}}}, env={}
    )
    settings = config.bridge.targets["t"]
    notifier = channel_of(settings.type).notifier(
        settings, Renderer(config.bridge, CHANNELS), None, 10
    )
    return notifier.compose(validate_payload(copy.deepcopy(payload)), now=NOW, **options)


def _template_messages() -> set[str]:
    environment = jinja2.Environment(extensions=["jinja2.ext.i18n", "jinja2.ext.do"])
    found = set()
    for channel in CHANNELS.values():
        for name in channel.templates:
            source = (channel.template_dir / name).read_text(encoding="utf-8")
            found |= {message for _, _, message in environment.extract_translations(source)}
    return found


def test_every_word_of_every_template_has_its_chinese() -> None:
    """Each _("…") of the built-in templates is in the Chinese catalog, and the catalog holds
    nothing no template or notifier says."""
    used = _template_messages()
    words = catalog("zh")
    assert sorted(used - set(words)) == []
    assert sorted(set(words) - used - set(CODE_MESSAGES)) == []
    for english, chinese in words.items():
        assert chinese.count("%(") == english.count("%("), english


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize(
    "payload", ["firing-one.json", "resolved-one.json", "firing-truncated.json"]
)
def test_chinese_messages_show_no_english_words(target: str, payload: str) -> None:
    """bridge.language zh: titles, status words, field names, links and durations in Chinese
    on every channel; the alerts' own text stays as it came."""
    messages = _compose(target, fixture_payload(payload), "zh")
    shown = _shown(messages)
    for word in ENGLISH:
        assert word not in shown, (target, word)
    assert ("告警触发" if "firing" in payload else "已恢复") in shown
    assert "LLMRelay" in shown


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_chinese_digest(target: str) -> None:
    """A digest in Chinese: its title and counts."""
    payloads = [validate_payload(make_payload(2, name=f"A{n}", fingerprint_prefix=f"g{n}"))
                for n in range(3)]  # fmt: skip
    merged, digest = merge(payloads)
    shown = _shown(_compose(target, merged, "zh", digest=digest))
    assert "告警汇总" in shown
    assert "Digest" not in shown and "DIGEST" not in shown


@pytest.mark.parametrize(
    ("seconds", "english", "chinese"),
    [
        (0, "0s", "0 秒"),
        (45, "45s", "45 秒"),
        (7500, "2h 5m", "2 小时 5 分"),
        (7200, "2h", "2 小时"),
        (90061, "1d 1h", "1 天 1 小时"),
    ],
)
def test_durations_in_both_languages(seconds: int, english: str, chinese: str) -> None:
    """ "2h 5m" in English, "2 小时 5 分" in Chinese: the two largest units."""
    assert humanize_seconds(seconds, "en") == english
    assert humanize_seconds(seconds, "zh") == chinese


def test_chinese_reads_as_on_call_expects() -> None:
    """持续 2 小时 5 分, in the configured zone."""
    payload = fixture_payload("firing-one.json")
    payload["alerts"][0]["startsAt"] = "2026-11-26T20:57:39Z"
    (message, *_) = _compose("wechat", payload, "zh")
    content = message.body["markdown"]["content"]
    assert content.startswith('## 🔥 <font color="warning">告警触发</font> LLMRelayHighErrorRate')
    assert (
        '开始于 <font color="comment">2026-11-27 04:57:39 CST</font>，已持续 **2 小时 5 分**'
        in (content)
    )


def test_english_stays_the_default() -> None:
    """No bridge.language: the words are English."""
    assert parse_config({}, env={}).bridge.language == "en"
    (message,) = _compose("dingtalk", fixture_payload("firing-one.json"))
    assert message.body["markdown"]["title"] == "🔥 FIRING LLMRelayHighErrorRate"


# notification_reason ---------------------------------------------------------------------------


REMINDER = "repeat interval elapsed"


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_a_reminder_reads_as_a_reminder(target: str, language: str) -> None:
    """Alertmanager 0.32+ says why it notifies: a repeat of a still-firing group shows as a
    reminder, in the message's language."""
    payload = fixture_payload("firing-one.json")
    payload["notification_reason"] = REMINDER
    shown = _shown(_compose(target, payload, language))
    assert "🔁" in shown
    assert reason_words(REMINDER, language) in shown  # type: ignore[arg-type]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_reason_alertmanager_gives_is_worded(target: str) -> None:
    """Each reason of Alertmanager's NotifyReason reads as words; none reads as a reminder."""
    for reason, words in [
        ("first notification", "First notification"),
        ("new alerts added", "New alerts in this group"),
        ("some alerts resolved", "Some alerts resolved"),
        ("all alerts resolved", "All alerts resolved"),
    ]:
        payload = fixture_payload("firing-one.json")
        payload["notification_reason"] = reason
        shown = _shown(_compose(target, payload))
        assert words in shown, (target, reason)
        assert "🔁" not in shown


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("reason", [None, "unknown", "", 42])
def test_without_a_reason_nothing_changes(target: str, reason: Any) -> None:
    """Alertmanager before 0.32 sends no notification_reason: the message is as it always was,
    and so it is for "unknown", an empty one, or one that is not text."""
    before = _compose(target, fixture_payload("firing-one.json"))
    payload = fixture_payload("firing-one.json")
    if reason is not None:
        payload["notification_reason"] = reason
    after = _compose(target, payload)
    strip = [{k: v for k, v in m.body.items() if k != "date"} for m in before]
    assert [{k: v for k, v in m.body.items() if k != "date"} for m in after] == strip


def test_a_reason_this_version_does_not_know_is_shown_as_sent() -> None:
    """A future reason is shown as Alertmanager wrote it, escaped like any alert text."""
    payload = copy.deepcopy(SAMPLE_PAYLOAD)
    payload["notification_reason"] = "<font color='red'>new reason</font>"
    (card,) = _compose("feishu", payload)
    note = card.body["card"]["elements"][0]
    assert note["tag"] == "note"
    assert note["elements"][0]["content"] == "<font color='red'>new reason</font>"
    assert note["elements"][0]["tag"] == "plain_text"
