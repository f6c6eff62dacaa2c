"""Pages you can trust: quiet endpoints, silences, reloads, `for`, restarts (the pure state machine)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sloeval.alerting.channels.smtp import render_plain
from sloeval.alerting.channels.telegram import render_telegram
from sloeval.alerting.grouping import MessageGroup
from sloeval.alerting.machine import StepResult, restored, step
from sloeval.alerting.model import AlertKey, AlertState, Facts, Notification, SLOSummary
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
    ratio: {bad: b, total: t, group_by: [endpoint]}
    alerts:
      - {name: Fast, severity: critical, burn_rate: {long: 1h, short: 5m, factor: 14.4}}
      - {name: Dip, severity: warning, sli_below: {window: 5m, threshold: 95, for: 10m}}
      - {name: Low, severity: warning, budget_remaining_below: 50}
"""
SILENCE = """
silences:
  - matchers: [{name: slo, value: errors}]
    start: 1970-01-01T00:01:40Z
    end: 1970-01-01T00:03:20Z
"""
CFG = parse_slo_text(CONFIG_TEXT, Path("slos.yaml"))
SLO = CFG.slos[0]
A = (("endpoint", "/a"),)
B = (("endpoint", "/b"),)
FAST = AlertKey("errors", "Fast", A)
DIP = AlertKey("errors", "Dip", A)


def result(burn: float | None, labels: tuple[tuple[str, str], ...] = A, slo: SLODefinition = SLO) -> SLOResult:
    """Every window burns at ``burn`` (None: no traffic in any window)."""
    rates = {w: burn for w in slo.window_names}
    sli = {w: None if burn is None else 1 - burn * 0.01 for w in slo.window_names}
    return SLOResult(labels, sli, rates, {}, None if burn is None else 1 - burn)


def snap(at: float, *results: SLOResult, slo: SLODefinition = SLO) -> Snapshot:
    return Snapshot(at, 0.01, (SLOStatus(slo, results),))


def advance(states: dict[AlertKey, AlertState], snapshot: Snapshot, cfg: SLOConfig = CFG) -> StepResult:
    evaluations, stale = evaluate_rules(snapshot)
    return step(
        states,
        evaluations,
        now=snapshot.evaluated_at,
        policy=cfg.notify,
        known_slos=[s.name for s in cfg.slos],
        stale_slos=stale,
        interval=30,
    )


def sent(notifications: tuple[Notification, ...], key: AlertKey) -> list[tuple[str, bool]]:
    return [(n.status, n.repeat) for n in notifications if n.key == key]


def no_numbers(facts: Facts) -> bool:
    return facts.burn_rates == () and facts.sli == () and facts.budget_remaining_percent is None


def test_a_firing_alert_whose_traffic_stops_resolves_after_its_window_and_never_repeats_meanwhile() -> None:
    r = advance({}, snap(0, result(20.0)))
    assert sent(r.notifications, FAST) == [("firing", False)]
    for at in range(30, 3630, 30):  # no traffic, for just under the rule's 1h window (repeat_interval: 1h)
        r = advance(r.states, snap(at, result(None)))
        assert sent(r.notifications, FAST) == [], f"a message at {at}s quotes numbers from 0s"
        assert r.states[FAST].status == "firing"
    r = advance(r.states, snap(3630, result(None)))
    assert sent(r.notifications, FAST) == [("resolved", False)]
    (resolved,) = [n for n in r.notifications if n.key == FAST]
    assert resolved.facts.note == "no traffic in the 1h window since 00:00 UTC"
    assert no_numbers(resolved.facts)
    assert FAST not in r.states
    # The burn returns: it fires again as a new incident, not as a repeat.
    r = advance(r.states, snap(3660, result(20.0)))
    assert sent(r.notifications, FAST) == [("firing", False)]


def test_a_budget_alert_waits_for_its_period_before_resolving_for_lack_of_data() -> None:
    low = AlertKey("errors", "Low", A)
    r = advance({}, snap(0, result(0.6)))  # budget 40 % < 50 %: fires; burn 0.6 is under Fast's factor
    assert sent(r.notifications, low) == [("firing", False)]
    r = advance(r.states, snap(30, result(None)))
    r = advance(r.states, snap(86_000, result(None)))
    assert low in r.states  # the period is 1d
    r = advance(r.states, snap(86_430, result(None)))
    assert sent(r.notifications, low) == [("resolved", False)]
    assert r.notifications[0].facts.note == "no traffic in the 1d window since 1970-01-01 00:00 UTC"  # not today


