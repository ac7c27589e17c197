"""Operations endpoints and reloading, in-process and on a real `sheepdog serve`."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from sheepdog.app import create_app
from sheepdog.config import load_config
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.processes import SheepdogProcess


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def test_health_ready_and_metrics_on_defaults(
    aiohttp_client, make_config, registry: CollectorRegistry
) -> None:
    """On the built-in defaults the service is healthy, ready, and exports its build info."""
    client: TestClient = await aiohttp_client(create_app(make_config(), registry=registry))
    healthy = await client.get("/-/healthy")
    assert healthy.status == 200
    ready = await client.get("/-/ready")
    assert ready.status == 200, await ready.text()
    metrics = await client.get("/metrics")
    text = await metrics.text()
    assert metrics.status == 200
    assert "sheepdog_build_info{" in text
    assert "sheepdog_config_last_reload_successful 1.0" in text


async def test_not_ready_while_the_database_cannot_be_opened(
    aiohttp_client, make_config, tmp_path: Path
) -> None:
    """When state_dir cannot hold the database, /-/ready says so with 503 but /-/healthy is 200."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the state directory should be")
    client: TestClient = await aiohttp_client(create_app(make_config({"state_dir": str(blocker)})))
    ready = await client.get("/-/ready")
    assert ready.status == 503
    assert "database unavailable" in await ready.text()
    assert (await client.get("/-/healthy")).status == 200


async def test_reload_endpoint_swaps_config_or_keeps_the_old_one(
    aiohttp_client, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """A good file is swapped in whole; a bad one is refused with its key path and the old stays."""
    path = _write(
        tmp_path / "sheepdog.yaml",
        f"state_dir: {tmp_path}/state\nauth: {{bearer_tokens: [first-token]}}\n",
    )
    app = create_app(
        load_config(path, {}), registry=registry, config_loader=lambda: load_config(path, {})
    )
    client: TestClient = await aiohttp_client(app)
    first = {"Authorization": "Bearer first-token"}
    second = {"Authorization": "Bearer second-token"}

    assert (await client.post("/-/reload")).status == 401

    _write(path, f"state_dir: {tmp_path}/state\nauth: {{bearer_tokens: [second-token]}}\n")
    assert (await client.post("/-/reload", headers=first)).status == 200
    assert (await client.post("/-/reload", headers=first)).status == 401

    _write(path, f"state_dir: {tmp_path}/state\nauth: {{bearer_tokens: [x]}}\nlog_format: xml\n")
    refused = await client.post("/-/reload", headers=second)
    assert refused.status == 400
    body = await refused.json()
    assert body["error"] == "log_format: 'xml' is not one of text, json"
    assert registry.get_sample_value("sheepdog_config_last_reload_successful") == 0
    # The old config still serves: the second token still works, "x" does not.
    assert (await client.post("/-/reload", headers={"Authorization": "Bearer x"})).status == 401
    _write(path, f"state_dir: {tmp_path}/state\nauth: {{bearer_tokens: [second-token]}}\n")
    assert (await client.post("/-/reload", headers=second)).status == 200
    assert registry.get_sample_value("sheepdog_config_last_reload_successful") == 1


async def test_reload_refuses_to_move_the_listen_address(aiohttp_client, tmp_path: Path) -> None:
    """The socket is bound once: a reload that changes listen is refused and says to restart."""
    path = _write(tmp_path / "sheepdog.yaml", f"state_dir: {tmp_path}/state\n")
    app = create_app(load_config(path, {}), config_loader=lambda: load_config(path, {}))
    client: TestClient = await aiohttp_client(app)
    _write(path, f"state_dir: {tmp_path}/state\nlisten: 127.0.0.1:9999\n")
    refused = await client.post("/-/reload")
    assert refused.status == 400
    assert "listen: cannot change on reload" in (await refused.json())["error"]


def test_serve_answers_ops_endpoints_and_reloads_on_sighup(tmp_path: Path) -> None:
    """A real `sheepdog serve` answers health, readiness and metrics, and SIGHUP reloads it."""
    port = free_port()
    config = _write(
        tmp_path / "sheepdog.yaml",
        f"listen: 127.0.0.1:{port}\nlog_format: json\nauth: {{bearer_tokens: [one]}}\n",
    )
    with SheepdogProcess(config, port, tmp_path) as proc:
        assert proc.get("/-/healthy")[0] == 200
        assert proc.get("/-/ready")[0] == 200
        status, metrics = proc.get("/metrics")
        assert status == 200 and "sheepdog_build_info" in metrics

        _write(
            config, f"listen: 127.0.0.1:{port}\nlog_format: json\nauth: {{bearer_tokens: [two]}}\n"
        )
        proc.signal(signal.SIGHUP)
        wait_until(lambda: "config reloaded" in proc.output, timeout=10, what="the SIGHUP reload")
        assert proc.request("POST", "/-/reload", headers={"Authorization": "Bearer one"})[0] == 401
        assert proc.request("POST", "/-/reload", headers={"Authorization": "Bearer two"})[0] == 200
    assert proc.process is not None and proc.process.returncode == 0
    events = [json.loads(line) for line in proc.output.splitlines() if line.startswith("{")]
    assert {"sheepdog started", "config reloaded"} <= {event["msg"] for event in events}


def test_serve_refuses_a_public_listen_without_credentials(tmp_path: Path) -> None:
    """`serve` on a non-loopback address with no client keys exits 2 and says why."""
    config = _write(tmp_path / "sheepdog.yaml", "listen: 0.0.0.0:8000\n")
    proc = SheepdogProcess(config, 8000, tmp_path)
    with pytest.raises(RuntimeError, match="exited with 2"):
        proc.start(timeout=10)
    assert "proxy.clients: required when listen (0.0.0.0:8000) is not a loopback" in proc.output
