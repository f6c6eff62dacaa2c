"""Histogram bucket bounds: which ``le`` strings equal a latency threshold, and the matcher on them (pure).

Exporters write a bound as their language prints the float: client_golang ``"2"``, ``"1e+06"`` or,
for ``LinearBuckets(0.1, 0.1, 10)``, ``"0.30000000000000004"``; prometheus_client ``"2.0"``. No
list of spellings can foresee them all, so sloeval asks Prometheus which ``le`` strings a
histogram has (:func:`bounds_query`, once per config) and matches, exactly, those whose value is
the threshold's within float noise (:func:`match_bounds`, :func:`le_matcher`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sloeval.config.durations import format_duration
from sloeval.config.selectors import Matcher, Selector
from sloeval.config.slo_file import LatencyIndicator, SLODefinition

REL_TOL = 1e-9
"""Bounds this close to the threshold are the threshold: float noise such as 0.1 + 0.1 + 0.1 is
about 1e-16 of the value, a bucket bound one significant digit away is 1e-7 or more."""


@dataclass(frozen=True)
class BucketMatch:
    """The ``le`` strings equal to a threshold, and every bound that was found (for the error)."""

    strings: tuple[str, ...]  # exactly as Prometheus reports them; empty: no bucket at the threshold
    bounds: tuple[str, ...]  # every readable bound, by value


def bucket_selector(indicator: LatencyIndicator) -> Selector:
    """``<histogram>_bucket{...}``: the bucket series, without any ``le`` matcher."""
    assert indicator.histogram.metric is not None
    return indicator.histogram.with_metric(f"{indicator.histogram.metric}_bucket")


def bounds_query(slo: SLODefinition) -> str:
    """The ``le`` strings of the SLO's histogram over its period: one series per bound.

    The bucket series are looked at once an hour over the period (a subquery; at least 24 times
    for a short period) and now: every bound of a series that lived an hour or more, for about one
    sample per series and hour instead of every sample (``last_over_time(h_bucket[30d])`` would read
    all the samples of every bucket, more than the SLO's own queries).
    """
    assert isinstance(slo.indicator, LatencyIndicator), slo.name
    selector = bucket_selector(slo.indicator).render()
    step = format_duration(max(1, min(3600, slo.period // 24)))
    return f"group by (le) (last_over_time({selector}[{format_duration(slo.period)}:{step}]) or {selector})"


def _value(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def match_bounds(reported: Iterable[str], threshold: float) -> BucketMatch:
    """The reported ``le`` strings whose value is ``threshold``, within float noise."""
    readable = {(value, text) for text in set(reported) if (value := _value(text)) is not None}
    bounds = tuple(text for _, text in sorted(readable))
    strings = tuple(
        sorted(text for value, text in readable if math.isclose(value, threshold, rel_tol=REL_TOL, abs_tol=0.0))
    )
    return BucketMatch(strings, bounds)


def _regex_literal(text: str) -> str:
    """``text`` as an RE2 regular expression matching only itself: punctuation escaped."""
    return "".join(f"\\{c}" if c.isascii() and not c.isalnum() and not c.isspace() else c for c in text)


def le_matcher(strings: Sequence[str]) -> Matcher:
    """``le="<bound>"``, or ``le=~"<bound>|<bound>"`` when exporters spell the bound differently."""
    if not strings:
        raise ValueError("no le strings to match")
    if len(strings) == 1:
        return Matcher("le", "=", strings[0])
    return Matcher("le", "=~", "|".join(_regex_literal(text) for text in strings))


def format_threshold(threshold: float) -> str:
    """The threshold as written in the SLO file: ``0.3``, ``2`` (not ``2.0``), ``1e-05``."""
    text = repr(float(threshold))
    return text.removesuffix(".0")
