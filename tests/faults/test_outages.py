"""Channel outages in simulated time: WeChat failing for ten minutes, Slack throttling, SMTP down.

The app runs in this process on a fake clock that jumps ahead whenever everything waits, so ten
minutes of outage take well under a second. The peers stamp every request with the same clock,
and the gaps between their arrival times are the backoff sheepdog really kept.

Bounds on a gap: never sooner than the backoff's jittered lower half (or ``Retry-After``), never
later than its full step plus :data:`SLACK`: the clock may also jump ahead while a request is on
the wire, by at most an idle worker's poll interval (there is always one: the ``log`` target).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bridge.worker import IDLE_POLL_SECONDS
from sheepdog.cli import main
from sheepdog.config import Config, load_config
from tests.bridge.conftest import ALERT_TOKEN, AUTH, SMTP_PASSWORD, make_payload
from tests.bridge.fakeclock import ROUNDING, FakeClock
from tests.faults.conftest import FIGURES, LogRecorder, StartApp
from tests.peers.slack import Reply, SlackWebhook
from tests.peers.smtp import SmtpServer
from tests.peers.wechat import Answer, WeChatRobot
from tests.support.polling import wait_until_async

OUTAGE_SECONDS = 600.0
SLACK = IDLE_POLL_SECONDS + 0.5
INITIAL, MAXIMUM = 1.0, 300.0


@pytest.fixture
async def clock() -> AsyncIterator[FakeClock]:
    fake = FakeClock(autojump=0.02)
    yield fake
    await fake.close()


def write_config(tmp_path: Path, targets: dict[str, Any], **retry: float) -> tuple[Path, Config]:
    """The config file (for the `sheepdog outbox` command too) and what it loads to."""
    document = {
        "state_dir": str(tmp_path / "state"),
        "auth": {"bearer_tokens": [ALERT_TOKEN]},
        "bridge": {
            "targets": {**targets, "stdout": {"type": "log"}},
            "retry": {"initial_seconds": INITIAL, "max_seconds": MAXIMUM, **retry},
        },
    }
    path = tmp_path / "sheepdog.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path, load_config(path, env={})


def rows(tmp_path: Path, target: str) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(tmp_path / "state" / "sheepdog.db")) as conn:
        conn.row_factory = sqlite3.Row
        return [
            dict(row)
            for row in conn.execute(
                "SELECT * FROM outbox_notifications WHERE target = ? ORDER BY id", (target,)
            )
        ]


def backoff_bounds(attempt: int) -> tuple[float, float]:
    """The delay before retry number ``attempt``: the upper half of its step."""
    step = min(MAXIMUM, INITIAL * 2.0 ** (attempt - 1))
    return step / 2, step


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def post(client: Any, target: str, name: str) -> None:
    response = await client.post(f"/alerts/{target}", json=make_payload(1, name=name), headers=AUTH)
    assert response.status == 200, await response.text()


async def test_wechat_failing_for_ten_minutes_loses_nothing_and_backs_off(
    start_bridge: StartApp, clock: FakeClock, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """WeChat answering 45009 and 500 for 10 simulated minutes: exponential backoff, all arrive."""
    robot = await WeChatRobot(keys=["outage-key"], clock=clock.monotonic).start()
    try:
        _, config = write_config(tmp_path, {"ops": {"type": "wechat", "url": robot.url()}})
        client = await start_bridge(config, clock=clock)
        started = clock.monotonic()
        robot.fail(
            Answer(errcode=45009),
            Answer(http_status=500, body="Internal Server Error"),
            until=started + OUTAGE_SECONDS,
        )
        names = [f"Outage{index:02d}" for index in range(30)]
        await post(client, "ops", names[0])
        # More notifications come in through the outage, at three moments of it.
        for moment, batch in ((60.0, names[1:10]), (240.0, names[10:20]), (450.0, names[20:])):
            await wait_until_async(
                lambda m=moment: clock.monotonic() - started >= m, what=f"t+{moment}"
            )
            for name in batch:
                await post(client, "ops", name)
        await wait_until_async(
            lambda: (
                all(row["status"] == "sent" for row in rows(tmp_path, "ops"))
                and len(rows(tmp_path, "ops")) == len(names)
            ),
            what="everything sent after the outage",
        )
    finally:
        await robot.close()

    seen = "\n".join(message.content for message in robot.messages)
    lost = [name for name in names if f"**{name}**" not in seen]
    assert lost == []
    assert rows(tmp_path, "ops")[0]["attempts"] >= 8
    # Every attempt of the first notification, through the outage: the backoff schedule.
    during = [at - started for at in robot.arrivals if at < started + OUTAGE_SECONDS]
    assert len(during) >= 8
    for attempt, (before, after) in enumerate(pairwise(during), 1):
        low, high = backoff_bounds(attempt)
        assert low - ROUNDING <= after - before <= high + SLACK, (attempt, during)
    assert max(b - a for a, b in pairwise(during)) <= MAXIMUM + SLACK
    first_after = min(at - started for at in robot.arrivals if at >= started + OUTAGE_SECONDS)
    assert first_after <= OUTAGE_SECONDS + MAXIMUM + SLACK
    assert set(robot.errcodes()) == {45009}
    assert (
        sample(
            registry, "sheepdog_notification_failures_total", target="ops", reason="rate_limited"
        )
        >= 4
    )
    assert (
        sample(
            registry, "sheepdog_notification_failures_total", target="ops", reason="server_error"
        )
        >= 4
    )
    assert sample(registry, "sheepdog_notifications_total", target="ops", result="failed") == 0
    FIGURES.fault("WeChat 45009 and HTTP 500 for 10 simulated minutes")
    FIGURES.fault("WeChat outage attempts answered with a failure", len(during))
    FIGURES.notifications(accepted=len(names), lost=len(lost))


async def test_slack_429_retry_after_is_honoured(
    start_bridge: StartApp, clock: FakeClock, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """Slack 429 with Retry-After is waited out exactly; a 500 between them backs off."""
    slack = await SlackWebhook(clock=clock.monotonic).start()
    try:
        slack.script(
            Reply(429, "rate_limited", retry_after="30"),
            Reply(500, "internal_error"),
            Reply(429, "rate_limited", retry_after="120"),
            Reply(503, "service_unavailable", retry_after="45"),
        )
        _, config = write_config(tmp_path, {"chat": {"type": "slack", "url": slack.url}})
        client = await start_bridge(config, clock=clock)
        await post(client, "chat", "Throttled")
        await wait_until_async(lambda: len(slack.messages) == 1, what="the Slack message")
    finally:
        await slack.close()
    gaps = [b - a for a, b in pairwise(slack.requests)]
    assert len(gaps) == 4
    assert 30 - ROUNDING <= gaps[0] <= 30 + SLACK
    low, high = backoff_bounds(2)
    assert low - ROUNDING <= gaps[1] <= high + SLACK
    assert 120 - ROUNDING <= gaps[2] <= 120 + SLACK
    assert 45 - ROUNDING <= gaps[3] <= 45 + SLACK
    assert (
        sample(
            registry, "sheepdog_notification_failures_total", target="chat", reason="rate_limited"
        )
        == 2
    )
    assert "Throttled" in str(slack.messages[0])
    FIGURES.fault("Slack 429 with Retry-After", 2)
    FIGURES.fault("Slack 5xx", 2)
    FIGURES.notifications(accepted=1, lost=0)


async def test_smtp_down_then_up_then_refusing_the_login(
    start_bridge: StartApp,
    clock: FakeClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    logs: LogRecorder,
) -> None:
    """SMTP down: retried until it is back, then delivered; a refused login is a dead letter."""
    server = SmtpServer(tmp_path, username="alertmanager", password=SMTP_PASSWORD, tls="starttls")
    server.start()
    server.stop()  # the mail server is down from the start
    try:
        targets = {
            "mail": {
                "type": "email",
                "smtp": server.smtp_section(),
                "from": "sheepdog@example.com",
                "to": ["oncall@example.com"],
            }
        }
        path, config = write_config(tmp_path, targets)
        client = await start_bridge(config, clock=clock)
        await post(client, "mail", "MailWhileDown")
        await wait_until_async(
            lambda: rows(tmp_path, "mail")[0]["attempts"] >= 4, what="four attempts"
        )
        down = rows(tmp_path, "mail")[0]
        assert down["status"] == "in_flight"
        assert down["last_error"].startswith("connection_error")
        # The retry recorded is a backoff step ahead, no more.
        assert 0 < down["next_attempt_at"] - down["updated_at"] <= backoff_bounds(4)[1]

        await asyncio.to_thread(server.start)
        await wait_until_async(lambda: len(server.received) == 1, what="the mail after the outage")
        assert "MailWhileDown" in str(server.received[0].message["Subject"])
        await wait_until_async(lambda: rows(tmp_path, "mail")[0]["status"] == "sent", what="sent")

        server.password = "rotated-on-the-server"  # the server now refuses our login
        await post(client, "mail", "MailLoginRefused")
        await wait_until_async(
            lambda: rows(tmp_path, "mail")[1]["status"] == "dead", what="dead letter"
        )
        dead = rows(tmp_path, "mail")[1]
        assert dead["attempts"] == 1
        assert dead["last_error"].startswith("auth_failed: SMTP 535")
    finally:
        await asyncio.to_thread(server.stop)

    capsys.readouterr()
    assert await asyncio.to_thread(main, ["outbox", "dead", "--config", str(path)]) == 0
    listing = capsys.readouterr().out
    line = next(line for line in listing.splitlines() if "MailLoginRefused" in line)
    assert line.split()[:3] == [str(dead["id"]), "mail", "dead"]
    assert "auth_failed: SMTP 535" in line
    assert "MailWhileDown" not in listing
    assert SMTP_PASSWORD not in listing
    dead_logs = [r for r in logs.records if r.getMessage().startswith("notification dead-lettered")]
    assert [getattr(r, "target", None) for r in dead_logs] == ["mail"]
    assert "auth_failed" in str(getattr(dead_logs[0], "error", ""))
    FIGURES.fault("SMTP server down (connection refused)", down["attempts"])
    FIGURES.fault("SMTP server refusing the login (535), dead-lettered")
    FIGURES.notifications(accepted=2, lost=0)


async def test_wechat_hanging_past_the_timeout_is_retried_until_it_answers(
    start_bridge: StartApp, clock: FakeClock, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """A robot that accepts the connection and never answers in time: timeouts, retried, sent."""
    robot = await WeChatRobot(keys=["hang-key"], clock=clock.monotonic).start()
    try:
        _, config = write_config(
            tmp_path, {"ops": {"type": "wechat", "url": robot.url()}}, timeout_seconds=0.5
        )
        client = await start_bridge(config, clock=clock)
        # Well past the timeout, and the timeout well past a busy machine's answer time: a slow
        # answer taken for a timeout would be sent again.
        robot.fail(Answer(delay=2.0, http_status=504, body="gateway timeout"))
        await post(client, "ops", "Hanging")
        await wait_until_async(
            lambda: (
                sample(
                    registry, "sheepdog_notification_failures_total", target="ops", reason="timeout"
                )
                >= 3
            ),
            what="three timed-out attempts",
        )
        robot.recover()
        await wait_until_async(lambda: rows(tmp_path, "ops")[0]["status"] == "sent", what="sent")
    finally:
        await robot.close()
    assert [m.content.count("**Hanging**") for m in robot.messages] == [1]
    assert rows(tmp_path, "ops")[0]["attempts"] >= 4
    FIGURES.fault(
        "WeChat robot hanging past the request timeout",
        int(
            sample(registry, "sheepdog_notification_failures_total", target="ops", reason="timeout")
        ),
    )
    FIGURES.notifications(accepted=1, lost=0)


async def test_every_channel_failing_at_once_loses_nothing(
    start_bridge: StartApp, clock: FakeClock, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """WeChat, Slack and SMTP failing together for ten simulated minutes: all arrive, once."""
    robot = await WeChatRobot(keys=["storm-key"], clock=clock.monotonic).start()
    slack = await SlackWebhook(clock=clock.monotonic).start()
    smtp = SmtpServer(tmp_path)
    smtp.start()
    smtp.stop()
    try:
        _, config = write_config(
            tmp_path,
            {
                "wechat": {"type": "wechat", "url": robot.url()},
                "slack": {"type": "slack", "url": slack.url},
                "mail": {
                    "type": "email",
                    "smtp": smtp.smtp_section(),
                    "from": "sheepdog@example.com",
                    "to": ["oncall@example.com"],
                },
            },
        )
        client = await start_bridge(config, clock=clock)
        started = clock.monotonic()
        robot.fail(
            Answer(errcode=45009),
            Answer(http_status=500, body="busy"),
            Answer(errcode=-1),
            until=started + OUTAGE_SECONDS,
        )
        slack.script(
            *[Reply(429, "rate_limited", retry_after="60")] * 5,
            *[Reply(503, "service_unavailable")] * 3,
        )
        names = {
            target: [f"Storm{target.title()}{n}" for n in range(8)]
            for target in ("wechat", "slack", "mail")
        }
        for step in range(8):
            await wait_until_async(
                lambda s=step: clock.monotonic() - started >= s * 60.0, what=f"t+{step * 60}"
            )
            for target, batch in names.items():
                await post(client, target, batch[step])
            if step == 5:
                await asyncio.to_thread(smtp.start)  # the mail server comes back after 5 min
        await wait_until_async(
            lambda: (
                all(row["status"] == "sent" for target in names for row in rows(tmp_path, target))
                and sum(len(rows(tmp_path, target)) for target in names) == 24
            ),
            what="everything sent",
        )
    finally:
        await robot.close()
        await slack.close()
        await asyncio.to_thread(smtp.stop)

    delivered = {
        "wechat": [message.content for message in robot.messages],
        "slack": [json.dumps(message, ensure_ascii=False) for message in slack.messages],
        "mail": [str(mail.message["Subject"]) + mail.part("text/plain") for mail in smtp.received],
    }
    counts = {
        name: sum(1 for text in delivered[target] if name in text)
        for target, batch in names.items()
        for name in batch
    }
    lost = [name for name, count in counts.items() if count == 0]
    assert lost == []
    assert set(counts.values()) == {1}, counts  # in one message each: none sent twice
    for target in names:
        assert sample(registry, "sheepdog_notifications_total", target=target, result="failed") == 0
        assert sample(registry, "sheepdog_notifications_total", target=target, result="retried") > 0
    FIGURES.fault("WeChat, Slack and SMTP failing at the same time for 10 simulated minutes")
    FIGURES.notifications(accepted=len(counts), lost=len(lost))
