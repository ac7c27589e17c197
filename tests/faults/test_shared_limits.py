"""Per-client rate limits held across processes: real `sheepdog serve` processes on one
database, each backend, the openai-style requests of two clients.

Two processes with a limit of 100 requests a minute must admit 100 between them, not 100 each,
however the load balancer (or the kernel, with ``workers``) spreads a client's requests: each
admits against its grant of what is left, renewed at every exchange (about once a second). The
tests send requests until the limit is reached, waiting 0.1 s after a refusal for a spent share
(the next exchange brings a new one); they never assert a time. What they assert is what only
shared counts can give: together the processes admit exactly the limit, and a process refuses
a client over its limit through another before it has admitted any of its own.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.faults.conftest import FIGURES
from tests.peers.upstream import FakeUpstream
from tests.proxy.conftest import TEAM_A_KEY, TEAM_B_KEY, UPSTREAM_KEY
from tests.support.polling import wait_until_async
from tests.support.ports import free_port
from tests.support.postgres import PASSWORD, PostgresServer
from tests.support.processes import SheepdogProcess
from tests.support.state import StoredState

pytestmark = pytest.mark.slow

RPM = 100
"""team-a's requests per minute."""
TPM = 1000
"""team-b's tokens per minute: one "big" request uses them all, a "small" one uses 1."""
_USED = re.compile(r"used (\d+) in the last 60 s")
_OPENED: list[Connection] = []
_KEPT = "rate limit counts kept for the next exchange"


class Connection:
    """One keep-alive HTTP connection: every request on it reaches the same process."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        _OPENED.append(self)

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Any:
        self.http.request(method, path, body, headers)
        response = self.http.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data.startswith(b"{") else data

    def chat(self, key: str, model: str) -> tuple[int, Any]:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        status, answer = self.request("POST", "/v1/chat/completions", body.encode(), headers)
        return int(status), answer

    def served_by(self, pids: list[int]) -> int | None:
        """The process holding the server's end of this connection (Linux: /proc)."""
        self.request("GET", "/-/healthy", None, {})  # accepted by now
        assert self.http.sock is not None
        client_port = self.http.sock.getsockname()[1]
        inode = _server_socket_inode(self.port, client_port)
        for pid in pids:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
                except FileNotFoundError:
                    continue
        return None

    def close(self) -> None:
        self.http.close()


def _server_socket_inode(server_port: int, client_port: int) -> str:
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return fields[9]
    raise AssertionError(f"no server socket for 127.0.0.1:{client_port}")


def _workers(service: SheepdogProcess) -> list[int]:
    assert service.process is not None
    pid = service.process.pid
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def one_connection_per_worker(service: SheepdogProcess) -> tuple[Connection, Connection]:
    """Connections until one reaches each of the two workers (the kernel picks, by hash)."""
    await wait_until_async(lambda: len(_workers(service)) == 2, what="two workers")
    pids = _workers(service)
    found: dict[int, Connection] = {}
    for _ in range(200):
        connection = Connection(service.port)
        pid = await asyncio.to_thread(connection.served_by, pids)
        if pid is None or pid in found:
            connection.close()
            await asyncio.sleep(0.02)  # the second worker may still be starting
            continue
        found[pid] = connection
        if len(found) == 2:
            first, second = found.values()
            return first, second
    pytest.fail("never reached both workers")


def _share_spent(refusal: dict[str, Any]) -> bool:
    return "share of what is left is spent" in refusal["message"]


async def admitted_until_refused(
    connection: Connection, key: str, model: str, most: int
) -> tuple[int, dict[str, Any]]:
    """Requests on ``connection``, one every 0.1 s, until one is refused for the window (not
    for a spent share: that one asks again after the next exchange): how many were admitted
    before it, and the refusal. Failing after ``most``: the process never learned."""
    admitted = 0
    for _ in range(most * 2):
        status, answer = await asyncio.to_thread(connection.chat, key, model)
        if status == 429 and not _share_spent(answer["error"]):
            return admitted, answer["error"]
        if status == 200:
            admitted += 1
            if admitted >= most:
                break
        else:
            assert status == 429, answer
        await asyncio.sleep(0.1)
    pytest.fail(f"admitted {admitted} requests: it never counted the other process's")


