"""The bridge: notifications accepted per second, and delivery latency to a local WeChat robot."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.load import SEQ_PLACEHOLDER, Request, run_load
from bench.service import ACCEPT_TARGET, ALERT_TOKEN, LATENCY_TARGET
from bench.stats import LoadResult, percentile

ALERT_HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {ALERT_TOKEN}"}


def alert_payload(token: str) -> str:
    """An Alertmanager v4 webhook payload whose alert name and text carry ``token``."""
    labels = {
        "alertname": f"BenchAlert {token}",
        "model": "gpt-4.1",
        "service": "llm-relay",
        "severity": "critical",
    }
    annotations = {"summary": f"benchmark alert {token}", "description": "5xx ratio is 3.2%"}
    return json.dumps(
        {
            "receiver": "bridge",
            "status": "firing",
            "alerts": [
                {
                    "status": "firing",
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": "2026-01-01T00:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
                    "fingerprint": "cb48e77bc03c439c",
                }
            ],
            "groupLabels": {"alertname": labels["alertname"]},
            "commonLabels": labels,
            "commonAnnotations": annotations,
            "externalURL": "http://alertmanager:9093",
            "version": "4",
            "groupKey": f'{{}}:{{alertname="{labels["alertname"]}"}}',
            "truncatedAlerts": 0,
        },
        ensure_ascii=False,
    )


def bridge_available(base_url: str) -> tuple[bool, str]:
    """Whether sheepdog accepts an alert yet (bridge/ may still be an empty stub)."""
    request = urllib.request.Request(
        f"{base_url}/alerts/{ACCEPT_TARGET}",
        data=alert_payload(f"probe-{secrets.token_hex(4)}").encode(),
        headers=ALERT_HEADERS,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return False, str(error)


def measure_accept(
    base_url: str, connections: int, duration: float, *, use_wrk: bool
) -> LoadResult:
    """POST distinct notifications to the rate-limited target as fast as they are answered."""
    run = secrets.token_hex(4)
    request = Request(
        url=f"{base_url}/alerts/{ACCEPT_TARGET}",
        body=alert_payload(f"accept-{run}-{SEQ_PLACEHOLDER}"),
        headers=ALERT_HEADERS,
    )
    return run_load(request, connections, duration, use_wrk=use_wrk)


@dataclass
class DeliveryResult:
    sent: int
    delivered: int
    rejected: int
    interval: float
    p50: float
    p99: float
    max: float


async def _post_spaced(base_url: str, run: str, count: int, interval: float) -> dict[str, float]:
    """POST ``count`` notifications ``interval`` apart; token → when its POST started."""
    posted: dict[str, float] = {}
    url = f"{base_url}/alerts/{LATENCY_TARGET}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        start = time.monotonic()
        for index in range(count):
            await asyncio.sleep(max(0.0, start + index * interval - time.monotonic()))
            token = f"bench-{run}-{index}"
            sent_at = time.monotonic()
            async with session.post(
                url, data=alert_payload(token).encode(), headers=ALERT_HEADERS
            ) as response:
                await response.read()
                if response.status == 200:
                    posted[token] = sent_at
    return posted


_TOKEN = re.compile(r"bench-[0-9a-f]+-[0-9]+")


def _arrivals(robot_url: str) -> dict[str, float]:
    """Token → when the robot first received a message holding it (``time.monotonic()``)."""
    with urllib.request.urlopen(f"{robot_url}/peer/messages", timeout=5) as response:
        messages: list[dict[str, Any]] = json.loads(response.read())
    arrivals: dict[str, float] = {}
    for message in messages:
        for token in _TOKEN.findall(message["content"]):
            arrivals.setdefault(token, message["at"])
    return arrivals


def measure_delivery(
    base_url: str, robot_url: str, *, count: int, interval: float, wait: float = 15.0
) -> DeliveryResult:
    """Latency from the POST to sheepdog to the robot receiving the message, within the rate."""
    run = secrets.token_hex(4)
    posted = asyncio.run(_post_spaced(base_url, run, count, interval))
    deadline = time.monotonic() + wait
    arrivals = _arrivals(robot_url)
    while time.monotonic() < deadline and not all(token in arrivals for token in posted):
        time.sleep(0.2)
        arrivals = _arrivals(robot_url)
    latencies = [arrivals[t] - sent for t, sent in posted.items() if t in arrivals]
    return DeliveryResult(
        sent=count,
        delivered=len(latencies),
        rejected=count - len(posted),
        interval=interval,
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        max=max(latencies, default=float("nan")),
    )


def alerts_received(base_url: str, target: str) -> int | None:
    """``sheepdog_alerts_received_total`` for ``target``, summed over statuses, from /metrics."""
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    total = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith("sheepdog_alerts_received_total{") and f'target="{target}"' in line:
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return round(total) if found else None
