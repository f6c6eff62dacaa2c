"""``make demo``: a real Prometheus with a week of Samokoder-shaped traffic, evaluated by sloeval.

Steps: generate traffic (with an outage, an error burst, a latency incident and a
fresh burst right now), backfill it with promtool, start Prometheus on a loopback
port, then run ``sloeval check --online``, ``sloeval eval`` and ``sloeval run``
(showing its /metrics) against it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devtools.samokoder_data import samokoder_dataset
from devtools.servers import PrometheusServer, free_port
from devtools.smtp_server import SmtpServer
from devtools.telegram_stub import BotApiStub
from devtools.tsdb import write_prometheus_blocks

REPO = Path(__file__).resolve().parent.parent
SHOWN_METRICS = (
    "samokoder_error_budget_remaining_percent",
    "samokoder_error_budget_burn_rate",
    "samokoder_availability_slo_current",
    "samokoder_availability_slo_target",
    "samokoder_latency_slo_target_seconds",
    "samokoder_slo_alert_firing",
    "sloeval_slo_data_stale",
    "sloeval_last_evaluation_success_timestamp_seconds",
)


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def sloeval(args: list[str], env: dict[str, str]) -> int:
    print(f"$ sloeval {' '.join(args)}", flush=True)
    return subprocess.run([sys.executable, "-m", "sloeval", *args], env=env, cwd=REPO, check=False).returncode


def run_daemon(env: dict[str, str], interval: float) -> None:
    """``sloeval run`` with Telegram and email pointed at local stand-ins; show /metrics and the messages."""
    port = free_port()
    with BotApiStub() as bot, SmtpServer(tls="none") as smtp:
        env = {
            **env,
            "SLOEVAL_HTTP_HOST": "127.0.0.1",
            "SLOEVAL_HTTP_PORT": str(port),
            "SLOEVAL_EVAL_INTERVAL": str(interval),
            "SLOEVAL_TELEGRAM_BOT_TOKEN": bot.token,
            "SLOEVAL_TELEGRAM_CHAT_IDS": "100200300",
            "SLOEVAL_TELEGRAM_API_URL": bot.url,
            "SLOEVAL_SMTP_HOST": "127.0.0.1",
            "SLOEVAL_SMTP_PORT": str(smtp.port),
            "SLOEVAL_SMTP_TLS": "none",
            "SLOEVAL_EMAIL_FROM": "sloeval@samokoder.local",
            "SLOEVAL_EMAIL_TO": "oncall@samokoder.local",
        }
        print(f"$ sloeval run   (on 127.0.0.1:{port}, one cycle every {interval:g} s)", flush=True)
        process = subprocess.Popen([sys.executable, "-m", "sloeval", "run"], env=env, cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None:
                    raise SystemExit("sloeval run exited early")
                time.sleep(0.3)
            else:
                raise SystemExit("sloeval run did not become ready within 60 s")
            banner(f"GET http://127.0.0.1:{port}/metrics (SLO gauges, alerts and own health)")
            body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            for line in body.splitlines():
                # Burn rates exist for every window; the 1 h one is enough to see the shape.
                if line.startswith(SHOWN_METRICS) and ("_burn_rate{" not in line or 'window="1h"' in line):
                    print(line)
            _show_messages(bot, smtp)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)


def _show_messages(bot: BotApiStub, smtp: SmtpServer) -> None:
    # Messages leave through the outbox right after the first cycle; give them a moment.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (bot.sent() and smtp.received()):
        time.sleep(0.3)
    time.sleep(2)
    banner("Telegram messages, as received by the LOCAL Bot API stand-in (not sent to Telegram)")
    for message in bot.sent():
        print(f"--- to chat {message.chat_id} (parse_mode={message.parse_mode}) ---")
        print(message.text)
    if not bot.sent():
        print("(none)")
    banner("Emails, as received by the LOCAL SMTP sink (not sent anywhere)")
    for mail in smtp.received():
        print(f"--- to {', '.join(mail.rcpt_tos)}: {mail.message['Subject']} ---")
        body = mail.message.get_body(preferencelist=("plain",))
        print(body.get_content() if body is not None else "")
    if not smtp.received():
        print("(none)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=float, default=7.0, help="days of history to generate")
    parser.add_argument("--workdir", type=Path, default=REPO / ".demo")
    args = parser.parse_args()

    end = int(time.time()) // 60 * 60 - 60
    data_dir = args.workdir / "prometheus-data"
    shutil.rmtree(args.workdir, ignore_errors=True)
    data_dir.mkdir(parents=True)

    banner(f"Generating {args.days:g} days of Samokoder API traffic (with incidents) and backfilling it")
    started = time.monotonic()
    series = samokoder_dataset(end, days=args.days)
    write_prometheus_blocks(series, data_dir)
    samples = sum(len(s.samples) for s in series)
    print(f"{len(series)} series, {samples:,} samples, in {time.monotonic() - started:.1f} s")

    with PrometheusServer(data_dir) as prometheus:
        print(f"Prometheus {prometheus.url} (loopback only)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLOEVAL_")}
        env.update(
            {
                "SLOEVAL_PROMETHEUS_URL": prometheus.url,
                "SLOEVAL_SLO_FILE": str(REPO / "config" / "slos.yaml"),
                "SLOEVAL_LOG_FORMAT": "console",
                "SLOEVAL_LOG_LEVEL": "warning",
                "SLOEVAL_STATE_DIR": str(args.workdir / "state"),
            }
        )
        banner("Config check against the live data")
        if sloeval(["check", "--online"], env) != 0:
            return 1
        banner("SLO table (30 d period; the history starts a week ago)")
        if sloeval(["eval", "--format", "table"], env) != 0:
            return 1
        banner("The daemon")
        run_daemon(env, interval=5.0)
    print("\nDone. Run `make test` for the test-suite.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
