"""``workers: N``: what each of N processes on one ``listen`` knows of the others, and how
``/metrics`` stays the whole service's.

The kernel hands each connection to one of the processes (SO_REUSEPORT), so a scrape reaches
one of them at random. Each process therefore also serves its own exposition on a Unix socket
of its own, and the one a scrape reaches adds the others' to its own (:func:`merge`): counters
and histograms summed, gauges combined by what they mean (:data:`GAUGE_RULES`). Prometheus sees
one target whose counters are the sum of the processes', as with one process; the rules and
dashboards need nothing else. A process that does not answer fails the scrape (503) rather than
showing counters that seem to drop, which ``rate()`` would read as a reset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
from prometheus_client.utils import floatToGoString

__all__ = ["GAUGE_RULES", "WorkerSet", "fetch_siblings", "merge"]

_format: Callable[[float], str] = floatToGoString

GAUGE_RULES: Final[dict[str, Callable[[Iterable[float]], float]]] = {
    # Per process: the service's is the sum.
    "llm_active_requests": sum,
    # One process whose last reload failed makes the service's 0, and its time the oldest.
    "sheepdog_config_last_reload_successful": min,
    "sheepdog_config_last_reload_success_timestamp_seconds": min,
    # Everything else is the same state seen by each process (the shared ledger and outbox,
    # the config, a heartbeat one of them received): the largest is the most recent.
}
_DEFAULT_GAUGE_RULE: Final = max
_FETCH_TIMEOUT_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class WorkerSet:
    """This process's place among the ``count`` serving ``listen`` together."""

    index: int
    count: int
    directory: Path
    """Where each process's own exposition socket is (private to the service)."""

    def socket_of(self, index: int) -> Path:
        return self.directory / f"worker-{index}.sock"

    @property
    def own_socket(self) -> Path:
        return self.socket_of(self.index)

    @property
    def siblings(self) -> list[Path]:
        return [self.socket_of(i) for i in range(self.count) if i != self.index]


class SiblingFailed(Exception):
    """Another process did not give its exposition; the message says which and why."""


async def fetch_siblings(
    workers: WorkerSet, accept: str, query: Sequence[tuple[str, str]]
) -> list[str]:
    """The expositions of the other processes, in the format ``accept`` asks for."""

    async def fetch(path: Path) -> str:
        try:
            async with (
                aiohttp.ClientSession(
                    connector=aiohttp.UnixConnector(path=str(path)),
                    timeout=aiohttp.ClientTimeout(total=_FETCH_TIMEOUT_SECONDS),
                ) as session,
                session.get(
                    "http://worker/metrics",
                    params=list(query),
                    headers={"Accept": accept, "Accept-Encoding": "identity"},
                ) as response,
            ):
                if response.status != 200:
                    raise SiblingFailed(f"{path.name} answered {response.status}")
                return await response.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise SiblingFailed(f"{path.name}: {type(exc).__name__}") from exc

    return list(await asyncio.gather(*(fetch(path) for path in workers.siblings)))


class _Family:
    __slots__ = ("header", "kind", "name", "samples")

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind = "untyped"
        self.header: list[str] = []
        self.samples: dict[str, list[float]] = {}


def merge(expositions: Sequence[str]) -> str:
    """One exposition from several processes' (all in one format, text or OpenMetrics):
    each series once, its values combined by its family's type; families and series in the
    order they first appear."""
    families: dict[str, _Family] = {}
    eof = False
    for text in expositions:
        family: _Family | None = None
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                if line == "# EOF":
                    eof = True
                    continue
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE", "UNIT"):
                    family = families.get(parts[2])
                    first = family is None
                    if family is None:
                        family = families[parts[2]] = _Family(parts[2])
                    if parts[1] == "TYPE" and len(parts) == 4:
                        family.kind = parts[3]
                    if first or line not in family.header:
                        family.header.append(line)
                continue
            if family is None:  # a sample before any header: keep it in a family of its own
                family = families.setdefault("", _Family(""))
            prefix, _, value = line.rpartition(" ")
            family.samples.setdefault(prefix, []).append(float(value))
    out: list[str] = []
    for family in families.values():
        out.extend(f"{line}\n" for line in family.header)
        combine = _combiner(family)
        out.extend(
            f"{prefix} {_format(combine(values))}\n" for prefix, values in family.samples.items()
        )
    if eof:
        out.append("# EOF\n")
    return "".join(out)


def _combiner(family: _Family) -> Callable[[Iterable[float]], float]:
    if family.kind in ("gauge", "untyped", "info", "stateset", "unknown"):
        return GAUGE_RULES.get(family.name, _DEFAULT_GAUGE_RULE)
    return sum  # counters, histograms, summaries, gauge histograms: per-process counts add up
