"""The results: a markdown report with the machine it ran on, and the targets checked."""

from __future__ import annotations

import math
import os
import platform
import subprocess
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

MIB = 1024 * 1024
RSS_LIMIT = 150 * MIB
RSS_NEAR_IDLE = 1.25  # "back near the idle figure": within 25% of it


@dataclass
class RelayRow:
    path: str
    concurrency: int
    load: LoadResult  # the median round
    relay_cpu_us: float | None  # CPU the relay process itself used per successful request
    round_rates: list[float] = field(default_factory=list)

    @classmethod
    def from_rounds(
        cls, path: str, concurrency: int, rounds: list[tuple[LoadResult, float | None]]
    ) -> RelayRow:
        """The round with the median rate stands for all; every round's rate is kept."""
        ordered = sorted(rounds, key=lambda measured: measured[0].rate)
        load, cpu_us = ordered[(len(ordered) - 1) // 2]
        return cls(path, concurrency, load, cpu_us, [measured.rate for measured, _ in rounds])


@dataclass
class Results:
    mode: str
    command: str
    generator: str
    durations: str
    relay: list[RelayRow] = field(default_factory=list)
    stream_params: str = ""
    stream_sequential: dict[str, StreamStats] = field(default_factory=dict)
    stream_unpaced: dict[str, StreamStats] = field(default_factory=dict)
    stream_concurrent: dict[str, StreamStats] = field(default_factory=dict)
    stream_concurrency: int = 0
    memory: MemoryResult | str | None = None
    scrape: ScrapeResult | str | None = None
    bridge_accept: LoadResult | str | None = None
    bridge_accept_connections: int = 0
    bridge_accepted_stored: int | None = None
    bridge_delivery: DeliveryResult | str | None = None
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
        "sheepdog": f"{_version('sheepdog')} ({_git_commit()})",
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


def _rate(results: Results, path: str, concurrency: int) -> float | None:
    for row in results.relay:
        if row.path == path and row.concurrency == concurrency:
            return row.load.rate
    return None


@dataclass
class Target:
    name: str
    measured: str
    holds: bool | None  # None: not measured


def targets(results: Results) -> list[Target]:
    found: list[Target] = []
    for concurrency in (20, 100):
        ours = _rate(results, SHEEPDOG, concurrency)
        floor = _rate(results, PASSTHROUGH, concurrency)
        name = f"non-streaming throughput ≥ 0.8 × pass-through, c={concurrency}"
        if ours is None or not floor:
            found.append(Target(name, "not measured", None))
        else:
            ratio = ours / floor
            found.append(
                Target(name, f"{ratio:.2f} × ({ours:,.0f} vs {floor:,.0f} req/s)", ratio >= 0.8)
            )
    seq = results.stream_sequential
    name = "added time to first token ≤ 1 ms at p50, sequential"
    if SHEEPDOG in seq and DIRECT in seq and seq[SHEEPDOG].ttft:
        added = _added(seq, SHEEPDOG, "ttft_p50")
        measured = f"{added * 1000:.2f} ms"
        context = []
        if PASSTHROUGH in seq and seq[PASSTHROUGH].ttft:
            floor = _added(seq, PASSTHROUGH, "ttft_p50")
            context.append(f"the bare pass-through adds {floor * 1000:.2f} ms")
        unpaced = results.stream_unpaced
        if SHEEPDOG in unpaced and DIRECT in unpaced and unpaced[SHEEPDOG].ttft:
            context.append(f"unpaced {_added(unpaced, SHEEPDOG, 'ttft_p50') * 1000:.2f} ms")
        if context:
            measured += f" ({'; '.join(context)})"
        found.append(Target(name, measured, added <= 0.001))
    else:
        found.append(Target(name, "not measured", None))
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
        found.append(
            Target(
                "RSS back near idle after the streams end (within 25%)",
                f"{_mib(memory.after_rss[0])} after vs {_mib(memory.idle_rss)} idle",
                memory.after_rss[0] <= memory.idle_rss * RSS_NEAR_IDLE,
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
    return stats[path].summary()[key] - stats[DIRECT].summary()[key]


def _stream_table(stats: dict[str, StreamStats]) -> list[str]:
    rows = []
    for path, stat in stats.items():
        s = stat.summary()
        added = [
            "—" if path == DIRECT or DIRECT not in stats else _ms(_added(stats, path, key))
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
        floor = {r.concurrency: r.load.rate for r in results.relay if r.path == PASSTHROUGH}
        rows = []
        for row in results.relay:
            load = row.load
            ratio = floor.get(row.concurrency)
            errors = ", ".join(f"{k} {v}" for k, v in load.errors.items()) or "0"
            spread = (
                f" ({min(row.round_rates):,.0f}–{max(row.round_rates):,.0f})"
                if len(row.round_rates) > 1
                else ""
            )
            rows.append(
                [
                    row.path,
                    str(row.concurrency),
                    f"{load.rate:,.0f}{spread}",
                    _ms(load.p50),
                    _ms(load.p99),
                    errors,
                    "—" if row.relay_cpu_us is None else f"{row.relay_cpu_us:,.0f}",
                    f"{load.rate / ratio:.2f}" if ratio else "—",
                ]
            )
        out += [
            "",
            "## Non-streaming relay",
            "",
            "`POST /v1/chat/completions` (a small request, a 300-byte answer with usage), "
            "sheepdog with a client key, pricing and a budget, as users run it. "
            "req/s is the median round (the range of the rounds in brackets), latencies in ms are "
            "that round's. *relay CPU* is the CPU time the relay process itself used per "
            "request (user + system), whatever the load generator and upstream cost.",
            "",
            *_table(
                [
                    "path",
                    "concurrency",
                    "req/s",
                    "p50",
                    "p99",
                    "errors",
                    "relay CPU µs/req",
                    "× pass-through",
                ],
                rows,
            ),
        ]
    if results.stream_sequential:
        out += [
            "",
            "## Streaming",
            "",
            f"{results.stream_params} Times in ms from sending the request: *TTFT* to the first "
            "chunk with content, *last* to `data: [DONE]`; *added* is the path's percentile minus "
            "the direct path's.",
            "",
            "Sequential (paths interleaved request by request):",
            "",
            *_stream_table(results.stream_sequential),
        ]
    if results.stream_unpaced:
        out += [
            "",
            "Sequential, unpaced (the upstream sends every chunk at once, so the cores have no "
            "time to fall idle between one hop and the next: what remains is the relays' own "
            "work rather than the time a core takes to wake up):",
            "",
            *_stream_table(results.stream_unpaced),
        ]
    if results.stream_concurrent:
        out += [
            "",
            f"Concurrency {results.stream_concurrency} (one path at a time):",
            "",
            *_stream_table(results.stream_concurrent),
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
    if results.notes:
        out += ["", "## Notes from this run", ""]
        out += [f"- {note}" for note in results.notes]
    if analysis:
        out += ["", analysis.strip()]
    return "\n".join(out) + "\n"
