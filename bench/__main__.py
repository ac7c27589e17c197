"""``python -m bench``: run every measurement, print the markdown report and write RESULTS.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
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
    SHEEPDOG,
    RelayRow,
    Results,
    machine_info,
    render,
)
from bench.service import (
    ACCEPT_TARGET,
    chat_body,
    client_headers,
    model_name,
    proxy_available,
    start_sheepdog,
)
from bench.stats import LoadResult

T = TypeVar("T")

PROFILE_SECONDS = 8.0
"""How long each profile of sheepdog under load (``--profile``) samples."""

PHASES = ("relay", "stream", "scrape", "bridge", "memory")


@dataclass(frozen=True)
class Settings:
    """How long and how big each measurement is."""

    warmup: float
    duration: float
    rounds: int
    concurrencies: tuple[int, ...]
    stream_chunks: int
    stream_chunk_delay_ms: float
    stream_rounds: int
    stream_concurrency: int
    stream_concurrent_chunk_delay_ms: float
    stream_duration: float
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
    duration=2,
    rounds=3,
    concurrencies=(1, 20, 100),
    stream_chunks=20,
    stream_chunk_delay_ms=2,
    stream_rounds=200,
    stream_concurrency=100,
    stream_concurrent_chunk_delay_ms=20,
    stream_duration=5,
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
    concurrencies=(1, 20),
    stream_chunks=5,
    stream_chunk_delay_ms=1,
    stream_rounds=10,
    stream_concurrency=10,
    stream_concurrent_chunk_delay_ms=5,
    stream_duration=1,
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
            f"{settings.duration:g} s, the paths taking turns round by round, after "
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
        with ProcessGroup(workdir) as group:
            run = _Run(group, settings, results, use_wrk, args)
            run.start_servers(phases, use_nginx=not args.no_nginx)
            if "relay" in phases:
                run.relay()
            if "stream" in phases:
                run.stream()
            if "scrape" in phases:
                run.scrape()
            if "bridge" in phases:
                run.bridge()
            group.close()
            if "memory" in phases:
                run.memory()
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
        self.sheepdog: Server | None = None
        self.proxy_ok = False
        self.bridge_ok = False
        self.bridge_why = ""
        self.robot: Server | None = None

    def _note(self, text: str) -> None:
        self.results.notes.append(text)
        print(f"note: {text}", file=sys.stderr)

    def start_servers(self, phases: set[str], *, use_nginx: bool) -> None:
        s = self.settings
        port = free_port()
        upstream = self.group.start(
            "upstream",
            [
                *python_module("bench.upstream"),
                "--port",
                str(port),
                "--chunks",
                str(s.stream_chunks),
                "--chunk-delay-ms",
                str(s.stream_chunk_delay_ms),
            ],
            port,
            health_url=f"http://127.0.0.1:{port}/bench/health",
        )
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
        port = free_port()
        self.robot = self.group.start(
            "wechat-robot",
            [*python_module("bench.robot"), "--port", str(port)],
            port,
            health_url=f"http://127.0.0.1:{port}/bench/health",
        )
        if phases - {"memory"}:
            self.sheepdog = start_sheepdog(
                self.group, "sheepdog", f"{upstream.url}/v1", self.robot.url
            )
            self.proxy_ok, why = proxy_available(self.sheepdog)
            if self.proxy_ok:
                self.paths[SHEEPDOG] = self.sheepdog
            else:
                self._note(f"sheepdog does not relay yet ({why}): its proxy rows are left out.")
            self.bridge_ok, self.bridge_why = bridge.bridge_available(self.sheepdog.url)
            if not self.bridge_ok:
                self._note(f"sheepdog's bridge does not accept alerts yet ({self.bridge_why}).")

    def _profile(self, name: str, duration: float) -> Recording | None:
        if self.profile_dir is None or self.sheepdog is None:
            return None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        return Recording(self.sheepdog.pid, duration, self.profile_dir / f"{name}.txt")

    def _finish_profile(self, recording: Recording | None) -> None:
        if recording is not None:
            print(f"profile: {recording.finish()}", file=sys.stderr)

    def relay(self) -> None:
        """Each concurrency: every path in turn, ``rounds`` times over; the median round counts.

        Interleaving the paths round by round means that a burst of other work on the machine
        lowers all of them alike rather than one path's whole measurement.
        """
        s = self.settings
        for concurrency in s.concurrencies:
            rounds: dict[str, list[tuple[LoadResult, float | None]]] = {p: [] for p in self.paths}
            for server in self.paths.values():
                if s.warmup:
                    run_load(self._chat(server), concurrency, s.warmup, use_wrk=self.use_wrk)
            for _ in range(s.rounds):
                for name, server in self.paths.items():
                    relay_pid = None if name == DIRECT else server.pid
                    cpu_before = tree_cpu_seconds(relay_pid) if relay_pid else 0.0
                    load = run_load(
                        self._chat(server), concurrency, s.duration, use_wrk=self.use_wrk
                    )
                    cpu_us = None
                    if relay_pid and load.ok:
                        cpu_us = (tree_cpu_seconds(relay_pid) - cpu_before) / load.ok * 1e6
                    rounds[name].append((load, cpu_us))
            if SHEEPDOG in self.paths and concurrency == max(s.concurrencies):
                # Profiled apart from the measured rounds: sampling costs the process some time.
                recording = self._profile(f"relay-c{concurrency}", PROFILE_SECONDS)
                if recording is not None:
                    request = self._chat(self.paths[SHEEPDOG])
                    run_load(request, concurrency, PROFILE_SECONDS, use_wrk=self.use_wrk)
                    self._finish_profile(recording)
            for name, measured in rounds.items():
                row = RelayRow.from_rounds(name, concurrency, measured)
                self.results.relay.append(row)
                print(
                    f"relay {name:22} c={concurrency:<3} {row.load.rate:8,.0f} req/s "
                    f"(rounds {', '.join(f'{load.rate:,.0f}' for load, _ in measured)})  "
                    f"p50 {row.load.p50 * 1000:6.2f} ms  p99 {row.load.p99 * 1000:6.2f} ms",
                    file=sys.stderr,
                )

    @staticmethod
    def _chat(server: Server) -> Request:
        return Request(
            f"{server.url}/v1/chat/completions", chat_body(model_name(0)), client_headers(0)
        )

    def stream(self) -> None:
        s = self.settings
        self.results.stream_params = (
            f"The upstream streams {s.stream_chunks} content chunks, "
            f"{s.stream_chunk_delay_ms:g} ms apart in the sequential run and "
            f"{s.stream_concurrent_chunk_delay_ms:g} ms apart in the concurrent one (a model's "
            "pace of tokens); the client does not ask for usage (sheepdog asks the upstream for "
            "it and removes it)."
        )
        paths = {
            name: (f"{server.url}/v1/chat/completions", client_headers(0))
            for name, server in self.paths.items()
        }
        model = model_name(0)
        self.results.stream_sequential = asyncio.run(
            streaming.sequential(paths, model, s.stream_rounds)
        )
        self.results.stream_unpaced = asyncio.run(
            streaming.sequential(paths, model, s.stream_rounds, chunk_delay_ms=0)
        )
        self.results.stream_concurrency = s.stream_concurrency
        for name, (url, headers) in paths.items():
            self.results.stream_concurrent[name] = asyncio.run(
                streaming.concurrent(
                    url,
                    headers,
                    model,
                    s.stream_concurrency,
                    s.stream_duration,
                    s.stream_concurrent_chunk_delay_ms,
                )
            )
        if SHEEPDOG in paths:
            recording = self._profile("stream-concurrent", PROFILE_SECONDS)
            if recording is not None:
                url, headers = paths[SHEEPDOG]
                asyncio.run(
                    streaming.concurrent(
                        url,
                        headers,
                        model,
                        s.stream_concurrency,
                        PROFILE_SECONDS,
                        s.stream_concurrent_chunk_delay_ms,
                    )
                )
                self._finish_profile(recording)
        for name, stats in self.results.stream_sequential.items():
            summary = stats.summary()
            print(
                f"stream {name:22} TTFT p50 {summary['ttft_p50'] * 1000:6.2f} ms  "
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
