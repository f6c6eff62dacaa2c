"""OpenSLO v1 files evaluated against a real Prometheus give exactly the numbers of their native twins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devtools.servers import PrometheusServer
from tests.e2e.conftest import REPO, eval_json

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "config" / "openslo" / "samokoder-api.yaml"
NATIVE_EQUIVALENT = REPO / "tests" / "data" / "openslo" / "samokoder-api-native.yaml"
WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]


def test_shipped_openslo_example_gives_the_numbers_of_the_native_file(
    samokoder_prometheus: PrometheusServer, data_end: int
) -> None:
    openslo = eval_json(samokoder_prometheus.url, EXAMPLE, data_end)
    native = eval_json(samokoder_prometheus.url, NATIVE_EQUIVALENT, data_end)
    assert openslo == native
    (errors,) = [r for r in openslo["results"] if r["slo"] == "api-errors"]
    assert errors["slo_type"] == "errors"
    assert errors["objective"] == 0.99
    assert all(errors["sli"][w] is not None for w in WINDOWS)
    # The 30 % 5xx burst of the last 45 minutes: the OpenSLO burn-rate condition (> 14.4 over 1h,
    # i.e. SLI over 1h < 85.6 %) holds, and the burn rate sloeval reports agrees.
    assert errors["sli"]["1h"] < 0.856
    assert errors["burn_rate"]["1h"] > 14.4
    endpoints = {r["labels"]["endpoint"] for r in openslo["results"] if r["slo"] == "api-errors-by-endpoint"}
    assert "/api/v1/projects" in endpoints
    assert "/health" in endpoints
    latency = [r for r in openslo["results"] if r["slo"].startswith("api-latency-")]
    assert [r["objective"] for r in latency] == [0.95, 0.99]
    assert latency[0]["sli"]["30d"] == latency[1]["sli"]["30d"] is not None


SHOP_OPENSLO = """\
apiVersion: openslo/v1
kind: DataSource
metadata: {name: prometheus}
spec: {type: Prometheus, connectionDetails: {url: "http://ignored:9090"}}
---
apiVersion: openslo/v1
kind: SLO
metadata:
  name: errors-by-endpoint
  annotations: {sloeval/slo-type: errors}
spec:
  service: shop
  indicator:
    metadata: {name: shop-5xx-by-endpoint}
    spec:
      ratioMetric:
        counter: true
        bad:
          metricSource:
            metricSourceRef: prometheus
            spec: {query: 'sum by (endpoint) (rate(shop_requests_total{code=~"5.."}[5m]))'}
        total:
          metricSource:
            metricSourceRef: prometheus
            spec: {query: 'sum(rate(shop_requests_total[5m])) by (endpoint)'}
  budgetingMethod: Occurrences
  timeWindow: [{duration: 30d, isRolling: true}]
  objectives: [{targetPercent: 99}]
---
apiVersion: openslo/v1
kind: SLO
metadata:
  name: success-ratio
spec:
  service: shop
  indicator:
    metadata: {name: shop-not-5xx}
    spec:
      ratioMetric:
        counter: true
        good: {metricSource: {type: Prometheus, spec: {query: 'shop_requests_total{code!~"5.."}'}}}
        total: {metricSource: {type: Prometheus, spec: {query: shop_requests_total}}}
  budgetingMethod: Occurrences
  timeWindow: [{duration: 30d, isRolling: true}]
  objectives: [{target: 0.995}]
---
apiVersion: openslo/v1
kind: SLI
metadata: {name: reset-errors}
spec:
  ratioMetric:
    counter: true
    bad: {metricSource: {type: Prometheus, spec: {query: 'sum(increase(reset_requests_total{code="500"}[1h]))'}}}
    total: {metricSource: {type: Prometheus, spec: {query: 'sum(increase(reset_requests_total[1h]))'}}}
---
apiVersion: openslo/v1
kind: SLO
metadata:
  name: after-reset
  annotations: {sloeval/slo-type: errors}
spec:
  service: shop
  indicatorRef: reset-errors
  budgetingMethod: Occurrences
  timeWindow: [{duration: 30d, isRolling: true}]
  objectives: [{target: 0.99}]
---
apiVersion: openslo/v1
kind: SLO
metadata:
  name: gap
  annotations: {sloeval/slo-type: errors}
spec:
  service: shop
  indicator:
    metadata: {name: gappy-errors}
    spec:
      ratioMetric:
        counter: true
        bad: {metricSource: {type: Prometheus, spec: {query: 'rate(gappy_requests_total{code="500"}[5m])'}}}
        total: {metricSource: {type: Prometheus, spec: {query: 'rate(gappy_requests_total[5m])'}}}
  budgetingMethod: Occurrences
  timeWindow: [{duration: 30d, isRolling: true}]
  objectives: [{targetPercent: 99}]
"""


def test_openslo_twins_of_the_acceptance_slos_give_the_same_numbers(
    prometheus: Any, slo_file: Path, data_end: int, tmp_path: Path
) -> None:
    """Grouping, good/total, a counter reset and a scrape gap, read through OpenSLO."""
    openslo_file = tmp_path / "shop-openslo.yaml"
    openslo_file.write_text(SHOP_OPENSLO, encoding="utf-8")
    openslo = eval_json(prometheus.url, openslo_file, data_end)
    native = eval_json(prometheus.url, slo_file, data_end)
    names = {"errors-by-endpoint", "success-ratio", "after-reset", "gap"}
    twins = [r for r in native["results"] if r["slo"] in names]
    assert {r["slo"] for r in twins} == names
    assert openslo["results"] == twins
    assert openslo["evaluated_at"] == native["evaluated_at"] == data_end
