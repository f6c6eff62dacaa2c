"""Detection latency: from the start of an error burst to the Telegram message, sloeval vs.
Prometheus rules + Alertmanager, measured in one run.

::

    python -m bench.detection_latency [--trials 12] [--json FILE]

One exporter on 127.0.0.1 serves ``samokoder_http_requests_total{endpoint, status}`` for a set of
endpoints, each at a steady 10 requests/s, all ``status="200"``. One Prometheus 2.42 scrapes
every endpoint as its own job every 15 s; the SAME scraped data feeds both paths:

* **sloeval** (``python -m sloeval run``, default interval 20 s, default ``group_wait`` 10 s): one
  ratio SLO, objective 99.9 %, ``group_by: [endpoint]``, one alert ``burn_rate: {long: 5m,
  short: 1m, factor: 14.4}``, critical -> Telegram;
* **Prometheus + Alertmanager**: the same condition as a Prometheus alerting rule (``for`` 0,
  evaluated every 1m, Prometheus's default), sent to Alertmanager 0.25 with its default route
  timings (``group_wait`` 30s, ``group_interval`` 5m, ``repeat_interval`` 4h), ``group_by:
  [alertname, endpoint]``, ``telegram_configs``.

Both send to one local Bot API stand-in (``devtools.telegram_stub``), to different chat ids.
After a warm-up, one endpoint per trial switches to 100 % 5xx at its own wall-clock time (the
counters are a function of time, so the burst starts exactly then). Latency = arrival of the
first message naming the endpoint at the stub minus the burst start.

Phases are stratified rather than left to chance. A burst's latency is the time to the first
scrape where the condition holds (the data path, shared) plus each path's wait for its next
evaluation and its own delivery. Every endpoint is its own scrape job with its own phase, so
after the warm-up the bench knows when each endpoint will be scraped, when Prometheus
evaluates its rules and when sloeval runs its cycles. For trial k of K it picks the endpoint
scrape whose wait for the next rule evaluation is closest to (k + 1/2)/K of the rule interval,
adjusted so the waits for sloeval's next cycle are K evenly spaced, centred values of its
interval too (see ``wait_targets``), and starts the burst a fixed 11.8 s before that scrape:
the mean data-path delay of a burst at a random moment (7.5 s to the next scrape, plus the
4.3 s of errors the 5m window needs, otherwise one scrape later). The trials thus cover the
phases of both evaluation grids evenly, as random bursts do on average, and the medians do
not depend on where the grids happen to lie in one run.

Prints a markdown table; ``--json`` also writes every figure. Exits 1 when a message is missing
or one came that should not have (the run is then not a valid measurement), 2 when a binary is
missing; the targets are only reported. Everything listens on 127.0.0.1 and stops by itself: at
most ``--max-wait`` seconds after the last burst every process is stopped and the temp directory
removed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import yaml
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from devtools.loopback import LoopbackServer
from devtools.servers import PROMETHEUS_BINARY, PrometheusServer, _ManagedProcess, instant_query
from devtools.sloeval_process import SloevalProcess
from devtools.telegram_stub import BotApiStub
from sloeval.config.durations import parse_duration

REPO = Path(__file__).resolve().parents[1]
ALERTMANAGER_BINARY = "/usr/bin/prometheus-alertmanager"
METRIC = "samokoder_http_requests_total"
ALERT_NAME = "FastBurn"
OBJECTIVE = 99.9  # percent
FACTOR = 14.4
LONG_WINDOW = "5m"
SHORT_WINDOW = "1m"
THRESHOLD = FACTOR * (1 - OBJECTIVE / 100)  # error ratio the condition needs in both windows
SLOEVAL_CHAT = "-1001"
ALERTMANAGER_CHAT = -1002
ENDPOINT_IN_TEXT = re.compile(r"endpoint=(e\d+)")
# Defaults of the tools, stated here to print them; the configs below leave them unset.
SLOEVAL_DEFAULT_GROUP_WAIT = "10s"
ALERTMANAGER_DEFAULT_GROUP_WAIT = "30s"  # and group_interval 5m, repeat_interval 4h
PROMETHEUS_DEFAULT_INTERVAL = "1m"  # both scrape_interval and evaluation_interval
#: Seconds of a 100 % burst (at the same request rate) the long window needs to reach THRESHOLD.
ERRORS_NEEDED_S = THRESHOLD * parse_duration(LONG_WINDOW)


class BenchError(Exception):
    """A precondition is missing (exit code 2)."""


# --- the workload --------------------------------------------------------------------------


class TrafficExporter(LoopbackServer):
    """Request counters computed from the clock, one scrape path per endpoint, on 127.0.0.1.

    ``/metrics/<endpoint>`` serves that endpoint's two series. Every endpoint serves ``rate``
    requests/s from :meth:`start`: ``status="200"`` until its burst, ``status="500"`` from then on
    (both series exist from the start, the 500 one at 0). Because the counters are a function of
    time, a burst starts exactly at its scheduled time, whatever the threads do. The time of
    every scrape is recorded per endpoint.
    """

    def __init__(self, endpoints: Sequence[str], rate: float) -> None:
        self.endpoints = list(endpoints)
        self.rate = rate
        self.started_at = math.nan
        self._bursts: dict[str, float] = {}
        self._scrapes: dict[str, list[float]] = {e: [] for e in self.endpoints}
        self._lock = threading.Lock()
        self._registries: dict[str, CollectorRegistry] = {}
        for endpoint in self.endpoints:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_EndpointCollector(self, endpoint))
            self._registries[endpoint] = registry
        super().__init__()

    thread_name = "exporter"

    def start(self) -> None:
        self.started_at = time.time()
        super().start()

    def _make_server(self) -> ThreadingHTTPServer:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry = exporter._registries.get(self.path.removeprefix("/metrics/"))
                body = generate_latest(registry) if registry is not None else b"not found\n"
                self.send_response(200 if registry is not None else 404)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet."""

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    @property
    def target(self) -> str:
        return self.url.removeprefix("http://")

    def schedule(self, bursts: Mapping[str, float]) -> None:
        """Switch each endpoint to 100 % 5xx at its unix time."""
        with self._lock:
            self._bursts.update(bursts)

    def scrapes(self) -> dict[str, list[float]]:
        with self._lock:
            return {e: list(times) for e, times in self._scrapes.items()}

    def counts(self, endpoint: str, at: float) -> tuple[int, int]:
        """(200s, 500s) served by ``endpoint`` up to unix time ``at``."""
        with self._lock:
            burst = self._bursts.get(endpoint, math.inf)
        ok_seconds = max(0.0, min(at, burst) - self.started_at)
        bad_seconds = max(0.0, at - burst)
        return math.floor(self.rate * ok_seconds), math.floor(self.rate * bad_seconds)

    def _scraped(self, endpoint: str, at: float) -> None:
        with self._lock:
            self._scrapes[endpoint].append(at)


