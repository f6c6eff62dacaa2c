"""``sloeval check --online``: ask Prometheus whether each SLO's series and buckets exist.

Then the SLO is evaluated once through the :class:`~sloeval.slo.evaluator.Evaluator`, which asks
the requests of its query plan exactly as ``sloeval eval`` and ``sloeval run`` do, so that an
expression Prometheus refuses is reported here rather than found stale by the daemon. A latency
SLO's bucket at its threshold is found by the evaluator's own discovery: what the check accepts
is what eval and run read, and what it reports (no bucket at the threshold, the bounds found)
is the error eval and run mark the SLO stale with.
"""

from __future__ import annotations

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
            case UptimeIndicator(selector=selector):
                if await _count(client, selector, at, lookback) == 0:
                    add("error", f"no series for uptime selector {selector} in the last {lookback}")
            case LatencyIndicator() | RawIndicator():
                pass  # a latency SLO's buckets: found by the evaluator, below
        # Every request eval and run would send for this SLO; a refused one leaves it stale.
        evaluator = Evaluator([slo], client)
        (status,) = (await evaluator.evaluate(at)).statuses
        (plan,) = evaluator.plan.slo_plans
        if status.error is not None and status.error == plan.blocked:
            add("error", status.error)  # e.g. no bucket at the threshold: the bounds found
        elif status.error is not None:
            add("error", f"query failed: {status.error}")
        elif plan.no_data is not None:
            add("error", plan.no_data)  # e.g. no histogram buckets at all: eval and run show no data
    except PrometheusQueryError as exc:
        add("error", f"query failed: {exc.message}")
    return findings
