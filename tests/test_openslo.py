"""OpenSLO v1 files: the shipped examples, each translated feature, each refusal, equivalence with native."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sloeval.config.alert_rules import AlertRule, SLIBelowCondition
from sloeval.config.openslo import CounterQuery, QueryError, parse_counter_query
from sloeval.config.selectors import Matcher, Selector, parse_selector, quote
from sloeval.config.slo_file import ConfigError, RatioIndicator, SLOConfig, SLODefinition, load_slo_file, parse_slo_text
from sloeval.promql.expressions import Part
from sloeval.promql.plan import QueryPlan, pack, request_promql

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "openslo" / "samokoder-api.yaml"
NATIVE_EQUIVALENT = REPO / "tests" / "data" / "openslo" / "samokoder-api-native.yaml"
UNSUPPORTED = REPO / "tests" / "data" / "openslo" / "unsupported-timeslices.yaml"
PATH = Path("slos.yaml")
DAY = 86400
DELETE = object()


def requests(slos: Sequence[SLODefinition]) -> tuple[list[str], list[list[tuple[Part, str, str]]]]:
    """The PromQL eval and run send for ``slos``, and which term each SLO reads as which part and window."""
    plan = QueryPlan(slos)
    reads = [[(p.part, p.window_name, p.expression.key) for p in s.parts] for s in plan.slo_plans]
    return [request_promql(request) for request in pack(plan.expressions)], reads


def prom(query: str) -> dict[str, Any]:
    return {"metricSource": {"type": "Prometheus", "spec": {"query": query}}}


def base_slo(name: str = "api-errors") -> dict[str, Any]:
    return {
        "apiVersion": "openslo/v1",
        "kind": "SLO",
        "metadata": {"name": name},
        "spec": {
            "service": "samokoder-api",
            "indicator": {
                "metadata": {"name": "server-errors"},
                "spec": {
                    "ratioMetric": {
                        "counter": True,
                        "bad": prom('sum(rate(samokoder_http_requests_total{status=~"5.."}[5m]))'),
                        "total": prom("sum(rate(samokoder_http_requests_total[5m]))"),
                    }
                },
            },
            "budgetingMethod": "Occurrences",
            "timeWindow": [{"duration": "30d", "isRolling": True}],
            "objectives": [{"displayName": "Not 5xx", "target": 0.99}],
        },
    }


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "openslo/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def set_path(document: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of ``document`` with ``a.b[0].c`` set to ``value`` (or removed with DELETE)."""
    result = copy.deepcopy(document)
    keys: list[str | int] = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    node: Any = result
    for key in keys[:-1]:
        node = node[key]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return result


def dump(*documents: object) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True)


def load(*documents: object) -> SLOConfig:
    return parse_slo_text(dump(*documents), PATH)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_slo_text(text, PATH)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- the shipped example --------------------------------------------------------------------


def test_shipped_example_compiles_to_the_expected_slos() -> None:
    config = load_slo_file(EXAMPLE)
    assert config.service == "samokoder-api"
    assert config.source_format == "OpenSLO v1"
    by_name = {slo.name: slo for slo in config.slos}
    assert list(by_name) == ["api-errors", "api-errors-by-endpoint", "api-latency-2s-for-95", "api-latency-2s-for-99"]
    assert {n: s.objective for n, s in by_name.items()} == {
        "api-errors": 0.99,
        "api-errors-by-endpoint": 0.99,
        "api-latency-2s-for-95": 0.95,
        "api-latency-2s-for-99": 0.99,
    }
    assert {s.period for s in config.slos} == {30 * DAY}
    assert {n: s.slo_type for n, s in by_name.items()} == {
        "api-errors": "errors",
        "api-errors-by-endpoint": "errors",
        "api-latency-2s-for-95": "latency",
        "api-latency-2s-for-99": "latency",
    }
    job = Matcher("job", "=", "samokoder-api")
    errors = by_name["api-errors"]
    assert errors.indicator == RatioIndicator(
        total=Selector("samokoder_http_requests_total", (job,)),
        good=None,
        bad=Selector("samokoder_http_requests_total", (job, Matcher("status", "=~", "5.."))),
    )
    assert errors.group_by == ()
    assert errors.labels == (("team", "platform"), ("tier", "1"))
    assert errors.description == "99 % of requests are not answered with a 5xx."
    assert by_name["api-errors-by-endpoint"].group_by == ("endpoint",)
    assert by_name["api-errors-by-endpoint"].indicator == errors.indicator
    latency = by_name["api-latency-2s-for-95"]
    assert latency.indicator == RatioIndicator(
        total=Selector("samokoder_http_request_duration_seconds_count", (job,)),
        good=Selector("samokoder_http_request_duration_seconds_bucket", (job, Matcher("le", "=~", "2|2.0"))),
        bad=None,
    )
    assert latency.description == "API answers within 2 s: 2s for 95 %"