class _EndpointCollector:
    def __init__(self, exporter: TrafficExporter, endpoint: str) -> None:
        self._exporter = exporter
        self._endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        self._exporter._scraped(self._endpoint, now)
        ok, bad = self._exporter.counts(self._endpoint, now)
        family = CounterMetricFamily(
            METRIC.removesuffix("_total"),
            "Requests by endpoint and status (synthetic, bench.detection_latency).",
            labels=["endpoint", "status"],
        )
        family.add_metric([self._endpoint, "200"], float(ok))
        family.add_metric([self._endpoint, "500"], float(bad))
        yield family


def burst_lead(scrape_s: float) -> float:
    """How long before the scrape that first sees it every burst starts.

    A burst starting at a random moment waits on average half a scrape interval for the next
    scrape, and one more scrape when that comes less than ERRORS_NEEDED_S after the burst (with
    5 minutes of history the 5m window needs that many seconds of errors): the time to the first
    scrape where the condition holds is uniform on [ERRORS_NEEDED_S, ERRORS_NEEDED_S + scrape_s),
    mean and median ``ERRORS_NEEDED_S + scrape_s / 2``. Every trial uses that value, the same for
    both paths, so the data path adds its expected share and no noise.
    """
    return ERRORS_NEEDED_S + scrape_s / 2


@dataclass(frozen=True)
class Plan:
    """Where one trial's burst goes on the grids (unix times, seconds)."""

    endpoint: str
    scrape_at: float  # the scrape that first sees the burst
    burst_at: float
    rule_wait: float  # planned: that scrape -> Prometheus's next rule evaluation
    sloeval_wait: float  # planned: that scrape -> sloeval's next cycle


