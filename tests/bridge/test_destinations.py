"""Delivery per destination: targets on one robot share its rate limit and its FIFO order, and
the limit's history survives reloads and targets moving between robots."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import yaml

from bridge import BRIDGE
from bridge.outbox import Outbox
from sheepdog.config import Config, load_config
from sheepdog.core.db import Database
from sheepdog.core.runtime import RUNTIME
from tests.bridge.conftest import AUTH, ROBOT_KEY, StartBridge, make_payload, targets_config
from tests.bridge.fakeclock import FakeClock
from tests.peers.wechat import WeChatRobot
from tests.support.polling import wait_until_async

OTHER_KEY = "SENTINEL-other-robot-key-3c1d"


def _write(path: Path, document: dict[str, Any]) -> Config:
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return load_config(path, env={})


def _footer_targets(content: str) -> set[str]:
    """The targets whose footer (``<target> · <time>``) a WeChat message carries."""
    return set(re.findall(r'<font color="comment">([\w.-]+) · \d{4}-', content))


async def test_two_targets_on_one_robot_never_exceed_its_20_a_minute_together(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """Critical and warning targets posting to one robot: a burst on both never puts more than
    20 messages in any minute (no 45009), every alert arrives, and a digest holds one target's
    notifications only (each target has its own template and mentions)."""
    robot = await WeChatRobot(keys=[ROBOT_KEY], clock=fake_clock.monotonic).start()
    try:
        targets = {
            "critical": {"type": "wechat", "url": robot.url(), "mentions": {"userids": ["oncall"]}},
            "warning": {"type": "wechat", "url": robot.url()},
        }
        config = _write(tmp_path / "sheepdog.yaml", targets_config(tmp_path, targets))
        client = await start_bridge(config, clock=fake_clock)
        sent = [(("critical", "warning")[n % 2], f"Burst{n:02d}") for n in range(60)]
        answers = await asyncio.gather(
            *(
                client.post(f"/alerts/{target}", json=make_payload(name=name), headers=AUTH)
                for target, name in sent
            )
        )
        assert [a.status for a in answers] == [200] * 60
        assert len(client.app[BRIDGE].workers) == 1  # one robot, one worker

        def everything_arrived() -> bool:
            seen = "\n".join(m.content for m in robot.messages)
            return all(f"**{name}**" in seen for _, name in sent)

        await wait_until_async(everything_arrived, what="every alert delivered")
        assert robot.errcodes() == []
        times = [m.at for m in robot.messages]
        assert all(sum(1 for t in times if start <= t < start + 60) <= 20 for start in times)
        for message in robot.messages:
            if message.body["msgtype"] != "markdown":
                continue
            footers = _footer_targets(message.content)
            assert len(footers) == 1, message.content
            names = set(re.findall(r"\*\*(Burst\d\d)\*\*", message.content))
            assert names <= {name for target, name in sent if target in footers}
    finally:
        await robot.close()


async def test_the_rate_history_survives_a_reload_that_moves_a_target_to_the_robot(
    start_bridge: StartBridge, fake_clock: FakeClock, tmp_path: Path
) -> None:
    """A robot that just took 20 messages from one target: a reload that moves a second target
    onto it makes that target wait for the robot's minute, not start a fresh one."""
    robot = await WeChatRobot(keys=[ROBOT_KEY, OTHER_KEY], clock=fake_clock.monotonic).start()
    try:
        path = tmp_path / "sheepdog.yaml"
        targets = {
            "a": {"type": "wechat", "url": robot.url(ROBOT_KEY)},
            "b": {"type": "wechat", "url": robot.url(OTHER_KEY)},
        }
        config = _write(path, targets_config(tmp_path, targets))
        client = await start_bridge(config, clock=fake_clock)
        for n in range(20):
            response = await client.post(
                "/alerts/a", json=make_payload(name=f"First{n:02d}"), headers=AUTH
            )
            assert response.status == 200
            await wait_until_async(
                lambda n=n: len(robot.messages) == n + 1, what=f"message {n + 1}"
            )
        first = robot.messages[0].at

        targets["b"]["url"] = robot.url(ROBOT_KEY)
        _write(path, targets_config(tmp_path, targets))
        client.app[RUNTIME].load_config = lambda: load_config(path, env={})
        response = await client.post("/-/reload", headers=AUTH)
        assert response.status == 200, await response.text()
        assert len(client.app[BRIDGE].plan.destinations) == 1

        await client.post("/alerts/b", json=make_payload(name="Moved"), headers=AUTH)
        await wait_until_async(lambda: len(robot.messages) == 21, what="the moved target's message")
        assert robot.errcodes() == []
        assert robot.messages[-1].at >= first + 60
        assert robot.messages[-1].key == ROBOT_KEY
    finally:
        await robot.close()


async def test_waiting_rows_are_listed_without_their_payloads(database: Database) -> None:
    """Listing a backlog decodes no payload; a batch's payloads are loaded for it alone."""
    db = database
    outbox = Outbox(db)
    ids = [(await outbox.add("t", make_payload(3, name=f"A{n}"), 1000.0 + n))[0] for n in range(50)]
    rows = await outbox.waiting(["t"], 500)
    assert [row.id for row in rows] == ids
    assert not hasattr(rows[0], "payload")
    loaded = await outbox.payloads(ids[:2])
    assert sorted(loaded) == ids[:2]
    assert loaded[ids[0]]["alerts"][0]["labels"]["alertname"] == "A0"


async def test_a_delivery_decodes_only_the_payloads_it_sends(
    start_bridge: StartBridge, tmp_path: Path, monkeypatch: Any
) -> None:
    """With 30 notifications waiting, each delivery step decodes the payload it sends, never the
    whole backlog (0.1 decoded up to 500 payloads to send one)."""
    decoded: list[list[int]] = []
    real = Outbox.payloads

    async def counting(self: Outbox, ids: Any) -> Any:
        decoded.append(list(ids))
        return await real(self, ids)

    monkeypatch.setattr(Outbox, "payloads", counting)
    config = _write(tmp_path / "sheepdog.yaml", targets_config(tmp_path, {"t": {"type": "log"}}))
    client = await start_bridge(config)
    client.app[BRIDGE].worker_of("t")._task.cancel()  # type: ignore[union-attr]
    for n in range(30):
        await client.post("/alerts/t", json=make_payload(name=f"N{n}"), headers=AUTH)
    bridge = client.app[BRIDGE]
    bridge.workers.clear()
    bridge._reconcile_workers()
    await wait_until_async(
        lambda: sum(len(ids) for ids in decoded) == 30, what="every row delivered"
    )
    assert all(len(ids) == 1 for ids in decoded)
