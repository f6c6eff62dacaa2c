"""The shipped Grafana dashboard and Prometheus alerting rules: valid PromQL (checked by promtool),
rules unit-tested for every alert, and only metric names sloeval really exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sloeval.config.slo_file import parse_slo_text
from sloeval.serve.exporter import DaemonMetrics, SnapshotHolder
from sloeval.slo.snapshot import SLOResult, SLOStatus, Snapshot
from tests.shipped_monitoring import (
    DASHBOARD,
    LABELS_READ,
    RULES,
    RULES_TEST,
    SCRAPE_METRICS,
    alert_names,
    dashboard_exprs,
    dashboard_panels,
    load_dashboard,
    load_rules,
    load_rules_tests,
    metric_names,
    reads_outside_replica_aggregation,
    rule_exprs,
    shipped_exprs,
    shipped_metric_names,
    substitute_variables,
)

PROMTOOL_FALLBACK = Path("/usr/bin/promtool")

#: What the dashboard must show (per the issue): every family except the availability/latency extras.
DASHBOARD_MUST_READ = {
    "samokoder_error_budget_remaining_percent",
    "samokoder_error_budget_burn_rate",
    "samokoder_slo_sli_ratio",
    "samokoder_slo_objective_ratio",
    "samokoder_slo_alert_firing",
    "sloeval_slo_data_stale",
    "sloeval_last_evaluation_timestamp_seconds",
    "sloeval_evaluation_duration_seconds_bucket",
    "sloeval_evaluation_cycles_total",
    "sloeval_prometheus_queries_total",
    "sloeval_notifications_total",
    "sloeval_build_info",
    "sloeval_leader",
    "sloeval_database_up",
    "up",
}

EXPECTED_ALERTS = {
    "SLOErrorBudgetLow",
    "SLOErrorBudgetCritical",
    "SLODataStale",
    "SloevalDown",
    "SloevalReplicaDown",
    "SloevalAbsent",
    "SloevalNoLeader",
    "SloevalSeveralLeaders",
    "SloevalDatabaseDown",
    "SloevalNotEvaluating",
    "SloevalCyclesFailing",
    "SloevalNotificationsFailing",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool") or (str(PROMTOOL_FALLBACK) if PROMTOOL_FALLBACK.exists() else None)
    if found is None:
        if os.environ.get("CI", "").lower() not in {"", "0", "false"}:
            pytest.fail("promtool is not installed; CI must run these checks (Debian package: prometheus)")
        pytest.skip("promtool is not installed (in CI this fails)")
    return found


def run_promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def check_promql(promtool: str, exprs: list[tuple[str, str]], directory: Path) -> subprocess.CompletedProcess[str]:
    """``promtool check rules`` on one recording rule per expression (variables substituted)."""
    rules = [
        {"record": f"shipped:expr_{index}", "expr": substitute_variables(expr)} for index, (_, expr) in enumerate(exprs)
    ]
    path = directory / "exprs.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "shipped", "rules": rules}]}), encoding="utf-8")
    return run_promtool(promtool, "check", "rules", path.name, cwd=directory)


def exported_sample_names() -> dict[str, set[str]]:
    """Render sloeval's real /metrics registry with every family populated: sample name -> label names."""
    config = parse_slo_text(
        """
service: samokoder-api
period: 30d
slos:
  - name: avail
    slo_type: availability
    objective: 99.9
    uptime: {selector: 'up{job="api"}'}
  - name: errors
    slo_type: errors
    objective: 99
    ratio: {bad: 'req_total{code="500"}', total: req_total, group_by: [endpoint]}
  - name: latency
    slo_type: latency
    objective: 95
    latency: {histogram: req_seconds, threshold_seconds: 2}
""",
        Path("slos.yaml"),
    )
    avail, errors, latency = config.slos

    def result(slo_windows: Sequence[str], labels: tuple[tuple[str, str], ...] = ()) -> SLOResult:
        return SLOResult(
            labels=labels,
            sli=dict.fromkeys(slo_windows, 0.995),
            burn_rate=dict.fromkeys(slo_windows, 0.5),
            events={},
            error_budget_remaining=0.5,
        )

    holder = SnapshotHolder()
    holder.publish(
        Snapshot(
            1_800_000_000.0,
            0.2,
            (
                SLOStatus(avail, (result(avail.window_names),)),
                SLOStatus(errors, (result(errors.window_names, (("endpoint", "/a"),)),)),
                SLOStatus(latency, (), error="bad_data: query timed out"),
            ),
        )
    )
    holder.publish_firing((("errors", "FastBurn", "critical", (("endpoint", "/a"),)),))
    metrics = DaemonMetrics(holder, "samokoder")
    metrics.cycle_duration.observe(0.2)
    metrics.cycles.labels("partial").inc()
    metrics.queries.labels("success").inc()
    metrics.notifications.labels("telegram", "sent").inc()
    metrics.notifications.labels("email", "failed").inc()
    text = generate_latest(metrics.registry).decode()
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


