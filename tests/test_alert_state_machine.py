"""Model-based test of the alert lifecycle: random cycles, silences, reloads, restarts and time jumps.

Every step runs the real rules and state machine (``evaluate_rules`` and ``step``) on a snapshot the
test builds, through JSON like the state store on a restart, and checks after every step:

- every FIRING sent is followed by exactly one RESOLVED once its alert ends (silences, reloads and
  restarts in between change nothing), and no RESOLVED comes without a FIRING before it;
- no message quotes numbers older than the cycle that sent it;
- no alert starts firing unless its condition held in every cycle for its ``for``;
- at most one FIRING per alert per ``repeat_interval``;
- inhibition never hides a critical alert, nor ``SLODataMissing``.

``SLOEVAL_MODEL_EXAMPLES`` sets how many random programs run (``make test``: 300; ``make nightly``: 5,000).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sloeval.alerting.machine import restored, step
from sloeval.alerting.model import AlertKey, AlertState, Facts, Notification
from sloeval.alerting.rules import DATA_MISSING_ALERT, RuleEvaluation, evaluate_rules
from sloeval.config.alert_rules import NotifyPolicy, Silence
from sloeval.config.slo_file import SLOConfig, parse_slo_text
from sloeval.slo.snapshot import SLOResult, SLOStatus, Snapshot

INTERVAL = 30.0
REPEAT = 300
DATA_MISSING_AFTER = 90.0
BASE = """
service: api
period: 1d
notify:
  routes: [{severity: [critical, warning], channels: [telegram]}]
  repeat_interval: 5m
  group_wait: 0s
slos:
  - name: errors
    objective: 99
    ratio: {bad: b, total: t, group_by: [endpoint]}
    alerts:
      - {name: Fast, severity: critical, burn_rate: {long: 1h, short: 5m, factor: 14.4}}
      - {name: Slow, severity: warning, burn_rate: {long: 6h, short: 30m, factor: 2}}
      - {name: Dip, severity: warning, sli_below: {window: 5m, threshold: 95, for: 1m}}
  - name: latency
    objective: 95
    ratio: {good: g, total: t}
    alerts:
      - {name: Fast, severity: critical, burn_rate: {long: 1h, short: 5m, factor: 14.4}}
