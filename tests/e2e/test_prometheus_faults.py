"""``sloeval run`` keeps working through Prometheus faults: a real Prometheus behind
``devtools.fault_proxy.FaultProxy`` that refuses, hangs, errors, warns and answers odd shapes.

Every scrape taken here is also checked for one invariant: an SLO marked stale has no
budget, burn-rate or SLI series (last good values are never presented as fresh).
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.fault_proxy import FaultProxy
from devtools.telegram_stub import BotApiStub
from sloeval.config.settings import Settings
from sloeval.config.slo_file import LatencyIndicator, parse_slo_text
from sloeval.promql.buckets import bounds_query
from sloeval.promql.plan import QueryPlan, pack
from tests.e2e import dataset
from tests.e2e.conftest import run_sloeval, samples, sloeval_env

pytestmark = pytest.mark.e2e

Metrics = dict[str, list[tuple[dict[str, str], float]]]

#: The session's SLO file with a 1-day period: the same SLO kinds and data, but queries about ten
#: times cheaper than over 30 days, so that a loaded machine still meets the 0.9 s cycle deadline
#: of the 1 s cadence (with 30 days, healthy cycles went "partial" under load and tests flaked).
LIGHT_SLO_FILE = dataset.SLO_FILE.replace("\nperiod: 30d\n", "\nperiod: 1d\n")
PERIOD = "1d"
SLOS: list[str] = [slo["name"] for slo in yaml.safe_load(LIGHT_SLO_FILE)["slos"]]
#: Query timeout 1 s, unready after 2 failed cycles, every request in flight at once, every window
#: asked every cycle (so that each cycle sends the same requests).
FAST = {
    "SLOEVAL_QUERY_TIMEOUT": "1",
    "SLOEVAL_READY_MAX_FAILED_CYCLES": "2",
    "SLOEVAL_QUERY_CONCURRENCY": "16",
    "SLOEVAL_LONG_WINDOW_REFRESH": "0",
}
_LIGHT_SLOS = parse_slo_text(LIGHT_SLO_FILE, Path("slos.yaml"), min_window=1).slos
#: The `le` strings of the dataset's histograms (tests/e2e/dataset.py), as the bucket discovery finds them.
BUCKET_LE = {"go_latency_seconds": ["0.5", "1", "2", "+Inf"], "py_latency_seconds": ["0.5", "1.0", "2.0", "+Inf"]}
BUCKET_BOUNDS = {
    bounds_query(slo): BUCKET_LE[slo.indicator.histogram.metric or ""]
    for slo in _LIGHT_SLOS
    if isinstance(slo.indicator, LatencyIndicator)
}
#: The packed requests of one cycle (sloeval.promql.plan), and the terms of the first one: when
#: Prometheus rejects every request, that one is split into single terms as a probe.
_PACKED = pack(QueryPlan(_LIGHT_SLOS, bucket_bounds=BUCKET_BOUNDS).expressions)
REQUESTS = len(_PACKED)
PROBE = len(_PACKED[0])
#: Until the latency SLOs' bucket bounds are known (a Prometheus failing from the start), a cycle
#: sends the packed requests of the other SLOs and one bounds query per histogram.
_WAITING = QueryPlan(_LIGHT_SLOS)
PACKED_WAITING = len(pack(_WAITING.expressions))
BOUNDS_QUERIES = len(_WAITING.bucket_queries)
PROBE_WAITING = len(pack(_WAITING.expressions)[0])
VALUE_FAMILIES = (
    "samokoder_error_budget_remaining_percent",
    "samokoder_error_budget_burn_rate",
    "samokoder_slo_sli_ratio",
    "samokoder_availability_slo_current",
)


@pytest.fixture(scope="module")
def slo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert "\nperiod: 1d\n" in LIGHT_SLO_FILE
    path = tmp_path_factory.mktemp("faults-config") / "slos.yaml"
    path.write_text(LIGHT_SLO_FILE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def healthy(prometheus: Any, slo_file: Path) -> dict[str, Any]:
    """``sloeval eval --format json`` straight from Prometheus, no proxy: what a healthy cycle gives."""
    result = run_sloeval(["eval", "--format", "json", "-c", str(slo_file)], sloeval_env(prometheus.url))
    assert result.returncode == 0, result.stdout + result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.fixture(scope="module")
def budget_slos(healthy: dict[str, Any]) -> set[str]:
    """The SLOs that have a budget gauge on the backfilled data (not ``idle``: no traffic)."""
    slos = {r["slo"] for r in healthy["results"] if r["error_budget_remaining_percent"] is not None}
    assert "idle" not in slos
    assert len(slos) >= 5
    return slos


@pytest.fixture
def proxy(prometheus: Any) -> Iterator[FaultProxy]:
    with FaultProxy(prometheus.url) as fault_proxy:
        yield fault_proxy


# --- helpers ------------------------------------------------------------------------------


def scrape(daemon: Any) -> Metrics:
    """/metrics, parsed, after checking that no stale SLO shows values."""
    response = daemon.get("/metrics")
    assert response.status_code == 200
    metrics = samples(response.text)
    stale = {labels["slo"] for labels, value in metrics.get("sloeval_slo_data_stale", []) if value == 1.0}
    for family in VALUE_FAMILIES:
        shown = {labels["slo"] for labels, _ in metrics.get(family, [])} & stale
        assert not shown, f"{family} still exported for stale SLOs {shown}"
    return metrics


def wait_scrape(daemon: Any, predicate: Callable[[Metrics], bool], what: str, timeout: float = 15) -> Metrics:
    deadline = time.monotonic() + timeout
    while True:
        assert daemon.process.poll() is None, daemon.log()
        metrics = scrape(daemon)
        if predicate(metrics):
            return metrics
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last scrape: {stale_of(metrics)}\n{daemon.log()}")
        time.sleep(0.1)


def stale_of(metrics: Metrics) -> dict[str, float]:
    return {labels["slo"]: value for labels, value in metrics.get("sloeval_slo_data_stale", [])}


def all_stale(metrics: Metrics) -> bool:
    return stale_of(metrics) == dict.fromkeys(SLOS, 1.0)


def none_stale(metrics: Metrics) -> bool:
    return stale_of(metrics) == dict.fromkeys(SLOS, 0.0)


def budgets(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (labels["slo"], labels.get("endpoint", "")): value
        for labels, value in metrics.get("samokoder_error_budget_remaining_percent", [])
    }


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    return sum(v for lab, v in metrics.get(name, []) if all(lab.get(k) == w for k, w in labels.items()))


def cycles(daemon: Any, since: float = 0.0) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if e["event"] == "evaluation_cycle" and e["evaluated_at"] >= since]


def wait_cycles(daemon: Any, count: int, since: float, timeout: float = 15) -> list[dict[str, Any]]:
    """Wait until ``count`` cycles that started after ``since`` have finished."""
    deadline = time.monotonic() + timeout
    while len(done := cycles(daemon, since)) < count:
        assert daemon.process.poll() is None, daemon.log()
        assert time.monotonic() < deadline, f"fewer than {count} cycles after {since}\n{daemon.log()}"
        time.sleep(0.1)
    return done


def requests_per_cycle(proxy: FaultProxy, finished: list[dict[str, Any]]) -> list[collections.Counter[str]]:
    """For each finished cycle: how often each query was sent (the pinned ``time`` tells cycles apart)."""
    by_time: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for request in proxy.recorded:
        by_time[request.time or ""][request.query or ""] += 1
    return [by_time[f"{cycle['evaluated_at']:.3f}"] for cycle in finished]


def failures(daemon: Any) -> list[dict[str, Any]]:
    return [e for e in daemon.events() if e["event"] == "slo_query_failed"]


# --- connection refused -------------------------------------------------------------------


def test_refused_at_start_then_accepted(
    proxy: FaultProxy, slo_file: Path, daemon_factory: Any, budget_slos: set[str]
) -> None:
    proxy.refuse()
    daemon = daemon_factory(proxy.url, slo_file, **FAST)
    assert daemon.wait_for("/healthz", 200).text == "ok\n"
    metrics = wait_scrape(daemon, all_stale, "every SLO stale")
    assert daemon.get("/readyz").status_code == 503
    assert daemon.get("/readyz").text == "no successful evaluation yet\n"
    for family in VALUE_FAMILIES:
        assert family not in metrics
    assert "sloeval_last_evaluation_success_timestamp_seconds" not in metrics
    assert counter(metrics, "sloeval_prometheus_queries_total", outcome="connect_error") > 0
    assert counter(metrics, "sloeval_prometheus_queries_total", outcome="success") == 0
    assert counter(metrics, "sloeval_evaluation_cycles_total", outcome="failed") >= 1
    assert proxy.requests == 0  # refused by the kernel, never reached the proxy

    proxy.accept()
    daemon.wait_for("/readyz", 200)
    metrics = wait_scrape(daemon, none_stale, "no SLO stale")
    assert {slo for slo, _ in budgets(metrics)} == budget_slos
    assert counter(metrics, "sloeval_prometheus_queries_total", outcome="success") >= REQUESTS
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def test_refused_mid_run_withdraws_values_then_recovers(
    proxy: FaultProxy, slo_file: Path, daemon_factory: Any, budget_slos: set[str]
) -> None:
    daemon = daemon_factory(proxy.url, slo_file, **FAST)
    daemon.wait_for("/readyz", 200)
    before = budgets(wait_scrape(daemon, none_stale, "no SLO stale"))
    assert {slo for slo, _ in before} == budget_slos
    last_success = scrape(daemon)["sloeval_last_evaluation_success_timestamp_seconds"][0][1]

    proxy.refuse()
    refused_at = time.time()
    metrics = wait_scrape(daemon, all_stale, "every SLO stale after refuse")
    for family in VALUE_FAMILIES:  # withdrawn, not the last good values
        assert family not in metrics, family
    # Unready only after SLOEVAL_READY_MAX_FAILED_CYCLES (2) failed cycles in a row.
    assert daemon.wait_for("/readyz", 503, timeout=10).text.endswith("evaluation cycles failed in a row\n")
    failed = [c for c in cycles(daemon, refused_at) if c["outcome"] == "failed"]
    assert len(failed) >= 2
    assert all(sorted(c["stale_slos"]) == sorted(SLOS) for c in failed)
    metrics = scrape(daemon)
    assert metrics["sloeval_last_evaluation_success_timestamp_seconds"][0][1] <= refused_at
    assert metrics["sloeval_last_evaluation_success_timestamp_seconds"][0][1] >= last_success
    assert counter(metrics, "sloeval_prometheus_queries_total", outcome="connect_error") > 0
    errors = {e["error"] for e in failures(daemon)}
    assert any(error.startswith("cannot connect to Prometheus") for error in errors), errors

    proxy.accept()
    daemon.wait_for("/readyz", 200)
    after = budgets(wait_scrape(daemon, none_stale, "no SLO stale after accept"))
    assert after == pytest.approx(before, rel=1e-2, abs=0.1)  # the windows slid on by a few seconds
    assert daemon.stop() == 0


# --- a Prometheus that does not answer ----------------------------------------------------


def test_hang_keeps_cadence_and_marks_stale(proxy: FaultProxy, slo_file: Path, daemon_factory: Any) -> None:
    daemon = daemon_factory(proxy.url, slo_file, **FAST)
    daemon.wait_for("/readyz", 200)
    proxy.set_hang(30)
    done = wait_cycles(daemon, 4, time.time())
    metrics = wait_scrape(daemon, all_stale, "every SLO stale while hanging")
    stamps = [c["evaluated_at"] for c in done]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(abs(gap - 1.0) < 0.25 for gap in gaps), gaps  # the 1 s grid holds
    assert all(c["outcome"] == "failed" and c["duration_seconds"] < 1.0 for c in done), done
    assert daemon.wait_for("/readyz", 503).text.endswith("evaluation cycles failed in a row\n")
    for family in VALUE_FAMILIES:
        assert family not in metrics
    assert proxy.counts["hang"] >= 4 * REQUESTS  # every cycle asked again
    unfinished = [e for e in daemon.events() if e["event"] == "slo_query_unfinished"]
    assert {e["slo"] for e in unfinished} == set(SLOS)
    proxy.set_pass()
    daemon.wait_for("/readyz", 200)
    wait_scrape(daemon, none_stale, "no SLO stale after the hang")
    assert daemon.stop() == 0


def test_hang_past_query_timeout_counts_timeouts(proxy: FaultProxy, slo_file: Path, daemon_factory: Any) -> None:
    # A 2 s cadence, so that the 1 s query timeout ends before the cycle deadline (0.9 x 2 s) does.
    daemon = daemon_factory(proxy.url, slo_file, **{**FAST, "SLOEVAL_EVAL_INTERVAL": "2"})
    daemon.wait_for("/readyz", 200)
    failures_before = len(failures(daemon))
    proxy.set_hang(30)
    done = wait_cycles(daemon, 3, time.time())
    metrics = wait_scrape(daemon, all_stale, "every SLO stale while hanging")
    timeouts = counter(metrics, "sloeval_prometheus_queries_total", outcome="timeout")
    assert timeouts >= 3 * REQUESTS
    stamps = [c["evaluated_at"] for c in done]
    assert all(abs(b - a - 2.0) < 0.25 for a, b in itertools.pairwise(stamps)), stamps
    assert all(c["outcome"] == "failed" and 1.0 <= c["duration_seconds"] < 1.8 for c in done), done
    for sent in requests_per_cycle(proxy, done):  # a client-side timeout is not retried
        assert list(sent.values()) == [1] * REQUESTS
    late = failures(daemon)[failures_before:]
    assert {e["slo"] for e in late} == set(SLOS)
    assert all(e["error"] == "no answer within the query timeout of 1s" for e in late), late
    wait_cycles(daemon, 4, done[0]["evaluated_at"])
    assert counter(scrape(daemon), "sloeval_prometheus_queries_total", outcome="timeout") > timeouts
    assert daemon.stop() == 0


def test_hang_counts_timeouts_when_query_timeout_exceeds_cycle_deadline(
    proxy: FaultProxy, slo_file: Path, daemon_factory: Any
) -> None:
    proxy.set_hang(30)
    daemon = daemon_factory(proxy.url, slo_file, **FAST)  # query timeout 1 s > cycle deadline 0.9 s
    wait_cycles(daemon, 3, 0)
    metrics = wait_scrape(daemon, all_stale, "every SLO stale while hanging")
    sent = sum(counter(metrics, "sloeval_prometheus_queries_total", outcome=o) for o in ("success", "error", "timeout"))
    refused = counter(metrics, "sloeval_prometheus_queries_total", outcome="connect_error")
    assert sent + refused >= 3 * (PACKED_WAITING + BOUNDS_QUERIES)  # hanging from the start: no bounds known


def test_fractional_query_timeout_is_accepted_by_prometheus(
    proxy: FaultProxy, slo_file: Path, daemon_factory: Any
) -> None:
    # Prometheus durations take no fractions: "0.5s" is bad_data, so it must be sent as "500ms".
    daemon = daemon_factory(proxy.url, slo_file, **{**FAST, "SLOEVAL_QUERY_TIMEOUT": "0.5"})
    daemon.wait_for("/readyz", 200, timeout=10)
    rejected = [e for e in failures(daemon) if e["error_type"] == "bad_data"]
    assert not rejected, rejected[:1]


# --- Prometheus error answers -------------------------------------------------------------

ERRORS = {
    "503-timeout": (503, '{"status":"error","errorType":"timeout","error":"query timed out"}', "application/json"),
    "422-execution": (
        422,
        '{"status":"error","errorType":"execution","error":"query processing would load too many samples"}',
        "application/json",
    ),
    "400-bad_data": (
        400,
        '{"status":"error","errorType":"bad_data","error":"invalid parameter \\"query\\": parse error"}',
        "application/json",
    ),
    "502-html": (502, "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", "text/html"),
}


@pytest.mark.parametrize(
    ("case", "retried", "error_start"),
    [
        ("503-timeout", True, "timeout: query timed out"),
        ("422-execution", False, "execution: query processing would load too many samples"),
        ("400-bad_data", False, 'bad_data: invalid parameter "query": parse error'),
        ("502-html", True, "HTTP 502 with a non-JSON body: <html><head><title>502 Bad Gateway"),
    ],
)
def test_error_answers_are_retried_only_when_it_can_help(
    case: str, retried: bool, error_start: str, proxy: FaultProxy, slo_file: Path, daemon_factory: Any
) -> None:
    code, body, content_type = ERRORS[case]
    proxy.set_status(code, body, content_type)
    daemon = daemon_factory(proxy.url, slo_file, **FAST)
    done = wait_cycles(daemon, 3, 0)
    metrics = wait_scrape(daemon, all_stale, "every SLO stale")
    assert daemon.wait_for("/readyz", 503).status_code == 503
    for family in VALUE_FAMILIES:
        assert family not in metrics

    # Failing from the start, the bucket bounds are never known: the latency SLOs' bounds are asked
    # every cycle, their good and total never.
    for sent in requests_per_cycle(proxy, done):
        bounds = [query for query in sent if query.startswith("group by (le)")]
        assert len(bounds) == BOUNDS_QUERIES
        if retried:
            assert len(sent) == PACKED_WAITING + BOUNDS_QUERIES, "every request is sent each cycle"
            assert all(n >= 2 for n in sent.values()), sent.values()  # SLOEVAL_QUERY_ATTEMPTS defaults to 3
        else:  # not retried; one request is split into its terms to see whether one was at fault
            packed = [query for query in sent if "\nor " in query]
            assert len(packed) == PACKED_WAITING
            assert len(sent) - PACKED_WAITING - BOUNDS_QUERIES <= PROBE_WAITING  # the probe (the deadline may cut it)
            assert set(sent.values()) == {1}
    assert counter(metrics, "sloeval_prometheus_queries_total", outcome="error") >= REQUESTS
    assert counter(metrics, "sloeval_prometheus_queries_total", outcome="success") == 0

    logged = failures(daemon)
    unfinished = {e["slo"] for e in daemon.events() if e["event"] == "slo_query_unfinished"}
    if retried:  # three attempts with backoff may outlast the 0.9 s cycle deadline: then it is "unfinished"
        assert logged
        assert {e["slo"] for e in logged} | unfinished == set(SLOS)
    else:
        assert {e["slo"] for e in logged} == set(SLOS)
        assert not unfinished
    assert all(e["error"].startswith(error_start) for e in logged), {e["error"] for e in logged}
    assert all(e["status_code"] == code for e in logged)
    assert all(e["error_type"] == (None if case == "502-html" else case.split("-")[1]) for e in logged)
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def test_one_broken_slo_does_not_make_the_daemon_unready(
    proxy: FaultProxy, slo_file: Path, daemon_factory: Any
) -> None:
    proxy.set_status(400, ERRORS["400-bad_data"][1], match="go_latency_seconds")
    daemon = daemon_factory(proxy.url, slo_file, **FAST)
    done = wait_cycles(daemon, 3, 0)
    assert all(c["outcome"] == "partial" and c["stale_slos"] == ["go-latency"] for c in done), done
    assert daemon.get("/readyz").status_code == 200, daemon.get("/readyz").text


# --- warnings and odd answers -------------------------------------------------------------

WARNING = 'PromQL info: metric might not be a counter, name does not end in _total/_sum/_count: "up"'


def test_warnings_keep_the_numbers_and_are_logged(
    proxy: FaultProxy, slo_file: Path, daemon_factory: Any, budget_slos: set[str]
) -> None:
    proxy.set_warnings([WARNING])
    daemon = daemon_factory(proxy.url, slo_file, **FAST)
    daemon.wait_for("/readyz", 200)
    metrics = wait_scrape(daemon, none_stale, "no SLO stale")
    wait_cycles(daemon, 2, 0)
    assert {slo for slo, _ in budgets(metrics)} == budget_slos
    assert proxy.counts["warnings"] >= REQUESTS
    assert daemon.stop() == 0
    logged = [e for e in daemon.events() if e["event"] == "prometheus_warning"]
    assert len(logged) >= REQUESTS
    assert all(e["warning"] == WARNING for e in logged)
    assert {e["query"] for e in logged} == {r.query for r in proxy.recorded}
    first, second = requests_per_cycle(proxy, cycles(daemon)[:2])
    assert sum(query.startswith("group by (le)") for query in first) == BOUNDS_QUERIES
    steady = second  # the bucket bounds are asked only in the first cycle
    assert len(steady) == REQUESTS
    assert not any(query.startswith("group by (le)") for query in steady)


@pytest.mark.parametrize(
    ("data", "match", "slo", "result_type"),
    [
        (
            {"resultType": "matrix", "result": [{"metric": {"sloeval_series": "good:5m"}, "values": [[1, "1"]]}]},
            "go_latency_seconds",
            "go-latency",
            "matrix",
        ),
        ({"resultType": "string", "result": [1, "hello"]}, "py_latency_seconds", "py-latency", "string"),
    ],
)
def test_unexpected_result_type_marks_only_that_slo_stale(
    data: dict[str, Any],
    match: str,
    slo: str,
    result_type: str,
    proxy: FaultProxy,
    slo_file: Path,
    daemon_factory: Any,
    budget_slos: set[str],
) -> None:
    proxy.set_odd(data, match=match)
    daemon = daemon_factory(proxy.url, slo_file, **FAST)
    done = wait_cycles(daemon, 3, 0)
    metrics = wait_scrape(daemon, lambda m: stale_of(m) == {s: float(s == slo) for s in SLOS}, f"only {slo} stale")
    assert {s for s, _ in budgets(metrics)} == budget_slos - {slo}
    assert all(c["outcome"] == "partial" and c["stale_slos"] == [slo] for c in done)
    assert counter(metrics, "sloeval_evaluation_cycles_total", outcome="partial") >= 3
    logged = failures(daemon)
    assert {e["slo"] for e in logged} == {slo}
    assert all(e["error"] == f"unexpected result type {result_type!r} (expected a vector)" for e in logged)
    odd = collections.Counter((r.time, r.query) for r in proxy.recorded if r.mode == "odd")
    assert set(odd.values()) == {1}  # not retried (the packed request is split into its terms instead)
    assert {f"{c['evaluated_at']:.3f}" for c in done} <= {at for at, _ in odd}
    assert daemon.stop() == 0


#: Which part (good, bad, total, error_ratio) each expression stands for, for the daemon's 1 s
#: cadence and for `sloeval eval`'s default interval (their windows differ).
#: The odd answers give both histograms the bounds "2" and "2.0" (their SLOs' threshold).
ODD_LE = ("2", "2.0")
PART_OF = {
    part.expression.promql: part.part
    for min_window in (1, Settings.model_fields["eval_interval"].default)
    for slos in [parse_slo_text(LIGHT_SLO_FILE, Path("slos.yaml"), min_window=min_window).slos]
    for plan in QueryPlan(
        slos, bucket_bounds={bounds_query(s): ODD_LE for s in slos if isinstance(s.indicator, LatencyIndicator)}
    ).slo_plans
    for part in plan.parts
}
TERM = re.compile(r'label_replace\((.*), "sloeval_series", "(e\d+)", "", ""\)')


def _vector(values: dict[str, list[str]]) -> Callable[[str], dict[str, Any]]:
    """Answers for every term of a request, each tagged once per value given for its part."""

    def answer(query: str) -> dict[str, Any]:
        if query.startswith("group by (le) "):  # a latency SLO's bucket bounds
            return {"resultType": "vector", "result": [{"metric": {"le": le}, "value": [1, "1"]} for le in ODD_LE]}
        terms = [TERM.fullmatch(line.removeprefix("or ")) for line in query.split("\n")]
        result = [
            {"metric": {"sloeval_series": term.group(2), "endpoint": "/odd"}, "value": [1, value]}
            for term in terms
            if term is not None
            for value in values.get(PART_OF[term.group(1)], [])
        ]
        return {"resultType": "vector", "result": result}

    return answer


ODD_NUMBERS = {
    "huge": _vector({"bad": ["1e308"], "good": ["1e308"], "total": ["1e-308"], "error_ratio": ["1e308"]}),
    "overflow": _vector(
        {"bad": ["-1e308"], "good": ["1e309"], "total": ["1.7976931348623157e308"], "error_ratio": ["-1e308"]}
    ),
    "inf": _vector({"bad": ["+Inf"], "good": ["-Inf"], "total": ["+Inf"], "error_ratio": ["+Inf"]}),
    "nan": _vector({"bad": ["NaN"], "good": ["NaN"], "total": ["NaN"], "error_ratio": ["NaN"]}),
    "inf-bad": _vector({"bad": ["+Inf"], "good": ["+Inf"], "total": ["1000"], "error_ratio": ["-Inf"]}),
    "duplicates": _vector(
        {"bad": ["10", "900"], "good": ["990", "5"], "total": ["1000", "1"], "error_ratio": ["0.01", "0.9"]}
    ),
}


def _finite_json(text: str) -> Any:
    def reject(constant: str) -> Any:
        raise AssertionError(f"{constant} in JSON output")

    document = json.loads(text, parse_constant=reject)

    def walk(node: Any) -> None:
        if isinstance(node, float):
            assert math.isfinite(node)
        elif isinstance(node, dict):
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(document)
    return document


def test_odd_numbers_never_crash_nor_leak_nan_or_inf(proxy: FaultProxy, slo_file: Path, daemon_factory: Any) -> None:
    proxy.set_odd(ODD_NUMBERS["huge"])
    daemon = daemon_factory(proxy.url, slo_file, **FAST)
    env = sloeval_env(proxy.url, SLOEVAL_SLO_FILE=str(slo_file), SLOEVAL_QUERY_TIMEOUT="5")
    for name, data in ODD_NUMBERS.items():
        proxy.set_odd(data)
        switched = time.time()
        result = run_sloeval(["eval", "--format", "json"], env, timeout=30)
        assert result.returncode in (0, 1), f"{name}: exit {result.returncode}\n{result.stderr}"
        assert "Traceback" not in result.stderr, f"{name}:\n{result.stderr}"
        document = _finite_json(result.stdout)
        assert {r["slo"] for r in document["results"]} | {e["slo"] for e in document.get("errors", [])} <= set(SLOS)
        wait_cycles(daemon, 1, switched + 0.01)
        metrics = scrape(daemon)
        for family in VALUE_FAMILIES:
            assert all(math.isfinite(v) for _, v in metrics.get(family, [])), (name, family)
        if name == "duplicates":  # the first of two series with the same tag wins, the second is logged
            by_slo = {r["slo"]: r for r in document["results"]}
            assert by_slo["after-reset"]["sli"][PERIOD] == pytest.approx(0.99)
            assert by_slo["success-ratio"]["sli"][PERIOD] == pytest.approx(0.99)
            assert by_slo["raw-errors"]["sli"][PERIOD] == pytest.approx(0.99)
    assert daemon.process.poll() is None
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()
    assert any(e["event"] == "duplicate_series" for e in daemon.events())


def test_infinite_event_counts_give_no_sli(proxy: FaultProxy, slo_file: Path) -> None:
    proxy.set_odd(_vector({"bad": ["+Inf"], "good": ["+Inf"], "total": ["1000"]}))
    result = run_sloeval(["eval", "--format", "json"], sloeval_env(proxy.url, SLOEVAL_SLO_FILE=str(slo_file)))
    assert result.returncode in (0, 1), result.stderr
    by_slo = {r["slo"]: r for r in _finite_json(result.stdout)["results"]}
    assert by_slo["after-reset"]["sli"][PERIOD] != 1.0  # +Inf bad events are not a perfect SLI
    assert by_slo["after-reset"]["error_budget_remaining_percent"] is None
    assert by_slo["success-ratio"]["sli"][PERIOD] is None  # nor is +Inf good events "no good events"


# --- Prometheus restarts ------------------------------------------------------------------


def test_prometheus_restart_brief_stale_then_same_numbers(
    prometheus: Any, proxy: FaultProxy, slo_file: Path, daemon_factory: Any, budget_slos: set[str]
) -> None:
    daemon = daemon_factory(proxy.url, slo_file, **FAST)
    daemon.wait_for("/readyz", 200)
    metrics = wait_scrape(daemon, none_stale, "no SLO stale")
    before = budgets(metrics)
    (before_at,) = [v for _, v in metrics["sloeval_last_evaluation_timestamp_seconds"]]
    assert {slo for slo, _ in before} == budget_slos

    # A bare restart takes ~0.2 s here and the query retries hide it; keep Prometheus down for two
    # cycles, as a restart replaying a large WAL would, then start it on the same port and data.
    stopped_at = time.time()
    prometheus.stop()
    try:
        metrics = wait_scrape(daemon, all_stale, "every SLO stale while Prometheus is down")
        for family in VALUE_FAMILIES:
            assert family not in metrics
        wait_cycles(daemon, 2, time.time())
    finally:
        prometheus.start()
    daemon.wait_for("/readyz", 200)
    after = budgets(wait_scrape(daemon, none_stale, "no SLO stale after the restart"))
    down = [c for c in cycles(daemon, stopped_at) if c["outcome"] == "failed"]
    assert len(down) >= 2
    # The proxy answers 502 while Prometheus is down; three attempts may outlast the cycle deadline.
    missed = [e for e in daemon.events() if e["event"] in ("slo_query_failed", "slo_query_unfinished")]
    assert {e["slo"] for e in missed} == set(SLOS)
    assert all(e["error"].startswith("HTTP 502 with a non-JSON body") for e in missed if "error" in e), missed
    assert {slo for slo, _ in after} == budget_slos
    assert after == pytest.approx(before, rel=1e-2, abs=0.1)  # the windows slid on by a few seconds
    # At the instant of the cycle before the restart, the restarted Prometheus gives exactly those numbers.
    result = run_sloeval(["eval", "--format", "json", "--at", repr(before_at)], daemon.env)
    assert result.returncode == 0, result.stdout + result.stderr
    again = {
        (r["slo"], r["labels"].get("endpoint", "")): r["error_budget_remaining_percent"]
        for r in json.loads(result.stdout)["results"]
        if r["error_budget_remaining_percent"] is not None
    }
    assert again == pytest.approx(before, rel=1e-9, abs=1e-9)
    assert daemon.stop() == 0


# --- alerts on missing data ---------------------------------------------------------------

ALERT_SLO_FILE = """
service: shop
period: 1d
notify:
  routes:
    - {severity: [critical], channels: [telegram]}
  repeat_interval: 1h
  group_wait: 0s