def test_shipped_example_burn_rate_condition_becomes_an_sli_alert_next_to_the_defaults() -> None:
    errors = load_slo_file(EXAMPLE).slos[0]
    assert errors.default_alerts
    names = [rule.name for rule in errors.alerts]
    assert names[:6] == [
        "BurnRateCritical1h",
        "BurnRateCritical6h",
        "BurnRateWarning1d",
        "BurnRateWarning3d",
        "ErrorBudgetLow",
        "ErrorBudgetCritical",
    ]
    # burn rate > 14.4 over 1h  <=>  SLI over 1h < 1 - 14.4 * (1 - 0.99) = 0.856
    assert errors.alerts[-1] == AlertRule(
        "SamokoderErrorsFastBurn", "critical", SLIBelowCondition(3600, 0.856), for_seconds=300
    )
    others = load_slo_file(EXAMPLE).slos[1:]
    assert all(slo.default_alerts and len(slo.alerts) == 6 for slo in others)


def test_shipped_example_equals_the_hand_written_native_file() -> None:
    openslo, native = load_slo_file(EXAMPLE), load_slo_file(NATIVE_EQUIVALENT)
    assert native.source_format == "sloeval"
    assert openslo.service == native.service
    assert openslo.slos == native.slos
    assert requests(openslo.slos) == requests(native.slos)


def test_unsupported_example_is_refused_with_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_slo_file(UNSUPPORTED)
    assert str(info.value) == (
        f'{UNSUPPORTED}: SLO "api-p95-latency-minutes": spec.budgetingMethod: Timeslices is not supported; '
        "sloeval counts good and bad events over rolling windows: use budgetingMethod: Occurrences"
    )


def test_cli_check_reads_openslo_unchanged() -> None:
    run = [sys.executable, "-m", "sloeval", "check", "-c"]
    ok = subprocess.run([*run, str(EXAMPLE)], capture_output=True, text=True, check=False, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == f"{EXAMPLE}: ok (OpenSLO v1): 4 SLOs for service 'samokoder-api'"
    assert "SamokoderErrorsFastBurn [critical]: SLI over 1h < 85.6% for 5m" in ok.stdout
    bad = subprocess.run([*run, str(UNSUPPORTED)], capture_output=True, text=True, check=False, cwd=REPO)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
    assert 'SLO "api-p95-latency-minutes": spec.budgetingMethod' in bad.stderr


# --- translation of each feature --------------------------------------------------------------


def test_single_objective_keeps_the_slo_name_and_defaults() -> None:
    (slo,) = load(base_slo()).slos
    assert slo.name == "api-errors"
    assert slo.slo_type == "availability"
    assert slo.objective == 0.99
    assert slo.period == 30 * DAY
    assert slo.default_alerts
    assert slo.labels == ()
    assert slo.description is None


@pytest.mark.parametrize(
    ("objective", "expected"),
    [({"target": 0.999}, 0.999), ({"targetPercent": 99.9}, 0.999), ({"targetPercent": 95}, 0.95)],
)
def test_target_and_target_percent(objective: dict[str, float], expected: float) -> None:
    (slo,) = load(set_path(base_slo(), "spec.objectives", [objective])).slos
    assert slo.objective == expected


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("0.999999"), places=6))
def test_target_and_target_percent_give_the_same_objective(target: Decimal) -> None:
    as_ratio = load(set_path(base_slo(), "spec.objectives", [{"target": float(target)}])).slos[0]
    as_percent = load(set_path(base_slo(), "spec.objectives", [{"targetPercent": float(target * 100)}])).slos[0]
    assert as_ratio.objective == as_percent.objective == float(target)


@pytest.mark.parametrize(
    ("duration", "seconds"), [("28d", 28 * DAY), ("4w", 28 * DAY), ("7d", 7 * DAY), ("12h", 43200)]
)
def test_rolling_time_window_is_the_period(duration: str, seconds: int) -> None:
    (slo,) = load(set_path(base_slo(), "spec.timeWindow[0].duration", duration)).slos
    assert slo.period == seconds
    assert slo.windows[-1] == seconds


def test_missing_time_window_uses_the_default_period() -> None:
    (slo,) = load(set_path(base_slo(), "spec.timeWindow", DELETE)).slos
    assert slo.period == 30 * DAY


