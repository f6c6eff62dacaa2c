"""Latency SLOs read the bucket Prometheus really has at their threshold (issue 11, item 5).

Go's ``prometheus.LinearBuckets(0.1, 0.1, 10)`` exports ``le="0.30000000000000004"``; an SLO with
``threshold_seconds: 0.3`` must read that bucket (not find none and count 0 good events, which
pages at once), and an SLO whose threshold is no bound at all must be stale naming the bounds, in
``eval``, ``run`` and ``check --online`` alike. A histogram without any bucket series is no data, as a selector
without series is (``check --online`` reports it).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.fault_proxy import FaultProxy
from devtools.servers import PrometheusServer, instant_query
from devtools.tsdb import Series, write_prometheus_blocks
from tests.e2e.conftest import run_sloeval, samples, sloeval_env, wait_until

pytestmark = pytest.mark.e2e

STEP = 60
DAYS = 2
#: client_golang's LinearBuckets(0.1, 0.1, 10): each bound is the previous one + 0.1, in floats.
GO_LINEAR = [repr(bound) for bound in itertools.accumulate([0.1] * 10)]
NOISY = "0.30000000000000004"
SHARES = [0.5, 0.8, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999]

SLO_FILE = """\
service: shop
period: 1d
slos:
  - name: noisy
    slo_type: latency
    objective: 90
    latency: {histogram: noisy_seconds, threshold_seconds: 0.3, group_by: [route]}
  - name: off-bound
    slo_type: latency
    objective: 90
    latency: {histogram: noisy_seconds, threshold_seconds: 0.35}
  - name: no-buckets
    slo_type: latency
    objective: 90
    latency: {histogram: count_only_seconds, threshold_seconds: 0.3}