async def admit(connection: Connection, key: str, model: str, count: int) -> None:
    """``count`` requests admitted on ``connection``, waiting 0.1 s after a share refusal."""
    admitted = 0
    while admitted < count:
        status, answer = await asyncio.to_thread(connection.chat, key, model)
        if status == 200:
            admitted += 1
            continue
        assert status == 429 and _share_spent(answer["error"]), answer
        await asyncio.sleep(0.1)


def used(refusal: dict[str, Any]) -> int:
    found = _USED.search(refusal["message"])
    assert found is not None, refusal
    return int(found.group(1))


def config(
    tmp_path: Path, port: int, upstream: FakeUpstream, database: dict[str, Any], **more: Any
) -> Path:
    document = {
        "listen": f"127.0.0.1:{port}",
        "state_dir": str(tmp_path / f"state-{port}" if database else tmp_path / "state"),
        **({"database": database} if database else {}),
        "proxy": {
            "upstream": {"base_url": upstream.base_url, "api_key": UPSTREAM_KEY},
            "clients": [
                {"name": "team-a", "key": TEAM_A_KEY, "requests_per_minute": RPM},
                {"name": "team-b", "key": TEAM_B_KEY, "tokens_per_minute": TPM},
            ],
        },
        **more,
    }
    path = tmp_path / f"sheepdog-{port}.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def close_connections() -> Iterator[None]:
    yield
    while _OPENED:
        _OPENED.pop().close()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = await FakeUpstream().start()
    fake.script("big", prompt_tokens=TPM, completion_tokens=0)
    fake.script("small", prompt_tokens=1, completion_tokens=0)
    yield fake
    await fake.close()


def check_output(output: str) -> None:
    tracebacks = [line for line in output.splitlines() if "Traceback" in line]
    assert tracebacks == []
    for secret in (PASSWORD, TEAM_A_KEY, TEAM_B_KEY, UPSTREAM_KEY):
        assert secret not in output


def _shared_out(stored: StoredState) -> bool:
    """Whether two processes hold grants of team-a's requests, neither all of them."""
    rows = stored.query(
        "SELECT process, amount FROM rate_limit_grants WHERE client = 'team-a' AND kind = "
        "'requests'"
    )
    return len(rows) == 2 and all(row["amount"] < RPM for row in rows)


async def test_two_workers_admit_one_limit_between_them(
    tmp_path: Path, backend: dict[str, Any], upstream: FakeUpstream, stored: StoredState
) -> None:
    """``workers: 2``, both exchanging (each holding a grant of part of team-a's 100 requests a
    minute): team-a's requests alternate between a connection to worker X and one to worker Y
    until 100 have gone upstream: both admitted some, together exactly 100, and both
    refuse what comes after (for the window, saying 100 were used). Then team-b's 1,000 tokens
    a minute, used by one request through X: Y refuses its 1-token requests for tokens."""
    port = free_port()
    path = config(tmp_path, port, upstream, backend.get("database", {}), workers=2)
    service = SheepdogProcess(path, port, tmp_path)
    try:
        await asyncio.to_thread(service.start)
        x, y = await one_connection_per_worker(service)
        await wait_until_async(lambda: _shared_out(stored), what="team-a's limit shared out")
        admitted = {"x": 0, "y": 0}
        for _ in range(50 * RPM):
            if len(upstream.received) >= RPM:
                break
            spent = 0
            for name, connection in (("x", x), ("y", y)):
                status, answer = await asyncio.to_thread(connection.chat, TEAM_A_KEY, "gpt-4.1")
                if status == 200:
                    admitted[name] += 1
                else:
                    assert status == 429 and answer["error"]["type"] == "requests", answer
                    spent += 1
            if spent == 2:
                await asyncio.sleep(0.1)  # both wait for their next share
        assert admitted["x"] > 0 and admitted["y"] > 0, admitted
        for connection in (x, y):
            _, refusal = await admitted_until_refused(connection, TEAM_A_KEY, "gpt-4.1", 20)
            assert refusal["type"] == "requests" and used(refusal) == RPM
        assert sum(admitted.values()) == len(upstream.received) == RPM

        await admit(x, TEAM_B_KEY, "big", 1)
        status, answer = await asyncio.to_thread(x.chat, TEAM_B_KEY, "small")
        assert status == 429 and answer["error"]["type"] == "tokens"
        _, refusal = await admitted_until_refused(y, TEAM_B_KEY, "small", 100)
        assert refusal["type"] == "tokens"
        assert used(refusal) >= TPM
    finally:
        await asyncio.to_thread(service.stop)
    check_output(service.output)
    on = "PostgreSQL" if backend else "SQLite"
    FIGURES.fault(f"two workers admitting one client's limit between them ({on})")