def wait_targets(trials: int, rule_s: float, sloeval_s: float, offset: float) -> list[float]:
    """How long trial k's scrape should wait for Prometheus's next rule evaluation.

    About ``(k + 1/2) / K`` of the rule interval: one trial per K-th of it. The wait for sloeval's
    next cycle is then that wait plus ``offset`` (sloeval's grid minus the rule grid), modulo
    sloeval's interval. When the rule interval is a whole number m of sloeval intervals (2 with the
    defaults), the targets are adjusted so that those waits are K evenly spaced values centred in
    K equal parts of sloeval's interval too: trials k and k + K/g (g = gcd(m, K)), which would wait
    equally long for sloeval, are nudged apart by ``1 / K`` of a sloeval interval, and all targets
    are shifted by less than ``1 / (2K)`` of it to centre them. Each target stays inside its own
    K-th of the rule interval, so both sets of waits are evenly stratified, the sloeval one exactly
    (its figures are the smaller ones, so an error weighs more there).
    """
    targets = [(k + 0.5) * rule_s / trials for k in range(trials)]
    ratio = rule_s / sloeval_s
    whole = round(ratio)
    if whole < 1 or not math.isclose(ratio, whole):
        return targets
    groups = math.gcd(whole, trials)
    size = trials // groups
    step = sloeval_s / trials
    targets = [t + (k // size - (groups - 1) / 2) * step for k, t in enumerate(targets)]
    phase = ((targets[0] + offset) % sloeval_s) % step  # where the sloeval waits sit within each part
    return [t + step / 2 - phase for t in targets]


def plan_bursts(
    *,
    trials: int,
    last_scrape: Mapping[str, float],
    scrape_s: float,
    rule_eval_at: float,
    rule_s: float,
    sloeval_cycle_at: float,
    sloeval_s: float,
    earliest: float,
) -> list[Plan]:
    """Pick one endpoint scrape per trial from ``[earliest, earliest + rule_s)`` and a burst start before it.

    ``last_scrape`` is one recent scrape time per endpoint (each endpoint is its own job, with its
    own phase); ``rule_eval_at`` and ``sloeval_cycle_at`` are one point of each grid. Trial k gets
    the scrape whose wait for the next rule evaluation is closest to its :func:`wait_targets`
    value; scrapes closer than a small margin to either evaluation are skipped (whether that
    evaluation sees them is a race). Every burst starts :func:`burst_lead` before its scrape (so
    ``earliest`` should be at least that far in the future). Returns the plans by burst time.
    """
    if len(last_scrape) < trials:
        raise ValueError(f"{trials} trials need at least as many endpoints, got {len(last_scrape)}")
    margin = min(0.3, rule_s / 10, sloeval_s / 10)
    candidates: list[tuple[str, float, float, float]] = []  # endpoint, scrape, rule wait, sloeval wait
    for endpoint, last in last_scrape.items():
        scrape = last + math.ceil((earliest - last) / scrape_s) * scrape_s
        while scrape < earliest + rule_s:
            rule_wait = (rule_eval_at - scrape) % rule_s
            sloeval_wait = (sloeval_cycle_at - scrape) % sloeval_s
            if margin <= rule_wait <= rule_s - margin and margin <= sloeval_wait <= sloeval_s - margin:
                candidates.append((endpoint, scrape, rule_wait, sloeval_wait))
            scrape += scrape_s
    chosen: list[tuple[str, float, float, float]] = []
    offset = (sloeval_cycle_at - rule_eval_at) % sloeval_s
    for rule_target in wait_targets(trials, rule_s, sloeval_s, offset):
        sloeval_target = (rule_target + offset) % sloeval_s
        free = [c for c in candidates if c[0] not in {e for e, *_ in chosen}]
        if not free:
            raise ValueError("not enough scrapes to plan the bursts: use more endpoints")
        # Both waits: near a grid's wrap-around a small miss on one would be a whole interval on the other.
        chosen.append(min(free, key=lambda c: abs(c[2] - rule_target) + abs(c[3] - sloeval_target)))
    lead = burst_lead(scrape_s)
    plans = [
        Plan(endpoint, scrape, scrape - lead, rule_wait, sloeval_wait)
        for endpoint, scrape, rule_wait, sloeval_wait in chosen
    ]
    return sorted(plans, key=lambda p: p.burst_at)


# --- the two alerting paths ----------------------------------------------------------------


def burn_rate_expr(window: str, matchers: str = "") -> str:
    """PromQL: the error ratio over ``window`` per endpoint, as sloeval computes it (increase of both counters)."""
    bad = f'{METRIC}{{status=~"5.."{"," + matchers if matchers else ""}}}'
    total = f"{METRIC}{{{matchers}}}" if matchers else METRIC
    return f"(sum by (endpoint) (increase({bad}[{window}])) / sum by (endpoint) (increase({total}[{window}])))"


def alert_expr(matchers: str = "") -> str:
    """The rule: burn rate over BOTH windows above the factor; burn rate = error ratio / (1 - objective)."""
    threshold = f"{FACTOR:g} * (1 - {OBJECTIVE / 100:g})"
    return (
        f"{burn_rate_expr(LONG_WINDOW, matchers)} > {threshold}\n"
        f"and\n{burn_rate_expr(SHORT_WINDOW, matchers)} > {threshold}"
    )


def prometheus_rules() -> dict[str, Any]:
    return {
        "groups": [
            {
                "name": "detection-latency",  # no own interval: the global evaluation_interval applies
                "rules": [{"alert": ALERT_NAME, "expr": alert_expr(), "labels": {"severity": "critical"}}],
            }
        ]
    }


def slo_document(group_wait: str | None) -> dict[str, Any]:
    notify: dict[str, Any] = {"routes": [{"severity": ["critical"], "channels": ["telegram"]}]}
    if group_wait is not None:
        notify["group_wait"] = group_wait
    return {
        "service": "detection-latency",
        "slos": [
            {
                "name": "bench-errors",
                "slo_type": "errors",
                "objective": OBJECTIVE,
                "ratio": {"bad": f'{METRIC}{{status=~"5.."}}', "total": METRIC, "group_by": ["endpoint"]},
                "alerts": [
                    {
                        "name": ALERT_NAME,
                        "severity": "critical",
                        "burn_rate": {"long": LONG_WINDOW, "short": SHORT_WINDOW, "factor": FACTOR},
                    }
                ],
            }
        ],
        "notify": notify,
    }


def alertmanager_config(stub: BotApiStub, group_wait: str | None) -> dict[str, Any]:
    route: dict[str, Any] = {"receiver": "telegram", "group_by": ["alertname", "endpoint"]}
    if group_wait is not None:
        route["group_wait"] = group_wait
    return {
        "route": route,
        "receivers": [
            {
                "name": "telegram",
                "telegram_configs": [
                    {
                        "bot_token": stub.token,
                        "chat_id": ALERTMANAGER_CHAT,
                        "api_url": stub.url,
                        # Short and parseable; the default template would list every label.
                        "message": "{{ .Status | toUpper }} {{ .CommonLabels.alertname }}"
                        " endpoint={{ .CommonLabels.endpoint }}",
                    }
                ],
            }
        ],
    }


def scrape_configs(exporter: TrafficExporter) -> list[dict[str, Any]]:
    """One job per endpoint: each gets its own scrape phase (Prometheus hashes the target's labels)."""
    return [
        {
            "job_name": endpoint,
            "metrics_path": f"/metrics/{endpoint}",
            "static_configs": [{"targets": [exporter.target]}],
        }
        for endpoint in exporter.endpoints
    ]


class AlertmanagerServer(_ManagedProcess):
    """``/usr/bin/prometheus-alertmanager`` on 127.0.0.1, clustering off, storage in its work dir."""

    _name = "alertmanager"
    _health_path = "/-/ready"

    def __init__(self, config: dict[str, Any], *, binary: str = ALERTMANAGER_BINARY) -> None:
        super().__init__()
        self.config = config
        self.binary = binary
        self.config_path = self.work_dir / "alertmanager.yml"

    def _prepare(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False), encoding="utf-8")

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no HA gossip: nothing waits for peers to settle
        ]


