"""/metrics under a burst of concurrent scrapes, and what it does to the evaluation cycle.

::

    python -m bench.metrics_load --clients 200 --seconds 10

Backfills the end-to-end test data set into a real Prometheus on 127.0.0.1, starts
``python -m sloeval run`` against it (interval 1 s, loopback only), then measures two phases of
the same length: a baseline with no scrapes, and a load phase in which ``wrk`` keeps
``--clients`` connections busy on ``/metrics``. Every cycle's ``evaluation_cycle`` log event gives
its duration and its start time (``evaluated_at``); a cycle counts for a phase when it started and
finished inside it. Prints a markdown table; exits 1 if a scrape failed, 2 if ``wrk`` or
Prometheus is missing.

Options for reading the figures: ``--pin`` gives sloeval a CPU of its own (Prometheus and wrk
share the rest), so a slower cycle is sloeval's own doing rather than Prometheus starved of CPU
on a small machine; ``--rate R`` caps the offered load at R requests/s instead of wrk's default
closed loop (each connection sends again as soon as it is answered, so a faster server gets more
load); ``--log FILE`` keeps sloeval's log; ``--json FILE`` writes every figure.

All traffic goes to 127.0.0.1, lasts ``--seconds`` and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devtools.servers import PROMETHEUS_BINARY, PrometheusServer
from devtools.sloeval_process import SloevalProcess
from devtools.tsdb import write_prometheus_blocks
from tests.e2e import dataset

REPO = Path(__file__).resolve().parents[1]
WRK_HINT = "wrk is not installed: `apt-get install -y wrk` (Debian package 'wrk')"


class BenchError(Exception):
    """A precondition is missing (exit code 2)."""


# --- wrk ---------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    requests_per_s: float
    latency_ms: dict[str, float]  # "50%", "75%", "90%", "99%" -> milliseconds
    socket_errors: dict[str, int]  # connect, read, write, timeout
    non_2xx: int
    output: str

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx


def _millis(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Parse the text ``wrk --latency`` prints. Raises ValueError if it is not such a text."""
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if total is None or rate is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    latency = {
        m.group(1) + "%": _millis(m.group(2)) for m in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.M)
    }
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket is not None:
        errors = dict(zip(errors, map(int, socket.groups()), strict=True))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests=int(total.group(1)),
        duration_s=_millis(total.group(2) + total.group(3)) / 1e3,
        requests_per_s=float(rate.group(1)),
        latency_ms=latency,
        socket_errors=errors,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        output=output,
    )


