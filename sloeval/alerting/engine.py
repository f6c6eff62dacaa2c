"""Glue between evaluation and delivery: state machine step, rendering, outbox commit."""

from __future__ import annotations

from functools import partial

import anyio
import structlog

from sloeval.alerting.channels import Channel
from sloeval.alerting.grouping import group_notifications
from sloeval.alerting.machine import firing_alerts, step
from sloeval.alerting.model import AlertKey, AlertState
from sloeval.alerting.rules import evaluate_rules
from sloeval.alerting.store import NewMessage, StateStore
from sloeval.config.settings import Settings
from sloeval.config.slo_file import SLOConfig
from sloeval.slo.snapshot import Snapshot

log = structlog.get_logger("sloeval.alerting")


class Alerting:
    """Holds the alert states between cycles; persists them with the messages they cause."""

    def __init__(self, config: SLOConfig, store: StateStore, channels: dict[str, Channel], settings: Settings) -> None:
        self._config = config
        self._store = store
        self._channels = channels
        self._settings = settings
        self._slos = {slo.name: slo for slo in config.slos}
        self._states: dict[AlertKey, AlertState] = store.load_alerts()
        self._stored: dict[AlertKey, AlertState] = dict(self._states)  # what the store holds
        routed = {c for route in config.notify.routes for c in route.channels}
        for missing in sorted(routed - set(channels)):
            log.warning("channel_not_configured", channel=missing, hint="messages routed to it are dropped")
        if self._states:
            log.info("alert_state_restored", alerts=len(self._states), firing=len(firing_alerts(self._states)))

    def reconfigure(self, config: SLOConfig) -> None:
        """Use a reloaded SLO file; alerts of removed SLOs are dropped at the next cycle."""
        self._config = config
        self._slos = {slo.name: slo for slo in config.slos}

    @property
    def states(self) -> dict[AlertKey, AlertState]:
        return self._states

    async def on_snapshot(self, snapshot: Snapshot) -> set[str]:
        """Advance alerts with this cycle's numbers; return the channels that got new messages."""
        now = snapshot.evaluated_at
        evaluations, stale = evaluate_rules(snapshot, data_missing_after=self._settings.stale_alert_after)
        result = step(
            self._states,
            evaluations,
            now=now,
            policy=self._config.notify,
            known_slos=self._slos,
            stale_slos=stale,
            interval=self._settings.eval_interval,
        )
        messages: list[NewMessage] = []
        for group in group_notifications(result.notifications, self._config.notify):
            channel = self._channels.get(group.channel)
            if channel is None:
                continue
            slo = self._slos[group.slo]
            rendered = channel.render(group, slo)
            deadline = now + self._settings.notify_deadline
            messages += [
                NewMessage(group.channel, r, rendered.subject, rendered.text, rendered.html, deadline)
                for r in channel.recipients
            ]
        await anyio.to_thread.run_sync(
            partial(self._store.commit_cycle, result.states, messages, now, previous=self._stored)
        )
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