"""
OFF_BOUND = (
    "threshold_seconds 0.35 is not a bucket bound of noisy_seconds_bucket; bounds: 0.1, 0.2, 0.30000000000000004, "
    "0.4, 0.5, 0.6, 0.7, 0.7999999999999999, 0.8999999999999999, 0.9999999999999999, 1, +Inf"
)
NO_BUCKETS = "no histogram buckets for count_only_seconds_bucket in the last 1d"


def _counter(name: str, labels: dict[str, str], end: int, per_step: float) -> Series:
    start = end - DAYS * 86400
    return Series(name, labels, [(float(t), per_step * (i + 1)) for i, t in enumerate(range(start, end + 1, STEP))])


def build(end: int) -> list[Series]:
    series = [
        _counter("noisy_seconds_bucket", {"route": "/a", "le": le}, end, 100 * share)
        for le, share in zip(GO_LINEAR, SHARES, strict=True)
    ]
    series.append(_counter("noisy_seconds_bucket", {"route": "/a", "le": "+Inf"}, end, 100))
    series.append(_counter("noisy_seconds_count", {"route": "/a"}, end, 100))
    # Another exporter of the same histogram, with other buckets: no bound at 0.3 for /b.
    for le, share in (("0.5", 0.7), ("1", 0.9), ("+Inf", 1.0)):
        series.append(_counter("noisy_seconds_bucket", {"route": "/b", "le": le}, end, 10 * share))
    series.append(_counter("noisy_seconds_count", {"route": "/b"}, end, 10))
    series.append(_counter("count_only_seconds_count", {}, end, 5))
    return series


@pytest.fixture(scope="module")
def noisy_prometheus(tmp_path_factory: pytest.TempPathFactory, data_end: int) -> Iterator[PrometheusServer]:
    data_dir = tmp_path_factory.mktemp("noisy-buckets")
    write_prometheus_blocks(build(data_end), data_dir)
    with PrometheusServer(data_dir) as server:
        yield server


@pytest.fixture(scope="module")
def slo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("noisy-config") / "slos.yaml"
    path.write_text(SLO_FILE, encoding="utf-8")
    return path


def test_eval_reads_the_float_noise_bucket_and_never_makes_a_zero_sli(
    noisy_prometheus: PrometheusServer, slo_file: Path, data_end: int
) -> None:
    result = run_sloeval(
        ["eval", "--format", "json", "--at", str(data_end), "-c", str(slo_file)], sloeval_env(noisy_prometheus.url)
    )
    assert result.returncode == 1, result.stdout + result.stderr  # off-bound cannot be evaluated
    assert "Traceback" not in result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    errors = {e["slo"]: e["error"] for e in document["errors"]}
    assert errors == {"off-bound": OFF_BOUND}  # no-buckets: no bucket series at all, no data (no results)
    by_route = {r["labels"]["route"]: r for r in document["results"] if r["slo"] == "noisy"}
    assert set(by_route) == {"/a", "/b"}
    assert {r["slo"] for r in document["results"]} == {"noisy"}
    for window, sli in by_route["/a"]["sli"].items():
        expected = instant_query(
            noisy_prometheus.url,
            f'sum by (route) (increase(noisy_seconds_bucket{{le="{NOISY}"}}[{window}]))'
            f" / sum by (route) (increase(noisy_seconds_count[{window}]))",
            data_end,
        )
        want = [float(item["value"][1]) for item in expected if item["metric"]["route"] == "/a"]
        if not want:  # a window shorter than the 1 min between samples: no data on either side
            assert sli is None, window
            continue
        assert sli == pytest.approx(want[0], rel=1e-9), window
        assert sli == pytest.approx(0.95, rel=1e-6)
    assert by_route["/a"]["error_budget_remaining_percent"] == pytest.approx(50.0, rel=1e-4)
    # /b has a total but no bucket at 0.3: no data, not 0 good events.
    assert set(by_route["/b"]["sli"].values()) == {None}
    assert by_route["/b"]["error_budget_remaining_percent"] is None


def test_check_online_reports_what_eval_decides(noisy_prometheus: PrometheusServer, slo_file: Path) -> None:
    result = run_sloeval(["check", "--online", "-c", str(slo_file)], sloeval_env(noisy_prometheus.url))
    assert result.returncode == 1, result.stdout + result.stderr
    findings = [line.split(": slo ", 1)[1] for line in result.stdout.splitlines() if ": slo " in line]
    assert findings == [f"'off-bound': error: {OFF_BOUND}", f"'no-buckets': error: {NO_BUCKETS}"]


def test_daemon_discovers_the_bounds_once_and_does_not_page(
    noisy_prometheus: PrometheusServer, tmp_path: Path, daemon_factory: Any
) -> None:
    config = tmp_path / "noisy.yaml"
    config.write_text(SLO_FILE.split("  - name: off-bound")[0], encoding="utf-8")
    with FaultProxy(noisy_prometheus.url) as proxy:
        daemon = daemon_factory(proxy.url, config, SLOEVAL_LONG_WINDOW_REFRESH="0")
        daemon.wait_for("/readyz", 200)
        wait_until(
            lambda: sum(e["event"] == "evaluation_cycle" for e in daemon.events()) >= 4, 30, "four evaluation cycles"
        )
        metrics = samples(daemon.get("/metrics").text)
        budget = {
            labels["route"]: value for labels, value in metrics.get("samokoder_error_budget_remaining_percent", [])
        }
        assert set(budget) == {"/a"}  # /b: no data, no budget
        assert budget["/a"] == pytest.approx(50.0, abs=1.0)
        assert all(not math.isnan(v) for v in budget.values())
        assert not [labels for labels, v in metrics.get("samokoder_slo_alert_firing", []) if v == 1.0]
        cycles = [e for e in daemon.events() if e["event"] == "evaluation_cycle"]
        assert all(c["outcome"] == "success" for c in cycles), cycles
        bounds_asked = [r for r in proxy.recorded if (r.query or "").startswith("group by (le)")]
        assert len(bounds_asked) == 1, [r.query for r in bounds_asked]  # once per config, not per cycle
        assert daemon.stop() == 0