def test_traffic_that_returns_before_the_window_keeps_the_incident_and_repeats_with_fresh_numbers() -> None:
    r = advance({}, snap(0, result(20.0)))
    r = advance(r.states, snap(1800, result(None)))
    assert r.states[FAST].no_data_since == 1800
    r = advance(r.states, snap(3600, result(30.0)))
    assert sent(r.notifications, FAST) == [("firing", True)]
    (repeat,) = [n for n in r.notifications if n.key == FAST]
    assert dict(repeat.facts.burn_rates)["1h"] == 30.0  # this cycle's numbers
    assert r.states[FAST].no_data_since is None


def test_a_silence_mutes_firing_but_never_the_resolved_it_owes() -> None:
    cfg = parse_slo_text(CONFIG_TEXT + SILENCE, Path("slos.yaml"))
    r = advance({}, snap(0, result(20.0)), cfg)  # before the silence: paged
    assert sent(r.notifications, FAST) == [("firing", False)]
    r = advance(r.states, snap(120, result(0.0)), cfg)  # clears inside the silence (100 s to 200 s)
    assert sent(r.notifications, FAST) == [("resolved", False)]
    (resolved,) = [n for n in r.notifications if n.key == FAST]
    assert resolved.facts.note == "ended while silenced"
    assert dict(resolved.facts.burn_rates)["1h"] == 0.0


def test_an_alert_that_starts_and_ends_inside_a_silence_sends_nothing() -> None:
    cfg = parse_slo_text(CONFIG_TEXT + SILENCE, Path("slos.yaml"))
    r = advance({}, snap(110, result(20.0)), cfg)
    assert sent(r.notifications, FAST) == []
    r = advance(r.states, snap(140, result(0.0)), cfg)
    assert r.notifications == ()


def test_pending_needs_the_condition_in_every_cycle_no_data_resets_it() -> None:
    dip = 6.0  # SLI 94 % < 95 %; Fast needs 14.4
    r = advance({}, snap(0, result(dip)))
    assert r.states[DIP].status == "pending"
    r = advance(r.states, snap(300, result(None)))  # no data: the pending alert ends
    assert DIP not in r.states
    for at in (330, 600, 900):
        r = advance(r.states, snap(at, result(dip)))
        assert sent(r.notifications, DIP) == [], f"fired at {at}s after holding only since 330s"
    r = advance(r.states, snap(930, result(dip)))
    assert sent(r.notifications, DIP) == [("firing", False)]


def test_a_pending_alert_read_back_after_a_restart_counts_only_within_two_intervals() -> None:
    r = advance({}, snap(0, result(6.0)))
    stored = {key: AlertState.from_json(state.to_json()) for key, state in r.states.items()}
    assert restored(stored, last_cycle_at=0, now=60, interval=30) == stored
    after_downtime = restored(stored, last_cycle_at=0, now=61, interval=30)
    assert DIP not in after_downtime
    assert DIP not in restored(stored, last_cycle_at=None, now=30, interval=30)
    assert {k.alert for k in stored} == {"Dip", "Low"}  # Low (budget -500 %) fires at once: firing survives
    firing = advance(r.states, snap(600, result(20.0))).states
    assert restored(firing, last_cycle_at=600, now=99_999, interval=30) == {
        k: v for k, v in firing.items() if v.status == "firing"
    }


def test_a_label_set_gone_resolves_without_its_old_numbers() -> None:
    r = advance({}, snap(0, result(20.0, A), result(0.0, B)))
    r = advance(r.states, snap(30, result(0.0, B)))  # /a is no longer in the results at all
    assert sent(r.notifications, FAST) == [("resolved", False)]
    assert r.notifications[0].facts.note == "label set no longer reported by Prometheus"
    assert no_numbers(r.notifications[0].facts)


def test_a_renamed_rule_resolves_the_old_one_saying_why() -> None:
    renamed = parse_slo_text(CONFIG_TEXT.replace("name: Fast,", "name: FastBurn,"), Path("slos.yaml"))
    r = advance({}, snap(0, result(20.0)))
    r = advance(r.states, snap(30, result(20.0, slo=renamed.slos[0]), slo=renamed.slos[0]), renamed)
    assert sent(r.notifications, FAST) == [("resolved", False)]
    assert [n.facts.note for n in r.notifications if n.key == FAST] == ["alert rule removed from the configuration"]
    assert sent(r.notifications, AlertKey("errors", "FastBurn", A)) == [("firing", False)]


