"""What an alert is between cycles: its key, its state, the facts its messages quote, a notification (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

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
class SLOSummary:
    """What a message says about the SLO itself; stored with an alert, so that an alert whose SLO a
    reload removed can still be resolved by a message that names it."""

    name: str
    slo_type: str
    service: str
    objective: float
    period_name: str
    dashboard_url: str | None = None
    runbook_url: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "slo_type": self.slo_type,
            "service": self.service,
            "objective": self.objective,
            "period_name": self.period_name,
        }

    @classmethod
    def from_json(cls, data: object) -> SLOSummary | None:
        if not isinstance(data, dict):
            return None
        return cls(
            name=str(data["name"]),
            slo_type=str(data["slo_type"]),
            service=str(data["service"]),
            objective=float(data["objective"]),
            period_name=str(data["period_name"]),
        )


@dataclass(frozen=True)
class Facts:
    """The numbers a person needs to judge an alert; all JSON-friendly.

    ``note`` says why a message comes without numbers, or what else a person must know (the alert
    ended for lack of traffic, while silenced, or with its SLO removed).
    """

    condition: str
    burn_rates: tuple[tuple[str, float | None], ...] = ()
    factor: float | None = None
    sli: tuple[tuple[str, float | None], ...] = ()
    objective: float = 0.0
    budget_remaining_percent: float | None = None
    budget_minutes_left: float | None = None  # time-based SLOs only
    budget_minutes_total: float | None = None
    exhausted_in_seconds: float | None = None  # at the current burn rate; None when not burning
    note: str | None = None
    slo: SLOSummary | None = None

    def without_numbers(self, note: str) -> Facts:
        """The facts of a message sent without this cycle's numbers: the condition and why."""
        return Facts(condition=self.condition, objective=self.objective, note=note, slo=self.slo)

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
            "note": self.note,
            "slo": None if self.slo is None else self.slo.to_json(),
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
            note=None if data.get("note") is None else str(data["note"]),
            slo=SLOSummary.from_json(data.get("slo")),
        )


@dataclass(frozen=True)
class AlertState:
    severity: str
    status: Status
    active_since: float
    facts: Facts
    firing_since: float | None = None
    last_sent_at: float | None = None  # None while firing = a FIRING message is still owed
    no_data_since: float | None = None  # firing, and its condition has had no data since then
    sent_to: tuple[str, ...] = ()  # the channels its FIRING went to

    def to_json(self) -> str:
        return json.dumps(
            {
                "severity": self.severity,
                "status": self.status,
                "active_since": self.active_since,
                "firing_since": self.firing_since,
                "last_sent_at": self.last_sent_at,
                "no_data_since": self.no_data_since,
                "sent_to": list(self.sent_to),
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
            no_data_since=None if data.get("no_data_since") is None else float(data["no_data_since"]),
            sent_to=tuple(str(c) for c in data.get("sent_to") or ()),
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
    also_to: tuple[str, ...] = ()  # a RESOLVED goes where its FIRING went, whatever the routes say now