def test_several_objectives_become_several_slos() -> None:
    objectives = [
        {"displayName": "Good enough", "target": 0.99},
        {"targetPercent": 99.5},
        {"displayName": "Stretch  goal!", "target": 0.999},
    ]
    doc = set_path(set_path(base_slo(), "spec.objectives", objectives), "spec.description", "Not 5xx.")
    slos = load(doc).slos
    assert [(s.name, s.objective) for s in slos] == [
        ("api-errors-good-enough", 0.99),
        ("api-errors-2", 0.995),
        ("api-errors-stretch-goal", 0.999),
    ]
    assert [s.description for s in slos] == ["Not 5xx.: Good enough", "Not 5xx.", "Not 5xx.: Stretch  goal!"]
    assert len({s.indicator for s in slos}) == 1


def test_labels_annotations_and_display_name() -> None:
    doc = set_path(
        base_slo(),
        "metadata",
        {
            "name": "api-errors",
            "displayName": "API errors",
            "labels": {"team": "platform", "cost-centre": "rnd", "tags": ["auth", "api"], "env": ["prod"]},
            "annotations": {
                "sloeval/slo-type": "errors",
                "sloeval/runbook-url": "https://runbooks/api-errors",
                "sloeval/dashboard-url": "https://grafana/d/api",
                "openslo.com/service-folder": "ignored",
            },
        },
    )
    (slo,) = load(doc).slos
    assert slo.labels == (("cost_centre", "rnd"), ("env", "prod"), ("tags", "auth,api"), ("team", "platform"))
    assert slo.slo_type == "errors"
    assert slo.runbook_url == "https://runbooks/api-errors"
    assert slo.dashboard_url == "https://grafana/d/api"
    assert slo.description == "API errors"


@pytest.mark.parametrize(
    ("query", "selector", "group_by"),
    [
        ("samokoder_http_requests_total", "samokoder_http_requests_total", ()),
        (
            'samokoder_http_requests_total{job="samokoder-api"}',
            'samokoder_http_requests_total{job="samokoder-api"}',
            (),
        ),
        ("sum(samokoder_http_requests_total)", "samokoder_http_requests_total", ()),
        ("rate(samokoder_http_requests_total[5m])", "samokoder_http_requests_total", ()),
        ("increase(samokoder_http_requests_total[1h30m])", "samokoder_http_requests_total", ()),
        ("sum by (endpoint) (rate(samokoder_http_requests_total[5m]))", "samokoder_http_requests_total", ("endpoint",)),
        (
            "sum(rate(samokoder_http_requests_total[5m])) by (endpoint, method)",
            "samokoder_http_requests_total",
            ("endpoint", "method"),
        ),
        ("SUM BY(endpoint,)(samokoder_http_requests_total)", "samokoder_http_requests_total", ("endpoint",)),
        ("sum by () (samokoder_http_requests_total)", "samokoder_http_requests_total", ()),
        ("\n  sum by (endpoint) (\n    rate(\n      m{a='x'} [ 5m ]\n    )\n  )\n", 'm{a="x"}', ("endpoint",)),
        # label values that look like the syntax around them
        ('sum(rate(m{path="/a)]}[5m]", q=`"`}[5m]))', 'm{path="/a)]}[5m]", q="\\""}', ()),
        ("rate({__name__=\"m\", code!~'2..|3..'}[5m])", 'm{code!~"2..|3.."}', ()),
        ("sum(sum_total)", "sum_total", ()),
        ("rate(rate[5m])", "rate", ()),
    ],
)
def test_counter_queries(query: str, selector: str, group_by: tuple[str, ...]) -> None:
    assert parse_counter_query(query) == CounterQuery(parse_selector(selector), group_by)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("sum(rate(m[5m])) / sum(rate(n[5m]))", "unexpected '/ sum(rate(n[5m]))' at position 18"),
        ("sum without (code) (m)", "sum without (...) is not supported"),
        ("irate(m[5m])", "irate() is not supported here at position 1"),
        ("sum(sum(m))", "sum() is not supported inside sum() at position 5"),
        ("avg(m)", "avg() is not supported here"),
        ("rate(m)", "rate() needs a range such as [5m] after the selector"),
        ("rate(m[5m:1m])", "subqueries are not supported"),
        ("rate(m[$__rate_interval])", "expected a duration such as 5m in [...]"),
        ("m[5m]", "a range [...] is only accepted inside rate() or increase()"),
        ("m offset 1h", "offset and @ are not supported"),
        ("rate(m[5m] @ 1700000000)", "offset and @ are not supported"),
        ('m{a="b"', "unterminated '{'"),
        ('m{a="b}', "unterminated '{'"),
        ("", "expected a series selector"),
        ("{}", "empty selector"),
        ('m{a=~"("}', "invalid regular expression"),
        ("sum by (endpoint (m)", "expected ',' or ')' in by (...)"),
        ("sum(m) by (9x)", "expected a label name in by (...)"),
    ],
)
def test_queries_that_are_not_selectors_are_refused(query: str, fragment: str) -> None:
    with pytest.raises(QueryError) as info:
        parse_counter_query(query)
    assert fragment in str(info.value)


