"""kill -9 of `sheepdog serve` with 100 notifications waiting and WeChat failing: nothing lost.

A real `sheepdog serve` process takes 100 notifications while the WeChat robot fails, is killed
with SIGKILL (no clean-up of any kind), and is started again with the robot healthy. Every
alert must reach the robot. Alerts delivered twice are counted: delivery is at least once, so a
message the robot accepted just before the kill, for a notification the outbox still held in
flight, goes out again after the restart. A notification the outbox had recorded as sent never
goes out again.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.bridge.conftest import ALERT_TOKEN, make_payload
from tests.faults.conftest import FIGURES
from tests.peers.wechat import Answer, WeChatRobot
from tests.support.polling import wait_until_async
from tests.support.ports import free_port
from tests.support.processes import SheepdogProcess
from tests.support.state import StoredState

pytestmark = pytest.mark.slow

NOTIFICATIONS = 100
NAMES = [f"Crash{index:03d}" for index in range(NOTIFICATIONS)]
_NAME = re.compile(r"\*\*(Crash\d{3})\*\*")
HEADERS = {"Authorization": f"Bearer {ALERT_TOKEN}", "Content-Type": "application/json"}

# How the robot fails before the kill: always, or two requests in three.
FAILING = (Answer(http_status=500, body="upstream busy"), Answer(errcode=-1), Answer(errcode=45009))
FLAKY = (Answer(http_status=500, body="upstream busy"), Answer(errcode=-1), None)


def _rows(stored: StoredState) -> dict[int, tuple[str, str]]:
    """Outbox rows by id: (status, alert name)."""
    return {
        row["id"]: (row["status"], json.loads(row["alert_names"])[0])
        for row in stored.query("SELECT id, status, alert_names FROM outbox_notifications")
    }


def _names_in(messages: list[str]) -> Counter[str]:
    """How many messages name each alert."""
    counts: Counter[str] = Counter()
    for content in messages:
        counts.update(set(_NAME.findall(content)))
    return counts


@pytest.mark.parametrize("outage", ["failing", "flaky"])
async def test_kill_9_with_100_pending_then_restart_delivers_every_alert(
    tmp_path: Path, outage: str, backend: dict[str, Any], stored: StoredState
) -> None:
    """After kill -9 and a restart, all 100 alerts arrive; none the outbox had sent comes twice.
    On PostgreSQL the restarted process takes the robot over once the dead one's lease ends."""
    robot = await WeChatRobot(keys=["crash-key"], per_minute=1000).start()
    state = tmp_path / "state"
    port = free_port()
    config = tmp_path / "sheepdog.yaml"
    document = {
        "listen": f"127.0.0.1:{port}",
        "state_dir": str(state),
        "auth": {"bearer_tokens": [ALERT_TOKEN]},
        "bridge": {
            "targets": {"ops": {"type": "wechat", "url": robot.url()}},
            "retry": {"initial_seconds": 0.2, "max_seconds": 1},
        },
        **backend,
    }
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    first = SheepdogProcess(config, port, tmp_path)
    second = SheepdogProcess(config, port, tmp_path)
    try:
        robot.fail(*(FAILING if outage == "failing" else FLAKY))
        await asyncio.to_thread(first.start)
        for index, name in enumerate(NAMES):
            payload = make_payload(1, name=name, summary=f"crash test {index}")
            status, _ = await asyncio.to_thread(
                first.request, "POST", "/alerts/ops", json.dumps(payload).encode(), HEADERS
            )
            assert status == 200
        if outage == "failing":
            await wait_until_async(
                lambda: len(robot.arrivals) >= 5, what="attempts against the outage"
            )
        else:
            await wait_until_async(lambda: len(robot.messages) >= 2, what="some messages through")
        await asyncio.to_thread(first.kill)
        at_kill = _rows(stored)
        delivered_before = len(robot.messages)
        assert len(at_kill) == NOTIFICATIONS
        sent_at_kill = {name for status, name in at_kill.values() if status == "sent"}
        waiting_at_kill = sum(1 for status, _ in at_kill.values() if status != "sent")
        if outage == "failing":
            assert waiting_at_kill == NOTIFICATIONS, "all 100 were waiting when killed"
        assert waiting_at_kill > 0

        robot.recover()
        await asyncio.to_thread(second.start)
        await wait_until_async(
            lambda: all(status == "sent" for status, _ in _rows(stored).values()),
            timeout=60,
            what="every notification sent after the restart",
        )
    finally:
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)
        await robot.close()

    contents = [message.content for message in robot.messages]
    counts = _names_in(contents)
    lost = [name for name in NAMES if counts[name] == 0]
    assert lost == []
    after_restart = _names_in(contents[delivered_before:])
    # What the outbox knew it had sent is never sent again.
    assert not sent_at_kill & set(after_restart)
    duplicates = {name: count - 1 for name, count in counts.items() if count > 1}
    # Only alerts of notifications still in flight at the kill can come twice, once more each.
    assert set(duplicates) <= {name for status, name in at_kill.values() if status != "sent"}
    assert all(extra == 1 for extra in duplicates.values())
    assert "Traceback" not in second.output
    assert ALERT_TOKEN not in first.output + second.output
    on = "" if not backend else ", PostgreSQL"
    FIGURES.fault(f"kill -9 of sheepdog serve, WeChat {outage}{on}")
    FIGURES.fault("WeChat robot failing (500, errcode -1, 45009) before a crash")
    FIGURES.notifications(accepted=NOTIFICATIONS, lost=len(lost))
    FIGURES.duplicates[f"crash recovery, WeChat {outage}{on}"] += sum(duplicates.values())
