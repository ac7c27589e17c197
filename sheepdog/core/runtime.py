"""What the halves of the service share: the current config, the registry, the clock, the database.

``create_app`` puts one :class:`Runtime` in the application under :data:`RUNTIME`. The proxy and
the bridge read ``runtime.config`` when they need it and register a :class:`ReloadHook`, so that a
reload is validated by everyone before anyone applies it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from sheepdog.config import Config
from sheepdog.core.clock import Clock
from sheepdog.core.db import Database


class ReloadHook(Protocol):
    def check(self, new: Config) -> None:
        """Raise :class:`~sheepdog.core.errors.ConfigError` if ``new`` cannot be applied."""
        ...

    async def apply(self, new: Config) -> None:
        """Switch to ``new``; only called once every hook has accepted it."""
        ...


ReadinessCheck = Callable[[], str | None]
"""Returns None when ready, else a short reason shown by ``/-/ready``."""

ConfigLoader = Callable[[], Config]


@dataclass
class Runtime:
    config: Config
    registry: CollectorRegistry
    clock: Clock
    db: Database
    load_config: ConfigLoader
    reload_hooks: list[ReloadHook] = field(default_factory=list)
    readiness_checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


RUNTIME = web.AppKey("sheepdog.core.runtime", Runtime)