metric_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True).filter(lambda n: n != "__name__")
label_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
matchers = st.builds(Matcher, label_names, st.sampled_from(["=", "!="]), label_values)
TEMPLATES = [
    "{s}",
    "sum({s})",
    "rate({s}[5m])",
    "sum by ({g}) (rate({s}[5m]))",
    "sum(increase({s}[1h])) by ({g})",
    " sum by({g})(\n increase( {s} [30s] ) ) ",
]


@settings(max_examples=300, deadline=None)
@given(
    metric_names,
    st.lists(matchers, max_size=4),
    st.lists(label_names, min_size=1, max_size=3, unique=True),
    st.sampled_from(TEMPLATES),
)
def test_any_rendered_selector_reads_back(
    metric: str, matched: list[Matcher], group_by: list[str], template: str
) -> None:
    selector = Selector(metric, tuple(matched))
    query = template.format(s=selector.render(), g=", ".join(group_by))
    expected = tuple(group_by) if "{g}" in template else ()
    assert parse_counter_query(query) == CounterQuery(selector, expected)


def test_indicator_ref_data_source_service_and_list_documents() -> None:
    slo = set_path(base_slo(), "spec.indicator", DELETE)
    slo["spec"]["indicatorRef"] = "server-errors"
    source = {"metricSource": {"metricSourceRef": "prom", "spec": {"query": "sum(rate(req_total[5m]))"}}}
    bad = {"metricSource": {"metricSourceRef": "prom", "type": "Prometheus", "spec": {"query": 'req_total{c="5"}'}}}
    sli = obj("SLI", "server-errors", {"ratioMetric": {"counter": True, "bad": bad, "total": source}})
    data_source = obj("DataSource", "prom", {"type": "Prometheus", "connectionDetails": {"url": "http://x:9090"}})
    service = obj("Service", "samokoder-api", {"description": "The API."})
    # OpenSLO tools also write objects as one YAML list; both forms mix in one file.
    text = dump([service, data_source], sli, slo)
    (compiled,) = parse_slo_text(text, PATH).slos
    assert compiled.indicator == RatioIndicator(
        total=parse_selector("req_total"), good=None, bad=parse_selector('req_total{c="5"}')
    )


def test_service_without_spec_is_accepted() -> None:
    service = {"apiVersion": "openslo/v1", "kind": "Service", "metadata": {"name": "samokoder-api"}}
    assert len(load(service, base_slo()).slos) == 1


def alert_policy(condition: dict[str, Any], **policy: Any) -> dict[str, Any]:
    return {
        "kind": "AlertPolicy",
        "metadata": {"name": "page"},
        "spec": {
            "alertWhenBreaching": True,
            "conditions": [{"kind": "AlertCondition", "metadata": {"name": "fast-burn"}, "spec": condition}],
            "notificationTargets": [{"targetRef": "not-in-this-file"}],
            **policy,
        },
    }


BURN = {"severity": "page", "condition": {"kind": "burnrate", "op": "gt", "threshold": 2, "lookbackWindow": "6h"}}


@pytest.mark.parametrize(
    ("condition", "rule"),
    [
        (BURN, AlertRule("FastBurn", "critical", SLIBelowCondition(21600, 0.98))),
        (
            {"severity": "ticket", "condition": {**BURN["condition"], "op": "gte", "alertAfter": "15m"}},
            AlertRule("FastBurn", "warning", SLIBelowCondition(21600, 0.98), for_seconds=900),
        ),
        (
            {"severity": "Info", "condition": {"threshold": 6, "lookbackWindow": "1d", "alertAfter": "0m"}},
            AlertRule("FastBurn", "info", SLIBelowCondition(86400, 0.94)),
        ),
    ],
)
def test_inline_alert_policy_with_a_burn_rate_condition(condition: dict[str, Any], rule: AlertRule) -> None:
    doc = set_path(base_slo(), "spec.alertPolicies", [alert_policy(condition)])
    (slo,) = load(doc).slos
    assert slo.alerts[-1] == rule
    assert len(slo.alerts) == 7  # and the six defaults
    assert rule.windows[0] in slo.windows


