"""Fixed-duration HTTP load: wrk (one thread) where installed, else a built-in aiohttp generator.

Both report the same :class:`~bench.stats.LoadResult`: successful requests per second and latency
percentiles. wrk's exact percentiles come from a Lua ``done`` function that prints them as JSON.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.stats import LoadResult, percentile

SEQ_PLACEHOLDER = "BENCH_SEQ"
"""In a body, replaced by a counter unique to each request (so no two requests look alike)."""

_LUA = """\
local method = "POST"
local path = [==[{path}]==]
local body = [==[{body}]==]
local headers = {{}}
{headers}
local unique = {unique}
local counter = 0

if not unique then
  wrk.method = method
  wrk.body = body
  wrk.headers = headers
else
  request = function()
    counter = counter + 1
    local b = string.gsub(body, "{placeholder}", tostring(counter))
    return wrk.format(method, path, headers, b)
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class Request:
    """One POST, the same every time except for :data:`SEQ_PLACEHOLDER` in the body."""

    url: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def unique(self) -> bool:
        return SEQ_PLACEHOLDER in self.body


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str | None:
    binary = wrk_binary()
    if binary is None:
        return None
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    return match.group(1) if match else "unknown"


def run_load(
    request: Request, connections: int, duration: float, *, use_wrk: bool = True
) -> LoadResult:
    """Keep ``connections`` requests in flight for ``duration`` seconds and measure."""
    if use_wrk and wrk_binary() is not None:
        return _run_wrk(request, connections, duration)
    return asyncio.run(_run_builtin(request, connections, duration))


def _lua_script(request: Request) -> str:
    path = re.sub(r"^https?://[^/]+", "", request.url) or "/"
    headers = "\n".join(
        f"headers[ [==[{name}]==] ] = [==[{value}]==]" for name, value in request.headers.items()
    )
    return _LUA.format(
        path=path,
        body=request.body,
        headers=headers,
        unique="true" if request.unique else "false",
        placeholder=SEQ_PLACEHOLDER,
    )


def _run_wrk(request: Request, connections: int, duration: float) -> LoadResult:
    binary = wrk_binary()
    assert binary is not None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua_script(request))
    try:
        seconds = max(1, round(duration))
        done = subprocess.run(
            [
                binary,
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                script.name,
                request.url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    finally:
        Path(script.name).unlink(missing_ok=True)
    match = re.search(r"^BENCH_RESULT (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(match.group(1))
    errors = {
        key: int(raw[key]) for key in ("connect", "read", "write", "status", "timeout") if raw[key]
    }
    failed = int(raw["status"]) + int(raw["timeout"])
    return LoadResult(
        requests=int(raw["requests"]),
        ok=max(0, int(raw["requests"]) - failed),
        duration=raw["duration_us"] / 1e6,
        p50=raw["p50_us"] / 1e6,
        p90=raw["p90_us"] / 1e6,
        p99=raw["p99_us"] / 1e6,
        max=raw["max_us"] / 1e6,
        errors=errors,
        generator="wrk -t1",
    )


async def _run_builtin(request: Request, connections: int, duration: float) -> LoadResult:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(1, 1 << 62))
    make_body: Callable[[], bytes]
    if request.unique:

        def make_body() -> bytes:
            return request.body.replace(SEQ_PLACEHOLDER, str(next(counter))).encode()
    else:
        encoded = request.body.encode()

        def make_body() -> bytes:
            return encoded

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + duration

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    async with session.post(
                        request.url, data=make_body(), headers=request.headers
                    ) as response:
                        await response.read()
                        if 200 <= response.status < 400:
                            latencies.append(time.perf_counter() - t0)
                        else:
                            errors["status"] = errors.get("status", 0) + 1
                except (aiohttp.ClientError, TimeoutError):
                    errors["connect"] = errors.get("connect", 0) + 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return LoadResult(
        requests=len(latencies) + sum(errors.values()),
        ok=len(latencies),
        duration=elapsed,
        p50=percentile(latencies, 50),
        p90=percentile(latencies, 90),
        p99=percentile(latencies, 99),
        max=max(latencies, default=float("nan")),
        errors=errors,
        generator="built-in aiohttp",
    )
