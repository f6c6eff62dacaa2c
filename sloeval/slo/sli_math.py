"""Pure SLO arithmetic: SLI from event counts, burn rate, error budget.

No I/O here. ``None`` means "no data" (no traffic in the window) and propagates:
it is never turned into 1.0, 0.0 or NaN.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class WindowSLI(NamedTuple):
    """The SLI of one window, and whether the counts had to be clamped (a tuple: made per window
    and per label set every cycle, so it must be cheap to create)."""

    value: float | None
    clamped: bool = False


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value


def sli_from_good(good: float | None, total: float | None) -> WindowSLI:
    """SLI = good / total. A missing good count means zero good events; a non-finite one, no data."""
    total = _finite(total)
    if total is None or total <= 0:
        return WindowSLI(None)
    if good is not None and not math.isfinite(good):
        return WindowSLI(None)  # a broken count is no data, not a perfect (or zero) SLI
    value = (good or 0.0) / total
    if value > 1.0:
        return WindowSLI(1.0, clamped=True)
    if value < 0.0:
        return WindowSLI(0.0, clamped=True)
    return WindowSLI(value)


def sli_from_bad(bad: float | None, total: float | None) -> WindowSLI:
    """SLI = 1 - bad / total. A missing bad count means zero bad events; a non-finite one, no data."""
    total = _finite(total)
    if total is None or total <= 0:
        return WindowSLI(None)
    if bad is not None and not math.isfinite(bad):
        return WindowSLI(None)
    value = 1.0 - (bad or 0.0) / total
    if value > 1.0:
        return WindowSLI(1.0, clamped=True)
    if value < 0.0:
        return WindowSLI(0.0, clamped=True)
    return WindowSLI(value)


def sli_from_error_ratio(error_ratio: float | None) -> WindowSLI:
    """SLI = 1 - error ratio, for raw PromQL that yields the ratio itself."""
    ratio = _finite(error_ratio)
    if ratio is None:
        return WindowSLI(None)
    return sli_from_bad(ratio, 1.0)


def burn_rate(sli: float | None, objective: float) -> float | None:
    """How fast the budget burns: 1.0 spends exactly the budget over the period."""
    if sli is None:
        return None
    if not 0.0 < objective < 1.0:
        raise ValueError(f"objective must be a ratio between 0 and 1, got {objective}")
    return (1.0 - sli) / (1.0 - objective)


def budget_remaining(period_burn_rate: float | None) -> float | None:
    """Share of the period's error budget left; negative when overspent (never clamped)."""
    if period_burn_rate is None:
        return None
    return 1.0 - period_burn_rate


def budget_minutes(objective: float, period_seconds: int) -> float:
    """The whole error budget of a time-based SLO in minutes (99.9 % of 30 d -> 43.2)."""
    return (1.0 - objective) * period_seconds / 60.0
