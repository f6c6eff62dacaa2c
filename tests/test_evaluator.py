import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import pytest

from sloeval.config.durations import parse_duration
from sloeval.config.slo_file import SLODefinition, parse_slo_text
from sloeval.prometheus.results import PrometheusQueryError, QueryResult, Sample
from sloeval.promql.plan import TERMS_PER_REQUEST, QueryPlan
from sloeval.slo.evaluator import Evaluator
from sloeval.slo.snapshot import SLOResult


def load(body: str, period: str = "1d") -> tuple[SLODefinition, ...]:
    text = f"service: api\nperiod: {period}\nslos:\n" + "".join("  " + line + "\n" for line in body.splitlines())
    return parse_slo_text(text, Path("slos.yaml")).slos


GROUPED = "- name: e\n  objective: 99\n  ratio: {bad: 'r{c=\"5\"}', total: r, group_by: [ep]}"


Tagged = tuple[str, dict[str, str], float]


def tagged(value: float, tag: str, **labels: str) -> Tagged:
    """One sample of Prometheus's answer to the ``<part>:<window>`` term, e.g. ``"bad:5m"``."""
    return tag, labels, value


def evaluate_tagged(slo: SLODefinition, samples: Sequence[Tagged]) -> tuple[SLOResult, ...]:
    """Evaluate ``slo`` on the live path: the Evaluator sends its query plan's packed requests and
    the stand-in answers each term with the samples of its part and window (none: no series)."""
    answers: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for tag, labels, value in samples:
        answers[tag].append((labels, value))
    (plan,) = QueryPlan([slo]).slo_plans
    tag_of = {p.expression.promql: f"{p.part}:{p.window_name}" for p in plan.parts}
    assert set(answers) <= set(tag_of.values())  # every hand-made sample answers a term of the plan
    client = TermClient(lambda expression: answers.get(tag_of[expression], []))
    (status,) = anyio.run(Evaluator([slo], client).evaluate, 1.0).statuses
    assert not status.stale, status.error
    assert sorted(client.terms) == sorted(tag_of)  # every term asked, once
    return status.results


def test_grouped_results_with_missing_bad_series() -> None:
    (slo,) = load(GROUPED)
    samples = [tagged(1000, f"total:{w}", ep="/a") for w in slo.window_names]
    samples += [tagged(10, f"bad:{w}", ep="/a") for w in slo.window_names]
    samples += [tagged(500, f"total:{w}", ep="/b") for w in slo.window_names]  # /b never failed
    results = evaluate_tagged(slo, samples)
    by_ep = {r.labels_dict["ep"]: r for r in results}
    assert by_ep["/a"].sli["1d"] == pytest.approx(0.99)
    assert by_ep["/a"].burn_rate["1d"] == pytest.approx(1.0)
    assert by_ep["/a"].error_budget_remaining == pytest.approx(0.0)
    assert by_ep["/b"].sli["5m"] == 1.0
    assert by_ep["/b"].error_budget_remaining == pytest.approx(1.0)


def test_zero_traffic_window_has_no_sli() -> None:
    (slo,) = load(GROUPED)
    samples = [tagged(0, "total:5m", ep="/a"), tagged(0, "bad:5m", ep="/a"), tagged(100, "total:1d", ep="/a")]
    (result,) = evaluate_tagged(slo, samples)
    assert result.sli["5m"] is None
    assert result.burn_rate["5m"] is None
    assert result.sli["30m"] is None  # no total at all in that window
    assert result.sli["1d"] == 1.0


def test_bad_without_total_gives_no_result() -> None:
    (slo,) = load(GROUPED)
    assert evaluate_tagged(slo, [tagged(3, "bad:5m", ep="/x")]) == ()


def test_raw_results_keep_their_labels() -> None:
    (slo,) = load("- name: r\n  objective: 99\n  raw: {error_ratio: 'x[$window]'}")
    samples = [tagged(0.02, f"error_ratio:{w}", region="eu") for w in slo.window_names]
    (result,) = evaluate_tagged(slo, samples)
    assert result.labels_dict == {"region": "eu"}
    assert result.sli["1h"] == pytest.approx(0.98)
    assert result.error_budget_remaining == pytest.approx(-1.0)


TERM = re.compile(r'label_replace\((.*), "sloeval_series", "(e\d+)", "", ""\)')


