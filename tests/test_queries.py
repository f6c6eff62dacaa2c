import re
from pathlib import Path

import anyio

from sloeval.config.slo_file import SLODefinition, parse_slo_text
from sloeval.prometheus.results import QueryResult
from sloeval.promql.buckets import le_values
from sloeval.promql.expressions import part_expressions
from sloeval.promql.plan import QueryPlan, pack, request_promql
from sloeval.slo.evaluator import Evaluator

PATH = Path("slos.yaml")


def one_slo(body: str, period: str = "30d"):  # type: ignore[no-untyped-def]
    text = f"service: api\nperiod: {period}\nslos:\n" + "".join("  " + line + "\n" for line in body.splitlines())
    return parse_slo_text(text, PATH).slos[0]


class Recorder:
    """A Prometheus stand-in keeping the PromQL of every request it is sent; it answers nothing."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    async def query(self, promql: str, at: float) -> QueryResult:
        self.requests.append(promql)
        return QueryResult(())


def sent(slo: SLODefinition) -> list[str]:
    """The requests an evaluation of ``slo`` actually sends (as eval, run and check --online do)."""
    recorder = Recorder()
    anyio.run(Evaluator([slo], recorder).evaluate, 0.0)
    return recorder.requests


def test_ratio_query_tags_every_window_and_part() -> None:
    slo = one_slo("- name: e\n  objective: 99\n  ratio: {bad: 'r{code=~\"5..\"}', total: r, group_by: [ep]}")
    plan = QueryPlan([slo])
    (slo_plan,) = plan.slo_plans
    (request,) = pack(plan.expressions)  # every part of every window in one request
    (promql,) = sent(slo)
    assert promql == request_promql(request)
    tags = re.findall(r'"sloeval_series", "(e[0-9]+)"', promql)
    parts = [(p.part, p.window_name) for p in slo_plan.parts]
    assert parts == [(part, w) for w in slo.window_names for part in ("bad", "total")]
    assert tags == [p.expression.key for p in slo_plan.parts]
    assert 'sum by (ep) (increase(r{code=~"5.."}[5m]))' in promql
    assert "sum by (ep) (increase(r[30d]))" in promql
    assert promql.count("\nor ") == len(tags) - 1


def test_ungrouped_sum_keeps_no_labels() -> None:
    slo = one_slo("- name: e\n  objective: 99\n  ratio: {good: g, total: t}")
    assert part_expressions(slo, 300) == [
        ("good", "sum by () (increase(g[5m]))"),
        ("total", "sum by () (increase(t[5m]))"),
    ]


def test_latency_matches_go_and_python_bucket_labels() -> None:
    slo = one_slo("- name: l\n  objective: 95\n  latency: {histogram: 'h{job=\"api\"}', threshold_seconds: 2}")
    (good, total) = part_expressions(slo, 3600)
    assert good == ("good", 'sum by () (increase(h_bucket{job="api", le=~"2|2\\\\.0"}[1h]))')
    assert total == ("total", 'sum by () (increase(h_count{job="api"}[1h]))')


def test_le_values_cover_exporters() -> None:
    assert le_values(2) == ["2", "2.0"]
    assert le_values(0.25) == ["0.25"]
    assert "1e+06" in le_values(1_000_000)
    assert "1000000.0" in le_values(1_000_000)


def test_uptime_counts_samples() -> None:
    slo = one_slo("- name: u\n  objective: 99.9\n  uptime: {selector: 'up{job=\"api\"}'}")
    assert part_expressions(slo, 300) == [
        ("good", 'sum by () (sum_over_time(up{job="api"}[5m]))'),
        ("total", 'sum by () (count_over_time(up{job="api"}[5m]))'),
    ]


def test_raw_substitutes_window_inside_parentheses() -> None:
    slo = one_slo("- name: r\n  objective: 99\n  raw: {error_ratio: 'sum(rate(e[$window])) / sum(rate(t[$window]))'}")
    assert part_expressions(slo, 1800) == [("error_ratio", "(sum(rate(e[30m])) / sum(rate(t[30m])))")]


def test_hostile_label_value_stays_a_label_value() -> None:
    hostile = r"x\"} or vector(1) or m{a=\""
    slo = one_slo(f"- name: h\n  objective: 99\n  ratio: {{bad: 'm{{a=\"{hostile}\"}}', total: m}}")
    (promql,) = sent(slo)
    assert "} or vector(1)" not in promql.replace('\\"} or vector(1)', "")
    assert 'm{a="x\\"} or vector(1) or m{a=\\""}' in promql
