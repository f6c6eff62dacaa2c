"""Grouping due notifications into messages: one per channel and SLO, channels picked by severity (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sloeval.alerting.model import LabelSet, Notification
from sloeval.config.alert_rules import SEVERITY_RANK, NotifyPolicy


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
        channels = dict.fromkeys((*policy.channels_for(notification.severity), *notification.also_to))
        for channel in channels:
            grouped.setdefault((channel, notification.key.slo), []).append(notification)
    groups = []
    for (channel, slo), items in grouped.items():
        items.sort(key=lambda n: (n.status != "firing", SEVERITY_RANK.get(n.severity, 9), n.key.labels, n.key.alert))
        label_sets = {n.key.labels for n in items}
        common = next(iter(label_sets)) if len(label_sets) == 1 else ()
        groups.append(MessageGroup(channel, slo, common, tuple(items)))
    return groups
