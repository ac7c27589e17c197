"""``python -m bench``: run every measurement, print the markdown report and write RESULTS.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench import bridge, memory, scrape, streaming
from bench.load import Request, run_load, wrk_binary
from bench.nginx import nginx_binary, start_nginx
from bench.procs import (
    BENCH_ROOT,
    CpuSnapshot,
    ProcessGroup,
    Server,
    free_port,
    other_cpu_seconds,
    python_module,
    raise_open_files_limit,
    tree_cpu_seconds,
)
from bench.profile import Recording, py_spy_binary
from bench.report import (
    DIRECT,
    NGINX,
    PASSTHROUGH,
    PASSTHROUGH_MESSAGES,
    SHEEPDOG,
    SHEEPDOG_LIMITS,
    SHEEPDOG_MESSAGES,
    PhaseLoad,
    RelayRow,
    Results,
    StreamLoadRow,
    machine_info,
    render,
)
from bench.service import (
    ACCEPT_TARGET,
    chat_body,
    client_headers,
    messages_headers,
    model_name,
    proxy_available,
    start_robot,
    start_sheepdog,
    start_upstream,
    upstream_stats,
)
from bench.state import VARIANTS, Variant, postgres_urls
from bench.stats import LoadResult
from bench.streaming import CHAT, MESSAGES, Api, pace_headers

T = TypeVar("T")

PROFILE_SECONDS = 8.0
"""How long each profile of sheepdog under load (``--profile``) samples."""

PHASES = ("relay", "stream", "scrape", "bridge", "memory")
"""``stream`` is both streaming measurements: many streams at once, and time to first token."""


@dataclass(frozen=True)
class Settings:
    """How long and how big each measurement is."""

    warmup: float
    duration: float
    rounds: int
    concurrencies: tuple[int, ...]
    stream_loads: tuple[int, ...]
    stream_load_chunks: int
    stream_load_delay_ms: float
    stream_load_duration: float
    stream_load_rounds: int
    stream_chunks: int
    stream_chunk_delay_ms: float
    stream_rounds: int
    memory_streams: int
    memory_rounds: int
    memory_chunks: int
    memory_chunk_delay_ms: float
    memory_settle: float
    scrape_models: int
    scrape_clients: int
    scrapes: int
    delivery_count: int
    delivery_interval: float
    accept_connections: int
    accept_duration: float


FULL = Settings(
    warmup=1,
    duration=3,
    rounds=5,
    concurrencies=(20, 100, 500),
    stream_loads=(200, 1000),
    stream_load_chunks=20,
    stream_load_delay_ms=100,
    stream_load_duration=6,
    stream_load_rounds=3,
    stream_chunks=20,
    stream_chunk_delay_ms=2,
    stream_rounds=200,
    memory_streams=1000,
    memory_rounds=2,
    memory_chunks=16,
    memory_chunk_delay_ms=500,
    memory_settle=3,
    scrape_models=50,
    scrape_clients=20,
    scrapes=50,
    delivery_count=200,
    delivery_interval=0.05,
    accept_connections=50,
    accept_duration=5,
)
QUICK = Settings(
    warmup=0,
    duration=1,
    rounds=1,
    concurrencies=(20,),
    stream_loads=(20,),
    stream_load_chunks=5,
    stream_load_delay_ms=20,
    stream_load_duration=1,
    stream_load_rounds=1,
    stream_chunks=5,
    stream_chunk_delay_ms=1,
    stream_rounds=10,
    memory_streams=50,
    memory_rounds=1,
    memory_chunks=4,
    memory_chunk_delay_ms=100,
    memory_settle=0.5,
    scrape_models=5,
    scrape_clients=4,
    scrapes=5,
    delivery_count=10,
    delivery_interval=0.02,
    accept_connections=10,
    accept_duration=1,
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = QUICK if args.quick else FULL
    phases = set(args.phases.split(",")) if args.phases else set(PHASES)
    unknown = phases - set(PHASES)
    if unknown:
        print(f"unknown phase(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    states = [key for key in (args.state or "").split(",") if key]
    unknown = set(states) - set(VARIANTS)
    if unknown:
        print(f"unknown state variant(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    variants = [VARIANTS[key] for key in states]
    raise_open_files_limit()
    use_wrk = not args.no_wrk and wrk_binary() is not None
    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    results = Results(
        mode="quick" if args.quick else "full",
        command=command.strip(),
        generator="wrk, one thread"
        if use_wrk
        else "built-in aiohttp generator (wrk "
        + ("not used" if args.no_wrk else "not found")
        + ")",
        durations=(
            f"each relay figure is the median of {settings.rounds} rounds of "
            f"{settings.duration:g} s (streams: {settings.stream_load_rounds} of "
            f"{settings.stream_load_duration:g} s), the paths taking turns round by round, after "
            f"{settings.warmup:g} s of warm-up"
            if settings.rounds > 1
            else f"each relay figure is one round of {settings.duration:g} s"
        ),
    )
    if args.profile and py_spy_binary() is None:
        results.notes.append("--profile given but py-spy is not installed: no profiles taken.")
        args.profile = None
    _check_quiet(results)
    cpu_start = CpuSnapshot.take()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sheepdog-bench-") as tmp:
        workdir = Path(args.keep_workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        with (
            postgres_urls(any(variant.postgres for variant in variants)) as urls,
            ProcessGroup(workdir) as group,
        ):
            run = _Run(group, settings, results, use_wrk, args)
            run.start_servers(phases, use_nginx=not args.no_nginx)
            run.start_variants(variants, urls)
            if "relay" in phases:
                _timed(results, group, "non-streaming relay", run.relay)
            if "stream" in phases:
                _timed(results, group, "streams at once", run.stream_load)
                _timed(results, group, "time to first token", run.stream)
            if "scrape" in phases:
                _timed(results, group, "/metrics scrape", run.scrape)
            if "bridge" in phases:
                _timed(results, group, "bridge", run.bridge)
            group.close()
            if "memory" in phases:
                _timed(results, group, "memory", run.memory)
    _account_other_load(results, cpu_start, time.monotonic() - started)
    analysis = BENCH_ROOT / "analysis.md"
    report = render(
        results,
        machine_info(),
        analysis.read_text() if analysis.exists() and not args.quick else "",
    )
    print(report)
    if args.out != "-":
        Path(args.out).write_text(report)
        print(f"written to {args.out}", file=sys.stderr)
    return 0


def _timed(results: Results, group: ProcessGroup, phase: str, work: Callable[[], None]) -> None:
    """Run one phase and note how much of the machine other processes took meanwhile."""
    start, started = CpuSnapshot.take(group.servers), time.monotonic()
    work()
    end, elapsed = CpuSnapshot.take(group.servers), time.monotonic() - started
    capacity = max(elapsed * (os.cpu_count() or 1), 1e-9)
    results.phases.append(
        PhaseLoad(phase, elapsed, other_cpu_seconds(start, end) / capacity, end.steal - start.steal)
    )


def _check_quiet(results: Results) -> None:
    """Note it when other work keeps the machine busy before the run: the figures suffer."""
    before = CpuSnapshot.take()
    time.sleep(1.0)
    after = CpuSnapshot.take()
    busy = (after.busy - before.busy) / (os.cpu_count() or 1)
    if busy > 0.10:
        note = (
            f"Before the run, other work kept the machine {busy:.0%} busy; the figures are lower "
            "and noisier than on a quiet machine."
        )
        results.notes.append(note)
        print(f"note: {note}", file=sys.stderr)


def _account_other_load(results: Results, start: CpuSnapshot, elapsed: float) -> None:
    end = CpuSnapshot.take()
    other = other_cpu_seconds(start, end)
    capacity = elapsed * (os.cpu_count() or 1)
    results.notes.append(
        f"The run took {elapsed:.0f} s. Processes outside the bench used {other:.1f} CPU-seconds "
        f"meanwhile ({other / capacity:.1%} of the machine); the hypervisor took "
        f"{end.steal - start.steal:.1f} s (steal)."
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark sheepdog against its upstream, a bare aiohttp pass-through and "
        "nginx, and write a markdown report.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument(
        "--out",
        default=str(BENCH_ROOT / "RESULTS.md"),
        help="where to write the report ('-' for nowhere; default bench/RESULTS.md)",
    )
    parser.add_argument(
        "--phases", help=f"comma-separated subset of {','.join(PHASES)} (default: all)"
    )
    parser.add_argument("--no-wrk", action="store_true", help="use the built-in generator")
    parser.add_argument("--no-nginx", action="store_true", help="leave nginx out")
    parser.add_argument(
        "--profile", metavar="DIR", help="record py-spy profiles of sheepdog under load into DIR"
    )
    parser.add_argument("--keep-workdir", metavar="DIR", help="keep configs, logs and state in DIR")
    parser.add_argument(
        "--state",
        metavar="VARIANTS",
        help="also measure sheepdog with its state elsewhere, comma-separated: "
        + ", ".join(VARIANTS),
    )
    return parser


class _Run:
    def __init__(
        self,
        group: ProcessGroup,
        settings: Settings,
        results: Results,
        use_wrk: bool,
        args: argparse.Namespace,
    ) -> None:
        self.group = group
        self.settings = settings
        self.results = results
        self.use_wrk = use_wrk
        self.profile_dir = Path(args.profile) if args.profile else None
        self.paths: dict[str, Server] = {}
        # The same servers asked through another API: more paths of every relay phase.
        self.api_paths: dict[str, tuple[Server, Api]] = {}
        self.sheepdog: Server | None = None
        self.proxy_ok = False
        self.bridge_ok = False
        self.bridge_why = ""
        self.robot: Server | None = None
        self.variants: dict[str, Server] = {}
        self.upstream: Server | None = None

    def _note(self, text: str) -> None:
        self.results.notes.append(text)
        print(f"note: {text}", file=sys.stderr)

    def start_servers(self, phases: set[str], *, use_nginx: bool) -> None:
        """The paths compared, in the order they take turns: each is a server on loopback.

        Another path (a sheepdog with other settings, another relay) is one more entry in
        ``self.paths``; every phase then measures it with the same figures.
        """
        s = self.settings
        upstream = start_upstream(
            self.group, "upstream", chunks=s.stream_chunks, event_delay_ms=s.stream_chunk_delay_ms
        )
        self.upstream = upstream
        self.paths[DIRECT] = upstream
        port = free_port()
        self.paths[PASSTHROUGH] = self.group.start(
            "passthrough",
            [*python_module("bench.passthrough"), "--port", str(port), "--upstream", upstream.url],
            port,
            health_url=f"http://127.0.0.1:{port}/bench/health",
        )
        if use_nginx and nginx_binary() is not None:
            self.paths[NGINX] = start_nginx(self.group, free_port(), upstream.port)
        elif use_nginx:
            self._note("nginx is not installed: its rows are left out.")
        self.robot = start_robot(self.group)
        if phases - {"memory"}:
            self.sheepdog = start_sheepdog(
                self.group, "sheepdog", f"{upstream.url}/v1", self.robot.url
            )
            self.proxy_ok, why = proxy_available(self.sheepdog)
            if self.proxy_ok:
                self.paths[SHEEPDOG] = self.sheepdog
                # The same, with rate limits on every client and two upstreams.
                limited = start_sheepdog(
                    self.group, "sheepdog-limits", f"{upstream.url}/v1", limits=True
                )
                if proxy_available(limited)[0]:
                    self.paths[SHEEPDOG_LIMITS] = limited
                else:
                    self._note("sheepdog with limits on does not relay: its rows are left out.")
                # The Messages API: the same sheepdog and the same pass-through, another request.
                self.api_paths[PASSTHROUGH_MESSAGES] = (self.paths[PASSTHROUGH], MESSAGES)
                self.api_paths[SHEEPDOG_MESSAGES] = (self.sheepdog, MESSAGES)
            else:
                self._note(f"sheepdog does not relay yet ({why}): its proxy rows are left out.")
            self.bridge_ok, self.bridge_why = bridge.bridge_available(self.sheepdog.url)
            if not self.bridge_ok:
                self._note(f"sheepdog's bridge does not accept alerts yet ({self.bridge_why}).")

    def start_variants(self, variants: list[Variant], urls: Iterator[str] | str) -> None:
        """One more sheepdog per state variant: a path of the relay phases, and a bridge whose
        accept rate is measured too."""
        if self.sheepdog is None or self.robot is None or self.upstream is None:
            return
        for variant in variants:
            if variant.postgres and isinstance(urls, str):
                self._note(f"{variant.name}: not measured: {urls}.")
                continue
            url = next(urls) if variant.postgres and not isinstance(urls, str) else None
            server = start_sheepdog(
                self.group,
                f"sheepdog-{variant.key}",
                f"{self.upstream.url}/v1",
                self.robot.url,
                state=variant.config(url),
            )
            ok, why = proxy_available(server)
            if not ok:
                self._note(f"{variant.name} does not relay ({why}): its rows are left out.")
                continue
            self.paths[variant.name] = server
            self.variants[variant.name] = server

    def _relay_paths(self) -> dict[str, tuple[Server, Api]]:
        """Every path of the relay phases, in the order they take turns: ``self.paths`` asked
        through the chat API, then ``self.api_paths``."""
        return {**{name: (server, CHAT) for name, server in self.paths.items()}, **self.api_paths}

    def _profile(self, name: str, duration: float) -> Recording | None:
        if self.profile_dir is None or self.sheepdog is None:
            return None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        return Recording(self.sheepdog.pid, duration, self.profile_dir / f"{name}.txt")

    def _finish_profile(self, recording: Recording | None) -> None:
        if recording is not None:
            print(f"profile: {recording.finish()}", file=sys.stderr)

    def relay(self) -> None:
        """Each concurrency: every path in turn, ``rounds`` times over; medians are reported.

        Interleaving the paths round by round means that a burst of other work on the machine
        lowers all of them alike rather than one path's whole measurement. The relay's CPU per
        request is its process's user + system time over the round (from /proc) divided by the
        requests wrk completed: what the relay itself spends, whatever else the cores were doing.
        """
        s = self.settings
        self.results.relay_params = (
            "`POST /v1/chat/completions` (a small request, a 300-byte answer with usage), "
            "sheepdog with a client key, pricing and a budget, as users run it; wrk keeps "
            "*concurrency* requests in flight. Each figure is the median of the rounds, their "
            "range in brackets; latencies are those of the median round. *relay CPU* is the CPU "
            "time (user + system) the relay process itself used per completed request, whatever "
            "the load generator and the upstream cost; the ratios are to the bare aiohttp "
            "pass-through at the same concurrency."
        )
        paths = self._relay_paths()
        for concurrency in s.concurrencies:
            loads: dict[str, list[LoadResult]] = {name: [] for name in paths}
            cpus: dict[str, list[float]] = {name: [] for name in paths}
            for server, api in paths.values():
                if s.warmup:
                    run_load(self._call(server, api), concurrency, s.warmup, use_wrk=self.use_wrk)
            for _ in range(s.rounds):
                for name, (server, api) in paths.items():
                    relay_pid = None if name == DIRECT else server.pid
                    cpu_before = tree_cpu_seconds(relay_pid) if relay_pid else 0.0
                    request = self._call(server, api)
                    load = run_load(request, concurrency, s.duration, use_wrk=self.use_wrk)
                    loads[name].append(load)
                    if relay_pid and load.ok:
                        used = tree_cpu_seconds(relay_pid) - cpu_before
                        cpus[name].append(used / load.ok * 1e6)
            if SHEEPDOG in self.paths and concurrency == max(s.concurrencies):
                # Profiled apart from the measured rounds: sampling costs the process some time.
                recording = self._profile(f"relay-c{concurrency}", PROFILE_SECONDS)
                if recording is not None:
                    request = self._call(self.paths[SHEEPDOG], CHAT)
                    run_load(request, concurrency, PROFILE_SECONDS, use_wrk=self.use_wrk)
                    self._finish_profile(recording)
            for name in paths:
                row = RelayRow(name, concurrency, loads[name], cpus[name])
                self.results.relay.append(row)
                cpu = f"{row.cpu:6.0f} µs/req" if row.cpu is not None else "     — µs/req"
                print(
                    f"relay {name:34} c={concurrency:<4} {row.rate:8,.0f} req/s  CPU {cpu} "
                    f"(rounds {', '.join(f'{c:.0f}' for c in row.cpu_us)})",
                    file=sys.stderr,
                )

    @staticmethod
    def _call(server: Server, api: Api) -> Request:
        """A non-streaming call of ``api`` (the chat body is a valid Messages API body too)."""
        return Request(f"{server.url}{api.path}", chat_body(model_name(0)), _headers(api))

    @staticmethod
    def _stream(server: Server, api: Api, pace: dict[str, str]) -> Request:
        body = api.body(model_name(0)).decode()
        return Request(f"{server.url}{api.path}", body, {**_headers(api), **pace})

    def stream_load(self) -> None:
        """Many streams at once, wrk keeping each connection on stream after stream.

        Chunks are counted where they start, at the upstream (every event it wrote), so streams
        still open when a round ends count too; the relay's CPU is read once the upstream has no
        stream open any more, so what it spends finishing (or abandoning) them counts too.
        """
        s = self.settings
        assert self.upstream is not None
        self.results.stream_load_params = (
            f"wrk keeps *streams* `POST /v1/chat/completions` streams open at once, each one "
            f"{s.stream_load_chunks} content chunks {s.stream_load_delay_ms:g} ms apart "
            "(the client does not ask for usage: sheepdog asks the upstream for it and removes "
            "it), a new one as soon as one ends; the *Messages API* rows stream "
            f"`POST /v1/messages` at the same pace ({s.stream_load_chunks} text deltas among "
            f"{s.stream_load_chunks + 6} events). *chunks/s* "
            "are the events the upstream sent through the path per second, every kind; *stream* "
            "times are wrk's, from the request to the last byte; *relay CPU* is the relay "
            "process's CPU time per chunk, the streams' set-up included; ratios are to the "
            "pass-through relaying the same API. Medians of the rounds, ranges in brackets."
        )
        pace = pace_headers(s.stream_load_chunks, s.stream_load_delay_ms)
        paths = self._relay_paths()
        for streams in s.stream_loads:
            rates: dict[str, list[float]] = {name: [] for name in paths}
            cpus: dict[str, list[float]] = {name: [] for name in paths}
            loads: dict[str, list[LoadResult]] = {name: [] for name in paths}
            for server, api in paths.values():
                if s.warmup:
                    request = self._stream(server, api, pace)
                    run_load(request, streams, s.warmup, use_wrk=self.use_wrk)
                    self._wait_streams_closed()
            for _ in range(s.stream_load_rounds):
                for name, (server, api) in paths.items():
                    relay_pid = None if name == DIRECT else server.pid
                    cpu_before = tree_cpu_seconds(relay_pid) if relay_pid else 0.0
                    before = upstream_stats(self.upstream)["events"]
                    load = run_load(
                        self._stream(server, api, pace),
                        streams,
                        s.stream_load_duration,
                        use_wrk=self.use_wrk,
                    )
                    during = upstream_stats(self.upstream)["events"] - before
                    self._wait_streams_closed()
                    total = upstream_stats(self.upstream)["events"] - before
                    loads[name].append(load)
                    rates[name].append(during / load.duration if load.duration else 0.0)
                    if relay_pid and total:
                        used = tree_cpu_seconds(relay_pid) - cpu_before
                        cpus[name].append(used / total * 1e6)
            for name in paths:
                row = StreamLoadRow(name, streams, rates[name], cpus[name], loads[name])
                self.results.stream_load.append(row)
                cpu = f"{row.cpu:5.1f} µs/chunk" if row.cpu is not None else "    — µs/chunk"
                print(
                    f"streams {name:34} n={streams:<5} "
                    f"{sorted(row.chunk_rates)[(len(row.chunk_rates) - 1) // 2]:8,.0f} chunks/s  "
                    f"CPU {cpu}",
                    file=sys.stderr,
                )

    def _wait_streams_closed(self, timeout: float = 30.0) -> None:
        """Until the upstream has no stream open (the last round's have finished or gone)."""
        assert self.upstream is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if upstream_stats(self.upstream)["active_streams"] == 0:
                return
            time.sleep(0.05)
        self._note(f"streams still open at the upstream {timeout:g} s after a round ended")

    def stream(self) -> None:
        """Time to first token: one stream at a time, the paths taking turns stream by stream."""
        s = self.settings
        self.results.stream_params = (
            f"One stream at a time, {s.stream_rounds} per path, the paths taking turns stream by "
            f"stream. The upstream streams {s.stream_chunks} content chunks "
            f"{s.stream_chunk_delay_ms:g} ms apart, the first at once (it carries the role: no "
            "role-only opener; in a Messages API stream, `message_start`, `content_block_start` "
            "and `ping` go with it), so time to first token is the relays' own; the client does "
            "not ask for usage (sheepdog asks the upstream for it and removes it)."
        )
        pace = pace_headers(s.stream_chunks, s.stream_chunk_delay_ms)
        paths = {
            name: (server.url, {**_headers(api), **pace}, api)
            for name, (server, api) in self._relay_paths().items()
        }
        model = model_name(0)
        self.results.stream_sequential = asyncio.run(
            streaming.sequential(paths, model, s.stream_rounds)
        )
        if SHEEPDOG in self.paths:
            recording = self._profile("stream-concurrent", PROFILE_SECONDS)
            if recording is not None:
                pace = pace_headers(s.stream_load_chunks, s.stream_load_delay_ms)
                run_load(
                    self._stream(self.paths[SHEEPDOG], CHAT, pace),
                    max(s.stream_loads),
                    PROFILE_SECONDS,
                    use_wrk=self.use_wrk,
                )
                self._finish_profile(recording)
        for name, stats in self.results.stream_sequential.items():
            summary = stats.summary()
            print(
                f"stream {name:34} TTFT p50 {summary['ttft_p50'] * 1000:6.2f} ms  "
                f"last p50 {summary['last_p50'] * 1000:6.2f} ms",
                file=sys.stderr,
            )

    def scrape(self) -> None:
        if not self.proxy_ok or self.sheepdog is None:
            self.results.scrape = "sheepdog does not relay yet"
            return
        s = self.settings
        self.results.scrape = _attempt(
            lambda: scrape.measure_scrape(
                self.sheepdog.url if self.sheepdog else "",
                models=s.scrape_models,
                clients=s.scrape_clients,
                scrapes=s.scrapes,
            ),
            self._note,
            "scrape",
        )
        recording = self._profile("scrape", PROFILE_SECONDS)
        if recording is not None and self.sheepdog is not None:
            asyncio.run(scrape.time_scrapes(self.sheepdog.url, s.scrapes, PROFILE_SECONDS))
            self._finish_profile(recording)

    def bridge(self) -> None:
        if not self.bridge_ok or self.sheepdog is None or self.robot is None:
            why = f"the bridge does not accept alerts yet ({self.bridge_why})"
            self.results.bridge_delivery = self.results.bridge_accept = why
            return
        s = self.settings
        base, robot = self.sheepdog.url, self.robot.url
        self.results.bridge_delivery = _attempt(
            lambda: bridge.measure_delivery(
                base, robot, count=s.delivery_count, interval=s.delivery_interval
            ),
            self._note,
            "bridge delivery",
        )
        before = bridge.alerts_received(base, ACCEPT_TARGET)
        accept: LoadResult | str = _attempt(
            lambda: bridge.measure_accept(
                base, s.accept_connections, s.accept_duration, use_wrk=self.use_wrk
            ),
            self._note,
            "bridge accept",
        )
        self.results.bridge_accept = accept
        self.results.bridge_accept_connections = s.accept_connections
        after = bridge.alerts_received(base, ACCEPT_TARGET)
        if before is not None and after is not None:
            self.results.bridge_accepted_stored = after - before
        for name, server in self.variants.items():
            self.results.bridge_accept_variants[name] = _attempt(
                lambda url=server.url: bridge.measure_accept(  # type: ignore[misc]
                    url, s.accept_connections, s.accept_duration, use_wrk=self.use_wrk
                ),
                self._note,
                f"bridge accept, {name}",
            )
        recording = self._profile("bridge-accept", PROFILE_SECONDS)
        if recording is not None:
            bridge.measure_accept(base, s.accept_connections, PROFILE_SECONDS, use_wrk=self.use_wrk)
            self._finish_profile(recording)

    def memory(self) -> None:
        s = self.settings
        self.results.memory = _attempt(
            lambda: memory.measure_memory(
                self.group,
                streams=s.memory_streams,
                rounds=s.memory_rounds,
                chunks=s.memory_chunks,
                chunk_delay_ms=s.memory_chunk_delay_ms,
                settle=s.memory_settle,
            ),
            self._note,
            "memory",
        )


def _headers(api: Api) -> dict[str, str]:
    """A client's headers for ``api``, as its SDK sends them."""
    return messages_headers(0) if api is MESSAGES else client_headers(0)


def _attempt(work: Callable[[], T], note: Callable[[str], None], what: str) -> T | str:
    """Run one measurement; a failure becomes a line in the report instead of ending the run."""
    started = time.monotonic()
    try:
        return work()
    except Exception as exc:  # any failure is reported; the other phases go on
        message = f"{what} failed after {time.monotonic() - started:.1f} s: {exc}"
        note(message)
        return message


if __name__ == "__main__":
    sys.exit(main())
