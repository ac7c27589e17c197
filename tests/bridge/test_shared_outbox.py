"""Two processes on one outbox (two apps here, on one fake clock), on either backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from sheepdog.app import create_app
from sheepdog.config import parse_config
from tests.bridge.conftest import AUTH, ROBOT_KEY, make_payload, targets_config
from tests.bridge.fakeclock import FakeClock
from tests.peers.wechat import WeChatRobot
from tests.support.polling import wait_until_async
from tests.support.state import StoredState


async def test_the_rate_limit_history_moves_with_the_destination(
    aiohttp_client: Any,
    fake_clock: FakeClock,
    tmp_path: Path,
    backend: dict[str, Any],
    stored: StoredState,
) -> None:
    """A sends a robot its 20 messages of the minute and stops; B, taking the robot over,
    waits for the minute to pass before the 21st: the robot never answers 45009."""
    robot = await WeChatRobot(keys=[ROBOT_KEY], clock=fake_clock.monotonic).start()
    try:
        document = targets_config(tmp_path, {"ops": {"type": "wechat", "url": robot.url()}})
        document.update(backend)
        document["workers"] = 2  # SQLite shared by several processes, as with `workers: 2`
        document["database"] = {**document.get("database", {}), "lease_seconds": 2}
        config = parse_config(document, env={})
        first = await aiohttp_client(
            create_app(config, registry=CollectorRegistry(), clock=fake_clock)
        )
        for number in range(20):
            response = await first.post(
                "/alerts/ops", json=make_payload(name=f"Hist{number:02d}"), headers=AUTH
            )
            assert response.status == 200
            await wait_until_async(lambda n=number: len(robot.messages) == n + 1, what="sent alone")
        # The robot has the 20th before A records it sent: stopped in between, A would leave
        # it to B to send again (at least once), and the robot would get it twice.
        await wait_until_async(lambda: stored.statuses() == ["sent"] * 20, what="20 sent")
        await first.close()  # a clean stop lets the destination go at once
        second = await aiohttp_client(
            create_app(config, registry=CollectorRegistry(), clock=fake_clock)
        )
        response = await second.post("/alerts/ops", json=make_payload(name="Hist20"), headers=AUTH)
        assert response.status == 200
        await wait_until_async(lambda: len(robot.messages) == 21, what="the 21st, from B")
    finally:
        await robot.close()
    assert robot.errcodes() == []
    assert robot.messages[20].at >= robot.messages[0].at + 60
    assert ["Hist20" in m.content for m in robot.messages] == [False] * 20 + [True]
