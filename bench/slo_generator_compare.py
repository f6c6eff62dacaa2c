"""sloeval against slo-generator 2.6.0: the same SLOs and windows, the same Prometheus, per cycle.

::

    python -m bench.slo_generator_compare [--slos 100] [--runs 5] [--days 30] [--routes 50] [--json FILE]

A cycle evaluates every SLO once (sloeval's windows ``5m 30m 1h 2h 6h 1d 3d 30d`` for a 30-day
period). The data is :mod:`bench.scale_data` (Samokoder-shaped traffic ending at the fixed time
``DATA_END``), backfilled into a real Prometheus on 127.0.0.1; the SLOs are the kinds of
:func:`bench.scale_data.slo_entries` that slo-generator can express (errors, good-ratio, latency,
uptime), each written once as a native sloeval file and once as slo-generator v2 configs.

Three things are measured in every run:

- slo-generator 2.6.0, installed from PyPI into its own venv under ``.bench-cache/`` (reused
  later) and driven through its Python API ``compute()`` by ``bench/_slo_generator_runner.py``, one
  SLO after another as its CLI does: every window of every SLO is asked of Prometheus each cycle.
- sloeval, every window every cycle: a fresh ``Evaluator`` per cycle, as ``sloeval eval`` builds
  it; this is also what the daemon does in its first cycle.
- sloeval daemon, steady state: ONE long-lived ``Evaluator`` with ``long_window_refresh`` from the
  settings (default 300 s), as ``sloeval run`` keeps it. Windows of at least ``long_window_min``
  (default 30d) are re-evaluated once per refresh period at phases of their own (see
  :mod:`sloeval.promql.plan`), shorter windows every cycle. Its
  first cycle (every window) is made once, before the runs, and is not steady state; after it the
  cycles' ``at`` advances by the daemon's interval (``eval_interval``, default 30 s) each, back to
  back. Every run times ``max(10, refresh / interval)`` consecutive such cycles, each on its own:
  at least one whole refresh period of simulated time, so that the long windows' refreshes fall
  in it and weigh in as in the daemon. This is what the daemon does every 30 s, so it is the row
  that answers "per cycle"; its numbers are a full evaluation's, long windows up to one refresh old.

Each tool runs in a process of its own, started once; only cycles are timed (not interpreter
start-up, imports or config loading, which are reported apart), after one warm-up cycle of each
measurement. Runs alternate which measurement goes first; ratios are taken per run (against
the steady state: slo-generator's cycle over the mean of that run's steady cycles).

slo-generator's Prometheus backend asks for ``time=<now>``, where the fixed data has no samples, so
both tools query through a small proxy on 127.0.0.1 (:class:`PinningProxy`) that sets ``time`` of
every ``/api/v1/query`` to the same instant and forwards everything else unchanged. The steady
cycles' advancing ``at`` is pinned too: the work per cycle is what they measure, and a long-window
answer kept from an earlier cycle is then exactly the one a fresh query would give.

Prometheus compacts backfilled 2-hour blocks about a minute after it starts, which would land in
the middle of a measurement; by default the data is therefore compacted once, before any timing,
and the compacted blocks are cached under ``.bench-cache/`` (``--raw-blocks`` skips that, for quick
runs). Every SLO and window where both tools give a number is compared, for sloeval's every-window
cycle and the last steady cycle of every run: SLI and burn rate must agree to a relative 1e-9,
computed from the values slo-generator's backend returns (it rounds what it reports to 6 and 1
decimals; that rounded output is checked too).

``--sloeval-worker SLO_FILE AT`` (first argument) is internal: the process of the sloeval side.
Exit codes: 0 numbers equal, 1 numbers differ (or a tool failed), 2 a precondition is missing
(Prometheus, promtool), 3 slo-generator could not be installed (e.g. PyPI unreachable).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import os
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import anyio.to_thread
import httpx
import yaml

from bench import scale_data
from devtools.loopback import LoopbackServer
from devtools.servers import PROMETHEUS_BINARY, PrometheusServer
from devtools.tsdb import PROMTOOL
from sloeval.config.selectors import Matcher, Selector
from sloeval.config.settings import Settings, load_settings
from sloeval.config.slo_file import (
    LatencyIndicator,
    RatioIndicator,
    SLOConfig,
    SLODefinition,
    UptimeIndicator,
    load_slo_file,
)
from sloeval.logs import configure_logging
from sloeval.prometheus.client import http_client_for, prometheus_client_for
from sloeval.promql.plan import DEFAULT_LONG_WINDOW_MIN
from sloeval.slo.evaluator import Evaluator

REPO = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).resolve().with_name("_slo_generator_runner.py")
SLO_GENERATOR_VERSION = "2.6.0"
SLO_GENERATOR_REQUIREMENT = f"slo-generator[prometheus]=={SLO_GENERATOR_VERSION}"
COMPARED_KINDS = ("errors", "good-ratio", "latency", "uptime")
EXCLUDED_KINDS = {
    "errors-by-endpoint": "group_by: slo-generator's Prometheus backend reads only the first series of an answer",
    "latency-by-endpoint": "group_by: slo-generator's Prometheus backend reads only the first series of an answer",
}
REL_TOLERANCE = 1e-9
# The three measurements (``CycleFigures.tool``): sloeval with a fresh evaluator per cycle (every
# window every cycle), sloeval's long-lived daemon evaluator after its first cycle, slo-generator.
FULL, STEADY, SLO_GENERATOR = "sloeval", "sloeval-steady", "slo-generator"
MIN_STEADY_CYCLES = 10  # per run; more when one refresh period takes more cycles
INSTALL_TIMEOUT = 600.0
READY_TIMEOUT = 120.0
COMPACTION_TIMEOUT = 900.0
# Google's SRE workbook thresholds per window; only slo-generator's `alert` flag depends on them.
BURN_RATE_THRESHOLDS = {300: 14.4, 1800: 6.0, 3600: 14.4, 7200: 3.0, 21600: 6.0, 86400: 3.0, 259200: 1.0}


# Variables that change either tool's behaviour (slo-generator reads DEBUG, MIN_VALID_EVENTS, ...).
_TOOL_VARIABLES = frozenset(
    {"DEBUG", "DRY_RUN", "COLORED_OUTPUT", "MIN_VALID_EVENTS", "PROMETHEUS_URL", "PROMETHEUS_HEAD", "CONFIG_PATH"}
)


class BenchError(Exception):
    """A precondition is missing (exit code 2)."""


class InstallError(Exception):
    """slo-generator could not be installed into its venv (exit code 3)."""


# --- slo-generator's venv ------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock file, so two benchmarks sharing the cache do not build the same thing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_PIP_BOUNDS = ("--timeout", "20", "--retries", "2")  # an unreachable index fails in seconds, not minutes


def slo_generator_venv(cache_root: Path) -> Path:
    return cache_root / f"slo-generator-{SLO_GENERATOR_VERSION}-py{sys.version_info.major}{sys.version_info.minor}"


def ensure_slo_generator(cache_root: Path, *, timeout: float = INSTALL_TIMEOUT) -> Path:
    """The Python of a venv holding slo-generator 2.6.0, installed from PyPI on first use.

    Raises :class:`InstallError` (with pip's last lines) when the install fails.
    """
    venv = slo_generator_venv(cache_root)
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    with _locked(cache_root / f"{venv.name}.lock"):
        if marker.exists() and marker.read_text(encoding="utf-8") == SLO_GENERATOR_REQUIREMENT and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        deadline = time.monotonic() + timeout
        steps = {
            "creating the venv": [sys.executable, "-m", "venv", str(venv)],
            "pip install": [str(python), "-m", "pip", "install", "-q", *_PIP_BOUNDS, SLO_GENERATOR_REQUIREMENT],
            "importing it": [str(python), "-c", "import slo_generator.compute, slo_generator.backends.prometheus"],
        }
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        for step, command in steps.items():
            try:
                proc = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=max(1.0, deadline - time.monotonic()),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                shutil.rmtree(venv, ignore_errors=True)
                raise InstallError(f"installing {SLO_GENERATOR_REQUIREMENT} took over {timeout:g}s") from None
            if proc.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
                raise InstallError(f"cannot install {SLO_GENERATOR_REQUIREMENT}: {step} failed: {tail}")
        marker.write_text(SLO_GENERATOR_REQUIREMENT, encoding="utf-8")
    return python


# --- the pinning proxy ---------------------------------------------------------------------------

_FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "authorization", "user-agent")
_FORM = "application/x-www-form-urlencoded"


@dataclass
class ProxyStats:
    """What went through the proxy since the last :meth:`PinningProxy.take_stats`."""

    requests: int = 0
    terms: int = 0  # expressions asked for: a tagged `label_replace(...)` term each, else 1 per query
    pinned: int = 0
    errors: int = 0
    upstream_seconds: float = 0.0  # summed over requests: waiting for Prometheus
    overhead_seconds: float = 0.0  # summed over requests: the proxy's own work around that


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], proxy: PinningProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _ProxyHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client closing its connection mid-answer is not worth a traceback here."""


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive for clients that reuse connections (httpx)
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """No access log."""

    def do_GET(self) -> None:
        self.server.proxy.handle(self, b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.proxy.handle(self, self.rfile.read(length) if length > 0 else b"")


class PinningProxy(LoopbackServer):
    """HTTP proxy on 127.0.0.1 that evaluates every instant query at one fixed time.

    ``/api/v1/query`` gets its ``time`` parameter set to ``at`` (added when missing, replaced
    when present, in the query string of a GET or the form body of a POST); every other request
    is forwarded unchanged. Requests and the time spent are counted (:meth:`take_stats`).
    """

    def __init__(self, upstream: str, at: float, *, upstream_timeout: float = 300.0) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.time_param = f"{at:.3f}"
        self._lock = threading.Lock()
        self._stats = ProxyStats()
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self._client = httpx.Client(timeout=upstream_timeout, limits=limits, headers={"Accept-Encoding": "identity"})

    thread_name = "pinning-proxy"
    poll_interval = 0.05

    def _make_server(self) -> _ProxyServer:
        return _ProxyServer(("127.0.0.1", 0), self)

    def stop(self) -> None:
        super().stop()
        self._client.close()

    close = stop

    def take_stats(self) -> ProxyStats:
        with self._lock:
            stats, self._stats = self._stats, ProxyStats()
        return stats

    def _pinned(self, encoded: str) -> str:
        pairs = [(k, v) for k, v in parse_qsl(encoded, keep_blank_values=True) if k != "time"]
        return urlencode([*pairs, ("time", self.time_param)])

    def handle(self, handler: _ProxyHandler, body: bytes) -> None:
        started = time.perf_counter()
        split = urlsplit(handler.path)
        query = split.query
        pinned = False
        terms = 0
        if split.path == "/api/v1/query":
            promql = dict(parse_qsl(query)).get("query", "")
            if handler.command == "POST":
                promql = dict(parse_qsl(body.decode("utf-8", "replace"))).get("query", promql)
            terms = max(1, promql.count("label_replace("))
            is_form = handler.headers.get("Content-Type", "").startswith(_FORM)
            if handler.command == "POST" and is_form:
                # Prometheus reads form values before the query string: pin in the body, drop it above.
                body = self._pinned(body.decode("utf-8")).encode("utf-8")
                query = urlencode([(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "time"])
            else:
                query = self._pinned(query)
            pinned = True
        headers = {k: v for k, v in handler.headers.items() if k.lower() in _FORWARDED_REQUEST_HEADERS}
        target = self.upstream + split.path + (f"?{query}" if query else "")
        upstream_started = time.perf_counter()
        try:
            response = self._client.request(handler.command, target, content=body or None, headers=headers)
            status, content = response.status_code, response.content
            content_type = response.headers.get("Content-Type", "application/octet-stream")
            failed = False
        except httpx.HTTPError as exc:
            status, content, content_type = 502, f"upstream: {type(exc).__name__}\n".encode(), "text/plain"
            failed = True
        upstream_seconds = time.perf_counter() - upstream_started
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(content)))
            handler.end_headers()
            handler.wfile.write(content)
        except OSError:
            handler.close_connection = True
        total = time.perf_counter() - started
        with self._lock:
            self._stats.requests += 1
            self._stats.pinned += pinned
            self._stats.terms += terms
            self._stats.errors += failed or status >= 400
            self._stats.upstream_seconds += upstream_seconds
            self._stats.overhead_seconds += total - upstream_seconds


# --- SLOs for both tools -------------------------------------------------------------------------


def compared_entries(count: int, route_count: int, kinds: Sequence[str] = COMPARED_KINDS) -> list[dict[str, object]]:
    """The first ``count`` SLOs of :func:`scale_data.slo_entries` of these kinds (all: what both express)."""
    wanted = math.ceil(count * len(scale_data.KINDS) / len(kinds)) + len(scale_data.KINDS)
    entries = [e for e in scale_data.slo_entries(wanted, route_count) if kind_of(e) in kinds]
    return entries[:count]


def kind_of(entry: dict[str, object]) -> str:
    return str(entry["name"]).rsplit("-", 1)[0]


def sloeval_document(entries: Sequence[dict[str, object]]) -> str:
    """A native SLO file (as :func:`scale_data.generate_slo_file` writes it) with these SLOs."""
    document = {"service": "samokoder-api", "period": "30d", "notify": {"routes": []}, "slos": list(entries)}
    return json.dumps(document, indent=1)


def _negated(matcher: Matcher) -> Matcher:
    opposite = {"=": "!=", "!=": "=", "=~": "!~", "!~": "=~"}
    return Matcher(matcher.name, opposite[matcher.op], matcher.value)  # type: ignore[arg-type]


def _complement(bad: Selector, total: Selector) -> Selector:
    """The good events of a bad/total SLO: the total with the one matcher that makes "bad" negated."""
    extra = [m for m in bad.matchers if m not in total.matchers]
    if bad.metric != total.metric or len(extra) != 1:
        raise ValueError(f"cannot derive good events from bad {bad} and total {total}")
    return total.with_matcher(_negated(extra[0]))


def _braced(selector: Selector) -> str:
    text = selector.render()
    if not text.endswith("}"):
        text += "{}"
    return text


def slo_generator_spec(slo: SLODefinition) -> dict[str, Any]:
    """slo-generator's ``spec`` for one sloeval SLO: the method and filters a user would write."""
    indicator = slo.indicator
    sli: dict[str, Any]
    if isinstance(indicator, RatioIndicator) and indicator.bad is not None:
        method = "good_bad_ratio"
        sli = {
            "filter_good": _complement(indicator.bad, indicator.total).render(),
            "filter_bad": indicator.bad.render(),
        }
    elif isinstance(indicator, RatioIndicator) and indicator.good is not None:
        method = "good_bad_ratio"
        sli = {"filter_good": indicator.good.render(), "filter_valid": indicator.total.render()}
    elif isinstance(indicator, LatencyIndicator):
        method = "distribution_cut"
        assert indicator.histogram.metric is not None
        bucket = indicator.histogram.with_metric(f"{indicator.histogram.metric}_bucket")
        # The `le` value exactly as the exporter writes it (slo-generator matches it with `=`).
        sli = {"expression": _braced(bucket), "threshold_bucket": repr(float(indicator.threshold_seconds))}
    elif isinstance(indicator, UptimeIndicator):
        method = "query_sli"
        selector = indicator.selector.render()
        sli = {"expression": f"sum(sum_over_time({selector}[window])) / sum(count_over_time({selector}[window]))"}
    else:
        raise ValueError(f"slo-generator has no counterpart for SLO {slo.name} ({slo.kind})")
    if slo.group_by:
        raise ValueError(f"SLO {slo.name} is grouped by {slo.group_by}; slo-generator cannot group")
    return {
        "description": f"{slo.name} (sloeval {slo.kind} SLO)",
        "backend": "prometheus",
        "method": method,
        "exporters": [],
        "service_level_indicator": sli,
        "goal": slo.objective,
    }


def slo_generator_documents(config: SLOConfig, proxy_url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """slo-generator's shared config (backend, one policy step per window) and one SLO config per SLO."""
    windows = sorted({(w, name) for slo in config.slos for w, name in zip(slo.windows, slo.window_names, strict=True)})
    if any(slo.windows != config.slos[0].windows for slo in config.slos):
        raise ValueError("every SLO must have the same windows: slo-generator's policy steps are shared")
    steps = [
        {
            "name": name,
            "window": seconds,
            "burn_rate_threshold": BURN_RATE_THRESHOLDS.get(seconds, 1.0),
            "alert": False,
            "message_alert": "burning too fast",
            "message_ok": "within budget",
        }
        for seconds, name in windows
    ]
    shared = {
        "backends": {"prometheus": {"url": proxy_url}},
        "exporters": {},
        "error_budget_policies": {"default": {"steps": steps}},
    }
    slos = [
        {
            "apiVersion": "sre.google.com/v2",
            "kind": "ServiceLevelObjective",
            "metadata": {
                "name": slo.name,
                "labels": {"service_name": slo.service, "feature_name": "api", "slo_name": slo.name},
            },
            "spec": slo_generator_spec(slo),
        }
        for slo in config.slos
    ]
    return shared, slos


# --- data -----------------------------------------------------------------------------------------


def _metric_values(url: str, names: Sequence[str]) -> dict[str, float]:
    """Unlabelled samples of Prometheus's own ``/metrics`` (e.g. ``process_cpu_seconds_total``)."""
    text = httpx.get(f"{url}/metrics", timeout=10.0).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name in names:
            out[name] = float(rest.split()[0])
    return out


def _prometheus_version() -> str:
    proc = subprocess.run([PROMETHEUS_BINARY, "--version"], capture_output=True, text=True, check=False, timeout=30)
    return (proc.stdout or proc.stderr).splitlines()[0] if (proc.stdout or proc.stderr) else "unknown"


def _wait_for_compaction(url: str, initial_blocks: float, *, timeout: float = COMPACTION_TIMEOUT) -> float:
    """Wait until Prometheus compacted the backfilled blocks (its first compaction runs ~1 min in)."""
    names = ("prometheus_tsdb_compactions_triggered_total", "prometheus_tsdb_compactions_total")
    deadline = time.monotonic() + timeout
    last: tuple[float, float] | None = None
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        values = _metric_values(url, [*names, "prometheus_tsdb_blocks_loaded"])
        state = (values.get(names[1], 0.0), values.get("prometheus_tsdb_blocks_loaded", initial_blocks))
        if state != last:
            last, quiet_since = state, time.monotonic()
        if values.get(names[0], 0.0) >= 1 and time.monotonic() - quiet_since >= 10.0:
            return state[1]
        time.sleep(0.5)
    raise BenchError(f"Prometheus did not finish compacting the backfilled blocks within {timeout:g}s")


def prepare_data(work: Path, routes: int, days: float, cache_root: Path, *, compact: bool) -> Path:
    """A Prometheus data dir for the scale data set: compacted once and cached, unless ``compact`` is off."""
    data = work / "prometheus-data"
    if not compact:
        return scale_data.backfill(data, routes, days, cache_root=cache_root)
    key_parts = [scale_data.CACHE_VERSION, routes, days, scale_data.DATA_END, scale_data.STEP, _prometheus_version()]
    key = hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:12]
    cached = cache_root / f"sgcompare-compacted-{routes}r-{days:g}d-{key}"
    with _locked(cache_root / f"{cached.name}.lock"):
        if not (cached / "complete").exists():
            shutil.rmtree(cached, ignore_errors=True)
            raw = scale_data.backfill(work / "raw-blocks", routes, days, cache_root=cache_root)
            initial = sum(1 for p in raw.iterdir() if (p / "meta.json").exists())
            print(f"compacting {initial} backfilled blocks once (cached for later runs) ...", file=sys.stderr)
            with PrometheusServer(raw) as prometheus:
                blocks = _wait_for_compaction(prometheus.url, initial)
            (cached / "data").mkdir(parents=True)
            for block in raw.iterdir():
                if (block / "meta.json").exists():
                    shutil.copytree(block, cached / "data" / block.name)
            shutil.rmtree(raw, ignore_errors=True)
            (cached / "complete").write_text(f"{initial} blocks compacted to {blocks:g}\n", encoding="utf-8")
    shutil.copytree(cached / "data", data)
    return data


# --- the tools' processes ------------------------------------------------------------------------


class Worker:
    """One tool in its own process, answering ``cycle`` lines with one JSON line each."""

    def __init__(self, name: str, command: list[str], *, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.spawned = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=REPO,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"{name}-reader", daemon=True)
        self._reader.start()
        self.ready: dict[str, Any] = {}
        self.ready_seconds = 0.0
        self.received = 0.0  # when the last line arrived

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put((time.perf_counter(), line))
        self._lines.put((time.perf_counter(), None))

    def _next(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            self.received, line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no {what} within {timeout:g}s\n{self.log_tail()}") from None
        if line is None:
            raise RuntimeError(f"{self.name} exited ({self.process.poll()}) before {what}\n{self.log_tail()}")
        document: dict[str, Any] = json.loads(line)
        return document

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        self.ready = self._next(timeout, "ready line")
        self.ready_seconds = self.received - self.spawned

    def cycle(self, timeout: float, command: str = "cycle") -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command}\n")
        self.process.stdin.flush()
        answer = self._next(timeout, "cycle result")
        if answer.get("event") != "cycle":
            raise RuntimeError(f"{self.name}: {command!r} answered {answer}\n{self.log_tail()}")
        return answer

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def sloeval_worker(slo_file: Path, at: float) -> int:
    """The sloeval side (``--sloeval-worker``): ``Evaluator`` built as ``sloeval eval`` builds it, or
    kept across cycles as ``sloeval run`` keeps it.

    Commands on stdin, one JSON line each on stdout: ``cycle`` evaluates with a fresh evaluator at
    ``at``; ``steady-start`` makes the long-lived daemon evaluator and its first cycle at ``at``;
    ``steady`` is that evaluator's next cycle, ``eval_interval`` seconds after the previous one.
    """
    settings = load_settings(slo_file=slo_file)
    configure_logging(settings.log_level, settings.log_format)
    config = load_slo_file(settings.slo_file, min_window=settings.eval_interval)
    return anyio.run(_sloeval_serve, settings, config, at)


async def _sloeval_serve(settings: Settings, config: SLOConfig, at: float) -> int:
    async with http_client_for(settings) as http:
        client = prometheus_client_for(settings, http)
        _emit(
            {
                "event": "ready",
                "slos": len(config.slos),
                "eval_interval": settings.eval_interval,
                "long_window_refresh": settings.long_window_refresh,
                "long_window_min": settings.long_window_min,
            }
        )
        daemon: Evaluator | None = None
        steady_cycle = 0
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                return 0
            command = line.strip()
            if command == "cycle":
                # A new evaluator per cycle, built before the clock starts: every window of every SLO
                # is asked of Prometheus, whatever the evaluator might keep from an earlier cycle.
                evaluator = Evaluator(config.slos, client, concurrency=settings.query_concurrency)
                cycle_at, index = at, 0
            elif command == "steady-start" or (command == "steady" and daemon is not None):
                if command == "steady-start":
                    # The daemon's evaluator (sloeval.daemon): long windows kept between cycles.
                    daemon = Evaluator(
                        config.slos,
                        client,
                        concurrency=settings.query_concurrency,
                        long_window_refresh=settings.long_window_refresh,
                        long_window_min=settings.long_window_min,
                    )
                    steady_cycle = 0
                else:
                    steady_cycle += 1
                assert daemon is not None
                evaluator, index = daemon, steady_cycle
                cycle_at = at + steady_cycle * settings.eval_interval
            else:
                _emit({"event": "error", "message": f"unknown or premature command {command!r}"})
                continue
            wall_started, cpu_started = time.perf_counter(), time.process_time()
            snapshot = await evaluator.evaluate(cycle_at)
            wall, cpu = time.perf_counter() - wall_started, time.process_time() - cpu_started
            results: dict[str, Any] = {}
            for status in snapshot.statuses:
                windows: dict[str, Any] = {}
                for result in status.results[:1]:  # ungrouped SLOs: one result, no labels
                    for name in status.slo.window_names:
                        windows[name] = {"sli": result.sli.get(name), "burn_rate": result.burn_rate.get(name)}
                results[status.slo.name] = {"error": status.error, "windows": windows}
            _emit(
                {
                    "event": "cycle",
                    "cycle": index,
                    "at": cycle_at,
                    "wall_seconds": wall,
                    "cpu_seconds": cpu,
                    "results": results,
                }
            )


def _emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


# --- comparing the numbers -----------------------------------------------------------------------


def relative_difference(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


@dataclass
class Comparison:
    pairs: int = 0
    pairs_by_kind: dict[str, int] = field(default_factory=dict)
    max_sli_difference: float = 0.0
    max_burn_rate_difference: float = 0.0
    worst: str = ""
    rounded_agree: int = 0
    only_sloeval: list[str] = field(default_factory=list)
    only_slo_generator: list[str] = field(default_factory=list)
    neither: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        """Numbers from both for every kind, and equal wherever both have one."""
        every_kind = all(n > 0 for n in self.pairs_by_kind.values())
        return self.pairs > 0 and every_kind and not self.failures

    def merge(self, other: Comparison, run: int) -> None:
        """Fold a later run in: the worst differences, and whatever did not agree in it."""
        if other.max_sli_difference > self.max_sli_difference:
            self.max_sli_difference = other.max_sli_difference
        if other.max_burn_rate_difference > self.max_burn_rate_difference:
            self.max_burn_rate_difference = other.max_burn_rate_difference
        if other.pairs != self.pairs or other.rounded_agree != self.rounded_agree:
            self.failures.append(f"run {run}: {other.pairs} pairs, {other.rounded_agree} agreeing (run 1 differs)")
        self.failures += [f"run {run}: {f}" for f in other.failures]
        for mine, theirs in (
            (self.only_sloeval, other.only_sloeval),
            (self.only_slo_generator, other.only_slo_generator),
            (self.neither, other.neither),
        ):
            mine += [label for label in theirs if label not in mine]


def _slo_generator_sli(entry: dict[str, Any]) -> float:
    """The SLI slo-generator computes before rounding, from what its backend returned."""
    raw = entry.get("raw")
    if isinstance(raw, list):
        good, bad = (0.0 if v == -1 else v for v in raw)  # NO_DATA counts as 0, as in SLOReport.get_sli
        return float(good / (good + bad))
    if isinstance(raw, int | float):
        return float(raw)
    raise ValueError(f"no backend value recorded: {entry}")


def compare(
    sloeval: dict[str, Any],
    slo_generator: dict[str, Any],
    kinds: Mapping[str, str],
    windows: Mapping[str, Sequence[str]],
) -> Comparison:
    """Every SLO x window: both numbers, or a note of which tool has none."""
    out = Comparison(pairs_by_kind=dict.fromkeys(sorted(set(kinds.values())), 0))
    for name, kind in kinds.items():
        ours = sloeval.get(name, {})
        theirs = slo_generator.get(name, {})
        if ours.get("error"):
            out.failures.append(f"{name}: sloeval: {ours['error']}")
        for window in windows[name]:
            label = f"{name} {window}"
            mine = ours.get("windows", {}).get(window, {})
            other = theirs.get(window, {})
            sli, burn = mine.get("sli"), mine.get("burn_rate")
            valid = bool(other.get("valid"))
            if sli is None and not valid:
                out.neither.append(label)
                continue
            if sli is None:
                out.only_slo_generator.append(label)
                continue
            if not valid:
                out.only_sloeval.append(f"{label} ({'; '.join(str(e) for e in other.get('errors', []))[:200]})")
                continue
            their_sli = _slo_generator_sli(other)
            their_burn = (1.0 - their_sli) / (1.0 - float(other["goal"]))
            d_sli, d_burn = relative_difference(sli, their_sli), relative_difference(burn, their_burn)
            out.pairs += 1
            out.pairs_by_kind[kind] += 1
            if max(d_sli, d_burn) > max(out.max_sli_difference, out.max_burn_rate_difference):
                out.worst = f"{label}: sloeval {sli!r}/{burn!r}, slo-generator {their_sli!r}/{their_burn!r}"
            out.max_sli_difference = max(out.max_sli_difference, d_sli)
            out.max_burn_rate_difference = max(out.max_burn_rate_difference, d_burn)
            if d_sli > REL_TOLERANCE or d_burn > REL_TOLERANCE:
                out.failures.append(
                    f"{label}: SLI {sli!r} vs {their_sli!r} ({d_sli:.2e}), burn rate {burn!r} vs {their_burn!r}"
                )
            # slo-generator's own output: SLI rounded to 6 decimals, burn rate (from that SLI) to 1.
            burn_slack = 0.05 + 1e-6 / (1.0 - float(other["goal"])) + 1e-9
            if abs(round(sli, 6) - other["sli"]) <= 1.0000001e-6 and abs(burn - other["burn_rate"]) <= burn_slack:
                out.rounded_agree += 1
            else:
                out.failures.append(
                    f"{label}: reported SLI {other['sli']!r} / burn rate {other['burn_rate']!r} "
                    f"vs sloeval {sli!r} / {burn!r}"
                )
    return out


# --- running it ----------------------------------------------------------------------------------


@dataclass
class CycleFigures:
    tool: str  # FULL, STEADY or SLO_GENERATOR
    run: int  # 0: warm-up (and the steady evaluator's first cycle)
    wall_seconds: float
    cpu_seconds: float
    prometheus_cpu_seconds: float
    proxy_cpu_seconds: float
    requests: int
    terms: int
    proxy_overhead_seconds: float
    proxy_errors: int
    cycle: int = 0  # STEADY: cycles since the daemon evaluator's first one
    at: float = 0.0  # the evaluation time sloeval asked for (the proxy pins Prometheus's)


@dataclass
class Options:
    slos: int = 100
    runs: int = 5
    days: float = 30.0
    routes: int = 50
    at: float = float(scale_data.DATA_END)
    cache_dir: Path = REPO / ".bench-cache"
    kinds: tuple[str, ...] = COMPARED_KINDS
    compact: bool = True
    max_minutes: float = 30.0
    cycle_timeout: float = 900.0


@dataclass
class Outcome:
    options: dict[str, Any]
    slos_by_kind: dict[str, int]
    excluded_kinds: dict[str, str]
    windows: list[str]
    runs_done: int
    runs_note: str
    cycles: list[CycleFigures]
    warmup: dict[str, float]
    ready_seconds: dict[str, float]
    slo_generator_import_seconds: float
    comparison: Comparison  # sloeval's every-window cycle against slo-generator, every run
    compactions_during_runs: float
    prometheus_blocks: float
    eval_interval: float  # the daemon's, between steady cycles
    long_window_refresh: float
    long_windows: list[str]  # windows the steady evaluator refreshes every long_window_refresh
    steady_cycles_per_run: int
    steady_first_cycle: CycleFigures  # the daemon evaluator's first cycle: every window, not timed as steady
    steady_comparison: Comparison  # the last steady cycle of every run against slo-generator
    total_seconds: float = 0.0

    def series(self, tool: str, attribute: str) -> list[float]:
        return [float(getattr(c, attribute)) for c in self.cycles if c.tool == tool]

    def per_run(self, tool: str, attribute: str) -> list[float]:
        """One figure per run: the run's cycle, or the mean of its cycles (STEADY: one refresh period)."""
        by_run: dict[int, list[float]] = {}
        for c in self.cycles:
            if c.tool == tool:
                by_run.setdefault(c.run, []).append(float(getattr(c, attribute)))
        return [statistics.fmean(values) for _, values in sorted(by_run.items())]

    def ratios(self, tool: str = FULL, attribute: str = "wall_seconds") -> list[float]:
        """slo-generator's figure over ``tool``'s, per run (STEADY: over the mean of the run's cycles)."""
        ours, theirs = self.per_run(tool, attribute), self.per_run(SLO_GENERATOR, attribute)
        return [t / o for o, t in zip(ours, theirs, strict=True)]

    @property
    def equal(self) -> bool:
        return self.comparison.equal and self.steady_comparison.equal


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _check_binaries() -> None:
    for binary in (PROMETHEUS_BINARY, PROMTOOL):
        if not Path(binary).exists():
            raise BenchError(f"{binary} is missing: run scripts/install-system-deps.sh prometheus")


def run(options: Options, python: Path) -> Outcome:
    """Set everything up on loopback, measure, compare; cleans up after itself."""
    started = time.perf_counter()
    _check_binaries()
    entries = compared_entries(options.slos, options.routes, options.kinds)
    with tempfile.TemporaryDirectory(prefix="sloeval-sgcompare-") as tmp:
        work = Path(tmp)
        slo_file = work / "slos.yaml"
        slo_file.write_text(sloeval_document(entries), encoding="utf-8")
        config = load_slo_file(slo_file)
        data = prepare_data(work, options.routes, options.days, options.cache_dir, compact=options.compact)
        with PrometheusServer(data) as prometheus, PinningProxy(prometheus.url, options.at) as proxy:
            shared, slo_configs = slo_generator_documents(config, proxy.url)
            (work / "slo-generator").mkdir()
            (work / "slo-generator" / "config.yaml").write_text(yaml.safe_dump(shared), encoding="utf-8")
            for document in slo_configs:
                path = work / "slo-generator" / f"slo-{document['metadata']['name']}.yaml"
                path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
            env = {k: v for k, v in os.environ.items() if not k.startswith("SLOEVAL_") and k not in _TOOL_VARIABLES}
            sloeval_env = {**env, "SLOEVAL_PROMETHEUS_URL": proxy.url, "SLOEVAL_LOG_LEVEL": "warning"}
            workers: dict[str, Worker] = {}
            try:
                workers[FULL] = Worker(
                    "sloeval",
                    [
                        sys.executable,
                        "-m",
                        "bench.slo_generator_compare",
                        "--sloeval-worker",
                        str(slo_file),
                        repr(options.at),
                    ],
                    env=sloeval_env,
                    log_path=work / "sloeval.log",
                )
                workers[SLO_GENERATOR] = Worker(
                    "slo-generator",
                    [
                        str(python),
                        str(RUNNER),
                        "--slo-dir",
                        str(work / "slo-generator"),
                        "--config",
                        str(work / "slo-generator" / "config.yaml"),
                        "--at",
                        repr(options.at),
                    ],
                    env=env,
                    log_path=work / "slo-generator.log",
                )
                return _measure(options, config, entries, prometheus.url, proxy, workers, started)
            finally:
                for worker in workers.values():
                    worker.close()


def _measure(
    options: Options,
    config: SLOConfig,
    entries: Sequence[dict[str, object]],
    prometheus_url: str,
    proxy: PinningProxy,
    workers: dict[str, Worker],
    started: float,
) -> Outcome:
    for worker in workers.values():
        worker.wait_ready()
    cpu_name, compactions_name, blocks_name = (
        "process_cpu_seconds_total",
        "prometheus_tsdb_compactions_total",
        "prometheus_tsdb_blocks_loaded",
    )

    def one_cycle(tool: str, run_index: int, command: str = "cycle") -> tuple[CycleFigures, dict[str, Any]]:
        proxy.take_stats()
        before = _metric_values(prometheus_url, [cpu_name])
        proxy_cpu = _cpu_self()
        answer = workers[SLO_GENERATOR if tool == SLO_GENERATOR else FULL].cycle(options.cycle_timeout, command)
        proxy_cpu = _cpu_self() - proxy_cpu
        after = _metric_values(prometheus_url, [cpu_name])
        stats = proxy.take_stats()
        figures = CycleFigures(
            tool=tool,
            run=run_index,
            wall_seconds=float(answer["wall_seconds"]),
            cpu_seconds=float(answer["cpu_seconds"]),
            prometheus_cpu_seconds=after[cpu_name] - before[cpu_name],
            proxy_cpu_seconds=proxy_cpu,
            requests=stats.requests,
            terms=stats.terms,
            proxy_overhead_seconds=stats.overhead_seconds,
            proxy_errors=stats.errors,
            cycle=int(answer.get("cycle", 0)),
            at=float(answer.get("at", options.at)),
        )
        return figures, answer["results"]

    interval = float(workers[FULL].ready.get("eval_interval", 30.0))
    refresh = float(workers[FULL].ready.get("long_window_refresh", 0.0))
    long_window_min = float(workers[FULL].ready.get("long_window_min", DEFAULT_LONG_WINDOW_MIN))
    # At least one whole refresh period: every long-window expression is refreshed once in any such
    # stretch of consecutive cycles, so the refreshes weigh in as they do in the daemon.
    steady_cycles = max(MIN_STEADY_CYCLES, math.ceil(refresh / interval - 1e-9)) if refresh > 0 else MIN_STEADY_CYCLES
    long_windows = [
        name
        for seconds, name in zip(config.slos[0].windows, config.slos[0].window_names, strict=True)
        if refresh > 0 and seconds >= long_window_min
    ]

    def steady_run(run_index: int) -> tuple[list[CycleFigures], dict[str, Any]]:
        figures: list[CycleFigures] = []
        results: dict[str, Any] = {}
        for _ in range(steady_cycles):
            one, results = one_cycle(STEADY, run_index, "steady")
            figures.append(one)
        return figures, results  # the results of the last cycle

    warmup: dict[str, float] = {}
    for tool in (FULL, SLO_GENERATOR):
        figures, _ = one_cycle(tool, 0)
        warmup[tool] = figures.wall_seconds
        print(f"warm-up {tool}: {figures.wall_seconds:.2f} s", file=sys.stderr)
    steady_first, _ = one_cycle(STEADY, 0, "steady-start")
    print(
        f"daemon evaluator, first cycle (every window): {steady_first.wall_seconds:.2f} s, "
        f"{steady_first.requests} queries",
        file=sys.stderr,
    )
    figures, _ = one_cycle(STEADY, 0, "steady")
    warmup[STEADY] = figures.wall_seconds
    print(f"warm-up {STEADY}: {figures.wall_seconds:.3f} s, {figures.requests} queries", file=sys.stderr)
    runs, note = options.runs, ""
    per_run = warmup[FULL] + warmup[SLO_GENERATOR] + steady_cycles * warmup[STEADY]
    budget = options.max_minutes * 60 - (time.perf_counter() - started)
    if runs > 1 and per_run * runs > budget:
        runs = max(1, int(budget // per_run))
        note = (
            f"runs reduced from {options.runs} to {runs}: one run of all three takes about {per_run:.0f} s "
            f"and --max-minutes is {options.max_minutes:g}"
        )
        print(note, file=sys.stderr)

    kinds = {str(e["name"]): kind_of(e) for e in entries}
    windows = {slo.name: slo.window_names for slo in config.slos}
    compactions_before = _metric_values(prometheus_url, [compactions_name]).get(compactions_name, 0.0)
    cycles: list[CycleFigures] = []
    comparison: Comparison | None = None
    steady_comparison: Comparison | None = None
    measurements = (FULL, STEADY, SLO_GENERATOR)
    for run_index in range(1, runs + 1):
        order = measurements if run_index % 2 else measurements[::-1]
        results: dict[str, dict[str, Any]] = {}
        for tool in order:
            if tool == STEADY:
                steady, results[tool] = steady_run(run_index)
                cycles += steady
                walls = [f.wall_seconds for f in steady]
                print(
                    f"run {run_index}/{runs} {tool}: {len(steady)} cycles, median {statistics.median(walls):.3f} s "
                    f"({min(walls):.3f} to {max(walls):.3f}) wall, {sum(f.requests for f in steady)} queries",
                    file=sys.stderr,
                )
                continue
            figures, results[tool] = one_cycle(tool, run_index)
            cycles.append(figures)
            print(
                f"run {run_index}/{runs} {tool}: {figures.wall_seconds:.3f} s wall, {figures.requests} queries",
                file=sys.stderr,
            )
        this_run = compare(results[FULL], results[SLO_GENERATOR], kinds, windows)
        this_steady = compare(results[STEADY], results[SLO_GENERATOR], kinds, windows)
        if comparison is None or steady_comparison is None:
            comparison, steady_comparison = this_run, this_steady
        else:
            comparison.merge(this_run, run_index)
            steady_comparison.merge(this_steady, run_index)
    after = _metric_values(prometheus_url, [compactions_name, blocks_name])
    slos_by_kind: dict[str, int] = {}
    for kind in kinds.values():
        slos_by_kind[kind] = slos_by_kind.get(kind, 0) + 1
    assert comparison is not None  # at least one run
    assert steady_comparison is not None
    return Outcome(
        options={k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        slos_by_kind=slos_by_kind,
        excluded_kinds=EXCLUDED_KINDS,
        windows=list(config.slos[0].window_names),
        runs_done=runs,
        runs_note=note,
        cycles=cycles,
        warmup=warmup,
        ready_seconds={name: w.ready_seconds for name, w in workers.items()},
        slo_generator_import_seconds=float(workers[SLO_GENERATOR].ready.get("import_seconds", 0.0)),
        comparison=comparison,
        compactions_during_runs=after.get(compactions_name, 0.0) - compactions_before,
        prometheus_blocks=after.get(blocks_name, 0.0),
        eval_interval=interval,
        long_window_refresh=refresh,
        long_windows=long_windows,
        steady_cycles_per_run=steady_cycles,
        steady_first_cycle=steady_first,
        steady_comparison=steady_comparison,
    )


# --- reporting -----------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    if min(values) == max(values):
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))} to {fmt(max(values))})"


def _ratio(value: float) -> str:
    return f"{value:.1f}x" if value < 10 else f"{value:.0f}x"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def render(outcome: Outcome) -> str:
    o = outcome
    slos = sum(o.slos_by_kind.values())
    opts = o.options
    interval, refresh = f"{o.eval_interval:g} s", f"{o.long_window_refresh:g} s"
    steady_cycles = len(o.series(STEADY, "wall_seconds"))
    labels = {
        STEADY: f"**sloeval daemon, steady state**: one evaluator, a cycle every {interval}, "
        f"{' '.join(o.long_windows) or 'no window'} re-evaluated every {refresh} "
        f"({steady_cycles} cycles: {o.steady_cycles_per_run} per run)",
        FULL: "sloeval, every window every cycle (the daemon's first cycle; `sloeval eval`)",
        SLO_GENERATOR: f"slo-generator {SLO_GENERATOR_VERSION} (every window every cycle)",
    }
    lines = [
        f"### sloeval vs slo-generator {SLO_GENERATOR_VERSION}: {slos} SLOs x {len(o.windows)} windows, "
        f"{opts['days']:g} days x {opts['routes']} routes, {o.runs_done} runs",
        "",
        "| per cycle: median (min to max) | wall time | CPU of the tool's process | Prometheus CPU "
        "| queries sent | PromQL expressions | slo-generator / this, wall time (per run) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for tool in (STEADY, FULL, SLO_GENERATOR):
        wall = _spread(o.series(tool, "wall_seconds"), _seconds)
        if tool == STEADY:
            wall += f"; mean {_seconds(statistics.fmean(o.series(tool, 'wall_seconds')))}"
        cells = [
            wall,
            _spread(o.series(tool, "cpu_seconds"), _seconds),
            _spread(o.series(tool, "prometheus_cpu_seconds"), _seconds),
            _spread(o.series(tool, "requests"), _count),
            _spread(o.series(tool, "terms"), _count),
            "" if tool == SLO_GENERATOR else _spread(o.ratios(tool), _ratio),
        ]
        if tool == STEADY:
            cells[-1] = f"**{cells[-1]}**"
        lines.append(f"| {labels[tool]} | {' | '.join(cells)} |")
    steady, full = o.ratios(STEADY), o.ratios(FULL)
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(o.slos_by_kind.items()))
    verdict = "met" if steady and statistics.median(steady) >= 10 else "NOT met"
    first = o.steady_first_cycle
    if o.long_windows:
        shortest_long = o.long_windows[0]
        cadence = (
            f"Windows shorter than {shortest_long} are evaluated every cycle, {' '.join(o.long_windows)} once "
            f"every {refresh} (each window at a phase of its own), so those numbers are up to {refresh} old "
            "(SLOEVAL_LONG_WINDOW_REFRESH; 0 evaluates every window every cycle)."
        )
    else:
        cadence = f"With long_window_refresh {refresh} no window is long: every window is evaluated every cycle."
    lines += [
        "",
        f"- Per cycle: the steady-state row is what the daemon (`sloeval run`) does every {interval}, so it "
        f'answers the "per cycle" question; the every-window row is the daemon\'s first cycle after it '
        f"starts and what `sloeval eval` does. {cadence} A run's {o.steady_cycles_per_run} steady cycles "
        f"span {o.steady_cycles_per_run * o.eval_interval:g} s of simulated time (run back to back), at least "
        f"one refresh period, so the long windows' refreshes are in them as often as in the daemon.",
        f"- Speed: slo-generator's cycle takes {_spread(steady, _ratio)} the wall time of the daemon's "
        f"steady-state cycle (against the mean of each run's steady cycles; median and range over "
        f"{len(steady)} paired runs) and {_spread(full, _ratio)} that of sloeval's every-window cycle; "
        f"target >= 10x per cycle: {verdict}.",
    ]
    if all(v > 0 for v in [*o.per_run(STEADY, "cpu_seconds"), *o.per_run(FULL, "cpu_seconds")]):
        lines.append(
            f"- CPU of the tool's process, slo-generator / sloeval per run: steady state "
            f"{_spread(o.ratios(STEADY, 'cpu_seconds'), _ratio)}, every window "
            f"{_spread(o.ratios(FULL, 'cpu_seconds'), _ratio)}."
        )
    lines += [
        f"- SLOs: {kinds}; windows {' '.join(o.windows)}; both query Prometheus through the pinning proxy "
        f"(time={scale_data.DATA_END}, also for the steady cycles' advancing time); {o.prometheus_blocks:g} "
        f"TSDB blocks, {o.compactions_during_runs:g} compactions during the runs.",
        f"- Left out: {', '.join(o.excluded_kinds)} (slo-generator cannot group by a label).",
    ]
    for title, c in (
        ("every-window cycle of every run", o.comparison),
        ("last steady-state cycle of every run", o.steady_comparison),
    ):
        lines.append(
            f"- Numbers, sloeval's {title}: {c.pairs} SLO x window pairs compared "
            f"({', '.join(f'{k} {n}' for k, n in c.pairs_by_kind.items())}); max relative difference "
            f"SLI {c.max_sli_difference:.1e}, burn rate {c.max_burn_rate_difference:.1e} "
            f"(limit {REL_TOLERANCE:g}); {c.rounded_agree}/{c.pairs} agree with slo-generator's rounded "
            f"output (SLI 6, burn rate 1 decimal)."
        )
        one_sided = c.only_sloeval + c.only_slo_generator
        if one_sided or c.neither:
            example = f" (e.g. {one_sided[0]})" if one_sided else ""
            lines.append(
                f"- One-sided ({title}): sloeval only {len(c.only_sloeval)}, "
                f"slo-generator only {len(c.only_slo_generator)}, neither {len(c.neither)}{example}"
            )
        if c.failures:
            lines.append(f"- **{len(c.failures)} differences** ({title}), first: {c.failures[0]}")
    proxy_time = ", ".join(
        f"{name} {_spread(o.series(tool, 'proxy_overhead_seconds'), _seconds)}"
        for tool, name in ((STEADY, "steady state"), (FULL, "every window"), (SLO_GENERATOR, "slo-generator"))
    )
    lines += [
        f"- The proxy's own time around Prometheus, summed over a cycle's queries: {proxy_time}.",
        f"- Start-up to ready (not in any cycle): sloeval {_seconds(o.ready_seconds[FULL])}, slo-generator "
        f"{_seconds(o.ready_seconds[SLO_GENERATOR])} (imports {_seconds(o.slo_generator_import_seconds)}).",
    ]
    if o.runs_note:
        lines.append(f"- Note: {o.runs_note}.")
    lines.append(
        f"- Total benchmark time {o.total_seconds:.0f} s (warm-up cycles: sloeval every window "
        f"{_seconds(o.warmup[FULL])}, slo-generator {_seconds(o.warmup[SLO_GENERATOR])}; the daemon "
        f"evaluator's first cycle {_seconds(first.wall_seconds)} with {first.requests:,} queries, then one "
        f"steady warm-up cycle {_seconds(o.warmup[STEADY])})."
    )
    return "\n".join(lines)


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    document = asdict(outcome)
    document["ratios"] = outcome.ratios(FULL)
    document["steady_ratios"] = outcome.ratios(STEADY)
    document["equal"] = outcome.equal
    for key, comparison in (("comparison", outcome.comparison), ("steady_comparison", outcome.steady_comparison)):
        document[key]["equal"] = comparison.equal
        document[key]["failures"] = comparison.failures[:50]
    return document


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--sloeval-worker"]:
        return sloeval_worker(Path(args_list[1]), float(args_list[2]))
    parser = argparse.ArgumentParser(prog="python -m bench.slo_generator_compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--slos", type=int, default=100, help="SLOs of the compared kinds (default 100)")
    parser.add_argument("--runs", type=int, default=5, help="measured cycles of each tool (default 5)")
    parser.add_argument("--days", type=float, default=30, help="days of data (default 30)")
    parser.add_argument("--routes", type=int, default=50, help="API routes in the data set (default 50)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument(
        "--kinds",
        default=",".join(COMPARED_KINDS),
        help=f"comma list of SLO kinds (default: all both tools express, {','.join(COMPARED_KINDS)})",
    )
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".bench-cache", help="default .bench-cache")
    parser.add_argument(
        "--raw-blocks",
        action="store_true",
        help="serve the backfilled blocks as they are instead of compacting them first (quick runs; "
        "Prometheus may then compact during the measurement)",
    )
    parser.add_argument(
        "--max-minutes", type=float, default=30.0, help="fewer runs (never fewer SLOs) when they would take longer"
    )
    args = parser.parse_args(args_list)
    if args.slos < 1 or args.runs < 1 or args.days <= 0 or args.routes < 1:
        parser.error("--slos, --runs, --days and --routes must be positive")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds or any(k not in COMPARED_KINDS for k in kinds):
        parser.error(
            f"--kinds: choose from {', '.join(COMPARED_KINDS)} ({', '.join(EXCLUDED_KINDS)} cannot be compared)"
        )
    options = Options(
        slos=args.slos,
        runs=args.runs,
        days=args.days,
        routes=args.routes,
        kinds=kinds,
        cache_dir=args.cache_dir.resolve(),
        compact=not args.raw_blocks,
        max_minutes=args.max_minutes,
    )
    started = time.perf_counter()
    try:
        python = ensure_slo_generator(options.cache_dir)
        outcome = run(options, python)
    except BenchError as exc:
        print(f"slo_generator_compare: {exc}", file=sys.stderr)
        return 2
    except InstallError as exc:
        print(f"slo_generator_compare: {exc}", file=sys.stderr)
        return 3
    except RuntimeError as exc:
        print(f"slo_generator_compare: {exc}", file=sys.stderr)
        return 1
    outcome.total_seconds = time.perf_counter() - started
    print(render(outcome))
    if args.json is not None:
        args.json.write_text(json.dumps(outcome_json(outcome), indent=1), encoding="utf-8")
    return 0 if outcome.equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
