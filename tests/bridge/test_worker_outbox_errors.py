"""A worker whose outbox cannot be written for a while (disk full) sends nothing twice."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bridge import BRIDGE
from sheepdog.config import parse_config
from sheepdog.core.db import DatabaseUnavailable
from tests.bridge.conftest import (
    AUTH,
    ROBOT_KEY,
    StartBridge,
    make_payload,
    targets_config,
)
from tests.bridge.fakeclock import FakeClock
from tests.peers.wechat import Answer, WeChatRobot
from tests.support.polling import wait_until_async


def _statuses(tmp_path: Path) -> list[str]:
    with closing(sqlite3.connect(tmp_path / "state" / "sheepdog.db")) as conn:
        return [row[0] for row in conn.execute("SELECT status FROM outbox_notifications")]


def _failing(times: int, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, raising DatabaseUnavailable the first ``times`` calls (a full disk)."""
    calls = {"n": 0}

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            raise DatabaseUnavailable("sheepdog.db: database or disk is full")
        return await method(*args, **kwargs)

    return wrapper


async def test_delivered_but_not_recorded_is_recorded_later_not_resent(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """When marking a delivered row sent fails, the worker marks it later instead of resending."""
    robot = await WeChatRobot(keys=[ROBOT_KEY], clock=fake_clock.monotonic).start()
    try:
        targets = {"ops": {"type": "wechat", "url": robot.url()}}
        client = await start_bridge(
            parse_config(targets_config(tmp_path, targets), env={}), clock=fake_clock
        )
        outbox = client.app[BRIDGE].outbox
        outbox.mark_sent = _failing(3, outbox.mark_sent)  # type: ignore[method-assign]
        response = await client.post("/alerts/ops", json=make_payload(1), headers=AUTH)
        assert response.status == 200
        await wait_until_async(lambda: _statuses(tmp_path) == ["sent"], what="marked sent at last")
        assert len(robot.messages) == 1
    finally:
        await robot.close()


async def test_a_failed_attempt_not_recorded_does_not_restart_the_parts(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """If a retry cannot be written down, the worker still resumes at the part that failed."""
    robot = await WeChatRobot(keys=[ROBOT_KEY], clock=fake_clock.monotonic).start()
    try:
        targets = {"ops": {"type": "wechat", "url": robot.url(), "rate_per_minute": 0}}
        client = await start_bridge(
            parse_config(targets_config(tmp_path, targets), env={}), clock=fake_clock
        )
        outbox = client.app[BRIDGE].outbox
        outbox.mark_retry = _failing(1, outbox.mark_retry)  # type: ignore[method-assign]
        robot.fail(None, Answer(errcode=-1))  # every other request fails: each part once
        payload = make_payload(40, summary="a long summary " * 12)
        response = await client.post("/alerts/ops", json=payload, headers=AUTH)
        assert response.status == 200
        await wait_until_async(lambda: _statuses(tmp_path) == ["sent"], what="sent")
        parts = [m.content.split("\n", 1)[0].rsplit(" ", 1)[-1] for m in robot.messages]
        assert len(parts) >= 3
        assert parts == [f"({n}/{len(parts)})" for n in range(1, len(parts) + 1)]
        assert len(robot.arrivals) == 2 * len(parts) - 1
    finally:
        await robot.close()
