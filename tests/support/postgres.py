"""A real PostgreSQL server for the tests: a throwaway cluster in a temp dir, on a free port.

Debian's ``postgresql`` package provides the binaries (``scripts/setup --test`` installs it where
apt is available). The cluster is made once per test session (initdb, pg_ctl), run as an
unprivileged user when the tests run as root (PostgreSQL refuses to run as root), and each test
gets a database of its own. Durability settings are relaxed (``fsync=off``) for the tests: they
check what sheepdog does with the database, not the disk under it; bench/ keeps them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PostgresServer", "find_binaries", "running_server", "why_unavailable"]

USER = "sheepdog"
PASSWORD = "SENTINEL-db-password-5c1e"
"""In every URL the tests give sheepdog: it must never appear in a log, a metric or output."""


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl (the newest installed PostgreSQL), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: (
            int(Path(path).parent.parent.name) if Path(path).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def why_unavailable() -> str | None:
    if find_binaries() is None:
        return (
            "PostgreSQL is not installed (Debian package postgresql; scripts/setup --test "
            "installs it where apt is available)"
        )
    if os.geteuid() == 0 and _unprivileged_user() is None:
        return "running as root and no unprivileged user to run PostgreSQL as"
    return None


def _unprivileged_user() -> pwd.struct_passwd | None:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    return None


class PostgresServer:
    """One cluster; :meth:`database_url` makes a fresh database in it for each test."""

    def __init__(self, port: int, *, durable: bool = False) -> None:
        binaries = find_binaries()
        assert binaries is not None, why_unavailable()
        self.bin = binaries
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="sheepdog-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgres.log"
        self._as: list[str] = []
        self._databases = 0
        self.durable = durable
        self.sockets.mkdir()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = _unprivileged_user()
            assert user is not None
            uid, gid = user.pw_uid, user.pw_gid
            self._as = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
            for path in (self.root, self.sockets):
                os.chown(path, uid, gid)

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._as, *command], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")

    def initialise(self) -> None:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
            "-c max_connections=300 -c shared_buffers=32MB"
        )
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", "60", "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Stop (closing every connection) and start again on the same port."""
        self.stop()
        self.start()

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql,
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout

    def database_url(self) -> str:
        """A new, empty database, as the URL sheepdog is given (with a sentinel password)."""
        self._databases += 1
        name = f"test_{os.getpid()}_{self._databases}"
        self.psql(f"CREATE DATABASE {name}")
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_server(port: int, *, durable: bool = False) -> Iterator[PostgresServer]:
    """A started cluster, removed after; ``durable`` keeps PostgreSQL's fsync (for bench/)."""
    server = PostgresServer(port, durable=durable)
    try:
        server.initialise()
        server.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                server.psql("SELECT 1")
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield server
    finally:
        server.close()
