"""Replica soak: several ``sloeval run`` replicas on one PostgreSQL, the leader killed every few minutes.

::

    python -m bench.replica_soak [--minutes 30] [--slos 1000] [--replicas 3] [--kill-every 180] [--json FILE]

Issue 12: "3 replicas, 1,000 SLOs, leader killed every few minutes for 30 minutes: count pages,
duplicates and the longest gap in delivery".

Real parts throughout, all on 127.0.0.1: a throwaway PostgreSQL cluster (``devtools.postgres``), a
live exporter of ``--routes`` Samokoder-shaped routes (``samokoder_http_requests_total`` by status
and a 13-bucket ``samokoder_http_request_duration_seconds`` histogram per route, the series
``bench.scale_data``'s generated SLOs read), one Prometheus scraping it every ``--scrape-interval``,
the Bot API stand-in and an aiosmtpd server as the two channels, and ``--replicas`` ``sloeval run``
children sharing the database (``SLOEVAL_DATABASE_URL_FILE``).

The SLOs are ``scale_data.slo_entries(--slos, --routes)``, each with one alert, ``FastBurn``:
burn rate over 1m and 30s above 10. The per-route SLOs (``errors``, ``good-ratio``, ``latency``)
page (critical: Telegram and email); the grouped and uptime SLOs carry the same rule as ``info``,
which no route sends: their alerts still go through every leader's engine and the shared state, but
one route burning does not page 40 to 80 times per channel through the identical ``by (endpoint)``
SLOs of its HTTP method.

The counters are functions of the clock, so a burst starts and ends at its scheduled second: every
``--burst-every`` seconds one route (in turn among those with per-route SLOs) serves 50 % 5xx for
``--burst-seconds``, then 0.2 % again. Each such burst is one incident for each of the route's
``errors`` and ``good-ratio`` SLOs: exactly one FIRING and one RESOLVED per channel.

Every ``--kill-every`` seconds the current leader (the replica whose ``/metrics`` says
``sloeval_leader 1``) gets SIGKILL; one kill in two waits for the next page to arrive at a stand-in
first (a kill while delivering). The failover time is from the kill to a survivor's ``/metrics``
saying ``sloeval_leader 1`` (polled every 0.5 s; the new leader's ``leadership_changed`` log event
is reported too). The killed replica is started again as a new process ``--restart-after`` seconds
later. After ``--minutes`` no more kills or bursts; the run waits for the last pages
(``--drain`` seconds at most), stops every replica, reads the outbox table and stops everything.

Counted: pages per channel and status; incidents missing their FIRING or RESOLVED; duplicates (one
incident's FIRING or RESOLVED delivered twice on a channel), split into a message delivered twice
(one outbox row: in flight at a kill) and a message queued twice (two rows); pages no burst
explains. Delays: burst start (FIRING) or end (RESOLVED) to the page's arrival, and the outbox
row's cycle time to the arrival (how long a due message waited), each for pages with a kill in
between and for the others. Also: RSS and CPU of every replica process (``/proc``, every 10 s),
cycle durations from the replicas' logs, the machine's load average and CPU use.

Prints a markdown table; ``--json`` also writes every figure. Exits 1 when a page is missing, a
message was queued twice, a page came that no burst explains or a failover did not happen, 2 when
a binary is missing. Everything stops by itself: the soak, then at most ``--drain`` seconds more;
every process started is stopped (SIGTERM, then SIGKILL) and the temp directory removed, also on
SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import html
import itertools
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
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psycopg

from bench import scale_data
from devtools.loopback import LoopbackServer
from devtools.postgres import PostgresServer, pg_binary
from devtools.servers import PROMETHEUS_BINARY, PrometheusServer
from devtools.sloeval_process import SloevalProcess
from devtools.smtp_server import ReceivedMail, SmtpServer
from devtools.telegram_stub import BotApiStub
from devtools.tsdb import format_labels

ALERT = "FastBurn"
LONG_WINDOW, SHORT_WINDOW, FACTOR = "1m", "30s", 10.0
PAGING_KINDS = ("errors", "good-ratio", "latency")  # per route, critical
BURNING_KINDS = ("errors", "good-ratio")  # the per-route SLOs a 5xx burst sets off
BASE_ERROR_RATIO = 0.002
BURST_ERROR_RATIO = 0.5  # burn rate 50 against objective 99 %: both windows pass 10x within seconds
CHAT_ID = "42"
EMAIL_TO = "oncall@example.test"
CHANNELS = ("telegram", "email")
SAMPLE_EVERY = 10.0
#: Seconds of traffic the counters already hold at the first scrape, as an API that has been up a while.
#: Counters that start near 0 make Prometheus extrapolate a bucket's increase past its _count's
#: (its zero-extrapolation at a series' start), which sloeval clamps and logs every cycle.
HISTORY = 3600.0
HEADLINE = re.compile(r"^\[?(FIRING|RESOLVED)\]?:? (\S+)")  # Telegram "FIRING: x", email "[FIRING] x"
TAG = re.compile(r"<[^>]+>")
ENDPOINT = re.compile(r'endpoint="([^"]+)"')
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A precondition is missing (exit code 2)."""


# --- the workload --------------------------------------------------------------------------


