"""Deterministic, Samokoder-shaped API traffic as Prometheus series.

The metric names and labels are the ones the Samokoder API's Prometheus
middleware exports, as a Prometheus server scraping ``api:8000`` stores them
(``job`` and ``instance`` target labels included):

* ``samokoder_http_requests_total{method, endpoint, status}`` counters,
* ``samokoder_http_request_duration_seconds_{bucket,count,sum}{method, endpoint[, le]}``,
* ``up{job="samokoder-api", instance="api:8000"}``.

Each step draws a request count per endpoint from a diurnal rate, splits it into
statuses and latency buckets, and adds it to the counters. A series appears on
its first increment, as with a real client library, so some 5xx series never
exist. An incident with ``down=True`` makes the target unreachable (``up`` 0,
no other samples) and the process comes back with its counters reset to zero.

CLI: ``python -m devtools.samokoder_data --days 7 --out DIR`` writes TSDB blocks.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devtools.tsdb import DEFAULT_CHUNK_SECONDS, Series, write_prometheus_blocks

API_JOB = "samokoder-api"
API_INSTANCE = "api:8000"
REQUESTS_METRIC = "samokoder_http_requests_total"
DURATION_METRIC = "samokoder_http_request_duration_seconds"
BUCKETS: tuple[str, ...] = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2", "2.5", "5", "10", "+Inf")
BACKGROUND_ERROR_RATIO = 0.002
"""Share of requests answered with 5xx outside incidents (on endpoints that can fail)."""
BACKGROUND_SLOW_RATIO = 0.028
"""Share of requests that fall into the slow tail (about 88 % of those exceed 2 s)."""

_UPPER = [math.inf if le == "+Inf" else float(le) for le in BUCKETS]
# A representative duration per bucket, used to grow ``_sum``.
_TYPICAL = [
    math.sqrt(up * (_UPPER[i - 1] if i else up / 2)) if math.isfinite(up) else 15.0 for i, up in enumerate(_UPPER)
]
# Where requests slowed by an incident land: always above 2 s.
_FORCED_SLOW = [0.0] * 9 + [0.3, 0.5, 0.15, 0.05]


@dataclass(frozen=True)
class Incident:
    """Something going wrong ``start`` seconds before the dataset's end, for ``duration`` seconds."""

    start: int
    duration: int
    error_ratio: float = 0.0
    slow_ratio: float = 0.0
    down: bool = False

    def active(self, t: int, end: int) -> bool:
        begin = end - self.start
        return begin <= t < begin + self.duration


DEFAULT_INCIDENTS: tuple[Incident, ...] = (
    Incident(start=3 * 86400 - 5 * 3600, duration=8 * 60, down=True),
    Incident(start=2 * 86400 - 3 * 3600, duration=60 * 60, slow_ratio=0.25),
    Incident(start=86400 + 2 * 3600, duration=40 * 60, error_ratio=0.30),
    Incident(start=45 * 60, duration=45 * 60, error_ratio=0.30, slow_ratio=0.10),
)
"""An 8-minute outage (~3 days before end), a latency incident (~2 days), a 30 % 5xx
burst for 40 minutes (~1 day) and a 30 % 5xx / 10 % slow burst in the last 45 minutes
(a fast burn that pages)."""


@dataclass(frozen=True)
class Endpoint:
    """Traffic profile of one API route."""

    method: str
    path: str
    rps: float
    ok_status: str
    client_error_status: str | None
    client_error_ratio: float
    server_error_statuses: tuple[tuple[str, float], ...]
    median_seconds: float
    sigma: float = 0.7


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/health", 0.2, "200", None, 0.0, (), 0.002, 0.4),
    Endpoint("GET", "/api/v1/projects", 3.0, "200", "404", 0.005, (("500", 0.7), ("503", 0.3)), 0.045),
    Endpoint("POST", "/api/v1/projects", 0.5, "201", "400", 0.02, (("500", 1.0),), 0.09),
    Endpoint("POST", "/api/v1/projects/{id}/generate", 0.3, "200", "400", 0.01, (("500", 0.6), ("503", 0.4)), 0.8, 0.5),
    Endpoint("GET", "/api/v1/auth/me", 2.5, "200", "404", 0.003, (("500", 1.0),), 0.012),
    Endpoint("POST", "/api/v1/auth/login", 0.4, "200", "400", 0.04, (("500", 0.7), ("503", 0.3)), 0.18),
)


