"""Process life: config reload (file change, SIGHUP, invalid file), SIGTERM while sending,
and the SLODataMissing meta alert when Prometheus is gone and when it is back."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.servers import PrometheusServer, free_port
from devtools.telegram_stub import BotApiStub
from sloeval.config.slo_file import load_slo_file
from tests.e2e.conftest import samples, wait_until

pytestmark = pytest.mark.e2e

ONE_SLO = """
service: shop
slos:
  - name: {name}
    objective: 99
    ratio: {{bad: 'shop_requests_total{{code=~"5.."}}', total: shop_requests_total}}
    alerts: [{{name: Always, severity: critical, budget_remaining_below: 101}}]
"""


def budget_slos(daemon: Any) -> set[str]:
    rows = samples(daemon.get("/metrics").text).get("samokoder_error_budget_remaining_percent", [])
    return {labels["slo"] for labels, _ in rows}


def test_reload_on_change_and_on_sighup_keeps_old_config_when_invalid(
    prometheus: Any, tmp_path: Path, daemon_factory: Any
) -> None:
    slo_file = tmp_path / "slos.yaml"
    slo_file.write_text(ONE_SLO.format(name="first"))
    daemon = daemon_factory(prometheus.url, slo_file)
    daemon.wait_for("/readyz", 200)
    wait_until(lambda: budget_slos(daemon) == {"first"}, 10, "first SLO exported")

    slo_file.write_text(ONE_SLO.format(name="second"))  # changed file: picked up within a cycle or two
    wait_until(lambda: budget_slos(daemon) == {"second"}, 10, "reloaded SLO exported")

    slo_file.write_text("service: shop\nslos:\n  - name: broken\n    objective: 120\n")
    wait_until(lambda: any(e["event"] == "config_reload_rejected" for e in daemon.events()), 10, "rejection")
    rejected = next(e for e in daemon.events() if e["event"] == "config_reload_rejected")
    assert 'slo "broken"' in rejected["error"]
    assert "objective" in rejected["error"]
    time.sleep(2)
    assert budget_slos(daemon) == {"second"}  # the old config keeps running
    assert daemon.process.poll() is None

    # SIGHUP re-reads even an unchanged file; a valid file then replaces the running one.
    slo_file.write_text(ONE_SLO.format(name="third"))
    daemon.process.send_signal(signal.SIGHUP)
    wait_until(lambda: budget_slos(daemon) == {"third"}, 10, "SIGHUP reload")
    assert any(e["event"] == "reload_requested" for e in daemon.events())
    assert daemon.stop() == 0


def test_sigterm_while_sending_exits_fast_and_keeps_the_message(
    prometheus: Any, tmp_path: Path, daemon_factory: Any
) -> None:
    slo_file = tmp_path / "slos.yaml"
    slo_file.write_text(ONE_SLO.format(name="paged"))
    state = tmp_path / "state"
    with BotApiStub() as slow:
        slow.set_delay(30)  # the Bot API hangs while the page is in flight
        env = {
            "SLOEVAL_STATE_DIR": str(state),
            "SLOEVAL_TELEGRAM_BOT_TOKEN": slow.token,
            "SLOEVAL_TELEGRAM_CHAT_IDS": "7",
            "SLOEVAL_TELEGRAM_API_URL": slow.url,
        }
        daemon = daemon_factory(prometheus.url, slo_file, **env)
        wait_until(lambda: len(slow.requests) >= 1, 20, "a delivery attempt in flight")
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 10
    with sqlite3.connect(state / "sloeval.sqlite3") as db:
        pending = db.execute("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").fetchone()[0]
    assert pending == 1  # not lost, not marked sent
    with BotApiStub() as bot:
        env.update({"SLOEVAL_TELEGRAM_API_URL": bot.url, "SLOEVAL_TELEGRAM_BOT_TOKEN": bot.token})
        restarted = daemon_factory(prometheus.url, slo_file, **env)
        (page,) = bot.wait_for_messages(1, timeout=20)
        assert page.text.startswith("<b>FIRING: paged")
        time.sleep(2)
        assert len(bot.sent()) == 1  # the alert itself is not paged again
        assert restarted.stop() == 0


def test_slo_data_missing_fires_after_the_delay_and_resolves_when_data_is_back(
    tmp_path: Path, slo_file: Path, daemon_factory: Any
) -> None:
    port = free_port()
    config = tmp_path / "slos.yaml"
    config.write_text(
        slo_file.read_text().replace(
            "service: shop\n", "service: shop\nnotify: {routes: [{severity: [warning], channels: [telegram]}]}\n"
        )
    )
    with BotApiStub() as bot:
        daemon = daemon_factory(
            f"http://127.0.0.1:{port}",
            config,
            SLOEVAL_STALE_ALERT_AFTER="3",
            SLOEVAL_QUERY_ATTEMPTS="1",
            SLOEVAL_TELEGRAM_BOT_TOKEN=bot.token,
            SLOEVAL_TELEGRAM_CHAT_IDS="9",
            SLOEVAL_TELEGRAM_API_URL=bot.url,
            SLOEVAL_TELEGRAM_MIN_INTERVAL="0",
        )
        daemon.wait_for("/healthz", 200)
        time.sleep(1.5)
        assert bot.sent() == []  # not before STALE_ALERT_AFTER
        count = len(load_slo_file(config).slos)
        pages = bot.wait_for_messages(count, timeout=20)  # one per SLO of the file
        assert all("SLODataMissing" in p.text and p.text.startswith("<b>FIRING") for p in pages)
        assert all("no data from Prometheus" in p.text for p in pages)
        time.sleep(2)
        assert len(bot.sent()) == count  # no repeats within repeat_interval

        server = PrometheusServer(tmp_path / "prom")
        server.port, server.url = port, f"http://127.0.0.1:{port}"
        with server:
            resolved = bot.wait_for_messages(2 * count, timeout=30)[count:]
            assert all(p.text.startswith("<b>RESOLVED") and "SLODataMissing" in p.text for p in resolved)
        assert daemon.stop() == 0


def test_turning_tls_verification_off_is_logged_as_a_warning(
    prometheus: Any, slo_file: Path, daemon_factory: Any
) -> None:
    daemon = daemon_factory(
        prometheus.url,
        slo_file,
        SLOEVAL_PROMETHEUS_TLS_VERIFY="false",
        SLOEVAL_SMTP_TLS_VERIFY="false",
        SLOEVAL_SMTP_HOST="127.0.0.1",
        SLOEVAL_SMTP_PORT=str(free_port()),
        SLOEVAL_EMAIL_TO="oncall@shop.test",
    )
    daemon.wait_for("/readyz", 200)
    assert daemon.stop() == 0
    warnings = {e["event"] for e in daemon.events() if e["level"] == "warning"}
    assert {"prometheus_tls_verification_disabled", "smtp_tls_verification_disabled"} <= warnings