class SoakExporter(LoopbackServer):
    """``/metrics`` of ``route_count`` routes as ``scale_data`` shapes them, computed from the clock.

    Each route serves ``route.rps`` requests/s, counted from :data:`HISTORY` s before :meth:`start`;
    0.2 % of them are 5xx, 50 % during its scheduled bursts. Latencies follow the route's normal
    latency curve throughout.
    """

    thread_name = "soak-exporter"

    def __init__(self, route_count: int) -> None:
        super().__init__()
        self.routes = scale_data.routes(route_count, 1)
        self.started_at = math.nan
        self.scrapes = 0
        self._lock = threading.Lock()
        self._bursts: dict[str, list[tuple[float, float]]] = {}
        self._labels = {r.path: format_labels(r.labels)[1:-1] for r in self.routes}
        les = ["+Inf" if math.isinf(b) else repr(b) for b in scale_data.BUCKETS]
        self._buckets = {
            r.path: [
                (le, scale_data._lognormal_cdf(b, r.median_seconds))
                for le, b in zip(les, scale_data.BUCKETS, strict=True)
            ]
            for r in self.routes
        }

    def start(self) -> None:
        self.started_at = time.time()
        super().start()

    def schedule(self, endpoint: str, start: float, end: float) -> None:
        with self._lock:
            self._bursts.setdefault(endpoint, []).append((start, end))

    def exposition(self) -> bytes:
        now = time.time()
        elapsed = HISTORY + max(0.0, now - self.started_at)
        with self._lock:
            self.scrapes += 1
            burned = {path: sum(max(0.0, min(now, e) - s) for s, e in spans) for path, spans in self._bursts.items()}
        requests, buckets, counts, sums = [], [], [], []
        for route in self.routes:
            base = self._labels[route.path]
            # Whole requests, each counter a sum of whole parts that never go down, so that no bucket
            # ever grows by more than _count does and no counter seems to reset.
            error_seconds = BASE_ERROR_RATIO * elapsed + (BURST_ERROR_RATIO - BASE_ERROR_RATIO) * burned.get(
                route.path, 0
            )
            bad = math.floor(route.rps * error_seconds)
            good = math.floor(route.rps * (elapsed - error_seconds))
            total = good + bad
            not_found, server_error = good // 100, bad * 7 // 10
            for status, value in (
                ("200", good - not_found),
                ("404", not_found),
                ("500", server_error),
                ("503", bad - server_error),
            ):
                requests.append(f'{scale_data.REQUESTS}{{{base},status="{status}"}} {value}')
            for le, share in self._buckets[route.path]:
                buckets.append(f'{scale_data.DURATION}_bucket{{{base},le="{le}"}} {math.floor(total * share)}')
            counts.append(f"{scale_data.DURATION}_count{{{base}}} {total}")
            sums.append(f"{scale_data.DURATION}_sum{{{base}}} {total * route.median_seconds * 1.4:.3f}")
        return ("\n".join([*requests, *buckets, *counts, *sums]) + "\n").encode()

    def _make_server(self) -> ThreadingHTTPServer:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.exposition()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Quiet."""

        server = ThreadingHTTPServer((self.host, 0), Handler)
        server.daemon_threads = True
        return server


class TimedSmtpServer(SmtpServer):
    """The aiosmtpd server, also noting when each mail arrived (the Bot API stand-in does so itself)."""

    def __init__(self) -> None:
        super().__init__(tls="none")
        self.arrivals: list[tuple[float, str]] = []

    def _deliver(self, mail: ReceivedMail) -> None:
        self.arrivals.append((time.time(), str(mail.message["Subject"])))
        super()._deliver(mail)


def kind_of(slo_name: str) -> str:
    return slo_name.rsplit("-", 1)[0]


def slo_document(count: int, route_count: int) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The SLO file, and per route the SLOs a burst of that route must page for."""
    entries = scale_data.slo_entries(count, route_count)
    burning: dict[str, list[str]] = {}
    for entry in entries:
        name = str(entry["name"])
        kind = kind_of(name)
        entry["alerts"] = [
            {
                "name": ALERT,
                "severity": "critical" if kind in PAGING_KINDS else "info",
                "burn_rate": {"long": LONG_WINDOW, "short": SHORT_WINDOW, "factor": FACTOR},
            }
        ]
        if kind in BURNING_KINDS:
            ratio = entry["ratio"]
            assert isinstance(ratio, dict)
            match = ENDPOINT.search(str(ratio["total"]))
            assert match is not None
            burning.setdefault(match.group(1), []).append(name)
    document = {
        "service": "samokoder-api",
        "period": "30d",
        "notify": {
            "routes": [{"severity": ["critical"], "channels": list(CHANNELS)}],
            "repeat_interval": "4h",
            "group_wait": "0s",
        },
        "slos": entries,
    }
    return document, burning


@dataclass
class Burst:
    number: int
    endpoint: str
    start: float
    end: float
    slos: list[str]


def plan_bursts(burning: dict[str, list[str]], begin: float, end: float, every: float, length: float) -> list[Burst]:
    """A burst every ``every`` s from ``begin + 30``, routes in turn, each over ``length`` s before ``end - 30``."""
    endpoints = sorted(burning)
    if not endpoints:
        raise BenchError("no route has a per-route SLO: raise --slos")
    if len(endpoints) * every < length + 180:
        raise BenchError(
            f"{len(endpoints)} routes with per-route SLOs burn again before their incidents can end "
            f"({len(endpoints)} x {every:g} s < {length:g} + 180 s): raise --slos or --burst-every"
        )
    bursts: list[Burst] = []
    start = begin + 30
    while start + length <= end - 30:
        endpoint = endpoints[len(bursts) % len(endpoints)]
        bursts.append(Burst(len(bursts) + 1, endpoint, start, start + length, list(burning[endpoint])))
        start += every
    return bursts


# --- the replicas --------------------------------------------------------------------------


