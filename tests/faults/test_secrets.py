"""Secrets: one config with a sentinel for every secret, everything exercised, nothing leaked.

Both upstream keys, both client keys, both alert bearer tokens (one from a file), the basic-auth
password, the WeChat robot key in its URL, the Slack webhook token in its path and the SMTP
password are all sentinels. A real `sheepdog serve` (debug logging, JSON lines) relays good and
bad requests, meets an upstream that rejects, fails, hangs and breaks off, fails over to the
second upstream, refuses a client over its rate limit, takes alerts whose
deliveries fail with peers echoing the URL in their errors, reloads (by SIGHUP, by POST, and a
refused one with a sentinel in the broken value); then every command runs: check-config,
render, outbox list/dead/retry, report. No log line, metric, HTTP body, command output, nor a
byte of the database may hold a sentinel.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.bridge.conftest import make_payload
from tests.faults.conftest import FIGURES
from tests.peers.slack import Reply, SlackWebhook
from tests.peers.smtp import SmtpServer
from tests.peers.upstream import FakeUpstream
from tests.peers.wechat import Answer, WeChatRobot
from tests.support.polling import wait_until_async
from tests.support.ports import free_port
from tests.support.processes import SheepdogProcess

pytestmark = pytest.mark.slow

UPSTREAM_KEY = "SENTINEL-upstream-key-e1f0"
BACKUP_KEY = "SENTINEL-backup-upstream-key-4f7a"
CLIENT_A_KEY = "SENTINEL-client-a-key-7c2d"
CLIENT_B_KEY = "SENTINEL-client-b-key-90ab"
BEARER = "SENTINEL-bearer-token-3b8e"
BEARER_FROM_FILE = "SENTINEL-bearer-file-token-51d4"
BASIC_PASSWORD = "SENTINEL-basic-password-c6a9"
WECHAT_KEY = "SENTINEL-wechat-robot-key-28f1"
SLACK_TOKEN = "SENTINEL-slack-webhook-token-d03e"
SMTP_PASSWORD = "SENTINEL-smtp-password-6f5b"
SENTINELS = {
    "upstream api_key": UPSTREAM_KEY,
    "backup upstream api_key": BACKUP_KEY,
    "client key a": CLIENT_A_KEY,
    "client key b": CLIENT_B_KEY,
    "bearer token": BEARER,
    "bearer token from a file": BEARER_FROM_FILE,
    "basic password": BASIC_PASSWORD,
    "WeChat robot key": WECHAT_KEY,
    "Slack webhook token": SLACK_TOKEN,
    "SMTP password": SMTP_PASSWORD,
}
ALERTS = {"Authorization": f"Bearer {BEARER}"}


class Seen:
    """Everything that came out of sheepdog, to search for sentinels at the end."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.texts.append((where, text))

    def leaks(self) -> list[str]:
        return [
            f"{name} in {where}"
            for where, text in self.texts
            for name, secret in SENTINELS.items()
            if secret in text
        ]


