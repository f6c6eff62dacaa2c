"""sloeval's numbers against Prometheus's (and VictoriaMetrics's) own evaluation at the same instant."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from devtools.servers import instant_query
from tests.e2e import dataset
from tests.e2e.conftest import eval_json

pytestmark = pytest.mark.e2e

OBJECTIVES = {
    "errors-by-endpoint": 0.99,
    "success-ratio": 0.995,
    "after-reset": 0.99,
    "idle": 0.99,
    "stopped": 0.95,
    "go-latency": 0.95,
    "py-latency": 0.95,
    "uptime": 0.999,
    "raw-errors": 0.99,
    "gap": 0.99,
}
WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]


def reference(url: str, slo: str, window: str, at: int) -> dict[tuple[tuple[str, str], ...], float | None]:
    """Backend's own SLI per label set; NaN (0/0: no traffic) becomes None."""
    answer = instant_query(url, dataset.REFERENCE_SLI[slo].replace("[W]", f"[{window}]"), at)
    values: dict[tuple[tuple[str, str], ...], float | None] = {}
    for item in answer:
        labels = tuple(sorted(item["metric"].items()))
        value = float(item["value"][1])
        values[labels] = None if math.isnan(value) else value
    return values


def by_slo(document: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for result in document["results"]:
        grouped.setdefault(result["slo"], []).append(result)
    return grouped


def assert_matches_backend(url: str, document: dict[str, Any], at: int) -> None:
    results = by_slo(document)
    for slo, objective in OBJECTIVES.items():
        for window in WINDOWS:
            expected = reference(url, slo, window, at)
            ours = {tuple(sorted(r["labels"].items())): r["sli"][window] for r in results.get(slo, [])}
            # Label sets the backend has no value for (absent, NaN) must be null on our side too.
            for labels, value in ours.items():
                want = expected.get(labels)
                if want is None:
                    assert value is None, f"{slo} {dict(labels)} {window}: {value} but backend has no data"
                else:
                    assert value is not None, f"{slo} {dict(labels)} {window}: null but backend says {want}"
                    assert value == pytest.approx(want, abs=1e-9), f"{slo} {dict(labels)} {window}"
            for labels, want in expected.items():
                if want is not None:
                    assert labels in ours, f"{slo} {dict(labels)} {window}: missing, backend says {want}"
        for result in results.get(slo, []):
            for window in WINDOWS:
                sli, burn = result["sli"][window], result["burn_rate"][window]
                if sli is None:
                    assert burn is None
                else:
                    assert burn == pytest.approx((1 - sli) / (1 - objective), rel=1e-9, abs=1e-9)
            period_sli = result["sli"]["30d"]
            budget = result["error_budget_remaining_percent"]
            if period_sli is None:
                assert budget is None
            else:
                assert budget == pytest.approx(100 * (1 - (1 - period_sli) / (1 - objective)), abs=1e-6)


def test_numbers_equal_prometheus(prometheus: Any, slo_file: Path, data_end: int) -> None:
    document = eval_json(prometheus.url, slo_file, data_end)
    assert document["evaluated_at"] == data_end
    assert "errors" not in document
    assert_matches_backend(prometheus.url, document, data_end)


def test_budget_equals_prometheus_budget_expression(prometheus: Any, slo_file: Path, data_end: int) -> None:
    document = eval_json(prometheus.url, slo_file, data_end)
    (uptime,) = by_slo(document)["uptime"]
    expr = f"100 * (1 - (1 - ({dataset.REFERENCE_SLI['uptime'].replace('[W]', '[30d]')})) / (1 - 0.999))"
    (answer,) = instant_query(prometheus.url, expr, data_end)
    assert uptime["error_budget_remaining_percent"] == pytest.approx(float(answer["value"][1]), abs=1e-6)


def test_semantics_users_rely_on(prometheus: Any, slo_file: Path, data_end: int) -> None:
    results = by_slo(eval_json(prometheus.url, slo_file, data_end))
    endpoints = {r["labels"]["endpoint"]: r for r in results["errors-by-endpoint"]}
    assert set(endpoints) == {"/a", "/b", "/c"}
    # /b never had a 5xx series: zero bad events, a perfect SLI, not "no data".
    assert all(endpoints["/b"]["sli"][w] == 1.0 for w in WINDOWS)
    assert endpoints["/b"]["error_budget_remaining_percent"] == 100.0
    # /c had an incident 10 days ago: visible over 30 d, not over the last day.
    assert endpoints["/c"]["sli"]["1d"] == 1.0
    assert endpoints["/c"]["sli"]["30d"] < 0.9992  # 2 h at 30 % errors: 10,800 bad of ~13M
    assert endpoints["/c"]["error_budget_remaining_percent"] < 100.0
    # Zero traffic: no SLI, no burn rate, no budget; never 1.0 or NaN.
    (idle,) = results["idle"]
    assert set(idle["sli"].values()) == {None}
    assert idle["error_budget_remaining_percent"] is None
    # Traffic stopped 2 days ago: short windows have no data, long ones do.
    (stopped,) = results["stopped"]
    assert [stopped["sli"][w] is None for w in WINDOWS] == [True] * 6 + [False] * 2
    # Counter reset 3 h ago: handled by increase(), the SLI stays a sane ratio.
    (reset,) = results["after-reset"]
    assert all(0.95 < reset["sli"][w] < 0.97 for w in WINDOWS)
    # The same observations with Go-style and Python-style `le` labels give the same SLI.
    (go,), (py,) = results["go-latency"], results["py-latency"]
    assert go["sli"] == py["sli"]
    assert all(go["sli"][w] is not None for w in WINDOWS)
    # A scrape gap of 90 min: the windows inside it have no data (null), the longer ones do.
    (gap,) = results["gap"]
    assert [gap["sli"][w] is None for w in WINDOWS] == [True, True, True, False, False, False, False, False]
    # Outage of 10 min in the last hour.
    (uptime,) = results["uptime"]
    assert uptime["sli"]["1h"] < 0.9
    assert uptime["sli"]["5m"] == 1.0


def test_numbers_equal_victoriametrics(victoria: Any, slo_file: Path, data_end: int) -> None:
    document = eval_json(victoria.url, slo_file, data_end)
    assert "errors" not in document
    assert_matches_backend(victoria.url, document, data_end)


def test_pinned_timestamp_is_used_for_every_query(prometheus: Any, slo_file: Path, data_end: int) -> None:
    earlier = data_end - 5 * 86400 + 600  # inside the 30-minute outage
    document = eval_json(prometheus.url, slo_file, earlier)
    (uptime,) = by_slo(document)["uptime"]
    assert uptime["sli"]["5m"] == 0.0
    assert_matches_backend(prometheus.url, document, earlier)
