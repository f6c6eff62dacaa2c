import dataclasses
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from sloeval.config.durations import parse_duration
from sloeval.config.settings import Settings
from sloeval.config.slo_file import SLODefinition, parse_slo_text
from sloeval.prometheus.results import PrometheusQueryError, QueryResult, Sample
from sloeval.promql.buckets import bounds_query
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
    fails as a whole when any of its terms does, as Prometheus does. A histogram's bucket bounds
    (``group by (le) (...)``, asked alone) are answered by ``bounds(query)``: the ``le`` strings.
    """

    def __init__(
        self,
        answer: Callable[[str], list[tuple[dict[str, str], float]]],
        bounds: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.answer = answer
        self.bounds = bounds
        self.requests: list[tuple[float, list[str]]] = []
        self.bound_requests: list[tuple[float, str]] = []

    @property
    def terms(self) -> list[str]:
        return [term for _, terms in self.requests for term in terms]

    async def query(self, promql: str, at: float) -> QueryResult:
        if promql.startswith("group by (le) ("):
            assert self.bounds is not None, promql
            self.bound_requests.append((at, promql))
            return QueryResult(tuple(Sample({"le": le}, 1.0) for le in self.bounds(promql)))
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


# --- latency SLIs: the bucket whose bound equals the threshold ---------------------------------

#: Go's prometheus.LinearBuckets(0.1, 0.1, 5): client_golang writes the third bound with float noise.
GO_LINEAR = ["0.1", "0.2", "0.30000000000000004", "0.4", "0.5", "+Inf"]
LE_MATCHER = re.compile(r'le(=~|=)"((?:[^"\\]|\\.)*)"')


def histogram(buckets: dict[str, dict[str, float]], count: dict[str, float]) -> Callable[[str], list[Any]]:
    """Answers ``increase`` of ``h_bucket``/``h_count`` as Prometheus would on series with these ``le``
    strings: a bucket term sums the buckets its ``le`` matcher selects (per ``route``)."""

    def answer(expression: str) -> list[tuple[dict[str, str], float]]:
        if "h_count" in expression:
            return [({"route": route}, value) for route, value in count.items()]
        matcher = LE_MATCHER.search(expression)
        assert matcher is not None, expression
        op, value = matcher.group(1), matcher.group(2).replace("\\\\", "\\")
        out = []
        for route, bounds in buckets.items():
            chosen = [v for le, v in bounds.items() if (le == value if op == "=" else re.fullmatch(value, le))]
            if chosen:
                out.append(({"route": route}, sum(chosen)))
        return out

    return answer


LATENCY = "- name: lat\n  objective: 90\n  latency: {histogram: h, threshold_seconds: %s, group_by: [route]}"


def test_latency_slo_reads_the_bucket_written_with_float_noise() -> None:
    slos = load(LATENCY % "0.3")
    bounds = dict(zip(GO_LINEAR, [50.0, 80.0, 95.0, 98.0, 99.0, 100.0], strict=True))
    client = TermClient(histogram({"/a": bounds}, {"/a": 100.0}), bounds=lambda query: GO_LINEAR)
    (status,) = anyio.run(Evaluator(slos, client).evaluate, 1.0).statuses
    assert not status.stale, status.error
    (result,) = status.results
    assert result.sli["1d"] == pytest.approx(0.95)  # not 0: the bucket is le="0.30000000000000004"
    assert result.error_budget_remaining == pytest.approx(0.5)


def test_latency_slo_without_a_bucket_at_its_threshold_is_stale_naming_the_bounds() -> None:
    slos = load(LATENCY % "0.35")
    bounds = dict.fromkeys(GO_LINEAR, 10.0)
    client = TermClient(histogram({"/a": bounds}, {"/a": 100.0}), bounds=lambda query: GO_LINEAR)
    (status,) = anyio.run(Evaluator(slos, client).evaluate, 1.0).statuses
    assert status.stale
    assert status.results == ()
    assert status.error == (
        "threshold_seconds 0.35 is not a bucket bound of h_bucket; "
        "bounds: 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, +Inf"
    )
    assert client.requests == []  # its good and total are never asked: no 0 SLI can come out


def test_latency_total_without_its_bucket_is_no_data_not_zero_good() -> None:
    slos = load(LATENCY % "0.3")
    buckets = {"/a": {"0.30000000000000004": 95.0, "+Inf": 100.0}, "/b": {"0.5": 7.0, "+Inf": 10.0}}
    client = TermClient(histogram(buckets, {"/a": 100.0, "/b": 10.0}), bounds=lambda query: GO_LINEAR)
    (status,) = anyio.run(Evaluator(slos, client).evaluate, 1.0).statuses
    by_route = {r.labels_dict["route"]: r for r in status.results}
    assert by_route["/a"].sli["1d"] == pytest.approx(0.95)
    assert set(by_route["/b"].sli.values()) == {None}  # /b exports no 0.3 bucket: no data, not SLI 0
    assert by_route["/b"].error_budget_remaining is None
    assert by_route["/b"].events["1d"].total == 10.0


def test_bucket_bounds_are_asked_until_found_then_never_again() -> None:
    slos = load(LATENCY % "0.3")
    bounds = dict(zip(GO_LINEAR, [50.0, 80.0, 95.0, 98.0, 99.0, 100.0], strict=True))
    reported: list[list[str] | PrometheusQueryError] = [
        PrometheusQueryError("bad_data: nope", query="q", error_type="bad_data"),
        [],
        GO_LINEAR,
    ]

    def answer_bounds(query: str) -> list[str]:
        (query_of_slo,) = {bounds_query(slo) for slo in slos}
        assert query == query_of_slo
        now = reported.pop(0) if reported else GO_LINEAR
        if isinstance(now, PrometheusQueryError):
            raise now
        return now

    client = TermClient(histogram({"/a": bounds}, {"/a": 100.0}), bounds=answer_bounds)
    evaluator = Evaluator(slos, client)
    statuses = [anyio.run(evaluator.evaluate, float(at)).statuses[0] for at in range(5)]
    assert [s.error for s in statuses] == ["bucket bounds of h_bucket not yet known: bad_data: nope"] + [None] * 4
    assert statuses[1].results == ()  # no bucket series at all: no data, as a selector without series
    assert [s.results[0].sli["1d"] for s in statuses[2:]] == pytest.approx([0.95] * 3)
    assert [at for at, _ in client.bound_requests] == [0.0, 1.0, 2.0]  # resolved: no query per cycle
    assert {at for at, _ in client.requests} == {2.0, 3.0, 4.0}  # good and total only once resolved
    # The online check asks through the same discovery: an answer it accepts is one eval reads.
    reloaded = Evaluator(slos, client, reuse=evaluator)
    anyio.run(reloaded.evaluate, 5.0)
    assert [at for at, _ in client.bound_requests] == [0.0, 1.0, 2.0, 5.0]  # once more per config (re)load


# --- long windows -----------------------------------------------------------------------------

THIRTY_DAYS = 30 * 86400


def long_only(body: str) -> tuple[SLODefinition, ...]:
    """SLOs over 30 days evaluated over their period only (no short window to hide a stale one)."""
    return tuple(dataclasses.replace(slo, windows=(THIRTY_DAYS,)) for slo in load(body, period="30d"))


def test_which_windows_are_long_does_not_depend_on_how_often_they_refresh() -> None:
    slos = load("- name: a\n  objective: 99\n  ratio: {bad: abad, total: atotal}", period="30d")
    minimum = Settings().long_window_min
    assert minimum == THIRTY_DAYS  # the default keeps 30d cached
    for refresh in (300.0, 600.0, 3600.0):
        client = TermClient(counts)
        evaluator = Evaluator(slos, client, long_window_refresh=refresh, long_window_min=minimum)
        for at in range(0, int(refresh), 30):
            anyio.run(evaluator.evaluate, float(at))
        thirty = [t for t in client.terms if "[30d]" in t]
        assert len(thirty) <= 2 * 2, (refresh, len(thirty))  # bad and total, at most once more in a period
        short = [t for t in client.terms if "[5m]" in t]
        assert len(short) == 2 * len(range(0, int(refresh), 30))  # every cycle


class Hanging:
    """A stand-in that never answers once ``hang`` is set."""

    def __init__(self, inner: TermClient) -> None:
        self.inner = inner
        self.hang = False

    async def query(self, promql: str, at: float) -> QueryResult:
        if self.hang:
            await anyio.sleep(math.inf)
        return await self.inner.query(promql, at)


def test_long_window_refresh_cut_off_by_the_deadline_is_no_data_not_an_expired_answer() -> None:
    slos = long_only("- name: a\n  objective: 99\n  ratio: {bad: abad, total: atotal}")
    client = Hanging(TermClient(counts))
    evaluator = Evaluator(slos, client, long_window_refresh=300, long_window_min=THIRTY_DAYS)
    (status,) = anyio.run(evaluator.evaluate, 0.0).statuses
    assert not status.stale
    client.hang = True
    (status,) = anyio.run(evaluator.evaluate, 60.0).statuses  # within the refresh period: from the cache
    assert not status.stale
    assert status.results[0].sli["30d"] is not None
    (status,) = anyio.run(lambda: evaluator.evaluate(700.0, deadline=0.2)).statuses  # refresh due, cut off
    assert status.results == ()  # the 30d window has no data this cycle: the expired answer is not served
    client.hang = False
    (status,) = anyio.run(evaluator.evaluate, 730.0).statuses  # asked again at the next cycle
    assert not status.stale
    assert [at for at, _ in client.inner.requests] == [0.0, 730.0]


def test_after_a_reload_every_part_of_a_long_window_comes_from_one_instant() -> None:
    first = long_only("- name: a\n  objective: 99\n  ratio: {bad: abad, total: shared}")
    both = long_only(
        "- name: a\n  objective: 99\n  ratio: {bad: abad, total: shared}\n"
        "- name: b\n  objective: 99\n  ratio: {bad: bbad, total: shared}"
    )
    client = TermClient(counts)
    old = Evaluator(first, client, long_window_refresh=300, long_window_min=THIRTY_DAYS)
    anyio.run(old.evaluate, 0.0)
    # The same config again: every answer still applies, nothing is asked.
    same = Evaluator(first, client, long_window_refresh=300, long_window_min=THIRTY_DAYS, reuse=old)
    anyio.run(same.evaluate, 10.0)
    assert [at for at, _ in client.requests] == [0.0]
    # b's bad is new: asking it now while its total comes from the cache would mix two instants.
    reloaded = Evaluator(both, client, long_window_refresh=300, long_window_min=THIRTY_DAYS, reuse=same)
    snapshot = anyio.run(reloaded.evaluate, 20.0)
    assert snapshot.succeeded
    asked_now = sorted(t for at, terms in client.requests if at == 20.0 for t in terms)
    assert asked_now == sorted(f"sum by () (increase({m}[30d]))" for m in ("abad", "shared", "bbad"))


# --- errors that split a packed request ---------------------------------------------------------


def test_victoria_metrics_errors_split_the_request() -> None:
    """VictoriaMetrics answers a bad query with HTTP 422 and ``errorType: "422"``, not ``bad_data``."""
    slos = load(
        "- name: ok\n  objective: 99\n  ratio: {bad: okbad, total: oktotal}\n"
        "- name: broken\n  objective: 99\n  ratio: {bad: brbad, total: brtotal}"
    )
    message = '422: error when executing query="brbad": cannot parse'

    def answer(expression: str) -> list[tuple[dict[str, str], float]]:
        if "brbad" in expression:
            raise PrometheusQueryError(message, query="q", error_type="422", status_code=422)
        return counts(expression)

    client = TermClient(answer)
    ok, broken = anyio.run(Evaluator(slos, client).evaluate, 1.0).statuses
    assert not ok.stale, ok.error
    assert broken.error == message


def test_a_cut_off_long_window_leaves_the_short_windows_and_their_alerts_standing() -> None:
    """A slow 30d refresh must not blind the fast-burn alert, which reads 1h and 5m."""
    (slo,) = load("- name: a\n  objective: 99\n  ratio: {bad: abad, total: atotal}", period="30d")

    class SlowLong:
        def __init__(self) -> None:
            self.inner = TermClient(counts)

        async def query(self, promql: str, at: float) -> QueryResult:
            if "[30d]" in promql and at > 0:
                await anyio.sleep(5)
            return await self.inner.query(promql, at)

    evaluator = Evaluator((slo,), SlowLong(), long_window_refresh=300, long_window_min=THIRTY_DAYS)
    anyio.run(evaluator.evaluate, 0.0)
    snapshot = anyio.run(lambda: evaluator.evaluate(700.0, deadline=0.3))
    (status,) = snapshot.statuses
    assert not status.stale
    (result,) = status.results
    assert result.sli["30d"] is None
    assert result.error_budget_remaining is None
    assert result.burn_rate["1h"] is not None
    assert result.burn_rate["5m"] is not None
