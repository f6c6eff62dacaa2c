"""What to ask Prometheus in a cycle (pure): shared expressions, packed requests, long-window cadence.

Every SLO needs, per window, one to two expressions such as
``sum by (endpoint) (increase(x{...}[30d]))``. Many SLOs need the same ones (an error SLO and a
latency SLO of one route share nothing, but three tiers of the same route, or an errors and a
success SLO, share their ``total``), so each distinct expression is evaluated once per cycle and
its answer shared. Distinct expressions are packed into requests of up to
:data:`TERMS_PER_REQUEST`, each term tagged with ``sloeval_series="<key>"`` and joined with
``or``; a raw SLI's user-written PromQL is packed only with its own SLO's terms, so it cannot
break anyone else's request.

Long windows change slowly: ``increase(x[30d])`` five minutes later differs by five minutes of
thirty days. With ``long_window_refresh`` = R > 0, windows of at least ``long_window_min`` (30
days by default) are re-evaluated every R seconds instead of every cycle, each window at its own
phase so that the work is spread over the cycles, and all expressions of one window at the same
instant so that their ratios are consistent. Shorter windows, which fast-burn alerts read, are
always fresh.

A latency SLI reads the bucket whose bound is its threshold, spelled as the exporter spelled it
(``le="0.30000000000000004"``); the plan is made with the ``le`` strings Prometheus reported for
each histogram (``bucket_bounds``). Until they are known, or when none is the threshold, the SLO
is not evaluated at all (:attr:`SLOPlan.blocked` says why): a missing bucket never reads as zero
good events. A histogram without any bucket series is no data, as a selector without series is.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sloeval.config.durations import format_duration
from sloeval.config.selectors import quote
from sloeval.config.slo_file import LatencyIndicator, RawIndicator, SLODefinition
from sloeval.promql.buckets import bounds_query, bucket_selector, format_threshold, match_bounds
from sloeval.promql.expressions import SERIES_LABEL, Part, part_expressions

TERMS_PER_REQUEST = 32
"""Expressions per request: few enough that Prometheus answers in parallel, many enough to
keep the per-request overhead (HTTP, JSON, scheduling) small."""
DEFAULT_LONG_WINDOW_MIN = 30 * 86400
"""Windows at least this long may be served from an answer up to one refresh old (30 days: at a
refresh of 5 minutes, a value is at most 1/8640 of its window old)."""


@dataclass(frozen=True)
class Expression:
    """One distinct untagged expression and the request group it may be packed in."""

    key: str
    promql: str
    window: int
    group: str  # "" for generated expressions; the SLO's name for raw SLIs (packed alone)


@dataclass(frozen=True)
class SLOPart:
    part: Part
    window_name: str
    expression: Expression


@dataclass(frozen=True)
class SLOPlan:
    slo: SLODefinition
    parts: tuple[SLOPart, ...]
    blocked: str | None = None  # why the SLO cannot be evaluated (stale; it has no parts)
    bounds_query: str | None = None  # a latency SLO's question for its histogram's `le` strings
    no_data: str | None = None  # why an SLO that is evaluated has no parts (no data, not stale)


def _latency_le(slo: SLODefinition, reported: Sequence[str] | None) -> tuple[tuple[str, ...], str | None, str | None]:
    """The `le` strings a latency SLO reads; else why the SLO is blocked (bounds not known yet, none
    of them the threshold) or has no data (the histogram has no buckets at all)."""
    assert isinstance(slo.indicator, LatencyIndicator)
    bucket = bucket_selector(slo.indicator)
    if reported is None:
        return (), f"bucket bounds of {bucket} not yet known", None
    match = match_bounds(reported, slo.indicator.threshold_seconds)
    if match.strings:
        return match.strings, None, None
    if not match.bounds:  # no series at all, as a ratio SLO's selector without series: no data
        return (), None, f"no histogram buckets for {bucket} in the last {slo.period_name}"
    threshold = format_threshold(slo.indicator.threshold_seconds)
    bounds = ", ".join(match.bounds)
    return (), f"threshold_seconds {threshold} is not a bucket bound of {bucket}; bounds: {bounds}", None


class QueryPlan:
    """The distinct expressions of a set of SLOs, which SLO reads which, and how to pack them.

    ``bucket_bounds`` maps a latency SLO's :func:`~sloeval.promql.buckets.bounds_query` to the
    ``le`` strings Prometheus answered; :attr:`bucket_queries` lists those still to ask: never
    answered, or answered without a bucket at some SLO's threshold (it may appear later).
    """

    def __init__(
        self,
        slos: Sequence[SLODefinition],
        *,
        long_window_refresh: float = 0.0,
        long_window_min: float = DEFAULT_LONG_WINDOW_MIN,
        bucket_bounds: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.long_window_refresh = long_window_refresh
        self.long_window_min = long_window_min
        known = bucket_bounds or {}
        by_text: dict[tuple[str, str], Expression] = {}
        plans = []
        to_ask: dict[str, None] = {}
        for slo in slos:
            group = slo.name if isinstance(slo.indicator, RawIndicator) else ""
            le: tuple[str, ...] = ()
            query = None
            if isinstance(slo.indicator, LatencyIndicator):
                query = bounds_query(slo)
                le, blocked, no_data = _latency_le(slo, known.get(query))
                if not le:
                    to_ask[query] = None
                    plans.append(SLOPlan(slo, (), blocked, query, no_data))
                    continue
            parts = []
            for window in slo.windows:
                for part, promql in part_expressions(slo, window, le):
                    expression = by_text.get((group, promql))
                    if expression is None:
                        expression = Expression(f"e{len(by_text)}", promql, window, group)
                        by_text[(group, promql)] = expression
                    parts.append(SLOPart(part, format_duration(window), expression))
            plans.append(SLOPlan(slo, tuple(parts), None, query))
        self.expressions: tuple[Expression, ...] = tuple(by_text.values())
        self.slo_plans: tuple[SLOPlan, ...] = tuple(plans)
        self.bucket_queries: tuple[str, ...] = tuple(to_ask)

    def is_long(self, expression: Expression) -> bool:
        """Whether the expression may be served from an answer up to one refresh old."""
        return self.long_window_refresh > 0 and expression.window >= self.long_window_min

    def next_refresh(self, expression: Expression, at: float) -> float:
        """When the answer got at ``at`` must be asked again: the next point of its window's grid.

        Every expression of one window shares a grid (a period of ``long_window_refresh`` at a
        phase of its own), so the parts of an SLI (bad and total, good and total) always come
        from the same instant; the windows' phases differ, spreading the work over the cycles.
        """
        refresh = self.long_window_refresh
        phase = refresh * (zlib.crc32(str(expression.window).encode()) % 997) / 997
        return phase + refresh * (math.floor((at - phase) / refresh) + 1)


def pack(expressions: Iterable[Expression], terms: int = TERMS_PER_REQUEST) -> list[tuple[Expression, ...]]:
    """Requests of up to ``terms`` expressions; expressions of different groups never share one."""
    groups: dict[str, list[Expression]] = {}
    for expression in expressions:
        groups.setdefault(expression.group, []).append(expression)
    requests: list[tuple[Expression, ...]] = []
    for members in groups.values():
        requests.extend(tuple(members[i : i + terms]) for i in range(0, len(members), terms))
    return requests


def request_promql(expressions: Sequence[Expression]) -> str:
    """One query answering every expression, each answer tagged with its key."""
    return "\nor ".join(f'label_replace({e.promql}, "{SERIES_LABEL}", {quote(e.key)}, "", "")' for e in expressions)
