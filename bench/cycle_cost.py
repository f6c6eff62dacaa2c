"""The cost of an evaluation cycle at 100 and 1,000 SLOs, against Prometheus's own cost.

::

    python -m bench.cycle_cost [--slos 100,1000] [--days 30] [--routes 50] [--memory-cycles 1000]

Data: 30 days of Samokoder-shaped traffic for 50 routes x 4 status codes with latency histograms
(``bench/scale_data.py``), backfilled with promtool, compacted once and cached in
``.bench-cache/``, served by a real Prometheus on 127.0.0.1. SLOs: generated ratio, latency and
uptime SLOs, grouped ``by (endpoint)`` and not (``scale_data.generate_slo_file``).

For each SLO count, cycles run in this process through sloeval's own ``Evaluator`` and client,
at pinned times inside the data:

* **previous design**: one query per SLO with all its windows, every window every cycle (what
  sloeval did before the query plan; asked with a plain HTTP client), for the query-cost ratio;
* **full cycle**: the query plan with every window (a daemon's first cycle, ``sloeval eval``);
* **steady cycle**: the daemon's cycle, 30 s apart, long windows (1d and more) re-evaluated every
  300 s at their own phase (``SLOEVAL_LONG_WINDOW_REFRESH``); two refresh periods are measured.

Each cycle reports wall time, this process's CPU time, requests, and Prometheus's own figures
from ``stats=all`` (execution time, samples read). The physical limit is measured side by side:
right after each cycle, the same requests are sent again by a bare HTTP client with the same
concurrency that neither parses nor computes anything, and the ratio is sloeval's wall time over
that "Prometheus alone" wall time. Accuracy: every steady cycle's SLIs, burn rates and budgets are
compared with a full evaluation at the same time.

Memory: ``sloeval run`` with 1,000 SLOs as a separate process, its queries answered by a replay
server on 127.0.0.1 that serves each expression the answer Prometheus gave at the data's end
(a cycle every ``--memory-interval`` seconds, /metrics scraped every 10 s); RSS after the first
cycle and after ``--memory-cycles`` cycles, and the daemon's whole CPU time per cycle.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx

from bench import scale_data
from bench.slo_generator_compare import prepare_data
from devtools.loopback import LoopbackServer
from devtools.servers import PrometheusServer
from devtools.sloeval_process import SloevalProcess
from sloeval.config.selectors import quote
from sloeval.config.settings import Settings
from sloeval.config.slo_file import SLOConfig, parse_slo_text
from sloeval.logs import configure_logging
from sloeval.prometheus.client import PrometheusClient, make_http_client
from sloeval.prometheus.results import QueryResult
from sloeval.promql.expressions import SERIES_LABEL
from sloeval.promql.plan import QueryPlan, SLOPlan
from sloeval.slo.evaluator import Evaluator
from sloeval.slo.snapshot import Snapshot

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".bench-cache"
INTERVAL = float(Settings.model_fields["eval_interval"].default)  # the daemon's default cadence
REFRESH = float(Settings.model_fields["long_window_refresh"].default)
CONCURRENCY = 8  # SLOEVAL_QUERY_CONCURRENCY's default


@dataclass
class Cycle:
    wall: float
    cpu: float
    requests: int
    prometheus_exec: float  # sum of stats.timings.execTotalTime
    samples: int  # sum of stats.samples.totalQueryableSamples
    alone_wall: float = math.nan  # the same requests, bare client

    @property
    def ratio(self) -> float:
        return self.wall / self.alone_wall


@dataclass
class Recorder:
    """Wraps sloeval's client: records each request and Prometheus's stats for it."""

    client: PrometheusClient
    requests: list[str] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)

    async def query(self, promql: str, at: float) -> QueryResult:
        self.requests.append(promql)
        return await self.client.query(promql, at)

    def take(self) -> tuple[list[str], list[dict[str, Any]]]:
        """The requests and stats since the last call (the stats list is the client's, kept)."""
        requests, stats = list(self.requests), list(self.stats)
        self.requests.clear()
        self.stats.clear()
        return requests, stats


async def _bare(url: str, requests: Sequence[str], at: float) -> tuple[float, list[dict[str, Any]]]:
    """The same requests with no parsing: what Prometheus needs by itself (plus loopback HTTP)."""
    limiter = anyio.CapacityLimiter(CONCURRENCY)
    stats: list[dict[str, Any]] = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=CONCURRENCY)) as http:

        async def one(promql: str) -> None:
            async with limiter:
                response = await http.post(
                    f"{url}/api/v1/query", data={"query": promql, "time": f"{at:.3f}", "stats": "all"}, timeout=300
                )
            stats.append(response.json()["data"]["stats"])

        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for promql in requests:
                group.start_soon(one, promql)
        return time.perf_counter() - started, stats