class AlertingPrometheus(PrometheusServer):
    """A :class:`PrometheusServer` that also sends its alerts to one Alertmanager."""

    def __init__(self, data_dir: Path, alertmanager: str, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        self.alertmanager = alertmanager  # host:port

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [self.alertmanager]}]}]},
        }


class SloevalDaemon(SloevalProcess):
    """``python -m sloeval run`` on 127.0.0.1 with a JSON log, paging one chat of the stub."""

    def __init__(
        self, work: Path, prometheus_url: str, stub: BotApiStub, slo_file: Path, interval: float | None
    ) -> None:
        settings = {
            "SLOEVAL_PROMETHEUS_URL": prometheus_url,
            "SLOEVAL_SLO_FILE": str(slo_file),
            "SLOEVAL_STATE_DIR": str(work / "sloeval-state"),
            "SLOEVAL_LOG_FORMAT": "json",
            "SLOEVAL_TELEGRAM_BOT_TOKEN": stub.token,
            "SLOEVAL_TELEGRAM_CHAT_IDS": SLOEVAL_CHAT,
            "SLOEVAL_TELEGRAM_API_URL": stub.url,
        }
        if interval is not None:
            settings["SLOEVAL_EVAL_INTERVAL"] = repr(interval)
        super().__init__(settings, work / "sloeval.log")

    def cycles(self) -> list[float]:
        """``evaluated_at`` of every evaluation cycle so far."""
        return [float(e["evaluated_at"]) for e in self.events() if e.get("event") == "evaluation_cycle"]


# --- one run -------------------------------------------------------------------------------


@dataclass
class Options:
    trials: int = 12
    endpoints: int | None = None  # candidate endpoints (scrape jobs); None: 4 per trial
    rate: float = 10.0  # requests/s per endpoint
    scrape_interval: str = "15s"
    rule_interval: str = PROMETHEUS_DEFAULT_INTERVAL
    sloeval_interval: float | None = None  # None: sloeval's default
    sloeval_group_wait: str | None = None  # None: sloeval's default
    alertmanager_group_wait: str | None = None  # None: Alertmanager's default
    warmup_scrapes: int = 4
    max_wait: float = 240.0  # after the last burst
    lead: float = 2.0  # from planning to the first possible burst

    @property
    def endpoint_count(self) -> int:
        return self.endpoints if self.endpoints is not None else max(4 * self.trials, 8)


@dataclass
class Trial:
    """One burst; every ``*_at`` is a unix time, None when it did not happen."""

    number: int
    plan: Plan
    next_scrape_at: float | None = None
    condition_at: float | None = None  # first scrape after which the rule's condition holds
    sloeval_fired_at: float | None = None  # sloeval cycle in which the alert started firing
    sloeval_message_at: float | None = None
    prometheus_fired_at: float | None = None  # rule evaluation that made the alert active (activeAt)
    alertmanager_message_at: float | None = None

    @property
    def endpoint(self) -> str:
        return self.plan.endpoint

    @property
    def burst_at(self) -> float:
        return self.plan.burst_at

    def after(self, at: float | None) -> float | None:
        return None if at is None else at - self.burst_at

    @staticmethod
    def _between(start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else end - start

    @property
    def sloeval_latency(self) -> float | None:
        return self.after(self.sloeval_message_at)

    @property
    def alertmanager_latency(self) -> float | None:
        return self.after(self.alertmanager_message_at)

    @property
    def ratio(self) -> float | None:
        s, a = self.sloeval_latency, self.alertmanager_latency
        return None if s is None or a is None or s <= 0 else a / s

    def stages(self) -> dict[str, float | None]:
        """The latency cut at each hand-over, in seconds."""
        return {
            "burst_to_condition": self.after(self.condition_at),
            "sloeval_condition_to_fired": self._between(self.condition_at, self.sloeval_fired_at),
            "sloeval_fired_to_message": self._between(self.sloeval_fired_at, self.sloeval_message_at),
            "sloeval_condition_to_message": self._between(self.condition_at, self.sloeval_message_at),
            "prometheus_condition_to_fired": self._between(self.condition_at, self.prometheus_fired_at),
            "alertmanager_fired_to_message": self._between(self.prometheus_fired_at, self.alertmanager_message_at),
            "alertmanager_condition_to_message": self._between(self.condition_at, self.alertmanager_message_at),
        }


@dataclass
class Spread:
    n: int
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Spread:
        got = [v for v in values if v is not None and not math.isnan(v)]
        if not got:
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(got), statistics.median(got), min(got), max(got))

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "median": self.median, "min": self.low, "max": self.high}


