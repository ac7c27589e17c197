"""The Prometheus config, rule files and their promtool unit tests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stack._procs import REPO, parse_duration, require_binary, run_tool
from tests.stack._promql import alert_rules, recording_rules, rule_files

RUNBOOK_BASE = "https://github.com/sheepdog-dev/sheepdog/blob/main/docs/runbooks/"
RULE_TESTS = sorted((REPO / "prometheus" / "tests").glob("*.yml"))
# The dead man's switch: fires always, on purpose, for no person (severity "none").
WATCHDOG = "Watchdog"


def _prometheus_config() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(
        (REPO / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    )
    return doc


def _rule_tests() -> list[dict[str, Any]]:
    tests = []
    for path in RULE_TESTS:
        tests.extend(yaml.safe_load(path.read_text(encoding="utf-8"))["tests"])
    return tests


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.ha.yml"])
def test_promtool_check_config(config: str) -> None:
    """`promtool check config` accepts prometheus.yml (and the ha profile's) and the rule files
    it loads."""
    promtool = require_binary("promtool", "prometheus")
    result = run_tool(promtool, "check", "config", f"prometheus/{config}")
    assert result.returncode == 0, result.stdout + result.stderr
    for path in rule_files():
        assert f"Checking prometheus/rules/{path.name}" in result.stdout, result.stdout


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts every rule file."""
    promtool = require_binary("promtool", "prometheus")
    files = [str(path.relative_to(REPO)) for path in rule_files()]
    assert files, "no rule files in prometheus/rules"
    result = run_tool(promtool, "check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    """Every `promtool test rules` case in prometheus/tests passes."""
    promtool = require_binary("promtool", "prometheus")
    assert RULE_TESTS, "no rule unit tests in prometheus/tests"
    files = [str(path.relative_to(REPO)) for path in RULE_TESTS]
    result = run_tool(promtool, "test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout, result.stdout


def test_prometheus_config_loads_every_rule_file() -> None:
    """The rule_files globs of prometheus.yml, relative to it, match every file in rules/."""
    config = _prometheus_config()
    base = REPO / "prometheus"
    loaded = {path for pattern in config["rule_files"] for path in base.glob(pattern)}
    assert loaded == set(rule_files())


def test_prometheus_config_scrapes_the_stack_and_alerts_to_alertmanager() -> None:
    """Scrape jobs cover sheepdog:8000, Prometheus, Alertmanager, node-exporter and the probe."""
    config = _prometheus_config()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {
        name: [t for static in job["static_configs"] for t in static["targets"]]
        for name, job in jobs.items()
    }
    assert targets["sheepdog"] == ["sheepdog:8000"]
    assert targets["alertmanager"] == ["alertmanager:9093"]
    assert targets["node"] == ["host.docker.internal:9100"]
    assert "prometheus" in targets
    assert "llm-upstream" in targets
    alertmanagers = config["alerting"]["alertmanagers"]
    assert [t for am in alertmanagers for s in am["static_configs"] for t in s["targets"]] == [
        "alertmanager:9093"
    ]


def test_alert_names_are_camel_case_and_unique_per_severity() -> None:
    """Alert names are CamelCase; one alert name has at most one rule per severity."""
    seen: set[tuple[str, str]] = set()
    for rule in alert_rules():
        assert re.fullmatch(r"(?:[A-Z][a-z0-9]*|LLM)+", rule["alert"]), rule["alert"]
        key = (rule["alert"], rule["labels"]["severity"])
        assert key not in seen, f"two rules for {key}"
        seen.add(key)


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    """Each alert has severity critical|warning (the Watchdog: none), summary, description and a
    runbook that exists."""
    for rule in alert_rules():
        name = rule["alert"]
        severities = {"none"} if name == WATCHDOG else {"critical", "warning"}
        assert rule["labels"]["severity"] in severities, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["runbook_url"] == f"{RUNBOOK_BASE}{name}.md", name
        runbook = REPO / "docs" / "runbooks" / f"{name}.md"
        assert runbook.is_file(), f"{name}: missing {runbook.relative_to(REPO)}"
        assert name in runbook.read_text(encoding="utf-8").splitlines()[0], runbook


def test_alert_values_are_formatted() -> None:
    """Every $value in an annotation goes through a formatter, never printed raw."""
    for rule in alert_rules():
        for key, text in rule["annotations"].items():
            for action in re.findall(r"\{\{(.*?)\}\}", text):
                if "$value" in action:
                    assert re.search(
                        r"\$value\s*\|\s*(humanizePercentage|humanizeDuration|printf)", action
                    ), f"{rule['alert']} {key}: {{{{{action}}}}}"


def test_alerts_have_for_durations_where_a_blip_is_not_an_incident() -> None:
    """Alerts on instantaneous conditions wait (`for:`); only counter-window alerts fire at once,
    and the Watchdog, which fires from the first evaluation on."""
    for rule in alert_rules():
        if rule["alert"] == WATCHDOG:
            assert rule["expr"] == "vector(1)" and "for" not in rule, rule
        elif "for" not in rule:
            assert "increase(" in rule["expr"], f"{rule['alert']} fires on a single evaluation"


def test_every_alert_is_tested_firing_and_silent() -> None:
    """For every alert rule, a promtool case expects it to fire and another expects silence; the
    Watchdog, which is never silent, is expected firing from the start and still days later."""
    firing: set[tuple[str, str]] = set()
    silent: set[str] = set()
    watchdog_firing: set[float] = set()
    for case in _rule_tests():
        for check in case.get("alert_rule_test", []):
            if check.get("exp_alerts"):
                for alert in check["exp_alerts"]:
                    firing.add((check["alertname"], alert["exp_labels"]["severity"]))
                if check["alertname"] == WATCHDOG:
                    watchdog_firing.add(parse_duration(check["eval_time"]))
            else:
                silent.add(check["alertname"])
    for rule in alert_rules():
        assert (rule["alert"], rule["labels"]["severity"]) in firing, rule["alert"]
        if rule["alert"] == WATCHDOG:
            assert WATCHDOG not in silent
            assert min(watchdog_firing) == 0 and max(watchdog_firing) >= 86400, watchdog_firing
        else:
            assert rule["alert"] in silent, rule["alert"]


def test_every_recording_rule_is_tested() -> None:
    """Every recording rule's output is checked by a promql_expr_test."""
    tested = {
        check["expr"].strip()
        for case in _rule_tests()
        for check in case.get("promql_expr_test", [])
    }
    for rule in recording_rules():
        assert rule["record"] in tested, rule["record"]


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda path: Path(path).name)
def test_rule_tests_load_existing_rule_files(path: Path) -> None:
    """Each unit test file names rule files that exist (relative to the test file)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for name in doc["rule_files"]:
        assert (path.parent / name).is_file(), f"{path.name}: {name}"
