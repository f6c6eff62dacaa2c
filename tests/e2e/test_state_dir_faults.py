"""A full state volume, at start and mid-run, on a real (tiny) tmpfs: clear errors, no crash loop."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.servers import free_port
from devtools.telegram_stub import BotApiStub
from tests.e2e.conftest import run_sloeval, sloeval_env

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def tiny_volume(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    path.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(volume: Path) -> Path:
    filler = volume / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(b"\0" * 4096)
            out.flush()
            os.fsync(out.fileno())
    return filler


SLO = """
service: shop
slos:
  - name: paged
    objective: 99
    ratio: {bad: 'shop_requests_total{code=~"5.."}', total: shop_requests_total}
    alerts: [{name: Always, severity: critical, budget_remaining_below: 101}]
"""


def test_full_state_volume_at_start_is_one_clear_error(prometheus: Any, tmp_path: Path) -> None:
    with tiny_volume(tmp_path / "vol", "64k") as volume:
        (volume / "state").mkdir()
        fill(volume)
        env = sloeval_env(
            prometheus.url,
            SLOEVAL_STATE_DIR=str(volume / "state"),
            SLOEVAL_HTTP_HOST="127.0.0.1",
            SLOEVAL_HTTP_PORT=str(free_port()),
        )
        result = run_sloeval(["run"], env, timeout=30)
    assert result.returncode == 1
    assert "cannot start" in result.stderr
    assert str(volume / "state") in result.stderr
    assert "full" in result.stderr or "No space" in result.stderr
    assert "Traceback" not in result.stderr


def test_read_only_state_volume_is_one_clear_error(prometheus: Any, tmp_path: Path) -> None:
    with tiny_volume(tmp_path / "ro", "64k", read_only=True) as volume:
        env = sloeval_env(
            prometheus.url,
            SLOEVAL_STATE_DIR=str(volume),
            SLOEVAL_HTTP_HOST="127.0.0.1",
            SLOEVAL_HTTP_PORT=str(free_port()),
        )
        result = run_sloeval(["run"], env, timeout=30)
    assert result.returncode == 1
    assert f"state directory {volume} is not writable" in result.stderr
    assert "Traceback" not in result.stderr


def test_volume_filling_up_mid_run_is_logged_and_recovers(prometheus: Any, tmp_path: Path, daemon_factory: Any) -> None:
    slo_file = tmp_path / "slos.yaml"
    slo_file.write_text(SLO)
    with tiny_volume(tmp_path / "vol", "1m") as volume, BotApiStub() as bot:
        state = volume / "state"
        # Start with the volume nearly full: the database opens, the first write does not fit.
        daemon = daemon_factory(
            prometheus.url,
            slo_file,
            SLOEVAL_STATE_DIR=str(state),
            SLOEVAL_TELEGRAM_BOT_TOKEN=bot.token,
            SLOEVAL_TELEGRAM_CHAT_IDS="5",
            SLOEVAL_TELEGRAM_API_URL=bot.url,
        )
        deadline = time.monotonic() + 10
        while not (state / "sloeval.sqlite3").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        filler = fill(volume)
        daemon.wait_for("/readyz", 200)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(e["event"] == "alert_state_not_saved" for e in daemon.events()):
            time.sleep(0.2)
        if bot.sent():
            pytest.skip("the first page fitted before the volume filled up; nothing to observe")
        assert any(e["event"] == "alert_state_not_saved" for e in daemon.events())
        assert daemon.process.poll() is None  # no crash
        assert daemon.get("/metrics").status_code == 200
        filler.unlink()  # space again: the page goes out
        (page,) = bot.wait_for_messages(1, timeout=20)
        assert page.text.startswith("<b>FIRING: paged")
        assert daemon.stop() == 0
