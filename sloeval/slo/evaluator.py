"""One evaluation cycle: run every SLO's query at one pinned timestamp and do the math."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import anyio
import structlog

from sloeval.config.slo_file import RESERVED_LABELS, LatencyIndicator, RatioIndicator, RawIndicator, SLODefinition
from sloeval.prometheus.results import PrometheusQueryError, QueryResult
from sloeval.promql.expressions import SERIES_LABEL
from sloeval.promql.plan import DEFAULT_LONG_WINDOW_MIN, Expression, QueryPlan, SLOPlan, pack, request_promql
from sloeval.slo import sli_math
from sloeval.slo.snapshot import EventCounts, SLOResult, SLOStatus, Snapshot, WindowValues

log = structlog.get_logger("sloeval.evaluator")

LabelKey = tuple[tuple[str, str], ...]
Samples = list[tuple[dict[str, str], float]]
Ident = tuple[str, str]
"""An expression whatever key a plan gave it: (request group, PromQL)."""
Keyed = dict[tuple[Ident, tuple[str, ...]], list[tuple[LabelKey, float]]]


class QueryClient(Protocol):
    async def query(self, promql: str, at: float) -> QueryResult: ...


_SPLITTABLE_ERRORS = frozenset({"bad_data", "execution"})
"""Errors that may come from one term of a packed request: its terms are then asked one by one."""
_SPLITTABLE_STATUS = frozenset({400, 422})
"""The same, told by the HTTP status: Prometheus sends bad_data with 400 and execution with 422;
VictoriaMetrics sends 422 with ``errorType`` "422" for a query it cannot parse or run."""


def _splittable(exc: PrometheusQueryError) -> bool:
    # An answer Prometheus sent with 200 that sloeval cannot read (a result that is not a vector,
    # a malformed element) may also be one term's doing.
    return (
        exc.error_type in _SPLITTABLE_ERRORS
        or (exc.status_code in _SPLITTABLE_STATUS and not exc.retryable)
        or (exc.error_type is None and exc.status_code == 200)
    )


def _ident(expression: Expression) -> Ident:
    return (expression.group, expression.promql)


class _Cached(NamedTuple):
    """A long-window expression's last answer."""

    samples: Samples
    asked_at: float  # the instant it is the answer for
    refresh_at: float  # when it must be asked again


@dataclass
class _Answers:
    """What one cycle learned: samples per expression, or why there are none."""

    samples: dict[Ident, Samples] = field(default_factory=dict)
    errors: dict[Ident, PrometheusQueryError] = field(default_factory=dict)


