"""Shared fixtures: configs built from YAML text, a metrics registry, the fake upstream, a port
that refuses connections; and the Hypothesis profiles."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import settings

from sheepdog.config import Config, parse_config
from sheepdog.core.backends import database_for
from sheepdog.core.db import Database
from sheepdog.core.exposition import MetricsRegistry
from tests.peers.upstream import FakeUpstream
from tests.support.fuzzing import DETERMINISTIC, register_profiles
from tests.support.ports import closed_port, free_port
from tests.support.postgres import PostgresServer, running_server, why_unavailable
from tests.support.state import StoredState

# The README's test command gives the same examples every run; scripts/fuzz loads "fuzz".
register_profiles()
settings.load_profile(DETERMINISTIC)

MakeConfig = Callable[..., Config]


@pytest.fixture
def make_config(tmp_path: Path) -> MakeConfig:
    """Build a validated config from YAML text or a dict; ``state_dir`` defaults to a temp dir."""

    def make(
        source: str | dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> Config:
        raw = yaml.safe_load(source) if isinstance(source, str) else dict(source or {})
        raw = raw or {}
        raw.setdefault("state_dir", str(tmp_path / "state"))
        return parse_config(raw, env=env or {}, base_dir=tmp_path)

    return make


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    """A running fake OpenAI-compatible upstream (tests/peers/upstream.py)."""
    fake = await FakeUpstream().start()
    yield fake
    await fake.close()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port where connections are refused for the whole test."""
    with closed_port() as port:
        yield port


@pytest.fixture
def registry() -> MetricsRegistry:
    """A fresh metrics registry per test, of the kind the service uses."""
    return MetricsRegistry()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL cluster for the whole run, started on first use."""
    reason = why_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with running_server(free_port()) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL."""
    return postgres_server.database_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each backend in turn, as the config keys that choose it: none for SQLite in
    ``state_dir``, ``database.url`` for PostgreSQL."""
    if request.param == "sqlite":
        return {}
    url: str = request.getfixturevalue("postgres_url")
    return {"database": {"url": url, "lease_seconds": 2}}


@pytest.fixture
def stored(backend: dict[str, Any], tmp_path: Path) -> Iterator[StoredState]:
    """What the service stored, on the backend of the test (``state_dir`` is tmp_path/state)."""
    state = StoredState(tmp_path / "state", backend.get("database", {}).get("url"))
    yield state
    state.close()


@pytest.fixture
async def database(backend: dict[str, Any], make_config: MakeConfig) -> AsyncIterator[Database]:
    """An open database of the test's backend (``state_dir`` tmp_path/state), closed after."""
    db = database_for(make_config(dict(backend)))
    yield db
    await db.close()
