"""Grafana provisioning and dashboards, the dashboards checked against Grafana's own schema."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

from tests.stack._procs import REPO
from tests.stack._promql import dashboards, panels

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "piechart"}
DASHBOARDS = dashboards()
SCHEMA_DIR = REPO / ".cache" / "grafana-schema"


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
    return doc


def _expressions(dashboard: dict[str, Any]) -> str:
    return "\n".join(t["expr"] for p in panels(dashboard) for t in p.get("targets", []))


def test_datasource_is_provisioned_with_the_fixed_uid() -> None:
    """One Prometheus datasource, uid "prometheus", pointing at the compose service."""
    doc = yaml.safe_load(
        (REPO / "grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )
    (source,) = doc["datasources"]
    assert (source["uid"], source["type"]) == ("prometheus", "prometheus")
    assert source["url"] == "http://prometheus:9090"


def test_dashboard_provider_reads_the_mounted_dashboards() -> None:
    """The provider's path is where compose mounts grafana/dashboards, and the home page exists."""
    doc = yaml.safe_load(
        (REPO / "grafana/provisioning/dashboards/sheepdog.yml").read_text(encoding="utf-8")
    )
    (provider,) = doc["providers"]
    grafana = _compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    prefix = provider["options"]["path"] + "/"
    assert home.startswith(prefix)
    assert (REPO / "grafana" / "dashboards" / home.removeprefix(prefix)).is_file()


def test_there_are_two_dashboards_with_unique_uids() -> None:
    """The LLM relay and alert bridge dashboards, distinct uids, schema version 39 (the classic
    JSON model, which Grafana 11 loads as it is and 12 and 13 migrate on load)."""
    assert set(DASHBOARDS) == {"sheepdog-llm.json", "sheepdog-bridge.json"}
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)
    for dashboard in DASHBOARDS.values():
        assert dashboard["schemaVersion"] == 39
        assert dashboard["id"] is None


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_are_current_types_on_the_fixed_datasource(name: str) -> None:
    """Every panel is a current type (no `graph`) and it and its targets use uid "prometheus"."""
    for panel in panels(DASHBOARDS[name]):
        if panel["type"] == "row":
            continue
        assert panel["type"] in PANEL_TYPES, f"{panel['title']}: {panel['type']}"
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no queries"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in DASHBOARDS[name]["templating"]["list"]:
        assert variable["datasource"] == DATASOURCE, variable["name"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_have_unique_ids_and_do_not_overlap(name: str) -> None:
    """Panel ids are unique; panels stay within 24 columns and do not overlap."""
    all_panels = list(panels(DASHBOARDS[name]))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in all_panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_llm_dashboard_shows_traffic_latency_cost_and_budget() -> None:
    """The relay dashboard queries every view the issue asks for, where metering is incomplete
    too, and has a Cost row."""
    dashboard = DASHBOARDS["sheepdog-llm.json"]
    exprs = _expressions(dashboard)
    for needle in (
        "llm_requests_total",
        'code=~"5.."',
        "llm_request_duration_seconds_bucket",
        "llm_time_to_first_token_seconds_bucket",
        "llm_tokens_total",
        "llm_cost_usd_total",
        "llm_spend_month_usd",
        "llm_budget_usd",
        "client:llm_spend_month_usd:projected_month_end",
        "llm_active_requests",
        "llm_billing_usd_rate",
        "llm_market_usd_rate",
        "llm_upstream_interrupted_total",
        "llm_usage_missing_total",
    ):
        assert needle in exprs, needle
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert any(title.startswith("Cost") for title in rows), rows
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"model", "client"}


def test_bridge_dashboard_shows_flow_and_outbox() -> None:
    """The bridge dashboard shows received, sent, retried, failed (and why), outbox backlog and
    age, dead letters and digests, and the time since the last Watchdog heartbeat."""
    exprs = _expressions(DASHBOARDS["sheepdog-bridge.json"])
    for needle in (
        "sheepdog_alerts_received_total",
        'result="sent"',
        'result="retried"',
        'result="failed"',
        "sheepdog_outbox_pending",
        "sheepdog_outbox_oldest_seconds",
        "sheepdog_notification_duration_seconds_bucket",
        "sheepdog_notification_failures_total",
        "sheepdog_outbox_dead",
        "sheepdog_notifications_merged_total",
        "sheepdog_watchdog_last_heartbeat_timestamp_seconds",
    ):
        assert needle in exprs, needle


