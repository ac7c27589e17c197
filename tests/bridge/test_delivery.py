"""Delivery through the outbox to real local peers: in order, within limits, nothing lost."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from bridge import BRIDGE
from sheepdog.cli import main
from sheepdog.config import Config, load_config
from sheepdog.core.runtime import RUNTIME
from tests.bridge.conftest import (
    ALERT_TOKEN,
    AUTH,
    ROBOT_KEY,
    SMTP_PASSWORD,
    StartBridge,
    fixture_payload,
    make_payload,
    targets_config,
)
from tests.bridge.fakeclock import ROUNDING, FakeClock
from tests.peers.slack import HOOK_PATH, Reply, SlackWebhook
from tests.peers.smtp import SmtpServer
from tests.peers.wechat import Answer, WeChatRobot
from tests.support.polling import wait_until_async


def write_config(tmp_path: Path, document: dict[str, Any]) -> tuple[Path, Config]:
    path = tmp_path / "sheepdog.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path, load_config(path, env={})


def outbox_rows(tmp_path: Path) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(tmp_path / "state" / "sheepdog.db")) as conn, conn:
        conn.row_factory = sqlite3.Row
        return [
            dict(row)
            for row in conn.execute(
                "SELECT id, target, status, attempts, last_error"
                " FROM outbox_notifications ORDER BY id"
            )
        ]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_wechat_gets_markdown_and_mobile_mention(
    start_bridge: StartBridge, robot: WeChatRobot, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """A firing notification reaches the robot as markdown, then a text mentioning mobiles."""
    targets = {
        "ops": {
            "type": "wechat",
            "url": robot.url(),
            "mentions": {"userids": ["zhangsan"], "mobiles": ["13800000000"]},
        }
    }
    _, config = write_config(tmp_path, targets_config(tmp_path, targets))
    client = await start_bridge(config)
    response = await client.post(
        "/alerts/ops", json=fixture_payload("firing-one.json"), headers=AUTH
    )
    assert response.status == 200
    await wait_until_async(lambda: len(robot.messages) == 2, what="two messages")
    markdown, text = robot.messages
    assert markdown.body["msgtype"] == "markdown"
    assert "LLMRelayHighErrorRate" in markdown.content
    assert "<@zhangsan>" in markdown.content
    assert text.body["text"]["mentioned_mobile_list"] == ["13800000000"]
    await wait_until_async(lambda: outbox_rows(tmp_path)[0]["status"] == "sent", what="row sent")
    assert sample(registry, "sheepdog_notifications_total", target="ops", result="sent") == 2
    await wait_until_async(
        lambda: sample(registry, "sheepdog_outbox_pending", target="ops") == 0,
        what="pending gauge back to 0",
    )
    assert (
        registry.get_sample_value("sheepdog_notification_duration_seconds_count", {"target": "ops"})
        == 2
    )


async def test_rows_left_by_a_crash_go_out_after_restart_in_order(
    start_bridge: StartBridge, robot: WeChatRobot, tmp_path: Path
) -> None:
    """Pending and in-flight rows from a killed process are delivered, oldest first."""
    targets = {"ops": {"type": "wechat", "url": robot.url(), "rate_per_minute": 0}}
    _, config = write_config(tmp_path, targets_config(tmp_path, targets))
    first = await start_bridge(config)
    first.app[BRIDGE].worker_of("ops")._task.cancel()  # the process "dies" before sending
    for name in ("First", "Second", "Third"):
        response = await first.post("/alerts/ops", json=make_payload(1, name=name), headers=AUTH)
        assert response.status == 200
    with closing(sqlite3.connect(tmp_path / "state" / "sheepdog.db")) as conn, conn:
        conn.execute("UPDATE outbox_notifications SET status = 'in_flight' WHERE id = 1")
    await first.close()
    assert [row["status"] for row in outbox_rows(tmp_path)] == ["in_flight", "pending", "pending"]
    assert robot.messages == []

    await start_bridge(config, fresh_registry=True)
    await wait_until_async(lambda: len(robot.messages) == 3, what="three messages")
    order = [
        next(n for n in ("First", "Second", "Third") if n in m.content) for m in robot.messages
    ]
    assert order == ["First", "Second", "Third"]
    await wait_until_async(
        lambda: all(r["status"] == "sent" for r in outbox_rows(tmp_path)), what="all sent"
    )


async def test_burst_of_60_stays_within_the_robot_limit(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """60 notifications at once: digests within 20/min, never a 45009, every alert named."""
    robot = await WeChatRobot(keys=[ROBOT_KEY], clock=fake_clock.monotonic).start()
    try:
        targets = {"ops": {"type": "wechat", "url": robot.url()}}
        _, config = write_config(tmp_path, targets_config(tmp_path, targets))
        client = await start_bridge(config, clock=fake_clock)
        names = [f"Burst{n:02d}" for n in range(60)]
        answers = await asyncio.gather(
            *(
                client.post(
                    "/alerts/ops",
                    json=make_payload(2, name=name, summary="上游 🔥 出错"),
                    headers=AUTH,
                )
                for name in names
            )
        )
        assert [a.status for a in answers] == [200] * 60

        def everything_named() -> bool:
            seen = "\n".join(m.content for m in robot.messages)
            return all(f"**{name}**" in seen for name in names)

        await wait_until_async(everything_named, what="every alert named")
        assert robot.errcodes() == []
        assert all(len(m.content.encode()) <= 4096 for m in robot.messages)
        times = [m.at for m in robot.messages]
        assert all(sum(1 for t in times if s <= t < s + 60) <= 20 for s in times)
        # Merged into digests: far fewer messages than notifications, so the group learns
        # everything within minutes instead of waiting three minutes per 20 notifications.
        assert len(robot.messages) <= 30
        assert sample(registry, "sheepdog_notifications_merged_total", target="ops") > 0
        await wait_until_async(
            lambda: all(r["status"] == "sent" for r in outbox_rows(tmp_path)), what="all sent"
        )
    finally:
        await robot.close()


async def test_slack_retry_after_is_honoured(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """Slack's 429 with Retry-After: 30 is retried no sooner than 30 s later, then sent."""
    slack = await SlackWebhook(clock=fake_clock.monotonic).start()
    try:
        slack.script(Reply(429, "rate_limited", retry_after="30"))
        targets = {"ops": {"type": "slack", "url": slack.url}}
        _, config = write_config(tmp_path, targets_config(tmp_path, targets))
        client = await start_bridge(config, clock=fake_clock)
        await client.post("/alerts/ops", json=fixture_payload("firing-one.json"), headers=AUTH)
        await wait_until_async(lambda: len(slack.messages) == 1, what="the Slack message")
        first, second = slack.requests
        assert second - first >= 30 - ROUNDING
        assert sample(registry, "sheepdog_notifications_total", target="ops", result="retried") == 1
        assert (
            sample(
                registry,
                "sheepdog_notification_failures_total",
                target="ops",
                reason="rate_limited",
            )
            == 1
        )
    finally:
        await slack.close()


