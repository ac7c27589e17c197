"""Every PromQL expression of the rules and dashboards: known metric names, and a real Prometheus
evaluates it without error."""

from __future__ import annotations

import pytest

from tests.stack._procs import PrometheusProcess
from tests.stack._promql import (
    OTHER_EXPORTERS,
    dashboard_expressions,
    metric_names,
    recording_rules,
    rule_expressions,
)
from tests.stack.exported_metrics import exported_series_names


def _known_names() -> frozenset[str]:
    recorded = {rule["record"] for rule in recording_rules()}
    return exported_series_names() | recorded


def test_metric_name_parser_skips_functions_labels_and_keywords() -> None:
    """The name parser finds selectors only, not functions, label names, keywords or numbers."""
    expr = (
        'sum by (le, model) (rate(a_bucket{code=~"5..", model="x"}[5m])) > 0.5e2 '
        "and on (model) b:rec:rate5m * on () group_left (currency) max by (currency) (c) "
        "+ scalar(days_in_month() - time() % 86400) unless d offset 1h == bool inf"
    )
    assert metric_names(expr) == {"a_bucket", "b:rec:rate5m", "c", "d"}


def test_rules_and_dashboards_reference_only_exported_or_recorded_metrics() -> None:
    """Each metric name used is exported by sheepdog (SPEC table), recorded here, or up/probe_*."""
    known = _known_names()
    unknown = [
        f"{e.where}: {name}"
        for e in [*rule_expressions(), *dashboard_expressions()]
        for name in sorted(metric_names(e.expr))
        if name not in known and not OTHER_EXPORTERS.match(name)
    ]
    assert not unknown, "unknown metric names:\n" + "\n".join(unknown)


@pytest.mark.slow
def test_prometheus_evaluates_every_rule_without_error(prometheus: PrometheusProcess) -> None:
    """Loaded into Prometheus, every rule's last evaluation is healthy."""
    groups = prometheus.api("/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(rule_expressions())
    broken = [
        f"{r['name']}: {r['health']} {r.get('lastError', '')}" for r in rules if r["health"] != "ok"
    ]
    assert not broken, "\n".join(broken)


@pytest.mark.slow
def test_rule_expressions_evaluate(prometheus: PrometheusProcess) -> None:
    """Every rule expression is accepted by /api/v1/query."""
    failures = []
    for expression in rule_expressions():
        answer = prometheus.query(expression.expr)
        if answer["status"] != "success":
            failures.append(f"{expression.where}: {answer.get('error')}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_recording_rules_produce_series(prometheus: PrometheusProcess) -> None:
    """With every exported metric present, every recording rule yields at least one series."""
    empty = [
        rule["record"]
        for rule in recording_rules()
        if not prometheus.query(rule["record"])["data"]["result"]
    ]
    assert not empty, f"no series recorded for: {empty}"


@pytest.mark.slow
def test_dashboard_expressions_evaluate_with_data(prometheus: PrometheusProcess) -> None:
    """Every dashboard query, variables substituted, succeeds and returns data."""
    failures = []
    for expression in dashboard_expressions():
        answer = prometheus.query(expression.expr)
        if answer["status"] != "success":
            failures.append(f"{expression.where}: {answer.get('error')}")
        elif not answer["data"]["result"]:
            failures.append(f"{expression.where}: no data for {expression.expr}")
    assert not failures, "\n".join(failures)
