"""The disk fails under the outbox: full, read-only, or the state directory is not a directory.

Real filesystem conditions, not mocks: a small tmpfs filled to the last byte, a tmpfs mounted
read-only (root ignores file modes, not a read-only mount), and a file where ``state_dir``
should be. In each, ``POST /alerts`` answers 503 (so Alertmanager retries), the log says why,
``/-/ready`` fails with the reason, and once the disk is back the service carries on by itself:
no restart, and every notification it accepted is delivered.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sheepdog.config import parse_config
from sheepdog.core.runtime import RUNTIME
from tests.bridge.conftest import ALERT_TOKEN, AUTH, make_payload
from tests.bridge.fakeclock import FakeClock
from tests.faults.conftest import FIGURES, LogRecorder, StartApp
from tests.peers.wechat import Answer, WeChatRobot
from tests.support.polling import wait_until_async


def _mount(mountpoint: Path, options: str) -> None:
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: a small tmpfs cannot be made")
    mountpoint.mkdir(exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {result.stderr}")


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points to unmount after the test (lazily: the app may still hold files there)."""
    mounted: list[Path] = []
    yield mounted
    for mountpoint in reversed(mounted):
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


@pytest.fixture
async def clock() -> AsyncIterator[FakeClock]:
    fake = FakeClock(autojump=0.02)
    yield fake
    await fake.close()


@pytest.fixture
async def robot(clock: FakeClock) -> AsyncIterator[WeChatRobot]:
    peer = await WeChatRobot(keys=["disk-key"], clock=clock.monotonic, per_minute=1000).start()
    yield peer
    await peer.close()


def _config(state_dir: Path, robot: WeChatRobot) -> Any:
    return parse_config(
        {
            "state_dir": str(state_dir),
            "auth": {"bearer_tokens": [ALERT_TOKEN]},
            "bridge": {
                "targets": {"ops": {"type": "wechat", "url": robot.url(), "rate_per_minute": 0}}
            },
        },
        env={},
    )


async def _post(client: TestClient, name: str, filler: int = 0) -> int:
    payload = make_payload(1, name=name, summary="x" * filler)
    response = await client.post("/alerts/ops", json=payload, headers=AUTH)
    body = await response.json()
    if response.status == 503:
        assert body == {"error": "could not store the notification; retry later"}
    else:
        assert response.status == 200, body
    return response.status