class TermClient:
    """A Prometheus stand-in answering each tagged term of a request through ``answer(expression)``.

    ``answer`` returns a list of ``(labels, value)`` or raises PrometheusQueryError; a request
    fails as a whole when any of its terms does, as Prometheus does.
    """

    def __init__(self, answer: Callable[[str], list[tuple[dict[str, str], float]]]) -> None:
        self.answer = answer
        self.requests: list[tuple[float, list[str]]] = []

    @property
    def terms(self) -> list[str]:
        return [term for _, terms in self.requests for term in terms]

    async def query(self, promql: str, at: float) -> QueryResult:
        terms = [TERM.fullmatch(line.removeprefix("or ")) for line in promql.split("\n")]
        assert all(terms), promql
        self.requests.append((at, [t.group(1) for t in terms if t]))
        samples = []
        for term in terms:
            assert term is not None
            for labels, value in self.answer(term.group(1)):
                samples.append(Sample({**labels, "sloeval_series": term.group(2)}, value))
        return QueryResult(tuple(samples))


def counts(expression: str) -> list[tuple[dict[str, str], float]]:
    """100 events per window minute, 1 % of them bad (any selector with 'bad' in it)."""
    window = re.search(r"\[(\w+)\]", expression)
    assert window is not None, expression
    minutes = parse_duration(window.group(1)) / 60
    return [({}, (1.0 if "bad" in expression else 100.0) * minutes)]


def test_failed_slo_is_stale_and_others_still_evaluate() -> None:
    slos = load(
        "- name: ok\n  objective: 99\n  ratio: {bad: okbad, total: oktotal}\n"
        "- name: broken\n  objective: 99\n  ratio: {bad: brbad, total: brtotal}"
    )

    def answer(expression: str) -> list[tuple[dict[str, str], float]]:
        if "brtotal" in expression:
            raise PrometheusQueryError("execution: boom", query="q", error_type="execution")
        return counts(expression)

    client = TermClient(answer)
    snapshot = anyio.run(Evaluator(slos, client, concurrency=2).evaluate, 1234.5)
    assert not snapshot.succeeded
    ok, broken = snapshot.statuses
    assert not ok.stale
    assert ok.results[0].sli["5m"] == pytest.approx(0.99)
    assert broken.stale
    assert broken.error == "execution: boom"
    # Packed requests holding a broken term failed; their terms were then asked one by one.
    packed = [terms for _, terms in client.requests if len(terms) > 1]
    alone = {terms[0] for _, terms in client.requests if len(terms) == 1}
    assert packed
    assert alone == {t for terms in packed if any("brtotal" in x for x in terms) for t in terms}
    assert {at for at, _ in client.requests} == {1234.5}