def test_alert_policy_refs_and_notification_targets() -> None:
    condition = obj("AlertCondition", "errors-slow-burn", BURN)
    target = obj("AlertNotificationTarget", "oncall", {"target": "email", "description": "routing is sloeval's"})
    policy = obj(
        "AlertPolicy",
        "page",
        {
            "conditions": [{"conditionRef": "errors-slow-burn"}],
            "notificationTargets": [
                {"targetRef": "oncall"},
                {"kind": "AlertNotificationTarget", "metadata": {"name": "chat"}, "spec": {"target": "slack"}},
            ],
        },
    )
    # Early v1 tooling wrote alertPolicies as plain names; the same policy twice gives one alert.
    doc = set_path(base_slo(), "spec.alertPolicies", [{"alertPolicyRef": "page"}, "page"])
    objectives = [{"displayName": "a", "target": 0.99}, {"displayName": "b", "target": 0.995}]
    slos = load(condition, target, policy, set_path(doc, "spec.objectives", objectives)).slos
    # The SLI threshold follows each objective: 1 - 2 * (1 - 0.99) and 1 - 2 * (1 - 0.995).
    assert [slo.alerts[-1].condition for slo in slos] == [
        SLIBelowCondition(21600, 0.98),
        SLIBelowCondition(21600, 0.99),
    ]
    assert [len(slo.alerts) for slo in slos] == [7, 7]


# --- refusals: one line naming the file, the object and the field -------------------------------

SLO_ = 'slos.yaml: SLO "api-errors": '
INDICATOR = SLO_ + "spec.indicator.spec."
HINT = (
    "sloeval needs a series selector, optionally inside rate(...[5m]) or increase(...[5m]) "
    "and sum(...) or sum by (labels) (...)"
)
CALENDAR = (
    "calendar-aligned windows are not supported; sloeval evaluates rolling windows: "
    "use isRolling: true and no calendar (e.g. duration: 30d)"
)
REFUSED_SLO_FIELDS: list[tuple[str, object, str]] = [
    (
        "spec.budgetingMethod",
        "Timeslices",
        SLO_ + "spec.budgetingMethod: Timeslices is not supported; sloeval counts good and bad events over "
        "rolling windows: use budgetingMethod: Occurrences",
    ),
    (
        "spec.budgetingMethod",
        "RatioTimeslices",
        SLO_ + "spec.budgetingMethod: RatioTimeslices is not supported; sloeval counts good and bad events over "
        "rolling windows: use budgetingMethod: Occurrences",
    ),
    (
        "spec.timeWindow",
        [{"duration": "1M", "calendar": {"startTime": "2026-01-01 00:00:00", "timeZone": "UTC"}}],
        SLO_ + "spec.timeWindow[0].calendar: " + CALENDAR,
    ),
    ("spec.timeWindow[0].isRolling", False, SLO_ + "spec.timeWindow[0].isRolling: " + CALENDAR),
    (
        "spec.timeWindow[0].isRolling",
        DELETE,
        SLO_ + "spec.timeWindow[0].isRolling: required field is missing; sloeval evaluates rolling windows: "
        "isRolling: true",
    ),
    (
        "spec.timeWindow[0].duration",
        "1M",
        SLO_ + "spec.timeWindow[0].duration: 1M has no fixed length in seconds; give it in minutes, hours, days "
        "or weeks, e.g. 30d or 4w",
    ),
    (
        "spec.timeWindow[0].duration",
        "30 days",
        SLO_ + 'spec.timeWindow[0].duration: "30 days" is not a duration shorthand such as 5m, 1h, 30d or 4w',
    ),
    (
        "spec.timeWindow",
        [{"duration": "7d", "isRolling": True}, {"duration": "30d", "isRolling": True}],
        SLO_ + "spec.timeWindow: must hold exactly one window, not 2",
    ),
    (
        "spec.indicator.spec",
        {"thresholdMetric": prom("histogram_quantile(0.95, x)")},
        INDICATOR + "thresholdMetric: is not supported; sloeval computes SLIs from event counters: "
        "use ratioMetric with good or bad plus total",
    ),
    (
        "spec.indicator.spec.ratioMetric",
        {"counter": True, "rawType": "failure", "raw": prom("error_ratio")},
        INDICATOR + "ratioMetric.raw: precomputed ratios are not supported; give the good or bad and the total "
        "counters instead",
    ),
    (
        "spec.indicator.spec.ratioMetric.counter",
        False,
        INDICATOR + "ratioMetric.counter: is false; sloeval reads monotonic counters (it takes increase() over "
        "each window): set counter: true",
    ),
    (
        "spec.indicator.spec.ratioMetric.counter",
        DELETE,
        INDICATOR + "ratioMetric.counter: is missing; sloeval reads monotonic counters (it takes increase() over "
        "each window): set counter: true",
    ),
    (
        "spec.indicator.spec.ratioMetric.good",
        prom("x"),
        INDICATOR + "ratioMetric: give exactly one of good or bad next to total",
    ),
    (
        "spec.indicator.spec.ratioMetric.bad.metricSource.type",
        "Datadog",
        INDICATOR + "ratioMetric.bad.metricSource.type: Datadog is not supported; sloeval queries Prometheus "
        "(SLOEVAL_PROMETHEUS_URL) with PromQL only",
    ),
    (
        "spec.indicator.spec.ratioMetric.bad.metricSource.spec.query",
        "sum(rate(errors_total[5m])) / sum(rate(requests_total[5m]))",
        INDICATOR + 'ratioMetric.bad.metricSource.spec.query: "sum(rate(errors_total[5m])) / '
        "sum(rate(requests_total[5m]))\" is not usable (unexpected '/ sum(rate(requests_' at position 29); " + HINT,
    ),
    (
        "spec.indicator.spec.ratioMetric.bad.metricSource.spec",
        {"query": "x", "step": "1m"},
        INDICATOR + "ratioMetric.bad.metricSource.spec.step: unknown key in a Prometheus metricSource spec; "
        "allowed: query",
    ),
    (
        "spec.indicator.spec.ratioMetric.total",
        prom("sum by (endpoint) (rate(samokoder_http_requests_total[5m]))"),
        INDICATOR + "ratioMetric.total: is summed by (endpoint) but bad by (); both must keep the same labels",
    ),
    (
        "spec.objectives",
        [{"target": 0.99, "indicatorRef": "other", "compositeWeight": 1}],
        SLO_ + "spec.objectives[0].indicatorRef: composite SLOs (an indicator per objective) are not supported; "
        "give one spec.indicator or spec.indicatorRef and write each indicator as its own SLO",
    ),
    (
        "spec.objectives[0].target",
        1.5,
        SLO_ + "spec.objectives[0].target: 1.5 is not between 0 and 1 (exclusive), e.g. 0.999",
    ),
    (
        "spec.objectives[0].targetPercent",
        99.9,
        SLO_ + "spec.objectives[0]: give exactly one of target (e.g. 0.999) or targetPercent (e.g. 99.9)",
    ),
    (
        "spec.objectives",
        [{"op": "lte", "value": 2, "target": 0.99}],
        SLO_ + "spec.objectives[0].value: is compared with a thresholdMetric, which sloeval does not support; "
        "give target or targetPercent",
    ),
    (
        "spec.objectives",
        [{"target": 0.99, "timeSliceTarget": 0.95}],
        SLO_ + "spec.objectives[0].timeSliceTarget: belongs to Timeslices budgeting, which sloeval does not "
        "support; remove it",
    ),
    (
        "spec.objectives",
        [{"displayName": "Main", "target": 0.99}, {"displayName": "main!", "target": 0.995}],
        SLO_ + 'spec.objectives[1].displayName: gives the SLO name "api-errors-main" a previous objective has; '
        "give each objective its own displayName",
    ),
    (
        "spec.indicatorRef",
        "missing-sli",
        SLO_ + "spec.indicatorRef: give either indicator or indicatorRef, not both",
    ),
    (
        "spec.indicator",
        DELETE,
        SLO_ + "spec.indicator: required field is missing; give indicator (inline SLI) or indicatorRef",
    ),
    (
        "spec.colour",
        "red",
        SLO_ + "spec.colour: unknown key in an SLO spec; allowed: description, service, "
        "indicator, indicatorRef, timeWindow, budgetingMethod, objectives, alertPolicies",
    ),
    (
        "metadata.labels",
        {"tier": 1},
        SLO_ + 'metadata.labels.tier: must be a string or a non-empty list of strings (quote numbers: "1")',
    ),
    (
        "metadata.labels",
        {"cost-centre": "a", "cost.centre": "b"},
        SLO_ + "metadata.labels.cost.centre: becomes the label name 'cost_centre' like another label; "
        "rename one of them",
    ),
    (
        "metadata.annotations",
        {"sloeval/slo_type": "errors"},
        SLO_ + "metadata.annotations.sloeval/slo_type: unknown sloeval annotation; known: sloeval/slo-type, "
        "sloeval/dashboard-url, sloeval/runbook-url",
    ),
]


