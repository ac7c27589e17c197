"""`workers: 2`: two processes on one listen, on either backend, as one service."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.bridge.conftest import ALERT_TOKEN, make_payload
from tests.faults.conftest import FIGURES
from tests.peers.upstream import FakeUpstream
from tests.peers.wechat import WeChatRobot
from tests.support.polling import wait_until_async
from tests.support.ports import free_port
from tests.support.processes import SheepdogProcess
from tests.support.state import StoredState

pytestmark = pytest.mark.slow

HEADERS = {"Authorization": f"Bearer {ALERT_TOKEN}", "Content-Type": "application/json"}
_NAME = re.compile(r"\*\*(Work\d{2})\*\*")


def exposition(process: SheepdogProcess) -> str:
    with urllib.request.urlopen(f"{process.base_url}/metrics", timeout=10) as response:
        return response.read().decode()


def sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{series} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_two_workers_serve_one_listen_as_one_service(
    tmp_path: Path, backend: dict[str, Any], stored: StoredState
) -> None:
    """Requests spread over both processes; /metrics on the shared port is the sum of both,
    every time; notifications go out once each, in order; a reload reaches both; a worker
    killed with SIGKILL is started again and nothing is lost."""
    robot = await WeChatRobot(keys=["workers-key"], per_minute=1000).start()
    upstream = await FakeUpstream().start()
    port = free_port()
    document = {
        "listen": f"127.0.0.1:{port}",
        "state_dir": str(tmp_path / "state"),
        "workers": 2,
        "auth": {"bearer_tokens": [ALERT_TOKEN]},
        "proxy": {"upstream": {"base_url": upstream.base_url}},
        "bridge": {"targets": {"ops": {"type": "wechat", "url": robot.url()}}},
        # A short lease, so that the killed worker's destination is taken over in seconds.
        "database": {**backend.get("database", {}), "lease_seconds": 2},
    }
    config = tmp_path / "sheepdog.yaml"
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    service = SheepdogProcess(config, port, tmp_path)
    names = [f"Work{index:02d}" for index in range(20)]
    try:
        await asyncio.to_thread(service.start)
        for _ in range(40):
            status, _ = await asyncio.to_thread(service.get, "/v1/models")
            assert status == 200
        for name in names[:10]:
            status, _ = await asyncio.to_thread(
                service.request,
                "POST",
                "/alerts/ops",
                json.dumps(make_payload(1, name=name)).encode(),
                HEADERS,
            )
            assert status == 200
        requests = 'llm_requests_total{client="anonymous",code="200",model="other",route="other"}'
        received = 'sheepdog_alerts_received_total{status="firing",target="ops"}'
        for _ in range(5):  # whichever process answers the scrape, it counts both
            text = await asyncio.to_thread(exposition, service)
            assert sample(text, requests) == 40
            assert sample(text, received) == 10
        pids = [int(line.split()[0]) for line in _children(service)]
        assert len(pids) == 2

        status, _ = await asyncio.to_thread(service.request, "POST", "/-/reload", None, HEADERS)
        assert status == 200
        await wait_until_async(
            lambda: service.output.count("config reloaded") >= 2, what="both processes reloaded"
        )

        _kill(pids[0])
        await wait_until_async(
            lambda: (
                len(_children(service)) == 2
                and pids[0] not in [int(line.split()[0]) for line in _children(service)]
            ),
            what="the killed worker started again",
        )
        for name in names[10:]:
            for _ in range(100):  # as Alertmanager would: a refused connection is retried
                try:
                    status, _ = await asyncio.to_thread(
                        service.request,
                        "POST",
                        "/alerts/ops",
                        json.dumps(make_payload(1, name=name)).encode(),
                        HEADERS,
                    )
                except OSError:
                    await asyncio.sleep(0.1)
                    continue
                break
            assert status == 200
        await wait_until_async(
            lambda: stored.statuses() == ["sent"] * 20,
            timeout=60,
            what="every notification sent",
        )
    finally:
        await asyncio.to_thread(service.stop)
        await robot.close()
        await upstream.close()
    seen = [name for message in robot.messages for name in _NAME.findall(message.content)]
    counts = Counter(seen)
    assert [name for name in names if counts[name] == 0] == []
    assert sorted(set(seen), key=seen.index) == names
    assert "Traceback" not in service.output
    on = "PostgreSQL" if backend else "SQLite"
    FIGURES.fault(f"kill -9 of one of two workers ({on})")
    FIGURES.notifications(accepted=len(names), lost=0)
    FIGURES.duplicates[f"two workers, one killed ({on})"] += len(seen) - len(set(seen))


def _children(service: SheepdogProcess) -> list[str]:
    assert service.process is not None
    path = Path(f"/proc/{service.process.pid}/task/{service.process.pid}/children")
    return [f"{pid} " for pid in path.read_text().split()]


def _kill(pid: int) -> None:
    import os
    import signal

    os.kill(pid, signal.SIGKILL)
