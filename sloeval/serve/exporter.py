"""``/metrics``: SLO gauges rebuilt from the latest snapshot on every scrape, plus own health."""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sloeval import __version__
from sloeval.config.slo_file import LatencyIndicator, SLODefinition
from sloeval.slo.snapshot import Snapshot


class SnapshotHolder:
    """The latest snapshot, swapped atomically by the loop and read by scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._last_success: float | None = None
        self._last_usable: float | None = None
        self._failed_in_a_row = 0
        self._firing: tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...] = ()

    def publish_firing(self, firing: tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...]) -> None:
        """(slo, alert, severity, labels) of every firing alert."""
        self._firing = firing

    @property
    def firing(self) -> tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...]:
        return self._firing

    def publish(self, snapshot: Snapshot) -> None:
        """A cycle fails only when no SLO could be evaluated; one broken SLO is reported as stale."""
        with self._lock:
            self._snapshot = snapshot
            now = time.time()
            if snapshot.succeeded:
                self._last_success = now
            if any(not s.stale for s in snapshot.statuses):
                self._last_usable = now
                self._failed_in_a_row = 0
            else:
                self._failed_in_a_row += 1

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def last_success(self) -> float | None:
        return self._last_success

    @property
    def last_usable(self) -> float | None:
        """When a cycle last evaluated at least one SLO."""
        return self._last_usable

    @property
    def failed_in_a_row(self) -> int:
        return self._failed_in_a_row


def base_labels(slo: SLODefinition) -> dict[str, str]:
    labels = {"slo": slo.name, "slo_type": slo.slo_type, "service": slo.service}
    labels.update(slo.labels)
    return labels


class SnapshotCollector(Collector):
    """Custom collector: a removed SLO or a vanished label set simply is not in the next scrape."""

    def __init__(self, holder: SnapshotHolder, prefix: str) -> None:
        self._holder = holder
        self._prefix = prefix

    def collect(self) -> Iterator[GaugeMetricFamily]:
        p = self._prefix
        budget = GaugeMetricFamily(
            f"{p}_error_budget_remaining_percent",
            "Error budget left over the SLO period, percent (below 0 when overspent).",
        )
        burn = GaugeMetricFamily(f"{p}_error_budget_burn_rate", "Error budget burn rate per window (1 = on budget).")
        sli = GaugeMetricFamily(f"{p}_slo_sli_ratio", "SLI per window, ratio of good events.")
        objective = GaugeMetricFamily(f"{p}_slo_objective_ratio", "SLO objective as a ratio.")
        avail_current = GaugeMetricFamily(f"{p}_availability_slo_current", "Availability over the SLO period, ratio.")
        avail_target = GaugeMetricFamily(f"{p}_availability_slo_target", "Availability objective, ratio.")
        latency_target = GaugeMetricFamily(
            f"{p}_latency_slo_target_seconds", "Latency threshold of latency SLOs, seconds."
        )
        stale = GaugeMetricFamily("sloeval_slo_data_stale", "1 when the SLO could not be evaluated in the last cycle.")
        last_eval = GaugeMetricFamily(
            "sloeval_last_evaluation_timestamp_seconds", "Pinned query time of the last finished cycle."
        )
        last_success = GaugeMetricFamily(
            "sloeval_last_evaluation_success_timestamp_seconds", "When the last fully successful cycle finished."
        )
        firing = GaugeMetricFamily(f"{p}_slo_alert_firing", "1 for every alert that is firing.")
        for slo_name, alert, severity, alert_labels in self._holder.firing:
            firing.add_sample(
                firing.name, {**dict(alert_labels), "slo": slo_name, "alert": alert, "severity": severity}, 1.0
            )
        snapshot = self._holder.snapshot
        if snapshot is not None:
            last_eval.add_metric([], snapshot.evaluated_at)
            for status in snapshot.statuses:
                slo = status.slo
                common = base_labels(slo)
                objective.add_sample(objective.name, common, slo.objective)
                if slo.slo_type == "availability":
                    avail_target.add_sample(avail_target.name, common, slo.objective)
                if isinstance(slo.indicator, LatencyIndicator):
                    latency_target.add_sample(latency_target.name, common, slo.indicator.threshold_seconds)
                stale.add_sample(stale.name, {"slo": slo.name}, 1.0 if status.stale else 0.0)
                for result in status.results:
                    labels = {**common, **result.labels_dict}
                    if result.error_budget_remaining is not None:
                        budget.add_sample(budget.name, labels, 100.0 * result.error_budget_remaining)
                    period_sli = result.sli.get(slo.period_name)
                    if slo.slo_type == "availability" and period_sli is not None:
                        avail_current.add_sample(avail_current.name, labels, period_sli)
                    for window, value in result.sli.items():
                        if value is not None:
                            sli.add_sample(sli.name, {**labels, "window": window}, value)
                    for window, value in result.burn_rate.items():
                        if value is not None:
                            burn.add_sample(burn.name, {**labels, "window": window}, value)
        if self._holder.last_success is not None:
            last_success.add_metric([], self._holder.last_success)
        yield from (budget, burn, sli, objective, avail_current, avail_target, latency_target, firing, stale)
        yield from (last_eval, last_success)


class BuildInfoCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily("sloeval_build_info", "sloeval version.", labels=["version", "python_version"])
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info


class DaemonMetrics:
    """The registry served on /metrics and the daemon's own counters."""

    def __init__(self, holder: SnapshotHolder, prefix: str) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(holder, prefix))
        self.registry.register(BuildInfoCollector())
        self.queries = Counter(
            "sloeval_prometheus_queries",
            "PromQL requests sent, by outcome (success, error, timeout, connect_error).",
            ["outcome"],
            registry=self.registry,
        )
        self.cycle_duration = Histogram(
            "sloeval_evaluation_duration_seconds",
            "Wall time of one evaluation cycle.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.cycles = Counter(
            "sloeval_evaluation_cycles", "Evaluation cycles, by outcome.", ["outcome"], registry=self.registry
        )
        self.notifications = Counter(
            "sloeval_notifications",
            "Delivery attempts by channel and outcome (sent, retry, failed).",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.state_store_errors = Counter(
            "sloeval_state_store_errors",
            "State store trouble by kind: write_failed (a cycle's alert state and messages not saved),"
            " file_missing and file_replaced (the state file deleted or replaced while running: a new one"
            " is written from the state in memory), lock_lost (the lock file deleted: locked again).",
            ["kind"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "sloeval_leader",
            "1 while this replica leads: it runs the alert engine and delivers (always 1 with SQLite state).",
            registry=self.registry,
        )
        self.database_up = Gauge(
            "sloeval_database_up",
            "1 while the state database answers (always 1 with SQLite state);"
            " evaluation and /metrics go on without it.",
            registry=self.registry,
        )
        for outcome in ("success", "error", "timeout", "connect_error"):
            self.queries.labels(outcome)
        for kind in ("write_failed", "file_missing", "file_replaced", "lock_lost"):
            self.state_store_errors.labels(kind)
        for outcome in ("success", "partial", "failed"):
            self.cycles.labels(outcome)
