"""Two `sheepdog serve` replicas on one PostgreSQL, as a team runs them behind a load balancer.

Real processes, a real PostgreSQL (the session's throwaway cluster), the WeChat robot peer
enforcing its 20 messages a minute (errcode 45009 past it), the fake upstream for the proxy.
Leases are shortened (``database.lease_seconds``) so that a takeover after ``kill -9`` takes
seconds, not half a minute.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.bridge.conftest import ALERT_TOKEN, make_payload
from tests.faults.conftest import FIGURES
from tests.peers.upstream import FakeUpstream
from tests.peers.wechat import Answer, WeChatRobot
from tests.proxy.conftest import TEAM_A_KEY, UPSTREAM_KEY
from tests.support.polling import wait_until_async
from tests.support.ports import free_port
from tests.support.postgres import PASSWORD, PostgresServer
from tests.support.processes import SheepdogProcess
from tests.support.state import StoredState

pytestmark = pytest.mark.slow

HEADERS = {"Authorization": f"Bearer {ALERT_TOKEN}", "Content-Type": "application/json"}
LEASE_SECONDS = 2
_NAME = re.compile(r"\*\*(Rep\d{3})\*\*")


class Replicas:
    """Two replicas of one config (different ports) on one database."""

    def __init__(self, tmp_path: Path, url: str, robot: WeChatRobot, upstream: FakeUpstream):
        self.tmp_path = tmp_path
        self.url = url
        self.robot = robot
        self.upstream = upstream
        self.processes: list[SheepdogProcess] = []

    def config(self, port: int) -> Path:
        document = {
            "listen": f"127.0.0.1:{port}",
            "state_dir": str(self.tmp_path / f"state-{port}"),
            "database": {"url": self.url, "lease_seconds": LEASE_SECONDS},
            "auth": {"bearer_tokens": [ALERT_TOKEN]},
            "proxy": {
                "upstream": {"base_url": self.upstream.base_url, "api_key": UPSTREAM_KEY},
                "clients": [{"name": "team-a", "key": TEAM_A_KEY, "monthly_budget_usd": 10}],
            },
            "bridge": {
                "targets": {"ops": {"type": "wechat", "url": self.robot.url()}},
                "retry": {"initial_seconds": 0.2, "max_seconds": 1},
            },
        }
        path = self.tmp_path / f"sheepdog-{port}.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        return path

    async def start(self) -> SheepdogProcess:
        port = free_port()
        process = SheepdogProcess(self.config(port), port, self.tmp_path)
        await asyncio.to_thread(process.start)
        self.processes.append(process)
        return process

    async def stop(self) -> None:
        for process in self.processes:
            await asyncio.to_thread(process.stop)

    def output(self) -> str:
        return "".join(process.output for process in self.processes)


@pytest.fixture
async def robot() -> AsyncIterator[WeChatRobot]:
    """A robot that enforces WeChat's 20 a minute (45009 past it)."""
    peer = await WeChatRobot(keys=["replica-key"], per_minute=20).start()
    yield peer
    await peer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = await FakeUpstream().start()
    yield fake
    await fake.close()


@pytest.fixture
async def replicas(
    tmp_path: Path, postgres_url: str, robot: WeChatRobot, upstream: FakeUpstream
) -> AsyncIterator[Replicas]:
    pair = Replicas(tmp_path, postgres_url, robot, upstream)
    yield pair
    await pair.stop()
    output = pair.output()
    tracebacks = [line for line in output.splitlines() if "Traceback" in line]
    assert tracebacks == [], tracebacks[0][-3000:]
    assert PASSWORD not in output and ALERT_TOKEN not in output and TEAM_A_KEY not in output


@pytest.fixture
def stored_pg(tmp_path: Path, postgres_url: str) -> Iterator[StoredState]:
    state = StoredState(tmp_path, postgres_url)
    yield state
    state.close()


async def post(process: SheepdogProcess, payload: dict[str, Any]) -> tuple[int, str]:
    return await asyncio.to_thread(
        process.request, "POST", "/alerts/ops", json.dumps(payload).encode(), HEADERS
    )