@dataclass
class Replica:
    """One ``sloeval run`` process: replica ``slot``, its ``generation``-th start."""

    slot: int
    generation: int
    process: SloevalProcess
    started_at: float
    ended_at: float | None = None
    killed: bool = False
    rss_kb: list[tuple[float, int]] = field(default_factory=list)
    cpu_seconds: float = 0.0

    @property
    def name(self) -> str:
        return f"r{self.slot}.{self.generation}"

    @property
    def pid(self) -> int | None:
        popen = self.process.process
        return popen.pid if popen is not None else None

    def alive(self) -> bool:
        popen = self.process.process
        return popen is not None and popen.poll() is None

    def sample(self, now: float) -> None:
        pid = self.pid
        if pid is None or not self.alive():
            return
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match:
            self.rss_kb.append((now, int(match.group(1))))
        fields = stat.rsplit(")", 1)[1].split()
        self.cpu_seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def gauge(url: str, name: str, timeout: float = 10.0) -> float | None:
    """The value of an unlabelled sample on ``url``'s ``/metrics`` (read until found), or None."""
    try:
        with httpx.stream("GET", url + "/metrics", timeout=timeout) as response:
            if response.status_code != 200:
                return None
            for line in response.iter_lines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
    except (httpx.HTTPError, ValueError):
        return None
    return None


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def _loadavg() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


# --- one run -------------------------------------------------------------------------------


@dataclass
class Options:
    minutes: float = 30.0
    slos: int = 1000
    routes: int = 50
    replicas: int = 3
    interval: float = 20.0
    scrape_interval: str = "5s"
    kill_every: float = 180.0
    restart_after: float = 20.0
    burst_every: float = 70.0
    burst_seconds: float = 100.0
    warmup: float = 60.0
    drain: float = 240.0
    scrape_replicas: str | None = None  # e.g. "15s": Prometheus also scrapes every replica's /metrics


@dataclass
class Kill:
    number: int
    mode: str  # "any time" or "delivering"
    due_at: float
    at: float | None = None
    victim: str | None = None
    leader_after: str | None = None
    failover_s: float | None = None  # kill -> a survivor's /metrics says sloeval_leader 1
    failover_log_s: float | None = None  # kill -> the new leader's leadership_changed event
    note: str = ""


@dataclass
class Page:
    channel: str
    status: str
    slo: str
    at: float
    subject: str


