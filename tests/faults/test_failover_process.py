"""Failover as users meet it: `sheepdog serve` in front of two upstream processes, a steady
openai-SDK load, and the first upstream killed (SIGKILL) in the middle of it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.faults.conftest import FIGURES
from tests.support.ports import free_port
from tests.support.processes import SheepdogProcess

pytestmark = pytest.mark.slow

CLIENT_KEY = "sd-load-SENTINEL-6b1f"
FIRST_KEY = "sk-first-SENTINEL-80d4"
SECOND_KEY = "sk-second-SENTINEL-3c77"
WORKERS = 4
# The upstream as a process of its own: the tests' fake, answering after 20 ms with its name.
_UPSTREAM = """
import asyncio, sys
from tests.peers.upstream import FakeUpstream, Script

async def main() -> None:
    fake = FakeUpstream(scripts={"gpt-4.1": Script(content=(sys.argv[1],), delay=0.02)})
    await fake.start()
    print(fake.base_url, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def start_upstream(name: str, workdir: Path) -> tuple[subprocess.Popen[str], str]:
    with (workdir / f"{name}.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _UPSTREAM, name],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=Path(__file__).parents[2],
        )
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    process.stdout.close()
    return process, base_url


@dataclass
class Outcome:
    started: float
    answer: str | None  # the upstream's name, or None: the request failed


def load(base_url: str, stop: threading.Event, outcomes: list[Outcome]) -> None:
    """One SDK client sending requests back to back until ``stop``; no retries of its own."""
    with openai.OpenAI(base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=10) as sdk:
        while not stop.is_set():
            started = time.monotonic()
            try:
                reply = sdk.chat.completions.create(model="gpt-4.1", messages=[])
                outcomes.append(Outcome(started, reply.choices[0].message.content))
            except openai.APIError:
                outcomes.append(Outcome(started, None))


async def test_with_the_first_upstream_killed_a_steady_load_sees_no_failed_request(
    tmp_path: Path,
) -> None:
    first, first_url = start_upstream("first", tmp_path)
    second, second_url = start_upstream("second", tmp_path)
    port = free_port()
    config = tmp_path / "sheepdog.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": f"127.0.0.1:{port}",
                "state_dir": "state",
                "log_format": "json",
                "proxy": {
                    "upstreams": [
                        {
                            "name": "first",
                            "base_url": first_url,
                            "api_key": FIRST_KEY,
                            "timeout_seconds": 5,
                            "connect_timeout_seconds": 1,
                        },
                        {"name": "second", "base_url": second_url, "api_key": SECOND_KEY},
                    ],
                    "clients": [{"name": "team-a", "key": CLIENT_KEY}],
                },
            }
        )
    )
    process = SheepdogProcess(config, port, tmp_path)
    stop = threading.Event()
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(target=load, args=(f"{process.base_url}/v1", stop, outcomes))
        for _ in range(WORKERS)
    ]
    try:
        await asyncio.to_thread(process.start)
        for thread in threads:
            thread.start()
        while len(outcomes) < 100:
            await asyncio.sleep(0.05)
        killed_at = time.monotonic()
        first.kill()
        first.wait()
        while len([o for o in outcomes if o.started > killed_at]) < 200:
            await asyncio.sleep(0.05)
        stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join)
        status, exposition = await asyncio.to_thread(process.get, "/metrics")
        assert status == 200
    finally:
        stop.set()
        await asyncio.to_thread(process.stop)
        for upstream in (first, second):
            upstream.kill()
            upstream.wait()

    well_before = [o for o in outcomes if o.started < killed_at - 0.5]
    after = [o for o in outcomes if o.started >= killed_at]
    assert well_before and {o.answer for o in well_before} == {"first"}
    # Requests in flight when it died went on to the second too: none failed at all.
    failed = [o for o in outcomes if o.answer is None]
    assert failed == [], f"{len(failed)} failed, the last {failed[-1].started - killed_at:.2f} s in"
    assert {o.answer for o in after} == {"second"}

    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return values.get((name, tuple(sorted(labels.items()))), 0.0)

    # /metrics says which upstream served what, and that the first is down.
    served_first = value("llm_upstream_requests_total", upstream="first", code="200")
    served_second = value("llm_upstream_requests_total", upstream="second", code="200")
    assert served_first == len([o for o in outcomes if o.answer == "first"])
    assert served_second == len([o for o in outcomes if o.answer == "second"])
    # Those in flight when it died, and those that found it gone until it cooled down (3).
    assert 1 <= value("llm_upstream_requests_total", upstream="first", code="error") <= WORKERS + 2
    assert value("llm_upstream_up", upstream="first") == 0
    assert value("llm_upstream_up", upstream="second") == 1
    assert value("llm_upstream_failovers_total", **{"from": "first", "to": "second"}) >= 1
    total = value("llm_requests_total", model="gpt-4.1", route="chat", code="200", client="team-a")
    assert total == len(outcomes)
    for secret in (CLIENT_KEY, FIRST_KEY, SECOND_KEY):
        assert secret not in process.output and secret not in exposition
    assert "Traceback" not in process.output
    FIGURES.fault("requests through a killed upstream's failover, none failed", len(outcomes))
