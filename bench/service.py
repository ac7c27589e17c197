"""sheepdog as users run it: client keys, pricing and budgets on, in its own process."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from bench.procs import ProcessGroup, Server, free_port, python_module, sheepdog_command

CLIENTS = 20
MODELS = 50
ALERT_TOKEN = "bench-alert-token"
LATENCY_TARGET = "bench-latency"
ACCEPT_TARGET = "bench-accept"


def client_key(index: int) -> str:
    return f"bench-key-{index:02d}"


def model_name(index: int) -> str:
    return f"bench-model-{index:02d}"


ROBOT_KEYS = ("latency", "accept")


def start_upstream(group: ProcessGroup, name: str, *, chunks: int, event_delay_ms: float) -> Server:
    """The fake OpenAI upstream of the tests (tests/peers/upstream.py) in a process of its own.

    Streams have ``chunks`` content events ``event_delay_ms`` apart, the first with the role and
    sent at once (so time to first token is the relays' alone); a request can ask for another
    pace with the headers of :mod:`bench.streaming`. Nothing is recorded.
    """
    port = free_port()
    argv = [
        *python_module("tests.peers.upstream"),
        "--port",
        str(port),
        "--chunks",
        str(chunks),
        "--event-delay-ms",
        str(event_delay_ms),
        "--no-role-opener",
    ]
    return group.start(name, argv, port, health_url=f"http://127.0.0.1:{port}/v1/models")


def upstream_stats(upstream: Server) -> dict[str, int]:
    """The upstream's counters: requests, streams, active_streams, peak_streams, events."""
    with urllib.request.urlopen(f"{upstream.url}/peer/stats", timeout=5) as response:
        stats: dict[str, int] = json.loads(response.read())
        return stats


def start_robot(group: ProcessGroup) -> Server:
    """The WeChat robot of the tests (tests/peers/wechat.py), never out of its rate."""
    port = free_port()
    argv = [
        *python_module("tests.peers.wechat"),
        "--port",
        str(port),
        "--keys",
        ",".join(ROBOT_KEYS),
        "--per-minute",
        "1000000",
    ]
    return group.start(
        "wechat-robot", argv, port, health_url=f"http://127.0.0.1:{port}/peer/messages"
    )


def write_config(
    path: Path,
    *,
    port: int,
    upstream_url: str,
    state_dir: Path,
    robot_url: str | None = None,
    latency_rate_per_minute: float = 6000.0,
    limits: bool = False,
    state: dict[str, object] | None = None,
) -> None:
    """A config with 20 clients (each with a budget) and 50 priced models; ``state`` adds
    top-level keys such as ``database`` and ``workers``.

    With ``robot_url``, two WeChat targets at the local robot: ``bench-latency`` with a rate far
    above what the bench sends, and ``bench-accept`` with WeChat's default 20 a minute.

    With ``limits``, the guard rails on as users run them: every client with a requests and a
    tokens per minute limit (far above what the bench sends, so nothing is refused but every
    request is checked and its tokens counted), and two upstreams, the first serving the bench's
    models by a glob, the second (the same server) the fallback.
    """
    config: dict[str, object] = {
        "listen": f"127.0.0.1:{port}",
        "state_dir": str(state_dir),
        "auth": {"bearer_tokens": [ALERT_TOKEN]},
        "proxy": {
            "upstream": {"base_url": upstream_url, "api_key": "bench-upstream-key"},
            "clients": [
                {"name": f"client-{i:02d}", "key": client_key(i), "monthly_budget_usd": 1e9}
                for i in range(CLIENTS)
            ],
            "pricing": {
                model_name(i): {"input": round(0.5 + i * 0.05, 2), "output": round(2 + i * 0.1, 2)}
                for i in range(MODELS)
            },
        },
    }
    if robot_url is not None:
        config["bridge"] = {
            "targets": {
                LATENCY_TARGET: {
                    "type": "wechat",
                    "url": f"{robot_url}/cgi-bin/webhook/send?key={ROBOT_KEYS[0]}",
                    "rate_per_minute": latency_rate_per_minute,
                },
                ACCEPT_TARGET: {
                    "type": "wechat",
                    "url": f"{robot_url}/cgi-bin/webhook/send?key={ROBOT_KEYS[1]}",
                },
            }
        }
    if limits:
        proxy = config["proxy"]
        assert isinstance(proxy, dict)
        del proxy["upstream"]
        proxy["upstreams"] = [
            {
                "name": "bench",
                "base_url": upstream_url,
                "api_key": "bench-upstream-key",
                "models": ["bench-model-*"],
            },
            {"name": "backup", "base_url": upstream_url, "api_key": "bench-backup-key"},
        ]
        for client in proxy["clients"]:
            client["requests_per_minute"] = 100_000_000
            client["tokens_per_minute"] = 10_000_000_000
    config.update(state or {})
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def start_sheepdog(
    group: ProcessGroup,
    name: str,
    upstream_url: str,
    robot_url: str | None = None,
    env: dict[str, str] | None = None,
    limits: bool = False,
    state: dict[str, object] | None = None,
) -> Server:
    """Write a config into the group's work directory and run ``sheepdog serve`` on it.

    ``env`` is added to the process's environment (``PYTHONPATH`` to run another source tree);
    ``limits`` turns the guard rails on (see :func:`write_config`).
    ``state`` is added to the config (``database``, ``workers``).
    """
    port = free_port()
    workdir = group.workdir / name
    workdir.mkdir(exist_ok=True)
    config = workdir / "sheepdog.yaml"
    write_config(
        config,
        port=port,
        upstream_url=upstream_url,
        state_dir=workdir / "state",
        robot_url=robot_url,
        limits=limits,
        state=state,
    )
    return group.start(
        name,
        [*sheepdog_command(), "serve", "--config", str(config)],
        port,
        health_url=f"http://127.0.0.1:{port}/-/healthy",
        cwd=workdir,
        env=env,
    )


def chat_body(model: str, *, stream: bool = False) -> str:
    """A small chat completion request, as the OpenAI SDK sends it."""
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


def client_headers(index: int = 0) -> dict[str, str]:
    """The headers of a chat completion as the OpenAI SDK sends them (a User-Agent of its own)."""
    return {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {client_key(index)}",
        "User-Agent": "OpenAI/Python 1.0",
    }


def messages_headers(index: int = 0) -> dict[str, str]:
    """The headers of a Messages API call as the anthropic SDK sends them: the client key in
    ``x-api-key``, and ``anthropic-version``."""
    return {
        "Content-Type": "application/json",
        "x-api-key": client_key(index),
        "anthropic-version": "2023-06-01",
        "User-Agent": "Anthropic/Python 1.0",
    }


def proxy_available(server: Server) -> tuple[bool, str]:
    """Whether sheepdog relays a chat completion yet (proxy/ may still be an empty stub)."""
    request = urllib.request.Request(
        f"{server.url}/v1/chat/completions",
        data=chat_body(model_name(0)).encode(),
        headers=client_headers(0),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return False, str(error)