def cli(seen: Seen, config: Path, *args: str) -> int:
    """Run a `sheepdog` command as a user does; keep its output."""
    result = subprocess.run(
        [sys.executable, "-m", "sheepdog.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=config.parent,
    )
    seen.add(f"sheepdog {' '.join(args)} (stdout)", result.stdout)
    seen.add(f"sheepdog {' '.join(args)} (stderr)", result.stderr)
    return result.returncode


async def test_no_secret_reaches_a_log_metric_answer_output_or_the_database(
    tmp_path: Path,
) -> None:
    """Every secret is a sentinel; after exercising everything, none appears anywhere."""
    seen = Seen()
    upstream = await FakeUpstream().start()
    backup = await FakeUpstream().start()
    robot = await WeChatRobot(keys=[WECHAT_KEY], per_minute=10_000).start()
    slack = await SlackWebhook(hook_path=f"/services/T0SHEEP/B0DOG/{SLACK_TOKEN}").start()
    smtp = SmtpServer(
        tmp_path, username="alertmanager", password="not-what-sheepdog-has", tls="starttls"
    ).start()
    port = free_port()
    config = tmp_path / "sheepdog.yaml"
    (tmp_path / "bearer.txt").write_text(BEARER_FROM_FILE + "\n", encoding="utf-8")
    (tmp_path / "upstream.key").write_text(UPSTREAM_KEY, encoding="utf-8")

    def write(**changes: Any) -> None:
        document: dict[str, Any] = {
            "listen": f"127.0.0.1:{port}",
            "state_dir": str(tmp_path / "state"),
            "log_format": "json",
            "log_level": "debug",
            "auth": {
                "bearer_tokens": [BEARER],
                "bearer_tokens_file": ["bearer.txt"],
                "basic": {"username": "alertmanager", "password": BASIC_PASSWORD},
            },
            "proxy": {
                "upstreams": [
                    {
                        "name": "primary",
                        "base_url": upstream.base_url,
                        "api_key_file": "upstream.key",
                        "timeout_seconds": 1,
                    },
                    {
                        "name": "backup",
                        "base_url": backup.base_url,
                        "api_key": BACKUP_KEY,
                        "models": ["gpt-4.1-mini"],
                    },
                ],
                "clients": [
                    {"name": "team-a", "key": CLIENT_A_KEY, "requests_per_minute": 15},
                    {"name": "team-b", "key": CLIENT_B_KEY, "monthly_budget_usd": 0},
                ],
            },
            "bridge": {
                "targets": {
                    "ops-wechat": {"type": "wechat", "url": robot.url(WECHAT_KEY)},
                    "ops-slack": {"type": "slack", "url": slack.url},
                    "ops-email": {
                        "type": "email",
                        # Its password, not the server's yet: the first mails are refused.
                        "smtp": {**smtp.smtp_section(), "password": SMTP_PASSWORD},
                        "from": "sheepdog@example.com",
                        "to": ["oncall@example.com"],
                    },
                },
                "retry": {"initial_seconds": 0.1, "max_seconds": 0.5},
            },
        }
        document.update(changes)
        config.write_text(yaml.safe_dump(document), encoding="utf-8")

    write()
    process = SheepdogProcess(config, port, tmp_path)
    base = process.base_url
    try:
        assert cli(seen, config, "check-config") == 0
        # Deliveries will fail first, with peers that echo the URL (and key) in their errors.
        robot.script(
            Answer(http_status=502, body=f"bad gateway: {robot.url(WECHAT_KEY)}"),
            Answer(errcode=-1),
        )
        slack.script(
            Reply(500, f"internal error handling {slack.url}"), Reply(404, "channel_not_found")
        )
        await asyncio.to_thread(process.start)
        async with aiohttp.ClientSession() as session:

            async def call(method: str, path: str, **kwargs: Any) -> int:
                async with session.request(method, base + path, **kwargs) as response:
                    seen.add(f"{method} {path} → {response.status}", await response.read())
                    seen.add(f"{method} {path} headers", json.dumps(dict(response.headers)))
                    return response.status

            def chat(key: str, model: str = "gpt-4.1", stream: bool = False) -> dict[str, Any]:
                return {
                    "json": {"model": model, "stream": stream, "messages": []},
                    "headers": {"Authorization": f"Bearer {key}"},
                }

            # The relay: good, refused, and every way the upstream can go wrong.
            upstream.script("deepseek-v3.2", status=401)
            upstream.script("gpt-4o", status=500)
            upstream.script("o3", hang=True)
            upstream.script("gpt-5", break_after_events=1)
            upstream.script("gpt-4.1-mini", status=503)  # answered by the backup
            assert await call("POST", "/v1/chat/completions", **chat(CLIENT_A_KEY)) == 200
            assert (
                await call("POST", "/v1/chat/completions", **chat(CLIENT_A_KEY, stream=True)) == 200
            )
            assert await call("POST", "/v1/chat/completions", **chat("sd-wrong-key")) == 401
            assert await call("POST", "/v1/chat/completions", json={"model": "gpt-4.1"}) == 401
            assert await call("POST", "/v1/chat/completions", **chat(CLIENT_B_KEY)) == 429
            assert (
                await call("POST", "/v1/chat/completions", **chat(CLIENT_A_KEY, "deepseek-v3.2"))
                == 401
            )
            assert await call("POST", "/v1/chat/completions", **chat(CLIENT_A_KEY, "gpt-4o")) == 500
            assert await call("POST", "/v1/chat/completions", **chat(CLIENT_A_KEY, "o3")) == 504
            with contextlib.suppress(aiohttp.ClientPayloadError):
                await call("POST", "/v1/chat/completions", **chat(CLIENT_A_KEY, "gpt-5", True))
            assert (
                await call("GET", "/v1/models", headers={"Authorization": f"Bearer {CLIENT_A_KEY}"})
                == 200
            )
            assert await call(
                "GET", "/v1/../admin", headers={"Authorization": f"Bearer {CLIENT_A_KEY}"}
            ) in (400, 404)
            assert (
                await call("POST", "/v1/chat/completions", **chat(CLIENT_A_KEY, "gpt-4.1-mini"))
                == 200
            )
            # Over its 15 requests a minute: refused with the rate limit's headers.
            statuses = [
                await call("POST", "/v1/chat/completions", **chat(CLIENT_A_KEY)) for _ in range(10)
            ]
            assert 429 in statuses

            # The bridge: wrong and right credentials of every kind, then failing deliveries.
            wrong_basic = base64.b64encode(b"alertmanager:wrong").decode()
            right_basic = base64.b64encode(f"alertmanager:{BASIC_PASSWORD}".encode()).decode()
            payload = {"json": make_payload(1, name="SecretsCheck")}
            assert await call("POST", "/alerts/ops-wechat", **payload) == 401
            assert (
                await call(
                    "POST",
                    "/alerts/ops-wechat",
                    **payload,
                    headers={"Authorization": f"Basic {wrong_basic}"},
                )
                == 401
            )
            assert (
                await call(
                    "POST",
                    "/alerts/ops-wechat",
                    **payload,
                    headers={"Authorization": f"Basic {right_basic}"},
                )
                == 200
            )
            assert await call("POST", "/alerts/ops-slack", **payload, headers=ALERTS) == 200
            assert (
                await call(
                    "POST",
                    "/alerts/ops-email",
                    **payload,
                    headers={"Authorization": f"Bearer {BEARER_FROM_FILE}"},
                )
                == 200
            )
            assert await call("POST", "/alerts/nowhere", **payload, headers=ALERTS) == 404
            assert await call("POST", "/alerts/ops-wechat", data=b"{", headers=ALERTS) == 400
            await wait_until_async(
                lambda: len(robot.messages) == 1, what="WeChat, after two failures"
            )
            await wait_until_async(
                lambda: (
                    '"ops-slack"' in process.output
                    and process.output.count("notification dead-lettered") >= 2
                ),
                what="Slack and email dead-lettered",
            )

            # Reloads: by POST, by SIGHUP, and one refused with a sentinel in the broken value.
            assert await call("POST", "/-/reload") == 401
            assert await call("POST", "/-/reload", headers=ALERTS) == 200
            process.signal(signal.SIGHUP)
            await wait_until_async(
                lambda: process.output.count("config reloaded") >= 2, what="SIGHUP"
            )
            write(
                bridge={
                    "targets": {"ops-wechat": {"type": "wechat", "url": f"wechat-{WECHAT_KEY}"}}
                }
            )
            assert await call("POST", "/-/reload", headers=ALERTS) == 400
            assert cli(seen, config, "check-config") == 2
            write()
            assert await call("POST", "/-/reload", headers=ALERTS) == 200
            for path in ("/metrics", "/-/ready", "/-/healthy"):
                assert await call("GET", path) == 200

            # The commands, while it runs: outbox, dead letters sent again, render, report.
            assert cli(seen, config, "outbox") == 0
            assert cli(seen, config, "outbox", "dead") == 0
            smtp.password = SMTP_PASSWORD  # the login works now
            assert cli(seen, config, "outbox", "retry", "--all-dead") == 0
            await wait_until_async(
                lambda: len(smtp.received) == 1 and len(slack.messages) == 1,
                timeout=30,
                what="dead letters sent again",
            )
            for target in ("ops-wechat", "ops-slack", "ops-email"):
                assert cli(seen, config, "render", target) == 0
            for output in ("table", "csv", "json"):
                assert cli(seen, config, "report", "--format", output) == 0
            assert await call("GET", "/metrics") == 200
    finally:
        await asyncio.to_thread(process.stop)
        await upstream.close()
        await backup.close()
        await robot.close()
        await slack.close()
        smtp.stop()

    seen.add("sheepdog serve log", process.output)
    for path in sorted((tmp_path / "state").iterdir()):
        seen.add(f"database file {path.name}", path.read_bytes())
    # The secrets were really in play: sent where they belong, and scrubbed where they showed.
    assert all(r.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}" for r in upstream.received)
    assert [r.headers["Authorization"] for r in backup.received] == [f"Bearer {BACKUP_KEY}"]
    assert not [
        r
        for r in (*upstream.received, *backup.received)
        if CLIENT_A_KEY in str(dict(r.headers)) or CLIENT_B_KEY in str(dict(r.headers))
    ]
    assert smtp.auth_attempts[-1] == ("alertmanager", True)
    assert "<redacted>" in process.output
    assert "Traceback" not in process.output
    assert seen.leaks() == []
    FIGURES.fault("secret sentinels searched in every output", len(SENTINELS))
