"""PromQL generation: the one place where SLO definitions become query text.

For each window of an SLO, :func:`part_expressions` builds the untagged expressions of its parts
(good/bad/total, or a raw SLI's error ratio), such as ``sum by (endpoint) (increase(x{...}[30d]))``.
The query plan (:mod:`sloeval.promql.plan`) shares identical expressions between SLOs and packs
them into requests, tagging each with :data:`SERIES_LABEL` so that the answer can be taken apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from sloeval.config.durations import format_duration
from sloeval.config.selectors import Selector
from sloeval.config.slo_file import LatencyIndicator, RatioIndicator, RawIndicator, SLODefinition, UptimeIndicator
from sloeval.promql.buckets import bucket_selector, le_matcher

SERIES_LABEL = "sloeval_series"
Part = Literal["good", "bad", "total", "error_ratio"]


def _by(group_by: Iterable[str]) -> str:
    labels = ", ".join(group_by)
    return f" by ({labels})"


def _sum_increase(selector: Selector, window: int, group_by: tuple[str, ...]) -> str:
    return f"sum{_by(group_by)} (increase({selector.render()}[{format_duration(window)}]))"


def _sum_over(function: str, selector: Selector, window: int, group_by: tuple[str, ...]) -> str:
    return f"sum{_by(group_by)} ({function}({selector.render()}[{format_duration(window)}]))"


def part_expressions(slo: SLODefinition, window: int, le: Sequence[str] = ()) -> list[tuple[Part, str]]:
    """The untagged expressions for one window, e.g. ``[("bad", ...), ("total", ...)]``.

    A latency SLI needs ``le``: the ``le`` strings of the bucket at its threshold, as Prometheus
    reports them (:mod:`sloeval.promql.buckets`).
    """
    indicator = slo.indicator
    group_by = slo.group_by
    match indicator:
        case RatioIndicator(total=total, good=good, bad=bad):
            parts: list[tuple[Part, str]] = []
            if good is not None:
                parts.append(("good", _sum_increase(good, window, group_by)))
            if bad is not None:
                parts.append(("bad", _sum_increase(bad, window, group_by)))
            parts.append(("total", _sum_increase(total, window, group_by)))
            return parts
        case LatencyIndicator(histogram=histogram):
            bucket = bucket_selector(indicator).with_matcher(le_matcher(le))
            count = histogram.with_metric(f"{histogram.metric}_count")
            return [
                ("good", _sum_increase(bucket, window, group_by)),
                ("total", _sum_increase(count, window, group_by)),
            ]
        case UptimeIndicator(selector=selector):
            return [
                ("good", _sum_over("sum_over_time", selector, window, group_by)),
                ("total", _sum_over("count_over_time", selector, window, group_by)),
            ]
        case RawIndicator(error_ratio=template):
            expr = template.replace("$window", format_duration(window))
            return [("error_ratio", f"({expr})")]
    raise AssertionError(f"unknown indicator {indicator!r}")