def test_a_renamed_slo_resolves_the_old_alerts_from_what_was_stored() -> None:
    renamed = parse_slo_text(CONFIG_TEXT.replace("name: errors", "name: api-errors"), Path("slos.yaml"))
    r = advance({}, snap(0, result(20.0)))
    stored = {key: AlertState.from_json(state.to_json()) for key, state in r.states.items()}  # a restart
    r = advance(stored, snap(30, result(20.0, slo=renamed.slos[0]), slo=renamed.slos[0]), renamed)
    (old,) = [n for n in r.notifications if n.key.slo == "errors"]
    assert (old.key, old.status, old.facts.note) == (FAST, "resolved", "SLO removed from the configuration")
    assert no_numbers(old.facts)
    assert sent(r.notifications, AlertKey("api-errors", "Fast", A)) == [("firing", False)]
    # The stored facts are enough to render it, in every channel.
    assert old.facts.slo == SLOSummary("errors", "availability", "api", 0.99, "1d")
    group = MessageGroup("email", "errors", A, (old,))
    text = render_plain(group, old.facts.slo).text
    assert "RESOLVED: errors" in text
    assert "SLO removed from the configuration" in text
    assert "objective 99% over 1d" in text
    assert (
        "SLO removed from the configuration" in render_telegram(replace(group, channel="telegram"), old.facts.slo).text
    )


def test_a_prometheus_error_quoted_by_slo_data_missing_cannot_forge_lines() -> None:
    """Prometheus quotes label values in its errors; the meta alert's message quotes the error."""
    error = 'found duplicate series for the match group {endpoint="/x\nBcc: evil@example.test\n\u202eRESOLVED"}'
    stale = Snapshot(0, 0.01, (SLOStatus(SLO, (), error=error),))
    evaluations, _ = evaluate_rules(stale, data_missing_after=60)
    (missing,) = [e for e in evaluations if e.key.alert == "SLODataMissing"]
    condition = missing.facts.condition
    assert "\n" not in condition
    assert "\u202e" not in condition
    assert "\\nBcc: evil@example.test" in condition
    assert "\\u202e" in condition


def test_the_engine_steps_a_snapshot_with_the_slos_it_was_evaluated_with(tmp_path: Path) -> None:
    """A reload that lands between a cycle and its step must not read the cycle's SLOs as removed."""
    import anyio

    from sloeval.alerting.engine import Alerting
    from sloeval.config.settings import Settings
    from sloeval.state.sqlite import SQLiteStateStore, ThreadedSQLiteStore

    renamed = parse_slo_text(CONFIG_TEXT.replace("name: errors", "name: api-errors"), Path("slos.yaml"))

    async def scenario() -> list[tuple[str, str]]:
        store = ThreadedSQLiteStore(SQLiteStateStore.open(tmp_path))
        engine = await Alerting.open(CFG, store, {}, Settings(eval_interval=30))  # type: ignore[call-arg]
        await engine.on_snapshot(snap(0, result(20.0)))
        firing = {key.alert for key, state in engine.states.items() if state.status == "firing"}
        assert "Fast" in firing
        engine.reconfigure(renamed)  # the reload lands ...
        await engine.on_snapshot(snap(30, result(20.0)))  # ... before the old config's cycle is stepped
        states = [(key.slo, key.alert) for key in engine.states]
        await store.aclose()
        return states

    states = anyio.run(scenario)
    assert ("errors", "Fast") in states  # not resolved as "SLO removed", so not paged again later


def test_a_resolved_goes_where_its_firing_went_after_a_reload_changed_the_severity() -> None:
    """Routes pick channels by severity: a critical rule made a warning must still close the chat's incident."""
    from sloeval.alerting.grouping import group_notifications

    warning = parse_slo_text(
        CONFIG_TEXT.replace("severity: critical, burn_rate", "severity: warning, burn_rate"), Path("slos.yaml")
    )
    r = advance({}, snap(0, result(20.0)))
    fired = sorted(g.channel for g in group_notifications(r.notifications, CFG.notify) if g.slo == "errors")
    assert fired == ["email", "telegram"]
    stored = {key: AlertState.from_json(state.to_json()) for key, state in r.states.items()}  # also across a restart
    r = advance(stored, snap(30, result(0.0, slo=warning.slos[0]), slo=warning.slos[0]), warning)
    resolved = [n for n in r.notifications if n.key == FAST]
    assert [n.status for n in resolved] == ["resolved"]
    groups = group_notifications(tuple(resolved), warning.notify)
    assert sorted(g.channel for g in groups) == ["email", "telegram"]  # warning routes only to email
