"""The results: a markdown report with the machine it ran on, and the targets checked."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench.bridge import DeliveryResult
from bench.load import wrk_version
from bench.memory import MemoryResult
from bench.nginx import nginx_version
from bench.procs import REPO_ROOT
from bench.scrape import ScrapeResult
from bench.stats import LoadResult
from bench.streaming import StreamStats

DIRECT = "direct to upstream"
PASSTHROUGH = "aiohttp pass-through"
NGINX = "nginx"
SHEEPDOG = "sheepdog"
SHEEPDOG_LIMITS = "sheepdog, limits on"
"""sheepdog with per-client rate limits and two upstreams (routing by model, failover ready)."""
# The Messages API (POST /v1/messages), streaming and not: sheepdog against the same pass-through
# relaying the same request.
PASSTHROUGH_MESSAGES = "aiohttp pass-through, Messages API"
SHEEPDOG_MESSAGES = "sheepdog, Messages API"
_FLOOR_OF = {SHEEPDOG_MESSAGES: PASSTHROUGH_MESSAGES, PASSTHROUGH_MESSAGES: PASSTHROUGH_MESSAGES}


def floor_of(path: str) -> str:
    """The pass-through a path's ratios are taken against: the one relaying the same request."""
    return _FLOOR_OF.get(path, PASSTHROUGH)


def _direct_of(path: str) -> str | None:
    """The direct path of a path's API, if the bench has one (only chat is measured direct)."""
    return DIRECT if floor_of(path) == PASSTHROUGH else None


MIB = 1024 * 1024
RSS_LIMIT = 150 * MIB
# A leak grows from one round of streams to the next; what CPython's allocator retains (and the
# pool of idle upstream connections, until their keep-alive ends) does not (bench/analysis.md).
RSS_ROUND_GROWTH = 1.05


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2] if ordered else math.nan


