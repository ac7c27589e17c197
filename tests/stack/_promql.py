"""The PromQL of the stack: every expression in the rule files and dashboards, and its names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.stack._procs import CLIENTS, MODELS, REPO, TARGETS

RULES_DIR = REPO / "prometheus" / "rules"
# Series from Prometheus itself (`up`) and the blackbox exporter (`probe_*`), not from sheepdog.
OTHER_EXPORTERS = re.compile(r"^(up|probe_[a-z_]+)$")
DASHBOARDS_DIR = REPO / "grafana" / "dashboards"

# Concrete values for Grafana's variables: one the sample exporter has for each dashboard variable.
GRAFANA_VALUES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "model": MODELS[0],
    "client": CLIENTS[0],
    "target": TARGETS[0],
}


@dataclass(frozen=True)
class Expression:
    """A PromQL expression and where it comes from (for messages)."""

    where: str
    expr: str


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def load_rules() -> list[dict[str, Any]]:
    """Every rule of every group, each with its ``file`` and ``group`` added."""
    rules = []
    for path in rule_files():
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in doc["groups"]:
            for rule in group["rules"]:
                rules.append({**rule, "file": path.name, "group": group["name"]})
    return rules


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "record" in rule]


def rule_expressions() -> list[Expression]:
    return [
        Expression(f"{r['file']}: {r.get('alert') or r['record']}", r["expr"]) for r in load_rules()
    ]


def dashboards() -> dict[str, dict[str, Any]]:
    """Each dashboard JSON by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute_grafana_variables(expr: str) -> str:
    """Replace $var, ${var} and ${var:format} with concrete values; unknown variables fail."""

    def value(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        if name not in GRAFANA_VALUES:
            raise KeyError(f"no test value for Grafana variable ${name} in {expr!r}")
        return GRAFANA_VALUES[name]

    pattern = r"\$\{(?P<braced>\w+)(?::\w+)?\}|\$(?P<plain>\w+)"
    return re.sub(pattern, value, expr)


_LABEL_VALUES = re.compile(r"^label_values\((?P<metric>[^,]+),\s*\w+\)$")


def dashboard_expressions() -> list[Expression]:
    """Panel targets and variable queries, Grafana variables substituted.

    A ``label_values(metric, label)`` variable query is evaluated as its ``metric`` selector.
    """
    found = []
    for file, dashboard in dashboards().items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                where = f"{file}: {panel['title']!r} {target['refId']}"
                found.append(Expression(where, substitute_grafana_variables(target["expr"])))
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = _LABEL_VALUES.match(text.strip())
            assert match, f"{file}: variable {variable['name']}: unsupported query {text!r}"
            found.append(Expression(f"{file}: variable {variable['name']}", match["metric"]))
    return found


# Words in PromQL that look like identifiers but are not metric names.
_KEYWORDS = frozenset(
    {
        "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
        "bool", "offset", "atan2", "inf", "nan",
    }
)  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_CLAUSES = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSETS = re.compile(r"\boffset\s+-?\w+")
_NUMBERS = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, aggregations,
    keywords, label names (in matchers or grouping clauses), strings, numbers or durations."""
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _CLAUSES.sub(" ", text)
    text = _OFFSETS.sub(" ", text)
    text = _NUMBERS.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}
