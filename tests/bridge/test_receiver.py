"""POST /alerts/{target}: 200 only once stored; 4xx only for what no retry would fix."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge import BRIDGE
from sheepdog.config import parse_config
from tests.bridge.conftest import (
    ALERT_TOKEN,
    AUTH,
    StartBridge,
    fixture_payload,
    make_payload,
    targets_config,
)
from tests.support.polling import wait_until_async

LOG_TARGETS = {"ops": {"type": "log"}, "other": {"type": "log"}}


def _rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(tmp_path / "state" / "sheepdog.db")) as conn, conn:
        return conn.execute(
            "SELECT id, target, status, alert_status, payload FROM outbox_notifications"
        ).fetchall()


async def test_accepted_notification_is_on_disk_before_the_answer(
    start_bridge: StartBridge, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """200 means the notification is already in the outbox file, and is counted."""
    client = await start_bridge(parse_config(targets_config(tmp_path, LOG_TARGETS), env={}))
    client.app[BRIDGE].worker_of("ops")._task.cancel()  # keep it from being sent meanwhile
    payload = fixture_payload("firing-truncated.json")
    response = await client.post("/alerts/ops", json=payload, headers=AUTH)
    assert response.status == 200
    answer = await response.json()
    assert answer["status"] == "accepted"
    rows = _rows(tmp_path)
    assert [(r[0], r[1], r[3]) for r in rows] == [(answer["id"], "ops", "firing")]
    assert json.loads(rows[0][4])["alerts"] == payload["alerts"]
    received = {"target": "ops", "status": "firing"}
    assert registry.get_sample_value("sheepdog_alerts_received_total", received) == 5


async def test_alertmanager_retry_is_not_stored_twice(
    start_bridge: StartBridge, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """The same notification posted again answers 200 "duplicate" and adds nothing."""
    client = await start_bridge(parse_config(targets_config(tmp_path, LOG_TARGETS), env={}))
    payload = fixture_payload("firing-one.json")
    first = await (await client.post("/alerts/ops", json=payload, headers=AUTH)).json()
    second = await client.post("/alerts/ops", json=payload, headers=AUTH)
    assert second.status == 200
    assert await second.json() == {"status": "duplicate", "id": first["id"]}
    other_target = await (await client.post("/alerts/other", json=payload, headers=AUTH)).json()
    assert other_target["status"] == "accepted"
    resolved = await (
        await client.post("/alerts/ops", json=fixture_payload("resolved-one.json"), headers=AUTH)
    ).json()
    assert resolved["status"] == "accepted"
    assert len(_rows(tmp_path)) == 3
    received = {"target": "ops", "status": "firing"}
    assert registry.get_sample_value("sheepdog_alerts_received_total", received) == 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {ALERT_TOKEN}"}],
)
async def test_credentials_are_required(
    start_bridge: StartBridge, tmp_path: Path, headers: dict[str, str]
) -> None:
    """Without the configured credentials: 401, and nothing stored."""
    client = await start_bridge(parse_config(targets_config(tmp_path, LOG_TARGETS), env={}))
    response = await client.post("/alerts/ops", json=make_payload(), headers=headers)
    assert response.status == 401
    assert ALERT_TOKEN not in await response.text()
    assert _rows(tmp_path) == []


async def test_basic_auth_as_alertmanager_sends_it(
    start_bridge: StartBridge, tmp_path: Path
) -> None:
    """Basic credentials from Alertmanager's http_config are accepted."""
    document = targets_config(tmp_path, LOG_TARGETS, auth=False)
    document["auth"] = {"basic": {"username": "am", "password": "pw"}}
    client = await start_bridge(parse_config(document, env={}))
    basic = {"Authorization": "Basic " + base64.b64encode(b"am:pw").decode()}
    response = await client.post("/alerts/ops", json=make_payload(), headers=basic)
    assert response.status == 200


