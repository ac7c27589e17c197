"""Alertmanager: the config is valid, each kind of alert reaches the right receivers, and the
heartbeat and the bridge's own alerts take the routes that do not depend on the bridge."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stack._optional import OPTIONAL, enable, optional_blocks
from tests.stack._procs import REPO, parse_duration, require_binary, run_tool
from tests.stack._promql import alert_rules

CONFIG = REPO / "alertmanager" / "alertmanager.yml"
DEPLOY = REPO / "deploy" / "sheepdog.compose.yaml"
ROUTE_CASES: list[dict[str, Any]] = yaml.safe_load(
    (REPO / "alertmanager" / "tests" / "routes.yml").read_text(encoding="utf-8")
)
OPTIONAL_ROUTE_CASES: list[dict[str, Any]] = yaml.safe_load(
    (REPO / "alertmanager" / "tests" / "routes.optional.yml").read_text(encoding="utf-8")
)
TOKEN_FILE = "/run/secrets/sheepdog_alert_token"
SMTP_PASSWORD_FILE = "/run/secrets/smtp_password"
BRIDGE_TARGETS = {"ops-wechat", "ops-slack", "ops-email"}
# The bridge's reserved heartbeat target, and Alertmanager's own email receiver.
WATCHDOG = "watchdog"
NATIVE_EMAIL = "alertmanager-email"
# Alerts about the bridge itself, which Alertmanager emails itself too.
ABOUT_THE_BRIDGE = {"SheepdogDown", "SheepdogNotificationsFailing", "SheepdogOutboxBacklog"}


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


def _enabled_config(tmp_path: Path, *names: str) -> Path:
    """alertmanager.yml with optional blocks uncommented, as a user enables them."""
    path = tmp_path / "alertmanager.yml"
    path.write_text(enable(CONFIG.read_text(encoding="utf-8"), *names), encoding="utf-8")
    return path


def _routes_test(config: Path, case: dict[str, Any]) -> None:
    amtool = require_binary("amtool", "prometheus-alertmanager")
    labels = [f"{name}={value}" for name, value in case["labels"].items()]
    expected = ",".join(case["receivers"])
    result = run_tool(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={config}",
        f"--verify.receivers={expected}",
        *labels,
    )
    assert result.returncode == 0, (
        f"{case['labels']}: expected {expected}, got {result.stdout.strip()}\n{result.stderr}"
    )


@pytest.mark.parametrize("case", ROUTE_CASES, ids=[case["name"] for case in ROUTE_CASES])
def test_alert_routes_to_expected_receivers(case: dict[str, Any]) -> None:
    """`amtool config routes test` sends the alert to exactly the listed receivers, in order."""
    _routes_test(CONFIG.relative_to(REPO), case)


@pytest.mark.parametrize(
    "names", [(name,) for name in OPTIONAL] + [OPTIONAL], ids=[*OPTIONAL, "all-optional"]
)
def test_amtool_accepts_the_config_with_its_optional_receivers(
    names: tuple[str, ...], tmp_path: Path
) -> None:
    """Uncommenting the DingTalk or Feishu blocks (or both) gives a config amtool accepts, whose
    receivers are exactly the targets of the deploy config with the same blocks uncommented."""
    amtool = require_binary("amtool", "prometheus-alertmanager")
    path = _enabled_config(tmp_path, *names)
    result = run_tool(amtool, "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    receivers = {r["name"] for r in config["receivers"] if "webhook_configs" in r} - {WATCHDOG}
    deploy = yaml.safe_load(enable(DEPLOY.read_text(encoding="utf-8"), *names))
    assert receivers == set(deploy["bridge"]["targets"])
    assert receivers == BRIDGE_TARGETS | {f"ops-{name}" for name in names}


@pytest.mark.parametrize(
    "case", OPTIONAL_ROUTE_CASES, ids=[case["name"] for case in OPTIONAL_ROUTE_CASES]
)
def test_optional_receivers_get_what_their_routes_say(case: dict[str, Any], tmp_path: Path) -> None:
    """With the optional blocks uncommented, each kind of alert reaches the listed receivers."""
    _routes_test(_enabled_config(tmp_path), case)


def test_the_optional_blocks_are_the_same_in_every_file() -> None:
    """Each optional chat is a block in alertmanager.yml (route and receiver), the deploy config
    and .env.example, so that enabling it means uncommenting the same name everywhere."""
    assert optional_blocks(CONFIG.read_text(encoding="utf-8")) == [*OPTIONAL, *OPTIONAL]
    assert optional_blocks(DEPLOY.read_text(encoding="utf-8")) == list(OPTIONAL)
    assert optional_blocks((REPO / ".env.example").read_text(encoding="utf-8")) == list(OPTIONAL)


def test_every_alert_and_severity_has_a_route_case() -> None:
    """Each (alertname, severity) the rules can raise is covered by a routing case."""
    covered = {
        (case["labels"].get("alertname"), case["labels"].get("severity")) for case in ROUTE_CASES
    }
    for rule in alert_rules():
        key = (rule["alert"], rule["labels"]["severity"])
        assert key in covered, f"no case in alertmanager/tests/routes.yml for {key}"


def test_critical_reaches_email_and_wechat_warning_only_wechat() -> None:
    """Routing cases state the policy: critical to WeChat and email, warning to WeChat only; the
    heartbeat to the watchdog target alone; the bridge's own alerts also by Alertmanager's email."""
    for case in ROUTE_CASES:
        labels = case["labels"]
        receivers = case["receivers"]
        if labels.get("alertname") == "Watchdog":
            assert receivers == [WATCHDOG], case["name"]
            continue
        assert WATCHDOG not in receivers, case["name"]
        if labels.get("alertname") in ABOUT_THE_BRIDGE:
            assert receivers[0] == NATIVE_EMAIL, case["name"]
        else:
            assert NATIVE_EMAIL not in receivers, case["name"]
        if labels.get("severity") == "critical":
            assert {"ops-wechat", "ops-email"} <= set(receivers), case["name"]
        else:
            assert "ops-wechat" in receivers, case["name"]
            assert "ops-email" not in receivers, case["name"]


def test_the_bridges_own_alerts_have_route_cases() -> None:
    """Every rule that watches the bridge itself is among the alerts Alertmanager emails itself."""
    bridge_rules = {rule["alert"] for rule in alert_rules() if rule["alert"].startswith("Sheepdog")}
    assert bridge_rules == ABOUT_THE_BRIDGE


def test_routes_use_matchers_and_slack_continues() -> None:
    """Routes use `matchers` (not deprecated match/match_re); the Slack route continues."""
    config = _config()
    for route in _routes(config["route"]):
        assert "match" not in route and "match_re" not in route, route
    slack = [r for r in config["route"]["routes"] if r["receiver"] == "ops-slack"]
    assert slack and all(r.get("continue") is True for r in slack)
    for rule in config["inhibit_rules"]:
        assert set(rule) <= {"source_matchers", "target_matchers", "equal"}, rule


# `name op "value"` with a classic label name and a double-quoted value: the one form that
# Alertmanager 0.25's matcher parser (amtool in the tests) and the UTF-8 parser of 0.27 and later
# (the pinned image) read alike.
_MATCHER = re.compile(
    r'(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)(?P<op>=~|!~|!=|=)"(?P<value>(?:[^"\\]|\\.)*)"'
)


def _matchers(config: dict[str, Any]) -> list[str]:
    found = [m for route in _routes(config["route"]) for m in route.get("matchers", [])]
    for rule in config["inhibit_rules"]:
        found += rule.get("source_matchers", []) + rule.get("target_matchers", [])
    return found


def test_matchers_read_the_same_in_every_alertmanager_version() -> None:
    """Every matcher is `label op "value"`, which the classic and the UTF-8 parsers agree on."""
    matchers = _matchers(_config())
    assert matchers
    for matcher in matchers:
        assert _MATCHER.fullmatch(matcher), f"{matcher!r}: quote the value, use a plain label name"


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    parsed = _MATCHER.fullmatch(matcher)
    assert parsed, matcher
    value = labels.get(parsed["name"], "")
    wanted = parsed["value"].replace('\\"', '"')
    return {
        "=": value == wanted,
        "!=": value != wanted,
        "=~": re.fullmatch(wanted, value) is not None,
        "!~": re.fullmatch(wanted, value) is None,
    }[parsed["op"]]


@pytest.mark.parametrize("alertname", ["Watchdog", "SheepdogDown"])
def test_no_inhibit_rule_can_mute(alertname: str) -> None:
    """No inhibit rule's target matchers select the heartbeat or SheepdogDown, whatever fires."""
    (rule,) = [r for r in alert_rules() if r["alert"] == alertname]
    labels = {"alertname": alertname, **rule["labels"]}
    for inhibit in _config()["inhibit_rules"]:
        targets = inhibit["target_matchers"]
        assert not all(_matches(m, labels) for m in targets), (alertname, inhibit)


