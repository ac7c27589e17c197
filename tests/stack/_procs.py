"""Processes for the stack tests: the real Prometheus and Alertmanager, and a stand-in for
sheepdog's /metrics."""

from __future__ import annotations

import json
import re
import shutil
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
from tests.support import processes
from tests.support.polling import wait_until
from tests.support.ports import LOOPBACK, free_port

REPO = Path(__file__).resolve().parents[2]

# Label values the sample exporter uses; dashboard variables are set to these in the tests.
MODELS = ("gpt-4.1", "other")
CLIENTS = ("team-a", "anonymous")
TARGETS = ("ops-wechat", "ops-email")
UPSTREAMS = ("holysheep", "backup")


def require_binary(name: str, package: str) -> str:
    """The path of ``name``, or skip the test: CI installs the Debian package that ships it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {package!r}; CI installs it)")
    return path


def run_tool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a command line tool to completion, output captured as text (in the repository)."""
    return processes.run_tool(*args, cwd=cwd)


class SampleExporter:
    """Serves every metric of exported_metrics.py with plausible label values, on loopback.

    Counters and histograms move on every scrape, so rates and quantiles have data.
    ``/probe`` answers like a blackbox exporter probe that succeeded.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler())
        self.port = int(self._server.server_address[1])
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
        for upstream in UPSTREAMS:
            m["llm_upstream_up"].labels(upstream=upstream).set(1)
        for target in TARGETS:
            m["sheepdog_outbox_pending"].labels(target=target).set(3)
            m["sheepdog_outbox_oldest_seconds"].labels(target=target).set(42)
            m["sheepdog_outbox_dead"].labels(target=target).set(1)
        m["sheepdog_build_info"].labels(version="0.1.0", python="3.11.2").set(1)
        m["sheepdog_config_last_reload_successful"].set(1)
        m["sheepdog_config_last_reload_success_timestamp_seconds"].set(time.time())
        m["sheepdog_watchdog_last_heartbeat_timestamp_seconds"].set(time.time() - 30)

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
                    for kind in ("cache_read", "cache_write", "reasoning"):
                        m["llm_token_details_total"].labels(model, kind, client).inc(100)
                    m["llm_cache_savings_usd_total"].labels(model, client).inc(0.002)
                m["llm_request_duration_seconds"].labels(model, "chat").observe(3.2)
                m["llm_time_to_first_token_seconds"].labels(model).observe(0.6)
                m["llm_usage_missing_total"].labels(model, "chat").inc()
                for reason in ("timeout", "error"):
                    m["llm_upstream_interrupted_total"].labels(model, "chat", reason).inc()
            for reason in ("missing_key", "invalid_key", "upstream_rejected"):
                m["llm_auth_failures_total"].labels(reason).inc()
            for client in CLIENTS:
                for limit in ("requests", "tokens"):
                    m["llm_rate_limited_total"].labels(client, limit).inc()
            for upstream in UPSTREAMS:
                for code in ("200", "503", "error"):
                    m["llm_upstream_requests_total"].labels(upstream, code).inc(3)
            m["llm_upstream_failovers_total"].labels(*UPSTREAMS).inc()
            for target in TARGETS:
                for status in ("firing", "resolved"):
                    m["sheepdog_alerts_received_total"].labels(target, status).inc()
                for result in ("sent", "retried", "failed"):
                    m["sheepdog_notifications_total"].labels(target, result).inc()
                m["sheepdog_notification_duration_seconds"].labels(target).observe(0.2)
                for reason in ("server_error", "timeout"):
                    m["sheepdog_notification_failures_total"].labels(target, reason).inc()
                m["sheepdog_notifications_merged_total"].labels(target).inc()

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


class ServerProcess:
    """A real server binary on a free loopback port, its output in a log file in ``workdir``."""

    name = "server"
    ready_path = "/-/ready"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.base_url = f"http://{self.address}"
        self.log_path = workdir / f"{self.name}.log"
        self._server: processes.ServerProcess | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        self._server = processes.ServerProcess(
            self.name,
            self.argv(),
            log_path=self.log_path,
            ready_url=f"{self.base_url}{self.ready_path}",
            cwd=self.workdir,
        ).start(timeout)

    @property
    def log(self) -> str:
        return processes.read_log(self.log_path)

    def api(self, path: str, **params: str) -> Any:
        """GET an API path; the decoded JSON body, also of a 4xx answer (it carries the error)."""
        url = f"{self.base_url}{path}"
        if params:
            url += f"?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        return json.loads(body)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=10)


class PrometheusProcess(ServerProcess):
    """A real ``prometheus`` on a free loopback port, run with the config it is given.

    ``write_config`` must be called (with the config as a dict) before :meth:`start`.
    """

    name = "prometheus"
    log_level = "warn"
    # How often firing alerts are sent to Alertmanager again (Prometheus: 1m).
    resend_delay = "1m"

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path = self.workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def argv(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={self.address}",
            f"--web.external-url={self.base_url}",
            f"--log.level={self.log_level}",
            f"--rules.alert.resend-delay={self.resend_delay}",
        ]

    def query(self, expr: str) -> dict[str, Any]:
        """Evaluate one instant query now."""
        result: dict[str, Any] = self.api("/api/v1/query", query=expr)
        return result

    def vector(self, expr: str) -> list[dict[str, Any]]:
        """The result of an instant query that must succeed: its samples (maybe none)."""
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_until_evaluated(self, min_scrapes: int = 4, timeout: float = 30.0) -> None:
        """Until every rule has been evaluated and sheepdog scraped ``min_scrapes`` times."""

        def done() -> bool:
            groups = self.api("/api/v1/rules")["data"]["groups"]
            evaluated = all(rule["health"] != "unknown" for g in groups for rule in g["rules"])
            scrapes = self.query('count_over_time(up{job="sheepdog"}[1m])')["data"]["result"]
            return evaluated and bool(scrapes) and float(scrapes[0]["value"][1]) >= min_scrapes

        wait_until(
            done,
            timeout=timeout,
            what="every rule evaluated and sheepdog scraped",
            interval=0.25,
            describe=lambda: self.log,
        )


class AlertmanagerProcess(ServerProcess):
    """A real ``prometheus-alertmanager``, alone (no cluster), run with the config it is given."""

    name = "alertmanager"

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path = self.workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def argv(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={self.address}",
            f"--web.external-url={self.base_url}",
            # An empty address turns the gossip cluster (0.0.0.0:9094 by default) off.
            "--cluster.listen-address=",
            "--log.level=debug",
        ]


def rules_for_test(dest: Path, for_divisor: int | None = None) -> str:
    """The repository's rule files written to ``dest``, every group evaluated at the global
    interval (its ``interval`` removed); with ``for_divisor``, each ``for:`` divided by it
    (whole seconds, at least 1s). Expressions, labels and annotations are untouched.
    Returns the glob for ``rule_files``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for source in sorted((REPO / "prometheus" / "rules").glob("*.yml")):
        doc = yaml.safe_load(source.read_text(encoding="utf-8"))
        for group in doc["groups"]:
            group.pop("interval", None)
            for rule in group["rules"]:
                if for_divisor and "for" in rule:
                    seconds = parse_duration(rule["for"]) / for_divisor
                    rule["for"] = f"{max(1, round(seconds))}s"
        (dest / source.name).write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return str(dest / "*.yml")


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as ``10m``, ``1h30m`` or ``500ms``."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(number) * _DURATION_UNITS[unit] for number, unit in parts)


def sample_prometheus_config(rules_glob: str, exporter_port: int) -> dict[str, Any]:
    """Every scrape job the rules and dashboards read, pointed at the sample exporter."""
    target = f"{LOOPBACK}:{exporter_port}"
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [rules_glob],
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


@contextmanager
def running_prometheus(binary: str, workdir: Path) -> Iterator[PrometheusProcess]:
    """The sample exporter and a Prometheus scraping it, every rule evaluated each second;
    both stopped on exit."""
    exporter = SampleExporter()
    exporter.start()
    prometheus = PrometheusProcess(binary, workdir)
    rules_glob = rules_for_test(workdir / "rules")
    prometheus.write_config(sample_prometheus_config(rules_glob, exporter.port))
    try:
        prometheus.start()
        prometheus.wait_until_evaluated()
        yield prometheus
    finally:
        prometheus.stop()
        exporter.stop()
