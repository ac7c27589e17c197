"""Servers and tools run as processes of their own, as users run them.

- :class:`ServerProcess`: any server (``sheepdog serve``, Prometheus, Alertmanager, a benchmark
  peer): started and waited for until it is ready, stopped with SIGTERM (or ``kill -9``), its
  output in a log file that the errors quote.
- :class:`SheepdogProcess`: ``sheepdog serve --config FILE`` with a small HTTP client.
- :func:`run_tool`: a command line tool run to completion, its output captured.
- :func:`http_ok`, :func:`tcp_open`: one readiness probe each.

Ports come from :mod:`tests.support.ports`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.polling import wait_until
from tests.support.ports import LOOPBACK

__all__ = ["ServerProcess", "SheepdogProcess", "http_ok", "read_log", "run_tool", "tcp_open"]

_LOG_TAIL = 4000


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether a GET of ``url`` answers 2xx now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return 200 <= status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def tcp_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on ``host:port`` now."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def read_log(path: Path) -> str:
    """The text of a log file, or "" while it does not exist."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def run_tool(
    *args: str, cwd: Path | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run a command line tool to completion, its output captured as text; never raises for
    its exit status (the caller asserts on it, with the output at hand)."""
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


class ServerProcess:
    """A server in a process of its own; stdout and stderr go to ``log_path`` (appended).

    :meth:`start` returns once the server is ready: ``ready_url`` answers 2xx, or, without one,
    ``port`` accepts connections. It raises RuntimeError, quoting the log, if the process exits
    first or is not ready within the timeout. ``env`` is added to this process's environment.
    As a context manager it is started on entry and stopped on exit, however the block ends.
    A stopped server can be started again (on the same port, with the same log).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        ready_url: str | None = None,
        port: int | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        if ready_url is None and port is None:
            raise ValueError(f"{name}: say how to tell it is ready (ready_url or port)")
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.ready_url = ready_url
        self.port = port
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.preexec_fn = preexec_fn
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                preexec_fn=self.preexec_fn,
            )
        process = self.process

        def ready_or_exited() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {process.returncode}:\n{self.output[-_LOG_TAIL:]}"
                )
            return self.ready()

        try:
            wait_until(ready_or_exited, timeout=timeout, what=f"{self.name} ready")
        except AssertionError:
            self.stop()
            raise RuntimeError(
                f"{self.name} was not ready within {timeout:g} s:\n{self.output[-_LOG_TAIL:]}"
            ) from None
        return self

    def ready(self) -> bool:
        if self.ready_url is not None:
            return http_ok(self.ready_url)
        assert self.port is not None
        return tcp_open(self.port)

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def output(self) -> str:
        """Everything the server wrote so far (all its runs)."""
        return read_log(self.log_path)

    def signal(self, signum: int) -> None:
        assert self.process is not None, f"{self.name} was never started"
        self.process.send_signal(signum)

    def kill(self) -> None:
        """``kill -9``: no clean-up of any kind."""
        assert self.process is not None, f"{self.name} was never started"
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; the exit status
        (None if it was never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SheepdogProcess(ServerProcess):
    """``sheepdog serve --config FILE`` (run from the config's directory), ready once
    ``/-/healthy`` answers; its log is ``sheepdog-PORT.log`` in ``workdir``. ``port`` must be the
    one the config listens on (from :func:`tests.support.ports.free_port`)."""

    def __init__(
        self, config_path: Path, port: int, workdir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.config_path = config_path
        self.base_url = f"http://{LOOPBACK}:{port}"
        super().__init__(
            "sheepdog",
            [sys.executable, "-m", "sheepdog.cli", "serve", "--config", str(config_path)],
            log_path=workdir / f"sheepdog-{port}.log",
            ready_url=f"{self.base_url}/-/healthy",
            port=port,
            cwd=config_path.parent,
            env=env,
        )

    def start(self, timeout: float = 20.0) -> Self:
        return super().start(timeout)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        return self.request("GET", path, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """One request; the status and the body as text, also of a 4xx or 5xx answer."""
        req = urllib.request.Request(
            self.base_url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", "replace")
