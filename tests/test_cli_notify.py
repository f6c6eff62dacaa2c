"""`sloeval notify-test` and start-up errors, as a user runs them (subprocess, real peers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from devtools.servers import free_port
from devtools.smtp_server import SmtpServer
from devtools.telegram_stub import BotApiStub

REPO = Path(__file__).resolve().parent.parent


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLOEVAL_")}
    return subprocess.run(
        [sys.executable, "-m", "sloeval", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_notify_test_reaches_every_recipient_of_both_channels() -> None:
    with BotApiStub() as bot, SmtpServer(tls="starttls", username="u", password="pw-secret") as smtp:
        assert smtp.ca_file is not None
        result = run(
            ["notify-test"],
            SLOEVAL_TELEGRAM_BOT_TOKEN=bot.token,
            SLOEVAL_TELEGRAM_CHAT_IDS="11,22",
            SLOEVAL_TELEGRAM_API_URL=bot.url,
            SLOEVAL_TELEGRAM_MIN_INTERVAL="0",
            SLOEVAL_SMTP_HOST="127.0.0.1",
            SLOEVAL_SMTP_PORT=str(smtp.port),
            SLOEVAL_SMTP_USERNAME="u",
            SLOEVAL_SMTP_PASSWORD="pw-secret",
            SLOEVAL_SMTP_CA_FILE=str(smtp.ca_file),
            SLOEVAL_EMAIL_TO="a@x.test,b@x.test",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert sorted(m.chat_id for m in bot.sent()) == ["11", "22"]
        assert sorted(r for mail in smtp.received() for r in mail.rcpt_tos) == ["a@x.test", "b@x.test"]
        assert all("[TEST]" in mail.message["Subject"] for mail in smtp.received())
        assert result.stdout.count(": sent") == 4
        assert bot.token not in result.stdout + result.stderr
        assert "pw-secret" not in result.stdout + result.stderr


def test_notify_test_fails_with_the_reason() -> None:
    with BotApiStub() as bot:
        bot.fail_next("sendMessage", status=403, description="Forbidden: bot was kicked from the group chat")
        result = run(
            ["notify-test", "--channel", "telegram"],
            SLOEVAL_TELEGRAM_BOT_TOKEN=bot.token,
            SLOEVAL_TELEGRAM_CHAT_IDS="-100123",
            SLOEVAL_TELEGRAM_API_URL=bot.url,
        )
    assert result.returncode == 1
    assert "telegram -> -100123: FAILED (permanent)" in result.stdout
    assert "kicked" in result.stdout
    assert bot.token not in result.stdout + result.stderr


def test_notify_test_without_channels_says_what_to_set() -> None:
    result = run(["notify-test", "--channel", "email"])
    assert result.returncode == 1
    assert "SLOEVAL_SMTP_" in result.stderr
    assert "Traceback" not in result.stderr


def test_unusable_state_dir_is_a_clear_start_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run(
        ["run"],
        SLOEVAL_STATE_DIR=str(blocker / "state"),
        SLOEVAL_HTTP_HOST="127.0.0.1",
        SLOEVAL_HTTP_PORT=str(free_port()),
        SLOEVAL_PROMETHEUS_URL=f"http://127.0.0.1:{free_port()}",
    )
    assert result.returncode == 1
    assert "cannot start" in result.stderr
    assert str(blocker / "state") in result.stderr
    assert "Traceback" not in result.stderr


def test_notify_test_reports_an_unreadable_bot_api_answer_in_one_line() -> None:
    with BotApiStub() as bot:
        bot.answer_next("sendMessage", result={"message_id": 1})  # "ok", but no message python-telegram-bot can read
        result = run(
            ["notify-test", "--channel", "telegram"],
            SLOEVAL_TELEGRAM_BOT_TOKEN=bot.token,
            SLOEVAL_TELEGRAM_CHAT_IDS="11,22",
            SLOEVAL_TELEGRAM_API_URL=bot.url,
            SLOEVAL_TELEGRAM_MIN_INTERVAL="0",
        )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("telegram -> 11: FAILED (temporary): Telegram answered with a result that cannot")
    assert lines[1:] == ["telegram -> 22: sent"]
    assert "Traceback" not in result.stderr
    assert bot.token not in result.stdout + result.stderr


def start_daemon(state_dir: Path, port: int, stderr: IO[bytes] | int) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLOEVAL_")}
    env = {
        **clean,
        "SLOEVAL_STATE_DIR": str(state_dir),
        "SLOEVAL_HTTP_HOST": "127.0.0.1",
        "SLOEVAL_HTTP_PORT": str(port),
        "SLOEVAL_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",  # nothing there: the daemon runs all the same
    }
    return subprocess.Popen([sys.executable, "-m", "sloeval", "run"], env=env, cwd=REPO, stderr=stderr)


def wait_healthy(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"sloeval run ended with {process.returncode}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("sloeval run never answered /healthz")


def test_second_run_on_the_same_state_dir_is_refused_until_the_first_exits(tmp_path: Path) -> None:
    state, first_port = tmp_path / "state", free_port()
    first = start_daemon(state, first_port, subprocess.DEVNULL)
    try:
        wait_healthy(first_port, first)
        second = run(
            ["run"],
            SLOEVAL_STATE_DIR=str(state),
            SLOEVAL_HTTP_HOST="127.0.0.1",
            SLOEVAL_HTTP_PORT=str(free_port()),
            SLOEVAL_PROMETHEUS_URL=f"http://127.0.0.1:{free_port()}",
        )
        assert first.poll() is None  # the first one is not disturbed
    finally:
        first.terminate()
        first_code = first.wait(timeout=10)
    assert second.returncode == 1
    refusal = f"sloeval: cannot start: state directory {state} is in use by another sloeval (pid {first.pid})"
    assert refusal in second.stderr.splitlines()
    assert "Traceback" not in second.stderr
    assert first_code == 0
    third_port = free_port()  # the lock goes with the process that held it
    third = start_daemon(state, third_port, subprocess.DEVNULL)
    try:
        wait_healthy(third_port, third)
    finally:
        third.terminate()
        assert third.wait(timeout=10) == 0