def _exec(stats: Sequence[dict[str, Any]]) -> tuple[float, int]:
    return (
        sum(s["timings"]["execTotalTime"] for s in stats),
        sum(int(s["samples"]["totalQueryableSamples"]) for s in stats),
    )


async def _cycle(evaluator: Evaluator, recorder: Recorder, url: str, at: float) -> tuple[Cycle, Snapshot]:
    cpu, started = time.process_time(), time.perf_counter()
    snapshot = await evaluator.evaluate(at)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    requests, stats = recorder.take()
    exec_total, samples = _exec(stats)
    cycle = Cycle(wall, cpu, len(requests), exec_total, samples)
    cycle.alone_wall, _ = await _bare(url, requests, at)
    return cycle, snapshot


def _values(snapshot: Snapshot) -> dict[tuple[str, tuple[tuple[str, str], ...], str], float]:
    out = {}
    for status in snapshot.statuses:
        for result in status.results:
            for kind, values in (("sli", result.sli), ("burn", result.burn_rate)):
                for window, value in values.items():
                    if value is not None:
                        out[(status.slo.name, result.labels, f"{kind}:{window}")] = value
            if result.error_budget_remaining is not None:
                out[(status.slo.name, result.labels, "budget")] = result.error_budget_remaining
    return out


@dataclass
class Accuracy:
    """Steady-cycle numbers against a full evaluation at the same instant, by kind of number."""

    compared: int = 0
    worst_sli_relative: float = 0.0
    worst_burn_relative: float = 0.0
    worst_burn_key: str = ""
    worst_budget_points: float = 0.0  # budget remaining, in percentage points
    burn_over_0_1_percent: int = 0  # burn rates off by more than 0.1 %
    burns: int = 0

    def add(self, steady: Snapshot, full: Snapshot) -> None:
        a, b = _values(steady), _values(full)
        assert a.keys() == b.keys(), "steady and full evaluation disagree on what has a value"
        for key, value in a.items():
            reference = b[key]
            self.compared += 1
            if key[2] == "budget":
                self.worst_budget_points = max(self.worst_budget_points, 100 * abs(value - reference))
                continue
            relative = abs(value - reference) / max(abs(reference), 1e-12)
            if key[2].startswith("sli:"):
                self.worst_sli_relative = max(self.worst_sli_relative, relative)
                continue
            self.burns += 1
            self.burn_over_0_1_percent += relative > 0.001
            if relative > self.worst_burn_relative:
                self.worst_burn_relative, self.worst_burn_key = relative, f"{key[0]} {dict(key[1])} {key[2]}"


@dataclass
class SizeResult:
    slos: int
    expressions: int
    previous: Cycle
    full: list[Cycle]
    steady: list[Cycle]
    accuracy: Accuracy


def _one_query_per_slo(slo: SLOPlan) -> str:
    """The previous design's query for an SLO: every part of every window in one instant query,
    each tagged ``sloeval_series="<part>:<window>"`` and joined with ``or``.

    sloeval no longer asks this (it evaluates through the query plan); it is kept here only as
    this benchmark's baseline.
    """
    tagged = [
        f'label_replace({p.expression.promql}, "{SERIES_LABEL}", {quote(f"{p.part}:{p.window_name}")}, "", "")'
        for p in slo.parts
    ]
    return "\nor ".join(tagged)


async def _plan_with_bounds(client: PrometheusClient, config: SLOConfig, end: float) -> QueryPlan:
    """The query plan once the latency SLOs' bucket bounds are known, as the evaluator makes it."""
    bounds = {}
    for query in QueryPlan(config.slos).bucket_queries:
        result = await client.query(query, end)
        bounds[query] = [sample.labels["le"] for sample in result.samples if "le" in sample.labels]
    return QueryPlan(config.slos, bucket_bounds=bounds)


