"""The blackbox probe of the upstream relay: reachable over valid TLS is up, with no key sent."""

from __future__ import annotations

from typing import Any

import yaml

from tests.stack._procs import REPO, require_binary, run_tool

MODULE = "http_llm_upstream"


def _modules() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "blackbox" / "blackbox.yml").read_text(encoding="utf-8"))
    modules: dict[str, Any] = doc["modules"]
    return modules


def test_upstream_module_accepts_auth_errors_and_requires_tls() -> None:
    """The module counts 401/403/404 as success, fails on plain HTTP, and verifies certificates."""
    module = _modules()[MODULE]
    assert module["prober"] == "http"
    http = module["http"]
    assert {200, 401, 403, 404} <= set(http["valid_status_codes"])
    assert not any(code >= 500 for code in http["valid_status_codes"])
    assert http["fail_if_not_ssl"] is True
    assert http.get("tls_config", {}).get("insecure_skip_verify", False) is False


def test_probe_sends_no_credentials() -> None:
    """No key, header or auth of any kind is configured for the probe."""
    http = _modules()[MODULE]["http"]
    for key in ("headers", "basic_auth", "authorization", "bearer_token", "bearer_token_file"):
        assert key not in http, key


def test_prometheus_probes_the_configured_upstream_through_the_exporter() -> None:
    """Job llm-upstream probes sheepdog's upstream base_url via blackbox-exporter:9115."""
    config = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "llm-upstream"]
    deploy = yaml.safe_load((REPO / "deploy" / "sheepdog.compose.yaml").read_text(encoding="utf-8"))
    assert job["metrics_path"] == "/probe"
    assert job["params"]["module"] == [MODULE]
    assert job["static_configs"][0]["targets"] == [deploy["proxy"]["upstream"]["base_url"]]
    address = [r for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
    assert address == [{"target_label": "__address__", "replacement": "blackbox-exporter:9115"}]


def test_blackbox_exporter_accepts_the_config() -> None:
    """`blackbox_exporter --config.check` accepts blackbox.yml (where the exporter is installed)."""
    binary = require_binary("prometheus-blackbox-exporter", "prometheus-blackbox-exporter")
    result = run_tool(binary, "--config.file=blackbox/blackbox.yml", "--config.check")
    assert result.returncode == 0, result.stdout + result.stderr