def test_the_inhibit_evaluation_above_can_mute() -> None:
    """The matcher evaluation the test above relies on does find a muted alert."""
    muted = {"alertname": "LLMBudgetNearlyExhausted", "severity": "warning", "client": "team-a"}
    assert any(
        all(_matches(m, muted) for m in inhibit["target_matchers"])
        for inhibit in _config()["inhibit_rules"]
    )


def _webhook_receivers() -> list[dict[str, Any]]:
    return [r for r in _config()["receivers"] if "webhook_configs" in r]


def test_receivers_post_to_the_bridge_with_the_token_file() -> None:
    """Each webhook receiver posts to http://sheepdog:8000/alerts/<its name> with the bearer token
    file; the person-facing ones send resolved notifications, the heartbeat does not."""
    receivers = _webhook_receivers()
    assert {r["name"] for r in receivers} == {*BRIDGE_TARGETS, WATCHDOG}
    for receiver in receivers:
        (webhook,) = receiver["webhook_configs"]
        assert webhook["url"] == f"http://sheepdog:8000/alerts/{receiver['name']}"
        assert webhook["send_resolved"] is (receiver["name"] != WATCHDOG)
        authorization = webhook["http_config"]["authorization"]
        assert authorization == {"type": "Bearer", "credentials_file": TOKEN_FILE}


