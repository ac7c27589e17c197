"""Shared fixtures: configs built from YAML text, and the app built from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from sheepdog.config import Config, parse_config

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
def registry() -> CollectorRegistry:
    """A fresh metrics registry per test."""
    return CollectorRegistry()
