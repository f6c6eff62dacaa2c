"""``sloeval run``: the evaluation loop and the HTTP endpoints under one task group."""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Mapping

import anyio
import structlog
from anyio import CancelScope

from sloeval.alerting.channels import build_channels, channel_names
from sloeval.alerting.dispatcher import Dispatcher
from sloeval.alerting.engine import Alerting
from sloeval.alerting.machine import firing_alerts
from sloeval.alerting.store import StateStoreError
from sloeval.config.settings import Settings, SettingsBase
from sloeval.config.slo_file import SLOConfig
from sloeval.config.watch import ConfigWatcher
from sloeval.prometheus.client import http_client_for, prometheus_client_for
from sloeval.serve.exporter import DaemonMetrics, SnapshotHolder
from sloeval.serve.http import MetricsServer, build_app
from sloeval.slo.evaluator import Evaluator, QueryClient
from sloeval.state import open_state_store

log = structlog.get_logger("sloeval.daemon")
SWITCH_INTERVAL = 0.0005


def readiness(holder: SnapshotHolder, settings: Settings) -> tuple[bool, str]:
    """Ready once a cycle evaluated some SLO and fewer than N cycles in a row have failed since."""
    if holder.last_usable is None:
        return False, "no successful evaluation yet"
    if holder.failed_in_a_row >= settings.ready_max_failed_cycles:
        return False, f"{holder.failed_in_a_row} evaluation cycles failed in a row"
    return True, "ok"


def next_tick(previous: float, interval: float, now: float) -> float:
    """The next slot on the fixed grid ``previous + k * interval`` that is after ``now``."""
    ticks = max(1, math.floor((now - previous) / interval) + 1)
    return previous + ticks * interval


async def _watch_signals(scope: CancelScope, watcher: ConfigWatcher) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                log.info("reload_requested", signal="SIGHUP")
                watcher.reload_requested = True
                continue
            log.info("shutdown_requested", signal=signal.Signals(signum).name)
            scope.cancel()
            return


async def run_daemon(settings: Settings, config: SLOConfig, channel_settings: Mapping[str, SettingsBase]) -> None:
    """Run until SIGTERM/SIGINT. Raises StateStoreError or OSError when it cannot start."""
    # Scrape threads and the loop share one interpreter lock; a short switch interval lets the
    # loop get it back within half a millisecond instead of five during a burst of scrapes.
    sys.setswitchinterval(SWITCH_INTERVAL)
    store = open_state_store(settings)
    holder = SnapshotHolder()
    metrics = DaemonMetrics(holder, settings.metric_prefix)
    app = build_app(
        metrics.registry,
        lambda: readiness(holder, settings),
        max_requests_per_second=settings.http_max_requests_per_second,
    )
    server = MetricsServer(settings.http_host, settings.http_port, app)
    server.start()
    log.info(
        "started",
        slos=len(config.slos),
        slo_file=str(config.path),
        prometheus_url=settings.prometheus_url_for_logs,
        listen=f"{settings.http_host}:{server.port}",
        interval_seconds=settings.eval_interval,
    )
    try:
        async with http_client_for(settings) as http:
            if not settings.prometheus_tls_verify:
                log.warning("prometheus_tls_verification_disabled")
            client = prometheus_client_for(settings, http, lambda outcome: metrics.queries.labels(outcome).inc())
            channels = build_channels(channel_settings, settings)
            alerting = Alerting(config, store, channels, settings)
            holder.publish_firing(_firing_rows(alerting))
            dispatchers = {
                name: Dispatcher(
                    store,
                    channel,
                    attempt_timeout=settings.notify_timeout,
                    on_outcome=lambda ch, outcome: metrics.notifications.labels(ch, outcome).inc(),
                )
                for name, channel in channels.items()
            }
            watcher = ConfigWatcher(config, min_window=settings.eval_interval, channels=channel_names())
            async with anyio.create_task_group() as group:
                group.start_soon(_watch_signals, group.cancel_scope, watcher)
                for dispatcher in dispatchers.values():
                    group.start_soon(dispatcher.run)
                loop = _EvaluationLoop(settings, client, holder, metrics, alerting, dispatchers, watcher)
                await loop.run(config)
    finally:
        server.close()
        store.close()
        log.info("stopped")


def _firing_rows(alerting: Alerting) -> tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...]:
    return tuple((key.slo, key.alert, severity, key.labels) for key, severity in firing_alerts(alerting.states))


class _EvaluationLoop:
    """Evaluate on a fixed grid; each cycle: maybe reload config, evaluate, publish, alert."""

    def __init__(
        self,
        settings: Settings,
        client: QueryClient,
        holder: SnapshotHolder,
        metrics: DaemonMetrics,
        alerting: Alerting,
        dispatchers: dict[str, Dispatcher],
        watcher: ConfigWatcher,
    ) -> None:
        self._settings = settings
        self._client = client
        self._holder = holder
        self._metrics = metrics
        self._alerting = alerting
        self._dispatchers = dispatchers
        self._watcher = watcher

    def _evaluator_for(self, config: SLOConfig, previous: Evaluator | None = None) -> Evaluator:
        return Evaluator(
            config.slos,
            self._client,
            concurrency=self._settings.query_concurrency,
            long_window_refresh=self._settings.long_window_refresh,
            reuse=previous,
        )

    async def run(self, config: SLOConfig) -> None:
        interval = self._settings.eval_interval
        evaluator = self._evaluator_for(config)
        tick = anyio.current_time()
        while True:
            new_config = await anyio.to_thread.run_sync(self._watcher.poll)
            if new_config is not None:
                evaluator = self._evaluator_for(new_config, evaluator)
                self._alerting.reconfigure(new_config)
            await self._cycle(evaluator, interval)
            tick = next_tick(tick, interval, anyio.current_time())
            await anyio.sleep_until(tick)

    async def _cycle(self, evaluator: Evaluator, interval: float) -> None:
        at = round(time.time(), 3)
        started = anyio.current_time()
        snapshot = await evaluator.evaluate(at, deadline=interval * 0.9)
        elapsed = anyio.current_time() - started
        self._metrics.cycle_duration.observe(elapsed)
        self._holder.publish(snapshot)
        stale = [s.slo.name for s in snapshot.statuses if s.stale]
        outcome = "success" if not stale else ("failed" if len(stale) == len(snapshot.statuses) else "partial")
        self._metrics.cycles.labels(outcome).inc()
        log.info(
            "evaluation_cycle",
            outcome=outcome,
            evaluated_at=at,
            duration_seconds=round(elapsed, 4),
            slos=len(snapshot.statuses),
            results=sum(len(s.results) for s in snapshot.statuses),
            stale_slos=stale,
        )
        try:
            for channel in await self._alerting.on_snapshot(snapshot):
                self._dispatchers[channel].wake()
        except (OSError, StateStoreError) as exc:
            log.error("alert_state_not_saved", error=str(exc), hint="check SLOEVAL_STATE_DIR (full, read-only?)")
        self._holder.publish_firing(_firing_rows(self._alerting))
