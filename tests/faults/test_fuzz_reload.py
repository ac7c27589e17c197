"""Fuzzing reloads: whatever the config file holds when ``POST /-/reload`` comes, no 500.

A running sheepdog reloads configs mutated from a valid one: values of wrong types, keys
removed or unknown, targets changing type, coming and going. Each reload is applied (200) or
refused with a 400 that names the key path, and the service goes on: the valid config reloads
again, readiness returns, and an alert posted after it is delivered. Config loading alone is
fuzzed in ``test_fuzz_config.py``; this covers what a reload does beyond it (checking the
templates of every target, swapping proxy settings, starting and stopping workers).
"""

from __future__ import annotations

import copy
import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from sheepdog.config import load_config
from tests.bridge.conftest import make_payload
from tests.faults.background import Served
from tests.faults.conftest import FIGURES, LogRecorder
from tests.faults.test_fuzz_config import trees
from tests.peers.wechat import WeChatRobot
from tests.support.fuzzing import examples
from tests.support.loop import LoopThread
from tests.support.polling import wait_until

pytestmark = pytest.mark.fuzz

TOKEN = "reload-fuzz-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Service:
    served: Served
    registry: CollectorRegistry
    path: Path
    base: dict[str, Any]
    state_dir: Path
    logs: LogRecorder


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("fuzz-reload")
    thread = LoopThread()
    logs = LogRecorder.attached(logging.INFO)
    robot = thread.run(WeChatRobot(keys=["reload-key"], per_minute=1_000_000).start())
    base: dict[str, Any] = {
        "state_dir": str(workdir / "state"),
        "log_level": "info",
        "auth": {"bearer_tokens": [TOKEN]},
        "proxy": {
            "upstream": {"base_url": "http://127.0.0.1:9/v1", "timeout_seconds": 5},
            "clients": [{"name": "team", "key": "reload-client-key", "monthly_budget_usd": 5}],
            "pricing": {"gpt-4.1": {"input": 2, "output": 8}},
        },
        "bridge": {
            "timezone": "UTC",
            "targets": {
                "ops": {"type": "wechat", "url": robot.url(), "rate_per_minute": 0},
                "spare": {"type": "log"},
            },
            "retry": {"initial_seconds": 0.05, "max_seconds": 0.2},
        },
    }
    path = workdir / "sheepdog.yaml"
    path.write_text(yaml.safe_dump(base), encoding="utf-8")
    served = Served.create(thread, load_config(path, {}))
    try:
        yield Service(served, served.registry, path, base, workdir / "state", logs)
    finally:
        served.stop()
        thread.run(robot.close())
        thread.close()
        logs.detach()


def _paths(node: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*where, key))
            found += _paths(value, (*where, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.append((*where, index))
            found += _paths(value, (*where, index))
    return found


@st.composite
def mutated_configs(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """The base config changed in 1 to 3 ways (``auth`` kept, so that reloads stay possible)."""
    document = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p in _paths(document) if p[0] in ("proxy", "bridge", "log_level")]
        kind = draw(st.sampled_from(["replace", "delete", "add", "retype", "new-target"]))
        bridge = document.get("bridge")
        targets = bridge.get("targets", {}) if isinstance(bridge, dict) else None
        if kind == "new-target" and isinstance(bridge, dict) and isinstance(targets, dict):
            bridge["targets"] = targets
            name = draw(st.sampled_from(["extra", "ops", "spare", "x" * 65, "bad name"]))
            targets[name] = {
                "type": draw(st.sampled_from(["wechat", "slack", "email", "log", "sms"])),
                **draw(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "url": st.sampled_from(["http://127.0.0.1:9/hook", "not a url", ""]),
                            "rate_per_minute": st.sampled_from([0, 0.5, -1, "fast"]),
                            "template": st.sampled_from(["team-a.", "../etc/"]),
                        },
                    )
                ),
            }
            continue
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        container: Any = document
        for step in path[:-1]:
            container = container[step]
        key = path[-1]
        if kind == "replace":
            container[key] = draw(trees)
        elif kind == "delete":
            del container[key]
        elif kind == "add" and isinstance(container[key], dict):
            container[key][draw(st.sampled_from(["unknown", "typo_key", "url", "type"]))] = draw(
                trees
            )
        elif kind == "retype" and isinstance(container[key], dict) and "type" in container[key]:
            container[key]["type"] = draw(st.sampled_from(["wechat", "slack", "email", "log"]))
    return document


def _reload(service: Service) -> tuple[int, dict[str, Any]]:
    status, body, _ = service.served.request("POST", "/-/reload", headers=HEADERS)
    return status, json.loads(body)


@settings(
    max_examples=examples(80),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_a_reload_of_any_config_is_applied_or_refused_naming_the_key(
    service: Service, data: st.DataObject
) -> None:
    """Mutated configs reload (200) or are refused with a 400 naming the key; never a 500."""
    FIGURES.fuzzed["POST /-/reload: mutated configs"] += 1
    document = data.draw(mutated_configs(service.base))
    before = len(service.logs.records)
    service.path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    status, answer = _reload(service)
    assert status in (200, 400), (status, answer)
    if status == 400:
        where, _, message = answer["error"].partition(": ")
        assert where and message, answer
    success = service.registry.get_sample_value("sheepdog_config_last_reload_successful")
    assert success == (1.0 if status == 200 else 0.0)
    # The valid config always reloads again, and the service is whole.
    service.path.write_text(yaml.safe_dump(service.base), encoding="utf-8")
    assert _reload(service)[0] == 200
    new = service.logs.records[before:]
    assert not [r for r in new if r.exc_info is not None], [r.getMessage() for r in new]


def test_after_the_reloads_the_service_is_ready_and_delivers(service: Service) -> None:
    """After every fuzzed reload: ready, and an alert posted now is delivered."""
    wait_until(
        lambda: service.served.request("GET", "/-/ready")[0] == 200,
        timeout=20,
        what="ready after the reloads",
        describe=lambda: service.served.request("GET", "/-/ready"),
    )
    status, _, _ = service.served.request(
        "POST",
        "/alerts/ops",
        headers={**HEADERS, "Content-Type": "application/json"},
        data=json.dumps(make_payload(1, name="AfterReloads")).encode(),
    )
    assert status == 200

    def waiting() -> int:
        with closing(sqlite3.connect(service.state_dir / "sheepdog.db")) as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM outbox_notifications WHERE status != 'sent'"
            ).fetchone()
            return int(row[0])

    wait_until(lambda: waiting() == 0, timeout=20, what="the alert delivered")
    assert not [r for r in service.logs.records if r.exc_info is not None]
