"""Fixtures for the stack tests: a real Prometheus loaded with the repository's rules; the logs
of the live stack's processes shown under a test that fails with it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack._procs import PrometheusProcess, require_binary, running_prometheus


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    """Prometheus scraping the sample exporter, every rule evaluated; stopped afterwards."""
    binary = require_binary("prometheus", "prometheus")
    with running_prometheus(binary, tmp_path_factory.mktemp("prometheus")) as process:
        yield process


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test that used the live stack gets the logs of its processes in its report."""
    report = yield
    stack = getattr(item, "funcargs", {}).get("stack")
    if report.when == "call" and report.failed and stack is not None:
        report.sections.append(("logs of sheepdog, Alertmanager and Prometheus", stack.logs()))
    return report
