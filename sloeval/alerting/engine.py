"""Glue between evaluation and delivery: state machine step, rendering, outbox commit."""

from __future__ import annotations

import structlog

from sloeval.alerting.channels import Channel
from sloeval.alerting.grouping import MessageGroup, group_notifications
from sloeval.alerting.machine import firing_alerts, restored, step
from sloeval.alerting.messages import SLODescription
from sloeval.alerting.model import AlertKey, AlertState, SLOSummary
from sloeval.alerting.rules import evaluate_rules
from sloeval.alerting.store import NewMessage, StateStore
from sloeval.config.settings import Settings
from sloeval.config.slo_file import SLOConfig
from sloeval.slo.snapshot import Snapshot

log = structlog.get_logger("sloeval.alerting")


class Alerting:
    """Holds the alert states between cycles; persists them with the messages they cause."""

    def __init__(
        self,
        config: SLOConfig,
        store: StateStore,
        channels: dict[str, Channel],
        settings: Settings,
        *,
        states: dict[AlertKey, AlertState],
        last_cycle_at: float | None,
    ) -> None:
        """Use :meth:`open`, which reads the stored states first."""
        self._config = config
        self._store = store
        self._channels = channels
        self._settings = settings
        self._states: dict[AlertKey, AlertState] = states
        self._stored: dict[AlertKey, AlertState] = dict(states)  # what the store holds
        self._last_cycle_at = last_cycle_at
        self._restoring = True  # the first cycle decides whether restored pending alerts still count
        routed = {c for route in config.notify.routes for c in route.channels}
        for missing in sorted(routed - set(channels)):
            log.warning("channel_not_configured", channel=missing, hint="messages routed to it are dropped")
        if self._states:
            log.info("alert_state_restored", alerts=len(self._states), firing=len(firing_alerts(self._states)))

    @classmethod
    async def open(
        cls, config: SLOConfig, store: StateStore, channels: dict[str, Channel], settings: Settings
    ) -> Alerting:
        """The engine, continuing from what the store holds (raises StateStoreError)."""
        states = await store.load_alerts()
        last_cycle_at = await store.last_cycle_at()
        return cls(config, store, channels, settings, states=states, last_cycle_at=last_cycle_at)

    def reconfigure(self, config: SLOConfig) -> None:
        """Use a reloaded SLO file; firing alerts of removed SLOs resolve at the next cycle."""
        self._config = config

    @property
    def states(self) -> dict[AlertKey, AlertState]:
        return self._states

    async def on_snapshot(self, snapshot: Snapshot) -> set[str]:
        """Advance alerts with this cycle's numbers; return the channels that got new messages."""
        now = snapshot.evaluated_at
        if self._restoring:
            self._restoring = False
            interval = self._settings.eval_interval
            kept = restored(self._states, last_cycle_at=self._last_cycle_at, now=now, interval=interval)
            if len(kept) < len(self._states):
                log.info(
                    "pending_alerts_reset", alerts=len(self._states) - len(kept), reason="gap since the last cycle"
                )
            self._states = kept
        evaluations, stale = evaluate_rules(snapshot, data_missing_after=self._settings.stale_alert_after)
        # The SLOs the snapshot was evaluated with, not the engine's newest config: a reload that lands
        # between a cycle and its step must not read the cycle's SLOs as removed (and page twice).
        slos = {status.slo.name: status.slo for status in snapshot.statuses}
        result = step(
            self._states,
            evaluations,
            now=now,
            policy=self._config.notify,
            known_slos=slos,
            stale_slos=stale,
            interval=self._settings.eval_interval,
        )
        messages: list[NewMessage] = []
        for group in group_notifications(result.notifications, self._config.notify):
            channel = self._channels.get(group.channel)
            if channel is None:
                continue
            slo = slos.get(group.slo) or _stored_summary(group)
            rendered = channel.render(group, slo)
            deadline = now + self._settings.notify_deadline
            messages += [
                NewMessage(group.channel, r, rendered.subject, rendered.text, rendered.html, deadline)
                for r in channel.recipients
            ]
        await self._store.commit_cycle(result.states, messages, now, previous=self._stored)
        self._stored = result.states
        self._log_changes(result.states)
        self._states = result.states
        for notification in result.notifications:
            log.info(
                "alert_notification",
                slo=notification.key.slo,
                alert=notification.key.alert,
                labels=dict(notification.key.labels),
                severity=notification.severity,
                status=notification.status,
                repeat=notification.repeat,
            )
        return {m.channel for m in messages}

    def _log_changes(self, new: dict[AlertKey, AlertState]) -> None:
        for key, state in new.items():
            old = self._states.get(key)
            if old is None or old.status != state.status:
                log.info("alert_state", slo=key.slo, alert=key.alert, labels=dict(key.labels), status=state.status)
        for key in self._states.keys() - new.keys():
            log.info("alert_state", slo=key.slo, alert=key.alert, labels=dict(key.labels), status="inactive")


def _stored_summary(group: MessageGroup) -> SLODescription:
    """What the alerts' stored facts say of an SLO that a reload removed."""
    for notification in group.notifications:
        if notification.facts.slo is not None:
            return notification.facts.slo
    objective = group.notifications[0].facts.objective
    return SLOSummary(name=group.slo, slo_type="slo", service="-", objective=objective, period_name="-")
