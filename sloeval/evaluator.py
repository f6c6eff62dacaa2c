"""One evaluation cycle: run every SLO's query at one pinned timestamp and do the math."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

import anyio
import structlog

from sloeval import sli_math
from sloeval.prometheus_api import PrometheusQueryError, QueryResult
from sloeval.queries import SERIES_LABEL, SLOQuery, build_query, parse_tag
from sloeval.slo_config import RESERVED_LABELS, RatioIndicator, RawIndicator, SLODefinition
from sloeval.snapshot import EventCounts, SLOResult, SLOStatus, Snapshot

log = structlog.get_logger("sloeval.evaluator")

LabelKey = tuple[tuple[str, str], ...]


class QueryClient(Protocol):
    async def query(self, promql: str, at: float) -> QueryResult: ...


class Evaluator:
    """Evaluates a fixed set of SLOs; queries are built once, when the config is loaded."""

    def __init__(self, slos: Sequence[SLODefinition], client: QueryClient, *, concurrency: int = 8) -> None:
        self._queries = tuple(build_query(slo) for slo in slos)
        self._client = client
        self._limiter = anyio.CapacityLimiter(max(1, concurrency))

    @property
    def queries(self) -> tuple[SLOQuery, ...]:
        return self._queries

    async def evaluate(self, at: float, *, deadline: float | None = None) -> Snapshot:
        """Evaluate all SLOs at unix time ``at``; failures mark single SLOs stale.

        SLOs not finished within ``deadline`` seconds are stale in the snapshot too, so a
        slow cycle is visible instead of silently missing.
        """
        started = time.perf_counter()
        statuses: list[SLOStatus | None] = [None] * len(self._queries)

        async def run(index: int, query: SLOQuery) -> None:
            async with self._limiter:
                statuses[index] = await self._evaluate_one(query, at)

        with anyio.move_on_after(deadline if deadline is not None else math.inf):
            async with anyio.create_task_group() as group:
                for index, query in enumerate(self._queries):
                    group.start_soon(run, index, query)
        done = []
        for query, status in zip(self._queries, statuses, strict=True):
            if status is None:
                log.warning("slo_query_unfinished", slo=query.slo.name, deadline_seconds=deadline)
                status = SLOStatus(slo=query.slo, results=(), error=f"not evaluated within {deadline:g}s")
            done.append(status)
        return Snapshot(evaluated_at=at, duration_seconds=time.perf_counter() - started, statuses=tuple(done))

    async def _evaluate_one(self, query: SLOQuery, at: float) -> SLOStatus:
        try:
            result = await self._client.query(query.promql, at)
        except PrometheusQueryError as exc:
            log.warning(
                "slo_query_failed",
                slo=query.slo.name,
                error=exc.message,
                error_type=exc.error_type,
                status_code=exc.status_code,
                query=exc.query,
            )
            return SLOStatus(slo=query.slo, results=(), error=exc.message)
        return SLOStatus(slo=query.slo, results=results_from_samples(query.slo, result))


def results_from_samples(slo: SLODefinition, result: QueryResult) -> tuple[SLOResult, ...]:
    """Take the tagged answer of one SLO's query apart and compute its numbers (pure)."""
    values: dict[LabelKey, dict[tuple[str, str], float]] = defaultdict(dict)
    for sample in result.samples:
        labels = dict(sample.labels)
        tag = parse_tag(labels.pop(SERIES_LABEL, ""))
        if tag is None:
            log.warning("unexpected_series", slo=slo.name, labels=sample.labels)
            continue
        labels.pop("__name__", None)
        if isinstance(slo.indicator, RawIndicator):
            # sloeval's own labels (slo, service, window, ...) win over the query's.
            key: LabelKey = tuple(sorted((k, v) for k, v in labels.items() if k not in RESERVED_LABELS))
        else:
            key = tuple((name, labels.get(name, "")) for name in slo.group_by)
        if tag in values[key]:
            log.warning("duplicate_series", slo=slo.name, labels=dict(key), part=tag[0], window=tag[1])
            continue
        values[key][tag] = sample.value
    results = []
    for key in sorted(values):
        parts = values[key]
        if not any(part in ("total", "error_ratio") for part, _ in parts):
            continue  # bad or good events without any total: nothing to divide by
        results.append(_result_for(slo, key, parts))
    return tuple(results)


def _result_for(slo: SLODefinition, key: LabelKey, parts: dict[tuple[str, str], float]) -> SLOResult:
    sli: dict[str, float | None] = {}
    burn: dict[str, float | None] = {}
    events: dict[str, EventCounts] = {}
    uses_bad = isinstance(slo.indicator, RatioIndicator) and slo.indicator.bad is not None
    for window in slo.window_names:
        if isinstance(slo.indicator, RawIndicator):
            window_sli = sli_math.sli_from_error_ratio(parts.get(("error_ratio", window)))
        else:
            total = parts.get(("total", window))
            if uses_bad:
                bad = parts.get(("bad", window))
                window_sli = sli_math.sli_from_bad(bad, total)
                good = None if total is None else total - (bad or 0.0)
            else:
                good = parts.get(("good", window))
                window_sli = sli_math.sli_from_good(good, total)
            events[window] = EventCounts(good=good, total=total)
        if window_sli.clamped:
            log.warning("sli_clamped", slo=slo.name, labels=dict(key), window=window, sli=window_sli.value)
        sli[window] = window_sli.value
        burn[window] = sli_math.burn_rate(window_sli.value, slo.objective)
    remaining = sli_math.budget_remaining(burn[slo.period_name])
    return SLOResult(labels=key, sli=sli, burn_rate=burn, events=events, error_budget_remaining=remaining)
