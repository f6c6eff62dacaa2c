"""End to end: the real daemon's /metrics has every metric the shipped dashboard and alerting
rules read, including the ones that only appear once an alert fires and a message goes out."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from devtools.servers import PrometheusServer
from devtools.telegram_stub import BotApiStub
from tests.e2e.conftest import samples, wait_until
from tests.shipped_monitoring import LABELS_READ, SCRAPE_METRICS, shipped_metric_names

pytestmark = pytest.mark.e2e

# On the session's backfilled month (tests/e2e/dataset.py): /a fails 1 request in ~1800, so
# the SLI is below 99.99 % and the alert fires in the first cycle; one SLO per kind of gauge.
SLO_FILE = """
service: shop
period: 30d
notify:
  routes:
    - {severity: [critical], channels: [telegram]}
  group_wait: 0s
slos:
  - name: errors-by-endpoint
    slo_type: errors
    objective: 99.99
    ratio: {bad: 'shop_requests_total{code=~"5.."}', total: shop_requests_total, group_by: [endpoint]}
    alerts:
      - name: SLIBelowObjective
        severity: critical
        sli_below: {window: 1h, threshold: 99.99}
  - name: success-ratio
    slo_type: availability
    objective: 99.5
    ratio: {good: 'shop_requests_total{code!~"5.."}', total: shop_requests_total}
  - name: go-latency
    slo_type: latency
    objective: 95
    latency: {histogram: go_latency_seconds, threshold_seconds: 2}
"""


def test_daemon_exports_every_metric_the_dashboard_and_rules_read(
    prometheus: PrometheusServer, tmp_path: Path, daemon_factory: Any
) -> None:
    wanted = set(shipped_metric_names()) - SCRAPE_METRICS
    assert "samokoder_slo_alert_firing" in wanted
    assert "sloeval_notifications_total" in wanted
    slo_file = tmp_path / "slos.yaml"
    slo_file.write_text(SLO_FILE, encoding="utf-8")
    with BotApiStub() as bot:
        daemon = daemon_factory(
            prometheus.url,
            slo_file,
            SLOEVAL_TELEGRAM_BOT_TOKEN=bot.token,
            SLOEVAL_TELEGRAM_CHAT_IDS="4242",
            SLOEVAL_TELEGRAM_API_URL=bot.url,
        )
        daemon.wait_for("/readyz", 200)
        (page,) = bot.wait_for_messages(1, timeout=15)
        assert "SLIBelowObjective" in page.text
        scraped: dict[str, list[tuple[dict[str, str], float]]] = {}

        def complete() -> bool:
            scraped.clear()
            scraped.update(samples(daemon.get("/metrics").text))
            return wanted <= scraped.keys()

        with contextlib.suppress(AssertionError):
            wait_until(complete, 10, "every metric the dashboard and rules read")
        assert sorted(wanted - scraped.keys()) == []
        for name, labels in LABELS_READ.items():
            assert all(labels <= sample_labels.keys() for sample_labels, _ in scraped[name]), name
        firing = scraped["samokoder_slo_alert_firing"]
        assert {(labels["alert"], labels["severity"]) for labels, _ in firing} == {("SLIBelowObjective", "critical")}
        sent = {
            (labels["channel"], labels["outcome"]): value for labels, value in scraped["sloeval_notifications_total"]
        }
        assert sent[("telegram", "sent")] >= 1
        assert daemon.stop() == 0