# ------------------------------------------------------------------------------------------------
# Grafana's own schema: the npm package @grafana/schema of the pinned Grafana version, turned into
# JSON Schema by `scripts/setup --test` (scripts/grafana-schema.mjs says how).


def _pinned_grafana() -> str:
    image = _compose()["services"]["grafana"]["image"]
    match = re.fullmatch(r"grafana/grafana:(\d+\.\d+\.\d+)", image)
    assert match, image
    return match[1]


@pytest.fixture(scope="module")
def grafana_schema() -> dict[str, Any]:
    path = SCHEMA_DIR / f"grafana-{_pinned_grafana()}.json"
    if not path.is_file():
        pytest.skip(f"{path} is missing: `scripts/setup --test` builds it where npm is available")
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def _problems(schema: dict[str, Any], instance: Any, where: str) -> list[str]:
    jsonschema.Draft7Validator.check_schema(schema)
    found = []
    for error in jsonschema.Draft7Validator(schema).iter_errors(instance):
        # a panel is Panel or RowPanel: name the closest branch's complaint, not just "anyOf"
        best = jsonschema.exceptions.best_match(error.context) if error.context else error
        path = "/".join(str(part) for part in best.absolute_path)
        found.append(f"{where}: /{path}: {best.message}")
    return found


def _schema_problems(schema: dict[str, Any], dashboard: dict[str, Any], name: str) -> list[str]:
    """What Grafana's schema finds wrong in ``dashboard``: the dashboard model, then each panel's
    options and custom field config against its plugin's types."""
    problems = _problems(schema["dashboard"], dashboard, name)
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        plugin = schema["panels"].get(panel["type"].replace("-", "").lower())
        where = f"{name}: panel {panel.get('title')!r}"
        if plugin is None:
            problems.append(f"{where}: no schema for panel type {panel['type']!r}")
            continue
        problems += _problems(plugin["options"], panel.get("options", {}), f"{where} options")
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            if "fieldConfig" not in plugin:
                problems.append(f"{where}: {panel['type']} has no custom field config")
            else:
                problems += _problems(plugin["fieldConfig"], custom, f"{where} custom")
    return problems


def test_the_schema_is_that_of_the_pinned_grafana(grafana_schema: dict[str, Any]) -> None:
    """The schema was built from @grafana/schema of exactly the version compose.yaml pins."""
    assert grafana_schema["package"] == "@grafana/schema"
    assert grafana_schema["version"] == _pinned_grafana()
    assert {"timeseries", "stat", "gauge", "bargauge", "piechart"} <= set(grafana_schema["panels"])


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_matches_grafanas_schema(grafana_schema: dict[str, Any], name: str) -> None:
    """The dashboard, its panels, their options and custom field config are what Grafana's own
    types allow: no unknown key, no wrong type, no value outside an enum."""
    problems = _schema_problems(grafana_schema, DASHBOARDS[name], name)
    assert not problems, "\n".join(problems)


def _first(dashboard: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(p for p in panels(dashboard) if p["type"] == kind)


BREAKAGES = {
    "misspelt panel key": lambda d: _first(d, "timeseries").update(
        gridpos=_first(d, "timeseries")["gridPos"]
    ),
    "misspelt dashboard key": lambda d: d.update(refersh="30s"),
    "misspelt variable key": lambda d: d["templating"]["list"][0].update(regx=".*"),
    "misspelt option": lambda d: _first(d, "timeseries")["options"]["legend"].update(
        showLegnd=True
    ),
    "option value outside its enum": lambda d: _first(d, "stat")["options"].update(
        colorMode="rainbow"
    ),
    "custom field config of the wrong type": lambda d: _first(d, "timeseries")["fieldConfig"][
        "defaults"
    ]["custom"].update(lineWidth="thick"),
    "panel type without a schema": lambda d: _first(d, "gauge").update(type="gague"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_schema_check_rejects_a_broken_dashboard(
    grafana_schema: dict[str, Any], breakage: str
) -> None:
    """Each kind of mistake in a dashboard file makes the schema check fail."""
    dashboard = copy.deepcopy(DASHBOARDS["sheepdog-llm.json"])
    BREAKAGES[breakage](dashboard)
    assert _schema_problems(grafana_schema, dashboard, "broken"), breakage
