"""One evaluation cycle: run every SLO's query at one pinned timestamp and do the math."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import structlog

from sloeval.config.slo_file import RESERVED_LABELS, RatioIndicator, RawIndicator, SLODefinition
from sloeval.prometheus.results import PrometheusQueryError, QueryResult
from sloeval.promql.expressions import SERIES_LABEL
from sloeval.promql.plan import Expression, QueryPlan, SLOPlan, pack, request_promql
from sloeval.slo import sli_math
from sloeval.slo.snapshot import EventCounts, SLOResult, SLOStatus, Snapshot, WindowValues

log = structlog.get_logger("sloeval.evaluator")

LabelKey = tuple[tuple[str, str], ...]


class QueryClient(Protocol):
    async def query(self, promql: str, at: float) -> QueryResult: ...


_SPLITTABLE_ERRORS = frozenset({"bad_data", "execution"})
"""Errors that may come from one term of a packed request: its terms are then asked one by one."""


def _splittable(exc: PrometheusQueryError) -> bool:
    # An answer Prometheus sent with 200 that sloeval cannot read (a result that is not a vector,
    # a malformed element) may also be one term's doing.
    return exc.error_type in _SPLITTABLE_ERRORS or (exc.error_type is None and exc.status_code == 200)


@dataclass
class _Answers:
    """What one cycle learned: samples per expression key, or why there are none."""

    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    errors: dict[str, PrometheusQueryError] = field(default_factory=dict)
    succeeded: int = 0  # requests answered


class Evaluator:
    """Evaluates a fixed set of SLOs; the query plan is made once, when the config is loaded.

    The evaluator keeps the answers of long windows between cycles (see :mod:`sloeval.promql.plan`);
    pass the previous evaluator as ``reuse`` after a config reload to keep those that still apply.
    """

    def __init__(
        self,
        slos: Sequence[SLODefinition],
        client: QueryClient,
        *,
        concurrency: int = 8,
        long_window_refresh: float = 0.0,
        reuse: Evaluator | None = None,
    ) -> None:
        self._plan = QueryPlan(slos, long_window_refresh=long_window_refresh)
        self._client = client
        self._limiter = anyio.CapacityLimiter(max(1, concurrency))
        # promql -> (samples, when to ask again); only long-window expressions are kept.
        self._long: dict[str, tuple[list[tuple[dict[str, str], float]], float]] = {}
        if reuse is not None:
            wanted = {e.promql for e in self._plan.expressions if self._plan.is_long(e)}
            self._long = {k: v for k, v in reuse._long.items() if k in wanted}

    def _needed(self, at: float) -> list[Expression]:
        needed = []
        for expression in self._plan.expressions:
            cached = self._long.get(expression.promql) if self._plan.is_long(expression) else None
            if cached is None or at >= cached[1]:
                needed.append(expression)
        return needed

    async def evaluate(self, at: float, *, deadline: float | None = None) -> Snapshot:
        """Evaluate all SLOs at unix time ``at``; failures mark single SLOs stale.

        SLOs not finished within ``deadline`` seconds are stale in the snapshot too, so a
        slow cycle is visible instead of silently missing.
        """
        started = time.perf_counter()
        answers = _Answers()
        splittable: list[tuple[Expression, ...]] = []
        needed = self._needed(at)
        plans = self._plan.slo_plans
        statuses: list[SLOStatus | None] = [None] * len(plans)
        keyed: dict[tuple[str, tuple[str, ...]], list[tuple[LabelKey, float]]] = {}  # shared by SLOs
        # An SLO is assembled as soon as the last of its expressions is answered, while other
        # requests are still with Prometheus, instead of all of them after the last answer.
        needed_keys = {e.key for e in needed}
        waiting: dict[str, list[int]] = defaultdict(list)
        unanswered = [0] * len(plans)
        for index, plan in enumerate(plans):
            keys = {p.expression.key for p in plan.parts} & needed_keys
            unanswered[index] = len(keys)
            for key in keys:
                waiting[key].append(index)

        def settle(members: tuple[Expression, ...]) -> None:
            for member in members:
                for index in waiting.pop(member.key, ()):
                    unanswered[index] -= 1
                    if unanswered[index] == 0:
                        statuses[index] = self._status(plans[index], answers, keyed, deadline)

        async def run(members: tuple[Expression, ...]) -> None:
            try:
                async with self._limiter:
                    result = await self._client.query(request_promql(members), at)
            except PrometheusQueryError as exc:
                for member in members:
                    answers.errors[member.key] = exc
                if len(members) > 1 and _splittable(exc):
                    splittable.append(members)  # may be asked again term by term
                else:
                    settle(members)
                return
            answers.succeeded += 1
            keys = {m.key for m in members}
            for member in members:
                answers.samples[member.key] = []
                answers.errors.pop(member.key, None)
            for sample in result.samples:
                labels = dict(sample.labels)
                key = labels.pop(SERIES_LABEL, None)
                if key in keys:
                    answers.samples[key].append((labels, sample.value))
                else:
                    log.warning("unexpected_series", labels=sample.labels)
            settle(members)

        async def run_all(requests: Sequence[tuple[Expression, ...]]) -> None:
            async with anyio.create_task_group() as group:
                for members in requests:
                    group.start_soon(run, members)

        with anyio.move_on_after(deadline if deadline is not None else math.inf):
            await run_all(pack(needed))
            # A bad_data or execution error may come from one term: ask the terms of such requests
            # one by one, so that one broken SLO does not take the others down. When every request
            # failed, one request is split first as a probe; if none of its terms succeeds either,
            # the error is Prometheus's, not a term's, and no more requests are sent.
            if splittable and not answers.succeeded:
                probe = splittable.pop(0)
                await run_all([(member,) for member in probe])
            if splittable and answers.succeeded:
                await run_all([(member,) for members in splittable for member in members])
        self._remember_long(answers, at)
        done = tuple(
            status if status is not None else self._status(plan, answers, keyed, deadline)
            for plan, status in zip(plans, statuses, strict=True)
        )
        return Snapshot(evaluated_at=at, duration_seconds=time.perf_counter() - started, statuses=done)

    def _remember_long(self, answers: _Answers, at: float) -> None:
        for expression in self._plan.expressions:
            if not self._plan.is_long(expression) or expression.key not in answers.samples:
                continue
            self._long[expression.promql] = (answers.samples[expression.key], self._plan.next_refresh(expression, at))

    def _status(
        self,
        plan: SLOPlan,
        answers: _Answers,
        keyed: dict[tuple[str, tuple[str, ...]], list[tuple[LabelKey, float]]],
        deadline: float | None,
    ) -> SLOStatus:
        slo = plan.slo
        values: dict[LabelKey, dict[tuple[str, str], float]] = defaultdict(dict)
        for part in plan.parts:
            key = part.expression.key
            samples = answers.samples.get(key)
            if samples is None and key in answers.errors:
                exc = answers.errors[key]
                log.warning(
                    "slo_query_failed",
                    slo=slo.name,
                    error=exc.message,
                    error_type=exc.error_type,
                    status_code=exc.status_code,
                    query=exc.query,
                )
                return SLOStatus(slo=slo, results=(), error=exc.message)
            if samples is None and self._plan.is_long(part.expression):
                cached = self._long.get(part.expression.promql)
                samples = cached[0] if cached is not None else None
            if samples is None:
                log.warning("slo_query_unfinished", slo=slo.name, deadline_seconds=deadline)
                return SLOStatus(slo=slo, results=(), error=f"not evaluated within {deadline:g}s")
            tag = (part.part, part.window_name)
            raw = isinstance(slo.indicator, RawIndicator)
            cache_key = (key, slo.group_by)
            pairs = None if raw else keyed.get(cache_key)
            if pairs is None:
                pairs = [(_label_key(slo, labels), value) for labels, value in samples]
                if not raw:
                    keyed[cache_key] = pairs
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