class Soak:
    """Starts everything, runs the schedule, stops everything; :meth:`run` returns the raw record."""

    def __init__(self, options: Options, work: Path, progress: Callable[[str], None]) -> None:
        self.o = options
        self.work = work
        self.progress = progress
        self.replicas: list[Replica] = []
        self.kills: list[Kill] = []
        self.load: list[tuple[float, float, float, float]] = []
        self.restarts: list[tuple[float, int]] = []  # (when, slot)
        self._next_sample = 0.0
        self._cpu_start = self._cpu_prev = _cpu_times()
        self.t0 = time.time()
        self.bot: BotApiStub
        self.smtp: TimedSmtpServer
        self.settings: dict[str, str] = {}

    # the replicas

    def start_replica(self, slot: int) -> Replica:
        generation = 1 + sum(1 for r in self.replicas if r.slot == slot)
        process = SloevalProcess(self.settings, self.work / f"replica-{slot}.{generation}.log")
        process.start()
        replica = Replica(slot, generation, process, time.time())
        self.replicas.append(replica)
        self.write_targets()
        return replica

    def write_targets(self) -> None:
        """The live replicas as Prometheus's file_sd targets (with ``--scrape-replicas``)."""
        targets = [{"targets": [f"127.0.0.1:{r.process.port}"], "labels": {"replica": r.name}} for r in self.alive()]
        path = self.work / "sloeval-targets.json"
        path.with_suffix(".tmp").write_text(json.dumps(targets))
        path.with_suffix(".tmp").replace(path)

    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive()]

    def leaders(self, among: Iterable[Replica]) -> list[Replica]:
        """The replicas whose /metrics says ``sloeval_leader 1``, all asked at once (at 1,000 SLOs each
        page is about 20 MB and takes a replica over a second to render)."""
        candidates = [r for r in among if r.alive()]
        with ThreadPoolExecutor(max_workers=max(1, len(candidates))) as pool:
            values = list(pool.map(lambda r: gauge(r.process.url, "sloeval_leader"), candidates))
        return [r for r, value in zip(candidates, values, strict=True) if value == 1]

    def pages_so_far(self) -> int:
        return len(self.bot.messages) + len(self.smtp.arrivals)

    def housekeeping(self) -> None:
        now = time.time()
        for when, slot in list(self.restarts):
            if when <= now:
                self.restarts.remove((when, slot))
                replica = self.start_replica(slot)
                self.progress(f"  restarted replica {slot} as {replica.name}")
        if now >= self._next_sample:
            self._next_sample = now + SAMPLE_EVERY
            for replica in self.alive():
                replica.sample(now)
            busy, total = _cpu_times()
            prev_busy, prev_total = self._cpu_prev
            self._cpu_prev = (busy, total)
            share = (busy - prev_busy) / (total - prev_total) if total > prev_total else math.nan
            self.load.append((now, *_loadavg()[:2], share))

    def idle(self, seconds: float, step: float = 0.2) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            self.housekeeping()
            time.sleep(min(step, max(0.0, deadline - time.time())))

    def wait_for(self, predicate: Callable[[], bool], timeout: float, step: float = 0.5) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return True
            self.idle(step)
        return predicate()

    # the kill

    def kill_leader(self, kill: Kill) -> None:
        found: list[Replica] = []

        def one_leader() -> bool:
            found[:] = self.leaders(self.alive())
            return len(found) == 1

        if not self.wait_for(one_leader, 60, 1.0):
            kill.note = f"no single leader to kill ({[r.name for r in found]})"
            self.progress(f"  kill {kill.number}: {kill.note}")
            return
        (victim,) = found
        if kill.mode == "delivering":
            seen = self.pages_so_far()
            if not self.wait_for(lambda: self.pages_so_far() > seen, 60, 0.02):
                kill.note = "no page within 60 s: killed anyway"
        popen = victim.process.process
        assert popen is not None
        popen.send_signal(signal.SIGKILL)
        kill.at = time.time()
        popen.wait()
        victim.ended_at, victim.killed, kill.victim = kill.at, True, victim.name
        self.write_targets()
        self.restarts.append((kill.at + self.o.restart_after, victim.slot))
        new: list[Replica] = []

        def taken_over() -> bool:  # any live replica, one restarted meanwhile included
            new[:] = self.leaders(r for r in self.alive() if r is not victim)
            return bool(new)

        if self.wait_for(taken_over, 60, 0.25):
            kill.failover_s = time.time() - kill.at
            kill.leader_after = new[0].name
        self.progress(
            f"  kill {kill.number} ({kill.mode}): {victim.name} at +{kill.at - self.t0:.0f}s, "
            f"{kill.leader_after or 'NO LEADER'} leads after {kill.failover_s or math.nan:.1f}s"
        )

    # the run

    def run(self) -> dict[str, Any]:
        o = self.o
        if not Path(PROMETHEUS_BINARY).exists():
            raise BenchError(f"{PROMETHEUS_BINARY} is missing: run scripts/install-system-deps.sh")
        try:
            pg_binary("initdb")
        except FileNotFoundError as exc:
            raise BenchError(str(exc)) from None
        document, burning = slo_document(o.slos, o.routes)
        slo_file = self.work / "slos.yaml"
        slo_file.write_text(json.dumps(document, indent=1), encoding="utf-8")
        with ExitStack() as stack:
            pg = PostgresServer()
            stack.callback(pg.cleanup)
            pg.start()
            exporter = SoakExporter(o.routes)
            stack.callback(exporter.stop)
            exporter.start()
            scrape = [
                {
                    "job_name": scale_data.JOB,
                    "honor_labels": True,
                    "static_configs": [{"targets": [exporter.url.removeprefix("http://")]}],
                }
            ]
            if o.scrape_replicas:
                self.write_targets()
                scrape.append(
                    {
                        "job_name": "sloeval",
                        "scrape_interval": o.scrape_replicas,
                        "scrape_timeout": o.scrape_replicas,
                        "file_sd_configs": [{"files": [str(self.work / "sloeval-targets.json")]}],
                        # sloeval renders its whole page; the SLO gauges are not kept (3 x 150,000 series)
                        "metric_relabel_configs": [
                            {"source_labels": ["__name__"], "regex": "samokoder_.*", "action": "drop"}
                        ],
                    }
                )
            prometheus = PrometheusServer(
                self.work / "prometheus-data", scrape_configs=scrape, scrape_interval=o.scrape_interval
            )
            stack.callback(prometheus.cleanup)
            prometheus.start()
            self.bot = stack.enter_context(BotApiStub())
            self.smtp = stack.enter_context(TimedSmtpServer())
            url_file = self.work / "database-url"
            url_file.write_text(pg.url + "\n")
            self.settings = {
                "SLOEVAL_PROMETHEUS_URL": prometheus.url,
                "SLOEVAL_SLO_FILE": str(slo_file),
                "SLOEVAL_DATABASE_URL_FILE": str(url_file),
                "SLOEVAL_STATE_DIR": str(self.work / "unused-state"),
                "SLOEVAL_LOG_FORMAT": "json",
                "SLOEVAL_EVAL_INTERVAL": repr(o.interval),
                "SLOEVAL_TELEGRAM_BOT_TOKEN": self.bot.token,
                "SLOEVAL_TELEGRAM_CHAT_IDS": CHAT_ID,
                "SLOEVAL_TELEGRAM_API_URL": self.bot.url,
                "SLOEVAL_SMTP_HOST": "127.0.0.1",
                "SLOEVAL_SMTP_PORT": str(self.smtp.port),
                "SLOEVAL_SMTP_TLS": "none",
                "SLOEVAL_EMAIL_TO": EMAIL_TO,
            }
            stack.callback(self.stop_replicas)
            try:
                return self._soak(pg, exporter, prometheus, burning)
            except BaseException:
                for replica in self.replicas[-o.replicas :]:
                    print(f"--- {replica.name} log (tail) ---\n{replica.process.log()[-2000:]}", file=sys.stderr)
                print(f"--- prometheus log (tail) ---\n{prometheus.log_tail()}", file=sys.stderr)
                raise

    def stop_replicas(self) -> None:
        for replica in self.replicas:
            if replica.alive():
                replica.sample(time.time())
                replica.process.stop()
                replica.ended_at = time.time()

    def _soak(
        self, pg: PostgresServer, exporter: SoakExporter, prometheus: PrometheusServer, burning: dict[str, list[str]]
    ) -> dict[str, Any]:
        o = self.o
        self.progress(f"waiting for {o.routes} routes to be scraped twice ...")
        if not self.wait_for(lambda: exporter.scrapes >= 2, 60):
            raise RuntimeError("Prometheus does not scrape the exporter")
        self.progress(f"starting {o.replicas} replicas with {o.slos} SLOs, interval {o.interval:g}s ...")
        for slot in range(o.replicas):
            self.start_replica(slot)
        for replica in self.replicas:
            replica.process.wait_ready(180)
        if not self.wait_for(lambda: len(self.leaders(self.alive())) == 1, 60, 1.0):
            raise RuntimeError("no single leader among the replicas")
        self.progress(f"warm-up {o.warmup:g}s ...")
        self.idle(o.warmup)
        early_pages = self.pages_so_far()
        self.t0 = time.time()
        end = self.t0 + o.minutes * 60
        bursts = plan_bursts(burning, self.t0, end, o.burst_every, o.burst_seconds)
        for burst in bursts:
            exporter.schedule(burst.endpoint, burst.start, burst.end)
        expected = sum(len(b.slos) for b in bursts)
        self.progress(
            f"soak: {o.minutes:g} min, {len(bursts)} bursts ({expected} incidents, {2 * expected} pages per channel), "
            f"a kill every {o.kill_every:g}s"
        )
        due = self.t0 + o.kill_every
        while due < end:
            self.idle(max(0.0, due - time.time()))
            kill = Kill(len(self.kills) + 1, "delivering" if len(self.kills) % 2 else "any time", due)
            self.kills.append(kill)
            self.kill_leader(kill)
            due += o.kill_every
        self.idle(max(0.0, end - time.time()))
        for when, slot in list(self.restarts):  # every replica back for the drain
            self.restarts.remove((when, slot))
            self.start_replica(slot)
        wanted = {(c, s, b.number) for b in bursts for s in b.slos for c in CHANNELS}
        self.progress(f"soak over; waiting up to {o.drain:g}s for the last RESOLVED pages ...")

        def all_resolved() -> bool:
            got = {(p.channel, p.slo, n) for p in self.pages() if p.status == "RESOLVED" for n in _numbers(p, bursts)}
            return wanted <= got

        self.wait_for(all_resolved, o.drain, 1.0)
        self.idle(2 * o.interval)  # late duplicates
        leader_now = [r.name for r in self.leaders(self.alive())]
        self.stop_replicas()
        outbox = read_outbox(pg.url)
        cpu_end = _cpu_times()
        return {
            "t0": self.t0,
            "end": end,
            "bursts": bursts,
            "kills": self.kills,
            "pages": self.pages(),
            "early_pages": early_pages,
            "outbox": outbox,
            "replicas": self.replicas,
            "events": {r.name: r.process.events() for r in self.replicas},
            "load": self.load,
            "machine_cpu": (cpu_end[0] - self._cpu_start[0]) / max(1.0, cpu_end[1] - self._cpu_start[1]),
            "leader_at_end": leader_now,
            "scrapes": exporter.scrapes,
            "prometheus_version": _prometheus_version(),
        }

    def pages(self) -> list[Page]:
        out = []
        for message in self.bot.messages:
            first = html.unescape(TAG.sub("", message.text.split("\n")[0]))
            out.append(_page("telegram", first, message.at))
        out += [_page("email", subject, at) for at, subject in list(self.smtp.arrivals)]
        return out