async def chat(process: SheepdogProcess) -> int:
    body = json.dumps({"model": "gpt-4.1", "messages": []}).encode()
    headers = {"Authorization": f"Bearer {TEAM_A_KEY}", "Content-Type": "application/json"}
    status, _ = await asyncio.to_thread(
        process.request, "POST", "/v1/chat/completions", body, headers
    )
    return status


def metric(process: SheepdogProcess, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"{process.base_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def names_in(robot: WeChatRobot) -> list[str]:
    """Alert names in the order the robot saw them, every occurrence."""
    return [name for message in robot.messages for name in _NAME.findall(message.content)]


async def test_a_client_spends_through_one_replica_and_is_refused_by_the_other(
    replicas: Replicas, upstream: FakeUpstream
) -> None:
    """team-a spends its $10 through A; within about a second B knows and refuses it."""
    upstream.script("gpt-4.1", prompt_tokens=5_000_000, completion_tokens=0)  # exactly $10
    a = await replicas.start()
    b = await replicas.start()
    assert await chat(a) == 200
    await wait_until_async(
        lambda: metric(b, "llm_spend_month_usd", 'client="team-a"') >= 10.0,
        timeout=10,
        what="B reading A's spend back",
    )
    assert await chat(b) == 429
    assert await chat(a) == 429
    assert len(upstream.received) == 1


async def test_100_notifications_through_both_replicas_arrive_once_in_order_within_the_rate(
    replicas: Replicas, robot: WeChatRobot, stored_pg: StoredState
) -> None:
    """100 notifications posted alternately to A and B for one robot: every alert arrives,
    once, in the order posted, and the robot never says 45009 (over 20 a minute)."""
    a = await replicas.start()
    b = await replicas.start()
    names = [f"Rep{index:03d}" for index in range(100)]
    for index, name in enumerate(names):
        status, body = await post((a, b)[index % 2], make_payload(1, name=name))
        assert status == 200, body
    # An Alertmanager retry that reaches the other replica is recognised.
    status, body = await post(b, make_payload(1, name=names[0]))
    assert status == 200 and json.loads(body)["status"] == "duplicate"
    await wait_until_async(
        lambda: stored_pg.statuses() == ["sent"] * 100,
        timeout=120,
        what="every notification sent",
    )
    seen = names_in(robot)
    assert seen == names
    assert robot.errcodes() == []
    FIGURES.notifications(accepted=100, lost=len(set(names) - set(seen)))
    FIGURES.duplicates["two replicas, alternating"] += len(seen) - len(set(seen))


async def test_kill_9_of_the_replica_holding_claims_loses_nothing(
    replicas: Replicas, robot: WeChatRobot, stored_pg: StoredState
) -> None:
    """The replica delivering (holding the robot's lease and claims, retrying a failing robot)
    is killed with SIGKILL; after the lease runs out the other delivers everything."""
    robot.fail(Answer(http_status=500, body="busy"), Answer(errcode=-1))
    a = await replicas.start()
    assert a.process is not None
    pid = a.process.pid
    await wait_until_async(
        lambda: any(
            f":{pid}:" in row["holder"]
            for row in stored_pg.query("SELECT holder FROM outbox_leases")
        ),
        what="A holding the robot's lease",
    )
    b = await replicas.start()
    names = [f"Rep{index:03d}" for index in range(20)]
    for index, name in enumerate(names):
        status, _ = await post((b, a)[index % 2], make_payload(1, name=name))
        assert status == 200
    await wait_until_async(lambda: len(robot.arrivals) >= 3, what="A retrying against the outage")
    at_kill = stored_pg.query("SELECT status, claimed_by FROM outbox_notifications ORDER BY id")
    assert any(row["status"] == "in_flight" and f":{pid}:" in row["claimed_by"] for row in at_kill)
    await asyncio.to_thread(a.kill)
    robot.recover()
    await wait_until_async(
        lambda: stored_pg.statuses() == ["sent"] * 20,
        timeout=60,
        what="B delivering everything after A's lease ran out",
    )
    counts = Counter(names_in(robot))
    lost = [name for name in names if counts[name] == 0]
    assert lost == []
    duplicates = sum(count - 1 for count in counts.values())
    # At least once: only what was in flight at the kill may have gone out twice.
    assert duplicates <= sum(1 for row in at_kill if row["status"] == "in_flight")
    assert 45009 not in robot.errcodes()  # -1 was the outage; never over 20 a minute
    FIGURES.fault("kill -9 of the replica holding the destination's lease (PostgreSQL)")
    FIGURES.notifications(accepted=len(names), lost=len(lost))
    FIGURES.duplicates["replica killed mid-delivery (PostgreSQL)"] += duplicates


async def test_the_database_restarted_under_traffic_loses_nothing(
    replicas: Replicas,
    robot: WeChatRobot,
    upstream: FakeUpstream,
    postgres_server: PostgresServer,
    stored_pg: StoredState,
) -> None:
    """PostgreSQL stopped and started again while alerts and proxied requests keep coming:
    /-/ready says 503 while it is down, alerts are refused with 503 (and retried, as
    Alertmanager does), spend is kept in memory; once it is back every notification is
    delivered once and every request is in the ledger."""
    upstream.script("gpt-4.1", prompt_tokens=100, completion_tokens=10)
    a = await replicas.start()
    b = await replicas.start()
    names = [f"Rep{index:03d}" for index in range(30)]
    requests = 0
    refused = 0

    async def deliver(index: int, name: str) -> None:
        nonlocal refused
        for _ in range(200):  # Alertmanager retries 5xx
            status, _ = await post((a, b)[index % 2], make_payload(1, name=name))
            if status == 200:
                return
            assert status == 503
            refused += 1
            await asyncio.sleep(0.1)
        pytest.fail(f"{name} never accepted")

    for index, name in enumerate(names[:10]):
        await deliver(index, name)
        assert await chat((a, b)[index % 2]) == 200
        requests += 1
    await asyncio.to_thread(postgres_server.stop)
    try:
        for process in (a, b):
            await wait_until_async(
                lambda p=process: p.get("/-/ready")[0] == 503,
                timeout=15,
                what="ready 503 while the database is down",
            )
        status, body = await post(a, make_payload(1, name=names[10]))
        assert status == 503 and "retry later" in body
        refused += 1
        for index in range(10):  # the proxy keeps serving; spend waits in memory
            assert await chat((a, b)[index % 2]) == 200
            requests += 1
    finally:
        await asyncio.to_thread(postgres_server.start)
    for index, name in enumerate(names[10:], 10):
        await deliver(index, name)
        assert await chat((a, b)[index % 2]) == 200
        requests += 1
    for process in (a, b):
        await wait_until_async(
            lambda p=process: p.get("/-/ready")[0] == 200, timeout=20, what="ready"
        )
    await wait_until_async(
        lambda: stored_pg.statuses() == ["sent"] * len(names),
        timeout=90,
        what="every notification sent after the restart",
    )
    await wait_until_async(
        lambda: (
            sum(row[3] for row in stored_pg.ledger(time.strftime("%Y-%m", time.gmtime())))
            == requests
        ),
        timeout=15,
        what="every request in the ledger",
    )
    counts = Counter(names_in(robot))
    lost = [name for name in names if counts[name] == 0]
    assert lost == []
    # At least once: a message the robot took while the database was down could not be marked
    # sent; if the holder's lease ran out meanwhile, the replica taking over sends it again.
    assert all(count <= 2 for count in counts.values())
    FIGURES.fault("PostgreSQL stopped and started under traffic")
    FIGURES.fault("alerts answered 503 while PostgreSQL was down", refused)
    FIGURES.notifications(accepted=len(names), lost=len(lost))
    FIGURES.duplicates["PostgreSQL restarted under traffic"] += sum(
        count - 1 for count in counts.values()
    )
