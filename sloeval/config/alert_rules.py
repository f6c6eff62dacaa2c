"""Alert rules and notification policy: how they are written in the SLO file, and compiled.

Kept apart from ``slo_file`` so the SLO file's shape and the alerting vocabulary can be
read on their own; ``slo_file`` embeds these models and compiles them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from sloeval.config.durations import duration_from_config, format_duration

Severity = Literal["critical", "warning", "info"]
CHANNELS_CONTEXT = "channels"
"""Validation context key: the channel names routes may use (the channel modules' names)."""
SEVERITY_RANK: dict[str, int] = {"critical": 0, "warning": 1, "info": 2}
THIRTY_DAYS = 30 * 86400


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


_duration = duration_from_config


def _checked_duration(value: str) -> str:
    _duration(value)
    return value


def _group_wait_seconds(value: str) -> int:
    """``group_wait`` may be switched off with ``0s`` (other durations must be positive)."""
    return 0 if value in ("0", "0s") else _duration(value)


#: A duration kept as written ("1h30m"), validated when read; compiled to seconds later.
DurationText = Annotated[
    str, AfterValidator(_checked_duration), WithJsonSchema({"type": "string", "examples": ["5m", "1h", "30d"]})
]


class BurnRateSpec(_Strict):
    """Fires while the burn rate over BOTH windows exceeds the factor."""

    long: DurationText = Field(description="Long window, e.g. 1h.")
    short: DurationText = Field(description="Short window, e.g. 5m.")
    factor: float = Field(gt=0, description="Burn-rate threshold, e.g. 14.4.")

    @model_validator(mode="after")
    def _short_below_long(self) -> BurnRateSpec:
        if _duration(self.short) >= _duration(self.long):
            raise ValueError("'short' must be shorter than 'long'")
        if not math.isfinite(self.factor):
            raise ValueError("factor must be finite")
        return self


class SLIBelowSpec(_Strict):
    """Fires when the SLI over ``window`` stays below ``threshold`` percent for ``for``."""

    window: DurationText = Field(description="Window of the SLI, e.g. 5m.")
    threshold: float = Field(gt=0, le=100, description="Percent, e.g. 95.")
    for_: DurationText | None = Field(None, alias="for", description="How long it must hold before firing.")


class AlertSpec(_Strict):
    """One alert rule of an SLO: a name, a severity and exactly one condition."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=100, description="Alert name.")
    severity: Severity = Field(description="critical, warning or info; routes and inhibition use it.")
    burn_rate: BurnRateSpec | None = Field(None, description="Multi-window burn-rate condition.")
    budget_remaining_below: float | None = Field(None, description="Percent of the period's budget.")
    sli_below: SLIBelowSpec | None = Field(None, description="SLI threshold condition.")
    for_: DurationText | None = Field(None, alias="for", description="How long the condition must hold (default 0).")

    @field_validator("name")
    @classmethod
    def _not_the_meta_alert(cls, value: str) -> str:
        if value == "SLODataMissing":
            raise ValueError("SLODataMissing is sloeval's own alert for an SLO without data; choose another name")
        return value

    @model_validator(mode="after")
    def _one_condition(self) -> AlertSpec:
        given = [k for k in ("burn_rate", "budget_remaining_below", "sli_below") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one condition of burn_rate, budget_remaining_below, sli_below")
        if self.sli_below is not None and self.sli_below.for_ is not None and self.for_ is not None:
            raise ValueError("give 'for' once, either on the alert or inside sli_below")
        return self


class RouteSpec(_Strict):
    """Which channels a severity goes to."""

    severity: list[Severity] = Field(min_length=1, description="Severities this route takes.")
    channels: list[str] = Field(min_length=1, description="Channel names: telegram and/or email.")

    @field_validator("channels")
    @classmethod
    def _known_channels(cls, value: list[str], info: ValidationInfo) -> list[str]:
        known = (info.context or {}).get(CHANNELS_CONTEXT)
        if known is not None:
            for name in value:
                if name not in known:
                    raise ValueError(f"unknown channel {name!r}; channels are {', '.join(sorted(known))}")
        return value


class NotifySpec(_Strict):
    """Who gets what, and how often."""

    routes: list[RouteSpec] = Field(
        default_factory=lambda: [
            RouteSpec(severity=["critical"], channels=["telegram", "email"]),
            RouteSpec(severity=["warning"], channels=["email"]),
        ],
        description="Severity -> channels; every matching route applies.",
    )
    repeat_interval: DurationText = Field("4h", description="Re-send while an alert keeps firing.")
    send_resolved: bool = Field(True, description="Send a RESOLVED message when an alert stops.")
    group_wait: str = Field("10s", description="Wait this long to batch alerts of one SLO into one message.")
    dashboard_url: str | None = Field(None, description="Default link in messages; {slo} is replaced.")
    runbook_url: str | None = Field(None, description="Default runbook link; {slo} and {alert} are replaced.")

    @field_validator("group_wait")
    @classmethod
    def _valid_wait(cls, value: str) -> str:
        _group_wait_seconds(value)
        return value


class MatcherSpec(_Strict):
    name: str = Field(description="Label: slo, alert, severity or a group_by label.")
    value: str = Field(description="Value, or a regular expression with regex: true.")
    regex: bool = Field(False, description="Treat value as a fully anchored regular expression.")

    @model_validator(mode="after")
    def _valid_regex(self) -> MatcherSpec:
        if self.regex:
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return self


class SilenceSpec(_Strict):
    """A maintenance window: matching alerts are not sent between start and end."""

    matchers: list[MatcherSpec] = Field(min_length=1, description="All must match for the silence to apply.")
    start: datetime = Field(strict=False, description="RFC 3339 with a time zone.")
    end: datetime = Field(strict=False, description="RFC 3339 with a time zone.")
    comment: str | None = Field(None, description="Why; for people.")

    @model_validator(mode="after")
    def _ordered(self) -> SilenceSpec:
        for moment in (self.start, self.end):
            if moment.tzinfo is None:
                raise ValueError("start and end need a time zone, e.g. 2026-11-27T02:00:00Z")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


# --- compiled form ---------------------------------------------------------------------


@dataclass(frozen=True)
class BurnRateCondition:
    long: int
    short: int
    factor: float


@dataclass(frozen=True)
class BudgetCondition:
    below_percent: float


@dataclass(frozen=True)
class SLIBelowCondition:
    window: int
    threshold: float  # ratio


Condition = BurnRateCondition | BudgetCondition | SLIBelowCondition


@dataclass(frozen=True)
class AlertRule:
    name: str
    severity: Severity
    condition: Condition
    for_seconds: int = 0

    @property
    def windows(self) -> tuple[int, ...]:
        match self.condition:
            case BurnRateCondition(long=long, short=short):
                return (long, short)
            case SLIBelowCondition(window=window):
                return (window,)
        return ()

    def describe(self) -> str:
        match self.condition:
            case BurnRateCondition(long=long, short=short, factor=factor):
                text = f"burn rate > {factor:g} over {format_duration(long)} and {format_duration(short)}"
            case BudgetCondition(below_percent=below):
                text = f"error budget < {below:g}%"
            case SLIBelowCondition(window=window, threshold=threshold):
                text = f"SLI over {format_duration(window)} < {100 * threshold:g}%"
        if self.for_seconds:
            text += f" for {format_duration(self.for_seconds)}"
        return text


@dataclass(frozen=True)
class Route:
    severities: frozenset[str]
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Silence:
    matchers: tuple[tuple[str, str, bool], ...]  # (label, value, is_regex)
    start: float
    end: float
    comment: str | None = None

    def matches(self, labels: dict[str, str], at: float) -> bool:
        if not self.start <= at < self.end:
            return False
        for name, value, is_regex in self.matchers:
            actual = labels.get(name, "")
            if (re.fullmatch(value, actual) is None) if is_regex else actual != value:
                return False
        return True


@dataclass(frozen=True)
class NotifyPolicy:
    routes: tuple[Route, ...] = ()
    repeat_interval: int = 4 * 3600
    send_resolved: bool = True
    group_wait: int = 10
    silences: tuple[Silence, ...] = field(default=())

    def channels_for(self, severity: str) -> tuple[str, ...]:
        channels: list[str] = []
        for route in self.routes:
            if severity in route.severities:
                channels.extend(c for c in route.channels if c not in channels)
        return tuple(channels)


def compile_alert(spec: AlertSpec) -> AlertRule:
    condition: Condition
    for_text = spec.for_
    if spec.burn_rate is not None:
        b = spec.burn_rate
        condition = BurnRateCondition(_duration(b.long), _duration(b.short), b.factor)
    elif spec.budget_remaining_below is not None:
        condition = BudgetCondition(spec.budget_remaining_below)
    else:
        assert spec.sli_below is not None
        s = spec.sli_below
        condition = SLIBelowCondition(_duration(s.window), s.threshold / 100.0)
        for_text = for_text or s.for_
    return AlertRule(spec.name, spec.severity, condition, _duration(for_text) if for_text else 0)


def compile_policy(spec: NotifySpec, silences: list[SilenceSpec]) -> NotifyPolicy:
    return NotifyPolicy(
        routes=tuple(Route(frozenset(r.severity), tuple(r.channels)) for r in spec.routes),
        repeat_interval=_duration(spec.repeat_interval),
        send_resolved=spec.send_resolved,
        group_wait=_group_wait_seconds(spec.group_wait),
        silences=tuple(
            Silence(
                tuple((m.name, m.value, m.regex) for m in s.matchers),
                s.start.timestamp(),
                s.end.timestamp(),
                s.comment,
            )
            for s in silences
        ),
    )


#: The SRE Workbook's multi-window, multi-burn-rate tiers for a 30 d period.
_DEFAULT_BURN_TIERS: tuple[tuple[str, Severity, int, int, float], ...] = (
    ("BurnRateCritical1h", "critical", 3600, 300, 14.4),
    ("BurnRateCritical6h", "critical", 21600, 1800, 6.0),
    ("BurnRateWarning1d", "warning", 86400, 7200, 3.0),
    ("BurnRateWarning3d", "warning", 259200, 21600, 1.0),
)


@cache  # one shared tuple for every SLO of the same period
def default_alerts(period: int, min_window: float) -> tuple[AlertRule, ...]:
    """The default rules, with windows scaled from 30 d to ``period``.

    Windows are rounded to whole seconds and never shorter than ``min_window`` (one
    evaluation interval), so a short period never yields a window no cycle can see.
    """
    scale = period / THIRTY_DAYS
    floor = max(1, math.ceil(min_window))
    rules = []
    for name, severity, long, short, factor in _DEFAULT_BURN_TIERS:
        scaled_long = max(floor, round(long * scale))
        scaled_short = max(floor, round(short * scale))
        if scaled_short >= scaled_long:
            scaled_long = scaled_short + floor
        rules.append(AlertRule(name, severity, BurnRateCondition(scaled_long, scaled_short, factor)))
    rules.append(AlertRule("ErrorBudgetLow", "warning", BudgetCondition(25.0)))
    rules.append(AlertRule("ErrorBudgetCritical", "critical", BudgetCondition(10.0)))
    return tuple(rules)
