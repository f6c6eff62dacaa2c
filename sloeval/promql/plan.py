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
thirty days. With ``long_window_refresh`` = R > 0, windows of at least :data:`LONG_WINDOW_FACTOR`
x R (30 days at R = 5 minutes, so a value is at most 1/8640 of its window old) are re-evaluated
every R seconds instead of every cycle, each window at its own phase so that the work is spread
over the cycles, and all parts of one window at the same instant so that their ratio is
consistent. Shorter windows, which fast-burn alerts read, are always fresh.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sloeval.config.durations import format_duration
from sloeval.config.selectors import quote
from sloeval.config.slo_file import RawIndicator, SLODefinition
from sloeval.promql.expressions import SERIES_LABEL, Part, part_expressions

TERMS_PER_REQUEST = 32
"""Expressions per request: few enough that Prometheus answers in parallel, many enough to
keep the per-request overhead (HTTP, JSON, scheduling) small."""
LONG_WINDOW_FACTOR = 8640
"""A window at least this many refresh periods long may be served from an answer one refresh old:
30 days at 5 minutes, so a value is at most 1/8640 of its window old."""


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


class QueryPlan:
    """The distinct expressions of a set of SLOs, which SLO reads which, and how to pack them."""

    def __init__(self, slos: Sequence[SLODefinition], *, long_window_refresh: float = 0.0) -> None:
        self.long_window_refresh = long_window_refresh
        by_text: dict[tuple[str, str], Expression] = {}
        plans = []
        for slo in slos:
            group = slo.name if isinstance(slo.indicator, RawIndicator) else ""
            parts = []
            for window in slo.windows:
                for part, promql in part_expressions(slo, window):
                    expression = by_text.get((group, promql))
                    if expression is None:
                        expression = Expression(f"e{len(by_text)}", promql, window, group)
                        by_text[(group, promql)] = expression
                    parts.append(SLOPart(part, format_duration(window), expression))
            plans.append(SLOPlan(slo, tuple(parts)))
        self.expressions: tuple[Expression, ...] = tuple(by_text.values())
        self.slo_plans: tuple[SLOPlan, ...] = tuple(plans)

    def is_long(self, expression: Expression) -> bool:
        """Whether the expression may be served from an answer up to one refresh old."""
        refresh = self.long_window_refresh
        return refresh > 0 and expression.window >= LONG_WINDOW_FACTOR * refresh

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