def _page(channel: str, headline: str, at: float) -> Page:
    match = HEADLINE.match(headline)
    status, slo = (match.group(1), match.group(2)) if match else ("OTHER", headline[:80])
    return Page(channel, status, slo, at, headline)


def _numbers(page: Page, bursts: Sequence[Burst]) -> list[int]:
    burst = attribute(page, bursts)
    return [] if burst is None else [burst.number]


def attribute(page: Page, bursts: Sequence[Burst]) -> Burst | None:
    """The latest burst of the page's SLO that started before the page arrived."""
    candidates = [b for b in bursts if page.slo in b.slos and b.start <= page.at]
    return max(candidates, key=lambda b: b.start) if candidates else None


def read_outbox(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT id, channel, subject, created_at, done_at, status, attempts, claimed_epoch FROM outbox ORDER BY id"
        ).fetchall()
    keys = ("id", "channel", "subject", "created_at", "done_at", "status", "attempts", "claimed_epoch")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _prometheus_version() -> str:
    done = subprocess.run([PROMETHEUS_BINARY, "--version"], capture_output=True, text=True, timeout=30, check=False)
    match = re.search(r"version (\S+)", done.stdout + done.stderr)
    return match.group(1) if match else "unknown"


# --- the figures ---------------------------------------------------------------------------


def _unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def spread(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"n": len(values), "median": statistics.median(values), "p95": p95, "max": max(values)}