def wrk_binary() -> str:
    """Path of ``wrk``; BenchError with the install hint when it is missing."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(WRK_HINT)
    return path


def run_wrk(
    url: str,
    *,
    clients: int,
    seconds: int,
    threads: int = 2,
    timeout: str = "5s",
    cpus: set[int] | None = None,
    rate: float | None = None,
) -> WrkResult:
    """``wrk -c C -t T -d Ns --latency URL`` (bounded: wrk stops after ``seconds``), on ``cpus`` if given.

    Without ``rate`` every connection sends its next request as soon as the previous one is
    answered (closed loop: a faster server gets more requests). With ``rate``, each connection
    waits ``clients / rate`` seconds between requests (wrk's Lua ``delay()``), so the offered load
    is at most ``rate`` requests per second.
    """
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise BenchError(f"refusing to load anything but loopback: {url}")
    command = [wrk_binary(), "-c", str(clients), "-t", str(min(threads, clients)), "-d", f"{seconds}s"]
    command += ["--timeout", timeout, "--latency", url]
    if cpus is not None:
        command = ["taskset", "--cpu-list", ",".join(map(str, sorted(cpus))), *command]
    with tempfile.TemporaryDirectory(prefix="sloeval-wrk-") as tmp:
        if rate is not None:
            script = Path(tmp) / "rate.lua"
            script.write_text(f"function delay()\n  return {round(clients * 1000 / rate)}\nend\n", encoding="utf-8")
            command[-1:-1] = ["--script", str(script)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return parse_wrk(done.stdout)


# --- evaluation cycles -------------------------------------------------------------------------


@dataclass(frozen=True)
class Cycle:
    at: float  # evaluated_at: wall time the cycle started
    duration: float  # duration_seconds
    outcome: str


def cycles_from_log(text: str) -> list[Cycle]:
    """The ``evaluation_cycle`` events of a JSON log, oldest first."""
    cycles = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "evaluation_cycle":
            cycles.append(Cycle(event["evaluated_at"], event["duration_seconds"], event["outcome"]))
    return cycles


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Phase:
    name: str
    start: float
    end: float
    cycles: list[Cycle] = field(default_factory=list)
    interval: float = 1.0
    cpu: dict[str, float] = field(default_factory=dict)  # user+system CPU seconds per process during the phase
    tcp: dict[str, int] = field(default_factory=dict)  # kernel TCP counter deltas during the phase
    loadavg: float = math.nan  # the machine's 1-minute load average at the end of the phase

    def take(self, all_cycles: Sequence[Cycle]) -> Phase:
        self.cycles = [c for c in all_cycles if self.start <= c.at and c.at + c.duration <= self.end]
        return self

    @property
    def durations(self) -> list[float]:
        return [c.duration for c in self.cycles]

    @property
    def gaps(self) -> list[float]:
        """Seconds between the starts of consecutive cycles of the phase."""
        return [b.at - a.at for a, b in zip(self.cycles, self.cycles[1:], strict=False)]

    @property
    def jitter(self) -> list[float]:
        """Each gap minus the interval: how late (or early) a cycle started."""
        return [gap - self.interval for gap in self.gaps]

    @property
    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for cycle in self.cycles:
            counts[cycle.outcome] = counts.get(cycle.outcome, 0) + 1
        return counts

    @property
    def median(self) -> float:
        return statistics.median(self.durations) if self.cycles else math.nan

    @property
    def p95(self) -> float:
        return percentile(self.durations, 95)


# --- processes ---------------------------------------------------------------------------------


def tcp_counters() -> dict[str, int]:
    """Kernel TCP counters of this network namespace (/proc/net/netstat): listen queue overflows, SYN retransmits."""
    wanted = ("ListenOverflows", "ListenDrops", "TCPSynRetrans")
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        if header.startswith("TcpExt:"):
            out.update({k: int(v) for k, v in zip(header.split()[1:], values.split()[1:], strict=False) if k in wanted})
    return out


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before if k in after}


def pin_process(pid: int, cpus: set[int]) -> None:
    """Move every thread of ``pid`` to ``cpus``; threads it starts later inherit that."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), cpus)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux /proc), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DaemonProcess(SloevalProcess):
    """``python -m sloeval run`` on 127.0.0.1 with a JSON log in ``work``."""

    def __init__(self, prometheus_url: str, work: Path, interval: float) -> None:
        slo_file = work / "slos.yaml"
        slo_file.write_text(dataset.SLO_FILE, encoding="utf-8")
        settings = {
            "SLOEVAL_PROMETHEUS_URL": prometheus_url,
            "SLOEVAL_EVAL_INTERVAL": repr(interval),
            "SLOEVAL_SLO_FILE": str(slo_file),
            "SLOEVAL_STATE_DIR": str(work / "state"),
        }
        # Only the HTTP pacing may come from the caller's environment, to compare settings.
        super().__init__(settings, work / "sloeval.log", inherit=["SLOEVAL_HTTP_MAX_REQUESTS_PER_SECOND"])


@contextmanager
def backfilled_prometheus(work: Path) -> Iterator[PrometheusServer]:
    """A real Prometheus serving the e2e data set (31 days, ending a minute ago)."""
    if not Path(PROMETHEUS_BINARY).exists():
        raise BenchError(f"{PROMETHEUS_BINARY} is missing: run scripts/install-system-deps.sh prometheus")
    data_end = int(time.time()) // 60 * 60 - 60
    data_dir = work / "prometheus-data"
    write_prometheus_blocks(dataset.build(data_end), data_dir)
    with PrometheusServer(data_dir) as server:
        yield server


# --- the benchmark -----------------------------------------------------------------------------


@dataclass
class Report:
    clients: int
    seconds: int
    interval: float
    baseline: Phase
    load: Phase
    wrk: WrkResult
    metrics_bytes: int
    pinned: bool = False
    rate: float | None = None

    @property
    def ratio_median(self) -> float:
        return self.load.median / self.baseline.median

    @property
    def ratio_p95(self) -> float:
        return self.load.p95 / self.baseline.p95

    def markdown(self) -> str:
        def ms(value: float) -> str:
            return f"{value * 1e3:.1f} ms"

        def jitter(phase: Phase) -> str:
            values = phase.jitter
            if not values:
                return "n/a"
            worst = max(values, key=abs)
            return f"median {ms(statistics.median(values))}, worst {ms(worst)} ({len(values)} gaps)"

        def cpu(phase: Phase, who: str) -> str:
            if who not in phase.cpu:
                return "-"
            return f"{100 * phase.cpu[who] / (phase.end - phase.start):.0f} %"

        def outcomes(phase: Phase) -> str:
            return ", ".join(f"{n} {name}" for name, n in sorted(phase.outcomes.items())) or "none"

        def tcp(phase: Phase, name: str) -> str:
            return str(phase.tcp.get(name, "n/a"))

        b, ld, w = self.baseline, self.load, self.wrk
        rows = [
            ("cycles measured (outcome)", outcomes(b), outcomes(ld), ""),
            ("cycle duration median", ms(b.median), ms(ld.median), f"{self.ratio_median:.2f}x"),
            ("cycle duration p95", ms(b.p95), ms(ld.p95), f"{self.ratio_p95:.2f}x"),
            ("cycle start jitter (gap - interval)", jitter(b), jitter(ld), ""),
            ("CPU of sloeval (100 % = one core)", cpu(b, "sloeval"), cpu(ld, "sloeval"), ""),
            ("CPU of prometheus", cpu(b, "prometheus"), cpu(ld, "prometheus"), ""),
            ("CPU of wrk", "-", cpu(ld, "wrk"), ""),
            ("machine load average (1 min) at phase end", f"{b.loadavg:.2f}", f"{ld.loadavg:.2f}", ""),
            ("/metrics requests/s", "-", f"{w.requests_per_s:.0f}", ""),
            ("/metrics latency median", "-", f"{w.latency_ms.get('50%', math.nan):.1f} ms", ""),
            ("/metrics latency p99", "-", f"{w.latency_ms.get('99%', math.nan):.1f} ms", ""),
            ("/metrics requests / errors", "-", f"{w.requests} / {w.errors}", ""),
            ("TCP listen queue overflows (kernel)", tcp(b, "ListenOverflows"), tcp(ld, "ListenOverflows"), ""),
            ("TCP SYN retransmits (kernel)", tcp(b, "TCPSynRetrans"), tcp(ld, "TCPSynRetrans"), ""),
        ]
        flags = (" --pin" if self.pinned else "") + (f" --rate {self.rate:g}" if self.rate else "")
        lines = [
            f"`python -m bench.metrics_load --clients {self.clients} --seconds {self.seconds}{flags}`: "
            f"{os.cpu_count()} CPUs, interval {self.interval:g} s, /metrics body {self.metrics_bytes} bytes, "
            f"wrk -c {self.clients} -t 2 on the same machine"
            + (", sloeval pinned to its own CPU, Prometheus and wrk to the other(s)" if self.pinned else ""),
            "",
            "| | baseline (no scrapes) | load | load / baseline |",
            "| --- | --- | --- | --- |",
            *(f"| {a} | {b_} | {c} | {d} |" for a, b_, c, d in rows),
        ]
        if w.errors:
            lines += ["", f"wrk errors: socket {w.socket_errors}, non-2xx {w.non_2xx}"]
        verdict = "within" if self.ratio_median <= 1.10 else "OVER"
        lines += ["", f"Median cycle duration under load is {verdict} the 10 % budget ({self.ratio_median:.2f}x)."]
        return "\n".join(lines)


class _PhaseMeter:
    """Wall-clock window, CPU of the given processes and kernel TCP counters around one phase."""

    def __init__(self, name: str, interval: float, pids: dict[str, int]) -> None:
        self.phase = Phase(name, time.time(), math.nan, interval=interval)
        self._pids = pids
        self._cpu = {who: _cpu_seconds(pid) for who, pid in pids.items()}
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._tcp = tcp_counters()

    def stop(self, *, waited_child: str | None = None) -> Phase:
        """End the phase; ``waited_child`` names a child that ran and was waited for during it (wrk)."""
        self.phase.end = time.time()
        self.phase.cpu = {who: _cpu_seconds(pid) - self._cpu[who] for who, pid in self._pids.items()}
        if waited_child is not None:
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            before = self._children
            self.phase.cpu[waited_child] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        self.phase.tcp = _delta(self._tcp, tcp_counters())
        self.phase.loadavg = os.getloadavg()[0]
        return self.phase


def run_benchmark(
    prometheus_url: str,
    work: Path,
    *,
    clients: int,
    seconds: int,
    interval: float = 1.0,
    warmup: float = 3.0,
    prometheus_pid: int | None = None,
    pin: bool = False,
    rate: float | None = None,
) -> tuple[Report, DaemonProcess]:
    """Start sloeval, measure the baseline phase and the load phase, stop it. Returns the report.

    With ``pin``, sloeval gets the last CPU to itself and Prometheus and wrk share the others, so a
    slower cycle under load is sloeval's own doing rather than Prometheus starved of CPU.
    """
    daemon = DaemonProcess(prometheus_url, work, interval)
    daemon.start()
    try:
        daemon.wait_ready()
        time.sleep(warmup)
        metrics_bytes = len(httpx.get(daemon.url + "/metrics", timeout=5).content)
        assert daemon.process is not None
        pids = {"sloeval": daemon.process.pid}
        if prometheus_pid is not None:
            pids["prometheus"] = prometheus_pid
        others: set[int] | None = None
        if pin:
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < 2 or prometheus_pid is None or shutil.which("taskset") is None:
                raise BenchError("--pin needs two CPUs, taskset and the Prometheus process id")
            others = set(cpus[:-1])
            pin_process(daemon.process.pid, {cpus[-1]})
            pin_process(prometheus_pid, others)
            time.sleep(warmup)

        meter = _PhaseMeter("baseline", interval, pids)
        time.sleep(seconds)
        baseline = meter.stop()

        meter = _PhaseMeter("load", interval, pids)
        result = run_wrk(daemon.url + "/metrics", clients=clients, seconds=seconds, cpus=others, rate=rate)
        load = meter.stop(waited_child="wrk")
        time.sleep(interval)  # let the last cycle log
    finally:
        code = daemon.stop()
    if code != 0:
        raise RuntimeError(f"sloeval exited with {code}:\n{daemon.log()}")
    cycles = cycles_from_log(daemon.log())
    report = Report(
        clients, seconds, interval, baseline.take(cycles), load.take(cycles), result, metrics_bytes, pin, rate
    )
    return report, daemon


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200, help="concurrent wrk connections (default 200)")
    parser.add_argument("--seconds", type=int, default=10, help="length of each phase (default 10)")
    parser.add_argument("--interval", type=float, default=1.0, help="SLOEVAL_EVAL_INTERVAL (default 1)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after /readyz before measuring")
    parser.add_argument("--verbose", action="store_true", help="print wrk's own output to stderr")
    parser.add_argument(
        "--pin", action="store_true", help="sloeval on its own CPU, Prometheus and wrk on the other(s) (taskset)"
    )
    parser.add_argument(
        "--rate", type=float, help="cap the offered load at this many requests/s (default: as fast as answered)"
    )
    parser.add_argument("--log", type=Path, help="keep a copy of sloeval's JSON log here")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 1000 or not 1 <= args.seconds <= 120:
        parser.error("--clients must be 1..1000 and --seconds 1..120")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be above 0")
    try:
        wrk_binary()
        with tempfile.TemporaryDirectory(prefix="sloeval-bench-") as tmp:
            work = Path(tmp)
            print(f"backfilling the test data set and starting Prometheus in {work} ...", file=sys.stderr)
            with backfilled_prometheus(work) as prometheus:
                print(f"baseline {args.seconds}s, then wrk -c {args.clients} for {args.seconds}s ...", file=sys.stderr)
                report, daemon = run_benchmark(
                    prometheus.url,
                    work,
                    clients=args.clients,
                    seconds=args.seconds,
                    interval=args.interval,
                    warmup=args.warmup,
                    prometheus_pid=_pid_of(prometheus),
                    pin=args.pin,
                    rate=args.rate,
                )
                if args.log is not None:
                    shutil.copyfile(daemon.log_path, args.log)
    except BenchError as exc:
        print(f"bench.metrics_load: {exc}", file=sys.stderr)
        return 2
    if args.verbose:
        print(report.wrk.output, file=sys.stderr)
    print(report.markdown())
    if args.json is not None:
        args.json.write_text(json.dumps(_figures(report), indent=2) + "\n", encoding="utf-8")
    return 1 if report.wrk.errors else 0


def _pid_of(server: PrometheusServer) -> int | None:
    # PrometheusServer keeps its Popen private; the pid is only used to read its CPU time.
    process = getattr(server, "_process", None)
    return process.pid if isinstance(process, subprocess.Popen) else None


def _figures(report: Report) -> dict[str, Any]:
    def phase(p: Phase) -> dict[str, Any]:
        return {
            "cycles": len(p.cycles),
            "duration_median_s": p.median,
            "duration_p95_s": p.p95,
            "durations_s": p.durations,
            "jitter_s": p.jitter,
            "outcomes": p.outcomes,
            "cpu_seconds": p.cpu,
            "tcp": p.tcp,
            "loadavg": p.loadavg,
        }

    w = report.wrk
    return {
        "clients": report.clients,
        "seconds": report.seconds,
        "interval": report.interval,
        "pinned": report.pinned,
        "rate": report.rate,
        "baseline": phase(report.baseline),
        "load": phase(report.load),
        "ratio_median": report.ratio_median,
        "ratio_p95": report.ratio_p95,
        "wrk": {
            "requests": w.requests,
            "requests_per_s": w.requests_per_s,
            "latency_ms": w.latency_ms,
            "socket_errors": w.socket_errors,
            "non_2xx": w.non_2xx,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
