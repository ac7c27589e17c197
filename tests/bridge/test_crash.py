"""kill -9 in the middle of delivering: nothing is lost, it goes out after the restart."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from tests.bridge.conftest import ALERT_TOKEN, make_payload
from tests.peers.wechat import WeChatRobot
from tests.support.polling import wait_until_async
from tests.support.ports import free_port
from tests.support.processes import SheepdogProcess

pytestmark = pytest.mark.slow


def _statuses(state: Path) -> list[str]:
    with closing(sqlite3.connect(state / "sheepdog.db")) as conn:
        return [
            row[0] for row in conn.execute("SELECT status FROM outbox_notifications ORDER BY id")
        ]


async def test_kill_9_while_retrying_then_restart_delivers(
    tmp_path: Path, refused_port: int
) -> None:
    """Rows a killed `sheepdog serve` held in flight are delivered by the next one, in order."""
    robot = await WeChatRobot(keys=["crash-key"]).start()
    try:
        state = tmp_path / "state"
        port = free_port()

        def write_config(url: str) -> Path:
            path = tmp_path / "sheepdog.yaml"
            document = {
                "listen": f"127.0.0.1:{port}",
                "state_dir": str(state),
                "auth": {"bearer_tokens": [ALERT_TOKEN]},
                "bridge": {"targets": {"ops": {"type": "wechat", "url": url}}},
            }
            path.write_text(yaml.safe_dump(document), encoding="utf-8")
            return path

        # First run: the robot's address is wrong, so deliveries are being retried.
        unreachable = f"http://127.0.0.1:{refused_port}/cgi-bin/webhook/send?key=crash-key"
        process = SheepdogProcess(write_config(unreachable), port, tmp_path)
        await asyncio.to_thread(process.start)
        headers = {"Authorization": f"Bearer {ALERT_TOKEN}", "Content-Type": "application/json"}
        for name in ("One", "Two", "Three"):
            body = json.dumps(make_payload(1, name=name)).encode()
            status, _ = await asyncio.to_thread(
                process.request, "POST", "/alerts/ops", body, headers
            )
            assert status == 200
        await wait_until_async(lambda: "in_flight" in _statuses(state), what="a row in flight")
        await asyncio.to_thread(process.kill)
        assert "sent" not in _statuses(state)

        # Second run, pointed at the robot: everything goes out, oldest first.
        restarted = SheepdogProcess(write_config(robot.url()), port, tmp_path)
        await asyncio.to_thread(restarted.start)
        try:
            await wait_until_async(
                lambda: _statuses(state) == ["sent"] * 3,
                timeout=30,
                what="all three sent after the restart",
            )
        finally:
            await asyncio.to_thread(restarted.stop)
        seen = [
            next(n for n in ("One", "Two", "Three") if f"**{n}**" in m.content)
            for m in robot.messages
        ]
        assert seen == ["One", "Two", "Three"]
    finally:
        await robot.close()
