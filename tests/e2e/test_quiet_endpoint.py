"""An incident whose traffic stops: one FIRING, no repeat while nothing is measured, then its RESOLVED.

A live exporter on loopback, scraped every second by a real Prometheus, burns the error budget
until the page arrives, then receives no more requests (its counters stay where they are, as a
dead endpoint's do). sloeval must not repeat the page with the last burning numbers, and must
resolve it once the rule's long window has had no traffic, saying so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from devtools.request_counter import RequestCounter
from devtools.servers import PrometheusServer
from devtools.telegram_stub import BotApiStub

pytestmark = pytest.mark.e2e

SLO_FILE = """
service: shop
period: 10m
notify:
  routes: [{severity: [critical], channels: [telegram]}]
  repeat_interval: 20s
  group_wait: 0s
slos:
  - name: checkout
    objective: 99
    ratio: {bad: 'shop_requests_total{code="500"}', total: shop_requests_total}
    alerts:
      - {name: FastBurn, severity: critical, burn_rate: {long: 30s, short: 10s, factor: 2}}
"""


def test_an_incident_whose_traffic_stops_resolves_without_stale_repeats(tmp_path: Path, daemon_factory: Any) -> None:
    counter = RequestCounter()
    counter.start()
    slo_file = tmp_path / "slos.yaml"
    slo_file.write_text(SLO_FILE)
    try:
        counter.set_rates(ok_per_second=20, errors_per_second=20)  # half the requests fail
        scrape = [{"job_name": "shop", "static_configs": [{"targets": [f"127.0.0.1:{counter.port}"]}]}]
        with (
            PrometheusServer(tmp_path / "prometheus", scrape_configs=scrape, scrape_interval="1s") as prometheus,
            BotApiStub() as bot,
        ):
            daemon = daemon_factory(
                prometheus.url,
                slo_file,
                SLOEVAL_TELEGRAM_BOT_TOKEN=bot.token,
                SLOEVAL_TELEGRAM_CHAT_IDS="42",
                SLOEVAL_TELEGRAM_API_URL=bot.url,
            )
            (firing,) = bot.wait_for_messages(1, timeout=90)
            counter.set_rates(ok_per_second=0, errors_per_second=0)  # the endpoint goes quiet
            quiet_at = time.monotonic()
            assert "FIRING FastBurn" in firing.text
            assert "(repeat)" not in firing.text

            # The 10s window empties after ~10 s, then the 30s window must stay empty for 30 s more.
            messages = bot.wait_for_messages(2, timeout=120)
            resolved = messages[1]
            waited = time.monotonic() - quiet_at
            assert resolved.text.startswith("<b>RESOLVED: checkout"), resolved.text
            assert "no traffic in the 30s window since" in resolved.text
            assert "burn rate:" not in resolved.text  # no numbers from before the quiet
            assert waited >= 30, f"resolved {waited:.0f}s after the traffic stopped, before the 30s window passed"
            time.sleep(25)  # a repeat_interval and more: nothing else comes
            assert [m.text.split("\n")[0] for m in bot.messages] == [
                firing.text.split("\n")[0],
                resolved.text.split("\n")[0],
            ]
            events = [e["event"] for e in daemon.events()]
            assert "alert_notification" in events
            assert daemon.stop() == 0
    finally:
        counter.stop()