def analyse(raw: dict[str, Any], options: Options) -> dict[str, Any]:
    bursts: list[Burst] = raw["bursts"]
    kills: list[Kill] = [k for k in raw["kills"] if k.at is not None]
    pages: list[Page] = raw["pages"]
    t0 = raw["t0"]
    events: dict[str, list[dict[str, Any]]] = raw["events"]
    by_name = {r.name: r for r in raw["replicas"]}

    # failover as the new leader's own log tells it
    for kill in kills:
        assert kill.at is not None
        taken = [
            _unix(e["timestamp"])
            for name, evs in events.items()
            if name != kill.victim
            for e in evs
            if e.get("event") == "leadership_changed" and e.get("leader") and _unix(e["timestamp"]) > kill.at
        ]
        kill.failover_log_s = min(taken) - kill.at if taken else None

    # pages against incidents
    counts: Counter[tuple[int, str, str, str]] = Counter()
    arrivals: dict[tuple[int, str, str, str], list[float]] = {}
    unexplained: list[dict[str, Any]] = []
    early_resolved: list[dict[str, Any]] = []
    delays: dict[tuple[str, str], list[float]] = {}
    delay_rows: list[dict[str, Any]] = []
    for page in pages:
        burst = attribute(page, bursts)
        if burst is None or page.status not in ("FIRING", "RESOLVED"):
            unexplained.append({"channel": page.channel, "subject": page.subject, "at": page.at - t0})
            continue
        if page.status == "RESOLVED" and page.at < burst.end:
            early_resolved.append({"channel": page.channel, "subject": page.subject, "burst": burst.number})
        key = (burst.number, page.slo, page.channel, page.status)
        counts[key] += 1
        arrivals.setdefault(key, []).append(page.at)
        if counts[key] > 1:
            continue  # a duplicate's delay is not a delay of the incident
        edge = burst.start if page.status == "FIRING" else burst.end
        crossed = [k.number for k in kills if edge <= (k.at or 0) <= page.at]
        delay = page.at - edge
        delays.setdefault((page.status, "failover" if crossed else "steady"), []).append(delay)
        delay_rows.append(
            {
                "burst": burst.number,
                "slo": page.slo,
                "channel": page.channel,
                "status": page.status,
                "delay_s": delay,
                "kills": crossed,
            }
        )
    missing = [
        {"burst": b.number, "slo": s, "channel": c, "status": st}
        for b in bursts
        for s in b.slos
        for c in CHANNELS
        for st in ("FIRING", "RESOLVED")
        if counts[(b.number, s, c, st)] == 0
    ]

    # the outbox: how long a due message waited, and whether a duplicate was queued once or twice
    rows = raw["outbox"]
    arrivals_by_subject: dict[tuple[str, str], list[float]] = {}
    for page in pages:
        arrivals_by_subject.setdefault((page.channel, page.subject), []).append(page.at)
    waits: dict[str, list[float]] = {"steady": [], "failover": []}
    waits_by_channel: dict[str, list[float]] = {c: [] for c in CHANNELS}
    wait_rows: list[dict[str, Any]] = []
    rows_per_incident: Counter[tuple[int, str, str, str]] = Counter()
    for row in rows:
        match = HEADLINE.match(row["subject"])
        if not match:
            continue
        fake = Page(row["channel"], match.group(1), match.group(2), float(row["created_at"]), row["subject"])
        burst = attribute(fake, bursts)
        if burst is not None:
            rows_per_incident[(burst.number, fake.slo, fake.channel, fake.status)] += 1
        later = [a for a in arrivals_by_subject.get((row["channel"], row["subject"]), []) if a >= row["created_at"]]
        if not later:
            continue
        arrived = min(later)
        across = any(row["created_at"] <= (k.at or 0) <= arrived for k in kills)
        wait = arrived - float(row["created_at"])
        waits["failover" if across else "steady"].append(wait)
        waits_by_channel[row["channel"]].append(wait)
        wait_rows.append({"id": row["id"], "channel": row["channel"], "subject": row["subject"], "wait_s": wait})
    duplicates = []
    for key, n in counts.items():
        if n <= 1:
            continue
        first, second = sorted(arrivals[key])[:2]
        near = [k.number for k in kills if first - 30 <= (k.at or 0) <= second]
        queued = rows_per_incident.get(key, 0)
        duplicates.append(
            {
                "burst": key[0],
                "slo": key[1],
                "channel": key[2],
                "status": key[3],
                "deliveries": n,
                "outbox_rows": queued,
                "kind": "queued twice" if queued > 1 else "delivered twice (in flight at a kill)",
                "seconds_apart": second - first,
                "kills_between": near,
            }
        )

    # replicas: RSS, CPU, cycles
    replicas = []
    cycle_durations: list[float] = []
    over_deadline = 0
    skipped_ticks = 0
    outcomes: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    for name, evs in events.items():
        replica = by_name[name]
        cycles = [e for e in evs if e.get("event") == "evaluation_cycle"]
        steady = cycles[1:]  # the first cycle evaluates every window
        cycle_durations += [float(e["duration_seconds"]) for e in steady]
        over_deadline += sum(1 for e in steady if float(e["duration_seconds"]) > 0.9 * options.interval)
        outcomes.update(str(e.get("outcome")) for e in steady)
        times = [float(e["evaluated_at"]) for e in cycles]
        skipped_ticks += sum(
            round((b - a) / options.interval) - 1
            for a, b in itertools.pairwise(times)
            if b - a > 1.5 * options.interval
        )
        for e in evs:
            if e.get("level") in ("warning", "error", "critical"):
                problems[f"{e.get('level')}: {e.get('event')}"] += 1
        lifetime = (replica.ended_at or time.time()) - replica.started_at
        rss = [kb / 1024 for _, kb in replica.rss_kb]
        replicas.append(
            {
                "name": name,
                "pid": replica.pid,
                "lifetime_s": lifetime,
                "killed": replica.killed,
                "cycles": len(cycles),
                "rss_mb_first": rss[0] if rss else None,
                "rss_mb_max": max(rss) if rss else None,
                "rss_mb_last": rss[-1] if rss else None,
                "cpu_s": replica.cpu_seconds,
                "cpu_share": replica.cpu_seconds / lifetime if lifetime > 0 else None,
                "rss_samples": [(round(t - t0, 1), kb) for t, kb in replica.rss_kb],
                "led": any(e.get("event") == "leadership_changed" and e.get("leader") for e in evs),
            }
        )

    page_counts = {
        c: {st: sum(1 for p in pages if p.channel == c and p.status == st) for st in ("FIRING", "RESOLVED", "OTHER")}
        for c in CHANNELS
    }
    load = raw["load"]
    failovers = [k.failover_s for k in kills if k.failover_s is not None]
    return {
        "options": asdict(options),
        "duration_min": (raw["end"] - t0) / 60,
        "bursts": [asdict(b) | {"start_s": b.start - t0, "end_s": b.end - t0} for b in bursts],
        "incidents": sum(len(b.slos) for b in bursts),
        "kills": [
            asdict(k)
            | {"at_s": None if k.at is None else k.at - t0}
            | _across(k, [r for r in delay_rows if r["kills"] and k.number in r["kills"]])
            for k in raw["kills"]
        ],
        "failover_s": spread(failovers),
        "failover_log_s": spread([k.failover_log_s for k in kills if k.failover_log_s is not None]),
        "failed_kills": [k.number for k in raw["kills"] if k.at is None or k.failover_s is None],
        "pages": page_counts,
        "pages_before_soak": raw["early_pages"],
        "missing": missing,
        "duplicates": duplicates,
        "unexplained": unexplained,
        "resolved_before_burst_end": early_resolved,
        "delay_s": {f"{status} {kind}": spread(values) for (status, kind), values in sorted(delays.items())},
        "delays": delay_rows,
        "queue_wait_s": {kind: spread(values) for kind, values in waits.items()},
        "queue_wait_by_channel_s": {channel: spread(values) for channel, values in waits_by_channel.items()},
        "waits": wait_rows,
        "outbox": {
            "rows": len(rows),
            "by_status": dict(Counter(str(r["status"]) for r in rows)),
            "attempts_over_1": sum(1 for r in rows if (r["attempts"] or 0) > 1),
        },
        "replicas": replicas,
        "cycle_s": spread(cycle_durations),
        "cycles_over_deadline": over_deadline,
        "skipped_ticks": skipped_ticks,
        "cycle_outcomes": dict(outcomes),
        "log_problems": dict(problems.most_common()),
        "load": {
            "cpus": os.cpu_count(),
            "load1": spread([row[1] for row in load]),
            "samples": [(round(t - t0, 1), one, five, share) for t, one, five, share in load],
            "machine_cpu_busy": raw["machine_cpu"],
        },
        "leader_at_end": raw["leader_at_end"],
        "prometheus_version": raw["prometheus_version"],
    }


