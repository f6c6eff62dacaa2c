"""One sloeval per state directory, and a state file deleted under a running daemon: pages stay single."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from devtools.telegram_stub import BotApiStub
from tests.e2e.conftest import samples, wait_until

pytestmark = pytest.mark.e2e

SLO = """
service: shop
notify: {group_wait: 0s}
slos:
  - name: paged
    objective: 99
    ratio: {bad: 'shop_requests_total{code=~"5.."}', total: shop_requests_total}
    alerts: [{name: Always, severity: critical, budget_remaining_below: 101}]
"""


def telegram_env(bot: BotApiStub, state: Path) -> dict[str, str]:
    return {
        "SLOEVAL_STATE_DIR": str(state),
        "SLOEVAL_TELEGRAM_BOT_TOKEN": bot.token,
        "SLOEVAL_TELEGRAM_CHAT_IDS": "7",
        "SLOEVAL_TELEGRAM_API_URL": bot.url,
        "SLOEVAL_TELEGRAM_MIN_INTERVAL": "0",
    }


def metric(daemon: Any, name: str, **labels: str) -> float | None:
    for found, value in samples(daemon.get("/metrics").text).get(name, []):
        if labels.items() <= found.items():
            return value
    return None


def test_second_daemon_on_the_same_state_is_refused_and_the_alert_pages_once(
    prometheus: Any, tmp_path: Path, daemon_factory: Any
) -> None:
    slo_file = tmp_path / "slos.yaml"
    slo_file.write_text(SLO)
    with BotApiStub() as bot:
        env = telegram_env(bot, tmp_path / "state")
        first = daemon_factory(prometheus.url, slo_file, **env)
        first.wait_for("/readyz", 200)
        second = daemon_factory(prometheus.url, slo_file, **env)
        assert second.process.wait(timeout=20) == 1
        (page,) = bot.wait_for_messages(1, timeout=20)
        time.sleep(3)
        assert len(bot.sent()) == 1, [m.text for m in bot.sent()]
        assert page.text.startswith("<b>FIRING: paged")
        assert first.stop() == 0
    refusal = f"sloeval: cannot start: state directory {tmp_path / 'state'} is in use by another sloeval (pid "
    assert f"{refusal}{first.process.pid})" in second.log().splitlines()
    assert "Traceback" not in second.log()


def test_state_file_deleted_while_running_is_rewritten_so_a_restart_pages_no_second_time(
    prometheus: Any, tmp_path: Path, daemon_factory: Any
) -> None:
    slo_file = tmp_path / "slos.yaml"
    slo_file.write_text(SLO)
    state = tmp_path / "state"
    with BotApiStub() as bot:
        env = telegram_env(bot, state)
        daemon = daemon_factory(prometheus.url, slo_file, **env)
        (page,) = bot.wait_for_messages(1, timeout=30)
        assert page.text.startswith("<b>FIRING: paged")
        wait_until(lambda: metric(daemon, "sloeval_notifications_total", outcome="sent") == 1, 10, "delivery recorded")
        assert metric(daemon, "sloeval_state_store_errors_total", kind="file_missing") == 0

        (state / "sloeval.sqlite3").unlink()  # e.g. a clean-up job, or a volume remounted under the daemon
        wait_until(
            lambda: metric(daemon, "sloeval_state_store_errors_total", kind="file_missing") == 1, 10, "loss counted"
        )
        wait_until(lambda: (state / "sloeval.sqlite3").exists(), 10, "a new state file")
        [event] = [e for e in daemon.events() if e["event"] == "state_file_recreated"]
        assert (event["level"], event["reason"]) == ("error", "file_missing")
        time.sleep(2)
        assert metric(daemon, "sloeval_state_store_errors_total", kind="file_missing") == 1  # once, not per cycle
        assert daemon.stop() == 0

        restarted = daemon_factory(prometheus.url, slo_file, **env)
        restarted.wait_for("/readyz", 200)
        time.sleep(4)  # several 1 s cycles with the alert still firing (a fresh state pages within 2)
        assert len(bot.sent()) == 1, [m.text for m in bot.sent()]
        restored = [e for e in restarted.events() if e["event"] == "alert_state_restored"]
        assert restored
        assert restored[0]["firing"] == 1
        assert restarted.stop() == 0
