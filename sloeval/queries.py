"""PromQL generation: the one place where SLO definitions become query text.

Each SLO is evaluated with a single instant query that returns every window's
good/bad/total (or error ratio) at once. Each part is tagged with the label
``sloeval_series="<part>:<window>"`` so the answer can be taken apart again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from sloeval.durations import format_duration
from sloeval.selectors import Matcher, Selector, quote
from sloeval.slo_config import (
    LatencyIndicator,
    RatioIndicator,
    RawIndicator,
    SLODefinition,
    UptimeIndicator,
)

SERIES_LABEL = "sloeval_series"
Part = Literal["good", "bad", "total", "error_ratio"]


@dataclass(frozen=True)
class SLOQuery:
    """The query for one SLO, and what each tagged part means."""

    slo: SLODefinition
    promql: str


def le_values(threshold: float) -> list[str]:
    """Ways exporters write a bucket bound: Go ("2", "1e+06") and Python ("2.0")."""
    value = float(threshold)
    shortest = repr(value)  # Python: "2.0", "0.005", "1e-05", "1000000.0"
    forms = {shortest, _go_format(value), _python_client_format(value)}
    if shortest.endswith(".0"):
        forms.add(shortest[:-2])
    return sorted(forms)


def _go_format(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'g', -1, 64)``, used by client_golang for ``le``."""
    sign, digit_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(str(d) for d in digit_tuple)
    point = len(digits) + exponent  # position of the decimal point from the left
    lead = "-" if sign else ""
    decimal_exponent = point - 1
    if value == 0:
        return "0"
    if decimal_exponent < -4 or decimal_exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exp_sign = "+" if decimal_exponent >= 0 else "-"
        return f"{lead}{mantissa}e{exp_sign}{abs(decimal_exponent):02d}"
    if point <= 0:
        return f"{lead}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return lead + digits + "0" * (point - len(digits))
    return f"{lead}{digits[:point]}.{digits[point:]}"


def _python_client_format(value: float) -> str:
    """How prometheus_client writes ``le``: repr(), switching to an exponent above 1e6."""
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def _le_matcher(threshold: float) -> Matcher:
    alternatives = "|".join(v.replace(".", "\\.").replace("+", "\\+") for v in le_values(threshold))
    return Matcher("le", "=~", alternatives)


def _by(group_by: Iterable[str]) -> str:
    labels = ", ".join(group_by)
    return f" by ({labels})"


def _tag(expr: str, part: Part, window: int) -> str:
    tag = quote(f"{part}:{format_duration(window)}")
    return f'label_replace({expr}, "{SERIES_LABEL}", {tag}, "", "")'


def _sum_increase(selector: Selector, window: int, group_by: tuple[str, ...]) -> str:
    return f"sum{_by(group_by)} (increase({selector.render()}[{format_duration(window)}]))"


def _sum_over(function: str, selector: Selector, window: int, group_by: tuple[str, ...]) -> str:
    return f"sum{_by(group_by)} ({function}({selector.render()}[{format_duration(window)}]))"


def part_expressions(slo: SLODefinition, window: int) -> list[tuple[Part, str]]:
    """The untagged expressions for one window, e.g. ``[("bad", ...), ("total", ...)]``."""
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
        case LatencyIndicator(histogram=histogram, threshold_seconds=threshold):
            base = histogram.metric
            assert base is not None
            bucket = histogram.with_metric(f"{base}_bucket").with_matcher(_le_matcher(threshold))
            count = histogram.with_metric(f"{base}_count")
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


def build_query(slo: SLODefinition) -> SLOQuery:
    """One instant query returning every part of every window of ``slo``."""
    tagged = [_tag(expr, part, window) for window in slo.windows for part, expr in part_expressions(slo, window)]
    return SLOQuery(slo=slo, promql="\nor ".join(tagged))


def parse_tag(value: str) -> tuple[str, str] | None:
    """Split ``"bad:5m"`` into ``("bad", "5m")``."""
    part, sep, window = value.partition(":")
    if not sep or part not in ("good", "bad", "total", "error_ratio"):
        return None
    return part, window
