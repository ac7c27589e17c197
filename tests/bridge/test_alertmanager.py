"""Done when: a real Alertmanager's firing and resolved notifications reach WeChat, Slack and
email through the bridge."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sheepdog.app import create_app
from sheepdog.config import parse_config
from tests.bridge.conftest import ALERT_TOKEN, SMTP_PASSWORD, targets_config
from tests.peers.slack import SlackWebhook
from tests.peers.smtp import SmtpServer
from tests.peers.wechat import WeChatRobot
from tests.stack._procs import AlertmanagerProcess
from tests.support.polling import wait_until_async

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        ALERTMANAGER is None,
        reason="Alertmanager is not installed (Debian package prometheus-alertmanager)",
    ),
]


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    server = SmtpServer(
        tmp_path, username="alertmanager", password=SMTP_PASSWORD, tls="starttls"
    ).start()
    yield server
    server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def alertmanager_config(bridge_url: str, targets: list[str]) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "sheepdog",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "sheepdog",
                "webhook_configs": [
                    {
                        "url": f"{bridge_url}/alerts/{target}",
                        "send_resolved": True,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials": ALERT_TOKEN}
                        },
                    }
                    for target in targets
                ],
            }
        ],
    }


@pytest.fixture
def start_alertmanager(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], Awaitable[str]]]:
    """Start a real Alertmanager with the config given; its base URL. Stopped after the test."""
    started: list[AlertmanagerProcess] = []

    async def start(config: dict[str, Any]) -> str:
        assert ALERTMANAGER is not None
        workdir = tmp_path / f"alertmanager-{len(started)}"
        workdir.mkdir()
        alertmanager = AlertmanagerProcess(ALERTMANAGER, workdir)
        alertmanager.write_config(config)
        started.append(alertmanager)
        await asyncio.to_thread(alertmanager.start)  # the bridge's loop goes on meanwhile
        return alertmanager.base_url

    yield start
    for alertmanager in started:
        alertmanager.stop()


async def test_alertmanager_to_wechat_slack_and_email(
    aiohttp_server: Any,
    registry: Any,
    tmp_path: Path,
    smtp: SmtpServer,
    http: aiohttp.ClientSession,
    start_alertmanager: Callable[[dict[str, Any]], Awaitable[str]],
) -> None:
    """Firing, then resolved: Alertmanager → bridge → robot, Slack webhook and mailbox."""
    robot = await WeChatRobot(keys=["e2e-robot-key"]).start()
    slack = await SlackWebhook().start()
    try:
        targets = {
            "ops-wechat": {"type": "wechat", "url": robot.url()},
            "ops-slack": {"type": "slack", "url": slack.url},
            "ops-email": {
                "type": "email",
                "smtp": smtp.smtp_section(),
                "from": "sheepdog@example.com",
                "to": ["oncall@example.com"],
            },
        }
        config = parse_config(targets_config(tmp_path, targets), env={})
        server = await aiohttp_server(create_app(config, registry=registry), host="127.0.0.1")
        bridge_url = str(server.make_url("")).rstrip("/")
        am = await start_alertmanager(alertmanager_config(bridge_url, list(targets)))

        now = datetime.now(UTC)
        alert = {
            "labels": {
                "alertname": "SheepdogEndToEnd",
                "severity": "critical",
                "service": "llm-relay",
            },
            "annotations": {"summary": "端到端 <b>test</b> 🔥"},
            "startsAt": (now - timedelta(seconds=10)).isoformat(),
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        }
        async with http.post(f"{am}/api/v2/alerts", json=[alert]) as response:
            assert response.status == 200, await response.text()

        def arrived(word: str) -> bool:
            wechat = any(
                word in m.content and "SheepdogEndToEnd" in m.content for m in robot.messages
            )
            slack_ok = any(word in m["text"] for m in slack.messages)
            mail = any(word in str(m.message["Subject"]) for m in smtp.received)
            return wechat and slack_ok and mail

        await wait_until_async(lambda: arrived("FIRING"), timeout=30, what="firing notifications")
        firing_mail = next(m for m in smtp.received if "FIRING" in str(m.message["Subject"]))
        assert "端到端 &lt;b&gt;test&lt;/b&gt; 🔥" in firing_mail.part("text/html")
        assert f"{am}/#/silences/new?filter=" in robot.messages[0].content

        alert["endsAt"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        async with http.post(f"{am}/api/v2/alerts", json=[alert]) as response:
            assert response.status == 200
        await wait_until_async(
            lambda: arrived("RESOLVED"), timeout=30, what="resolved notifications"
        )
        assert robot.errcodes() == []
        assert slack.replies == []
        assert (
            registry.get_sample_value(
                "sheepdog_alerts_received_total", {"target": "ops-wechat", "status": "resolved"}
            )
            == 1
        )
    finally:
        await robot.close()
        await slack.close()
