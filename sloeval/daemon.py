"""``sloeval run``: the evaluation loop and the HTTP endpoints under one task group."""

from __future__ import annotations

import math
import signal
import time

import anyio
import structlog
from anyio import CancelScope

from sloeval.connect import http_client_for, prometheus_client_for
from sloeval.evaluator import Evaluator
from sloeval.exporter import DaemonMetrics, SnapshotHolder
from sloeval.http_server import MetricsServer, build_app
from sloeval.settings import Settings
from sloeval.slo_config import SLOConfig

log = structlog.get_logger("sloeval.daemon")


def readiness(holder: SnapshotHolder, settings: Settings) -> tuple[bool, str]:
    """Ready once a cycle succeeded and fewer than N cycles in a row have failed since."""
    if holder.last_success is None:
        return False, "no successful evaluation yet"
    if holder.failed_in_a_row >= settings.ready_max_failed_cycles:
        return False, f"{holder.failed_in_a_row} evaluation cycles failed in a row"
    return True, "ok"


def next_tick(previous: float, interval: float, now: float) -> float:
    """The next slot on the fixed grid ``previous + k * interval`` that is after ``now``."""
    ticks = max(1, math.floor((now - previous) / interval) + 1)
    return previous + ticks * interval


async def _watch_signals(scope: CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("shutdown_requested", signal=signal.Signals(signum).name)
            scope.cancel()
            return


async def run_daemon(settings: Settings, config: SLOConfig) -> None:
    holder = SnapshotHolder()
    metrics = DaemonMetrics(holder, settings.metric_prefix)
    server = MetricsServer(
        settings.http_host, settings.http_port, build_app(metrics.registry, lambda: readiness(holder, settings))
    )
    server.start()
    log.info(
        "started",
        slos=len(config.slos),
        slo_file=str(config.path),
        prometheus_url=settings.prometheus_url,
        listen=f"{settings.http_host}:{server.port}",
        interval_seconds=settings.eval_interval,
    )
    try:
        async with http_client_for(settings) as http:
            if not settings.prometheus_tls_verify:
                log.warning("prometheus_tls_verification_disabled")
            client = prometheus_client_for(settings, http, lambda outcome: metrics.queries.labels(outcome).inc())
            evaluator = Evaluator(config.slos, client, concurrency=settings.query_concurrency)
            async with anyio.create_task_group() as group:
                group.start_soon(_watch_signals, group.cancel_scope)
                await _evaluation_loop(settings, evaluator, holder, metrics)
    finally:
        server.close()
        log.info("stopped")


async def _evaluation_loop(
    settings: Settings, evaluator: Evaluator, holder: SnapshotHolder, metrics: DaemonMetrics
) -> None:
    interval = settings.eval_interval
    tick = anyio.current_time()
    while True:
        at = round(time.time(), 3)
        started = anyio.current_time()
        snapshot = None
        with anyio.move_on_after(interval):
            snapshot = await evaluator.evaluate(at)
        elapsed = anyio.current_time() - started
        metrics.cycle_duration.observe(elapsed)
        if snapshot is None:
            holder.record_failed_cycle()
            metrics.cycles.labels("failed").inc()
            log.error("evaluation_timed_out", deadline_seconds=interval, evaluated_at=at)
        else:
            holder.publish(snapshot)
            stale = [s.slo.name for s in snapshot.statuses if s.stale]
            outcome = "success" if not stale else ("failed" if len(stale) == len(snapshot.statuses) else "partial")
            metrics.cycles.labels(outcome).inc()
            log.info(
                "evaluation_cycle",
                outcome=outcome,
                evaluated_at=at,
                duration_seconds=round(elapsed, 4),
                slos=len(snapshot.statuses),
                results=sum(len(s.results) for s in snapshot.statuses),
                stale_slos=stale,
            )
        tick = next_tick(tick, interval, anyio.current_time())
        await anyio.sleep_until(tick)
