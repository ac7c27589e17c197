"""/metrics at the size of a real deployment: 50 models × 20 clients of label series."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from bench.service import chat_body, client_headers, model_name
from bench.stats import percentile


@dataclass
class ScrapeResult:
    models: int
    clients: int
    populated: int
    failed: int
    scrapes: int
    bytes: int
    samples: int
    request_series: int
    p50: float
    p99: float
    max: float


async def populate(base_url: str, models: int, clients: int, concurrency: int = 20) -> int:
    """One chat completion for every (model, client) pair and one stream per model."""
    url = f"{base_url}/v1/chat/completions"
    jobs = [(m, c, False) for m in range(models) for c in range(clients)]
    jobs += [(m, m % clients, True) for m in range(models)]
    queue: asyncio.Queue[tuple[int, int, bool]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    failed = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:

        async def worker() -> None:
            nonlocal failed
            while not queue.empty():
                model, client, stream = queue.get_nowait()
                body = chat_body(model_name(model), stream=stream)
                async with session.post(url, data=body, headers=client_headers(client)) as r:
                    await r.read()
                    if r.status != 200:
                        failed += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed


async def time_scrapes(
    base_url: str, count: int, within: float | None = None
) -> tuple[list[float], str]:
    """GET /metrics ``count`` times one after another (or as often as fits in ``within``
    seconds); the durations and the last body. Asks for gzip, as Prometheus does."""
    durations: list[float] = []
    text = ""
    deadline = time.perf_counter() + within if within is not None else None

    def more() -> bool:
        if deadline is not None:
            return time.perf_counter() < deadline
        return len(durations) < count

    async with aiohttp.ClientSession() as session:
        while more():
            started = time.perf_counter()
            async with session.get(
                f"{base_url}/metrics", headers={"Accept-Encoding": "gzip"}
            ) as response:
                text = await response.text()
            durations.append(time.perf_counter() - started)
    return durations, text


def measure_scrape(base_url: str, *, models: int, clients: int, scrapes: int) -> ScrapeResult:
    failed = asyncio.run(populate(base_url, models, clients))
    asyncio.run(time_scrapes(base_url, 2))  # warm-up
    durations, text = asyncio.run(time_scrapes(base_url, scrapes))
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return ScrapeResult(
        models=models,
        clients=clients,
        populated=models * clients + models - failed,
        failed=failed,
        scrapes=scrapes,
        bytes=len(text.encode()),
        samples=len(lines),
        request_series=sum(1 for line in lines if line.startswith("llm_requests_total{")),
        p50=percentile(durations, 50),
        p99=percentile(durations, 99),
        max=max(durations),
    )