def samokoder_dataset(
    end: int,
    *,
    days: float = 7,
    step: int = 60,
    seed: int = 1,
    incidents: Sequence[Incident] = DEFAULT_INCIDENTS,
) -> list[Series]:
    """Series with samples every ``step`` seconds over ``days`` days, the last one at ``end``.

    The same arguments always give the same data.
    """
    if step <= 0 or days <= 0:
        raise ValueError("days and step must be positive")
    rng = random.Random(seed)
    steps = int(days * 86400 // step)
    start = end - steps * step
    store = _Store()
    endpoints = [_EndpointState(e) for e in ENDPOINTS]
    up_key: _Key = ("up", (("job", API_JOB), ("instance", API_INSTANCE)))
    was_down = False

    for t in range(start, end + 1, step):
        active = [i for i in incidents if i.active(t, end)]
        if any(i.down for i in active):
            store.add(up_key, t, 0)
            was_down = True
            continue
        if was_down:
            for state in endpoints:
                state.reset()
            was_down = False
        store.add(up_key, t, 1)
        error_ratio = max([BACKGROUND_ERROR_RATIO, *(i.error_ratio for i in active)])
        slow_ratio = max([0.0, *(i.slow_ratio for i in active)])
        load = _diurnal(t) * step
        for state in endpoints:
            requests = _poisson(rng, state.endpoint.rps * load * rng.uniform(0.93, 1.07))
            state.observe(rng, requests, error_ratio, slow_ratio)
            state.emit(store, t)
    return store.series()


_Key = tuple[str, tuple[tuple[str, str], ...]]
"""A series' identity: metric name and ordered label pairs."""


class _Store:
    """Samples per series, kept in first-seen order."""

    def __init__(self) -> None:
        self._samples: dict[_Key, list[tuple[float, float]]] = {}

    def add(self, key: _Key, t: int, value: float) -> None:
        samples = self._samples.get(key)
        if samples is None:
            samples = self._samples[key] = []
        samples.append((t, value))

    def series(self) -> list[Series]:
        return [Series(name, dict(labels), samples) for (name, labels), samples in self._samples.items()]


class _EndpointState:
    """Counters of one endpoint inside one API process lifetime."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        base = (("job", API_JOB), ("instance", API_INSTANCE), ("method", endpoint.method), ("endpoint", endpoint.path))
        self._status_labels = {
            status: (*base, ("status", status))
            for status in (
                endpoint.ok_status,
                *([endpoint.client_error_status] if endpoint.client_error_status else []),
                *(s for s, _ in endpoint.server_error_statuses),
            )
        }
        self._bucket_keys = [(f"{DURATION_METRIC}_bucket", (*base, ("le", le))) for le in BUCKETS]
        self._count_key = (f"{DURATION_METRIC}_count", base)
        self._sum_key = (f"{DURATION_METRIC}_sum", base)
        self._normal_bins = _bin_probabilities(endpoint.median_seconds, endpoint.sigma)
        self._bins_by_slow_ratio: dict[float, list[float]] = {}
        self.reset()

    def reset(self) -> None:
        self.by_status: dict[str, int] = {}
        self.bins = [0] * len(BUCKETS)
        self.total = 0
        self.seconds = 0.0

    def observe(self, rng: random.Random, requests: int, error_ratio: float, slow_ratio: float) -> None:
        if requests <= 0:
            return
        e = self.endpoint
        server_errors = _binomial(rng, requests, error_ratio) if e.server_error_statuses else 0
        client_errors = _binomial(rng, requests - server_errors, e.client_error_ratio) if e.client_error_status else 0
        self._count(e.ok_status, requests - server_errors - client_errors)
        if e.client_error_status:
            self._count(e.client_error_status, client_errors)
        remaining, share_left = server_errors, 1.0
        last = len(e.server_error_statuses) - 1
        for j, (status, share) in enumerate(e.server_error_statuses):
            n = remaining if j == last or share >= share_left else _binomial(rng, remaining, share / share_left)
            self._count(status, n)
            remaining -= n
            share_left -= share

        remaining, mass_left = requests, 1.0
        for i, p in enumerate(self._bins(slow_ratio)):
            if remaining == 0:
                break
            n = remaining if p >= mass_left or i == len(BUCKETS) - 1 else _binomial(rng, remaining, p / mass_left)
            self.bins[i] += n
            self.seconds += n * _TYPICAL[i] * rng.uniform(0.8, 1.2)
            remaining -= n
            mass_left -= p
        self.total += requests

    def emit(self, store: _Store, t: int) -> None:
        for status, count in self.by_status.items():
            store.add((REQUESTS_METRIC, self._status_labels[status]), t, count)
        if self.total == 0:
            return
        cumulative = 0
        for key, n in zip(self._bucket_keys, self.bins, strict=True):
            cumulative += n
            store.add(key, t, cumulative)
        store.add(self._count_key, t, self.total)
        store.add(self._sum_key, t, round(self.seconds, 3))

    def _count(self, status: str, n: int) -> None:
        if n > 0:
            self.by_status[status] = self.by_status.get(status, 0) + n

    def _bins(self, slow_ratio: float) -> list[float]:
        if slow_ratio <= 0:
            return self._normal_bins
        cached = self._bins_by_slow_ratio.get(slow_ratio)
        if cached is None:
            cached = [
                (1 - slow_ratio) * p + slow_ratio * q for p, q in zip(self._normal_bins, _FORCED_SLOW, strict=True)
            ]
            self._bins_by_slow_ratio[slow_ratio] = cached
        return cached


def _bin_probabilities(median: float, sigma: float) -> list[float]:
    """Per-bucket (non-cumulative) probabilities: a log-normal body plus a slow tail."""

    def cdf(x: float, m: float, s: float) -> float:
        if math.isinf(x):
            return 1.0
        return 0.5 * (1 + math.erf(math.log(x / m) / (s * math.sqrt(2))))

    fast = BACKGROUND_SLOW_RATIO
    cumulative = [(1 - fast) * cdf(x, median, sigma) + fast * cdf(x, 3.5, 0.5) for x in _UPPER]
    return [c - (cumulative[i - 1] if i else 0.0) for i, c in enumerate(cumulative)]


def _diurnal(t: int) -> float:
    """Load factor: peaks mid-afternoon UTC, quiet at night, lighter at weekends."""
    hour = (t % 86400) / 3600
    weekday = (t // 86400 + 3) % 7  # 1970-01-01 was a Thursday; 5 and 6 are the weekend
    weekend = 0.65 if weekday >= 5 else 1.0
    return weekend * (1.0 + 0.6 * math.sin(2 * math.pi * (hour - 9) / 24))


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """Approximate Binomial(n, p) draw: Poisson for rare events, normal for large counts, exact otherwise."""
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    if p > 0.5:
        return n - _binomial(rng, n, 1 - p)
    mean = n * p
    if p < 0.05 and mean < 15:
        return min(n, _poisson(rng, mean))
    variance = mean * (1 - p)
    if variance >= 9:
        return min(n, max(0, round(rng.gauss(mean, math.sqrt(variance)))))
    return sum(1 for _ in range(n) if rng.random() < p)


def default_end() -> int:
    """Now rounded down to the minute, minus 60 s."""
    return int(time.time()) // 60 * 60 - 60


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.samokoder_data",
        description="Write Samokoder-shaped metric history as Prometheus TSDB blocks.",
    )
    parser.add_argument("--out", type=Path, required=True, help="Prometheus --storage.tsdb.path to fill")
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--end", type=int, default=None, help="unix time of the last sample (default: now - 1m)")
    parser.add_argument("--step", type=int, default=60, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk-seconds", type=int, default=DEFAULT_CHUNK_SECONDS)
    args = parser.parse_args(argv)
    end = default_end() if args.end is None else args.end

    began = time.perf_counter()
    series = samokoder_dataset(end, days=args.days, step=args.step, seed=args.seed)
    generated = time.perf_counter()
    samples = sum(len(s.samples) for s in series)
    print(f"generated {len(series)} series, {samples} samples in {generated - began:.1f}s", file=sys.stderr)
    write_prometheus_blocks(series, args.out, chunk_seconds=args.chunk_seconds)
    print(f"wrote blocks to {args.out} in {time.perf_counter() - generated:.1f}s (end={end})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
