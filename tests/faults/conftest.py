"""The fault suite's shared pieces: the figures it reports, log capture, and small helpers.

Every test adds what it did to :data:`FIGURES` (faults injected and survived, inputs fuzzed,
notifications accepted, lost and delivered twice); the totals are printed at the end of the run
and, when ``$SHEEPDOG_FAULT_FIGURES`` names a file, written there as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from sheepdog.app import create_app
from sheepdog.config import Config
from sheepdog.core.clock import Clock
from sheepdog.core.logs import TextFormatter


@dataclass
class Figures:
    faults: Counter[str] = field(default_factory=Counter)
    """Fault kinds injected (and survived: a failing test records nothing after its failure)."""
    fuzzed: Counter[str] = field(default_factory=Counter)
    """Inputs generated per fuzz target."""
    accepted: int = 0
    """Notifications accepted (200) by sheepdog in fault tests that follow them to delivery."""
    lost: int = 0
    """Of those, notifications never delivered."""
    duplicates: Counter[str] = field(default_factory=Counter)
    """Alerts delivered more than once, per test, with how many extra times."""

    def fault(self, kind: str, count: int = 1) -> None:
        self.faults[kind] += count

    def notifications(self, accepted: int, lost: int) -> None:
        self.accepted += accepted
        self.lost += lost

    def as_dict(self) -> dict[str, Any]:
        return {
            "faults_injected_and_survived": dict(sorted(self.faults.items())),
            "faults_total": sum(self.faults.values()),
            "inputs_fuzzed": dict(sorted(self.fuzzed.items())),
            "inputs_fuzzed_total": sum(self.fuzzed.values()),
            "notifications_accepted": self.accepted,
            "notifications_lost": self.lost,
            "duplicate_deliveries": dict(sorted(self.duplicates.items())),
        }


FIGURES = Figures()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures after the run (only when some fault test ran)."""
    figures = FIGURES.as_dict()
    if not (FIGURES.faults or FIGURES.fuzzed or FIGURES.accepted):
        return
    terminalreporter.section("fault and abuse figures")
    for key, value in figures.items():
        if isinstance(value, dict):
            terminalreporter.line(f"{key}:")
            for name, count in value.items():
                terminalreporter.line(f"  {count:>6}  {name}")
        else:
            terminalreporter.line(f"{key}: {value}")
    target = os.environ.get("SHEEPDOG_FAULT_FIGURES")
    if target:
        Path(target).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


class LogRecorder(logging.Handler):
    """Keeps every record from every logger and thread, formatted, for checks after the fact."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._old_root_level = logging.NOTSET

    @classmethod
    def attached(cls, level: int) -> LogRecorder:
        """A recorder on the root logger, which is set to ``level`` until :meth:`detach`."""
        recorder = cls()
        root = logging.getLogger()
        recorder._old_root_level = root.level
        root.addHandler(recorder)
        root.setLevel(level)
        return recorder

    def detach(self) -> None:
        """Off the root logger again, which gets back the level it had."""
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._old_root_level)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self) -> list[str]:
        """Each record as sheepdog's text formatter prints it, traceback included."""
        formatter = TextFormatter()
        return [formatter.format(record) for record in self.records]

    def tracebacks(self) -> list[str]:
        """Records at ERROR or above, or carrying an exception: none may come from bad input."""
        return [
            line
            for record, line in zip(self.records, self.lines(), strict=True)
            if record.exc_info is not None or record.levelno >= logging.CRITICAL
        ]

    def messages(self, logger: str = "") -> list[str]:
        return [r.getMessage() for r in self.records if r.name.startswith(logger)]


@pytest.fixture
def logs() -> Iterator[LogRecorder]:
    """Every log record of the test, at every level, from every logger."""
    recorder = LogRecorder.attached(logging.DEBUG)
    try:
        yield recorder
    finally:
        recorder.detach()


StartApp = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def start_bridge(aiohttp_client: Any, registry: CollectorRegistry) -> StartApp:
    """Start the whole app for ``config`` in this process (on ``registry``); the test client."""

    async def start(config: Config, *, clock: Clock | None = None) -> TestClient:
        client: TestClient = await aiohttp_client(
            create_app(config, registry=registry, clock=clock)
        )
        return client

    return start


SENTINEL_MARK = "SENTINEL"
"""Every secret the fault tests configure for the bridge and proxy peers is named with this."""


@pytest.fixture(autouse=True)
def no_sentinel_logged() -> Iterator[None]:
    """Fail a fault test whose run logged a sentinel secret anywhere (test peers' access logs
    aside: they print the webhook URLs they were called on, as the real services would)."""
    recorder = LogRecorder.attached(min(logging.getLogger().level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        recorder.detach()
    formatter = TextFormatter()
    leaked = [
        line
        for record in recorder.records
        if record.name != "aiohttp.access" and SENTINEL_MARK in (line := formatter.format(record))
    ]
    assert leaked == [], "a secret was logged"


def series_count(registry: CollectorRegistry) -> int:
    """How many time series the registry exposes (every sample of every metric)."""
    return sum(len(metric.samples) for metric in registry.collect())


_BOLD_NAME = re.compile(r"\*\*([A-Za-z][A-Za-z0-9_]*)\*\*")


def named_alerts(content: str) -> list[str]:
    """Alert names a WeChat markdown message shows (``**Name**``), once per message."""
    return sorted(set(_BOLD_NAME.findall(content)))
