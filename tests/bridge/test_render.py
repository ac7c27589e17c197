"""Built-in templates and their filters: readable, escaped, within each channel's limits."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from bridge.channels.registry import CHANNELS, channel_of
from bridge.channels.slack.notifier import fits_slack
from bridge.channels.wechat.notifier import MARKDOWN_LIMIT
from bridge.digest import merge
from bridge.payload import validate_payload
from bridge.render import Renderer, humanize_seconds, silence_url
from bridge.service import build_renderer
from sheepdog.config import Config
from sheepdog.core.errors import ConfigError
from tests.bridge.conftest import ROBOT_KEY, fixture_payload, make_payload
from tests.conftest import MakeConfig

NOW = datetime(2026, 11, 26, 23, 2, 39, tzinfo=UTC)

TARGETS = {
    "ops-wechat": {
        "type": "wechat",
        "url": f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={ROBOT_KEY}",
        "mentions": {"userids": ["zhangsan"], "mobiles": ["13800000000"]},
    },
    "ops-slack": {"type": "slack", "url": "https://hooks.slack.com/services/T0/B0/SECRETPATH"},
    "ops-email": {
        "type": "email",
        "smtp": {"host": "smtp.example.com", "port": 587},
        "from": "alerts@example.com",
        "to": ["oncall@example.com"],
    },
    "stdout": {"type": "log"},
}


@pytest.fixture
def config(make_config: MakeConfig) -> Config:
    return make_config({"bridge": {"targets": TARGETS}})


def compose(config: Config, target: str, payload: dict[str, Any], **kwargs: Any) -> list[Any]:
    renderer = Renderer(config.bridge, CHANNELS)
    settings = config.bridge.targets[target]
    notifier = channel_of(settings.type).notifier(settings, renderer, None, 10)
    return notifier.compose(validate_payload(copy.deepcopy(payload)), now=NOW, **kwargs)


def wechat_contents(messages: list[Any]) -> list[str]:
    return [m.body["markdown"]["content"] for m in messages if m.kind == "markdown"]


def slack_text(body: dict[str, Any]) -> str:
    """Everything a Slack message shows, as one string."""
    texts = [body.get("text", "")]
    for attachment in body.get("attachments", []):
        for block in attachment.get("blocks", []):
            if "text" in block:
                texts.append(block["text"]["text"])
            texts += [element["text"] for element in block.get("elements", [])]
    return "\n".join(texts)


def big_payload(count: int = 200) -> dict[str, Any]:
    """Many alerts with long Chinese and emoji text, and HTML and quotes in labels."""
    payload = make_payload(count, name="RelayDown")
    for index, alert in enumerate(payload["alerts"]):
        alert["labels"]["instance"] = f"节点-{index:03d}<b>&\"'\\"
        alert["labels"]["team"] = "<script>alert(1)</script>"
        alert["annotations"]["summary"] = f"上游中转服务不可用 🔥🚨 #{index} " + "很长的描述" * 30
        alert["annotations"]["description"] = "line one\nline two with `code` and *stars*"
    payload["commonLabels"] = {"alertname": "RelayDown"}
    return payload


PAYLOADS = {
    "firing-one": lambda: fixture_payload("firing-one.json"),
    "firing-truncated": lambda: fixture_payload("firing-truncated.json"),
    "resolved-one": lambda: fixture_payload("resolved-one.json"),
    "big": big_payload,
    "mixed": lambda: {
        **make_payload(3),
        "alerts": make_payload(3)["alerts"] + make_payload(2, status="resolved")["alerts"],
    },
}


@pytest.mark.parametrize("payload_name", sorted(PAYLOADS))
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_payload_through_every_template(
    config: Config, target: str, payload_name: str
) -> None:
    """Real and generated payloads render on every channel, within limits, naming every alert."""
    payload = PAYLOADS[payload_name]()
    messages = compose(config, target, payload)
    assert messages
    if target == "ops-wechat":
        contents = wechat_contents(messages)
        assert all(len(c.encode("utf-8")) <= MARKDOWN_LIMIT for c in contents)
        shown = "\n".join(contents)
    elif target == "ops-slack":
        assert all(fits_slack(m.body) for m in messages)
        assert all(json.loads(json.dumps(m.body)) == m.body for m in messages)
        shown = "\n".join(slack_text(m.body) for m in messages)
    elif target == "ops-email":
        assert len(messages) == 1
        assert "\n" not in messages[0].body["subject"]
        shown = messages[0].body["text"]
    else:
        shown = messages[0].body["text"]
    for alert in payload["alerts"]:
        assert alert["labels"]["alertname"] in shown
        instance = alert["labels"].get("instance", "").split("<")[0]
        assert instance in shown, f"alert {instance} not named"
    if target == "ops-wechat" and len(wechat_contents(messages)) > 1:
        parts = wechat_contents(messages)
        for number, content in enumerate(parts, 1):
            assert f"({number}/{len(parts)})" in content


def test_firing_and_resolved_look_different(config: Config) -> None:
    """Title, colour and icon tell firing from resolved at a glance."""
    firing = compose(config, "ops-wechat", fixture_payload("firing-one.json"))[0]
    resolved = compose(config, "ops-wechat", fixture_payload("resolved-one.json"))[0]
    firing_text = firing.body["markdown"]["content"]
    resolved_text = resolved.body["markdown"]["content"]
    assert firing_text.startswith('## 🔥 <font color="warning">FIRING</font> LLMRelay')
    assert resolved_text.startswith('## ✅ <font color="info">RESOLVED</font> LLMRelay')
    assert "firing for **1h 5m**" in firing_text
    assert "after **11s**" in resolved_text
    slack_firing = compose(config, "ops-slack", fixture_payload("firing-one.json"))[0].body
    slack_resolved = compose(config, "ops-slack", fixture_payload("resolved-one.json"))[0].body
    assert slack_firing["attachments"][0]["color"] == "#E01E5A"
    assert slack_resolved["attachments"][0]["color"] == "#2EB67D"
    assert slack_firing["text"].startswith("*🔥 FIRING")
    assert slack_resolved["text"].startswith("*✅ RESOLVED")
    subject = compose(config, "ops-email", fixture_payload("resolved-one.json"))[0].body["subject"]
    assert subject == "[RESOLVED] LLMRelayHighErrorRate"


def test_wechat_message_shows_what_on_call_needs(config: Config) -> None:
    """Summary, description, labels, local start time, links and a silence link."""
    content = wechat_contents(compose(config, "ops-wechat", fixture_payload("firing-one.json")))[0]
    assert "**错误率超过 1%**" in content
    assert "5xx ratio is 3.2%" in content
    assert "model: **gpt-4.1**" in content
    assert "2026-11-27 05:57:39 CST" in content  # Asia/Shanghai
    assert "[Graph](http://prometheus:9090/graph?g0.expr=x)" in content
    assert "[Silence](http://vm:19093/#/silences/new?filter=%7Balertname%3D%22LLMRelay" in content
    assert "<@zhangsan>" in content
    assert "__name__" not in content


def test_truncated_alerts_are_mentioned(config: Config) -> None:
    """When Alertmanager left alerts out (max_alerts), every channel says how many."""
    payload = fixture_payload("firing-truncated.json")
    assert "left out 3 more" in wechat_contents(compose(config, "ops-wechat", payload))[0]
    assert "left out 3 more" in slack_text(compose(config, "ops-slack", payload)[0].body)
    assert "left out 3 more" in compose(config, "ops-email", payload)[0].body["html"]
    assert "3 more" in compose(config, "stdout", payload)[0].body["text"]
    no_truncation = fixture_payload("firing-one.json")
    assert "left out" not in wechat_contents(compose(config, "ops-wechat", no_truncation))[0]


def test_runbook_link(config: Config) -> None:
    """The runbook_url annotation becomes a link."""
    payload = fixture_payload("firing-truncated.json")
    payload["alerts"] = payload["alerts"][:1]
    content = wechat_contents(compose(config, "ops-wechat", payload))[0]
    assert "[Runbook](https://runbooks.example/high-latency)" in content


def test_html_in_labels_is_escaped_in_email_and_slack(config: Config) -> None:
    """Label text is text: escaped in the HTML mail and in Slack mrkdwn, valid JSON always."""
    payload = big_payload(3)
    email = compose(config, "ops-email", payload)[0].body
    assert "<script>" not in email["html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email["html"]
    assert "<script>alert(1)</script>" in email["text"]  # plain text stays as it is
    body = compose(config, "ops-slack", payload)[0].body
    shown = slack_text(body)
    assert "<script>" not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "节点-000&lt;b&gt;&amp;\"'\\" in shown


def test_wechat_splits_into_numbered_parts_within_4096_bytes(config: Config) -> None:
    """200 alerts of long Chinese text: numbered parts, each ≤ 4096 bytes, no alert lost."""
    contents = wechat_contents(compose(config, "ops-wechat", big_payload(200)))
    assert len(contents) > 1
    for number, content in enumerate(contents, 1):
        assert len(content.encode("utf-8")) <= MARKDOWN_LIMIT
        assert f"({number}/{len(contents)})" in content
        content.encode("utf-8").decode("utf-8")  # never a cut character
    joined = "\n".join(contents)
    for index in range(200):
        assert f"#{index} " in joined


def test_one_alert_too_big_alone_is_cut_at_lines(config: Config) -> None:
    """An alert whose text alone is over the limit is split at line boundaries into parts."""
    payload = make_payload(1)
    payload["alerts"][0]["annotations"]["description"] = "\n".join(
        f"第{line}行 " + "详" * 60 for line in range(100)
    )
    contents = wechat_contents(compose(config, "ops-wechat", payload))
    assert len(contents) > 1
    assert all(len(c.encode()) <= MARKDOWN_LIMIT for c in contents)
    assert contents[0].startswith(f"**(1/{len(contents)})**")
    joined = "".join(contents)
    for line in range(100):
        assert f"第{line}行" in joined
    slack = compose(config, "ops-slack", payload)
    assert all(fits_slack(m.body) for m in slack)
    assert all(f"第{line}行" in "".join(slack_text(m.body) for m in slack) for line in range(100))


def test_mobiles_are_mentioned_in_a_follow_up_text_message(config: Config) -> None:
    """Markdown cannot mention mobiles: a text message follows, with the mobile list."""
    payload = fixture_payload("firing-one.json")
    payload["alerts"][0]["annotations"]["mention"] = "lisi, 13900000000 @all"
    messages = compose(config, "ops-wechat", payload)
    assert [m.kind for m in messages] == ["markdown", "text"]
    assert "<@zhangsan> <@lisi>" in messages[0].body["markdown"]["content"]
    text = messages[1].body["text"]
    assert text["mentioned_mobile_list"] == ["13800000000", "13900000000", "@all"]
    assert "LLMRelayHighErrorRate" in text["content"]


def test_nobody_is_mentioned_for_a_resolution(config: Config) -> None:
    """A resolved notification mentions nobody and sends no follow-up."""
    messages = compose(config, "ops-wechat", fixture_payload("resolved-one.json"))
    assert [m.kind for m in messages] == ["markdown"]
    assert "<@" not in messages[0].body["markdown"]["content"]


def test_digest_names_every_alert_grouped_by_status(config: Config) -> None:
    """Merged notifications: one message, every alert, firing and resolved apart."""
    payloads = [
        validate_payload(make_payload(2, name=f"Alert{n}", fingerprint_prefix=f"g{n}"))
        for n in range(5)
    ]
    payloads.append(
        validate_payload(make_payload(1, name="Alert0", status="resolved", fingerprint_prefix="g0"))
    )
    merged, digest = merge(payloads)
    assert digest is not None and digest.notifications == 6
    content = "\n".join(wechat_contents(compose(config, "ops-wechat", merged, digest=digest)))
    assert "## 📋 Digest" in content
    assert "**🔥 Firing (9)**" in content
    assert "**✅ Resolved (1)**" in content
    for n in range(5):
        assert f"Alert{n}" in content
    assert content.index("Firing (9)") < content.index("Resolved (1)")


def test_silence_url_matches_alertmanager_ui() -> None:
    """The new-silence link pre-fills every label as an equality matcher, URL-encoded."""
    url = silence_url({"alertname": "X", "instance": 'a"b', "__name__": "up"}, "http://am:9093/")
    assert url == (
        "http://am:9093/#/silences/new?filter=%7Balertname%3D%22X%22%2Cinstance%3D%22a%5C%22b%22%7D"
    )
    assert unquote(url.split("filter=")[1]) == '{alertname="X",instance="a\\"b"}'
    assert silence_url({"a": "b"}, "") == ""


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (60, "1m"),
        (125, "2m 5s"),
        (7500, "2h 5m"),
        (7200, "2h"),
        (90061, "1d 1h"),
        (-5, "0s"),
    ],
)
def test_duration(seconds: float, text: str) -> None:
    """Durations read as people say them: the two largest units."""
    assert humanize_seconds(seconds) == text


def test_localtime_filter(config: Config) -> None:
    """Times show in the configured zone; the zero end time reads "still firing"."""
    renderer = Renderer(config.bridge, CHANNELS)
    template = renderer._environments["log"].from_string(
        "{{ '2026-11-26T21:57:39Z' | localtime }}|{{ '0001-01-01T00:00:00Z' | localtime }}"
        "|{{ '2026-11-26T21:57:39Z' | duration('0001-01-01T00:00:00Z') }}"
    )
    assert template.render(now=NOW) == "2026-11-27 05:57:39 CST|still firing|1h 5m"


def test_overrides_per_target_then_templates_dir_then_builtin(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """A per-target prefix wins over templates_dir, which wins over the built-in file."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "log.txt.j2").write_text("global {{ status }}")
    (templates / "team-a.log.txt.j2").write_text("team-a {% include 'builtin/log.txt.j2' %}")
    config = make_config(
        {
            "bridge": {
                "templates_dir": str(templates),
                "targets": {
                    "a": {"type": "log", "template": "team-a."},
                    "b": {"type": "log"},
                    "c": {"type": "wechat", "url": "https://example.com/x?key=k"},
                },
            }
        }
    )
    payload = fixture_payload("firing-one.json")
    assert compose(config, "a", payload)[0].body["text"].startswith("team-a [FIRING]")
    assert compose(config, "b", payload)[0].body["text"] == "global firing"
    assert "FIRING" in wechat_contents(compose(config, "c", payload))[0]