# --- the rules ---------------------------------------------------------------------------------


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", RULES.name, cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names(load_rules()))} rules found" in result.stdout


def test_rules_unit_tests_pass(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_unit_tests_load_the_shipped_rules_file() -> None:
    assert load_rules_tests()["rule_files"] == [RULES.name]


def test_the_alerts_the_issue_asks_for_are_there() -> None:
    names = alert_names(load_rules())
    assert len(names) == len(set(names)), names
    assert set(names) == EXPECTED_ALERTS


def test_every_alert_has_a_firing_and_a_quiet_test() -> None:
    cases = [case for test in load_rules_tests()["tests"] for case in test.get("alert_rule_test", [])]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    alerts = set(alert_names(load_rules()))
    assert alerts - firing == set(), "alerts without a test where they fire"
    assert alerts - quiet == set(), "alerts without a test where they must not fire"
    assert (firing | quiet) - alerts == set(), "tests of alerts the rules file does not have"


def test_every_alert_has_severity_summary_description_and_runbook_hint() -> None:
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert set(rule["annotations"]) >= {"summary", "description", "runbook"}, rule["alert"]
            assert re.search(r"sloeval (check|notify-test|eval)\b", rule["annotations"]["runbook"]), rule["alert"]


def test_firing_tests_pin_every_annotation() -> None:
    annotations = {
        rule["alert"]: set(rule["annotations"]) for group in load_rules()["groups"] for rule in group["rules"]
    }
    for test in load_rules_tests()["tests"]:
        for case in test.get("alert_rule_test", []):
            for alert in case.get("exp_alerts") or []:
                assert set(alert["exp_annotations"]) == annotations[case["alertname"]], case
                assert alert["exp_labels"]["severity"], case


# --- the dashboard -----------------------------------------------------------------------------


def test_dashboard_identity() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "sloeval-slo"
    assert dashboard["title"] == "sloeval: SLOs"
    assert 36 <= dashboard["schemaVersion"] <= 41


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    panels = dashboard_panels(load_dashboard())
    assert len(panels) > 10
    for panel in panels:
        assert panel.get("datasource") == {"type": "prometheus", "uid": "${datasource}"}, panel["id"]
        for target in panel.get("targets", []):
            assert target.get("datasource", panel["datasource"]) == panel["datasource"], panel["id"]


def test_panel_ids_are_unique_and_panels_with_queries_have_titles() -> None:
    panels = dashboard_panels(load_dashboard())
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), sorted(ids)
    for panel in panels:
        if panel["type"] != "row":
            assert panel.get("title"), panel["id"]
            assert panel.get("targets"), panel["id"]


def test_template_variables() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "slo", "service"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "slo", "service"):
        assert variables[name]["type"] == "query", name
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name
        assert variables[name]["definition"] == variables[name]["query"]["query"], name
    assert variables["job"]["current"]["value"] == "sloeval"
    slo = variables["slo"]
    assert slo["multi"]
    assert slo["includeAll"]
    assert re.match(r"label_values\(samokoder_slo_objective_ratio\b.*,\s*slo\)$", slo["definition"])
    assert variables["service"]["includeAll"]


def test_multi_value_variables_are_matched_as_regexes() -> None:
    """``slo="$slo"`` would match nothing once two SLOs (``(a|b)``) or All are selected."""
    multi = {v["name"] for v in load_dashboard()["templating"]["list"] if v.get("multi") or v.get("includeAll")}
    for where, expr in dashboard_exprs(load_dashboard()):
        for label, operator, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', expr):
            used = set(re.findall(r"\$\{?(\w+)", value))
            if used & multi:
                assert operator in {"=~", "!~"}, f"{where}: {label}{operator}{value!r}"


def test_dashboard_exprs_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = dashboard_exprs(load_dashboard())
    assert len(exprs) > 15
    result = check_promql(promtool, exprs, tmp_path)
    index = "\n".join(f"shipped:expr_{i}: {where}" for i, (where, _) in enumerate(exprs))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{index}"
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_the_promql_check_rejects_broken_expressions(promtool: str, tmp_path: Path) -> None:
    broken = [("unbalanced", 'sum(rate(up{job="$job"}[$__rate_interval])'), ("fine", "up")]
    result = check_promql(promtool, broken, tmp_path)
    assert result.returncode != 0
    assert "shipped:expr_0" in result.stdout + result.stderr
    with pytest.raises(KeyError):
        substitute_variables("rate(x[$undefined_variable])")


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    used = {name for _, expr in dashboard_exprs(load_dashboard()) for name in metric_names(expr)}
    assert DASHBOARD_MUST_READ - used == set()


