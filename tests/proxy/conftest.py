"""Fixtures for the proxy: a local upstream, sheepdog in front of it, the openai SDK as client."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import openai
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, generate_latest

from proxy import RELAY
from sheepdog.app import create_app
from sheepdog.config import Config
from sheepdog.core.exposition import MetricsRegistry
from tests.peers.upstream import FakeUpstream

UPSTREAM_KEY = "sk-upstream-SENTINEL-1f6c0b"
TEAM_A_KEY = "sd-team-a-SENTINEL-93e1d7"
TEAM_B_KEY = "sd-team-b-SENTINEL-4a0c52"


class FakeClock:
    """Wall time that tests set (to move to another month); real monotonic time."""

    def __init__(self, now: datetime) -> None:
        self.start = now
        self.current = now

    def now(self) -> datetime:
        return self.current

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return self.now().timestamp()


class SteppingClock(FakeClock):
    """Wall and monotonic time that run as the real ones do, and jump when a test says (past a
    cool-down, a rate window): an SDK's own retry sleeps real time, and what it waits for must
    pass in that time too."""

    def __init__(self, now: datetime) -> None:
        super().__init__(now)
        self._started = time.monotonic()
        self.offset = 0.0

    def now(self) -> datetime:
        return self.current + timedelta(seconds=time.monotonic() - self._started + self.offset)

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def skip(self, seconds: float) -> None:
        self.offset += seconds

    def seconds(self) -> float:
        """Seconds since the clock's start, on this clock."""
        return (self.now() - self.start).total_seconds()


@dataclass
class Proxy:
    """sheepdog serving on a local port in front of the fake upstream."""

    app: web.Application
    server: TestServer
    registry: CollectorRegistry

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/v1"))

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def requests(self, **labels: str) -> float:
        """``llm_requests_total`` for the labels given (model other, route chat by default)."""
        return self.value("llm_requests_total", **labels) or 0.0

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()

    def client(self, key: str = TEAM_A_KEY, **options: Any) -> openai.AsyncOpenAI:
        """The async SDK with ``key``; no retries unless ``max_retries`` is given."""
        options.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=key, **options)

    def sync_client(self, key: str = TEAM_A_KEY, **options: Any) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.base_url, api_key=key, **options)

    def anthropic(self, key: str = TEAM_A_KEY, **options: Any) -> anthropic.AsyncAnthropic:
        """The async anthropic SDK with ``key`` (as x-api-key), pointed at sheepdog's root as
        at an Anthropic base URL; no retries unless ``max_retries`` is given."""
        options.setdefault("max_retries", 0)
        return anthropic.AsyncAnthropic(base_url=self.url(""), api_key=key, **options)

    def sync_anthropic(self, key: str = TEAM_A_KEY, **options: Any) -> anthropic.Anthropic:
        options.setdefault("max_retries", 0)
        return anthropic.Anthropic(base_url=self.url(""), api_key=key, **options)

    async def flush_ledger(self) -> None:
        await self.app[RELAY].ledger.flush()

    async def close(self) -> None:
        await self.server.close()


def proxy_config(fake: FakeUpstream, /, **proxy_overrides: Any) -> dict[str, Any]:
    """A config with two clients (team-a with a $10 budget) in front of the ``fake`` upstream,
    pricing gpt-4.1 and deepseek-v3.2 as the catalogue does.

    ``proxy_overrides`` replace keys of ``proxy:``; mappings are merged one level deep.
    """
    proxy: dict[str, Any] = {
        "upstream": {
            "base_url": fake.base_url,
            "api_key": UPSTREAM_KEY,
            "timeout_seconds": 5,
            "connect_timeout_seconds": 2,
        },
        "clients": [
            {"name": "team-a", "key": TEAM_A_KEY, "monthly_budget_usd": 10},
            {"name": "team-b", "key": TEAM_B_KEY},
        ],
        "billing": {"currency": "CNY", "usd_rate": 1.0, "market_usd_rate": 7.3},
        # As the SPEC's example does: the models a team uses, named (their series start at zero).
        "pricing": {
            "gpt-4.1": {"input": 2.00, "output": 8.00, "cache_read": 0.50},
            "deepseek-v3.2": {"input": 0.28, "output": 0.42, "cache_read": 0.028},
        },
    }
    for key, value in proxy_overrides.items():
        if isinstance(value, dict) and isinstance(proxy.get(key), dict):
            proxy[key] = {**proxy[key], **value}
        else:
            proxy[key] = value
    return {"proxy": proxy}


StartProxy = Callable[..., Awaitable[Proxy]]


class _ServerWithoutCancellation(TestServer):
    """As ``sheepdog serve`` runs by default: handlers are not cancelled when a client leaves."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        kwargs["handler_cancellation"] = False
        return await super()._make_runner(**kwargs)


@pytest.fixture
def clock() -> FakeClock:
    """A clock in the middle of November 2026 (UTC)."""
    return FakeClock(datetime(2026, 11, 15, 12, 0, tzinfo=UTC))


@pytest.fixture
async def start_proxy(
    make_config: Callable[..., Config], upstream: FakeUpstream, clock: FakeClock
) -> AsyncIterator[StartProxy]:
    """Start sheepdog (in this process, on a local port) with the proxy config given."""
    started: list[Proxy] = []

    async def start(
        config: dict[str, Any] | str | None = None,
        *,
        registry: MetricsRegistry | None = None,
        cancel_on_disconnect: bool = True,
    ) -> Proxy:
        raw = yaml.safe_load(config) if isinstance(config, str) else config
        built = make_config(raw if raw is not None else proxy_config(upstream))
        registry = registry if registry is not None else MetricsRegistry()
        app = create_app(built, registry=registry, clock=clock)
        server_class = TestServer if cancel_on_disconnect else _ServerWithoutCancellation
        server = server_class(app, host="127.0.0.1")
        await server.start_server()
        proxy = Proxy(app, server, registry)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.close()