async def _measure(url: str, config: SLOConfig, end: float, runs: int) -> SizeResult:
    async with make_http_client(max_connections=CONCURRENCY) as http:
        stats: list[dict[str, Any]] = []
        client = PrometheusClient(http, url, timeout=300, on_stats=lambda s: stats.append(dict(s)))
        recorder = Recorder(client, stats=stats)

        # Previous design: one query per SLO, every window, every cycle.
        plan = await _plan_with_bounds(client, config, end)
        per_slo = [_one_query_per_slo(slo) for slo in plan.slo_plans]
        wall, bare_stats = await _bare(url, per_slo, end)
        exec_total, samples = _exec(bare_stats)
        previous = Cycle(wall, math.nan, len(per_slo), exec_total, samples, alone_wall=wall)

        full = []
        for _ in range(runs):
            cycle, _ = await _cycle(Evaluator(config.slos, recorder, concurrency=CONCURRENCY), recorder, url, end)
            full.append(cycle)

        steady: list[Cycle] = []
        accuracy = Accuracy()
        daemon = Evaluator(config.slos, recorder, concurrency=CONCURRENCY, long_window_refresh=REFRESH)
        start = end - 2 * REFRESH - INTERVAL
        await daemon.evaluate(start)  # the daemon's first cycle: every window
        recorder.take()
        for k in range(1, int(2 * REFRESH / INTERVAL) + 1):
            at = start + k * INTERVAL
            cycle, snapshot = await _cycle(daemon, recorder, url, at)
            steady.append(cycle)
            reference = await Evaluator(config.slos, recorder, concurrency=CONCURRENCY).evaluate(at)
            recorder.take()
            accuracy.add(snapshot, reference)
        expressions = len(plan.expressions)
        return SizeResult(len(config.slos), expressions, previous, full, steady, accuracy)


# --- memory: the daemon against a replay server ------------------------------------------------

TERM = re.compile(r'label_replace\((.*), "sloeval_series", "(e\d+)", "", ""\)')


