"""Alert rules applied to a snapshot: does each condition hold, on which label set, with which facts (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, partial

from sloeval.alerting.messages import visible
from sloeval.alerting.model import AlertKey, Facts, SLOSummary
from sloeval.config.alert_rules import AlertRule, BudgetCondition, BurnRateCondition, SLIBelowCondition
from sloeval.config.durations import format_duration
from sloeval.config.slo_file import SLODefinition, UptimeIndicator
from sloeval.slo.sli_math import budget_minutes
from sloeval.slo.snapshot import SLOResult, SLOStatus, Snapshot


@dataclass(frozen=True)
class RuleEvaluation:
    """One rule on one label set in one cycle. ``holds`` is None when there is no data."""

    key: AlertKey
    severity: str
    for_seconds: int
    holds: bool | None
    facts_of: Callable[[], Facts] = field(compare=False, repr=False)
    no_data_window: int = 0
    """The rule's own long window (burn rate: ``long``; SLI: its window; budget: the period): a firing
    alert whose condition has had no data for longer than this resolves. 0: never for lack of data."""

    @cached_property
    def facts(self) -> Facts:
        """What the messages say: made only for alerts that hold or resolve, a few of many."""
        return self.facts_of()


def summary_of(slo: SLODefinition) -> SLOSummary:
    return SLOSummary(slo.name, slo.slo_type, slo.service, slo.objective, slo.period_name)


def _facts(slo: SLODefinition, summary: SLOSummary, rule: AlertRule, result: SLOResult) -> Facts:
    # Budget rules are about the period; the others about their own windows.
    windows = rule.windows or (slo.period,)
    names = [format_duration(w) for w in windows]
    remaining = result.error_budget_remaining
    budget_left_minutes = total_minutes = None
    if isinstance(slo.indicator, UptimeIndicator):
        total_minutes = budget_minutes(slo.objective, slo.period)
        budget_left_minutes = None if remaining is None else remaining * total_minutes
    # "Runs out in": at the burn rate of the rule's long window, or of the last hour.
    burn_now = result.burn_rate.get(names[0] if rule.windows else "1h")
    exhausted_in = None
    if remaining is not None and remaining > 0 and burn_now is not None and burn_now > 0:
        exhausted_in = remaining * slo.period / burn_now
    factor = rule.condition.factor if isinstance(rule.condition, BurnRateCondition) else None
    return Facts(
        condition=rule.describe(),
        burn_rates=tuple((n, result.burn_rate.get(n)) for n in names),
        factor=factor,
        sli=tuple((n, result.sli.get(n)) for n in names),
        objective=slo.objective,
        budget_remaining_percent=None if remaining is None else 100.0 * remaining,
        budget_minutes_left=budget_left_minutes,
        budget_minutes_total=total_minutes,
        exhausted_in_seconds=exhausted_in,
        slo=summary,
    )


def _data_missing_facts(status: SLOStatus, summary: SLOSummary, data_missing_after: float) -> Facts:
    condition = f"no data from Prometheus for {format_duration(max(1, int(data_missing_after)))}"
    if status.error:
        condition += f" (last error: {visible(status.error, 300)})"  # Prometheus echoes label values
    return Facts(condition=condition, objective=status.slo.objective, slo=summary)


def condition_holds(rule: AlertRule, result: SLOResult) -> bool | None:
    """True/False, or None when a number it needs is missing (no data)."""
    match rule.condition:
        case BurnRateCondition(long=long, short=short, factor=factor):
            rates = [result.burn_rate.get(format_duration(w)) for w in (long, short)]
            if any(r is None for r in rates):
                return None
            return all(r is not None and r > factor for r in rates)
        case BudgetCondition(below_percent=below):
            remaining = result.error_budget_remaining
            return None if remaining is None else 100.0 * remaining < below
        case SLIBelowCondition(window=window, threshold=threshold):
            sli = result.sli.get(format_duration(window))
            return None if sli is None else sli < threshold
    raise AssertionError(f"unknown condition {rule.condition!r}")


#: The meta alert raised when an SLO cannot be evaluated for ``data_missing_after`` seconds.
DATA_MISSING_ALERT = "SLODataMissing"
DATA_MISSING_SEVERITY = "warning"


def evaluate_rules(
    snapshot: Snapshot, *, data_missing_after: float | None = None
) -> tuple[Iterator[RuleEvaluation], tuple[str, ...]]:
    """Every rule of every SLO on every label set (made as they are consumed: with a thousand
    SLOs that is tens of thousands per cycle); plus the SLOs that are stale.

    With ``data_missing_after``, each SLO also gets the meta alert ``SLODataMissing``: it holds
    while the SLO's queries fail and fires once that has lasted ``data_missing_after`` seconds
    (meta-monitoring: without data no other alert of the SLO can fire or resolve).
    """

    def evaluations() -> Iterator[RuleEvaluation]:
        for status in snapshot.statuses:
            summary = summary_of(status.slo)
            if data_missing_after is not None:
                yield RuleEvaluation(
                    key=AlertKey(status.slo.name, DATA_MISSING_ALERT),
                    severity=DATA_MISSING_SEVERITY,
                    for_seconds=int(data_missing_after),
                    holds=status.stale,
                    facts_of=partial(_data_missing_facts, status, summary, data_missing_after),
                )
            if status.stale:
                continue
            horizons = [rule.windows[0] if rule.windows else status.slo.period for rule in status.slo.alerts]
            for result in status.results:
                for rule, horizon in zip(status.slo.alerts, horizons, strict=True):
                    yield RuleEvaluation(
                        key=AlertKey(status.slo.name, rule.name, result.labels),
                        severity=rule.severity,
                        for_seconds=rule.for_seconds,
                        holds=condition_holds(rule, result),
                        facts_of=partial(_facts, status.slo, summary, rule, result),
                        no_data_window=horizon,
                    )

    return evaluations(), tuple(s.slo.name for s in snapshot.statuses if s.stale)
