"""Fixtures for the bridge: the local peers, a fake clock, and a running bridge app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from sheepdog.app import create_app
from sheepdog.config import Config
from sheepdog.core.clock import Clock
from sheepdog.core.exposition import MetricsRegistry
from tests.bridge.fakeclock import FakeClock
from tests.peers.slack import SlackWebhook
from tests.peers.smtp import SmtpServer
from tests.peers.wechat import WeChatRobot

# Copies of the payloads captured from Alertmanager 0.25 (shared/fixtures/alertmanager).
FIXTURES = Path(__file__).resolve().parent / "data" / "alertmanager"

# Sentinels: if one of these ever shows up in a log, a metric or an answer, a secret leaked.
ROBOT_KEY = "SENTINEL-robot-key-7f3a9c"
SLACK_TOKEN_PATH = "/services/T0SHEEP/B0DOG/sl4ckt0k3n"
SMTP_PASSWORD = "SENTINEL-smtp-password-41b2"
ALERT_TOKEN = "SENTINEL-alert-token-0d8e"


def fixture_payload(name: str) -> dict[str, Any]:
    """A real Alertmanager 0.25 payload from the shared fixtures."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def make_payload(
    alerts: int = 1,
    *,
    status: str = "firing",
    name: str = "TestAlert",
    group: str | None = None,
    summary: str = "something is wrong",
    start: str = "2026-11-26T21:00:00Z",
    extra_labels: dict[str, str] | None = None,
    fingerprint_prefix: str = "fp",
) -> dict[str, Any]:
    """A valid webhook payload with ``alerts`` alerts of one group."""
    items = []
    for index in range(alerts):
        labels = {"alertname": name, "severity": "warning", "instance": f"host-{index}:9100"}
        labels.update(extra_labels or {})
        items.append(
            {
                "status": status,
                "labels": labels,
                "annotations": {"summary": f"{summary} #{index}"},
                "startsAt": start,
                "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-26T21:30:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
                "fingerprint": f"{fingerprint_prefix}{name}{index:04d}",
            }
        )
    return {
        "receiver": "bridge",
        "status": status,
        "alerts": items,
        "groupLabels": {"alertname": name},
        "commonLabels": {"alertname": name, "severity": "warning"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": group or f'{{}}:{{alertname="{name}"}}',
        "truncatedAlerts": 0,
    }


@pytest.fixture
async def fake_clock() -> AsyncIterator[FakeClock]:
    """Time that jumps ahead whenever everything waits on it (for backoff, rate limits)."""
    clock = FakeClock(autojump=0.02)
    yield clock
    await clock.close()


@pytest.fixture
async def robot() -> AsyncIterator[WeChatRobot]:
    """A WeChat robot on the real clock, accepting the sentinel key."""
    peer = await WeChatRobot(keys=[ROBOT_KEY]).start()
    yield peer
    await peer.close()


@pytest.fixture
async def slack() -> AsyncIterator[SlackWebhook]:
    peer = await SlackWebhook().start()
    yield peer
    await peer.close()


@pytest.fixture
def smtp_server(tmp_path: Path) -> Any:
    """An SMTP server requiring STARTTLS and a login (the sentinel password)."""
    server = SmtpServer(tmp_path, username="alertmanager", password=SMTP_PASSWORD, tls="starttls")
    server.start()
    yield server
    server.stop()


StartBridge = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def start_bridge(aiohttp_client: Any, registry: CollectorRegistry) -> StartBridge:
    """Start the whole app (bridge included) for ``config``; returns the test client."""

    async def start(
        config: Config, *, clock: Clock | None = None, fresh_registry: bool = False
    ) -> TestClient:
        app = create_app(
            config, registry=MetricsRegistry() if fresh_registry else registry, clock=clock
        )
        client: TestClient = await aiohttp_client(app)
        return client

    return start


def targets_config(
    tmp_path: Path,
    targets: dict[str, Any],
    *,
    retry: dict[str, Any] | None = None,
    auth: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A config document with ``targets``, the sentinel bearer token and a temp state_dir."""
    document: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "bridge": {"targets": targets, "timezone": "Asia/Shanghai"},
    }
    if retry is not None:
        document["bridge"]["retry"] = retry
    if auth:
        document["auth"] = {"bearer_tokens": [ALERT_TOKEN]}
    document["bridge"].update(extra or {})
    return document


AUTH = {"Authorization": f"Bearer {ALERT_TOKEN}"}