def _across(kill: Kill, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The pages whose burst edge came before this kill and whose arrival after it."""
    return {
        "pages_across": len(rows),
        "max_delay_across_s": max((r["delay_s"] for r in rows), default=None),
    }


# --- the report ----------------------------------------------------------------------------


def _s(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _spread_text(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "none"
    return f"{_s(s['median'])} / {_s(s['p95'])} / **{_s(s['max'])}** (n={s['n']})"


def _command_line(o: Options) -> str:
    flags = []
    defaults = Options()
    for name, value in asdict(o).items():
        if value != getattr(defaults, name):
            flags.append(
                f"--{name.replace('_', '-')} {value:g}"
                if isinstance(value, float)
                else f"--{name.replace('_', '-')} {value}"
            )
    return " ".join(["python -m bench.replica_soak", *flags])


def render_markdown(f: dict[str, Any]) -> str:
    o = Options(**f["options"])
    load, replicas = f["load"], f["replicas"]
    expected = f["incidents"]
    dups = f["duplicates"]
    in_flight = [d for d in dups if d["outbox_rows"] <= 1]
    lines = [
        f"`{_command_line(o)}`: {o.replicas} replicas, {o.slos} SLOs over {o.routes} routes, interval "
        f"{o.interval:g} s, Prometheus {f['prometheus_version']} scraping the exporter every {o.scrape_interval}"
        + (f" and every replica's /metrics every {o.scrape_replicas}" if o.scrape_replicas else " (not the replicas)")
        + "; "
        f"{f['duration_min']:.0f} min soak, {len(f['kills'])} kills (every {o.kill_every:g} s, restart "
        f"{o.restart_after:g} s later), {len(f['bursts'])} bursts ({expected} incidents). Machine: "
        f"{load['cpus']} CPUs, load average (1 min) median {_s(load['load1']['median'], 2)}, max "
        f"{_s(load['load1']['max'], 2)}; CPU busy {100 * load['machine_cpu_busy']:.0f} % over the run.",
        "",
        "| | telegram | email |",
        "| --- | --- | --- |",
        f"| pages expected (FIRING + RESOLVED) | {2 * expected} | {2 * expected} |",
    ]
    for status in ("FIRING", "RESOLVED"):
        lines.append(f"| {status} delivered | {f['pages']['telegram'][status]} | {f['pages']['email'][status]} |")

    def per_channel(items: list[dict[str, Any]]) -> str:
        return " | ".join(str(sum(1 for i in items if i["channel"] == c)) for c in CHANNELS)

    lines += [
        f"| missing (an incident without its FIRING or RESOLVED) | {per_channel(f['missing'])} |",
        f"| duplicates: delivered twice (in flight at a kill) | {per_channel(in_flight)} |",
        f"| duplicates: queued twice | {per_channel([d for d in dups if d['outbox_rows'] > 1])} |",
        f"| pages no burst explains | {per_channel(f['unexplained'])} |",
        "",
        'Delays, seconds: median / p95 / **max** (n). "Failover": a kill came between the burst\'s start or '
        "end (or the message's cycle) and the page's arrival.",
        "",
        "| | steady | across a failover |",
        "| --- | --- | --- |",
    ]
    d = f["delay_s"]
    empty = {"n": 0}
    for status, edge in (("FIRING", "burst start"), ("RESOLVED", "burst end")):
        lines.append(
            f"| {edge} -> {status} page | {_spread_text(d.get(f'{status} steady', empty))} "
            f"| {_spread_text(d.get(f'{status} failover', empty))} |"
        )
    w = f["queue_wait_s"]
    wc = f["queue_wait_by_channel_s"]
    lines += [
        f"| message queued (its cycle) -> delivered | {_spread_text(w['steady'])} | {_spread_text(w['failover'])} |",
        "",
        f"Queued -> delivered by channel, max: telegram {_s(wc['telegram']['max'])} s (sloeval sends one message "
        f"a second to a chat), email {_s(wc['email']['max'])} s.",
        "",
        "| kill | at (s) | mode | killed | new leader | failover, /metrics (s) | failover, log (s) "
        "| pages across it | their longest delay (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in f["kills"]:
        lines.append(
            f"| {k['number']} | {_s(k['at_s'], 0)} | {k['mode']} | {k['victim'] or '-'} | {k['leader_after'] or '-'} "
            f"| {_s(k['failover_s'])} | {_s(k['failover_log_s'], 2)} | {k['pages_across']} "
            f"| {_s(k['max_delay_across_s'])} |" + (f" {k['note']}" if k["note"] else "")
        )
    fo, fl = f["failover_s"], f["failover_log_s"]
    lines += [
        "",
        f"Failover (kill -> a survivor's /metrics says leader): median {_s(fo['median'])} s, max {_s(fo['max'])} s; "
        f"by the new leader's log: median {_s(fl['median'], 2)} s, max {_s(fl['max'], 2)} s.",
        "",
        "| replica process | lived (s) | killed | cycles | RSS first / max / last (MB) | CPU (share of a core) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in replicas:
        lines.append(
            f"| {r['name']} | {r['lifetime_s']:.0f} | {'yes' if r['killed'] else 'no'} | {r['cycles']} "
            f"| {_s(r['rss_mb_first'], 0)} / {_s(r['rss_mb_max'], 0)} / {_s(r['rss_mb_last'], 0)} "
            f"| {_s(r['cpu_share'], 2)} |"
        )
    c = f["cycle_s"]
    lines += [
        "",
        f"Cycles (all replicas, first cycle of each process left out): duration median {_s(c['median'], 2)} s, "
        f"p95 {_s(c['p95'], 2)} s, max {_s(c['max'], 2)} s against an interval of {o.interval:g} s (deadline "
        f"{0.9 * o.interval:g} s): {f['cycles_over_deadline']} over the deadline, {f['skipped_ticks']} ticks "
        f"skipped; outcomes {f['cycle_outcomes']}.",
    ]
    if f["log_problems"]:
        shown = ", ".join(f"{k} x{v}" for k, v in list(f["log_problems"].items())[:12])
        lines += ["", f"Warnings and errors in the replicas' logs: {shown}."]
    for d in dups:
        lines.append(
            f"Duplicate: burst {d['burst']} {d['slo']} {d['status']} on {d['channel']}: {d['deliveries']} deliveries "
            f"{d['seconds_apart']:.1f} s apart, {d['outbox_rows']} outbox row(s), kills {d['kills_between']}."
        )
    if f["missing"]:
        lines.append(f"MISSING: {f['missing'][:10]}{' ...' if len(f['missing']) > 10 else ''}")
    if f["unexplained"]:
        lines.append(f"UNEXPLAINED PAGES: {f['unexplained'][:10]}")
    if f["resolved_before_burst_end"]:
        lines.append(f"RESOLVED before the burst ended: {f['resolved_before_burst_end'][:10]}")
    if f["failed_kills"]:
        lines.append(f"Kills without a failover: {f['failed_kills']}")
    return "\n".join(lines)


def valid(f: dict[str, Any]) -> bool:
    queued_twice = [d for d in f["duplicates"] if d["outbox_rows"] > 1]
    return not (f["missing"] or queued_twice or f["unexplained"] or f["failed_kills"])


# --- command line --------------------------------------------------------------------------


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack: every process is stopped


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replica_soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    parser.add_argument("--slos", type=int, default=1000, help="generated SLOs (default 1000)")
    parser.add_argument("--routes", type=int, default=50, help="routes the exporter serves (default 50)")
    parser.add_argument("--replicas", type=int, default=3, help="sloeval replicas (default 3)")
    parser.add_argument("--interval", type=float, default=20.0, help="SLOEVAL_EVAL_INTERVAL (default 20)")
    parser.add_argument("--scrape-interval", default="5s", help="Prometheus scrape_interval (default 5s)")
    parser.add_argument("--kill-every", type=float, default=180.0, help="seconds between kills (default 180)")
    parser.add_argument("--restart-after", type=float, default=20.0, help="seconds until a killed replica restarts")
    parser.add_argument("--burst-every", type=float, default=70.0, help="seconds between burst starts (default 70)")
    parser.add_argument("--burst-seconds", type=float, default=100.0, help="length of a burst (default 100)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds after the first leader, before the soak")
    parser.add_argument("--drain", type=float, default=240.0, help="seconds to wait for the last pages (default 240)")
    parser.add_argument(
        "--scrape-replicas", help="Prometheus also scrapes every replica's /metrics at this interval (e.g. 15s)"
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--logs", type=Path, help="copy the replicas' JSON logs to this directory")
    args = parser.parse_args(argv)
    if args.replicas < 2 or args.slos < 6 or args.minutes <= 0 or args.kill_every < 30:
        parser.error("--replicas >= 2, --slos >= 6, --minutes > 0 and --kill-every >= 30")
    options = Options(
        minutes=args.minutes,
        slos=args.slos,
        routes=args.routes,
        replicas=args.replicas,
        interval=args.interval,
        scrape_interval=args.scrape_interval,
        kill_every=args.kill_every,
        restart_after=args.restart_after,
        burst_every=args.burst_every,
        burst_seconds=args.burst_seconds,
        warmup=args.warmup,
        drain=args.drain,
        scrape_replicas=args.scrape_replicas,
    )
    signal.signal(signal.SIGTERM, _terminate)

    def progress(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    try:
        with tempfile.TemporaryDirectory(prefix="sloeval-soak-") as tmp:
            raw = Soak(options, Path(tmp), progress).run()
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in Path(tmp).glob("replica-*.log"):
                    shutil.copyfile(log, args.logs / log.name)
    except BenchError as exc:
        print(f"bench.replica_soak: {exc}", file=sys.stderr)
        return 2
    figures = analyse(raw, options)
    print(render_markdown(figures))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n", encoding="utf-8")
    return 0 if valid(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