@pytest.mark.parametrize(("path", "value", "expected"), REFUSED_SLO_FIELDS, ids=[c[0] for c in REFUSED_SLO_FIELDS])
def test_refused_slo_fields(path: str, value: object, expected: str) -> None:
    assert error_of(dump(set_path(base_slo(), path, value))) == expected


def with_ref_sli(sli_spec: dict[str, Any], *others: dict[str, Any]) -> str:
    slo = set_path(base_slo(), "spec.indicator", DELETE)
    slo["spec"]["indicatorRef"] = "server-errors"
    return dump(*others, obj("SLI", "server-errors", sli_spec), slo)


def test_refused_referenced_objects_name_the_slo_and_the_object() -> None:
    ratio = {"counter": True, "bad": prom("e"), "total": {"metricSource": {"metricSourceRef": "cw", "spec": {}}}}
    assert error_of(with_ref_sli({"ratioMetric": ratio}, obj("DataSource", "cw", {"type": "CloudWatch"}))) == (
        'slos.yaml: SLO "api-errors" via DataSource "cw": spec.type: CloudWatch is not supported; '
        "sloeval queries Prometheus (SLOEVAL_PROMETHEUS_URL) with PromQL only"
    )
    assert error_of(with_ref_sli({"ratioMetric": {**ratio, "counter": False}})) == (
        'slos.yaml: SLO "api-errors" via SLI "server-errors": spec.ratioMetric.counter: is false; sloeval reads '
        "monotonic counters (it takes increase() over each window): set counter: true"
    )
    assert error_of(with_ref_sli({"ratioMetric": {**ratio, "total": prom("t")}}).replace("server-errors", "x", 1)) == (
        'slos.yaml: SLO "api-errors": spec.indicatorRef: no SLI named "server-errors" in this file; sloeval reads '
        "one file, so add the SLI document to it (or write it inline)"
    )
    assert error_of(with_ref_sli({"ratioMetric": ratio})) == (
        'slos.yaml: SLO "api-errors" via SLI "server-errors": spec.ratioMetric.total.metricSource.metricSourceRef: '
        'no DataSource named "cw" in this file; sloeval reads one file, so add the DataSource document to it '
        "(or write it inline)"
    )