def _fill(path: Path) -> int:
    """Write ``path`` until the filesystem is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as file:
        while True:
            try:
                written += file.write(chunk) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        # The last bytes too: the filesystem may still hold less than a chunk.
        for size in (4096, 512, 1):
            try:
                while True:
                    written += file.write(b"\0" * size) or 0
            except OSError:
                pass
    return written


def _delivered(robot: WeChatRobot, name: str) -> int:
    return sum(1 for message in robot.messages if f"**{name}**" in message.content)


async def test_disk_full_answers_503_and_recovers_when_space_returns(
    start_bridge: StartApp,
    clock: FakeClock,
    robot: WeChatRobot,
    tmp_path: Path,
    mounts: list[Path],
    logs: LogRecorder,
) -> None:
    """A full disk: 503 and a log line saying so; space freed: accepted again, all delivered."""
    disk = tmp_path / "disk"
    _mount(disk, "size=1m")
    mounts.append(disk)
    client = await start_bridge(_config(disk / "state", robot), clock=clock)
    assert await _post(client, "BeforeFull") == 200
    await wait_until_async(lambda: _delivered(robot, "BeforeFull") == 1, what="the first delivery")
    # One notification is being retried when the disk fills up, and gets through meanwhile:
    # the worker cannot record that it was sent until there is space again.
    robot.fail(Answer(errcode=-1))
    assert await _post(client, "InFlight") == 200
    await wait_until_async(lambda: len(robot.arrivals) >= 3, what="retries of the notification")

    filler = disk / "filler"
    _fill(filler)
    robot.recover()
    await wait_until_async(lambda: _delivered(robot, "InFlight") == 1, what="delivery while full")
    accepted = ["BeforeFull", "InFlight"]
    refused: list[str] = []
    for index in range(200):  # the WAL may have some room left: post until it is gone too
        name = f"WhileFull{index:03d}"
        if await _post(client, name, filler=2000) == 503:
            refused.append(name)
            if len(refused) == 3:
                break
        else:
            accepted.append(name)
    assert len(refused) == 3, "the outbox never noticed that the disk was full"
    ready = await client.get("/-/ready")
    assert ready.status == 503
    assert "database or disk is full" in await ready.text()
    stored = [r for r in logs.records if r.getMessage().startswith("could not store")]
    assert stored and all("disk is full" in str(getattr(r, "reason", "")) for r in stored)
    await wait_until_async(
        lambda: any(
            "disk is full" in str(getattr(r, "reason", ""))
            for r in logs.records
            if r.name == "sheepdog.bridge.worker"
        ),
        what="the worker saying why it cannot go on",
    )
    assert all(r.exc_info is None for r in logs.records)

    filler.unlink()  # space is back; nothing is restarted
    for name in refused:  # as Alertmanager does: it retries what got a 5xx
        assert await _post(client, name) == 200
    accepted += refused
    assert await _post(client, "AfterFull") == 200
    accepted.append("AfterFull")
    await wait_until_async(
        lambda: all(_delivered(robot, name) for name in accepted),
        what="every accepted notification delivered",
    )
    await _wait_ready(client)
    await wait_until_async(lambda: _pending(client) == 0, what="nothing left waiting")
    lost = [name for name in accepted if not _delivered(robot, name)]
    duplicates = {
        name: _delivered(robot, name) - 1 for name in accepted if _delivered(robot, name) > 1
    }
    assert lost == []
    # The worker knew it had sent "InFlight": it records that once it can, and never resends.
    assert duplicates == {}
    FIGURES.fault("disk full under the outbox (tmpfs filled)")
    FIGURES.fault("POST /alerts answered 503 while the disk was full", len(refused))
    FIGURES.fault("delivery succeeded while its outbox row could not be written")
    FIGURES.notifications(accepted=len(accepted), lost=len(lost))
    FIGURES.duplicates["disk full"] += sum(duplicates.values())


def _pending(client: TestClient) -> float:
    registry = client.app[RUNTIME].registry
    return registry.get_sample_value("sheepdog_outbox_pending", {"target": "ops"}) or 0.0


async def _wait_ready(client: TestClient) -> None:
    async def ready() -> bool:
        return (await client.get("/-/ready")).status == 200

    await wait_until_async(ready, what="ready again")


async def test_read_only_state_dir_answers_503_and_recovers_when_writable(
    start_bridge: StartApp,
    clock: FakeClock,
    robot: WeChatRobot,
    tmp_path: Path,
    mounts: list[Path],
    logs: LogRecorder,
) -> None:
    """state_dir on a read-only filesystem: 503 and why; remounted writable, it carries on."""
    disk = tmp_path / "disk"
    _mount(disk, "size=1m,ro")
    mounts.append(disk)
    client = await start_bridge(_config(disk / "state", robot), clock=clock)
    assert await _post(client, "WhileReadOnly") == 503
    ready = await client.get("/-/ready")
    assert ready.status == 503
    assert "Read-only file system" in await ready.text()
    reasons = [
        str(getattr(r, "reason", ""))
        for r in logs.records
        if r.getMessage().startswith("could not store")
    ]
    assert reasons and "Read-only file system" in reasons[0]

    subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    assert await _post(client, "WhileReadOnly") == 200  # Alertmanager's retry
    assert await _post(client, "AfterRemount") == 200
    await wait_until_async(
        lambda: _delivered(robot, "WhileReadOnly") and _delivered(robot, "AfterRemount"),
        what="both delivered without a restart",
    )
    await _wait_ready(client)
    FIGURES.fault("state_dir on a read-only filesystem")
    FIGURES.notifications(accepted=2, lost=0)


async def test_state_dir_blocked_by_a_file_recovers_when_it_is_moved(
    start_bridge: StartApp,
    clock: FakeClock,
    robot: WeChatRobot,
    tmp_path: Path,
    logs: LogRecorder,
) -> None:
    """A file where state_dir's parent should be: 503 naming the problem; removed, it recovers."""
    blocker = tmp_path / "volume"
    blocker.write_text("a file where a directory should be", encoding="utf-8")
    client = await start_bridge(_config(blocker / "state", robot), clock=clock)
    assert await _post(client, "Blocked") == 503
    ready = await client.get("/-/ready")
    assert "Not a directory" in await ready.text()
    blocker.unlink()
    assert await _post(client, "Blocked") == 200
    await wait_until_async(lambda: _delivered(robot, "Blocked") == 1, what="delivered")
    await _wait_ready(client)
    FIGURES.fault("state_dir blocked by a file")
    FIGURES.notifications(accepted=1, lost=0)
