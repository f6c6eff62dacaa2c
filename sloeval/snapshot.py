"""The result of one evaluation cycle: immutable, shared by exporter, CLI and alerting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sloeval.slo_config import SLODefinition


@dataclass(frozen=True)
class EventCounts:
    """Good and total events (or samples, for uptime) seen in one window."""

    good: float | None
    total: float | None


@dataclass(frozen=True)
class SLOResult:
    """The numbers of one SLO for one label set (one group of ``group_by``)."""

    labels: tuple[tuple[str, str], ...]
    sli: Mapping[str, float | None]  # window name -> SLI ratio, None = no traffic
    burn_rate: Mapping[str, float | None]
    events: Mapping[str, EventCounts]
    error_budget_remaining: float | None  # ratio of the period's budget; < 0 when overspent

    @property
    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class SLOStatus:
    """An SLO after one cycle: its results, or the reason it has none."""

    slo: SLODefinition
    results: tuple[SLOResult, ...]
    error: str | None = None

    @property
    def stale(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class Snapshot:
    evaluated_at: float  # the pinned query timestamp, unix seconds
    duration_seconds: float
    statuses: tuple[SLOStatus, ...]

    @property
    def succeeded(self) -> bool:
        return all(not s.stale for s in self.statuses)