async def test_two_replicas_share_limits_and_keep_limiting_while_postgresql_is_down(
    tmp_path: Path, postgres_url: str, postgres_server: PostgresServer, upstream: FakeUpstream
) -> None:
    """Two replicas on one PostgreSQL: team-a's 100 requests through A, and B refuses the next
    one, having admitted none of its own. Then
    PostgreSQL stops: both go on refusing team-a (B with A's counts as last read), A limits
    team-b with its own counts, nothing fails; once PostgreSQL is back, what A counted while it
    was down reaches B, which refuses team-b long before it has admitted 100 of its own."""
    replicas: list[SheepdogProcess] = []
    database = {"url": postgres_url}
    for _ in range(2):
        port = free_port()
        path = config(tmp_path, port, upstream, database, log_level="debug")
        replica = SheepdogProcess(path, port, tmp_path)
        replicas.append(replica)
    a, b = replicas
    try:
        await asyncio.gather(*(asyncio.to_thread(replica.start) for replica in replicas))
        x, y = Connection(a.port), Connection(b.port)
        await admit(x, TEAM_A_KEY, "gpt-4.1", RPM)
        through_b, refusal = await admitted_until_refused(y, TEAM_A_KEY, "gpt-4.1", RPM)
        assert through_b == 0 and used(refusal) == RPM
        assert len(upstream.received) == RPM

        await asyncio.to_thread(postgres_server.stop)
        try:
            for replica in replicas:
                await wait_until_async(
                    lambda r=replica: r.get("/-/ready")[0] == 503,
                    timeout=15,
                    what="ready 503 while the database is down",
                )
            for connection in (x, y):
                status, answer = await asyncio.to_thread(connection.chat, TEAM_A_KEY, "gpt-4.1")
                assert status == 429 and answer["error"]["type"] == "requests"
            # team-b's whole minute of tokens through A alone: A still limits it.
            await admit(x, TEAM_B_KEY, "big", 1)
            status, answer = await asyncio.to_thread(x.chat, TEAM_B_KEY, "small")
            assert status == 429 and answer["error"]["type"] == "tokens"
            # An exchange round fails with those tokens to send: they wait for the next one.
            failed_rounds = a.output.count(_KEPT)
            await wait_until_async(
                lambda: a.output.count(_KEPT) > failed_rounds, what="a failed round"
            )
        finally:
            await asyncio.to_thread(postgres_server.start)
        for replica in replicas:
            await wait_until_async(
                lambda r=replica: r.get("/-/ready")[0] == 200, timeout=20, what="ready"
            )
        _, refusal = await admitted_until_refused(y, TEAM_B_KEY, "small", 100)
        assert refusal["type"] == "tokens" and used(refusal) >= TPM
    finally:
        for replica in replicas:
            await asyncio.to_thread(replica.stop)
    check_output("".join(replica.output for replica in replicas))
    FIGURES.fault("PostgreSQL stopped while two replicas share rate limits")
