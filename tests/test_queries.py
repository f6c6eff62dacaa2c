import re
from pathlib import Path

import anyio

from sloeval.config.slo_file import SLODefinition, parse_slo_text
from sloeval.prometheus.results import QueryResult
from sloeval.promql.buckets import bounds_query, le_matcher, match_bounds
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


def test_latency_matches_the_discovered_bucket_labels() -> None:
    slo = one_slo("- name: l\n  objective: 95\n  latency: {histogram: 'h{job=\"api\"}', threshold_seconds: 2}")
    (good, total) = part_expressions(slo, 3600, le=("2", "2.0"))
    assert good == ("good", 'sum by () (increase(h_bucket{job="api", le=~"2|2\\\\.0"}[1h]))')
    assert total == ("total", 'sum by () (increase(h_count{job="api"}[1h]))')
    (good, _) = part_expressions(slo, 3600, le=("2",))
    assert good == ("good", 'sum by () (increase(h_bucket{job="api", le="2"}[1h]))')


#: Go's prometheus.LinearBuckets(0.1, 0.1, 5), as client_golang writes the bounds.
GO_LINEAR = ["0.1", "0.2", "0.30000000000000004", "0.4", "0.5", "+Inf"]


def test_a_bound_written_with_float_noise_matches_its_threshold() -> None:
    assert match_bounds(GO_LINEAR, 0.3).strings == ("0.30000000000000004",)
    assert match_bounds(["0.7999999999999999", "0.8"], 0.8).strings == ("0.7999999999999999", "0.8")
    # Every spelling of the bound that Prometheus reports is matched, and only those.
    assert match_bounds(["1", "2", "2.0", "2e+00", "+Inf", "20"], 2).strings == ("2", "2.0", "2e+00")
    assert match_bounds(["1e+06", "1000000.0", "999999"], 1_000_000).strings == ("1000000.0", "1e+06")


def test_no_bound_at_the_threshold_names_the_bounds_found() -> None:
    match = match_bounds([*reversed(GO_LINEAR), "junk", ""], 0.35)
    assert match.strings == ()
    assert match.bounds == tuple(GO_LINEAR)  # by value, as reported, unreadable ones left out
    assert match_bounds([], 0.3).bounds == ()
    assert match_bounds(["0.3000001"], 0.3).strings == ()  # close is not equal


def test_le_matcher_is_exact() -> None:
    assert le_matcher(["0.30000000000000004"]).render() == 'le="0.30000000000000004"'
    regex = le_matcher(["1e+06", "1000000.0"]).value
    assert regex == "1e\\+06|1000000\\.0"
    assert [re.fullmatch(regex, text) is not None for text in ("1e+06", "1000000.0", "1e+060", "1000000x0")] == [
        True,
        True,
        False,
        False,
    ]


def test_latency_slo_waits_for_its_bucket_bounds_then_reads_the_exact_label() -> None:
    slo = one_slo("- name: l\n  objective: 95\n  latency: {histogram: 'h{job=\"api\"}', threshold_seconds: 0.3}")
    query = bounds_query(slo)
    assert query == 'group by (le) (last_over_time(h_bucket{job="api"}[30d:1h]) or h_bucket{job="api"})'
    waiting = QueryPlan([slo])
    assert waiting.bucket_queries == (query,)
    assert waiting.expressions == ()  # nothing asked before the bounds are known: never a 0 SLI
    assert waiting.slo_plans[0].blocked == 'bucket bounds of h_bucket{job="api"} not yet known'
    plan = QueryPlan([slo], bucket_bounds={query: GO_LINEAR})
    assert plan.bucket_queries == ()  # resolved: not asked again
    assert plan.slo_plans[0].blocked is None
    assert 'h_bucket{job="api", le="0.30000000000000004"}[5m]' in plan.expressions[0].promql
    off = one_slo("- name: l\n  objective: 95\n  latency: {histogram: 'h{job=\"api\"}', threshold_seconds: 0.35}")
    missing = QueryPlan([off], bucket_bounds={query: GO_LINEAR})
    assert missing.expressions == ()
    assert missing.bucket_queries == (query,)  # asked again until the bound shows up
    assert missing.slo_plans[0].blocked == (
        'threshold_seconds 0.35 is not a bucket bound of h_bucket{job="api"}; '
        "bounds: 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, +Inf"
    )
    # No bucket series at all: no data, as a selector without series (not stale), and asked again.
    empty = QueryPlan([slo], bucket_bounds={query: []})
    assert (empty.slo_plans[0].blocked, empty.slo_plans[0].parts, empty.bucket_queries) == (None, (), (query,))
    assert empty.slo_plans[0].no_data == 'no histogram buckets for h_bucket{job="api"} in the last 30d'


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