def _spread(values: list[float], digits: int = 0) -> str:
    """``median (min–max)`` of ``values``, or just the one value."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:,.{digits}f}"
    return f"{_median(values):,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


@dataclass
class RelayRow:
    """One path at one concurrency: every round's load and relay CPU per request."""

    path: str
    concurrency: int
    loads: list[LoadResult]
    cpu_us: list[float]  # CPU the relay process itself used per completed request, each round

    @property
    def load(self) -> LoadResult:
        """The round with the median rate (its latencies are the ones shown)."""
        return sorted(self.loads, key=lambda load: load.rate)[(len(self.loads) - 1) // 2]

    @property
    def rate(self) -> float:
        return _median([load.rate for load in self.loads])

    @property
    def cpu(self) -> float | None:
        return _median(self.cpu_us) if self.cpu_us else None

    @property
    def errors(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for load in self.loads:
            for kind, count in load.errors.items():
                total[kind] = total.get(kind, 0) + count
        return total


@dataclass
class StreamLoadRow:
    """One path at one number of concurrent streams: chunks relayed and CPU per chunk."""

    path: str
    streams: int
    chunk_rates: list[float]  # chunks per second the upstream sent through the path, each round
    cpu_us: list[float]  # relay CPU per chunk, each round
    loads: list[LoadResult]  # wrk's view: each "request" is a whole stream

    @property
    def load(self) -> LoadResult:
        return sorted(self.loads, key=lambda load: load.rate)[(len(self.loads) - 1) // 2]

    @property
    def cpu(self) -> float | None:
        return _median(self.cpu_us) if self.cpu_us else None

    @property
    def errors(self) -> int:
        return sum(load.error_count for load in self.loads)


@dataclass
class PhaseLoad:
    """How much of the machine other processes used while a phase ran."""

    phase: str
    seconds: float
    other_share: float
    steal_seconds: float


@dataclass
class Results:
    mode: str
    command: str
    generator: str
    durations: str
    relay_params: str = ""
    relay: list[RelayRow] = field(default_factory=list)
    stream_load_params: str = ""
    stream_load: list[StreamLoadRow] = field(default_factory=list)
    stream_params: str = ""
    stream_sequential: dict[str, StreamStats] = field(default_factory=dict)
    phases: list[PhaseLoad] = field(default_factory=list)
    memory: MemoryResult | str | None = None
    scrape: ScrapeResult | str | None = None
    bridge_accept: LoadResult | str | None = None
    bridge_accept_connections: int = 0
    bridge_accepted_stored: int | None = None
    bridge_delivery: DeliveryResult | str | None = None
    bridge_accept_variants: dict[str, LoadResult | str] = field(default_factory=dict)
    """Accepted per second by the sheepdog of each state variant (``--state``)."""
    notes: list[str] = field(default_factory=list)


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "CPU": cpu,
        "cores": f"{usable} (shared by the load generator and every server)",
        "memory": memory,
        "kernel": platform.release(),
        "OS": _os_name(),
        "Python": platform.python_version(),
        "aiohttp": _version("aiohttp"),
        "prometheus_client": _version("prometheus_client"),
        "sheepdog": f"{_tree_version()} ({_git_commit()})",
        "wrk": wrk_version() or "not installed",
        "nginx": nginx_version() or "not installed",
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _tree_version() -> str:
    """The version of the tree being measured, from its pyproject.toml (an environment's
    installed metadata can be older: it is written when the package is installed)."""
    try:
        with (Path(__file__).resolve().parent.parent / "pyproject.toml").open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return _version("sheepdog")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    commit = done.stdout.strip() or "unknown commit"
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"git {commit}{' + local changes' if dirty else ''}"


def _ms(seconds: float, digits: int = 2) -> str:
    return "—" if math.isnan(seconds) else f"{seconds * 1000:.{digits}f}"


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _relay_row(results: Results, path: str, concurrency: int) -> RelayRow | None:
    for row in results.relay:
        if row.path == path and row.concurrency == concurrency:
            return row
    return None


def _stream_row(results: Results, path: str, streams: int) -> StreamLoadRow | None:
    for row in results.stream_load:
        if row.path == path and row.streams == streams:
            return row
    return None


CPU_RATIO_LIMIT = 1.25  # sheepdog's CPU per request or chunk, against the bare pass-through's
TTFT_OVER_BARE_LIMIT = 0.0003  # seconds, sheepdog minus the bare pass-through, p50


@dataclass
class Target:
    name: str
    measured: str
    holds: bool | None  # None: not measured


def _cpu_target(name: str, ours: float | None, floor: float | None, unit: str) -> Target:
    if ours is None or not floor:
        return Target(name, "not measured", None)
    ratio = ours / floor
    return Target(
        name,
        f"{ratio:.2f} × ({ours:,.0f} vs {floor:,.0f} µs/{unit})",
        ratio <= CPU_RATIO_LIMIT,
    )


def targets(results: Results) -> list[Target]:
    found: list[Target] = []
    for path, what in ((SHEEPDOG, ""), (SHEEPDOG_LIMITS, ", limits on")):
        for concurrency in (20, 100):
            ours = _relay_row(results, path, concurrency)
            floor = _relay_row(results, PASSTHROUGH, concurrency)
            name = f"non-streaming throughput{what} ≥ 0.8 × pass-through, c={concurrency}"
            if ours is None or floor is None or not floor.rate:
                if path == SHEEPDOG:
                    found.append(Target(name, "not measured", None))
                continue
            ratio = ours.rate / floor.rate
            found.append(
                Target(
                    name,
                    f"{ratio:.2f} × ({ours.rate:,.0f} vs {floor.rate:,.0f} req/s)",
                    ratio >= 0.8,
                )
            )
    for path, what in (
        (SHEEPDOG, ""),
        (SHEEPDOG_LIMITS, ", limits on"),
        (SHEEPDOG_MESSAGES, ", Messages API"),
    ):
        for concurrency in (20, 100, 500):
            ours = _relay_row(results, path, concurrency)
            floor = _relay_row(results, floor_of(path), concurrency)
            if path != SHEEPDOG and ours is None:
                continue
            found.append(
                _cpu_target(
                    f"relay CPU per request{what} ≤ {CPU_RATIO_LIMIT} × pass-through, "
                    f"c={concurrency}",
                    ours.cpu if ours else None,
                    floor.cpu if floor else None,
                    "req",
                )
            )
    for path, what in ((SHEEPDOG, ""), (SHEEPDOG_MESSAGES, ", Messages API")):
        for streams in (200, 1000):
            ours_stream = _stream_row(results, path, streams)
            floor_stream = _stream_row(results, floor_of(path), streams)
            found.append(
                _cpu_target(
                    f"relay CPU per chunk{what} ≤ {CPU_RATIO_LIMIT} × pass-through, "
                    f"{streams:,} streams",
                    ours_stream.cpu if ours_stream else None,
                    floor_stream.cpu if floor_stream else None,
                    "chunk",
                )
            )
    seq = results.stream_sequential
    name = "added time to first token ≤ 1 ms at p50, sequential"
    if SHEEPDOG in seq and DIRECT in seq and seq[SHEEPDOG].ttft:
        added = _added(seq, SHEEPDOG, "ttft_p50")
        measured = f"{added * 1000:.2f} ms"
        if PASSTHROUGH in seq and seq[PASSTHROUGH].ttft:
            floor_added = _added(seq, PASSTHROUGH, "ttft_p50")
            measured += f" (the bare pass-through adds {floor_added * 1000:.2f} ms)"
        found.append(Target(name, measured, added <= 0.001))
    else:
        found.append(Target(name, "not measured", None))
    for path, what in ((SHEEPDOG, ""), (SHEEPDOG_MESSAGES, ", Messages API")):
        name = f"time to first token{what} over the bare pass-through ≤ 0.3 ms at p50, interleaved"
        over = _ttft_over_floor(seq, path)
        if over is None:
            found.append(Target(name, "not measured", None))
            continue
        p50, p99 = over
        found.append(
            Target(
                name,
                f"{p50 * 1000:.2f} ms at p50 ({p99 * 1000:.2f} ms at p99)",
                p50 <= TTFT_OVER_BARE_LIMIT,
            )
        )
    memory = results.memory
    if isinstance(memory, MemoryResult):
        found.append(
            Target(
                f"RSS ≤ 150 MB with {memory.streams:,} concurrent streams",
                f"{_mib(memory.peak_rss)} peak (idle {_mib(memory.idle_rss)})",
                memory.peak_rss <= RSS_LIMIT
                and memory.completed == memory.streams * len(memory.after_rss),
            )
        )
        if len(memory.after_rss) > 1:
            first, last = memory.after_rss[0], memory.after_rss[-1]
            found.append(
                Target(
                    "RSS after the streams end: no growth from one round to the next (≤ 5%)",
                    f"{_mib(first)} after the first round, {_mib(last)} after the last "
                    f"(idle {_mib(memory.idle_rss)})",
                    last <= first * RSS_ROUND_GROWTH,
                )
            )
    else:
        found.append(Target("RSS ≤ 150 MB with 1,000 concurrent streams", "not measured", None))
    accept = results.bridge_accept
    name = "bridge: ≥ 500 notifications/s accepted durably"
    if isinstance(accept, LoadResult):
        found.append(Target(name, f"{accept.rate:,.0f}/s", accept.rate >= 500))
    else:
        found.append(Target(name, "not measured", None))
    delivery = results.bridge_delivery
    name = "bridge: delivery latency p99 ≤ 50 ms within the rate"
    if isinstance(delivery, DeliveryResult) and delivery.delivered:
        found.append(
            Target(
                name,
                f"{_ms(delivery.p99, 1)} ms ({delivery.delivered}/{delivery.sent} delivered)",
                delivery.p99 <= 0.050 and delivery.delivered == delivery.sent,
            )
        )
    else:
        found.append(Target(name, "not measured", None))
    scrape = results.scrape
    if isinstance(scrape, ScrapeResult):
        found.append(
            Target(
                f"/metrics scrape of {scrape.models} models × {scrape.clients} clients < 50 ms",
                f"p50 {_ms(scrape.p50, 1)} ms, p99 {_ms(scrape.p99, 1)} ms",
                scrape.p99 < 0.050,
            )
        )
    else:
        found.append(
            Target("/metrics scrape of 50 models × 20 clients < 50 ms", "not measured", None)
        )
    return found


def _added(stats: dict[str, StreamStats], path: str, key: str) -> float:
    return _over(stats, path, DIRECT, key)


def _ttft_over_floor(stats: dict[str, StreamStats], path: str) -> tuple[float, float] | None:
    """A path's time to first token minus its pass-through's, at p50 and p99; None unmeasured."""
    floor = floor_of(path)
    if path not in stats or floor not in stats or not stats[path].ttft or not stats[floor].ttft:
        return None
    p50, p99 = (_over(stats, path, floor, key) for key in ("ttft_p50", "ttft_p99"))
    return p50, p99


def _over(stats: dict[str, StreamStats], path: str, base: str, key: str) -> float:
    return stats[path].summary()[key] - stats[base].summary()[key]


def _stream_table(stats: dict[str, StreamStats]) -> list[str]:
    rows = []
    for path, stat in stats.items():
        s = stat.summary()
        direct = _direct_of(path)
        added = [
            "—"
            if direct is None or path == direct or direct not in stats
            else _ms(_added(stats, path, key))
            for key in ("ttft_p50", "ttft_p99", "last_p50", "last_p99")
        ]
        extra = []
        if stat.errors:
            extra.append(f"{stat.errors} errors")
        if stat.usage_leaks:
            extra.append(f"{stat.usage_leaks} usage chunks leaked")
        rows.append(
            [
                path,
                str(len(stat.ttft)),
                _ms(s["ttft_p50"]),
                _ms(s["ttft_p99"]),
                _ms(s["last_p50"]),
                _ms(s["last_p99"]),
                *added,
                ", ".join(extra) or "—",
            ]
        )
    return _table(
        [
            "path",
            "streams",
            "TTFT p50",
            "TTFT p99",
            "last p50",
            "last p99",
            "added TTFT p50",
            "added TTFT p99",
            "added last p50",
            "added last p99",
            "problems",
        ],
        rows,
    )


def _relay_table(results: Results) -> list[str]:
    rows = []
    for row in results.relay:
        floor = _relay_row(results, floor_of(row.path), row.concurrency)
        load = row.load
        errors = ", ".join(f"{k} {v}" for k, v in row.errors.items()) or "0"
        cpu, floor_cpu = row.cpu, floor.cpu if floor else None
        rows.append(
            [
                row.path,
                str(row.concurrency),
                _spread([load.rate for load in row.loads]),
                _ms(load.p50),
                _ms(load.p99),
                errors,
                _spread(row.cpu_us) if row.cpu_us else "—",
                f"{cpu / floor_cpu:.2f}" if cpu and floor_cpu else "—",
                f"{row.rate / floor.rate:.2f}" if floor and floor.rate else "—",
            ]
        )
    return _table(
        [
            "path",
            "concurrency",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "relay CPU µs/req",
            "CPU × pass-through",
            "req/s × pass-through",
        ],
        rows,
    )


def _stream_load_table(results: Results) -> list[str]:
    rows = []
    for row in results.stream_load:
        floor = _stream_row(results, floor_of(row.path), row.streams)
        cpu, floor_cpu = row.cpu, floor.cpu if floor else None
        rows.append(
            [
                row.path,
                f"{row.streams:,}",
                _spread(row.chunk_rates),
                _ms(row.load.p50, 0),
                _ms(row.load.p99, 0),
                str(row.errors),
                _spread(row.cpu_us, 1) if row.cpu_us else "—",
                f"{cpu / floor_cpu:.2f}" if cpu and floor_cpu else "—",
            ]
        )
    return _table(
        [
            "path",
            "streams",
            "chunks/s",
            "stream p50 ms",
            "stream p99 ms",
            "errors",
            "relay CPU µs/chunk",
            "CPU × pass-through",
        ],
        rows,
    )


def _state_variants(results: Results) -> list[str]:
    """The sheepdogs of ``--state``: accept rate, and throughput against the pass-through."""
    if not results.bridge_accept_variants:
        return []
    out = ["", "With the state elsewhere (`--state`), the same measurements:", ""]
    for name, accept in results.bridge_accept_variants.items():
        if isinstance(accept, LoadResult):
            figure = (
                f"accepted **{accept.rate:,.0f}/s** (POST p50 {_ms(accept.p50)} ms, "
                f"p99 {_ms(accept.p99)} ms)"
            )
        else:
            figure = f"accept not measured: {accept}"
        ratios = []
        for row in results.relay:
            floor = _relay_row(results, PASSTHROUGH, row.concurrency)
            if row.path == name and floor is not None and floor.rate:
                ratios.append(
                    f"c={row.concurrency} {row.rate / floor.rate:.2f} × pass-through "
                    f"({row.rate:,.0f} req/s)"
                )
        relay = f"; non-streaming: {', '.join(ratios)}" if ratios else ""
        out.append(f"- {name}: {figure}{relay}.")
    return out


def render(results: Results, machine: dict[str, str], analysis: str = "") -> str:
    """The whole report as markdown; ``analysis`` (markdown) goes at the end."""
    out = [
        "# sheepdog benchmark results",
        "",
        f"Run {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {results.mode} mode: "
        f"`{results.command}`. Load generator: {results.generator}; {results.durations}. "
        "Every server is a separate process on loopback; the load generator and all servers share "
        "the same cores, so absolute figures are lower than on a dedicated machine, and the "
        "ratios measured in the same run are what matter.",
        "",
        "## Machine",
        "",
        *_table(["", ""], [[key, value] for key, value in machine.items()]),
        "",
        "## Targets",
        "",
        *_table(
            ["target", "measured", "holds"],
            [
                [t.name, t.measured, "—" if t.holds is None else ("yes" if t.holds else "**no**")]
                for t in targets(results)
            ],
        ),
    ]
    if results.relay:
        out += ["", "## Non-streaming relay", "", results.relay_params, "", *_relay_table(results)]
    if results.stream_load:
        out += [
            "",
            "## Streaming: many streams at once",
            "",
            results.stream_load_params,
            "",
            *_stream_load_table(results),
        ]
    if results.stream_sequential:
        seq = results.stream_sequential
        overs = []
        for path, what in ((SHEEPDOG, ""), (SHEEPDOG_MESSAGES, "; through the Messages API")):
            over = _ttft_over_floor(seq, path)
            if over is not None:
                overs.append(f"{what}: {_ms(over[0])} ms at p50, {_ms(over[1])} ms at p99")
        summary = (
            f" **sheepdog minus the bare pass-through{''.join(overs)}** (each percentile of one "
            "path minus the other's)."
            if overs
            else ""
        )
        out += [
            "",
            "## Streaming: time to first token",
            "",
            f"{results.stream_params} Times in ms from sending the request: *TTFT* to the first "
            "chunk with content (Messages API: the first `content_block_delta` with text), *last* "
            "to `data: [DONE]` (`message_stop`); *added* is the path's percentile minus the "
            f"direct path's (chat only: the Messages API is not measured direct).{summary}",
            "",
            *_stream_table(seq),
        ]
    out += ["", "## Memory", ""]
    memory = results.memory
    if isinstance(memory, MemoryResult):
        rounds = len(memory.after_rss)
        after = " → ".join(_mib(size) for size in memory.after_rss)
        out += [
            f"A fresh sheepdog; {memory.streams:,} streams opened over 1 s, each lasting "
            f"{memory.stream_seconds:g} s at the upstream"
            + (f", {rounds} rounds one after the other" if rounds > 1 else "")
            + "; RSS from /proc (VmRSS), sampled every 100 ms; open file descriptors from "
            "/proc/PID/fd.",
            "",
            *_table(
                [
                    "idle (after warm-up)",
                    "peak with streams open",
                    "after they end" + (" (each round)" if rounds > 1 else ""),
                    "VmHWM",
                    "fds idle / peak / after",
                    "streams completed",
                    "errors",
                    "open at once at the upstream",
                ],
                [
                    [
                        _mib(memory.idle_rss),
                        _mib(memory.peak_rss),
                        after,
                        _mib(memory.hwm_rss),
                        f"{memory.idle_fds} / {memory.peak_fds:,} / {memory.after_fds:,}",
                        f"{memory.completed:,}",
                        str(memory.errors),
                        f"{memory.upstream_peak_streams:,}",
                    ]
                ],
            ),
        ]
    else:
        out.append(f"Not measured: {memory or 'skipped'}.")
    out += ["", "## /metrics scrape", ""]
    scrape = results.scrape
    if isinstance(scrape, ScrapeResult):
        out += [
            f"After one request for every one of {scrape.models} models × {scrape.clients} "
            f"clients, and a stream per model; {scrape.scrapes} scrapes one after another.",
            "",
            *_table(
                ["samples", "llm_requests_total series", "body", "p50 ms", "p99 ms", "max ms"],
                [
                    [
                        f"{scrape.samples:,}",
                        f"{scrape.request_series:,}",
                        f"{scrape.bytes / 1024:,.0f} KiB",
                        _ms(scrape.p50),
                        _ms(scrape.p99),
                        _ms(scrape.max),
                    ]
                ],
            ),
        ]
        if scrape.failed:
            out.append(f"\n{scrape.failed} of the populating requests failed.")
    else:
        out.append(f"Not measured: {scrape or 'skipped'}.")
    out += ["", "## Bridge", ""]
    accept = results.bridge_accept
    if isinstance(accept, LoadResult):
        stored = (
            ""
            if results.bridge_accepted_stored is None
            else f"; sheepdog counted {results.bridge_accepted_stored:,} alerts received"
        )
        errors = ", ".join(f"{k} {v}" for k, v in accept.errors.items()) or "none"
        out += [
            f"Accepted: distinct Alertmanager notifications POSTed by {accept.generator} at "
            f"concurrency {results.bridge_accept_connections} to a WeChat target limited to 20 "
            f"a minute (so they queue and merge into digests): **{accept.rate:,.0f}/s** answered "
            f"200 (stored in SQLite, WAL, synchronous=FULL), POST p50 {_ms(accept.p50)} ms, "
            f"p99 {_ms(accept.p99)} ms; errors: {errors}{stored}.",
        ]
    else:
        out.append(f"Accepted: not measured: {accept or 'skipped'}.")
    out += _state_variants(results)
    delivery = results.bridge_delivery
    out.append("")
    if isinstance(delivery, DeliveryResult):
        out += [
            f"Delivery: {delivery.sent} notifications, one every {delivery.interval * 1000:g} ms, "
            "to a WeChat target whose rate limit is far above that; from the start of the POST "
            "to sheepdog to the local WeChat robot receiving the message: "
            f"p50 **{_ms(delivery.p50, 1)} ms**, p99 **{_ms(delivery.p99, 1)} ms**, max "
            f"{_ms(delivery.max, 1)} ms; {delivery.delivered} delivered"
            + (f", {delivery.rejected} refused" if delivery.rejected else "")
            + ".",
        ]
    else:
        out.append(f"Delivery: not measured: {delivery or 'skipped'}.")
    if results.notes or results.phases:
        out += ["", "## Notes from this run", ""]
        out += [f"- {note}" for note in results.notes]
        if results.phases:
            out += [
                "",
                "How busy the machine was (CPU time of processes outside the bench, as a share of "
                "both cores, and the hypervisor's steal): CPU per request and per chunk are the "
                "relay process's own and barely move with it; req/s, chunks/s and latencies do.",
                "",
                *_table(
                    ["phase", "seconds", "other processes", "steal"],
                    [
                        [
                            phase.phase,
                            f"{phase.seconds:.0f}",
                            f"{phase.other_share:.0%}",
                            f"{phase.steal_seconds:.1f} s",
                        ]
                        for phase in results.phases
                    ],
                ),
            ]
    if analysis:
        out += ["", analysis.strip()]
    return "\n".join(out) + "\n"