REFUSED_ALERTS: list[tuple[dict[str, Any], dict[str, Any], str]] = [
    (
        {**BURN, "condition": {**BURN["condition"], "op": "lte"}},
        {},
        "conditions[0].spec.condition.op: lte is not supported; sloeval alerts when the burn rate rises above "
        "the threshold: use gt or gte",
    ),
    (
        {**BURN, "condition": {**BURN["condition"], "threshold": 200}},
        {},
        "conditions[0].spec.condition.threshold: a burn rate of 200 can never be reached with a 99% target "
        "(the highest is 100, when every event is bad); lower it",
    ),
    (
        {**BURN, "condition": {**BURN["condition"], "lookbackWindow": "5w"}},
        {},
        "conditions[0].spec.condition.lookbackWindow: 35d is longer than the SLO's 30d time window",
    ),
    (
        {**BURN, "condition": {**BURN["condition"], "kind": "threshold"}},
        {},
        "conditions[0].spec.condition.kind: threshold is not supported; OpenSLO v1 conditions are burnrate",
    ),
    (
        {**BURN, "severity": "sev1"},
        {},
        'conditions[0].spec.severity: "sev1" is not one of critical (or page), warning (or ticket), info; '
        "sloeval routes alerts by these severities",
    ),
    (
        BURN,
        {"alertWhenNoData": True},
        "alertWhenNoData: true is not supported; sloeval never alerts on a window without data (failing queries "
        "raise its own SLODataMissing alert): set false",
    ),
    (
        BURN,
        {"alertWhenBreaching": False},
        "alertWhenBreaching: false is not supported; sloeval alerts while a condition breaches: remove the policy",
    ),
]


@pytest.mark.parametrize(("condition", "policy", "expected"), REFUSED_ALERTS)
def test_refused_alert_policies(condition: dict[str, Any], policy: dict[str, Any], expected: str) -> None:
    doc = set_path(base_slo(), "spec.alertPolicies", [alert_policy(condition, **policy)])
    assert error_of(dump(doc)) == SLO_ + "spec.alertPolicies[0].spec." + expected


def test_refused_alert_condition_reference() -> None:
    doc = set_path(base_slo(), "spec.alertPolicies", [{"alertPolicyRef": "page"}])
    policy = obj("AlertPolicy", "page", {"conditions": [{"conditionRef": "gone"}]})
    assert error_of(dump(policy, doc)) == (
        'slos.yaml: SLO "api-errors" via AlertPolicy "page": spec.conditions[0].conditionRef: no AlertCondition '
        'named "gone" in this file; sloeval reads one file, so add the AlertCondition document to it '
        "(or write it inline)"
    )


