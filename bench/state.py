"""sheepdog with its state elsewhere: PostgreSQL (``database.url``) and ``workers: 2``.

Each variant is one more path of the relay phase (the same figures as the SQLite sheepdog, the
targets checked against the same pass-through) and one more accept measurement of the bridge.
PostgreSQL is a throwaway cluster on loopback, as the tests start it
(``tests/support/postgres.py``), but with its durability settings left on (fsync, full page
writes): "accepted" means committed to disk there as much as in SQLite.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from bench.procs import free_port
from tests.support.postgres import running_server, why_unavailable

__all__ = ["VARIANTS", "Variant", "postgres_urls"]


@dataclass(frozen=True)
class Variant:
    name: str
    """The path's name in the report."""
    key: str
    """As given to ``--state``."""
    postgres: bool
    workers: int

    def config(self, url: str | None) -> dict[str, object]:
        state: dict[str, object] = {"workers": self.workers}
        if self.postgres:
            assert url is not None
            state["database"] = {"url": url}
        return state


VARIANTS: Final = {
    variant.key: variant
    for variant in (
        Variant("sheepdog, PostgreSQL", "postgresql", postgres=True, workers=1),
        Variant("sheepdog, workers 2", "workers2", postgres=False, workers=2),
        Variant("sheepdog, PostgreSQL, workers 2", "postgresql-workers2", postgres=True, workers=2),
    )
}


@contextlib.contextmanager
def postgres_urls(wanted: bool) -> Iterator[Iterator[str] | str]:
    """Fresh database URLs on a durable local cluster; or why there is none."""
    if not wanted:
        yield "not asked for"
        return
    reason = why_unavailable()
    if reason is not None:
        yield reason
        return
    with running_server(free_port(), durable=True) as server:
        yield (server.database_url() for _ in iter(int, 1))