class ReplayServer(LoopbackServer):
    """Answers each tagged term with the samples Prometheus gave for that expression."""

    thread_name = "replay"

    def __init__(self, answers: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__()
        self.answers = answers

    def _make_server(self) -> ThreadingHTTPServer:
        replay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                body = replay.answer(form.get("query", [""])[0])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    def answer(self, query: str) -> bytes:
        result = []
        for line in query.split("\n"):
            term = TERM.fullmatch(line.removeprefix("or "))
            if term is None:
                continue
            for sample in self.answers.get(term.group(1), []):
                labels = {**sample["metric"], "sloeval_series": term.group(2)}
                result.append({"metric": labels, "value": sample["value"]})
        return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


async def _record_answers(url: str, config: SLOConfig, at: float) -> dict[str, list[dict[str, Any]]]:
    answers: dict[str, list[dict[str, Any]]] = {}
    async with httpx.AsyncClient() as http:
        for expression in QueryPlan(config.slos).expressions:
            response = await http.post(f"{url}/api/v1/query", data={"query": expression.promql, "time": str(at)})
            answers[expression.promql] = response.json()["data"]["result"]
    return answers


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@dataclass
class Memory:
    slos: int
    cycles: int
    rss_after_first_mb: float
    rss_after_last_mb: float
    rss_peak_mb: float
    seconds: float
    cpu_per_cycle_ms: float  # the whole daemon: evaluation, alerting, state, /metrics


def measure_memory(
    url: str, slo_text: str, config: SLOConfig, cycles: int, work: Path, interval: float = 2.0
) -> Memory:
    answers = anyio.run(_record_answers, url, config, scale_data.DATA_END)
    slo_file = work / "memory-slos.yaml"
    slo_file.write_text(slo_text)
    log_path = work / "memory-daemon.log"
    with ReplayServer(answers) as replay:
        settings = {
            "SLOEVAL_PROMETHEUS_URL": replay.url,
            "SLOEVAL_SLO_FILE": str(slo_file),
            "SLOEVAL_EVAL_INTERVAL": str(interval),  # long enough for whole cycles (the deadline is 0.9 x this)
            "SLOEVAL_STATE_DIR": str(work / "memory-state"),
        }
        started = time.monotonic()
        with SloevalProcess(settings, log_path) as daemon:
            assert daemon.process is not None
            pid = daemon.process.pid
            first = peak = cpu_first = math.nan
            done = first_done = 0
            next_scrape = 0.0
            deadline = time.monotonic() + 3600
            while done < cycles:
                if daemon.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daemon stopped or too slow after {done} cycles:\n{daemon.log()[-2000:]}")
                time.sleep(0.5)
                done = log_path.read_bytes().count(b'"evaluation_cycle"')
                rss = _rss_mb(pid)
                peak = rss if math.isnan(peak) else max(peak, rss)
                if done >= 1 and math.isnan(first):
                    first, cpu_first, first_done = rss, _cpu_seconds(pid), done
                if done >= 1 and time.monotonic() >= next_scrape:  # as Prometheus would, once it serves
                    httpx.get(f"{daemon.url}/metrics", timeout=30).raise_for_status()
                    next_scrape = time.monotonic() + 10
            last = _rss_mb(pid)
            cpu_per_cycle = 1000 * (_cpu_seconds(pid) - cpu_first) / max(1, done - first_done)
    return Memory(len(config.slos), done, first, last, peak, time.monotonic() - started, cpu_per_cycle)


# --- report ------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _spread(values: Sequence[float], fmt: str) -> str:
    return f"{format(_median(values), fmt)} ({format(min(values), fmt)} to {format(max(values), fmt)})"


def render(sizes: Sequence[SizeResult], memory: Memory | None) -> str:
    lines = [
        "| SLOs | cycle | requests | Prometheus samples read | wall time | sloeval CPU per SLO | "
        "wall / Prometheus alone |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size in sizes:
        p = size.previous
        lines.append(
            f"| {size.slos} | previous design (one query per SLO) | {p.requests} | {p.samples:,} | "
            f"{p.wall:.2f} s | n/a | n/a |"
        )
        for title, cycles in (
            ("full (every window)", size.full),
            (f"steady (daemon, every {INTERVAL:g} s)", size.steady),
        ):
            lines.append(
                f"| {size.slos} | {title} | {_median([c.requests for c in cycles]):.0f} | "
                f"{_median([c.samples for c in cycles]):,.0f} | {_spread([c.wall for c in cycles], '.3f')} s | "
                f"{_spread([1000 * c.cpu / size.slos for c in cycles], '.3f')} ms | "
                f"{_spread([c.ratio for c in cycles], '.2f')}x |"
            )
    lines.append("")
    for size in sizes:
        steady_samples = _median([c.samples for c in size.steady])
        full_samples = _median([c.samples for c in size.full])
        acc = size.accuracy
        lines.append(
            f"- {size.slos} SLOs ({size.expressions} distinct expressions): samples read per cycle, previous design "
            f"/ steady cycle = {size.previous.samples / steady_samples:.1f}x, full / steady = "
            f"{full_samples / steady_samples:.1f}x. Steady vs full evaluation at the same instant, "
            f"{acc.compared:,} values: SLIs within {100 * acc.worst_sli_relative:.4f} %, budgets within "
            f"{acc.worst_budget_points:.4f} percentage points, burn rates within "
            f"{100 * acc.worst_burn_relative:.3f} % ({acc.burn_over_0_1_percent:,} of {acc.burns:,} beyond 0.1 %; "
            f"worst: {acc.worst_burn_key})."
        )
    if memory is not None:
        lines.append(
            f"- Memory, `sloeval run` with {memory.slos} SLOs: RSS {memory.rss_after_first_mb:.1f} MB after the first "
            f"cycle, {memory.rss_after_last_mb:.1f} MB after {memory.cycles} cycles (peak {memory.rss_peak_mb:.1f} MB, "
            f"growth {memory.rss_after_last_mb - memory.rss_after_first_mb:+.1f} MB), {memory.seconds:.0f} s; the "
            f"daemon's CPU per cycle (evaluation, alerts, state, /metrics every 10 s, queries answered by the replay "
            f"server): {memory.cpu_per_cycle_ms:.0f} ms, {memory.cpu_per_cycle_ms / memory.slos:.3f} ms per SLO."
        )
    return "\n".join(lines)


@contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    path = Path(tempfile.mkdtemp(prefix="sloeval-cycle-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slos", default="100,1000", help="comma list of SLO counts")
    parser.add_argument("--routes", type=int, default=50)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--runs", type=int, default=5, help="full cycles per size")
    parser.add_argument("--memory-cycles", type=int, default=1000, help="0 skips the memory run")
    parser.add_argument("--memory-slos", type=int, default=1000)
    parser.add_argument("--memory-interval", type=float, default=2.0, help="SLOEVAL_EVAL_INTERVAL of the memory run")
    parser.add_argument("--no-compact", action="store_true", help="skip the one-time compaction (quick runs)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    configure_logging("error", "console")  # the evaluator's own warnings are not what is measured
    counts = [int(n) for n in args.slos.split(",") if n.strip()]
    with _workdir(None) as work:
        data = prepare_data(work, args.routes, args.days, CACHE, compact=not args.no_compact)
        with PrometheusServer(data) as prometheus:
            sizes = []
            for count in counts:
                config = parse_slo_text(scale_data.generate_slo_file(count, args.routes), Path(f"{count}-slos.yaml"))
                sizes.append(anyio.run(_measure, prometheus.url, config, float(scale_data.DATA_END), args.runs))
                print(render(sizes[-1:], None), file=sys.stderr)  # kept if a later part fails
            memory = None
            if args.memory_cycles > 0:
                text = scale_data.generate_slo_file(args.memory_slos, args.routes)
                config = parse_slo_text(text, Path("memory-slos.yaml"))
                memory = measure_memory(prometheus.url, text, config, args.memory_cycles, work, args.memory_interval)
    print(render(sizes, memory))
    if args.json is not None:
        document = {
            "sizes": [
                {**asdict(s), "full": [asdict(c) for c in s.full], "steady": [asdict(c) for c in s.steady]}
                for s in sizes
            ],
            "memory": asdict(memory) if memory is not None else None,
        }
        args.json.write_text(json.dumps(document, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
