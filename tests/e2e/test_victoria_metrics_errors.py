"""A query VictoriaMetrics refuses takes down only its own SLO (issue 11, item 7).

VictoriaMetrics answers a query it cannot run with HTTP 422 and ``errorType: "422"`` (Prometheus
says ``bad_data``); a packed request failing so must still be asked again term by term.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sloeval.config.slo_file import parse_slo_text
from sloeval.promql.plan import QueryPlan, pack
from tests.e2e.conftest import run_sloeval, sloeval_env

pytestmark = pytest.mark.e2e

#: Python's ``re`` (which checks selectors) takes a lookahead; Go's regexp, and so VictoriaMetrics
#: and Prometheus, do not: the third SLO's ``bad`` terms fail inside a request shared with the others
#: (no alerts, so that the three SLOs' six windows fit in one request).
SLO_FILE = """\
service: shop
period: 1d
slos:
  - name: errors
    objective: 99
    alerts: []
    ratio: {bad: 'shop_requests_total{code=~"5.."}', total: shop_requests_total}
  - name: success
    objective: 99
    alerts: []
    ratio: {good: 'shop_requests_total{code!~"5.."}', total: shop_requests_total}
  - name: lookahead
    objective: 99
    alerts: []
    ratio: {bad: 'shop_requests_total{code=~"5(?=0).."}', total: shop_requests_total}
"""


@pytest.fixture
def slo_file(tmp_path: Path) -> Path:
    path = tmp_path / "slos.yaml"
    path.write_text(SLO_FILE, encoding="utf-8")
    (request,) = pack(QueryPlan(parse_slo_text(SLO_FILE, path).slos).expressions)  # one request for all three
    assert any("(?=" in e.promql for e in request)
    assert not all("(?=" in e.promql for e in request)
    return path


def test_victoria_metrics_refusal_is_a_422_error_type(victoria: Any, data_end: int) -> None:
    """The answer the split decision is made on, as VictoriaMetrics really sends it."""
    response = httpx.post(
        f"{victoria.url}/api/v1/query", data={"query": 'x{code=~"5(?=0).."}', "time": str(data_end)}, timeout=30
    )
    assert response.status_code == 422
    assert response.json()["errorType"] == "422"


@pytest.mark.parametrize("backend", ["victoria", "prometheus"])
def test_one_refused_term_leaves_the_other_slos_of_its_request_evaluated(
    backend: str, request: pytest.FixtureRequest, slo_file: Path, data_end: int
) -> None:
    url = request.getfixturevalue(backend).url
    result = run_sloeval(["eval", "--format", "json", "--at", str(data_end), "-c", str(slo_file)], sloeval_env(url))
    assert result.returncode == 1, result.stdout + result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    (error,) = document["errors"]
    assert error["slo"] == "lookahead"
    assert "(?=" in error["error"]
    assert error["error"].startswith("422: " if backend == "victoria" else "bad_data: ")
    by_slo = {r["slo"]: r for r in document["results"]}
    assert set(by_slo) == {"errors", "success"}
    assert by_slo["errors"]["sli"]["1d"] == pytest.approx(by_slo["success"]["sli"]["1d"], rel=1e-9)
    assert 0.99 < by_slo["errors"]["sli"]["1d"] < 1.0