# --- metric names --------------------------------------------------------------------------------


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(a_bucket{job=~"$job", x="y z"}[$__rate_interval])))'
        " / on (instance) group_left (version) b_info offset 5m"
        ' or sum without (outcome) (increase(c_total{outcome="failed"}[15m])) > bool 1e3'
        " and time() - d_seconds unless absent(up{job=\"sloeval\"}) or vector(0) or e{slo=~'$slo'}"
    )
    assert metric_names(expr) == {"a_bucket", "b_info", "c_total", "d_seconds", "up", "e"}
    assert metric_names("samokoder_slo_sli_ratio") == {"samokoder_slo_sli_ratio"}


def test_only_metrics_sloeval_exports_are_read() -> None:
    exported = exported_sample_names()
    # The populated registry really has every family (else the subset check below proves less).
    assert {"samokoder_slo_alert_firing", "sloeval_notifications_total", "sloeval_slo_data_stale"} <= set(exported)
    used = shipped_metric_names()
    unknown = {name: where for name, where in used.items() if name not in exported and name not in SCRAPE_METRICS}
    assert unknown == {}
    assert {name for name in used if name.startswith("samokoder_")}, "the prefixed gauges are read"


def test_label_names_read_are_exported() -> None:
    exported = exported_sample_names()
    for name, labels in LABELS_READ.items():
        assert labels <= exported[name], name


def test_rules_read_the_gauges_they_alert_on() -> None:
    names = {name for _, expr in rule_exprs(load_rules()) for name in metric_names(expr)}
    assert names == {
        "samokoder_error_budget_remaining_percent",
        "sloeval_slo_data_stale",
        "up",
        "sloeval_last_evaluation_timestamp_seconds",
        "sloeval_evaluation_cycles_total",
        "sloeval_notifications_total",
        "sloeval_leader",
        "sloeval_database_up",
    }


# --- several replicas ---------------------------------------------------------------------------

#: Exported alike by every replica (told apart only by instance/pod), so read only through an
#: aggregation that drops those labels.
PER_SLO_SERIES = re.compile(r"^(samokoder_\w+|sloeval_slo_data_stale)$")


def test_replica_aggregation_check() -> None:
    check = reads_outside_replica_aggregation
    assert check('samokoder_x{slo=~"$slo"}', {"samokoder_x"}) == {"samokoder_x"}
    assert check("max without (instance, pod) (samokoder_x)", {"samokoder_x"}) == set()
    assert check("max without (instance) (samokoder_x)", {"samokoder_x"}) == {"samokoder_x"}
    assert check("sum by (instance) (samokoder_x)", {"samokoder_x"}) == {"samokoder_x"}
    assert check("min by (slo) (samokoder_x) / samokoder_y", {"samokoder_x", "samokoder_y"}) == {"samokoder_y"}
    assert check("sum(rate(samokoder_x[5m])) by (slo)", {"samokoder_x"}) == set()
    assert check("sum(rate(samokoder_x[5m])) by (pod)", {"samokoder_x"}) == {"samokoder_x"}
    assert check('count(max(samokoder_x{a=")("})) or samokoder_x', {"samokoder_x"}) == {"samokoder_x"}
    assert check("max_over_time(samokoder_x[5m])", {"samokoder_x"}) == {"samokoder_x"}


def test_slo_series_are_aggregated_over_replicas() -> None:
    """N replicas export the same SLO series: panels and rules must neither count them N times
    nor let an alert's `for` restart when one replica restarts."""
    checked: list[str] = []
    for where, expr in shipped_exprs():
        if where.startswith("dashboard variable"):
            continue  # label_values() lists label values; replicas add none
        names = {name for name in metric_names(expr) if PER_SLO_SERIES.match(name)}
        checked += names
        assert reads_outside_replica_aggregation(expr, names) == set(), f"{where}: {expr}"
    assert len(checked) > 10


def test_replica_alerts_read_the_replica_metrics() -> None:
    exprs = {where.removeprefix("rule "): expr for where, expr in rule_exprs(load_rules())}
    assert "sloeval_leader" in exprs["SloevalNoLeader"]
    assert "sloeval_leader" in exprs["SloevalSeveralLeaders"]
    assert "sloeval_database_up" in exprs["SloevalDatabaseDown"]
    # Down: all replicas page, one warns.
    assert reads_outside_replica_aggregation(exprs["SloevalDown"], {"up"}) == set()
    assert reads_outside_replica_aggregation(exprs["SloevalReplicaDown"], {"up"}) == {"up"}


def test_dashboard_shows_leader_and_database_per_replica() -> None:
    panels = [
        panel
        for panel in dashboard_panels(load_dashboard())
        if {"sloeval_leader", "sloeval_database_up"}
        <= {name for target in panel.get("targets", []) for name in metric_names(target["expr"])}
    ]
    assert len(panels) == 1
    assert all("{{instance}}" in target["legendFormat"] for target in panels[0]["targets"])


def test_shipped_files_exist_where_the_docs_say() -> None:
    for path in (DASHBOARD, RULES, RULES_TEST):
        assert path.is_file(), path