def test_refused_file_level_problems() -> None:
    other = set_path(set_path(base_slo("checkout"), "spec.service", "checkout-api"), "metadata.name", "checkout")
    assert error_of(dump(base_slo(), other)) == (
        'slos.yaml: SLO "checkout": spec.service: "checkout-api" differs from "samokoder-api" of SLO "api-errors"; '
        "sloeval evaluates one service per file, so put each service's SLOs in its own file"
    )
    assert error_of(dump(obj("Service", "samokoder-ap", {}), base_slo())) == (
        'slos.yaml: Service "samokoder-ap": metadata.name: no SLO in this file has spec.service "samokoder-ap" '
        '(they use "samokoder-api"); sloeval evaluates one service per file: fix spec.service or move this '
        "Service to its own file"
    )
    assert error_of(dump(obj("Service", "samokoder-api", {}))) == (
        "slos.yaml: no kind: SLO document in this OpenSLO file; sloeval evaluates SLO objects"
    )
    assert error_of(dump(base_slo(), base_slo())) == (
        'slos.yaml: SLO "api-errors": metadata.name: two SLO objects are named "api-errors"; names must be unique'
    )
    assert error_of(dump(base_slo(), obj("Composite", "x", {}))) == (
        'slos.yaml: document 2 ("x"): kind: "Composite" is not an OpenSLO v1 kind; expected one of SLO, SLI, '
        "DataSource, Service, AlertPolicy, AlertCondition, AlertNotificationTarget"
    )
    assert error_of(dump(set_path(base_slo(), "apiVersion", "openslo/v2alpha"))) == (
        'slos.yaml: document 1 ("api-errors"): apiVersion: "openslo/v2alpha" is not supported; '
        "sloeval reads OpenSLO openslo/v1 only"
    )
    assert error_of(dump(base_slo(), set_path(base_slo(), "apiVersion", "openslo/v1alpha"))) == (
        'slos.yaml: document 2 ("api-errors"): apiVersion: "openslo/v1alpha" is not supported; '
        "sloeval reads OpenSLO openslo/v1 only"
    )
    assert error_of(dump([base_slo(), "just text"])) == (
        "slos.yaml: document 1 item 2: expected an OpenSLO object (a mapping with apiVersion, kind, metadata, spec)"
    )
    assert error_of(dump(set_path(base_slo(), "metadata.name", DELETE))) == (
        "slos.yaml: document 1: metadata.name: required field is missing"
    )


def test_mixed_native_and_openslo_content_is_refused() -> None:
    native = REPO / "config" / "slos.yaml"
    mixed = native.read_text() + "\n---\n" + dump(base_slo())
    assert error_of(mixed) == (
        "slos.yaml: document 1: native sloeval content (service/slos) mixed with OpenSLO documents; "
        "put the native SLOs and the OpenSLO documents in separate files"
    )
    one_mapping = dump({**base_slo(), "slos": []})
    assert error_of(one_mapping) == (
        'slos.yaml: document 1 ("api-errors"): slos: unknown key in the SLO object; allowed: apiVersion, kind, '
        "metadata, spec"
    )


def test_native_file_stays_one_document() -> None:
    text = "service: a\nslos: [{name: e, objective: 99, ratio: {bad: a, total: b}}]\n"
    assert len(parse_slo_text("---\n" + text + "---\n", PATH).slos) == 1
    assert error_of(text + "---\n" + text) == "slos.yaml: holds 2 YAML documents; a sloeval SLO file is one document"


def test_native_validation_still_applies_to_translated_slos() -> None:
    assert error_of(dump(set_path(base_slo(), "metadata.name", "api errors"))) == (
        "slos.yaml: slo \"api errors\": name: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.:-]*$'"
    )
    assert error_of(dump(set_path(base_slo(), "metadata.labels", {"service": "x"}))) == (
        "slos.yaml: slo \"api-errors\": labels: label name 'service' is reserved by sloeval"
    )


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12))
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
FUZZED_PATHS = [
    "apiVersion",
    "kind",
    "metadata",
    "metadata.name",
    "metadata.labels",
    "metadata.annotations",
    "spec",
    "spec.service",
    "spec.indicator",
    "spec.indicator.spec",
    "spec.indicator.spec.ratioMetric",
    "spec.indicator.spec.ratioMetric.counter",
    "spec.indicator.spec.ratioMetric.bad",
    "spec.indicator.spec.ratioMetric.bad.metricSource",
    "spec.indicator.spec.ratioMetric.bad.metricSource.spec.query",
    "spec.indicatorRef",
    "spec.budgetingMethod",
    "spec.timeWindow",
    "spec.timeWindow[0].duration",
    "spec.objectives",
    "spec.objectives[0]",
    "spec.objectives[0].target",
    "spec.alertPolicies",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FUZZED_PATHS), yaml_values), min_size=1, max_size=3))
def test_fuzzed_openslo_either_loads_or_gives_one_line(changes: list[tuple[str, object]]) -> None:
    document = base_slo()
    for path, value in changes:
        try:
            document = set_path(document, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed the parent
    text = dump(document)
    try:
        parse_slo_text(text, PATH)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert str(exc).startswith("slos.yaml: ")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_fuzzed_queries_either_parse_or_raise_query_error(query: str) -> None:
    try:
        parsed = parse_counter_query(query)
    except QueryError:
        return
    assert parse_selector(parsed.selector.render()) == parsed.selector


def test_quote_round_trip_in_a_query() -> None:
    value = 'a"}])\\`\n'
    selector = Selector("m", (Matcher("path", "=", value),))
    assert parse_counter_query(f"sum by (x) (rate({selector.render()}[5m]))").selector == selector
    assert quote(value) in selector.render()