@dataclass
class Result:
    options: Options
    trials: list[Trial]
    effective: dict[str, Any]  # settings read back from the running processes
    false_alarms: list[str] = field(default_factory=list)
    duration_s: float = math.nan
    loadavg: tuple[float, float] = (math.nan, math.nan)  # 1-minute load average at start and end
    cpus: int = 0

    @property
    def sloeval(self) -> Spread:
        return Spread.of([t.sloeval_latency for t in self.trials])

    @property
    def alertmanager(self) -> Spread:
        return Spread.of([t.alertmanager_latency for t in self.trials])

    def stage(self, name: str) -> Spread:
        return Spread.of([t.stages()[name] for t in self.trials])

    @property
    def ratio_of_medians(self) -> float:
        return self.alertmanager.median / self.sloeval.median if self.sloeval.median > 0 else math.nan

    @property
    def pipeline_ratio_of_medians(self) -> float:
        s = self.stage("sloeval_condition_to_message").median
        a = self.stage("alertmanager_condition_to_message").median
        return a / s if s > 0 else math.nan

    @property
    def per_trial_ratio(self) -> Spread:
        return Spread.of([t.ratio for t in self.trials])

    @property
    def eval_interval(self) -> float:
        return float(self.effective.get("sloeval_interval_s", math.nan))

    @property
    def complete(self) -> bool:
        every = all(t.sloeval_message_at is not None and t.alertmanager_message_at is not None for t in self.trials)
        return every and not self.false_alarms

    @property
    def targets(self) -> dict[str, bool]:
        return {
            "ratio_at_least_3x": self.ratio_of_medians >= 3.0,
            "sloeval_median_below_interval_plus_3s": self.sloeval.median < self.eval_interval + 3.0,
        }

    def markdown(self) -> str:
        return render_markdown(self)

    def figures(self) -> dict[str, Any]:
        stage_names = list(self.trials[0].stages()) if self.trials else []
        return {
            "options": asdict(self.options),
            "effective": self.effective,
            "cpus": self.cpus,
            "loadavg_start_end": list(self.loadavg),
            "duration_s": self.duration_s,
            "false_alarms": self.false_alarms,
            "complete": self.complete,
            "trials": [
                {
                    **asdict(t),
                    "endpoint": t.endpoint,
                    "burst_at": t.burst_at,
                    "sloeval_latency_s": t.sloeval_latency,
                    "alertmanager_latency_s": t.alertmanager_latency,
                    "ratio": t.ratio,
                    "stages_s": t.stages(),
                }
                for t in self.trials
            ],
            "sloeval_s": self.sloeval.to_json(),
            "prometheus_alertmanager_s": self.alertmanager.to_json(),
            "stages_s": {name: self.stage(name).to_json() for name in stage_names},
            "ratio_of_medians": self.ratio_of_medians,
            "pipeline_ratio_of_medians": self.pipeline_ratio_of_medians,
            "per_trial_ratio": self.per_trial_ratio.to_json(),
            "targets": self.targets,
        }


def _wait(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def _unix(rfc3339: str) -> float:
    """Prometheus timestamps carry nanoseconds; datetime takes microseconds."""
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339)
    return datetime.fromisoformat(trimmed).timestamp()


def first_messages(stub: BotApiStub) -> dict[tuple[str, str], float]:
    """(chat id, endpoint) -> arrival time of the first message naming that endpoint."""
    first: dict[tuple[str, str], float] = {}
    for message in stub.messages:
        for endpoint in ENDPOINT_IN_TEXT.findall(message.text):
            first.setdefault((message.chat_id, endpoint), message.at)
    return first


