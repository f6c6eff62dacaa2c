"""The alert state machine, driven with hand-made snapshots (pure: no I/O, no clock)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sloeval.alerting.grouping import group_notifications
from sloeval.alerting.machine import StepResult, firing_alerts, step
from sloeval.alerting.model import AlertKey, AlertState, Notification
from sloeval.alerting.rules import evaluate_rules
from sloeval.config.slo_file import SLOConfig, SLODefinition, parse_slo_text
from sloeval.slo.snapshot import SLOResult, SLOStatus, Snapshot

CONFIG_TEXT = """
service: api
period: 1d
notify:
  routes:
    - {severity: [critical], channels: [telegram, email]}
    - {severity: [warning], channels: [email]}
  repeat_interval: 1h
  group_wait: 0s
slos:
  - name: errors
    objective: 99
    ratio: {bad: b, total: t}
    alerts:
      - {name: Fast, severity: critical, burn_rate: {long: 1h, short: 5m, factor: 14.4}}
      - {name: Slow, severity: warning, burn_rate: {long: 6h, short: 30m, factor: 2}}
      - {name: Dip, severity: warning, sli_below: {window: 5m, threshold: 95, for: 10m}}
"""


def config(text: str = CONFIG_TEXT) -> SLOConfig:
    return parse_slo_text(text, Path("slos.yaml"))


CFG = config()
SLO = CFG.slos[0]


def snapshot(
    at: float, burn: dict[str, float | None], labels: tuple[tuple[str, str], ...] = (), slo: SLODefinition = SLO
) -> Snapshot:
    """A snapshot where every window has the given burn rate (default 0) for one label set."""
    rates = {w: burn.get(w, 0.0) for w in slo.window_names}
    sli = {w: None if r is None else 1 - r * 0.01 for w, r in rates.items()}
    result = SLOResult(labels, sli, rates, {}, None if rates["1d"] is None else 1 - rates["1d"])
    return Snapshot(at, 0.01, (SLOStatus(slo, (result,)),))


def advance(states: dict[AlertKey, AlertState], snap: Snapshot, cfg: SLOConfig = CFG) -> StepResult:
    evaluations, stale = evaluate_rules(snap)
    return step(
        states,
        evaluations,
        now=snap.evaluated_at,
        policy=cfg.notify,
        known_slos=[s.name for s in cfg.slos],
        stale_slos=stale,
        interval=30,
    )


FAST = {"1h": 20.0, "5m": 30.0}


def names(notifications: tuple[Notification, ...]) -> list[tuple[str, str, bool]]:
    return [(n.key.alert, n.status, n.repeat) for n in notifications]


def test_fires_once_repeats_after_interval_and_resolves_once() -> None:
    r = advance({}, snapshot(0, FAST))
    assert names(r.notifications) == [("Fast", "firing", False)]
    r = advance(r.states, snapshot(30, FAST))
    assert r.notifications == ()  # no duplicate while it keeps firing
    r = advance(r.states, snapshot(3599, FAST))
    assert r.notifications == ()
    r = advance(r.states, snapshot(3600, FAST))
    assert names(r.notifications) == [("Fast", "firing", True)]  # repeat_interval 1h
    r = advance(r.states, snapshot(3630, {}))
    assert names(r.notifications) == [("Fast", "resolved", False)]
    assert r.states == {}
    r = advance(r.states, snapshot(3660, {}))
    assert r.notifications == ()  # exactly one resolve


def test_both_windows_must_exceed_the_factor() -> None:
    assert advance({}, snapshot(0, {"1h": 20.0, "5m": 10.0})).notifications == ()
    assert advance({}, snapshot(0, {"1h": 10.0, "5m": 30.0})).notifications == ()
    assert advance({}, snapshot(0, {"1h": 14.4, "5m": 14.4})).notifications == ()  # "exceeds", not equals


def test_for_keeps_the_alert_pending_until_it_held_long_enough() -> None:
    dip = {"5m": 6.0}  # SLI 94 % < 95 %
    r = advance({}, snapshot(0, dip))
    assert r.notifications == ()
    assert next(iter(r.states.values())).status == "pending"
    r = advance(r.states, snapshot(300, dip))
    assert r.notifications == ()
    r = advance(r.states, snapshot(600, dip))
    assert names(r.notifications) == [("Dip", "firing", False)]


def test_pending_that_clears_sends_nothing() -> None:
    r = advance({}, snapshot(0, {"5m": 6.0}))
    r = advance(r.states, snapshot(30, {}))
    assert r.notifications == ()
    assert r.states == {}


@pytest.mark.parametrize("missing", ["1h", "5m"])
def test_no_data_neither_fires_nor_resolves(missing: str) -> None:
    no_data = {**FAST, missing: None}
    assert advance({}, snapshot(0, no_data)).notifications == ()
    firing = advance({}, snapshot(0, FAST))
    r = advance(firing.states, snapshot(30, no_data))
    assert r.notifications == ()
    fast = AlertKey("errors", "Fast")
    assert r.states[fast] == replace(firing.states[fast], no_data_since=30)  # still firing; no data noted


def test_stale_slo_keeps_its_firing_alerts_and_ends_pending_ones() -> None:
    firing = advance({}, snapshot(0, FAST))
    assert firing.states[AlertKey("errors", "Dip")].status == "pending"
    stale = Snapshot(30, 0.01, (SLOStatus(SLO, (), error="connection refused"),))
    r = advance(firing.states, stale)
    assert r.notifications == ()
    assert r.states == {AlertKey("errors", "Fast"): firing.states[AlertKey("errors", "Fast")]}
    assert r.stale_slos == ("errors",)


def test_critical_inhibits_warnings_of_the_same_slo_and_labels() -> None:
    both = {"1h": 20.0, "5m": 30.0, "6h": 5.0, "30m": 5.0}
    r = advance({}, snapshot(0, both))
    assert names(r.notifications) == [("Fast", "firing", False)]  # Slow is muted
    assert {k.alert for k, s in r.states.items() if s.status == "firing"} == {"Fast", "Slow"}
    # The critical one clears; the warning still burns and is now owed: it goes out.
    r = advance(r.states, snapshot(30, {"6h": 5.0, "30m": 5.0}))
    assert names(r.notifications) == [("Fast", "resolved", False), ("Slow", "firing", False)]


def test_inhibition_is_per_label_set() -> None:
    a, b = (("endpoint", "/a"),), (("endpoint", "/b"),)
    snap_a = snapshot(0, {"1h": 20.0, "5m": 30.0, "6h": 5.0, "30m": 5.0}, a)
    snap_b = snapshot(0, {"6h": 5.0, "30m": 5.0}, b)
    merged = Snapshot(0, 0.01, (SLOStatus(SLO, snap_a.statuses[0].results + snap_b.statuses[0].results),))
    r = advance({}, merged)
    assert sorted((n.key.alert, n.key.labels) for n in r.notifications) == [("Fast", a), ("Slow", b)]


def test_never_notified_warning_gets_no_resolve() -> None:
    both = {"1h": 20.0, "5m": 30.0, "6h": 5.0, "30m": 5.0}
    r = advance({}, snapshot(0, both))
    r = advance(r.states, snapshot(30, FAST))  # Slow clears while still inhibited
    assert r.notifications == ()


def test_silence_mutes_matching_alerts_only_inside_its_window() -> None:
    cfg = config(
        CONFIG_TEXT
        + """silences:
  - matchers: [{name: alert, value: Fa.*, regex: true}, {name: slo, value: errors}]
    start: 1970-01-01T00:00:00Z
    end: 1970-01-01T01:00:00Z
    comment: maintenance