async def test_transient_failures_are_retried_until_sent(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """errcode -1, HTTP 500, a non-JSON 200 and 45009 are retried with backoff, then sent."""
    robot = await WeChatRobot(keys=[ROBOT_KEY], clock=fake_clock.monotonic).start()
    try:
        robot.script(
            Answer(errcode=-1),
            Answer(http_status=500, body="oops"),
            Answer(body="<html>proxy</html>"),
            Answer(errcode=45009),
        )
        targets = {"ops": {"type": "wechat", "url": robot.url()}}
        _, config = write_config(tmp_path, targets_config(tmp_path, targets))
        client = await start_bridge(config, clock=fake_clock)
        await client.post("/alerts/ops", json=fixture_payload("resolved-one.json"), headers=AUTH)
        await wait_until_async(lambda: len(robot.messages) == 1, what="delivery")
        await wait_until_async(
            lambda: outbox_rows(tmp_path)[0]["status"] == "sent", what="row sent"
        )
        assert outbox_rows(tmp_path)[0]["attempts"] == 5
        assert sample(registry, "sheepdog_notifications_total", target="ops", result="retried") == 4
        for reason in ("system_busy", "server_error", "bad_response", "rate_limited"):
            assert (
                sample(
                    registry, "sheepdog_notification_failures_total", target="ops", reason=reason
                )
                == 1
            )
        # Backoff: 1 s, 2 s, 4 s, 8 s steps, jittered in their upper half.
        assert fake_clock.elapsed >= 0.5 + 1 + 2 + 4 - ROUNDING
    finally:
        await robot.close()


async def test_dead_letter_is_listed_and_sent_again(
    start_bridge: StartBridge,
    fake_clock: FakeClock,
    tmp_path: Path,
    registry: CollectorRegistry,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A permanent failure is dead-lettered at once; `outbox retry` puts it back and it goes."""
    robot = await WeChatRobot(keys=[ROBOT_KEY], clock=fake_clock.monotonic).start()
    try:
        robot.script(Answer(errcode=40058))
        targets = {"ops": {"type": "wechat", "url": robot.url()}}
        path, config = write_config(tmp_path, targets_config(tmp_path, targets))
        client = await start_bridge(config, clock=fake_clock)
        await client.post("/alerts/ops", json=fixture_payload("firing-one.json"), headers=AUTH)
        await wait_until_async(
            lambda: outbox_rows(tmp_path)[0]["status"] == "dead", what="dead letter"
        )
        assert robot.messages == []
        assert sample(registry, "sheepdog_notifications_total", target="ops", result="failed") == 1
        await wait_until_async(
            lambda: sample(registry, "sheepdog_outbox_dead", target="ops") == 1, what="dead gauge"
        )

        capsys.readouterr()
        assert await asyncio.to_thread(main, ["outbox", "dead", "--config", str(path)]) == 0
        listing = capsys.readouterr().out
        assert "dead" in listing and "LLMRelayHighErrorRate" in listing
        assert "too_long: errcode 40058" in listing
        assert "outbox retry 1" in listing

        assert await asyncio.to_thread(main, ["outbox", "retry", "1", "--config", str(path)]) == 0
        assert "queued again: 1" in capsys.readouterr().out
        await wait_until_async(lambda: len(robot.messages) == 1, what="the resend")
        await wait_until_async(
            lambda: outbox_rows(tmp_path)[0]["status"] == "sent", what="row sent"
        )
        assert await asyncio.to_thread(main, ["outbox", "--config", str(path)]) == 0
        assert "nothing waiting, no dead letters" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["outbox", "retry", "1", "--config", str(path)]) == 1
        assert "not queued: 1 is sent, not dead" in capsys.readouterr().err
    finally:
        await robot.close()


async def test_gives_up_after_a_day(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """A target that never answers: retried with backoff for 24 h, then dead-lettered."""
    targets = {"ops": {"type": "wechat", "url": "http://127.0.0.1:9/cgi-bin/webhook/send?key=k"}}
    retry = {"initial_seconds": 1, "max_seconds": 3600}
    _, config = write_config(tmp_path, targets_config(tmp_path, targets, retry=retry))
    client = await start_bridge(config, clock=fake_clock)
    await client.post("/alerts/ops", json=fixture_payload("firing-one.json"), headers=AUTH)
    await wait_until_async(
        lambda: outbox_rows(tmp_path)[0]["status"] == "dead", timeout=60, what="give-up"
    )
    row = outbox_rows(tmp_path)[0]
    assert row["last_error"].startswith("gave up after")
    assert "connection_error" in row["last_error"]
    assert 86400 - 0.01 <= fake_clock.elapsed < 86400 + 3600
    assert sample(registry, "sheepdog_notifications_total", target="ops", result="failed") == 1
    assert (
        sample(registry, "sheepdog_notifications_total", target="ops", result="retried")
        == row["attempts"] - 1
    )


async def test_email_arrives_over_starttls_with_login(
    start_bridge: StartBridge, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """Email goes over STARTTLS with a login; subject, text and escaped HTML arrive."""
    targets = {
        "mail": {
            "type": "email",
            "smtp": smtp_server.smtp_section(),
            "from": "sheepdog@example.com",
            "to": ["oncall@example.com", "sre@example.com"],
        }
    }
    _, config = write_config(tmp_path, targets_config(tmp_path, targets))
    client = await start_bridge(config)
    payload = fixture_payload("firing-one.json")
    payload["alerts"][0]["labels"]["team"] = "<b>core</b> & co"
    await client.post("/alerts/mail", json=payload, headers=AUTH)
    await wait_until_async(lambda: len(smtp_server.received) == 1, what="the mail")
    mail = smtp_server.received[0]
    assert mail.recipients == ["oncall@example.com", "sre@example.com"]
    assert mail.message["Subject"] == "[FIRING:1] LLMRelayHighErrorRate — 错误率超过 1%"
    assert mail.message["From"] == "sheepdog@example.com"
    text, html = mail.part("text/plain"), mail.part("text/html")
    assert "错误率超过 1%" in text and "team=<b>core</b> & co" in text
    assert "team=&lt;b&gt;core&lt;/b&gt; &amp; co" in html
    assert "<b>core</b>" not in html
    assert smtp_server.auth_attempts == [("alertmanager", True)]


async def test_smtp_failures(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """SMTP 451 is retried; a refused login (535) is dead-lettered without the password."""
    server = SmtpServer(tmp_path, username="alertmanager", password="right-password")
    server.start()
    try:
        server.script("451 4.3.0 Try again later")
        targets = {
            "mail": {
                "type": "email",
                "smtp": {
                    "host": "127.0.0.1",
                    "port": server.port,
                    "security": "none",
                    "username": "alertmanager",
                    "password": SMTP_PASSWORD,
                },
                "from": "sheepdog@example.com",
                "to": ["oncall@example.com"],
            }
        }
        _, config = write_config(tmp_path, targets_config(tmp_path, targets))
        client = await start_bridge(config, clock=fake_clock)
        await client.post("/alerts/mail", json=make_payload(), headers=AUTH)
        await wait_until_async(
            lambda: outbox_rows(tmp_path)[0]["status"] == "dead", what="dead letter"
        )
        row = outbox_rows(tmp_path)[0]
        assert row["last_error"].startswith("auth_failed: SMTP 535")
        assert SMTP_PASSWORD not in row["last_error"]
        assert server.received == []
    finally:
        server.stop()


async def test_secrets_never_leak(
    start_bridge: StartBridge,
    fake_clock: FakeClock,
    tmp_path: Path,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Robot key, webhook path, SMTP password and alert token: never in a log, a metric, an
    answer, the outbox or `render` output, whatever fails."""
    caplog.set_level(logging.DEBUG)
    targets = {
        "refused": {
            "type": "wechat",
            "url": f"http://127.0.0.1:9/cgi-bin/webhook/send?key={ROBOT_KEY}",
        },
        "slack": {"type": "slack", "url": f"http://127.0.0.1:9{HOOK_PATH}"},
        "mail": {
            "type": "email",
            "smtp": {
                "host": "127.0.0.1",
                "port": 9,
                "security": "none",
                "username": "u",
                "password": SMTP_PASSWORD,
            },
            "from": "a@example.com",
            "to": ["b@example.com"],
        },
    }
    retry = {"give_up_after_seconds": 30}
    path, config = write_config(tmp_path, targets_config(tmp_path, targets, retry=retry))
    client = await start_bridge(config, clock=fake_clock)
    answers = []
    for target in targets:
        response = await client.post(f"/alerts/{target}", json=make_payload(), headers=AUTH)
        answers.append(await response.text())
    answers.append(await (await client.post("/alerts/nope", json={}, headers=AUTH)).text())
    answers.append(await (await client.post("/alerts/refused", data=b"{", headers=AUTH)).text())
    await wait_until_async(
        lambda: all(r["status"] == "dead" for r in outbox_rows(tmp_path)),
        timeout=60,
        what="all dead",
    )
    capsys.readouterr()
    for target in targets:
        assert await asyncio.to_thread(main, ["render", target, "--config", str(path)]) == 0
    assert await asyncio.to_thread(main, ["outbox", "dead", "--config", str(path)]) == 0
    assert await asyncio.to_thread(main, ["check-config", "--config", str(path)]) == 0
    printed = capsys.readouterr()
    haystacks = {
        "logs": caplog.text,
        "metrics": generate_latest(registry).decode(),
        "answers": "\n".join(answers),
        "outbox": json.dumps(outbox_rows(tmp_path)),
        "cli": printed.out + printed.err,
    }
    for secret in (ROBOT_KEY, HOOK_PATH, "sl4ckt0k3n", SMTP_PASSWORD, ALERT_TOKEN):
        for where, text in haystacks.items():
            assert secret not in text, f"{secret} leaked into {where}"
    assert "127.0.0.1:9/<redacted>" in printed.out
    assert "connection_error" in haystacks["outbox"]


async def test_series_exist_from_start_and_for_targets_added_on_reload(
    start_bridge: StartBridge, tmp_path: Path, registry: CollectorRegistry, robot: WeChatRobot
) -> None:
    """Every target's series exist at 0 from start-up; a reload adds a target and its worker."""
    path, config = write_config(tmp_path, targets_config(tmp_path, {"a": {"type": "log"}}))
    client = await start_bridge(config)
    zero_series = [
        ("sheepdog_alerts_received_total", {"status": "firing"}),
        ("sheepdog_alerts_received_total", {"status": "resolved"}),
        ("sheepdog_notifications_total", {"result": "sent"}),
        ("sheepdog_notifications_total", {"result": "retried"}),
        ("sheepdog_notifications_total", {"result": "failed"}),
        ("sheepdog_notification_duration_seconds_count", {}),
        ("sheepdog_outbox_pending", {}),
        ("sheepdog_outbox_oldest_seconds", {}),
        ("sheepdog_outbox_dead", {}),
        ("sheepdog_notification_failures_total", {"reason": "rate_limited"}),
    ]
    for name, labels in zero_series:
        assert registry.get_sample_value(name, {"target": "a", **labels}) == 0, name

    document = targets_config(
        tmp_path, {"a": {"type": "log"}, "b": {"type": "wechat", "url": robot.url()}}
    )
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    client.app[RUNTIME].load_config = lambda: load_config(path, env={})
    response = await client.post("/-/reload", headers=AUTH)
    assert response.status == 200, await response.text()
    for name, labels in zero_series:
        assert registry.get_sample_value(name, {"target": "b", **labels}) == 0, name
    assert (await client.get("/-/ready")).status == 200
    await client.post("/alerts/b", json=make_payload(), headers=AUTH)
    await wait_until_async(lambda: len(robot.messages) == 1, what="delivery to the new target")

    broken = targets_config(tmp_path, {"a": {"type": "log", "template": "missing."}})
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    refused = await client.post("/-/reload", headers=AUTH)
    assert refused.status == 400
    assert "bridge.targets.a.template" in (await refused.json())["error"]
    assert set(client.app[BRIDGE].plan.routes) == {"a", "b"}


@pytest.mark.parametrize(
    ("channel", "reply", "reason"),
    [
        ("wechat", None, "invalid_key"),
        ("slack", Reply(404, "channel_not_found"), "channel_not_found"),
        ("slack", Reply(400, "invalid_payload"), "invalid_payload"),
        ("slack", Reply(410, "channel_is_archived"), "channel_archived"),
    ],
)
async def test_permanent_failures_are_dead_at_once(
    start_bridge: StartBridge,
    fake_clock: FakeClock,
    tmp_path: Path,
    registry: CollectorRegistry,
    channel: str,
    reply: Reply | None,
    reason: str,
) -> None:
    """A wrong robot key or a Slack 4xx is final: dead after one attempt, reason counted."""
    robot = await WeChatRobot(keys=["the-right-key"]).start()
    slack = await SlackWebhook().start()
    try:
        if reply is not None:
            slack.script(reply)
        url = robot.url("a-wrong-key") if channel == "wechat" else slack.url
        _, config = write_config(
            tmp_path, targets_config(tmp_path, {"ops": {"type": channel, "url": url}})
        )
        client = await start_bridge(config, clock=fake_clock)
        await client.post("/alerts/ops", json=make_payload(), headers=AUTH)
        await wait_until_async(
            lambda: outbox_rows(tmp_path)[0]["status"] == "dead", what="dead letter"
        )
        row = outbox_rows(tmp_path)[0]
        assert row["attempts"] == 1
        assert row["last_error"].startswith(f"{reason}: ")
        assert (
            sample(registry, "sheepdog_notification_failures_total", target="ops", reason=reason)
            == 1
        )
        assert sample(registry, "sheepdog_notifications_total", target="ops", result="retried") == 0
    finally:
        await robot.close()
        await slack.close()


async def test_oldest_waiting_age_is_exported(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """sheepdog_outbox_oldest_seconds grows while a notification waits, and is 0 once sent."""
    robot = await WeChatRobot(keys=[ROBOT_KEY], clock=fake_clock.monotonic).start()
    try:
        robot.script(*[Answer(http_status=503, body="busy")] * 3)
        _, config = write_config(
            tmp_path,
            targets_config(
                tmp_path,
                {"ops": {"type": "wechat", "url": robot.url()}},
                retry={"initial_seconds": 100, "max_seconds": 100},
            ),
        )
        client = await start_bridge(config, clock=fake_clock)
        await client.post("/alerts/ops", json=make_payload(), headers=AUTH)
        ages: list[float] = []

        def record_age() -> bool:
            ages.append(sample(registry, "sheepdog_outbox_oldest_seconds", target="ops"))
            return len(robot.messages) == 1

        await wait_until_async(record_age, what="delivery after three failures")
        assert max(ages) >= 100
        assert sample(registry, "sheepdog_outbox_pending", target="ops") in (0, 1)
        await wait_until_async(
            lambda: sample(registry, "sheepdog_outbox_oldest_seconds", target="ops") == 0,
            what="age back to 0",
        )
    finally:
        await robot.close()


async def test_an_unexpected_error_does_not_strand_rows(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path, robot: WeChatRobot
) -> None:
    """If a worker step blows up, its rows go back to the queue and are delivered later."""
    _, config = write_config(
        tmp_path, targets_config(tmp_path, {"ops": {"type": "wechat", "url": robot.url()}})
    )
    client = await start_bridge(config, clock=fake_clock)
    notifier = client.app[BRIDGE].plan.routes["ops"].notifier
    real_compose = notifier.compose
    calls = 0

    def flaky_compose(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return real_compose(*args, **kwargs)

    notifier.compose = flaky_compose  # type: ignore[method-assign]
    await client.post("/alerts/ops", json=make_payload(), headers=AUTH)
    await wait_until_async(lambda: len(robot.messages) == 1, what="delivery after the error")
    await wait_until_async(lambda: outbox_rows(tmp_path)[0]["status"] == "sent", what="row sent")
    assert calls == 2
