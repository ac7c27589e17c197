"""Reloading the config again and again while requests and alerts keep coming: nothing fails.

A real `sheepdog serve` relays streamed and plain requests from several clients and takes
alerts for WeChat and Slack, while the test rewrites its config and reloads it twenty times,
by SIGHUP and by ``POST /-/reload``, one of them a broken config that must be refused. Every
request must succeed and every alert must arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.bridge.conftest import ALERT_TOKEN, make_payload
from tests.faults.conftest import FIGURES
from tests.peers.slack import SlackWebhook
from tests.peers.upstream import FakeUpstream
from tests.peers.wechat import WeChatRobot
from tests.support.polling import wait_until_async
from tests.support.ports import free_port
from tests.support.processes import SheepdogProcess

pytestmark = pytest.mark.slow

KEYS = {"team-a": "sd-reload-team-a", "team-b": "sd-reload-team-b"}
ALERT_HEADERS = {"Authorization": f"Bearer {ALERT_TOKEN}"}
RELOADS = 20
ALERTS = 60
BROKEN_AT = 9


def _document(
    port: int,
    state: Path,
    upstream: FakeUpstream,
    robot: WeChatRobot,
    slack: SlackWebhook,
    generation: int,
) -> dict[str, Any]:
    """The config of reload number ``generation``: each one changes something."""
    clients = [{"name": name, "key": key} for name, key in KEYS.items()]
    if generation % 2:
        clients.append({"name": f"team-{generation}", "key": f"sd-reload-extra-{generation}"})
    return {
        "listen": f"127.0.0.1:{port}",
        "state_dir": str(state),
        "log_level": "debug" if generation % 3 == 0 else "info",
        "auth": {"bearer_tokens": [ALERT_TOKEN]},
        "proxy": {
            "upstream": {
                "base_url": upstream.base_url,
                "api_key": "sk-reload-upstream",
                "timeout_seconds": 30 + generation,
            },
            "clients": clients,
            "pricing": {"gpt-4.1": {"input": 2.0 + generation / 100, "output": 8.0}},
        },
        "bridge": {
            "targets": {
                "ops-wechat": {
                    "type": "wechat",
                    "url": robot.url(),
                    "rate_per_minute": 600 - generation,
                },
                "ops-slack": {"type": "slack", "url": slack.url, "rate_per_minute": 600},
                **({f"extra-{generation}": {"type": "log"}} if generation % 2 else {}),
            },
            "retry": {"initial_seconds": 0.2, "max_seconds": 1 + generation},
        },
    }


async def test_reloads_during_traffic_fail_no_request_and_lose_no_notification(
    tmp_path: Path,
) -> None:
    """20 reloads (SIGHUP and POST, one refused) under proxy and alert traffic: zero failures."""
    upstream = await FakeUpstream().start()
    upstream.script("gpt-4.1", content=["tok"] * 8, event_delay=0.005)
    robot = await WeChatRobot(keys=["reload-key"], per_minute=10_000).start()
    slack = await SlackWebhook().start()
    port = free_port()
    state = tmp_path / "state"
    config = tmp_path / "sheepdog.yaml"

    def write(generation: int, broken: bool = False) -> None:
        document = _document(port, state, upstream, robot, slack, generation)
        if broken:
            document["bridge"]["targets"]["ops-slack"]["url"] = "not a url"
        config.write_text(yaml.safe_dump(document), encoding="utf-8")

    write(0)
    process = SheepdogProcess(config, port, tmp_path)
    failures: list[str] = []
    done = asyncio.Event()
    counts = {"requests": 0, "alerts": 0}
    names: list[str] = []

    async def proxy_traffic(session: aiohttp.ClientSession, worker: int) -> None:
        key = list(KEYS.values())[worker % 2]
        stream = worker % 2 == 0
        while not done.is_set():
            try:
                async with session.post(
                    f"{process.base_url}/v1/chat/completions",
                    json={"model": "gpt-4.1", "stream": stream, "messages": []},
                    headers={"Authorization": f"Bearer {key}"},
                ) as response:
                    body = await response.read()
                    if response.status != 200:
                        failures.append(f"proxy {response.status}: {body[:200]!r}")
                    elif stream and not body.rstrip().endswith(b"data: [DONE]"):
                        failures.append(f"stream cut short: {body[-80:]!r}")
            except aiohttp.ClientError as exc:
                failures.append(f"proxy {type(exc).__name__}: {exc}")
            counts["requests"] += 1

    async def alert_traffic(session: aiohttp.ClientSession) -> None:
        for index in range(ALERTS):
            name = f"Reload{index:02d}"
            target = "ops-wechat" if index % 2 == 0 else "ops-slack"
            try:
                async with session.post(
                    f"{process.base_url}/alerts/{target}",
                    json=make_payload(1, name=name),
                    headers=ALERT_HEADERS,
                ) as response:
                    if response.status != 200:
                        failures.append(f"alert {response.status}: {await response.text()}")
                    else:
                        names.append(name)
            except aiohttp.ClientError as exc:
                failures.append(f"alert {type(exc).__name__}: {exc}")
            counts["alerts"] += 1
            await asyncio.sleep(0.03)

    def reloads_logged() -> int:
        return process.output.count("config reloaded")

    async def reload_storm(session: aiohttp.ClientSession) -> int:
        refused = 0
        for generation in range(1, RELOADS + 1):
            broken = generation == BROKEN_AT
            write(generation, broken=broken)
            if generation % 2:
                before = reloads_logged() + process.output.count("config reload refused")
                process.signal(signal.SIGHUP)
                await wait_until_async(
                    lambda b=before: (
                        reloads_logged() + process.output.count("config reload refused") > b
                    ),
                    what="the SIGHUP reload",
                )
                refused += broken
            else:
                async with session.post(
                    f"{process.base_url}/-/reload", headers=ALERT_HEADERS
                ) as response:
                    answer = await response.json()
                    if broken:
                        assert response.status == 400
                        assert answer["error"].startswith("bridge.targets.ops-slack.url")
                        refused += 1
                    else:
                        assert response.status == 200, answer
            # Requests in flight across every reload, however slow the machine is today.
            await wait_until_async(
                lambda before=counts["requests"]: counts["requests"] >= before + 5,
                what="five more proxy requests before the next reload",
            )
        return refused

    try:
        await asyncio.to_thread(process.start)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            traffic = [asyncio.create_task(proxy_traffic(session, n)) for n in range(6)]
            alerts = asyncio.create_task(alert_traffic(session))
            try:
                refused = await reload_storm(session)
                await alerts
            finally:
                done.set()
                await asyncio.gather(*traffic, return_exceptions=True)
                alerts.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await alerts

            def delivered() -> set[str]:
                texts = [m.content for m in robot.messages]
                texts += [json.dumps(m, ensure_ascii=False) for m in slack.messages]
                return {name for name in names if any(name in text for text in texts)}

            await wait_until_async(
                lambda: delivered() == set(names), timeout=30, what="every alert delivered"
            )
            _, metrics = await asyncio.to_thread(process.get, "/metrics")
    finally:
        await asyncio.to_thread(process.stop)
        await upstream.close()
        await robot.close()
        await slack.close()

    assert failures == []
    assert refused == 1
    assert len(names) == ALERTS
    assert reloads_logged() == RELOADS - 1
    assert "sheepdog_config_last_reload_successful 1.0" in metrics
    assert "Traceback" not in process.output
    assert ALERT_TOKEN not in process.output
    FIGURES.fault("config reload under traffic (SIGHUP and POST /-/reload)", RELOADS)
    FIGURES.fault("broken config reloaded under traffic, refused")
    FIGURES.notifications(accepted=len(names), lost=ALERTS - len(names))
