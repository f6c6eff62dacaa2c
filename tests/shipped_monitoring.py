"""The shipped Grafana dashboard and Prometheus alerting rules: where they live, their PromQL and
the metric names it reads. Shared by the unit test and the end-to-end cross-check."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "config" / "grafana" / "sloeval-slo.json"
RULES = REPO / "config" / "prometheus" / "sloeval-alerts.yml"
RULES_TEST = REPO / "config" / "prometheus" / "sloeval-alerts.test.yml"

#: Not exported by sloeval but by Prometheus for the scrape job.
SCRAPE_METRICS = frozenset({"up"})

#: The target labels that tell replicas of one sloeval apart (static targets: instance; Kubernetes: pod too).
REPLICA_LABELS = ("instance", "pod")

#: Concrete values for the Grafana variables the dashboard uses (built-in and its own).
VARIABLE_VALUES = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "24h",
    "__range_s": "86400",
    "datasource": "prometheus",
    "job": "sloeval",
    "service": "samokoder-api",
    "slo": "api-errors",
}

#: Labels the dashboard and the rules group by, filter on or print, per metric family.
LABELS_READ = {
    "samokoder_error_budget_remaining_percent": {"slo", "service"},
    "samokoder_error_budget_burn_rate": {"slo", "service", "window"},
    "samokoder_slo_sli_ratio": {"slo", "service", "window"},
    "samokoder_slo_objective_ratio": {"slo", "service"},
    "samokoder_slo_alert_firing": {"slo", "alert", "severity"},
    "sloeval_slo_data_stale": {"slo"},
    "sloeval_evaluation_cycles_total": {"outcome"},
    "sloeval_prometheus_queries_total": {"outcome"},
    "sloeval_notifications_total": {"channel", "outcome"},
    "sloeval_evaluation_duration_seconds_bucket": {"le"},
    "sloeval_build_info": {"version", "python_version"},
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan"}
)
_AGGREGATION = re.compile(
    r"\b(?:sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\s*"
    r"(?:(by|without)\s*\(([^()]*)\)\s*)?\(",
    re.IGNORECASE,
)
_TRAILING_GROUPING = re.compile(r"\s*(by|without)\s*\(([^()]*)\)", re.IGNORECASE)
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\(\s*(.+)\s*\)\s*$", re.DOTALL)


def load_dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def load_rules() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return document


def load_rules_tests() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    return document


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return query["query"] if isinstance(query, dict) else str(query)


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and of every query variable's series selector."""
    out: list[tuple[str, str]] = []
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} {panel.get('title', '')!r} target {target.get('refId')}"
            out.append((where, target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable_query(variable)
        match = _LABEL_VALUES.match(query) or _QUERY_RESULT.match(query)
        if match is None:
            raise ValueError(f"variable {variable['name']}: unsupported query {query!r}")
        out.append((f"variable {variable['name']}", match.group(1)))
    return out


def rule_exprs(rules: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every alerting and recording rule."""
    return [
        (f"rule {rule.get('alert') or rule.get('record')}", str(rule["expr"]))
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def alert_names(rules: dict[str, Any]) -> list[str]:
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def substitute_variables(expr: str, values: dict[str, str] = VARIABLE_VALUES) -> str:
    """Grafana's ``$var``, ``${var}``, ``${var:format}`` and ``[[var]]`` replaced by concrete values.

    An unknown variable raises KeyError: the dashboard then uses a variable it does not define."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values[name]

    return _VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (Grafana variables are substituted first).

    Strings, label matchers, ranges and label lists are blanked out; what is left that is an
    identifier, not a keyword and not called as a function, is a metric name."""
    text = _STRING.sub('""', substitute_variables(expr))
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    text = re.sub(r"\boffset\s+-?[\dsmhdwy]+", " ", text, flags=re.IGNORECASE)
    return {m.group(1) for m in _IDENTIFIER.finditer(text) if m.group(1).lower() not in _KEYWORDS}


def shipped_exprs() -> list[tuple[str, str]]:
    """(where, PromQL) of the dashboard and the rules file."""
    return [(f"dashboard {w}", e) for w, e in dashboard_exprs(load_dashboard())] + [
        (f"rules {w}", e) for w, e in rule_exprs(load_rules())
    ]


def shipped_metric_names() -> dict[str, list[str]]:
    """Every metric name the dashboard and the rules read -> where."""
    out: dict[str, list[str]] = {}
    for where, expr in shipped_exprs():
        for name in metric_names(expr):
            out.setdefault(name, []).append(where)
    return out


def _drops_replica_labels(grouping: str | None, labels: str) -> bool:
    names = {label.strip() for label in labels.split(",") if label.strip()}
    if grouping is None:
        return True
    if grouping.lower() == "by":
        return not names & set(REPLICA_LABELS)
    return set(REPLICA_LABELS) <= names


def reads_outside_replica_aggregation(expr: str, names: set[str]) -> set[str]:
    """Those of ``names`` that ``expr`` reads outside every aggregation dropping :data:`REPLICA_LABELS`.

    Such a read sees one series per replica: N replicas double-count it, or flap between them."""
    text = _STRING.sub(lambda m: '"' + " " * (len(m.group(0)) - 2) + '"', substitute_variables(expr))
    spans: list[tuple[int, int]] = []
    for match in _AGGREGATION.finditer(text):
        depth, end = 0, len(text)
        for index in range(match.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[index], 0)
            if depth == 0:
                end = index
                break
        grouping, labels = match.group(1), match.group(2) or ""
        trailing = _TRAILING_GROUPING.match(text, end + 1)
        if grouping is None and trailing is not None:
            grouping, labels = trailing.group(1), trailing.group(2)
        if _drops_replica_labels(grouping, labels):
            spans.append((match.end(), end))
    outside = set()
    for name in names:
        for found in re.finditer(rf"(?<![\w:]){re.escape(name)}(?![\w:])", text):
            if not any(start <= found.start() < end for start, end in spans):
                outside.add(name)
    return outside
