"""Samokoder-shaped traffic at platform scale, and generated SLO files, for the benchmarks.

The data: ``endpoints`` API routes x 4 status codes (200, 404, 500, 503) of
``samokoder_http_requests_total``, a 13-bucket latency histogram per route and
``up{job="samokoder-api"}``, one sample a minute for ``days`` days, ending at a fixed time
(:data:`DATA_END`, so a backfilled TSDB can be cached and reused). Request rates follow a
diurnal curve; every route has a 5xx burst and a slow spell somewhere in its history, and all
routes burn fast in the last 45 minutes, so alerts fire at the end.

Values are computed, not drawn, and streamed chunk by chunk into promtool: 30 days of 50 routes
(951 series, 41 M samples) never sit in memory at once.

The SLOs (:func:`generate_slo_file`): ratio, latency and uptime SLOs, per route and grouped
``by (endpoint)``, cycling through the kinds until ``count`` SLOs exist.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.tsdb import DEFAULT_CHUNK_SECONDS, format_labels, write_blocks_from_chunks

JOB, INSTANCE = "samokoder-api", "api:8000"
REQUESTS = "samokoder_http_requests_total"
DURATION = "samokoder_http_request_duration_seconds"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, math.inf)
DATA_END = 1_793_491_200  # 2026-11-01T00:00:00Z: fixed, so the backfilled TSDB can be cached
STEP = 60
FAST_BURN_SECONDS = 45 * 60
CACHE_VERSION = 1


@dataclass(frozen=True)
class Route:
    index: int
    method: str
    path: str
    rps: float
    median_seconds: float
    burst_start: int  # seconds before the end: a 40-minute 5xx burst (25 % errors)
    slow_start: int  # seconds before the end: a 1-hour spell with the median x 8

    @property
    def labels(self) -> dict[str, str]:
        return {"job": JOB, "instance": INSTANCE, "method": self.method, "endpoint": self.path}


def routes(count: int, days: float) -> list[Route]:
    """``count`` routes with rates, latencies and incident times spread deterministically."""
    span = int(days * 86400)
    out = []
    for i in range(count):
        out.append(
            Route(
                index=i,
                method=("GET", "POST", "GET", "PUT")[i % 4],
                path=f"/api/v1/r{i:03d}",
                rps=0.5 + (i * 37 % 50) / 10.0,
                median_seconds=0.02 * (1 + i % 7),
                burst_start=FAST_BURN_SECONDS + 3600 + (i * 7919 * 60) % max(1, span - 4 * 3600),
                slow_start=FAST_BURN_SECONDS + 2 * 3600 + (i * 104729 * 60) % max(1, span - 5 * 3600),
            )
        )
    return out


def _lognormal_cdf(x: float, median: float, sigma: float = 0.8) -> float:
    if math.isinf(x):
        return 1.0
    return 0.5 * (1.0 + math.erf(math.log(x / median) / (sigma * math.sqrt(2.0))))


def _diurnal(t: int) -> float:
    return 1.0 + 0.6 * math.sin(2 * math.pi * ((t % 86400) / 86400.0 - 0.35))


class _RouteCounters:
    """The running counters of one route; ``advance`` adds one step of traffic."""

    def __init__(self, route: Route, end: int) -> None:
        self.route = route
        self.end = end
        base = format_labels(route.labels)[1:-1]
        self.status_prefix = [f'{REQUESTS}{{{base},status="{s}"}} ' for s in ("200", "404", "500", "503")]
        les = ["+Inf" if math.isinf(b) else repr(b) for b in BUCKETS]
        self.bucket_prefix = [f'{DURATION}_bucket{{{base},le="{le}"}} ' for le in les]
        self.count_prefix = f"{DURATION}_count{{{base}}} "
        self.sum_prefix = f"{DURATION}_sum{{{base}}} "
        self.normal_cdf = [_lognormal_cdf(b, route.median_seconds) for b in BUCKETS]
        self.slow_cdf = [_lognormal_cdf(b, route.median_seconds * 8) for b in BUCKETS]
        self.status = [0.0, 0.0, 0.0, 0.0]
        self.buckets = [0.0] * len(BUCKETS)
        self.count = 0.0
        self.sum = 0.0

    def advance(self, t: int) -> None:
        r = self.route
        ago = self.end - t
        requests = r.rps * _diurnal(t) * STEP
        error_ratio = 0.002
        if ago < FAST_BURN_SECONDS:
            error_ratio = 0.2
        elif r.burst_start - 2400 < ago <= r.burst_start:
            error_ratio = 0.25
        slow = r.slow_start - 3600 < ago <= r.slow_start or ago < FAST_BURN_SECONDS
        errors = requests * error_ratio
        not_found = (requests - errors) * 0.01
        self.status[0] += requests - errors - not_found
        self.status[1] += not_found
        self.status[2] += errors * 0.7
        self.status[3] += errors * 0.3
        cdf = self.slow_cdf if slow else self.normal_cdf
        for j, share in enumerate(cdf):
            self.buckets[j] += requests * share
        self.count += requests
        self.sum += requests * r.median_seconds * (8 if slow else 1) * 1.4

    def lines(self, times: list[int], values: list[list[float]]) -> Iterator[str]:
        """Lines of every series of this route for the given steps (one series after another)."""
        series_prefixes = [*self.status_prefix, *self.bucket_prefix, self.count_prefix, self.sum_prefix]
        for k, prefix in enumerate(series_prefixes):
            for t, row in zip(times, values, strict=True):
                yield f"{prefix}{row[k]:.3f} {t}\n"

    def snapshot(self) -> list[float]:
        return [*self.status, *self.buckets, self.count, self.sum]


def stream_chunks(
    route_count: int, days: float, end: int = DATA_END, chunk_seconds: int = DEFAULT_CHUNK_SECONDS
) -> Iterator[tuple[int, list[str]]]:
    """``(chunk number, sample lines)`` in time order, for :func:`write_blocks_from_chunks`."""
    start = end - int(days * 86400) // STEP * STEP
    counters = [_RouteCounters(r, end) for r in routes(route_count, days)]
    up_prefix = f"up{format_labels({'job': JOB, 'instance': INSTANCE})} "
    t = start
    while t <= end:
        k = t // chunk_seconds
        chunk_end = min(end + 1, (k + 1) * chunk_seconds)
        times = list(range(t, chunk_end, STEP))
        lines: list[str] = [f"{up_prefix}1 {ts}\n" for ts in times]
        for route in counters:
            values = []
            for ts in times:
                route.advance(ts)
                values.append(route.snapshot())
            lines.extend(route.lines(times, values))
        yield k, lines
        t = times[-1] + STEP


def series_count(route_count: int) -> int:
    return 1 + route_count * (4 + len(BUCKETS) + 2)


def backfill(out_dir: Path, route_count: int, days: float, *, cache_root: Path | None = None) -> Path:
    """TSDB blocks for the data set in ``out_dir``; reused from ``cache_root`` when built before."""
    key = hashlib.sha256(json.dumps([CACHE_VERSION, route_count, days, DATA_END, STEP]).encode()).hexdigest()[:12]
    if cache_root is not None:
        cached = cache_root / f"scale-{route_count}r-{days:g}d-{key}"
        if not (cached / "complete").exists():
            shutil.rmtree(cached, ignore_errors=True)
            write_blocks_from_chunks(stream_chunks(route_count, days), cached / "data")
            (cached / "complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.copytree(cached / "data", out_dir)
        return out_dir
    write_blocks_from_chunks(stream_chunks(route_count, days), out_dir)
    return out_dir


# --- SLO files -------------------------------------------------------------------------------

KINDS = ("errors", "latency", "good-ratio", "errors-by-endpoint", "latency-by-endpoint", "uptime")


def slo_entries(count: int, route_count: int) -> list[dict[str, object]]:
    """``count`` SLO definitions (native SLO-file form), cycling through :data:`KINDS` and routes."""
    out: list[dict[str, object]] = []
    all_routes = routes(route_count, 1)
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        route = all_routes[(i // len(KINDS)) % route_count]
        name = f"{kind}-{i:04d}"
        match = f'endpoint="{route.path}"'
        entry: dict[str, object] = {"name": name, "objective": 99.0}
        if kind == "errors":
            entry["ratio"] = {"bad": f'{REQUESTS}{{{match},status=~"5.."}}', "total": f"{REQUESTS}{{{match}}}"}
        elif kind == "good-ratio":
            entry["ratio"] = {"good": f'{REQUESTS}{{{match},status!~"5.."}}', "total": f"{REQUESTS}{{{match}}}"}
        elif kind == "latency":
            entry["objective"] = 95.0
            entry["latency"] = {"histogram": f"{DURATION}{{{match}}}", "threshold_seconds": 0.5}
        elif kind == "errors-by-endpoint":
            method = route.method
            entry["ratio"] = {
                "bad": f'{REQUESTS}{{method="{method}",status=~"5.."}}',
                "total": f'{REQUESTS}{{method="{method}"}}',
                "group_by": ["endpoint"],
            }
        elif kind == "latency-by-endpoint":
            entry["objective"] = 95.0
            entry["latency"] = {
                "histogram": f'{DURATION}{{method="{route.method}"}}',
                "threshold_seconds": 1.0,
                "group_by": ["endpoint"],
            }
        else:
            entry["objective"] = 99.9
            entry["uptime"] = {"selector": f'up{{job="{JOB}"}}'}
        out.append(entry)
    return out


def generate_slo_file(count: int, route_count: int, *, notify: bool = False) -> str:
    """An SLO file (YAML text; JSON is YAML) with ``count`` SLOs over ``route_count`` routes."""
    document: dict[str, object] = {"service": "samokoder-api", "period": "30d"}
    if not notify:
        document["notify"] = {"routes": []}
    document["slos"] = slo_entries(count, route_count)
    return json.dumps(document, indent=1)


def main() -> int:
    parser = argparse.ArgumentParser(description="Write the scale data set as TSDB blocks.")
    parser.add_argument("--routes", type=int, default=50)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    started = time.monotonic()
    backfill(args.out, args.routes, args.days)
    print(f"{series_count(args.routes)} series, {args.days:g} days, in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
