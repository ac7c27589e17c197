"""What the halves of the service share: the core settings, the registry, the clock, the database,
and how a reload runs.

``create_app`` puts one :class:`Runtime` in the application under :data:`RUNTIME`. A reload is
prepare-then-commit: each part registers a :data:`PrepareReload` that builds everything it needs
from the new config (and raises if it cannot); only once every part has prepared are the
prepared parts committed, by steps that cannot fail. A reload that fails anywhere changes
nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from sheepdog.core.clock import Clock
from sheepdog.core.db import Database
from sheepdog.core.exposition import MetricsRegistry
from sheepdog.core.settings import CoreSettings
from sheepdog.core.workers import WorkerSet

__all__ = ["RUNTIME", "ConfigLoader", "PrepareReload", "Prepared", "ReadinessCheck", "Runtime"]


class Prepared(Protocol):
    """What a part built from a new config, ready to take its place."""

    def commit(self) -> None:
        """Swap it in. Must not fail: everything that can fail happened while preparing."""
        ...


PrepareReload = Callable[[Any], Prepared]
"""Build a part from a new config (the whole one; the part reads its own section), raising
:class:`~sheepdog.core.errors.ConfigError` (or anything else) if it cannot."""

ReadinessCheck = Callable[[], str | None]
"""Returns None when ready, else a short reason shown by ``/-/ready``."""

ConfigLoader = Callable[[], CoreSettings]
"""Reads the config again, for a reload: the whole config, of which the core sees its part."""


@dataclass
class Runtime:
    settings: CoreSettings
    """The current config: the core keys, and the sections the parts read when they prepare."""
    registry: MetricsRegistry
    clock: Clock
    db: Database
    load_config: ConfigLoader
    reload_parts: list[PrepareReload] = field(default_factory=list)
    readiness_checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    workers: WorkerSet | None = None
    """With ``workers`` > 1: this process's place among those serving ``listen``."""
    request_reload_of_all: Callable[[], None] | None = None
    """Asks every process serving ``listen`` to reload (a ``POST /-/reload`` reached one)."""


RUNTIME = web.AppKey("sheepdog.runtime", Runtime)