slos:
  - name: checkout
    slo_type: errors
    objective: 99
    ratio: {bad: 'shop_requests_total{code=~"5.."}', total: shop_requests_total}
    alerts:
      - name: AlwaysBelow101
        severity: critical
        budget_remaining_below: 101
"""


def firing(metrics: Metrics) -> list[dict[str, str]]:
    return [labels for labels, value in metrics.get("samokoder_slo_alert_firing", []) if value == 1.0]


def test_missing_data_neither_fires_nor_resolves(proxy: FaultProxy, tmp_path: Path, daemon_factory: Any) -> None:
    slo_file = tmp_path / "alerts.yaml"
    slo_file.write_text(ALERT_SLO_FILE)
    with BotApiStub() as bot:
        env = {
            **FAST,
            "SLOEVAL_STATE_DIR": str(tmp_path / "alert-state"),
            "SLOEVAL_TELEGRAM_BOT_TOKEN": bot.token,
            "SLOEVAL_TELEGRAM_CHAT_IDS": "4242",
            "SLOEVAL_TELEGRAM_API_URL": bot.url,
        }
        daemon = daemon_factory(proxy.url, slo_file, **env)
        (page,) = bot.wait_for_messages(1, timeout=20)
        assert page.text.startswith("<b>FIRING: checkout")
        assert "AlwaysBelow101" in page.text
        expected = {"slo": "checkout", "alert": "AlwaysBelow101", "severity": "critical"}
        assert expected in firing(scrape(daemon))

        proxy.refuse()
        refused_at = time.time()
        wait_scrape(daemon, lambda m: stale_of(m) == {"checkout": 1.0}, "checkout stale")
        failed = wait_cycles(daemon, 4, refused_at)
        assert all(c["outcome"] == "failed" for c in failed[1:]), failed
        daemon.wait_for("/readyz", 503)
        metrics = scrape(daemon)
        assert "samokoder_error_budget_remaining_percent" not in metrics
        assert expected in firing(metrics)  # no data: the alert stays as it was
        assert len(bot.sent()) == 1, [m.text for m in bot.sent()]

        proxy.accept()
        accepted_at = time.time()
        daemon.wait_for("/readyz", 200)
        wait_cycles(daemon, 3, accepted_at)
        assert expected in firing(scrape(daemon))
        assert len(bot.sent()) == 1, [m.text for m in bot.sent()]
        assert not any(m.text.startswith("<b>RESOLVED") for m in bot.sent())
        assert daemon.stop() == 0
        states = [e for e in daemon.events() if e["event"] == "alert_state" and e["alert"] == "AlwaysBelow101"]
        assert [e["status"] for e in states] == ["firing"], states