def test_when_prometheus_rejects_everything_only_one_request_is_split() -> None:
    ratios = "".join(f"- name: s{n}\n  objective: 99\n  ratio: {{bad: b{n}, total: t{n}}}\n" for n in range(5))
    slos = load(ratios)

    def answer(expression: str) -> list[tuple[dict[str, str], float]]:
        raise PrometheusQueryError("bad_data: unsupported", query="q", error_type="bad_data")

    client = TermClient(answer)
    snapshot = anyio.run(Evaluator(slos, client).evaluate, 1.0)
    assert all(s.error == "bad_data: unsupported" for s in snapshot.statuses)
    packed = [terms for _, terms in client.requests if len(terms) > 1]
    alone = [terms for _, terms in client.requests if len(terms) == 1]
    assert len(packed) == -(-5 * 2 * len(slos[0].windows) // TERMS_PER_REQUEST)
    assert len(alone) == len(packed[0])  # the probe, and no more


def test_timeout_of_a_packed_request_is_not_split() -> None:
    slos = load("- name: a\n  objective: 99\n  ratio: {bad: abad, total: atotal}")

    def answer(expression: str) -> list[tuple[dict[str, str], float]]:
        raise PrometheusQueryError("timeout: slow", query="q", error_type="timeout")

    client = TermClient(answer)
    (status,) = anyio.run(Evaluator(slos, client).evaluate, 1.0).statuses
    assert status.error == "timeout: slow"
    assert len(client.requests) == 1


def test_shared_expressions_are_asked_once_per_cycle() -> None:
    tiers = "".join(
        f"- name: tier{n}\n  objective: {objective}\n  ratio: {{bad: 'r{{c=\"bad\"}}', total: r}}\n"
        for n, objective in enumerate((99, 99.5, 99.9))
    )
    success = "- name: ok\n  objective: 99\n  ratio: {good: 'r{c=\"2\"}', total: r}\n"
    slos = load(tiers + success)
    client = TermClient(counts)
    snapshot = anyio.run(Evaluator(slos, client).evaluate, 100.0)
    windows = len(slos[0].windows)
    assert len(client.terms) == len(set(client.terms)) == 3 * windows  # bad, good, total per window
    assert [s.results[0].burn_rate["5m"] for s in snapshot.statuses[:3]] == pytest.approx([1.0, 2.0, 10.0])


def test_requests_are_packed_and_raw_slis_go_alone() -> None:
    ratios = "".join(f"- name: s{n}\n  objective: 99\n  ratio: {{bad: b{n}, total: t{n}}}\n" for n in range(5))
    raw = "- name: raw\n  objective: 99\n  raw: {error_ratio: 'x[$window]'}\n"
    slos = load(ratios + raw)
    client = TermClient(lambda e: [({}, 0.01)] if e.startswith("(x[") else counts(e))
    snapshot = anyio.run(Evaluator(slos, client).evaluate, 100.0)
    assert snapshot.succeeded
    sizes = sorted(len(terms) for _, terms in client.requests)
    windows = len(slos[0].windows)
    assert sum(sizes) == 5 * 2 * windows + windows
    assert max(sizes) == TERMS_PER_REQUEST
    raw_requests = [terms for _, terms in client.requests if any(t.startswith("(x[") for t in terms)]
    assert raw_requests == [[f"(x[{w}])" for w in slos[-1].window_names]]


def test_long_windows_are_refreshed_on_their_own_cadence() -> None:
    slos = load("- name: a\n  objective: 99\n  ratio: {bad: abad, total: atotal}", period="30d")
    client = TermClient(counts)
    evaluator = Evaluator(slos, client, long_window_refresh=300)
    long_windows = [w for w in slos[0].window_names if w == "30d"]
    short_windows = [w for w in slos[0].window_names if w not in long_windows]

    def asked(at: float) -> list[str]:
        before = len(client.requests)
        status = anyio.run(evaluator.evaluate, at).statuses[0]
        assert not status.stale
        assert status.results[0].sli["30d"] == pytest.approx(0.99)
        return [re.search(r"\[(\w+)\]", t).group(1) for _, terms in client.requests[before:] for t in terms]  # type: ignore[union-attr]

    assert sorted(asked(0.0)) == sorted(2 * (short_windows + long_windows))  # bad and total
    refreshed: list[str] = []
    for at in range(30, 330, 30):  # each long term exactly once in the next 300 s, at its own phase
        again = asked(float(at))
        assert sorted(w for w in again if w in short_windows) == sorted(2 * short_windows)
        long_now = [w for w in again if w in long_windows]
        assert len(long_now) in (0, 2)  # bad and total of the window together
        refreshed += long_now
    assert sorted(refreshed) == sorted(2 * long_windows)
    # A reload keeps the answers that still apply.
    reloaded = Evaluator(slos, client, long_window_refresh=300, reuse=evaluator)
    before = len(client.requests)
    anyio.run(reloaded.evaluate, 331.0)
    terms = [t for _, ts in client.requests[before:] for t in ts]
    assert not any("[30d]" in t for t in terms)


def test_without_refresh_every_window_is_asked_every_cycle() -> None:
    slos = load("- name: a\n  objective: 99\n  ratio: {bad: abad, total: atotal}", period="30d")
    client = TermClient(counts)
    evaluator = Evaluator(slos, client)
    for at in (0.0, 30.0):
        anyio.run(evaluator.evaluate, at)
    assert len(client.terms) == 2 * 2 * len(slos[0].windows)


def test_raw_results_cannot_override_sloevals_own_labels() -> None:
    (slo,) = load("- name: r\n  objective: 99\n  raw: {error_ratio: 'x[$window]'}")
    samples = [tagged(0.01, f"error_ratio:{w}", region="eu", slo="other", window="7d") for w in slo.window_names]
    (result,) = evaluate_tagged(slo, samples)
    assert result.labels_dict == {"region": "eu"}
