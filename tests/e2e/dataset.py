"""A month of synthetic traffic whose shape each end-to-end test relies on.

Every case the acceptance tests cover has its own metric, so one Prometheus serves
them all: grouped endpoints (one never failing, one with an incident 10 days ago),
a counter reset, zero traffic, traffic that stopped, Go- and Python-style histogram
buckets, and an ``up`` series with two outages.
"""

from __future__ import annotations

from collections.abc import Callable

from devtools.tsdb import Series

STEP = 60
DAYS = 31

Increment = Callable[[int, int], float]  # (unix time, minute index) -> events in this step


def counter(
    name: str, labels: dict[str, str], end: int, increment: Increment, *, reset_at: int | None = None
) -> Series:
    start = end - DAYS * 86400
    value = 0.0
    samples = []
    for index, t in enumerate(range(start, end + 1, STEP)):
        if reset_at is not None and t == reset_at:
            value = 0.0
        value += increment(t, index)
        samples.append((float(t), value))
    return Series(name, labels, samples)


def gauge(name: str, labels: dict[str, str], end: int, value_at: Callable[[int], float]) -> Series:
    start = end - DAYS * 86400
    return Series(name, labels, [(float(t), value_at(t)) for t in range(start, end + 1, STEP)])


def build(end: int) -> list[Series]:
    incident_start, incident_end = end - 10 * 86400, end - 10 * 86400 + 7200
    stopped_at = end - 2 * 86400
    series = [
        counter("shop_requests_total", {"endpoint": "/a", "code": "200"}, end, lambda t, i: 600 + (i % 7)),
        counter("shop_requests_total", {"endpoint": "/a", "code": "500"}, end, lambda t, i: 1.0 if i % 3 == 0 else 0.0),
        counter("shop_requests_total", {"endpoint": "/b", "code": "200"}, end, lambda t, i: 120 + (i % 5)),
        counter("shop_requests_total", {"endpoint": "/c", "code": "200"}, end, lambda t, i: 300.0),
        counter(
            "shop_requests_total",
            {"endpoint": "/c", "code": "503"},
            end,
            lambda t, i: 90.0 if incident_start <= t < incident_end else 0.0,
        ),
        counter("reset_requests_total", {"code": "200"}, end, lambda t, i: 50.0, reset_at=end - 3 * 3600),
        counter("reset_requests_total", {"code": "500"}, end, lambda t, i: 2.0, reset_at=end - 3 * 3600),
        gauge("idle_requests_total", {"code": "200"}, end, lambda t: 42.0),
        gauge("idle_requests_total", {"code": "500"}, end, lambda t: 1.0),
        counter("stopped_requests_total", {"code": "200"}, end, lambda t, i: 10.0 if t < stopped_at else 0.0),
        counter("stopped_requests_total", {"code": "500"}, end, lambda t, i: 1.0 if t < stopped_at else 0.0),
        gauge("up", {"job": "api"}, end, lambda t: 0.0 if _down(t, end) else 1.0),
    ]
    # A scrape gap: no samples at all in the last 90 minutes (exporter unreachable).
    for code, per_step in (("200", 30.0), ("500", 1.0)):
        full = counter("gappy_requests_total", {"code": code}, end, lambda t, i, n=per_step: n)
        series.append(Series(full.name, full.labels, [p for p in full.samples if p[0] < end - 90 * 60]))
    # Two histograms with the same observations: one with Go-style and one with Python-style `le`.
    bounds = [("0.5", "0.5"), ("1", "1.0"), ("2", "2.0"), ("+Inf", "+Inf")]
    shares = [0.6, 0.85, 0.97, 1.0]
    for name, style in (("go_latency_seconds", 0), ("py_latency_seconds", 1)):
        for bound, share in zip(bounds, shares, strict=True):
            series.append(
                counter(f"{name}_bucket", {"le": bound[style]}, end, lambda t, i, s=share: round(s * (100 + i % 11)))
            )
        series.append(counter(f"{name}_count", {}, end, lambda t, i: float(100 + i % 11)))
    return series


def _down(t: int, end: int) -> bool:
    return end - 5 * 86400 <= t < end - 5 * 86400 + 1800 or end - 40 * 60 <= t < end - 30 * 60


SLO_FILE = """\
service: shop
period: 30d
slos:
  - name: errors-by-endpoint
    slo_type: errors
    objective: 99
    ratio:
      bad: shop_requests_total{code=~"5.."}
      total: shop_requests_total
      group_by: [endpoint]
  - name: success-ratio
    slo_type: availability
    objective: 99.5
    ratio:
      good: shop_requests_total{code!~"5.."}
      total: shop_requests_total
  - name: after-reset
    slo_type: errors
    objective: 99
    ratio: {bad: 'reset_requests_total{code="500"}', total: reset_requests_total}
  - name: idle
    slo_type: errors
    objective: 99
    ratio: {bad: 'idle_requests_total{code="500"}', total: idle_requests_total}
  - name: stopped
    slo_type: errors
    objective: 95
    ratio: {bad: 'stopped_requests_total{code="500"}', total: stopped_requests_total}
  - name: go-latency
    slo_type: latency
    objective: 95
    latency: {histogram: go_latency_seconds, threshold_seconds: 2}
  - name: py-latency
    slo_type: latency
    objective: 95
    latency: {histogram: py_latency_seconds, threshold_seconds: 2}
  - name: uptime
    slo_type: availability
    objective: 99.9
    uptime: {selector: 'up{job="api"}'}
  - name: gap
    slo_type: errors
    objective: 99
    ratio: {bad: 'gappy_requests_total{code="500"}', total: gappy_requests_total}
  - name: raw-errors
    slo_type: errors
    objective: 99
    raw:
      error_ratio: sum(rate(shop_requests_total{code=~"5.."}[$window])) / sum(rate(shop_requests_total[$window]))
"""

#: Prometheus's own PromQL for each SLO's SLI, written independently of sloeval's query builder.
REFERENCE_SLI: dict[str, str] = {
    "errors-by-endpoint": (
        '1 - (sum by (endpoint) (increase(shop_requests_total{code=~"5.."}[W]))'
        " or 0 * sum by (endpoint) (increase(shop_requests_total[W])))"
        " / sum by (endpoint) (increase(shop_requests_total[W]))"
    ),
    "success-ratio": 'sum(increase(shop_requests_total{code!~"5.."}[W])) / sum(increase(shop_requests_total[W]))',
    "after-reset": '1 - sum(increase(reset_requests_total{code="500"}[W])) / sum(increase(reset_requests_total[W]))',
    "idle": '1 - sum(increase(idle_requests_total{code="500"}[W])) / sum(increase(idle_requests_total[W]))',
    "stopped": '1 - sum(increase(stopped_requests_total{code="500"}[W])) / sum(increase(stopped_requests_total[W]))',
    "go-latency": 'sum(increase(go_latency_seconds_bucket{le="2"}[W])) / sum(increase(go_latency_seconds_count[W]))',
    "py-latency": 'sum(increase(py_latency_seconds_bucket{le="2.0"}[W])) / sum(increase(py_latency_seconds_count[W]))',
    "uptime": 'avg(avg_over_time(up{job="api"}[W]))',
    "gap": '1 - sum(increase(gappy_requests_total{code="500"}[W])) / sum(increase(gappy_requests_total[W]))',
    "raw-errors": '1 - sum(rate(shop_requests_total{code=~"5.."}[W])) / sum(rate(shop_requests_total[W]))',
}