def test_receivers_are_the_targets_sheepdog_is_configured_with() -> None:
    """Every bridge receiver is a target in the compose config of sheepdog, and the reverse; the
    watchdog receiver posts to the bridge's reserved target, which is not configured there."""
    deploy = yaml.safe_load((REPO / "deploy" / "sheepdog.compose.yaml").read_text(encoding="utf-8"))
    bridge = {r["name"] for r in _webhook_receivers()} - {WATCHDOG}
    assert bridge == set(deploy["bridge"]["targets"]) == BRIDGE_TARGETS


def test_watchdog_route_comes_first_repeats_every_minute_and_stops_there() -> None:
    """The heartbeat route is the first, matches only Watchdog, sends again every minute and does
    not continue, so the heartbeat never reaches a person."""
    first = _config()["route"]["routes"][0]
    assert first["receiver"] == WATCHDOG
    assert first["matchers"] == ['alertname="Watchdog"']
    assert first.get("continue", False) is False
    repeat = parse_duration(first["repeat_interval"])
    group = parse_duration(first["group_interval"])
    assert repeat <= 60 and group <= repeat and repeat % group == 0, first
    assert "routes" not in first


def test_the_watchdog_of_the_deploy_config_outlasts_several_heartbeats() -> None:
    """deploy/sheepdog.compose.yaml watches the heartbeat the watchdog route sends and reports
    silence to the WeChat group; its silence_seconds is at least three heartbeat intervals
    (repeat_interval + group_interval: Alertmanager sends again at the first flush after the
    repeat interval), so two heartbeats lost in a row are not yet taken for silence."""
    deploy = yaml.safe_load(DEPLOY.read_text(encoding="utf-8"))
    watchdog = deploy["bridge"]["watchdog"]
    assert watchdog["target"] == "ops-wechat"
    assert watchdog["target"] in deploy["bridge"]["targets"]
    first = _config()["route"]["routes"][0]
    interval = parse_duration(first["repeat_interval"]) + parse_duration(first["group_interval"])
    assert watchdog["silence_seconds"] >= 3 * interval, (watchdog, first)


def test_alertmanager_email_is_native_with_the_password_from_a_file() -> None:
    """alertmanager-email is Alertmanager's own email (no webhook): STARTTLS through the SMTP
    account of .env, the password from the compose secret, never inline."""
    config = _config()
    (receiver,) = [r for r in config["receivers"] if r["name"] == NATIVE_EMAIL]
    assert set(receiver) == {"name", "email_configs"}
    (email,) = receiver["email_configs"]
    assert email["to"] == "${ALERT_EMAIL_TO}"
    assert email["send_resolved"] is True
    assert "Runbook" in email["text"] and ".Annotations.description" in email["text"]
    smtp = {k: v for k, v in config["global"].items() if k.startswith("smtp_")}
    assert smtp == {
        "smtp_smarthost": "${SMTP_HOST}:587",
        "smtp_from": "${ALERT_EMAIL_FROM}",
        "smtp_auth_username": "${SMTP_USERNAME}",
        "smtp_auth_password_file": SMTP_PASSWORD_FILE,
        "smtp_require_tls": True,
    }
    assert "auth_password:" not in CONFIG.read_text(encoding="utf-8")
