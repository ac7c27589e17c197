"""Servers as separate processes on loopback ports, and stopping every one of them at the end."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.support.processes import http_ok, tcp_open

BENCH_ROOT = Path(__file__).resolve().parent
REPO_ROOT = BENCH_ROOT.parent


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_open_files_limit() -> None:
    """Lift the soft limit on open files to the hard one: 1,000 streams need ~3,000 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 65536
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def sheepdog_command() -> list[str]:
    """``sheepdog`` from the same environment as this Python."""
    script = Path(sys.executable).parent / "sheepdog"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "sheepdog.cli"]


def python_module(module: str) -> list[str]:
    """Run ``module`` with this Python (the bench's servers: ``tests.peers.upstream`` and the
    rest)."""
    return [sys.executable, "-m", module]


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


class ProcessGroup:
    """Starts servers and stops all of them when the ``with`` block ends, however it ends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[Server] = []

    def start(
        self,
        name: str,
        argv: list[str],
        port: int,
        *,
        health_url: str | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Server:
        """Run ``argv`` and wait until ``health_url`` answers 2xx (or ``port`` accepts)."""
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd or REPO_ROOT,
                preexec_fn=raise_open_files_limit,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
            )
        server = Server(name, port, process, log_path)
        self.servers.append(server)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}:\n{server.output()[-4000:]}"
                )
            ready = http_ok(health_url) if health_url else tcp_open(port)
            if ready:
                return server
            time.sleep(0.05)
        raise RuntimeError(f"{name} not ready after {timeout:g}s:\n{server.output()[-4000:]}")

    def stop(self, server: Server) -> None:
        process = server.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if server in self.servers:
            self.servers.remove(server)

    def close(self) -> None:
        for server in reversed(list(self.servers)):
            with contextlib.suppress(Exception):
                self.stop(server)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` now, from /proc/PID/status (VmRSS)."""
    return _status_field(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int:
    """Highest resident set size of ``pid`` so far (VmHWM)."""
    return _status_field(pid, "VmHWM")


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no {name}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used, from /proc/PID/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and all its descendants (nginx does its work in a worker child)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        pending.extend(int(child) for child in children)
    return total


@dataclass
class CpuSnapshot:
    """The whole machine's busy and stolen CPU time, and this process's own (children included)."""

    busy: float
    steal: float
    own: float

    @classmethod
    def take(cls, servers: list[Server] | None = None) -> CpuSnapshot:
        """Now; ``servers`` (still running, so not among the reaped children) count as own."""
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = [int(value) for value in fields]
        # user nice system idle iowait irq softirq steal ...
        busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
        steal = ticks[7] if len(ticks) > 7 else 0
        hz = os.sysconf("SC_CLK_TCK")
        times = os.times()
        own = times.user + times.system + times.children_user + times.children_system
        for server in servers or ():
            if server.process.poll() is None:
                own += tree_cpu_seconds(server.pid)
        return cls(busy / hz, steal / hz, own)


def other_cpu_seconds(start: CpuSnapshot, end: CpuSnapshot) -> float:
    """CPU time used on the machine by processes outside this one and its reaped children."""
    return max(0.0, (end.busy - start.busy) - (end.own - start.own))
