"""``sloeval run`` as a real process against a real Prometheus: /metrics, health, shutdown."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.servers import free_port
from tests.e2e.conftest import run_sloeval, samples, sloeval_env

pytestmark = pytest.mark.e2e


def test_daemon_exports_what_eval_computes(prometheus: Any, slo_file: Path, daemon_factory: Any) -> None:
    daemon = daemon_factory(prometheus.url, slo_file)
    assert daemon.wait_for("/healthz", 200).text == "ok\n"
    daemon.wait_for("/readyz", 200)
    metrics = samples(daemon.get("/metrics").text)
    (evaluated_at,) = [v for _, v in metrics["sloeval_last_evaluation_timestamp_seconds"]]

    # The same pinned instant through `sloeval eval` must give the numbers /metrics shows.
    result = run_sloeval(["eval", "--format", "json", "--at", repr(evaluated_at)], daemon.env)
    document = json.loads(result.stdout)
    expected = {
        (r["slo"], r["labels"].get("endpoint", "")): r["error_budget_remaining_percent"]
        for r in document["results"]
        if r["error_budget_remaining_percent"] is not None
    }
    exported = {
        (labels["slo"], labels.get("endpoint", "")): value
        for labels, value in metrics["samokoder_error_budget_remaining_percent"]
    }
    assert exported == pytest.approx(expected, abs=1e-9)
    assert ("idle", "") not in exported  # zero traffic: no value rather than a made-up one
    assert {labels["slo_type"] for labels, _ in metrics["samokoder_error_budget_remaining_percent"]} == {
        "errors",
        "availability",
        "latency",
    }
    windows = {labels["window"] for labels, _ in metrics["samokoder_error_budget_burn_rate"]}
    assert windows == {"5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"}
    assert all(v == 0.0 for _, v in metrics["sloeval_slo_data_stale"])
    assert metrics["samokoder_latency_slo_target_seconds"][0][1] == 2.0
    assert any(labels["outcome"] == "success" and v > 0 for labels, v in metrics["sloeval_prometheus_queries_total"])
    assert metrics["sloeval_build_info"][0][0]["version"]

    assert daemon.stop() == 0
    events = daemon.events()
    names = [e["event"] for e in events]
    assert "started" in names
    assert "evaluation_cycle" in names
    assert names[-1] == "stopped"
    cycle = next(e for e in events if e["event"] == "evaluation_cycle")
    assert cycle["outcome"] == "success"
    assert cycle["duration_seconds"] >= 0
    assert "Traceback" not in daemon.log()


def test_cadence_does_not_drift(prometheus: Any, slo_file: Path, daemon_factory: Any) -> None:
    daemon = daemon_factory(prometheus.url, slo_file)
    daemon.wait_for("/readyz", 200)
    time.sleep(4.5)
    assert daemon.stop() == 0
    stamps = [e["evaluated_at"] for e in daemon.events() if e["event"] == "evaluation_cycle"]
    assert len(stamps) >= 4
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # Each cycle starts one interval after the previous one, whatever the cycle took.
    assert all(abs(gap - 1.0) < 0.25 for gap in gaps), gaps
    assert abs((stamps[-1] - stamps[0]) - (len(stamps) - 1)) < 0.25


def test_unreachable_prometheus_is_stale_and_unready(slo_file: Path, daemon_factory: Any) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    daemon = daemon_factory(closed, slo_file, SLOEVAL_QUERY_ATTEMPTS="2")
    daemon.wait_for("/healthz", 200)
    assert "no successful evaluation" in daemon.wait_for("/readyz", 503).text
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        metrics = samples(daemon.get("/metrics").text)
        if metrics.get("sloeval_slo_data_stale"):
            break
        time.sleep(0.2)
    assert metrics["sloeval_slo_data_stale"]
    assert all(v == 1.0 for _, v in metrics["sloeval_slo_data_stale"])
    assert "samokoder_error_budget_remaining_percent" not in metrics
    assert any(
        labels["outcome"] == "connect_error" and v > 0 for labels, v in metrics["sloeval_prometheus_queries_total"]
    )
    assert daemon.stop() == 0
    assert any(e["event"] == "slo_query_failed" for e in daemon.events())


def test_check_online_finds_missing_series_and_bucket_bounds(prometheus: Any, tmp_path: Path) -> None:
    config = tmp_path / "slos.yaml"
    config.write_text(
        """
service: shop
slos:
  - name: good-one
    objective: 99
    ratio: {bad: 'shop_requests_total{code=~"5.."}', total: shop_requests_total}
  - name: no-such-metric
    objective: 99
    ratio: {bad: 'nothing_total{code="500"}', total: nothing_total}
  - name: wrong-bound
    objective: 95
    latency: {histogram: go_latency_seconds, threshold_seconds: 3}
  - name: python-bound
    objective: 95
    latency: {histogram: py_latency_seconds, threshold_seconds: 2}
"""
    )
    result = run_sloeval(["check", "--online", "-c", str(config)], sloeval_env(prometheus.url))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any("'no-such-metric': error: no series for total selector nothing_total" in line for line in lines)
    assert any("'wrong-bound': error: threshold_seconds 3 is not a bucket bound" in line for line in lines)
    assert any("bounds: 0.5, 1, 2, +Inf" in line for line in lines)  # the `le` strings Prometheus has
    assert not any("'good-one'" in line or "'python-bound'" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_eval_reports_a_failing_query_and_exits_nonzero(prometheus: Any, tmp_path: Path) -> None:
    config = tmp_path / "slos.yaml"
    config.write_text(
        "service: s\nslos:\n  - name: broken\n    objective: 99\n    raw: {error_ratio: 'sum(rate(x[$window])) by'}\n"
    )
    result = run_sloeval(["eval", "--format", "json", "-c", str(config)], sloeval_env(prometheus.url))
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["results"] == []
    (error,) = document["errors"]
    assert error["slo"] == "broken"
    assert error["error"].startswith("bad_data:")