class Evaluator:
    """Evaluates a fixed set of SLOs; the query plan is made once, when the config is loaded.

    Latency SLOs wait for their histogram's bucket bounds: the first cycle asks Prometheus for the
    ``le`` strings (while the other SLOs' requests run) and the plan is remade with them; an SLO
    whose threshold is no bound, or whose bounds are not known yet, is stale, never a 0 SLI (a
    histogram without any bucket series is no data). A question with an answer for every SLO is not
    asked again for this evaluator (a reload makes a new one); one without is asked every cycle.

    The evaluator keeps the answers of long windows between cycles (see :mod:`sloeval.promql.plan`);
    pass the previous evaluator as ``reuse`` after a config reload to keep those that still apply.
    All expressions of one long window come from one instant: when one of them has no answer for
    the instant the others answer for (a new SLO, a refresh cut off by the deadline), the whole
    window is asked again. A refresh the cycle deadline cuts off leaves the SLOs that read it stale
    for that cycle; an expired answer is never served.
    """

    def __init__(
        self,
        slos: Sequence[SLODefinition],
        client: QueryClient,
        *,
        concurrency: int = 8,
        long_window_refresh: float = 0.0,
        long_window_min: float = DEFAULT_LONG_WINDOW_MIN,
        reuse: Evaluator | None = None,
    ) -> None:
        self._slos = tuple(slos)
        self._client = client
        self._limiter = anyio.CapacityLimiter(max(1, concurrency))
        self._long_window_refresh = long_window_refresh
        self._long_window_min = long_window_min
        # bounds query -> the `le` strings Prometheus reported for it
        self._bounds: dict[str, tuple[str, ...]] = {}
        self._plan = self._make_plan()
        # promql -> the last answer of a long-window expression. A reload keeps them all until the
        # end of its first cycle: its plan is complete only once the bucket bounds are known.
        self._long: dict[str, _Cached] = dict(reuse._long) if reuse is not None else {}

    @property
    def plan(self) -> QueryPlan:
        """The query plan; remade when bucket bounds are learned."""
        return self._plan

    def _make_plan(self) -> QueryPlan:
        return QueryPlan(
            self._slos,
            long_window_refresh=self._long_window_refresh,
            long_window_min=self._long_window_min,
            bucket_bounds=self._bounds,
        )

    def _needed(self, plan: QueryPlan, at: float) -> list[Expression]:
        """Every short-window expression, and the long windows without one valid instant's answers."""
        cached: dict[int, list[_Cached | None]] = defaultdict(list)
        for expression in plan.expressions:
            if plan.is_long(expression):
                cached[expression.window].append(self._long.get(expression.promql))
        fresh = set()
        for window, entries in cached.items():
            instants = set()
            for entry in entries:
                if entry is None or at >= entry.refresh_at:
                    break
                instants.add(entry.asked_at)
            else:
                if len(instants) == 1:
                    fresh.add(window)
        return [e for e in plan.expressions if not (plan.is_long(e) and e.window in fresh)]

    async def evaluate(self, at: float, *, deadline: float | None = None) -> Snapshot:
        """Evaluate all SLOs at unix time ``at``; failures mark single SLOs stale.

        SLOs not finished within ``deadline`` seconds are stale in the snapshot too, so a
        slow cycle is visible instead of silently missing.
        """
        started = time.perf_counter()
        cycle = _Cycle(self, at, deadline)
        first = self._plan
        with anyio.move_on_after(deadline if deadline is not None else math.inf):
            async with anyio.create_task_group() as group:
                group.start_soon(cycle.ask, first, range(len(first.slo_plans)))
                if first.bucket_queries:
                    group.start_soon(self._discover, cycle)
            if self._plan is not first:  # bucket bounds learned: evaluate the SLOs they unblocked
                pairs = zip(first.slo_plans, self._plan.slo_plans, strict=True)
                unblocked = [
                    index
                    for index, (was, now) in enumerate(pairs)
                    if now.blocked is None and (was.blocked is not None or (not was.parts and now.parts))
                ]
                await cycle.ask(self._plan, unblocked)
        statuses = cycle.finish(self._plan)
        self._remember_long(cycle.answers, at)
        return Snapshot(evaluated_at=at, duration_seconds=time.perf_counter() - started, statuses=statuses)

    async def _discover(self, cycle: _Cycle) -> None:
        """Ask the plan's bucket-bound questions; remake the plan when an answer is new."""
        learned: dict[str, tuple[str, ...]] = {}

        async def ask(query: str) -> None:
            try:
                async with self._limiter:
                    result = await self._client.query(query, cycle.at)
            except PrometheusQueryError as exc:
                cycle.bucket_errors[query] = exc
                return
            learned[query] = tuple(sorted({s.labels["le"] for s in result.samples if "le" in s.labels}))

        try:
            async with anyio.create_task_group() as group:
                for query in self._plan.bucket_queries:
                    group.start_soon(ask, query)
        finally:  # also when the deadline cut some off: keep what was answered
            changed = {query: bounds for query, bounds in learned.items() if self._bounds.get(query) != bounds}
            if changed:
                for query, bounds in changed.items():
                    log.debug("bucket_bounds", query=query, bounds=list(bounds))
                self._bounds.update(changed)
                self._plan = self._make_plan()

    def _remember_long(self, answers: _Answers, at: float) -> None:
        plan = self._plan
        wanted = {e.promql: e for e in plan.expressions if plan.is_long(e)}
        kept = {promql: entry for promql, entry in self._long.items() if promql in wanted}
        for promql, expression in wanted.items():
            samples = answers.samples.get(_ident(expression))
            if samples is not None:
                kept[promql] = _Cached(samples, at, plan.next_refresh(expression, at))
        self._long = kept