@pytest.mark.parametrize(
    ("files", "targets", "error"),
    [
        (
            {"log.txt.j2": "{% if %}"},
            {"a": {"type": "log"}},
            "bridge.targets.a.template: template does not compile: {dir}/log.txt.j2: line 1: ",
        ),
        (
            {},
            {"a": {"type": "log", "template": "nope."}},
            "bridge.targets.a.template: no template nope.log.txt.j2",
        ),
        (
            {"log.txt.j2": "{{ alerts[0].labels.alertname.nope() }}"},
            {"a": {"type": "log"}},
            "bridge.targets.a.template: template fails on the sample payload: {dir}/log.txt.j2",
        ),
        (
            {"s.slack.json.j2": '{"text": {{ status }}}'},
            {"a": {"type": "slack", "url": "https://hooks.slack.com/x", "template": "s."}},
            "bridge.targets.a.template: template fails on the sample payload: {dir}/s.slack",
        ),
    ],
)
def test_bad_templates_are_config_errors(
    make_config: MakeConfig, tmp_path: Path, files: dict[str, str], targets: Any, error: str
) -> None:
    """A template that does not compile, or a prefix with no file, is refused by name."""
    templates = tmp_path / "templates"
    templates.mkdir()
    for name, text in files.items():
        (templates / name).write_text(text)
    config = make_config({"bridge": {"templates_dir": str(templates), "targets": targets}})
    with pytest.raises(ConfigError) as caught:
        build_renderer(config.bridge)
    assert str(caught.value).startswith(error.format(dir=templates))


def test_template_prefix_needs_templates_dir(make_config: MakeConfig) -> None:
    """A per-target template prefix without templates_dir says where files are looked for."""
    config = make_config({"bridge": {"targets": {"a": {"type": "log", "template": "x."}}}})
    with pytest.raises(ConfigError, match=r"needs bridge\.templates_dir"):
        build_renderer(config.bridge)


def test_a_template_failing_at_run_time_falls_back_to_the_builtin(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """An override that breaks on some payload costs nothing: the built-in one is used."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "log.txt.j2").write_text("{{ alerts[0].labels.alertname.nope() }}")
    config = make_config(
        {"bridge": {"templates_dir": str(templates), "targets": {"a": {"type": "log"}}}}
    )
    text = compose(config, "a", fixture_payload("firing-one.json"))[0].body["text"]
    assert text.startswith("[FIRING] a:")
