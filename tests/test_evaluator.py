from pathlib import Path

import anyio
import pytest

from sloeval.evaluator import Evaluator, results_from_samples
from sloeval.prometheus_api import PrometheusQueryError, QueryResult, Sample
from sloeval.slo_config import SLODefinition, parse_slo_text


def load(body: str, period: str = "1d") -> tuple[SLODefinition, ...]:
    text = f"service: api\nperiod: {period}\nslos:\n" + "".join("  " + line + "\n" for line in body.splitlines())
    return parse_slo_text(text, Path("slos.yaml")).slos


GROUPED = "- name: e\n  objective: 99\n  ratio: {bad: 'r{c=\"5\"}', total: r, group_by: [ep]}"


def tagged(value: float, tag: str, **labels: str) -> Sample:
    return Sample({**labels, "sloeval_series": tag}, value)


def test_grouped_results_with_missing_bad_series() -> None:
    (slo,) = load(GROUPED)
    samples = [tagged(1000, f"total:{w}", ep="/a") for w in slo.window_names]
    samples += [tagged(10, f"bad:{w}", ep="/a") for w in slo.window_names]
    samples += [tagged(500, f"total:{w}", ep="/b") for w in slo.window_names]  # /b never failed
    results = results_from_samples(slo, QueryResult(tuple(samples)))
    by_ep = {r.labels_dict["ep"]: r for r in results}
    assert by_ep["/a"].sli["1d"] == pytest.approx(0.99)
    assert by_ep["/a"].burn_rate["1d"] == pytest.approx(1.0)
    assert by_ep["/a"].error_budget_remaining == pytest.approx(0.0)
    assert by_ep["/b"].sli["5m"] == 1.0
    assert by_ep["/b"].error_budget_remaining == pytest.approx(1.0)


def test_zero_traffic_window_has_no_sli() -> None:
    (slo,) = load(GROUPED)
    samples = [tagged(0, "total:5m", ep="/a"), tagged(0, "bad:5m", ep="/a"), tagged(100, "total:1d", ep="/a")]
    (result,) = results_from_samples(slo, QueryResult(tuple(samples)))
    assert result.sli["5m"] is None
    assert result.burn_rate["5m"] is None
    assert result.sli["30m"] is None  # no total at all in that window
    assert result.sli["1d"] == 1.0


def test_bad_without_total_gives_no_result() -> None:
    (slo,) = load(GROUPED)
    assert results_from_samples(slo, QueryResult((tagged(3, "bad:5m", ep="/x"),))) == ()


def test_raw_results_keep_their_labels() -> None:
    (slo,) = load("- name: r\n  objective: 99\n  raw: {error_ratio: 'x[$window]'}")
    samples = [tagged(0.02, f"error_ratio:{w}", region="eu") for w in slo.window_names]
    (result,) = results_from_samples(slo, QueryResult(tuple(samples)))
    assert result.labels_dict == {"region": "eu"}
    assert result.sli["1h"] == pytest.approx(0.98)
    assert result.error_budget_remaining == pytest.approx(-1.0)


class ScriptedClient:
    """Answers by SLO: a canned result or an error, to test how a cycle is assembled."""

    def __init__(self, answers: dict[str, QueryResult | PrometheusQueryError]) -> None:
        self.answers = answers
        self.times: list[float] = []

    async def query(self, promql: str, at: float) -> QueryResult:
        self.times.append(at)
        for needle, answer in self.answers.items():
            if needle in promql:
                if isinstance(answer, PrometheusQueryError):
                    raise answer
                return answer
        raise AssertionError(promql)


def test_failed_slo_is_stale_and_others_still_evaluate() -> None:
    slos = load(
        "- name: ok\n  objective: 99\n  ratio: {bad: okbad, total: oktotal}\n"
        "- name: broken\n  objective: 99\n  ratio: {bad: brbad, total: brtotal}"
    )
    client = ScriptedClient(
        {
            "oktotal": QueryResult((tagged(10, "total:5m"),)),
            "brtotal": PrometheusQueryError("execution: boom", query="q", error_type="execution"),
        }
    )
    snapshot = anyio.run(Evaluator(slos, client, concurrency=2).evaluate, 1234.5)
    assert not snapshot.succeeded
    ok, broken = snapshot.statuses
    assert not ok.stale
    assert ok.results[0].sli["5m"] == 1.0
    assert broken.stale
    assert broken.error == "execution: boom"
    assert client.times == [1234.5, 1234.5]


def test_raw_results_cannot_override_sloevals_own_labels() -> None:
    (slo,) = load("- name: r\n  objective: 99\n  raw: {error_ratio: 'x[$window]'}")
    samples = [tagged(0.01, f"error_ratio:{w}", region="eu", slo="other", window="7d") for w in slo.window_names]
    (result,) = results_from_samples(slo, QueryResult(tuple(samples)))
    assert result.labels_dict == {"region": "eu"}