"""
    )
    r = advance({}, snapshot(0, FAST), cfg)
    assert r.notifications == ()
    r = advance(r.states, snapshot(1800, FAST), cfg)
    assert r.notifications == ()
    r = advance(r.states, snapshot(3600, FAST), cfg)  # silence over: the page goes out now
    assert names(r.notifications) == [("Fast", "firing", False)]


def test_send_resolved_false() -> None:
    cfg = config(CONFIG_TEXT.replace("group_wait: 0s", "group_wait: 0s\n  send_resolved: false"))
    r = advance({}, snapshot(0, FAST), cfg)
    r = advance(r.states, snapshot(30, {}), cfg)
    assert r.notifications == ()
    assert r.states == {}


def test_group_wait_holds_only_when_another_cycle_comes_first() -> None:
    cfg = config(CONFIG_TEXT.replace("group_wait: 0s", "group_wait: 45s"))
    r = advance({}, snapshot(0, FAST), cfg)  # next cycle at 30 s < 45 s: hold
    assert r.notifications == ()
    both = {**FAST, "6h": 5.0, "30m": 5.0, "5m": 30.0}
    r = advance(r.states, snapshot(30, {**both, "5m": 30.0}), cfg)  # next at 60 s > 45 s: send
    assert names(r.notifications) == [("Fast", "firing", False)]
    default = config(CONFIG_TEXT.replace("group_wait: 0s", "group_wait: 10s"))
    assert names(advance({}, snapshot(0, FAST), default).notifications) == [("Fast", "firing", False)]


def test_state_survives_serialisation() -> None:
    r = advance({}, snapshot(0, FAST))
    restored = {AlertKey.from_id(k.to_id()): AlertState.from_json(s.to_json()) for k, s in r.states.items()}
    assert restored == r.states
    # After a "restart" with restored state: no second page, and the resolve still comes.
    again = advance(restored, snapshot(30, FAST))
    assert again.notifications == ()
    assert names(advance(again.states, snapshot(60, {})).notifications) == [("Fast", "resolved", False)]


def test_removed_slo_resolves_its_firing_alerts_from_stored_facts() -> None:
    r = advance({}, snapshot(0, FAST))
    evaluations, _ = evaluate_rules(Snapshot(30, 0.01, ()))
    gone = step(r.states, evaluations, now=30, policy=CFG.notify, known_slos=[])
    assert gone.states == {}
    (resolved,) = gone.notifications  # Fast went out; pending Dip never did, so nothing is owed for it
    assert (resolved.key.alert, resolved.status) == ("Fast", "resolved")
    assert resolved.facts.note == "SLO removed from the configuration"
    assert resolved.facts.burn_rates == ()  # no stale numbers
    assert resolved.facts.slo is not None
    assert (resolved.facts.slo.name, resolved.facts.slo.objective) == ("errors", 0.99)


def test_routing_and_grouping() -> None:
    both = {"1h": 20.0, "5m": 30.0, "6h": 5.0, "30m": 5.0}
    cfg = config(CONFIG_TEXT.replace("severity: warning, burn_rate", "severity: critical, burn_rate", 1))
    r = advance({}, snapshot(0, both, slo=cfg.slos[0]), cfg)
    groups = group_notifications(r.notifications, cfg.notify)
    assert sorted(g.channel for g in groups) == ["email", "telegram"]  # one message per channel
    assert all(len(g.notifications) == 2 for g in groups)  # alerts that start together: one message
    assert all(g.status == "firing" and g.severity == "critical" for g in groups)
    warning_only = advance({}, snapshot(0, {"6h": 5.0, "30m": 5.0}))
    assert [g.channel for g in group_notifications(warning_only.notifications, CFG.notify)] == ["email"]
    assert firing_alerts(r.states) == [
        (AlertKey("errors", "Fast"), "critical"),
        (AlertKey("errors", "Slow"), "critical"),
    ]


def test_minutes_of_budget_only_for_time_based_slos() -> None:
    cfg = config(
        "service: s\nperiod: 30d\nslos:\n  - name: up\n    objective: 99.9\n    uptime: {selector: up}\n"
        "    alerts: [{name: Low, severity: warning, budget_remaining_below: 50}]\n"
    )
    (slo,) = cfg.slos
    windows = slo.window_names
    result = SLOResult((), dict.fromkeys(windows, 0.9995), dict.fromkeys(windows, 0.5), {}, 0.5)
    (evaluation,), _ = evaluate_rules(Snapshot(0, 0.01, (SLOStatus(slo, (result,)),)))
    assert evaluation.facts.budget_minutes_total == pytest.approx(43.2)
    assert evaluation.facts.budget_minutes_left == pytest.approx(21.6)
    assert evaluation.facts.exhausted_in_seconds == pytest.approx(0.5 * 30 * 86400 / 0.5)
    (ratio_eval, *_), _ = evaluate_rules(snapshot(0, {"1h": 2.0}))
    assert ratio_eval.facts.budget_minutes_total is None


def test_one_message_per_slo_even_with_several_label_sets() -> None:
    a, b = (("endpoint", "/a"),), (("endpoint", "/b"),)
    results = snapshot(0, FAST, a).statuses[0].results + snapshot(0, FAST, b).statuses[0].results
    r = advance({}, Snapshot(0, 0.01, (SLOStatus(SLO, results),)))
    groups = group_notifications(r.notifications, CFG.notify)
    assert sorted(g.channel for g in groups) == ["email", "telegram"]
    assert all(g.labels == () and [n.key.labels for n in g.notifications] == [a, b] for g in groups)


def test_slo_data_missing_meta_alert() -> None:
    stale = Snapshot(0, 0.01, (SLOStatus(SLO, (), error="connection refused"),))

    def go(states: dict[AlertKey, AlertState], snap: Snapshot) -> StepResult:
        evaluations, _ = evaluate_rules(snap, data_missing_after=600)
        return step(states, evaluations, now=snap.evaluated_at, policy=CFG.notify, known_slos=["errors"])

    r = go({}, stale)
    assert r.notifications == ()
    r = go(r.states, Snapshot(599, 0.01, stale.statuses))
    assert r.notifications == ()
    r = go(r.states, Snapshot(600, 0.01, stale.statuses))
    (page,) = r.notifications
    assert (page.key.alert, page.severity, page.status) == ("SLODataMissing", "warning", "firing")
    assert "connection refused" in page.facts.condition
    r = go(r.states, snapshot(630, {}))
    assert [(n.key.alert, n.status) for n in r.notifications] == [("SLODataMissing", "resolved")]


def test_alert_of_a_renamed_rule_resolves_instead_of_firing_forever() -> None:
    r = advance({}, snapshot(0, FAST))
    renamed = config(CONFIG_TEXT.replace("name: Fast,", "name: Faster,"))
    evaluations, stale = evaluate_rules(snapshot(30, {}, slo=renamed.slos[0]))
    after = step(r.states, evaluations, now=30, policy=renamed.notify, known_slos=["errors"], stale_slos=stale)
    assert [(n.key.alert, n.status) for n in after.notifications] == [("Fast", "resolved")]
    assert all(k.alert != "Fast" for k in after.states)


def test_data_missing_is_not_inhibited_by_a_firing_critical() -> None:
    firing = advance({}, snapshot(0, FAST))
    stale = Snapshot(0, 0.01, (SLOStatus(SLO, (), error="connection refused"),))
    states = firing.states
    notes: list[Notification] = []
    for at in (0, 300, 600):
        evaluations, stale_slos = evaluate_rules(Snapshot(at, 0.01, stale.statuses), data_missing_after=600)
        result = step(states, evaluations, now=at, policy=CFG.notify, known_slos=["errors"], stale_slos=stale_slos)
        states, notes = result.states, notes + list(result.notifications)
    assert [(n.key.alert, n.status) for n in notes] == [("SLODataMissing", "firing")]
    assert any(k.alert == "Fast" and s.status == "firing" for k, s in states.items())  # kept: no data
