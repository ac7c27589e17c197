"""Reload as prepare-then-commit: every part prepares from the new file, and only then are all of
them swapped in; a failure anywhere, expected or not, changes nothing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from bridge import BRIDGE, Bridge
from proxy import RELAY
from sheepdog.app import create_app
from sheepdog.config import load_config
from sheepdog.core.runtime import RUNTIME

TOKEN = "reload-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _document(tmp_path: Path, **bridge: Any) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "auth": {"bearer_tokens": [TOKEN]},
        "proxy": {"clients": [{"name": "team-a", "key": "key-a"}]},
        "bridge": {"targets": {"ops": {"type": "log"}}, **bridge},
    }


async def _start(aiohttp_client: Any, tmp_path: Path, registry: CollectorRegistry) -> TestClient:
    path = tmp_path / "sheepdog.yaml"
    path.write_text(yaml.safe_dump(_document(tmp_path)), encoding="utf-8")
    app = create_app(load_config(path, env={}), registry=registry)
    client: TestClient = await aiohttp_client(app)
    return client


def _rewrite(tmp_path: Path, document: dict[str, Any]) -> None:
    (tmp_path / "sheepdog.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")


def _gauge(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("sheepdog_config_last_reload_successful")


async def test_a_bridge_side_failure_leaves_the_proxys_old_settings(
    aiohttp_client: Any, tmp_path: Path, registry: CollectorRegistry
) -> None:
    """A new file that changes the proxy's clients and breaks a bridge template is refused
    whole: the proxy still knows the old client and not the new one, the bridge keeps its
    targets, and the gauge says the reload failed."""
    client = await _start(aiohttp_client, tmp_path, registry)
    document = _document(tmp_path)
    document["proxy"]["clients"] = [{"name": "team-b", "key": "key-b"}]
    document["bridge"]["targets"] = {"ops": {"type": "log", "template": "missing."}}
    _rewrite(tmp_path, document)
    response = await client.post("/-/reload", headers=AUTH)
    assert response.status == 400
    assert "bridge.targets.ops.template" in (await response.json())["error"]
    assert client.app[RELAY].settings.clients.names == ("team-a",)
    assert client.app[BRIDGE].config.targets["ops"].template is None
    assert client.app[RUNTIME].settings.proxy.clients[0].name == "team-a"  # type: ignore[attr-defined]
    assert _gauge(registry) == 0


async def test_an_unexpected_error_while_preparing_changes_nothing(
    aiohttp_client: Any,
    tmp_path: Path,
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not a config error but a bug (or the machine) in a part's preparing: refused all the
    same, the old settings stay everywhere, the gauge goes to 0 and the reason is logged."""
    client = await _start(aiohttp_client, tmp_path, registry)
    document = _document(tmp_path)
    document["proxy"]["clients"] = [{"name": "team-b", "key": "key-b"}]
    _rewrite(tmp_path, document)

    def broken(self: Bridge, config: Any) -> Any:
        raise RuntimeError("surprise")

    monkeypatch.setattr(Bridge, "prepare", broken)
    caplog.set_level(logging.ERROR, logger="sheepdog.ops")
    response = await client.post("/-/reload", headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"] == "reload failed: RuntimeError"
    assert client.app[RELAY].settings.clients.names == ("team-a",)
    assert _gauge(registry) == 0
    record = next(r for r in caplog.records if "reload failed" in r.getMessage())
    assert record.reason == "RuntimeError"  # type: ignore[attr-defined]

    monkeypatch.undo()
    assert (await client.post("/-/reload", headers=AUTH)).status == 200
    assert client.app[RELAY].settings.clients.names == ("team-b",)
    assert _gauge(registry) == 1


async def test_each_reload_compiles_every_template_once(
    aiohttp_client: Any, tmp_path: Path, registry: CollectorRegistry, monkeypatch: Any
) -> None:
    """A reload with a target of every channel compiles each of their templates once."""
    client = await _start(aiohttp_client, tmp_path, registry)
    compiled: list[str] = []
    real = jinja2.Environment.compile

    def counting(self: jinja2.Environment, source: Any, name: Any = None, *a: Any, **k: Any) -> Any:
        compiled.append(str(name))
        return real(self, source, name, *a, **k)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    targets = {
        "w": {"type": "wechat", "url": "https://qyapi.weixin.qq.com/x?key=k"},
        "w2": {"type": "wechat", "url": "https://qyapi.weixin.qq.com/x?key=other"},
        "s": {"type": "slack", "url": "https://hooks.slack.com/services/T/B/x"},
        "d": {"type": "dingtalk", "url": "https://oapi.dingtalk.com/robot/send?access_token=t"},
        "f": {"type": "feishu", "url": "https://open.feishu.cn/open-apis/bot/v2/hook/h"},
        "m": {
            "type": "email",
            "smtp": {"host": "smtp.example.com"},
            "from": "a@example.com",
            "to": ["b@example.com"],
        },
        "l": {"type": "log"},
    }
    document = _document(tmp_path)
    document["bridge"]["targets"] = targets
    _rewrite(tmp_path, document)
    response = await client.post("/-/reload", headers=AUTH)
    assert response.status == 200, await response.text()
    assert sorted(compiled) == sorted(
        [
            "wechat.md.j2",
            "wechat.md_v2.j2",
            "dingtalk.md.j2",
            "dingtalk.title.j2",
            "feishu.json.j2",
            "slack.json.j2",
            "email.subject.j2",
            "email.txt.j2",
            "email.html.j2",
            "log.txt.j2",
        ]
    )
