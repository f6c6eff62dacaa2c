"""``sloeval run``: the evaluation loop and the HTTP endpoints under one task group."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping

import anyio
import structlog
from anyio import CancelScope

from sloeval.alerting.channels import Channel, build_channels, channel_names
from sloeval.alerting.dispatcher import Dispatcher
from sloeval.alerting.engine import Alerting
from sloeval.alerting.machine import firing_alerts
from sloeval.alerting.store import Leadership, StateStore, StateStoreError
from sloeval.config.settings import Settings, SettingsBase
from sloeval.config.slo_file import SLOConfig
from sloeval.config.watch import ConfigWatcher
from sloeval.prometheus.client import http_client_for, prometheus_client_for
from sloeval.serve.exporter import DaemonMetrics, SnapshotHolder
from sloeval.serve.http import MetricsServer, build_app
from sloeval.slo.evaluator import Evaluator, QueryClient
from sloeval.slo.snapshot import Snapshot
from sloeval.state import open_state_store

log = structlog.get_logger("sloeval.daemon")
SWITCH_INTERVAL = 0.0005
LEADERSHIP_POLL = 0.5
SEND_GRACE = 5.0
"""Seconds a send in flight may still take when this replica stops leading or stops: long enough for a
normal send to finish and be recorded (else the next leader sends it again), short enough for SIGTERM."""


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


async def _watch_signals(scope: CancelScope, watcher: ConfigWatcher, signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        if signum == signal.SIGHUP:
            log.info("reload_requested", signal="SIGHUP")
            watcher.request_reload()
            continue
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        scope.cancel()
        return


async def run_daemon(settings: Settings, config: SLOConfig, channel_settings: Mapping[str, SettingsBase]) -> None:
    """Run until SIGTERM/SIGINT. Raises StateStoreError or OSError when it cannot start."""
    # Scrape threads and the loop share one interpreter lock; a short switch interval lets the
    # loop get it back within half a millisecond instead of five during a burst of scrapes.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Signals are taken from here on: a SIGTERM that comes as soon as /healthz answers is handled
    # (gracefully, once the loop runs) instead of killing the process.
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        await _run(settings, config, channel_settings, signals)


async def _run(
    settings: Settings, config: SLOConfig, channel_settings: Mapping[str, SettingsBase], signals: AsyncIterator[int]
) -> None:
    holder = SnapshotHolder()
    metrics = DaemonMetrics(holder, settings.metric_prefix)
    store, leadership = await open_state_store(
        settings, on_problem=lambda kind: metrics.state_store_errors.labels(kind).inc()
    )
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
            role = _AlertingRole(config, store, leadership, channel_settings, settings, metrics, holder)
            watcher = ConfigWatcher(config, min_window=settings.eval_interval, channels=channel_names())
            # Leadership outlives the rest: on SIGTERM the loop and the alerting role stop first (a send
            # in flight gets SEND_GRACE to finish and be recorded), then the lock is given back.
            async with anyio.create_task_group() as outer:
                outer.start_soon(leadership.run)
                async with anyio.create_task_group() as group:
                    group.start_soon(_watch_signals, group.cancel_scope, watcher, signals)
                    group.start_soon(role.run)
                    loop = _EvaluationLoop(settings, client, holder, metrics, role, watcher)
                    await loop.run(config)
                outer.cancel_scope.cancel()
    finally:
        server.close()
        with anyio.CancelScope(shield=True):
            await store.aclose()
        log.info("stopped")


def _firing_rows(alerting: Alerting | None) -> tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...]:
    if alerting is None:
        return ()
    return tuple((key.slo, key.alert, severity, key.labels) for key, severity in firing_alerts(alerting.states))


class _AlertingRole:
    """The alert engine and the delivery workers, run while this replica leads (with SQLite: always).

    Each time leadership is taken the engine starts from the stored state, so a new leader continues
    where the old one committed: no FIRING the old one sent is sent again, and whatever it queued
    but did not deliver goes out. When leadership is lost the workers stop before their next send.
    """

    def __init__(
        self,
        config: SLOConfig,
        store: StateStore,
        leadership: Leadership,
        channel_settings: Mapping[str, SettingsBase],
        settings: Settings,
        metrics: DaemonMetrics,
        holder: SnapshotHolder,
    ) -> None:
        self._config = config
        self._store = store
        self._leadership = leadership
        self._channel_settings = channel_settings
        self._settings = settings
        self._metrics = metrics
        self._holder = holder
        self.engine: Alerting | None = None
        self._dispatchers: dict[str, Dispatcher] = {}
        self._latest: Snapshot | None = None  # the newest snapshot the engine has not stepped through
        self._arrived = anyio.Event()

    def reconfigure(self, config: SLOConfig) -> None:
        self._config = config
        if self.engine is not None:
            self.engine.reconfigure(config)

    async def run(self) -> None:
        while True:
            self._metrics.database_up.set(1 if self._leadership.database_up else 0)
            if self._leadership.is_leader():
                await self._lead()
            await anyio.sleep(LEADERSHIP_POLL)

    async def _lead(self) -> None:
        channels = build_channels(self._channel_settings, self._settings)
        try:
            engine = await Alerting.open(self._config, self._store, channels, self._settings)
            engine.reconfigure(self._config)  # a reload that landed while the state was being read
        except StateStoreError as exc:
            log.error("alert_state_not_loaded", error=str(exc), hint="alerting starts once the state can be read")
            return
        dispatchers = {
            name: Dispatcher(
                self._store,
                channel,
                attempt_timeout=self._settings.notify_timeout,
                on_outcome=lambda ch, outcome: self._metrics.notifications.labels(ch, outcome).inc(),
                may_send=self._leadership.is_leader,
            )
            for name, channel in channels.items()
        }
        async with anyio.create_task_group() as group:
            for dispatcher in dispatchers.values():
                group.start_soon(dispatcher.run)
            group.start_soon(self._step, engine, channels, dispatchers)
            self.engine, self._dispatchers = engine, dispatchers
            self._metrics.leader.set(1)
            self._holder.publish_firing(_firing_rows(engine))
            try:
                while self._leadership.is_leader():
                    self._metrics.database_up.set(1 if self._leadership.database_up else 0)
                    await anyio.sleep(LEADERSHIP_POLL)
            finally:
                self.engine, self._dispatchers, self._latest = None, {}, None
                self._metrics.leader.set(0)
                self._holder.publish_firing(())
                for dispatcher in dispatchers.values():
                    dispatcher.finish_within(SEND_GRACE)
                group.cancel_scope.cancel()

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """Hand a cycle's snapshot to the engine, when leading, without waiting for it: a slow or
        unreachable state store never holds up evaluation and /metrics (a newer snapshot replaces
        one the engine has not reached yet)."""
        if self.engine is None:
            return
        self._latest = snapshot
        self._arrived.set()

    async def _step(self, engine: Alerting, channels: dict[str, Channel], dispatchers: dict[str, Dispatcher]) -> None:
        """Advance the alerts with each snapshot handed over; wake the workers of new messages."""
        while True:
            await self._arrived.wait()
            self._arrived = anyio.Event()
            snapshot, self._latest = self._latest, None
            if snapshot is None:
                continue
            try:
                for channel in await engine.on_snapshot(snapshot):
                    dispatchers[channel].wake()
            except (OSError, StateStoreError) as exc:
                self._metrics.state_store_errors.labels("write_failed").inc()
                log.error(
                    "alert_state_not_saved", error=str(exc), hint="check the state store (full, read-only, down?)"
                )
                # The commit may have landed with its answer lost: the store, not memory, says what was
                # sent, so the next step starts from it (else it would queue the same FIRING again).
                with contextlib.suppress(OSError, StateStoreError):
                    engine = await Alerting.open(self._config, self._store, channels, self._settings)
                    self.engine = engine
            self._holder.publish_firing(_firing_rows(engine))


class _EvaluationLoop:
    """Evaluate on a fixed grid; each cycle: maybe reload config, evaluate, publish, alert."""

    def __init__(
        self,
        settings: Settings,
        client: QueryClient,
        holder: SnapshotHolder,
        metrics: DaemonMetrics,
        role: _AlertingRole,
        watcher: ConfigWatcher,
    ) -> None:
        self._settings = settings
        self._client = client
        self._holder = holder
        self._metrics = metrics
        self._role = role
        self._watcher = watcher

    def _evaluator_for(self, config: SLOConfig, previous: Evaluator | None = None) -> Evaluator:
        return Evaluator(
            config.slos,
            self._client,
            concurrency=self._settings.query_concurrency,
            long_window_refresh=self._settings.long_window_refresh,
            long_window_min=self._settings.long_window_min,
            reuse=previous,
        )

    async def run(self, config: SLOConfig) -> None:
        interval = self._settings.eval_interval
        evaluator = self._evaluator_for(config)
        tick = anyio.current_time()
        while True:
            new_config = await anyio.to_thread.run_sync(self._watcher.poll, self._watcher.take_reload_request())
            if new_config is not None:
                evaluator = self._evaluator_for(new_config, evaluator)
                self._role.reconfigure(new_config)
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
        self._role.on_snapshot(snapshot)
