"""Processes for the stack tests: the real Prometheus, and a stand-in for sheepdog's /metrics."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tests.stack.exported_metrics import METRICS

REPO = Path(__file__).resolve().parents[2]

# Label values the sample exporter uses; dashboard variables are set to these in the tests.
MODELS = ("gpt-4.1", "other")
CLIENTS = ("team-a", "anonymous")
TARGETS = ("ops-wechat", "ops-email")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str, package: str) -> str:
    """The path of ``name``, or skip the test: CI installs the Debian package that ships it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {package!r}; CI installs it)")
    return path


def run_tool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a command line tool to completion, output captured as text."""
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


class SampleExporter:
    """Serves every metric of the SPEC's table with plausible label values, on loopback.

    Counters and histograms move on every scrape, so rates and quantiles have data.
    ``/probe`` answers like a blackbox exporter probe that succeeded.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.port = free_port()
        self._metrics: dict[str, Any] = {}
        for metric in METRICS:
            kind = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[metric.type]
            kwargs: dict[str, Any] = {"registry": self.registry}
            if metric.buckets:
                kwargs["buckets"] = metric.buckets
            self._metrics[metric.name] = kind(
                metric.name, f"{metric.name} (sample)", metric.labels, **kwargs
            )
        self._lock = threading.Lock()
        self._set_gauges()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _set_gauges(self) -> None:
        m = self._metrics
        for model in MODELS:
            m["llm_active_requests"].labels(model=model).set(2)
        m["llm_budget_usd"].labels(client="team-a").set(100)
        m["llm_budget_usd"].labels(client="anonymous").set(0)
        m["llm_spend_month_usd"].labels(client="team-a").set(42.5)
        m["llm_spend_month_usd"].labels(client="anonymous").set(3.25)
        m["llm_billing_usd_rate"].labels(currency="CNY").set(1.0)
        m["llm_market_usd_rate"].labels(currency="CNY").set(7.3)
        for target in TARGETS:
            m["sheepdog_outbox_pending"].labels(target=target).set(3)
            m["sheepdog_outbox_oldest_seconds"].labels(target=target).set(42)

    def tick(self) -> None:
        """One scrape's worth of traffic on every counter and histogram series."""
        m = self._metrics
        with self._lock:
            for model in MODELS:
                for client in CLIENTS:
                    m["llm_requests_total"].labels(model, "chat", "200", client).inc(10)
                    m["llm_requests_total"].labels(model, "chat", "502", client).inc(1)
                    m["llm_requests_total"].labels(model, "chat", "499", client).inc(1)
                    for kind in ("input", "output"):
                        m["llm_tokens_total"].labels(model, kind, client).inc(500)
                    m["llm_cost_usd_total"].labels(model, client).inc(0.01)
                m["llm_request_duration_seconds"].labels(model, "chat").observe(3.2)
                m["llm_time_to_first_token_seconds"].labels(model).observe(0.6)
            for reason in ("missing_key", "invalid_key", "upstream_rejected"):
                m["llm_auth_failures_total"].labels(reason).inc()
            for target in TARGETS:
                for status in ("firing", "resolved"):
                    m["sheepdog_alerts_received_total"].labels(target, status).inc()
                for result in ("sent", "retried", "failed"):
                    m["sheepdog_notifications_total"].labels(target, result).inc()
                m["sheepdog_notification_duration_seconds"].labels(target).observe(0.2)

    def exposition(self) -> bytes:
        with self._lock:
            return generate_latest(self.registry)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/probe"):
                    body = b"probe_success 1\nprobe_duration_seconds 0.25\n"
                elif self.path == "/metrics":
                    exporter.tick()
                    body = exporter.exposition()
                else:
                    body = b""
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test output is for failures."""

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class PrometheusProcess:
    """A real ``prometheus`` on a free loopback port, with the repository's rule files.

    The rule files are copied with every group's ``interval`` removed, so that all of them are
    evaluated every second; scrape jobs point at the sample exporter.
    """

    def __init__(self, binary: str, workdir: Path, exporter_port: int) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config(exporter_port)

    def _write_config(self, exporter_port: int) -> None:
        rules_dir = self.workdir / "rules"
        rules_dir.mkdir()
        for source in sorted((REPO / "prometheus" / "rules").glob("*.yml")):
            doc = yaml.safe_load(source.read_text(encoding="utf-8"))
            for group in doc["groups"]:
                group.pop("interval", None)
            (rules_dir / source.name).write_text(yaml.safe_dump(doc), encoding="utf-8")
        target = f"127.0.0.1:{exporter_port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules_dir / "*.yml")],
            "scrape_configs": [
                {"job_name": "sheepdog", "static_configs": [{"targets": [target]}]},
                {
                    "job_name": "alertmanager",
                    "metrics_path": "/empty",
                    "static_configs": [{"targets": [target]}],
                },
                {
                    "job_name": "llm-upstream",
                    "metrics_path": "/probe",
                    "static_configs": [{"targets": [target]}],
                },
            ],
        }
        self.config_path = self.workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/-/ready", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus was not ready within {timeout}s:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET an API path; the decoded JSON body, also of a 4xx answer (it carries the error)."""
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        result: dict[str, Any] = json.loads(body)
        return result

    def query(self, expr: str) -> dict[str, Any]:
        """Evaluate one instant query now."""
        return self.api("/api/v1/query", query=expr)

    def wait_until_evaluated(self, min_scrapes: int = 4, timeout: float = 30.0) -> None:
        """Until every rule has been evaluated and sheepdog scraped ``min_scrapes`` times."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            groups = self.api("/api/v1/rules")["data"]["groups"]
            evaluated = all(rule["health"] != "unknown" for g in groups for rule in g["rules"])
            scrapes = self.query('count_over_time(up{job="sheepdog"}[1m])')["data"]["result"]
            if evaluated and scrapes and float(scrapes[0]["value"][1]) >= min_scrapes:
                return
            time.sleep(0.25)
        raise RuntimeError(f"rules or scrapes not done within {timeout}s:\n{self.log}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def running_prometheus(binary: str, workdir: Path) -> Iterator[PrometheusProcess]:
    """The sample exporter and a Prometheus scraping it; both stopped on exit."""
    exporter = SampleExporter()
    exporter.start()
    prometheus = PrometheusProcess(binary, workdir, exporter.port)
    try:
        prometheus.start()
        prometheus.wait_until_evaluated()
        yield prometheus
    finally:
        prometheus.stop()
        exporter.stop()