def sloeval_fired(events: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """endpoint -> ``evaluated_at`` of the cycle in which its alert became ``firing``."""
    fired: dict[str, float] = {}
    cycle_at = math.nan
    for event in events:
        if event.get("event") == "evaluation_cycle":
            cycle_at = float(event["evaluated_at"])
        elif event.get("event") == "alert_state" and event.get("status") == "firing":
            endpoint = (event.get("labels") or {}).get("endpoint")
            if endpoint is not None:
                fired.setdefault(endpoint, cycle_at)
    return fired


def prometheus_fired(prometheus_url: str) -> dict[str, float]:
    """endpoint -> ``activeAt`` of its alert (with ``for: 0`` the evaluation that fired it)."""
    body = httpx.get(f"{prometheus_url}/api/v1/alerts", timeout=10).json()
    return {
        a["labels"]["endpoint"]: _unix(a["activeAt"])
        for a in body["data"]["alerts"]
        if a["labels"].get("alertname") == ALERT_NAME and "endpoint" in a["labels"]
    }


def first_scrape_with_condition(
    prometheus_url: str, trial: Trial, scrapes: Sequence[float], scrape_s: float
) -> float | None:
    """The first scrape after the burst after which the rule's condition holds for the trial's endpoint.

    Asked of Prometheus half a scrape interval after each scrape (before the next one lands).
    """
    matcher = f'endpoint="{trial.endpoint}"'
    for at in [s for s in scrapes if s >= trial.burst_at][:8]:
        if instant_query(prometheus_url, alert_expr(matcher), at + scrape_s / 2):
            return at
    return None


def rule_group(prometheus_url: str) -> dict[str, Any]:
    body = httpx.get(f"{prometheus_url}/api/v1/rules", timeout=10).json()
    groups: list[dict[str, Any]] = body["data"]["groups"]
    if len(groups) != 1 or len(groups[0]["rules"]) != 1 or groups[0]["rules"][0].get("health") == "err":
        raise RuntimeError(f"the alerting rule did not load: {groups}")
    return groups[0]


def last_rule_evaluation(prometheus_url: str) -> float | None:
    """When the rule group last ran (None before its first evaluation)."""
    at = _unix(rule_group(prometheus_url)["lastEvaluation"])
    return at if at > 0 else None


def alertmanagers_discovered(prometheus_url: str) -> bool:
    body = httpx.get(f"{prometheus_url}/api/v1/alertmanagers", timeout=10).json()
    return bool(body["data"]["activeAlertmanagers"])


def run_benchmark(options: Options, work: Path, progress: Callable[[str], None] = lambda _: None) -> Result:
    """Start everything, warm up, burst, wait for every message (or ``max_wait``), stop everything."""
    for binary in (PROMETHEUS_BINARY, ALERTMANAGER_BINARY):
        if not Path(binary).exists():
            raise BenchError(f"{binary} is missing: run scripts/install-system-deps.sh")
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    scrape_s = float(parse_duration(options.scrape_interval))
    endpoints = [f"e{j + 1:02d}" for j in range(options.endpoint_count)]
    slo_file = work / "slos.yaml"
    slo_file.write_text(yaml.safe_dump(slo_document(options.sloeval_group_wait), sort_keys=False), encoding="utf-8")
    rule_file = work / "rules.yml"
    rule_file.write_text(yaml.safe_dump(prometheus_rules(), sort_keys=False), encoding="utf-8")

    with ExitStack() as stack:
        stub = stack.enter_context(BotApiStub())
        exporter = stack.enter_context(TrafficExporter(endpoints, options.rate))
        progress("starting Alertmanager, Prometheus and sloeval on 127.0.0.1 ...")
        alertmanager = stack.enter_context(
            AlertmanagerServer(alertmanager_config(stub, options.alertmanager_group_wait))
        )
        prometheus = stack.enter_context(
            AlertingPrometheus(
                work / "prometheus-data",
                alertmanager.url.removeprefix("http://"),
                scrape_configs=scrape_configs(exporter),
                scrape_interval=options.scrape_interval,
                evaluation_interval=options.rule_interval,
                rule_files=[rule_file],
            )
        )
        daemon = stack.enter_context(SloevalDaemon(work, prometheus.url, stub, slo_file, options.sloeval_interval))
        try:
            daemon.wait_ready()
            _wait(lambda: alertmanagers_discovered(prometheus.url), 30, "Prometheus to find Alertmanager")
            rule_s = float(rule_group(prometheus.url)["interval"])
            sloeval_s = _sloeval_interval(daemon.events())
            progress(f"warm-up: {options.warmup_scrapes} scrapes of each endpoint, every {options.scrape_interval} ...")
            _wait(
                lambda: min(map(len, exporter.scrapes().values())) >= options.warmup_scrapes,
                (options.warmup_scrapes + 2) * scrape_s + 30,
                f"{options.warmup_scrapes} scrapes",
            )
            _wait(lambda: last_rule_evaluation(prometheus.url) is not None, rule_s + 30, "the first rule evaluation")
            _wait(lambda: bool(daemon.cycles()), sloeval_s + 30, "sloeval's first cycle")
            if stub.messages:
                raise RuntimeError(f"messages before any burst: {[m.text for m in stub.messages]}")
            rule_eval_at = last_rule_evaluation(prometheus.url)
            assert rule_eval_at is not None
            plans = plan_bursts(
                trials=options.trials,
                last_scrape={e: times[-1] for e, times in exporter.scrapes().items()},
                scrape_s=scrape_s,
                rule_eval_at=rule_eval_at,
                rule_s=rule_s,
                sloeval_cycle_at=daemon.cycles()[-1],
                sloeval_s=sloeval_s,
                earliest=time.time() + options.lead + burst_lead(scrape_s),
            )
            exporter.schedule({p.endpoint: p.burst_at for p in plans})
            last_burst = max(p.burst_at for p in plans)
            progress(
                f"{options.trials} bursts in the next {last_burst - time.time():.0f}s; "
                f"waiting up to {options.max_wait:g}s after the last"
            )
            wanted = {(chat, p.endpoint) for p in plans for chat in (SLOEVAL_CHAT, str(ALERTMANAGER_CHAT))}
            deadline = last_burst + options.max_wait
            while not wanted <= first_messages(stub).keys() and time.time() < deadline:
                time.sleep(0.2)
            arrived = first_messages(stub)
            fired_prometheus = prometheus_fired(prometheus.url)
            scrapes = exporter.scrapes()
            trials = []
            for number, plan in enumerate(plans, start=1):
                trial = Trial(number, plan)
                trial.next_scrape_at = next((s for s in scrapes[plan.endpoint] if s >= plan.burst_at), None)
                trial.condition_at = first_scrape_with_condition(
                    prometheus.url, trial, scrapes[plan.endpoint], scrape_s
                )
                trial.sloeval_message_at = arrived.get((SLOEVAL_CHAT, plan.endpoint))
                trial.alertmanager_message_at = arrived.get((str(ALERTMANAGER_CHAT), plan.endpoint))
                trial.prometheus_fired_at = fired_prometheus.get(plan.endpoint)
                trials.append(trial)
            bursts = {p.endpoint: p.burst_at for p in plans}
            false_alarms = [
                f"chat {chat}: {endpoint}"
                for (chat, endpoint), at in arrived.items()
                if endpoint not in bursts or at < bursts[endpoint]
            ]
        except BaseException:
            for name, tail in (
                ("sloeval", daemon.log()[-3000:]),
                ("prometheus", prometheus.log_tail()),
                ("alertmanager", alertmanager.log_tail()),
            ):
                print(f"--- {name} log (tail) ---\n{tail}", file=sys.stderr)
            raise
        daemon.stop()  # the log is complete once it exited
        fired_sloeval = sloeval_fired(daemon.events())
        for trial in trials:
            trial.sloeval_fired_at = fired_sloeval.get(trial.endpoint)
        effective = {
            "scrape_interval_s": scrape_s,
            "rule_interval_s": rule_s,
            "sloeval_interval_s": sloeval_s,
            "sloeval_group_wait": options.sloeval_group_wait or f"{SLOEVAL_DEFAULT_GROUP_WAIT} (default)",
            "alertmanager_group_wait": options.alertmanager_group_wait
            or f"{ALERTMANAGER_DEFAULT_GROUP_WAIT} (default)",
            "endpoints": len(endpoints),
            "prometheus_version": _version(PROMETHEUS_BINARY),
            "alertmanager_version": _version(ALERTMANAGER_BINARY),
        }
    return Result(
        options,
        trials,
        effective,
        false_alarms,
        duration_s=time.monotonic() - started,
        loadavg=(load_start, os.getloadavg()[0]),
        cpus=os.cpu_count() or 0,
    )


def _sloeval_interval(events: Sequence[Mapping[str, Any]]) -> float:
    """The interval sloeval says it runs with (its ``started`` event)."""
    for event in events:
        if event.get("event") == "started":
            return float(event["interval_seconds"])
    raise RuntimeError("sloeval logged no 'started' event")


def _version(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    match = re.search(r"version (\S+)", done.stdout + done.stderr)
    return match.group(1) if match else "unknown"


# --- the report ----------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "missing" if value is None or math.isnan(value) else f"{value:.1f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}x"


def _range(spread: Spread) -> str:
    return f"{_s(spread.median)} ({_s(spread.low)} - {_s(spread.high)})"


def _seconds(text: str) -> float:
    return 0.0 if text in ("0", "0s") else float(parse_duration(text))


def _command_line(options: Options) -> str:
    flags = [f"--trials {options.trials}"]
    defaults = Options()
    for name, value in asdict(options).items():
        if name in ("trials", "lead") or value == getattr(defaults, name):
            continue
        flag = "--" + name.replace("_", "-")
        flags.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return "python -m bench.detection_latency " + " ".join(flags)


def render_markdown(result: Result) -> str:
    o, eff = result.options, result.effective
    interval, scrape_s, rule_s = result.eval_interval, eff["scrape_interval_s"], eff["rule_interval_s"]
    gw_am_s = _seconds(str(eff["alertmanager_group_wait"]).split()[0])
    lines = [
        f"`{_command_line(o)}`: {o.trials} error bursts in one run of {result.duration_s / 60:.1f} min, "
        f"{result.cpus} CPUs (shared), load average {result.loadavg[0]:.2f} at the start, "
        f"{result.loadavg[1]:.2f} at the end.",
        "",
        f"* Data path, the same for both: {eff['endpoints']} endpoints at {o.rate:g} requests/s each, every one "
        f"its own scrape job of one Prometheus {eff['prometheus_version']}, scraped every {o.scrape_interval} "
        f"(Prometheus's own default is 1m). Condition: burn rate > {FACTOR:g} over {LONG_WINDOW} AND "
        f"{SHORT_WINDOW}, objective {OBJECTIVE:g} %, per endpoint.",
        f"* sloeval: `sloeval run`, interval {interval:g} s"
        + (" (default)" if o.sloeval_interval is None else "")
        + f", `group_wait` {eff['sloeval_group_wait']}: it holds a first message only when another cycle "
        "comes before the wait ends, i.e. never when the wait is shorter than the interval.",
        f"* Prometheus + Alertmanager {eff['alertmanager_version']}: the same condition as an alerting rule, "
        f"`for` 0, evaluated every {rule_s:g} s"
        + (" (Prometheus's default 1m, set explicitly)" if o.rule_interval == PROMETHEUS_DEFAULT_INTERVAL else "")
        + f"; route `group_by: [alertname, endpoint]`, `group_wait` {eff['alertmanager_group_wait']}, "
        "`telegram_configs` to the same Bot API stand-in, another chat. (`group_interval` 5m and "
        "`repeat_interval` 4h only matter after a group's first message.)",
        "",
        "Per trial, seconds after the burst started:",
        "",
        "| trial | endpoint | scrape | condition holds | sloeval fired | **sloeval message** "
        "| rule fired | **Prom+AM message** | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in result.trials:
        lines.append(
            f"| {t.number} | {t.endpoint} | {_s(t.after(t.next_scrape_at))} | {_s(t.after(t.condition_at))} "
            f"| {_s(t.after(t.sloeval_fired_at))} | **{_s(t.sloeval_latency)}** "
            f"| {_s(t.after(t.prometheus_fired_at))} | **{_s(t.alertmanager_latency)}** | {_x(t.ratio)} |"
        )
    s, a, r = result.sloeval, result.alertmanager, result.per_trial_ratio
    st = result.stage
    lines += [
        "",
        "Median (min - max) over the trials, seconds:",
        "",
        "| | sloeval | Prometheus + Alertmanager | Prom+AM / sloeval |",
        "| --- | --- | --- | --- |",
        f"| **burst -> message** | **{_range(s)}** | **{_range(a)}** | **{_x(result.ratio_of_medians)}** "
        f"(per trial {_x(r.median)}, {_x(r.low)} - {_x(r.high)}) |",
        f"| burst -> scrape where the condition holds (shared) | {_range(st('burst_to_condition'))} "
        f"| {_range(st('burst_to_condition'))} | |",
        f"| that scrape -> evaluation that fired | {_range(st('sloeval_condition_to_fired'))} "
        f"| {_range(st('prometheus_condition_to_fired'))} | |",
        f"| evaluation -> message | {_range(st('sloeval_fired_to_message'))} "
        f"| {_range(st('alertmanager_fired_to_message'))} | |",
        f"| condition -> message (the pipeline alone) | {_range(st('sloeval_condition_to_message'))} "
        f"| {_range(st('alertmanager_condition_to_message'))} | {_x(result.pipeline_ratio_of_medians)} |",
        f"| messages delivered | {s.n}/{o.trials} | {a.n}/{o.trials} | |",
        "",
    ]
    targets = result.targets
    lines.append(
        f"Targets: sloeval at least 3x faster (ratio of medians): {_x(result.ratio_of_medians)}, "
        f"{'met' if targets['ratio_at_least_3x'] else 'NOT met'}; sloeval median below EVAL_INTERVAL + 3 s "
        f"= {interval + 3:g} s: {_s(s.median)} s, "
        f"{'met' if targets['sloeval_median_below_interval_plus_3s'] else 'NOT met'}."
    )
    if result.false_alarms:
        lines.append(f"FALSE ALARMS, the run is not valid: {', '.join(result.false_alarms)}")
    if not result.complete:
        lines.append("Messages are missing: the run is not a valid measurement.")
    lead = burst_lead(scrape_s)
    model_sloeval, model_am = lead + interval / 2, lead + rule_s / 2 + gw_am_s
    first = "the first scrape after the burst" if lead < scrape_s else "the scrape it was planned for"
    lines += [
        "",
        f"Method: every endpoint is its own scrape job with its own phase. After the warm-up the bench picks, for "
        f"trial k of {o.trials}, the endpoint scrape whose wait for the next rule evaluation is closest to "
        f"(k + 1/2)/{o.trials} of the {rule_s:g} s rule interval, adjusted so the waits for sloeval's next cycle "
        f"are {o.trials} evenly spaced values over its {interval:g} s too, and starts the burst {lead:.1f} s "
        f"before that scrape: the mean (and median) time from a burst at a random moment to the scrape where "
        f"the condition holds ({scrape_s / 2:g} s to the next scrape, plus {ERRORS_NEEDED_S:.1f} s of errors "
        f"that the {LONG_WINDOW} window needs, or one scrape later). So the trials sample the phases of both "
        "evaluation grids evenly, as random bursts do on average, and the medians do not depend on where the "
        f"grids happen to lie in this run. Expected: sloeval {lead:.1f} + {interval:g}/2 = {model_sloeval:.1f} s, "
        f"Prometheus + Alertmanager {lead:.1f} + {rule_s:g}/2 + {gw_am_s:g} = {model_am:.1f} s "
        f"({_x(model_am / model_sloeval)}); without the shared data path "
        f"{_x((rule_s / 2 + gw_am_s) / (interval / 2))}.",
        "",
        f"Why {LONG_WINDOW}/{SHORT_WINDOW} windows: the condition needs an error ratio above {FACTOR:g} x "
        f"{100 - OBJECTIVE:.1f} % = {100 * THRESHOLD:.2f} % in both windows, which a 100 % burst at the same "
        f"request rate reaches after {100 * THRESHOLD:.2f} % of the window: "
        f"{THRESHOLD * parse_duration(SHORT_WINDOW):.1f} s for {SHORT_WINDOW}, {ERRORS_NEEDED_S:.1f} s for "
        f"{LONG_WINDOW}. A burst {lead:.1f} s before a scrape is therefore seen as burning at {first} (the "
        "'condition holds' column): the latency measures the alerting pipelines, not the window math. The SRE "
        "Workbook's 1h/5m pair would add minutes of window math to both paths alike.",
    ]
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack: every process is stopped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detection_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12, help="error bursts, one endpoint each (default 12)")
    parser.add_argument("--endpoints", type=int, help="endpoints (scrape jobs) to pick from (default 4 per trial)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests/s per endpoint (default 10)")
    parser.add_argument("--scrape-interval", default="15s", help="Prometheus scrape_interval (default 15s)")
    parser.add_argument(
        "--rule-interval", default=PROMETHEUS_DEFAULT_INTERVAL, help="Prometheus evaluation_interval (default 1m)"
    )
    parser.add_argument("--sloeval-interval", type=float, help="SLOEVAL_EVAL_INTERVAL (default: unset, i.e. 20)")
    parser.add_argument("--sloeval-group-wait", help="notify.group_wait in the SLO file (default: unset, i.e. 10s)")
    parser.add_argument("--alertmanager-group-wait", help="route group_wait (default: unset, i.e. 30s)")
    parser.add_argument("--warmup-scrapes", type=int, default=4, help="scrapes before the first burst (default 4)")
    parser.add_argument("--max-wait", type=float, default=240.0, help="seconds to wait after the last burst")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--logs", type=Path, help="copy sloeval's JSON log to this directory")
    args = parser.parse_args(argv)
    if not 1 <= args.trials <= 30:
        parser.error("--trials must be 1..30")
    if args.endpoints is not None and not args.trials <= args.endpoints <= 200:
        parser.error("--endpoints must be at least --trials and at most 200")
    if args.rate <= 0 or args.warmup_scrapes < 2 or not 0 < args.max_wait <= 1800:
        parser.error("--rate > 0, --warmup-scrapes >= 2 and 0 < --max-wait <= 1800")
    options = Options(
        trials=args.trials,
        endpoints=args.endpoints,
        rate=args.rate,
        scrape_interval=args.scrape_interval,
        rule_interval=args.rule_interval,
        sloeval_interval=args.sloeval_interval,
        sloeval_group_wait=args.sloeval_group_wait,
        alertmanager_group_wait=args.alertmanager_group_wait,
        warmup_scrapes=args.warmup_scrapes,
        max_wait=args.max_wait,
    )
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with tempfile.TemporaryDirectory(prefix="sloeval-detect-") as tmp:
            result = run_benchmark(options, Path(tmp), lambda text: print(text, file=sys.stderr, flush=True))
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(tmp) / "sloeval.log", args.logs / "sloeval.log")
    except BenchError as exc:
        print(f"bench.detection_latency: {exc}", file=sys.stderr)
        return 2
    print(result.markdown())
    if args.json is not None:
        args.json.write_text(json.dumps(result.figures(), indent=2) + "\n", encoding="utf-8")
    return 0 if result.complete else 1


if __name__ == "__main__":
    sys.exit(main())