"""
#: What a reload may turn the SLO file into.
CONFIGS: dict[str, SLOConfig] = {
    "base": parse_slo_text(BASE, Path("slos.yaml")),
    "slo renamed": parse_slo_text(BASE.replace("name: errors", "name: api-errors"), Path("slos.yaml")),
    "rule renamed": parse_slo_text(BASE.replace("name: Slow,", "name: SlowBurn,"), Path("slos.yaml")),
    "rule removed": parse_slo_text(
        BASE.replace("      - {name: Dip, severity: warning, sli_below: {window: 5m, threshold: 95, for: 1m}}\n", ""),
        Path("slos.yaml"),
    ),
    "slo removed": parse_slo_text(
        BASE[: BASE.index("  - name: errors")] + BASE[BASE.index("  - name: latency") :], Path("slos.yaml")
    ),
}
LABEL_SETS = ((("endpoint", "/a"),), (("endpoint", "/b"),))
#: Burn rate of every window, per traffic kind: None is no traffic in any window.
TRAFFIC: dict[str, dict[str, float | None] | None] = {
    "burning": {"*": 20.0},  # Fast, Slow and Dip hold
    "slow": {"*": 3.0},  # Slow only (Fast needs 14.4; the SLI of 97 % is above Dip's 95 %)
    "dipping": {"*": 0.0, "5m": 6.0, "1h": 0.0},  # Dip only (SLI 94 % over 5m)
    "healthy": {"*": 0.0},
    "quiet": {"*": None},
    "absent": None,  # the label set is not in the results at all
}


def result_for(slo_windows: tuple[str, ...], labels: tuple[tuple[str, str], ...], kind: str) -> SLOResult | None:
    spec = TRAFFIC[kind]
    if spec is None:
        return None
    rates = {w: spec.get(w, spec["*"]) for w in slo_windows}
    sli = {w: None if r is None else 1 - r * 0.01 for w, r in rates.items()}
    period_rate = rates["1d"]
    return SLOResult(labels, sli, rates, {}, None if period_rate is None else 1 - period_rate)


def has_numbers(facts: Facts) -> bool:
    return bool(facts.burn_rates or facts.sli) or facts.budget_remaining_percent is not None


@dataclass
class Lifecycle:
    """What the messages of one alert have said so far."""

    open_firing: bool = False  # a FIRING went out and its RESOLVED has not
    last_firing_at: float | None = None  # in the current incident


@dataclass
class World:
    now: float = 1_000_000.0
    last_cycle_at: float | None = None
    config_name: str = "base"
    silences: list[Silence] = field(default_factory=list)
    states: dict[AlertKey, AlertState] = field(default_factory=dict)
    restarted: bool = False
    held_since: dict[AlertKey, float] = field(default_factory=dict)  # consecutive cycles holding
    previous_cycle_at: float | None = None
    lifecycles: dict[AlertKey, Lifecycle] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)  # SLOs whose queries fail, until told otherwise


class AlertLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World()

    @property
    def config(self) -> SLOConfig:
        return CONFIGS[self.world.config_name]

    def policy(self) -> NotifyPolicy:
        return replace(self.config.notify, silences=tuple(self.world.silences))

    @initialize()
    def start(self) -> None:
        self.world = World()

    # --- what happens between cycles ---------------------------------------------------------

    @rule(seconds=st.sampled_from([INTERVAL, INTERVAL, INTERVAL, 2 * INTERVAL, 600.0, 3600.0, 7200.0]))
    def time_passes(self, seconds: float) -> None:
        self.world.now += seconds - INTERVAL  # the cycle itself adds one interval

    @rule(name=st.sampled_from(sorted(CONFIGS)))
    def reload(self, name: str) -> None:
        self.world.config_name = name

    @rule(
        starts_in=st.sampled_from([0.0, 60.0, 600.0]),
        lasts=st.sampled_from([60.0, 600.0, 3600.0]),
        matcher=st.sampled_from([("slo", "errors"), ("severity", "critical"), ("alert", "Fast"), ("slo", ".*")]),
    )
    def silence(self, starts_in: float, lasts: float, matcher: tuple[str, str]) -> None:
        start = self.world.now + starts_in
        regex = matcher[1] == ".*"
        self.world.silences.append(Silence(((matcher[0], matcher[1], regex),), start, start + lasts, "model"))

    @precondition(lambda self: bool(self.world.silences))
    @rule()
    def end_silences(self) -> None:
        self.world.silences = [replace(s, end=min(s.end, self.world.now)) for s in self.world.silences]

    @rule(slo=st.sampled_from(["errors", "latency"]))
    def queries_fail_or_recover(self, slo: str) -> None:
        self.world.failing ^= {slo}

    @rule()
    def restart(self) -> None:
        """The state store is all that survives: alert states through JSON, and the last cycle's time."""
        self.world.states = {
            AlertKey.from_id(key.to_id()): AlertState.from_json(state.to_json())
            for key, state in self.world.states.items()
        }
        self.world.restarted = True

    # --- a cycle -----------------------------------------------------------------------------

    @rule(
        traffic=st.lists(st.sampled_from(sorted(TRAFFIC)), min_size=2, max_size=2),
        latency_traffic=st.sampled_from(sorted(TRAFFIC)),
    )
    def cycle(self, traffic: list[str], latency_traffic: str) -> None:
        w = self.world
        w.now += INTERVAL
        now = w.now
        statuses = []
        for slo in self.config.slos:
            if slo.name.removeprefix("api-") in w.failing:
                statuses.append(SLOStatus(slo, (), error="connection refused"))
                continue
            if slo.name == "latency":  # ungrouped: its alerts share SLODataMissing's empty label set
                results = [result_for(slo.window_names, (), latency_traffic)]
            else:
                pairs = zip(LABEL_SETS, traffic, strict=True)
                results = [result_for(slo.window_names, labels, kind) for labels, kind in pairs]
            statuses.append(SLOStatus(slo, tuple(r for r in results if r is not None)))
        snapshot = Snapshot(now, 0.01, tuple(statuses))
        states = w.states
        if w.restarted:
            states = restored(states, last_cycle_at=w.last_cycle_at, now=now, interval=INTERVAL)
            if w.last_cycle_at is None or now - w.last_cycle_at > 2 * INTERVAL:
                w.held_since = {}  # nobody looked in between: holding starts again
        evaluations_iter, stale_slos = evaluate_rules(snapshot, data_missing_after=DATA_MISSING_AFTER)
        evaluations = list(evaluations_iter)
        policy = self.policy()
        result = step(
            states,
            evaluations,
            now=now,
            policy=policy,
            known_slos=[s.name for s in self.config.slos],
            stale_slos=stale_slos,
            interval=INTERVAL,
        )
        self.check_cycle(states, result.states, result.notifications, evaluations, policy, now)
        w.states = result.states
        w.restarted = False
        w.last_cycle_at = now
        w.previous_cycle_at = now

    # --- the invariants, checked on every cycle ----------------------------------------------

    def check_cycle(
        self,
        before: dict[AlertKey, AlertState],
        after: dict[AlertKey, AlertState],
        notifications: tuple[Notification, ...],
        evaluations: list[RuleEvaluation],
        policy: NotifyPolicy,
        now: float,
    ) -> None:
        w = self.world
        held = {e.key: e for e in evaluations if e.holds}
        # Consecutive holding, as the model sees it: any cycle without the condition breaks it.
        w.held_since = {key: w.held_since.get(key, now) for key in held}
        by_key: dict[AlertKey, list[Notification]] = {}
        for n in notifications:
            by_key.setdefault(n.key, []).append(n)
            # No stale numbers: a FIRING quotes this cycle's evaluation; a RESOLVED quotes it or none.
            assert n.at == now
            if n.status == "firing":
                assert n.key in held, f"FIRING for {n.key} whose condition did not hold this cycle"
                assert n.facts == held[n.key].facts, "a FIRING quotes numbers of another cycle"
            else:
                evaluation = next((e for e in evaluations if e.key == n.key), None)
                fresh = (
                    evaluation is not None
                    and evaluation.holds is False
                    and n.facts.burn_rates == evaluation.facts.burn_rates
                )
                assert fresh or not has_numbers(n.facts), f"RESOLVED for {n.key} quotes old numbers: {n.facts}"
        for key, sent in by_key.items():
            assert len(sent) == 1, f"{key}: {len(sent)} messages in one cycle"
        for key in set(before) | set(after) | set(by_key):
            life = w.lifecycles.setdefault(key, Lifecycle())
            message = by_key.get(key, [None])[0]
            old, new = before.get(key), after.get(key)
            if message is not None and message.status == "firing":
                if life.open_firing and life.last_firing_at is not None:
                    assert now - life.last_firing_at >= REPEAT, f"{key}: two FIRING {now - life.last_firing_at}s apart"
                assert message.repeat == life.open_firing
                life.open_firing, life.last_firing_at = True, now
            if message is not None and message.status == "resolved":
                assert life.open_firing, f"{key}: RESOLVED without a FIRING before it"
                life.open_firing, life.last_firing_at = False, None
            if new is None and life.open_firing:
                raise AssertionError(f"{key} ended after its FIRING went out, and no RESOLVED came")
            if new is not None and new.status == "firing" and (old is None or old.status != "firing"):
                for_seconds = held[key].for_seconds if key in held else 0
                assert key in held, f"{key} started firing in a cycle where its condition did not hold"
                assert now - w.held_since[key] >= for_seconds, f"{key} fired after holding {now - w.held_since[key]}s"
        # Inhibition never hides a critical alert nor SLODataMissing: if one is firing, held now,
        # is not silenced and was never sent, it went out in this cycle (group_wait is 0s).
        for key, state in after.items():
            if state.status != "firing" or key not in held:
                continue
            if state.severity != "critical" and key.alert != DATA_MISSING_ALERT:
                continue
            labels = {**dict(key.labels), "slo": key.slo, "alert": key.alert, "severity": state.severity}
            if any(s.matches(labels, now) for s in policy.silences):
                continue
            assert state.last_sent_at is not None, f"{key} is firing, held and unsilenced, but was never sent"

    @invariant()
    def firing_alerts_that_went_out_are_open(self) -> None:
        for key, state in self.world.states.items():
            if state.status == "firing" and state.last_sent_at is not None:
                assert self.world.lifecycles[key].open_firing


AlertLifecycle.TestCase.settings = settings(
    max_examples=int(os.environ.get("SLOEVAL_MODEL_EXAMPLES", "300")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAlertLifecycle = AlertLifecycle.TestCase
