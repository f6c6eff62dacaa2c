"""The alert state machine: pure functions from (states, rule evaluations, now) to (states, notifications).

inactive -> pending (condition true, ``for`` not met) -> firing -> resolved (inactive again).
No data (stale SLO, zero traffic, missing window) leaves an alert exactly as it was:
missing data never fires nor resolves anything by itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from sloeval.alerting.model import AlertKey, AlertState, Facts, Notification
from sloeval.alerting.rules import DATA_MISSING_ALERT, RuleEvaluation
from sloeval.config.alert_rules import NotifyPolicy


@dataclass(frozen=True)
class StepResult:
    states: dict[AlertKey, AlertState]
    notifications: tuple[Notification, ...]
    stale_slos: tuple[str, ...]


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


def firing_alerts(states: Mapping[AlertKey, AlertState]) -> list[tuple[AlertKey, str]]:
    """(key, severity) of alerts in the firing state, for the firing gauge."""
    return [(key, state.severity) for key, state in sorted(states.items()) if state.status == "firing"]
