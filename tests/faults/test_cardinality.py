"""Label cardinality: 10,000 model names and 10,000 bogus keys leave the series count unchanged.

Every label value sheepdog exports comes from its config (priced models, clients, targets) or a
fixed set (routes, codes, reasons): nothing a client sends becomes a label. The test counts the
series in ``/metrics`` after a first round of traffic, sends ten times more with names and keys
never seen before, and counts again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from sheepdog.app import create_app
from sheepdog.config import parse_config
from sheepdog.core.exposition import MetricsRegistry
from tests.faults.conftest import FIGURES
from tests.peers.upstream import FakeUpstream

RELAYED_KEY = "sd-cardinality-relayed"
REFUSED_KEY = "sd-cardinality-no-budget"
ALERT_TOKEN = "cardinality-alert-token"
MODELS = 10_000
RELAYED = 1_000  # of the model names, how many go to the upstream (the rest are refused first)
BOGUS_KEYS = 10_000
BOGUS_TARGETS = 1_000
BOGUS_PATHS = 1_000


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def exposition_series(text: str) -> list[str]:
    """The series lines of a Prometheus exposition (no comments)."""
    return [line for line in text.splitlines() if line and not line.startswith("#")]


async def test_ten_thousand_models_and_bogus_keys_leave_the_series_count_bounded(
    upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """10,000 model names, 10,000 bogus keys, 1,000 bogus targets and paths: no new series."""
    caplog.set_level(logging.WARNING, logger="aiohttp.access")  # 24,000 lines of no interest
    config = parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "auth": {"bearer_tokens": [ALERT_TOKEN]},
            "proxy": {
                "upstream": {"base_url": upstream.base_url, "api_key": "sk-cardinality"},
                "clients": [
                    {"name": "relayed", "key": RELAYED_KEY},
                    # At its budget from the start: refused with 429 once its model is read.
                    {"name": "refused", "key": REFUSED_KEY, "monthly_budget_usd": 0},
                ],
            },
            "bridge": {"targets": {"ops": {"type": "log"}}},
        },
        env={},
    )
    registry = MetricsRegistry()
    server = TestServer(create_app(config, registry=registry), host="127.0.0.1")
    await server.start_server()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    statuses: dict[int, int] = {}

    async def send(method: str, path: str, key: str, body: Any = None) -> None:
        async with session.request(
            method,
            server.make_url(path),
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as response:
            await response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1

    async def traffic(start: int, stop: int) -> None:
        """Requests number ``start`` to ``stop`` of every kind, 64 at a time."""
        jobs: list[Any] = []
        for n in range(start, stop):
            model = f"model-{n}-{'x' * (n % 50)}"
            if n % (MODELS // RELAYED) == 0:
                jobs.append(
                    (
                        "POST",
                        "/v1/chat/completions",
                        RELAYED_KEY,
                        {"model": model, "messages": [], "stream": n % 2 == 0},
                    )
                )
            jobs.append(
                ("POST", "/v1/chat/completions", REFUSED_KEY, {"model": model, "messages": []})
            )
            jobs.append(("POST", "/v1/embeddings", f"sk-bogus-{n}", {"model": model}))
            if n % (MODELS // BOGUS_TARGETS) == 1:
                jobs.append(("POST", f"/alerts/bogus-{n}", ALERT_TOKEN, {}))
                jobs.append(("GET", f"/v1/bogus/{n}/path", RELAYED_KEY, None))
        for index in range(0, len(jobs), 64):
            await asyncio.gather(*(send(*job) for job in jobs[index : index + 64]))

    async def series() -> list[str]:
        async with session.get(server.make_url("/metrics")) as response:
            return exposition_series(await response.text())

    try:
        at_start = await series()
        await traffic(0, MODELS // 10)
        after_first_tenth = await series()
        await traffic(MODELS // 10, MODELS)
        at_end = await series()
    finally:
        await session.close()
        await server.close()

    # The first traffic adds series only for codes and routes seen for the first time, and only
    # with label values from the config or from fixed sets.
    added = sorted(set(after_first_tenth) - set(at_start))
    assert len(added) <= 120, added
    allowed = {
        "model": set(config.proxy.prices.models) | {"other"},
        "client": {"relayed", "refused", "anonymous"},
        "route": {"chat", "completions", "embeddings", "responses", "messages", "other"},
        "target": {"ops"},
    }
    for line in at_start + added:
        for name, value in _LABEL.findall(line):
            assert value in allowed.get(name, {value}), line
    # Nine times more, all with names and keys never seen: not one series more.
    assert len(at_end) == len(after_first_tenth)
    labels = "\n".join(at_end)
    assert "model-" not in labels and "sk-bogus" not in labels and "bogus-" not in labels
    assert statuses[401] == BOGUS_KEYS, statuses
    assert statuses[429] == MODELS
    assert statuses[200] == RELAYED
    assert statuses[404] == BOGUS_TARGETS + BOGUS_PATHS, statuses
    FIGURES.fuzzed["distinct model names sent to the relay"] += MODELS
    FIGURES.fuzzed["bogus client keys"] += BOGUS_KEYS
    FIGURES.fuzzed["bogus bridge targets and /v1 paths"] += BOGUS_TARGETS + BOGUS_PATHS
    FIGURES.fault("label cardinality attack (series count unchanged)")