async def test_unknown_target_is_404(start_bridge: StartBridge, tmp_path: Path) -> None:
    """A target that is not configured: 404 naming the configured ones."""
    client = await start_bridge(parse_config(targets_config(tmp_path, LOG_TARGETS), env={}))
    response = await client.post("/alerts/nope", json=make_payload(), headers=AUTH)
    assert response.status == 404
    assert (await response.json())["error"] == "unknown target 'nope' (configured: ops, other)"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "body: not JSON (Expecting property name enclosed in double quotes"),
        (b"\xff\xfe", "body: not UTF-8"),
        (b"[]", "body: must be a JSON object"),
        (
            json.dumps(
                {
                    **make_payload(4),
                    "alerts": [
                        *make_payload(3)["alerts"],
                        {**make_payload()["alerts"][0], "labels": {"a": 1}},
                    ],
                }
            ).encode(),
            "alerts[3].labels: must be an object of strings",
        ),
        (
            json.dumps({**make_payload(), "version": "3"}).encode(),
            "version: unsupported version '3', expected \"4\"",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "body: nested more than 32 levels deep"),
        (
            b'{"version": "4", "x": ' + b"[" * 40 + b"]" * 40 + b"}",
            "x[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]"
            "[0][0][0]: nested more than 32 levels deep",
        ),
        (b'{"version": 1' + b"0" * 5000 + b"}", "body: not JSON that can be read"),
    ],
)
async def test_not_a_payload_is_400_naming_the_field(
    start_bridge: StartBridge, tmp_path: Path, body: bytes, error: str
) -> None:
    """A body no retry could fix: 400 whose message says which field is wrong."""
    client = await start_bridge(parse_config(targets_config(tmp_path, LOG_TARGETS), env={}))
    response = await client.post("/alerts/ops", data=body, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"].startswith(error)
    assert _rows(tmp_path) == []


async def test_oversized_body_is_413(start_bridge: StartBridge, tmp_path: Path) -> None:
    """Over bridge.max_body_bytes: 413, declared or streamed."""
    document = targets_config(tmp_path, LOG_TARGETS, extra={"max_body_bytes": 2048})
    client = await start_bridge(parse_config(document, env={}))
    big = json.dumps(make_payload(40)).encode()
    assert len(big) > 2048
    response = await client.post("/alerts/ops", data=big, headers=AUTH)
    assert response.status == 413

    async def chunks() -> Any:
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    streamed = await client.post("/alerts/ops", data=chunks(), headers=AUTH)
    assert streamed.status == 413
    small = await client.post("/alerts/ops", json=make_payload(1), headers=AUTH)
    assert small.status == 200


async def test_storage_failure_is_503_never_4xx(start_bridge: StartBridge, tmp_path: Path) -> None:
    """If the outbox cannot be written, 503: Alertmanager retries 5xx and drops 4xx."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where state_dir should be")
    document = targets_config(tmp_path, LOG_TARGETS)
    document["state_dir"] = str(blocker / "state")
    client = await start_bridge(parse_config(document, env={}))
    response = await client.post("/alerts/ops", json=make_payload(), headers=AUTH)
    assert response.status == 503
    assert "retry" in (await response.json())["error"]
    ready = await client.get("/-/ready")
    assert ready.status == 503


async def test_client_hanging_up_does_not_lose_the_row(
    start_bridge: StartBridge, tmp_path: Path
) -> None:
    """A write in progress when Alertmanager hangs up still completes (then dedups the retry)."""
    client = await start_bridge(parse_config(targets_config(tmp_path, LOG_TARGETS), env={}))
    bridge = client.app[BRIDGE]
    bridge.worker_of("ops")._task.cancel()
    writing, stored = asyncio.Event(), asyncio.Event()
    original = bridge.outbox.add

    async def slow_add(*args: Any, **kwargs: Any) -> Any:
        writing.set()
        await asyncio.sleep(0.2)  # the client hangs up meanwhile
        result = await original(*args, **kwargs)
        stored.set()
        return result

    bridge.outbox.add = slow_add  # type: ignore[method-assign]
    request = asyncio.ensure_future(client.post("/alerts/ops", json=make_payload(), headers=AUTH))
    await asyncio.wait_for(writing.wait(), 5)
    request.cancel()
    await asyncio.wait_for(stored.wait(), 5)
    assert len(_rows(tmp_path)) == 1
    bridge.outbox.add = original  # type: ignore[method-assign]
    again = await client.post("/alerts/ops", json=make_payload(), headers=AUTH)
    assert (await again.json())["status"] == "duplicate"


async def test_unpaired_surrogate_escapes_are_stored_and_delivered(
    start_bridge: StartBridge, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "\\ud800" is valid JSON but not text: stored and shown as U+FFFD, never a 500."""
    client = await start_bridge(parse_config(targets_config(tmp_path, LOG_TARGETS), env={}))
    payload = make_payload(1, name="Surrogate")
    payload["alerts"][0]["labels"]["odd\udfff"] = "value \ud800 here"
    payload["extra"] = {"note": "\udbff"}
    response = await client.post("/alerts/ops", data=json.dumps(payload).encode(), headers=AUTH)
    assert response.status == 200, await response.text()
    stored = json.loads(_rows(tmp_path)[0][4])
    assert stored["alerts"][0]["labels"]["odd\ufffd"] == "value \ufffd here"
    assert stored["extra"] == {"note": "\ufffd"}
    printed: list[str] = []

    def alert_printed() -> bool:
        printed.append(capsys.readouterr().out)
        return "Surrogate" in "".join(printed)

    await wait_until_async(alert_printed, what="the log target printing the alert")
