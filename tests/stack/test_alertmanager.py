"""Alertmanager: the config is valid, and each kind of alert reaches the right bridge targets."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.stack._procs import REPO, require_binary, run_tool
from tests.stack._promql import alert_rules

CONFIG = REPO / "alertmanager" / "alertmanager.yml"
ROUTE_CASES: list[dict[str, Any]] = yaml.safe_load(
    (REPO / "alertmanager" / "tests" / "routes.yml").read_text(encoding="utf-8")
)
TOKEN_FILE = "/run/secrets/sheepdog_alert_token"


def _config() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    return doc


def _routes(route: dict[str, Any]) -> list[dict[str, Any]]:
    found = [route]
    for child in route.get("routes", []):
        found.extend(_routes(child))
    return found


def test_amtool_check_config() -> None:
    """`amtool check-config` accepts alertmanager.yml."""
    amtool = require_binary("amtool", "prometheus-alertmanager")
    result = run_tool(amtool, "check-config", str(CONFIG.relative_to(REPO)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


@pytest.mark.parametrize("case", ROUTE_CASES, ids=[case["name"] for case in ROUTE_CASES])
def test_alert_routes_to_expected_receivers(case: dict[str, Any]) -> None:
    """`amtool config routes test` sends the alert to exactly the listed receivers, in order."""
    amtool = require_binary("amtool", "prometheus-alertmanager")
    labels = [f"{name}={value}" for name, value in case["labels"].items()]
    expected = ",".join(case["receivers"])
    result = run_tool(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG.relative_to(REPO)}",
        f"--verify.receivers={expected}",
        *labels,
    )
    assert result.returncode == 0, (
        f"{case['labels']}: expected {expected}, got {result.stdout.strip()}\n{result.stderr}"
    )


def test_every_alert_and_severity_has_a_route_case() -> None:
    """Each (alertname, severity) the rules can raise is covered by a routing case."""
    covered = {
        (case["labels"].get("alertname"), case["labels"].get("severity")) for case in ROUTE_CASES
    }
    for rule in alert_rules():
        key = (rule["alert"], rule["labels"]["severity"])
        assert key in covered, f"no case in alertmanager/tests/routes.yml for {key}"


def test_critical_reaches_email_and_wechat_warning_only_wechat() -> None:
    """Routing cases state the policy: critical to WeChat and email, warning to WeChat only."""
    for case in ROUTE_CASES:
        severity = case["labels"].get("severity")
        if severity == "critical":
            assert {"ops-wechat", "ops-email"} <= set(case["receivers"]), case["name"]
        else:
            assert "ops-wechat" in case["receivers"], case["name"]
            assert "ops-email" not in case["receivers"], case["name"]


def test_routes_use_matchers_and_slack_continues() -> None:
    """Routes use `matchers` (not deprecated match/match_re); the Slack route continues."""
    config = _config()
    for route in _routes(config["route"]):
        assert "match" not in route and "match_re" not in route, route
    slack = [r for r in config["route"]["routes"] if r["receiver"] == "ops-slack"]
    assert slack and all(r.get("continue") is True for r in slack)
    for rule in config["inhibit_rules"]:
        assert set(rule) <= {"source_matchers", "target_matchers", "equal"}, rule


def test_receivers_post_to_the_bridge_with_the_token_file() -> None:
    """Each receiver posts to http://sheepdog:8000/alerts/<its name> with the bearer token file."""
    for receiver in _config()["receivers"]:
        (webhook,) = receiver["webhook_configs"]
        assert webhook["url"] == f"http://sheepdog:8000/alerts/{receiver['name']}"
        assert webhook["send_resolved"] is True
        authorization = webhook["http_config"]["authorization"]
        assert authorization == {"type": "Bearer", "credentials_file": TOKEN_FILE}


def test_receivers_are_the_targets_sheepdog_is_configured_with() -> None:
    """Every receiver name is a target in the compose config of sheepdog, and the reverse."""
    deploy = yaml.safe_load((REPO / "deploy" / "sheepdog.compose.yaml").read_text(encoding="utf-8"))
    receivers = {receiver["name"] for receiver in _config()["receivers"]}
    assert receivers == set(deploy["bridge"]["targets"]) == {"ops-wechat", "ops-slack", "ops-email"}