@dataclass
class _Asked:
    """How one SLO was asked for in a cycle: its plan, what was asked then, the label keys made."""

    plan: SLOPlan
    needed: frozenset[Ident]
    keyed: Keyed


class _Cycle:
    """One ``evaluate``: the answers so far, and each SLO's status as soon as its last one is in."""

    def __init__(self, evaluator: Evaluator, at: float, deadline: float | None) -> None:
        self.evaluator = evaluator
        self.at = at
        self.deadline = deadline
        self.answers = _Answers()
        self.bucket_errors: dict[str, PrometheusQueryError] = {}
        count = len(evaluator.plan.slo_plans)
        self.statuses: list[SLOStatus | None] = [None] * count
        self.asked: list[_Asked | None] = [None] * count

    async def ask(self, plan: QueryPlan, indices: Iterable[int]) -> None:
        """Ask what the SLOs at ``indices`` need and is not answered yet; assemble each SLO as soon as
        the last of its expressions is answered, while other requests are still with Prometheus."""
        answers = self.answers
        chosen = [i for i in indices if plan.slo_plans[i].blocked is None]
        wanted = {_ident(p.expression) for i in chosen for p in plan.slo_plans[i].parts}
        needed = [
            e
            for e in self.evaluator._needed(plan, self.at)
            if _ident(e) in wanted and _ident(e) not in answers.samples and _ident(e) not in answers.errors
        ]
        needed_idents = frozenset(_ident(e) for e in needed)
        keyed: Keyed = {}  # label keys per expression, shared by the SLOs of this request round
        waiting: dict[Ident, list[int]] = defaultdict(list)
        unanswered: dict[int, int] = {}
        for index in chosen:
            self.asked[index] = _Asked(plan.slo_plans[index], needed_idents, keyed)
            self.statuses[index] = None
            idents = {_ident(p.expression) for p in plan.slo_plans[index].parts} & needed_idents
            unanswered[index] = len(idents)
            for ident in idents:
                waiting[ident].append(index)
            if not idents:  # all from this cycle's answers or the cache
                self.statuses[index] = self._status(index)
        splittable: list[tuple[Expression, ...]] = []
        succeeded = 0

        def settle(members: tuple[Expression, ...]) -> None:
            for member in members:
                for index in waiting.pop(_ident(member), ()):
                    unanswered[index] -= 1
                    if unanswered[index] == 0:
                        self.statuses[index] = self._status(index)

        async def run(members: tuple[Expression, ...]) -> None:
            nonlocal succeeded
            try:
                async with self.evaluator._limiter:
                    result = await self.evaluator._client.query(request_promql(members), self.at)
            except PrometheusQueryError as exc:
                for member in members:
                    answers.errors[_ident(member)] = exc
                if len(members) > 1 and _splittable(exc):
                    splittable.append(members)  # may be asked again term by term
                else:
                    settle(members)
                return
            succeeded += 1
            by_key = {m.key: _ident(m) for m in members}
            for member in members:
                answers.samples[_ident(member)] = []
                answers.errors.pop(_ident(member), None)
            for sample in result.samples:
                labels = dict(sample.labels)
                key = labels.pop(SERIES_LABEL, None)
                if key in by_key:
                    answers.samples[by_key[key]].append((labels, sample.value))
                else:
                    log.warning("unexpected_series", labels=sample.labels)
            settle(members)

        async def run_all(requests: Sequence[tuple[Expression, ...]]) -> None:
            async with anyio.create_task_group() as group:
                for members in requests:
                    group.start_soon(run, members)

        # Long windows in requests of their own: a slow 30d refresh never holds up the short windows.
        short = pack([e for e in needed if not plan.is_long(e)])
        await run_all(short + pack([e for e in needed if plan.is_long(e)]))
        # A term's own fault (see _splittable) may come from one term: ask the terms of such
        # requests one by one, so that one broken SLO does not take the others down. When every
        # request failed, one request is split first as a probe; if none of its terms succeeds
        # either, the error is Prometheus's, not a term's, and no more requests are sent.
        if splittable and not succeeded:
            # A raw SLI's request holds one SLO's own PromQL: its failure says nothing of Prometheus.
            shared = [i for i, members in enumerate(splittable) if members[0].group == ""]
            probe = splittable.pop(shared[0] if shared else 0)
            await run_all([(member,) for member in probe])
        if splittable and succeeded:
            await run_all([(member,) for members in splittable for member in members])

    def finish(self, plan: QueryPlan) -> tuple[SLOStatus, ...]:
        """Every SLO's status: assembled, failed, cut off by the deadline, or not evaluable."""
        statuses = []
        for index, slo_plan in enumerate(plan.slo_plans):
            status = self.statuses[index]
            if status is None and self.asked[index] is not None:
                status = self._status(index)
            elif status is None and slo_plan.blocked is not None:
                status = self._blocked(slo_plan)
            elif status is None:  # unblocked by bounds learned just before the deadline
                status = self._unfinished(slo_plan.slo)
            statuses.append(status)
        return tuple(statuses)

    def _unfinished(self, slo: SLODefinition) -> SLOStatus:
        log.warning("slo_query_unfinished", slo=slo.name, deadline_seconds=self.deadline)
        return SLOStatus(slo=slo, results=(), error=f"not evaluated within {self.deadline:g}s")

    def _blocked(self, slo_plan: SLOPlan) -> SLOStatus:
        slo, error = slo_plan.slo, slo_plan.blocked
        assert error is not None
        query = slo_plan.bounds_query
        unknown = query is not None and query not in self.evaluator._bounds
        exc = self.bucket_errors.get(query) if query is not None and unknown else None
        if exc is not None:
            _log_failed(slo, exc)
            error = f"{error}: {exc.message}"
        elif unknown and self.deadline is not None:
            log.warning("slo_query_unfinished", slo=slo.name, deadline_seconds=self.deadline)
            error = f"{error}: not answered within {self.deadline:g}s"
        else:
            log.warning("slo_not_evaluated", slo=slo.name, error=error)
        return SLOStatus(slo=slo, results=(), error=error)

    def _status(self, index: int) -> SLOStatus:
        asked = self.asked[index]
        assert asked is not None
        slo = asked.plan.slo
        answers = self.answers
        values: dict[LabelKey, dict[tuple[str, str], float]] = defaultdict(dict)
        for part in asked.plan.parts:
            ident = _ident(part.expression)
            samples = answers.samples.get(ident)
            if samples is None and ident in answers.errors:
                exc = answers.errors[ident]
                _log_failed(slo, exc)
                return SLOStatus(slo=slo, results=(), error=exc.message)
            if samples is None and ident not in asked.needed:  # a long window, valid at this instant
                cached = self.evaluator._long.get(part.expression.promql)
                samples = cached.samples if cached is not None else None
            if samples is None and self.evaluator.plan.is_long(part.expression):
                # A long window's refresh cut off by the deadline: that window has no data this cycle
                # (never an expired answer), while the SLO's short windows, which fast-burn alerts
                # read, still stand.
                log.warning("long_window_unfinished", slo=slo.name, window=part.window_name)
                continue
            if samples is None:  # asked, and cut off by the deadline
                return self._unfinished(slo)
            tag = (part.part, part.window_name)
            raw = isinstance(slo.indicator, RawIndicator)
            cache_key = (ident, slo.group_by)
            pairs = None if raw else asked.keyed.get(cache_key)
            if pairs is None:
                pairs = [(_label_key(slo, labels), value) for labels, value in samples]
                if not raw:
                    asked.keyed[cache_key] = pairs
            for label_key, value in pairs:
                _put(values, slo, label_key, tag, value)
        return SLOStatus(slo=slo, results=_results(slo, values))


