"""The result of one evaluation cycle: immutable, shared by exporter, CLI and alerting."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from sloeval.config.slo_file import SLODefinition


class EventCounts(NamedTuple):
    """Good and total events (or samples, for uptime) seen in one window."""

    good: float | None
    total: float | None


V = TypeVar("V")


class WindowValues(Mapping[str, V]):
    """Values by window name, over the SLO's (shared) tuple of window names.

    A thousand SLOs give tens of thousands of results per cycle, each with an SLI, a burn rate
    and event counts per window; a tuple per result instead of a dict keeps that small.
    """

    __slots__ = ("_names", "_values")

    def __init__(self, names: tuple[str, ...], values: Sequence[V]) -> None:
        if len(names) != len(values):
            raise ValueError("one value per window name")
        self._names = names
        self._values = tuple(values)

    def __getitem__(self, window: str) -> V:
        try:
            return self._values[self._names.index(window)]
        except ValueError:
            raise KeyError(window) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return repr(dict(zip(self._names, self._values, strict=True)))


@dataclass(frozen=True, slots=True)
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
