"""Rendering a snapshot for people (table) and for scripts (stable JSON)."""

from __future__ import annotations

import json
import math
from typing import Any

from sloeval.slo.snapshot import SLOResult, SLOStatus, Snapshot

#: Page-worthy burn: the SRE Workbook's 2 % of a 30 d budget in one hour.
FAST_BURN = 14.4


def _clean(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def snapshot_to_json(snapshot: Snapshot) -> dict[str, Any]:
    """The stable ``eval --format json`` document."""
    results: list[dict[str, Any]] = []
    for status in snapshot.statuses:
        slo = status.slo
        for result in status.results:
            results.append(
                {
                    "slo": slo.name,
                    "slo_type": slo.slo_type,
                    "service": slo.service,
                    "labels": result.labels_dict,
                    "objective": slo.objective,
                    "period": slo.period_name,
                    "sli": {w: _clean(result.sli.get(w)) for w in slo.window_names},
                    "burn_rate": {w: _clean(result.burn_rate.get(w)) for w in slo.window_names},
                    "error_budget_remaining_percent": _clean(
                        None if result.error_budget_remaining is None else 100.0 * result.error_budget_remaining
                    ),
                }
            )
    errors = [{"slo": s.slo.name, "error": s.error} for s in snapshot.statuses if s.stale]
    document: dict[str, Any] = {"evaluated_at": snapshot.evaluated_at, "results": results}
    if errors:
        document["errors"] = errors
    return document


def render_json(snapshot: Snapshot) -> str:
    return json.dumps(snapshot_to_json(snapshot), indent=2, allow_nan=False)


def _status_of(status: SLOStatus, result: SLOResult) -> str:
    slo = status.slo
    remaining = result.error_budget_remaining
    burns = result.burn_rate
    if result.sli.get(slo.period_name) is None:
        return "NO DATA"
    if remaining is not None and remaining < 0:
        return "!! BUDGET EXHAUSTED"
    short, long_ = burns.get("5m"), burns.get("1h")
    if short is not None and long_ is not None and short > FAST_BURN and long_ > FAST_BURN:
        return "!! FAST BURN"
    if any(b is not None and b > 1 for b in burns.values()):
        return "! burning"
    return "ok"


def _pct(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def render_table(snapshot: Snapshot) -> str:
    """One row per SLO and label set: budget left, worst burn rate, a mark on what burns."""
    header = ("SLO", "LABELS", "OBJECTIVE", "SLI (PERIOD)", "BUDGET LEFT", "WORST BURN", "STATUS")
    rows: list[tuple[str, ...]] = []
    for status in snapshot.statuses:
        slo = status.slo
        if status.stale:
            rows.append((slo.name, "", _pct(slo.objective), "-", "-", "-", f"STALE: {status.error}"))
            continue
        if not status.results:
            rows.append((slo.name, "", _pct(slo.objective), "-", "-", "-", "NO DATA"))
            continue
        for result in status.results:
            labels = ",".join(f"{k}={v}" for k, v in result.labels)
            burns = [(w, b) for w, b in result.burn_rate.items() if b is not None]
            worst = max(burns, key=lambda item: item[1], default=None)
            rows.append(
                (
                    slo.name,
                    labels,
                    _pct(slo.objective),
                    f"{_pct(result.sli.get(slo.period_name))} /{slo.period_name}",
                    _pct(result.error_budget_remaining, 1),
                    "-" if worst is None else f"{worst[1]:.2f}x ({worst[0]})",
                    _status_of(status, result),
                )
            )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in (header, *rows)]
    return "\n".join(lines)