def _put(
    values: dict[LabelKey, dict[tuple[str, str], float]],
    slo: SLODefinition,
    key: LabelKey,
    tag: tuple[str, str],
    value: float,
) -> None:
    """Record one part of one window; the first of two series with the same tag wins."""
    if tag in values[key]:
        log.warning("duplicate_series", slo=slo.name, labels=dict(key), part=tag[0], window=tag[1])
        return
    values[key][tag] = value


def _label_key(slo: SLODefinition, labels: dict[str, str]) -> LabelKey:
    if isinstance(slo.indicator, RawIndicator):
        # sloeval's own labels (slo, service, window, ...) win over the query's.
        return tuple(sorted((k, v) for k, v in labels.items() if k not in RESERVED_LABELS and k != "__name__"))
    return tuple((name, labels.get(name, "")) for name in slo.group_by)


def _results(slo: SLODefinition, values: dict[LabelKey, dict[tuple[str, str], float]]) -> tuple[SLOResult, ...]:
    results = []
    for key in sorted(values):
        parts = values[key]
        if not any(part in ("total", "error_ratio") for part, _ in parts):
            continue  # bad or good events without any total: nothing to divide by
        results.append(_result_for(slo, key, parts))
    return tuple(results)


def _result_for(slo: SLODefinition, key: LabelKey, parts: dict[tuple[str, str], float]) -> SLOResult:
    slis: list[float | None] = []
    burns: list[float | None] = []
    events: list[EventCounts] = []
    raw = isinstance(slo.indicator, RawIndicator)
    uses_bad = isinstance(slo.indicator, RatioIndicator) and slo.indicator.bad is not None
    latency = isinstance(slo.indicator, LatencyIndicator)
    for window in slo.window_names:
        if raw:
            window_sli = sli_math.sli_from_error_ratio(parts.get(("error_ratio", window)))
            events.append(EventCounts(None, None))
        else:
            total = parts.get(("total", window))
            if uses_bad:
                bad = parts.get(("bad", window))
                window_sli = sli_math.sli_from_bad(bad, total)
                good = None if total is None else total - (bad or 0.0)
            else:
                good = parts.get(("good", window))
                if latency and good is None:  # a count without the threshold's bucket: no data, not 0 good
                    window_sli = sli_math.WindowSLI(None)
                else:
                    window_sli = sli_math.sli_from_good(good, total)
            events.append(EventCounts(good, total))
        if window_sli.clamped:
            log.warning("sli_clamped", slo=slo.name, labels=dict(key), window=window, sli=window_sli.value)
        slis.append(window_sli.value)
        burns.append(sli_math.burn_rate(window_sli.value, slo.objective))
    names = slo.window_names
    burn = WindowValues(names, burns)
    return SLOResult(
        labels=key,
        sli=WindowValues(names, slis),
        burn_rate=burn,
        events=WindowValues(names, events) if not raw else WindowValues((), ()),
        error_budget_remaining=sli_math.budget_remaining(burn[slo.period_name]),
    )


def _log_failed(slo: SLODefinition, exc: PrometheusQueryError) -> None:
    log.warning(
        "slo_query_failed",
        slo=slo.name,
        error=exc.message,
        error_type=exc.error_type,
        status_code=exc.status_code,
        query=exc.query,
    )
