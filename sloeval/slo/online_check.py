"""``sloeval check --online``: ask Prometheus whether each SLO's series and buckets exist.

Then the SLO is evaluated once through the :class:`~sloeval.slo.evaluator.Evaluator`, which asks
the requests of its query plan exactly as ``sloeval eval`` and ``sloeval run`` do, so that an
expression Prometheus refuses is reported here rather than found stale by the daemon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sloeval.config.selectors import Selector
from sloeval.config.slo_file import LatencyIndicator, RatioIndicator, RawIndicator, SLODefinition, UptimeIndicator
from sloeval.prometheus.results import PrometheusQueryError
from sloeval.slo.evaluator import Evaluator, QueryClient


@dataclass(frozen=True)
class Finding:
    slo: str
    severity: str  # "error" or "warning"
    message: str


async def _count(client: QueryClient, selector: Selector, at: float, lookback: str) -> int:
    result = await client.query(f"count(last_over_time({selector.render()}[{lookback}]))", at)
    return int(result.samples[0].value) if result.samples else 0


async def check_slo(client: QueryClient, slo: SLODefinition, at: float) -> list[Finding]:
    findings: list[Finding] = []
    lookback = slo.period_name

    def add(severity: str, message: str) -> None:
        findings.append(Finding(slo.name, severity, message))

    try:
        match slo.indicator:
            case RatioIndicator(total=total, good=good, bad=bad):
                if await _count(client, total, at, lookback) == 0:
                    add("error", f"no series for total selector {total} in the last {lookback}")
                for part, selector in (("good", good), ("bad", bad)):
                    if selector is not None and await _count(client, selector, at, lookback) == 0:
                        add("warning", f"no series for {part} selector {selector} yet (counted as 0 events)")
            case LatencyIndicator(histogram=histogram, threshold_seconds=threshold):
                bucket = histogram.with_metric(f"{histogram.metric}_bucket")
                result = await client.query(f"count by (le) (last_over_time({bucket.render()}[{lookback}]))", at)
                parsed = (_as_float(sample.labels.get("le", "")) for sample in result.samples)
                bounds = sorted({b for b in parsed if b is not None})
                if not bounds:
                    add("error", f"no histogram buckets for {bucket} in the last {lookback}")
                elif not any(math.isclose(b, threshold, rel_tol=1e-9) for b in bounds):
                    shown = ", ".join(f"{b:g}" for b in bounds)
                    add("error", f"threshold_seconds {threshold:g} is not a bucket bound of {bucket}; bounds: {shown}")
            case UptimeIndicator(selector=selector):
                if await _count(client, selector, at, lookback) == 0:
                    add("error", f"no series for uptime selector {selector} in the last {lookback}")
            case RawIndicator():
                pass
        # Every request eval and run would send for this SLO; a refused one leaves it stale.
        (status,) = (await Evaluator([slo], client).evaluate(at)).statuses
        if status.error is not None:
            add("error", f"query failed: {status.error}")
    except PrometheusQueryError as exc:
        add("error", f"query failed: {exc.message}")
    return findings


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
