"""The alert state machine: pure functions from (state, snapshot, now) to (state, notifications).

inactive -> pending (condition true, ``for`` not met) -> firing -> resolved (inactive again).
No data (stale SLO, zero traffic, missing window) leaves an alert exactly as it was:
missing data never fires nor resolves anything by itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from typing import Literal

from sloeval.alert_rules import (
    SEVERITY_RANK,
    AlertRule,
    BudgetCondition,
    BurnRateCondition,
    NotifyPolicy,
    SLIBelowCondition,
)
from sloeval.durations import format_duration
from sloeval.sli_math import budget_minutes
from sloeval.slo_config import SLODefinition, UptimeIndicator
from sloeval.snapshot import SLOResult, SLOStatus, Snapshot

Status = Literal["pending", "firing"]
LabelSet = tuple[tuple[str, str], ...]


@dataclass(frozen=True, order=True)
class AlertKey:
    slo: str
    alert: str
    labels: LabelSet = ()

    def to_id(self) -> str:
        return json.dumps([self.slo, self.alert, [list(p) for p in self.labels]], ensure_ascii=False)

    @classmethod
    def from_id(cls, text: str) -> AlertKey:
        slo, alert, labels = json.loads(text)
        return cls(str(slo), str(alert), tuple((str(k), str(v)) for k, v in labels))


@dataclass(frozen=True)
class Facts:
    """The numbers a person needs to judge an alert; all JSON-friendly."""

    condition: str
    burn_rates: tuple[tuple[str, float | None], ...] = ()
    factor: float | None = None
    sli: tuple[tuple[str, float | None], ...] = ()
    objective: float = 0.0
    budget_remaining_percent: float | None = None
    budget_minutes_left: float | None = None  # time-based SLOs only
    budget_minutes_total: float | None = None
    exhausted_in_seconds: float | None = None  # at the current burn rate; None when not burning

    def to_json(self) -> dict[str, object]:
        return {
            "condition": self.condition,
            "burn_rates": [list(p) for p in self.burn_rates],
            "factor": self.factor,
            "sli": [list(p) for p in self.sli],
            "objective": self.objective,
            "budget_remaining_percent": self.budget_remaining_percent,
            "budget_minutes_left": self.budget_minutes_left,
            "budget_minutes_total": self.budget_minutes_total,
            "exhausted_in_seconds": self.exhausted_in_seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Facts:
        def pairs(value: object) -> tuple[tuple[str, float | None], ...]:
            if not isinstance(value, list):
                raise ValueError(f"expected a list of [window, value] pairs, got {type(value).__name__}")
            return tuple((str(w), None if v is None else float(v)) for w, v in value)

        def number(value: object) -> float | None:
            return None if value is None else float(value)  # type: ignore[arg-type]

        return cls(
            condition=str(data["condition"]),
            burn_rates=pairs(data.get("burn_rates", [])),
            factor=number(data.get("factor")),
            sli=pairs(data.get("sli", [])),
            objective=float(data.get("objective", 0.0)),  # type: ignore[arg-type]
            budget_remaining_percent=number(data.get("budget_remaining_percent")),
            budget_minutes_left=number(data.get("budget_minutes_left")),
            budget_minutes_total=number(data.get("budget_minutes_total")),
            exhausted_in_seconds=number(data.get("exhausted_in_seconds")),
        )


@dataclass(frozen=True)
class RuleEvaluation:
    """One rule on one label set in one cycle. ``holds`` is None when there is no data."""

    key: AlertKey
    severity: str
    for_seconds: int
    holds: bool | None
    facts_of: Callable[[], Facts] = field(compare=False, repr=False)

    @cached_property
    def facts(self) -> Facts:
        """What the messages say: made only for alerts that hold or resolve, a few of many."""
        return self.facts_of()


@dataclass(frozen=True)
class AlertState:
    severity: str
    status: Status
    active_since: float
    facts: Facts
    firing_since: float | None = None
    last_sent_at: float | None = None  # None while firing = a FIRING message is still owed

    def to_json(self) -> str:
        return json.dumps(
            {
                "severity": self.severity,
                "status": self.status,
                "active_since": self.active_since,
                "firing_since": self.firing_since,
                "last_sent_at": self.last_sent_at,
                "facts": self.facts.to_json(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> AlertState:
        data = json.loads(text)
        status = data["status"]
        if status not in ("pending", "firing"):
            raise ValueError(f"unknown alert status {status!r}")
        return cls(
            severity=str(data["severity"]),
            status=status,
            active_since=float(data["active_since"]),
            firing_since=None if data.get("firing_since") is None else float(data["firing_since"]),
            last_sent_at=None if data.get("last_sent_at") is None else float(data["last_sent_at"]),
            facts=Facts.from_json(data["facts"]),
        )


@dataclass(frozen=True)
class Notification:
    key: AlertKey
    severity: str
    status: Literal["firing", "resolved"]
    facts: Facts
    at: float
    since: float
    repeat: bool = False


@dataclass(frozen=True)
class StepResult:
    states: dict[AlertKey, AlertState]
    notifications: tuple[Notification, ...]
    stale_slos: tuple[str, ...]


# --- conditions ---------------------------------------------------------------------------


def _facts(slo: SLODefinition, rule: AlertRule, result: SLOResult) -> Facts:
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
    )


def _data_missing_facts(status: SLOStatus, data_missing_after: float) -> Facts:
    condition = f"no data from Prometheus for {format_duration(max(1, int(data_missing_after)))}"
    if status.error:
        condition += f" (last error: {status.error[:300]})"
    return Facts(condition=condition, objective=status.slo.objective)


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
            if data_missing_after is not None:
                yield RuleEvaluation(
                    key=AlertKey(status.slo.name, DATA_MISSING_ALERT),
                    severity=DATA_MISSING_SEVERITY,
                    for_seconds=int(data_missing_after),
                    holds=status.stale,
                    facts_of=partial(_data_missing_facts, status, data_missing_after),
                )
            if status.stale:
                continue
            for result in status.results:
                for rule in status.slo.alerts:
                    yield RuleEvaluation(
                        key=AlertKey(status.slo.name, rule.name, result.labels),
                        severity=rule.severity,
                        for_seconds=rule.for_seconds,
                        holds=condition_holds(rule, result),
                        facts_of=partial(_facts, status.slo, rule, result),
                    )

    return evaluations(), tuple(s.slo.name for s in snapshot.statuses if s.stale)


# --- the state machine -----------------------------------------------------------------


def _labels_of(key: AlertKey, severity: str) -> dict[str, str]:
    return {**dict(key.labels), "slo": key.slo, "alert": key.alert, "severity": severity}


def step(
    states: Mapping[AlertKey, AlertState],
    evaluations: Iterable[RuleEvaluation],
    *,
    now: float,
    policy: NotifyPolicy,
    known_slos: Iterable[str],
    stale_slos: Iterable[str] = (),
    interval: float = 0.0,
) -> StepResult:
    """Advance every alert by one cycle and say which notifications are due.

    ``interval`` is the time until the next cycle; it decides whether ``group_wait`` is worth
    holding a new group's first message for.
    """
    known = set(known_slos)
    new_states: dict[AlertKey, AlertState] = {k: v for k, v in states.items() if k.slo in known}
    notifications: list[Notification] = []
    evaluated_keys = set()
    for evaluation in evaluations:
        key = evaluation.key
        evaluated_keys.add(key)
        current = new_states.get(key)
        if evaluation.holds is None:
            continue  # no data: change nothing
        if evaluation.holds:
            if current is None:
                current = AlertState(evaluation.severity, "pending", now, evaluation.facts)
            current = replace(current, facts=evaluation.facts, severity=evaluation.severity)
            if current.status == "pending" and now - current.active_since >= evaluation.for_seconds:
                current = replace(current, status="firing", firing_since=now, last_sent_at=None)
            new_states[key] = current
        elif current is not None:
            del new_states[key]
            notifications += _resolve(key, current, evaluation.facts, now, policy)

    # Alerts that were not evaluated although their SLO was (a rule renamed or removed by a
    # reload, a label set gone from the results) can never clear by themselves: resolve them.
    stale = set(stale_slos)
    for key in sorted(new_states):
        if key.slo in stale or key in evaluated_keys:
            continue
        gone = new_states.pop(key)
        notifications += _resolve(key, gone, gone.facts, now, policy)

    inhibiting = {
        (key.slo, key.labels)
        for key, state in new_states.items()
        if state.status == "firing" and state.severity == "critical"
    }
    sendable = {
        key: state
        for key, state in sorted(new_states.items())
        if state.status == "firing"
        and not (
            state.severity != "critical" and key.alert != DATA_MISSING_ALERT and (key.slo, key.labels) in inhibiting
        )
        and not _silenced(policy, key, state.severity, now)
    }
    # group_wait: hold a new group's first message while more of its alerts may still join, but
    # only if another cycle comes before the wait is over (alerts only start at cycle boundaries).
    groups_due = {
        (key.slo, key.labels)
        for key, state in sendable.items()
        if state.last_sent_at is None and _or_now(state.firing_since, now) + policy.group_wait <= now + interval
    }
    for key, state in sendable.items():
        first = state.last_sent_at is None
        if first and (key.slo, key.labels) not in groups_due:
            continue
        if state.last_sent_at is None or now - state.last_sent_at >= policy.repeat_interval:
            notifications.append(
                Notification(
                    key, state.severity, "firing", state.facts, now, _or_now(state.firing_since, now), not first
                )
            )
            new_states[key] = replace(state, last_sent_at=now)
    return StepResult(new_states, tuple(notifications), tuple(sorted(stale)))


def _resolve(key: AlertKey, state: AlertState, facts: Facts, now: float, policy: NotifyPolicy) -> list[Notification]:
    """The RESOLVED message owed when an alert ends: only if its FIRING went out and is not muted."""
    if state.status != "firing" or state.last_sent_at is None or not policy.send_resolved:
        return []
    if _silenced(policy, key, state.severity, now):
        return []
    return [Notification(key, state.severity, "resolved", facts, now, _or_now(state.firing_since, now))]


def _or_now(moment: float | None, now: float) -> float:
    return now if moment is None else moment


def _silenced(policy: NotifyPolicy, key: AlertKey, severity: str, now: float) -> bool:
    labels = _labels_of(key, severity)
    return any(silence.matches(labels, now) for silence in policy.silences)


# --- grouping ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageGroup:
    """What one message to one channel says: the alerts of one SLO that are due in one cycle."""

    channel: str
    slo: str
    labels: LabelSet
    notifications: tuple[Notification, ...]

    @property
    def status(self) -> Literal["firing", "resolved"]:
        return "firing" if any(n.status == "firing" for n in self.notifications) else "resolved"

    @property
    def severity(self) -> str:
        return min((n.severity for n in self.notifications), key=lambda s: SEVERITY_RANK.get(s, 9))


def group_notifications(notifications: Sequence[Notification], policy: NotifyPolicy) -> list[MessageGroup]:
    """One message per channel and SLO; routes pick the channels by severity.

    The group's ``labels`` are the label set all its alerts share, or empty when they differ
    (a grouped SLO with several label sets burning): each item then names its own.
    """
    grouped: dict[tuple[str, str], list[Notification]] = {}
    for notification in notifications:
        for channel in policy.channels_for(notification.severity):
            grouped.setdefault((channel, notification.key.slo), []).append(notification)
    groups = []
    for (channel, slo), items in grouped.items():
        items.sort(key=lambda n: (n.status != "firing", SEVERITY_RANK.get(n.severity, 9), n.key.labels, n.key.alert))
        label_sets = {n.key.labels for n in items}
        common = next(iter(label_sets)) if len(label_sets) == 1 else ()
        groups.append(MessageGroup(channel, slo, common, tuple(items)))
    return groups


def firing_alerts(states: Mapping[AlertKey, AlertState]) -> list[tuple[AlertKey, str]]:
    """(key, severity) of alerts in the firing state, for the firing gauge."""
    return [(key, state.severity) for key, state in sorted(states.items()) if state.status == "firing"]
