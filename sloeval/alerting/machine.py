"""The alert state machine: pure functions from (states, rule evaluations, now) to (states, notifications).

inactive -> pending (condition true, ``for`` not met) -> firing -> resolved (inactive again).
No data (zero traffic in a window, a stale SLO) never fires anything; it ends a pending alert, and
a firing one once it has lasted longer than the rule's own window (see :func:`step`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sloeval.alerting.model import AlertKey, AlertState, Facts, Notification
from sloeval.alerting.rules import DATA_MISSING_ALERT, RuleEvaluation
from sloeval.config.alert_rules import NotifyPolicy
from sloeval.config.durations import format_duration

SLO_REMOVED = "SLO removed from the configuration"
RULE_REMOVED = "alert rule removed from the configuration"
LABELS_GONE = "label set no longer reported by Prometheus"
ENDED_SILENCED = "ended while silenced"


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

    - A condition that holds makes an alert pending, and firing once it has held in every cycle
      for ``for``; a cycle where it does not hold (false, or no data) ends a pending alert.
    - A firing alert ends when its condition is false (RESOLVED with this cycle's numbers), when
      its condition has had no data for longer than the rule's own window (RESOLVED saying so, no
      numbers), when its SLO, rule or label set is gone (RESOLVED saying so, no numbers). A
      RESOLVED is owed for every FIRING that went out, silenced or not.
    - FIRING messages, first or repeat, go out only in a cycle where the condition held, so they
      always quote this cycle's numbers; silences and inhibition mute them, never a RESOLVED.

    ``interval`` is the time until the next cycle; it decides whether ``group_wait`` is worth
    holding a new group's first message for.
    """
    known = set(known_slos)
    stale = set(stale_slos)
    new_states: dict[AlertKey, AlertState] = {}
    notifications: list[Notification] = []
    for key, state in sorted(states.items()):
        if key.slo in known:
            new_states[key] = state
        else:  # a reload removed or renamed its SLO: the stored facts name it in the RESOLVED
            notifications += _resolve(key, state, state.facts.without_numbers(SLO_REMOVED), now, policy)
    held_now: set[AlertKey] = set()
    evaluated: set[AlertKey] = set()
    for evaluation in evaluations:
        key = evaluation.key
        evaluated.add(key)
        current = new_states.get(key)
        if evaluation.holds:
            held_now.add(key)
            if current is None:
                current = AlertState(evaluation.severity, "pending", now, evaluation.facts)
            current = replace(current, facts=evaluation.facts, severity=evaluation.severity, no_data_since=None)
            if current.status == "pending" and now - current.active_since >= evaluation.for_seconds:
                current = replace(current, status="firing", firing_since=now, last_sent_at=None)
            new_states[key] = current
        elif current is None:
            continue
        elif current.status == "pending":
            del new_states[key]  # ``for`` needs the condition in every cycle: false or no data resets it
        elif evaluation.holds is False:
            del new_states[key]
            notifications += _resolve(key, current, evaluation.facts, now, policy)
        else:  # firing, and no data this cycle
            since = now if current.no_data_since is None else current.no_data_since
            window = evaluation.no_data_window
            if window and now - since >= window:
                del new_states[key]
                note = f"no traffic in the {format_duration(window)} window since {clock(since, now)}"
                notifications += _resolve(key, current, current.facts.without_numbers(note), now, policy)
            elif current.no_data_since is None:
                new_states[key] = replace(current, no_data_since=since)

    # Alerts that were not evaluated: of a stale SLO, pending ones end (no data) and firing ones
    # wait for data (SLODataMissing says why); of an evaluated SLO, the rule or the label set is
    # gone (a reload, a series that left every window), so they can never clear by themselves.
    rules_seen = {(key.slo, key.alert) for key in evaluated}
    for key in sorted(new_states.keys() - evaluated):
        gone = new_states[key]
        if key.slo in stale:
            if gone.status == "pending":
                del new_states[key]
            continue
        del new_states[key]
        note = LABELS_GONE if (key.slo, key.alert) in rules_seen else RULE_REMOVED
        notifications += _resolve(key, gone, gone.facts.without_numbers(note), now, policy)

    inhibiting = {
        (key.slo, key.labels)
        for key, state in new_states.items()
        if state.status == "firing" and state.severity == "critical"
    }
    sendable = {
        key: state
        for key, state in sorted(new_states.items())
        if state.status == "firing"
        and key in held_now
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
            sent_to = tuple(dict.fromkeys((*state.sent_to, *policy.channels_for(state.severity))))
            new_states[key] = replace(state, last_sent_at=now, sent_to=sent_to)
    return StepResult(new_states, tuple(notifications), tuple(sorted(stale)))


def restored(
    states: Mapping[AlertKey, AlertState], *, last_cycle_at: float | None, now: float, interval: float
) -> dict[AlertKey, AlertState]:
    """Alert states read back at start: a pending alert counts only if its last cycle was at most two
    intervals ago (``for`` needs the condition in every cycle; nobody looked while sloeval was down)."""
    if last_cycle_at is not None and now - last_cycle_at <= 2 * interval:
        return dict(states)
    return {key: state for key, state in states.items() if state.status == "firing"}


def _resolve(key: AlertKey, state: AlertState, facts: Facts, now: float, policy: NotifyPolicy) -> list[Notification]:
    """The RESOLVED owed when a firing alert ends: whenever its FIRING went out, silenced or not."""
    if state.status != "firing" or state.last_sent_at is None or not policy.send_resolved:
        return []
    if _silenced(policy, key, state.severity, now):
        facts = replace(facts, note=ENDED_SILENCED if facts.note is None else f"{facts.note}; {ENDED_SILENCED}")
    since = _or_now(state.firing_since, now)
    return [Notification(key, state.severity, "resolved", facts, now, since, also_to=state.sent_to)]


def clock(moment: float, now: float) -> str:
    """``03:12 UTC``, with the date when it was not today."""
    when = datetime.fromtimestamp(moment, UTC)
    same_day = when.date() == datetime.fromtimestamp(now, UTC).date()
    return when.strftime("%H:%M UTC" if same_day else "%Y-%m-%d %H:%M UTC")


def _or_now(moment: float | None, now: float) -> float:
    return now if moment is None else moment


def _silenced(policy: NotifyPolicy, key: AlertKey, severity: str, now: float) -> bool:
    labels = _labels_of(key, severity)
    return any(silence.matches(labels, now) for silence in policy.silences)


def firing_alerts(states: Mapping[AlertKey, AlertState]) -> list[tuple[AlertKey, str]]:
    """(key, severity) of alerts in the firing state, for the firing gauge."""
    return [(key, state.severity) for key, state in sorted(states.items()) if state.status == "firing"]
