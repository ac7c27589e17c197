"""Fixtures for the stack tests: a real Prometheus loaded with the repository's rules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stack._procs import PrometheusProcess, require_binary, running_prometheus


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProcess]:
    """Prometheus scraping the sample exporter, every rule evaluated; stopped afterwards."""
    binary = require_binary("prometheus", "prometheus")
    with running_prometheus(binary, tmp_path_factory.mktemp("prometheus")) as process:
        yield process
