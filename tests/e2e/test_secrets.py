"""End to end: no secret ever leaves sloeval except to the server it is meant for.

Every secret is set at once (Prometheus basic auth and bearer token, the Telegram bot token, the
SMTP password), logging is at debug, and sloeval runs through the daemon (a page that fails once
per channel, then goes out), ``eval``, ``check --online`` and ``notify-test`` (successes, a
rejected token, SMTP 4xx, an unreachable Bot API), plus failing start-ups. Everything any
process printed, every body the daemon served, and every message the Bot API stand-in and the
SMTP server received is searched for each secret: as is, lower- and upper-cased, URL-encoded,
base64-encoded as it goes on the wire (HTTP basic auth, SMTP AUTH PLAIN/LOGIN), and for a
distinctive fragment of it (a secret that is only partly masked still leaks).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from devtools.servers import PrometheusServer, free_port
from devtools.smtp_server import SmtpServer
from devtools.telegram_stub import BotApiStub
from tests.e2e.conftest import REPO, Daemon, run_sloeval, samples, sloeval_env, wait_until

pytestmark = pytest.mark.e2e

PROMETHEUS_USER = "sloeval-reader"
SMTP_USER = "alerts@shop.test"
# Mixed case and characters that URL-encoding changes; each has a fragment no other text contains.
SECRETS = {
    "SLOEVAL_PROMETHEUS_PASSWORD": ("PromPw-Kx7q/Vb+Zt&Eq=9%Lm", "Kx7q/Vb"),
    "SLOEVAL_PROMETHEUS_BEARER_TOKEN": ("PromBearer.Rj4Wn8Hs2Tc6Yd0Fa", "Rj4Wn8Hs"),
    "SLOEVAL_TELEGRAM_BOT_TOKEN": ("730012345:AAHtgTok_Qp3Mz5Vx7Nc9Bd1Gh2Jk4", "Qp3Mz5Vx"),
    "SLOEVAL_SMTP_PASSWORD": ("SmtpPw!Hq4#Rt8$Yu2^Io6 Wz", "Hq4#Rt8"),
}
TOKEN = SECRETS["SLOEVAL_TELEGRAM_BOT_TOKEN"][0]
SMTP_PASSWORD = SECRETS["SLOEVAL_SMTP_PASSWORD"][0]

SLO_FILE = """\
service: shop
period: 30d
notify:
  routes:
    - {severity: [critical], channels: [telegram, email]}
  group_wait: 0s
  dashboard_url: http://grafana.local/d/slo?var-slo={slo}
slos:
  - name: shop-errors
    slo_type: errors
    objective: 99
    ratio: {bad: 'shop_requests_total{code=~"5.."}', total: shop_requests_total}
    alerts:
      - name: BudgetAlwaysLow      # the budget left is at most 100 %: fires in the first cycle
        severity: critical
        budget_remaining_below: 101
"""


def forms(secret: str, fragment: str) -> set[str]:
    """Every spelling of ``secret`` that must not appear anywhere."""
    spellings = {secret, secret.lower(), secret.upper(), fragment, fragment.lower(), fragment.upper()}
    for text in (secret, fragment):
        for encoded in (quote(text, safe=""), quote(text), quote_plus(text)):
            spellings |= {encoded, encoded.lower(), encoded.upper()}
        spellings.add(json.dumps(text)[1:-1])
        spellings.add(base64.b64encode(text.encode()).decode())
    for user in (PROMETHEUS_USER, SMTP_USER):
        spellings.add(base64.b64encode(f"{user}:{secret}".encode()).decode())  # HTTP basic auth
        spellings.add(base64.b64encode(f"\0{user}\0{secret}".encode()).decode())  # SMTP AUTH PLAIN
    return spellings


FORBIDDEN = {name: forms(secret, fragment) for name, (secret, fragment) in SECRETS.items()}


class Transcript:
    """Everything sloeval printed or served, labelled by where it came from."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str | bytes) -> None:
        self.texts.append((where, text.decode("utf-8", "replace") if isinstance(text, bytes) else text))

    def add_run(self, where: str, result: subprocess.CompletedProcess[str]) -> None:
        self.add(f"{where} stdout", result.stdout)
        self.add(f"{where} stderr", result.stderr)

    def leaks(self) -> list[str]:
        found = []
        for where, text in self.texts:
            for name, spellings in FORBIDDEN.items():
                for spelling in spellings:
                    if spelling in text:
                        at = text.index(spelling)
                        found.append(f"{name} as {spelling!r} in {where}: ...{text[max(0, at - 80) : at + 80]!r}...")
        return found


class FullDaemon(Daemon):
    """``sloeval run`` with stdout captured too (the conftest one keeps only stderr)."""

    def start(self) -> None:
        self.stdout_path = self.stderr_path.with_suffix(".stdout")
        with self.stderr_path.open("wb") as stderr, self.stdout_path.open("wb") as stdout:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sloeval", "run"],
                env=self.env,
                cwd=REPO,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")


@pytest.fixture
def bot() -> Iterator[BotApiStub]:
    with BotApiStub(token=TOKEN) as stub:
        yield stub


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer(tls="starttls", username=SMTP_USER, password=SMTP_PASSWORD) as server:
        yield server


def secret_env(prometheus: PrometheusServer, bot: BotApiStub, smtp: SmtpServer, tmp_path: Path) -> dict[str, str]:
    slo_file = tmp_path / "slos.yaml"
    slo_file.write_text(SLO_FILE, encoding="utf-8")
    assert smtp.ca_file is not None
    return sloeval_env(
        prometheus.url,
        SLOEVAL_LOG_LEVEL="debug",
        SLOEVAL_SLO_FILE=str(slo_file),
        SLOEVAL_STATE_DIR=str(tmp_path / "state"),
        SLOEVAL_PROMETHEUS_USERNAME=PROMETHEUS_USER,  # Prometheus here has no auth: it ignores it
        SLOEVAL_PROMETHEUS_PASSWORD=SECRETS["SLOEVAL_PROMETHEUS_PASSWORD"][0],
        SLOEVAL_TELEGRAM_BOT_TOKEN=TOKEN,
        SLOEVAL_TELEGRAM_CHAT_IDS="4242,-100777",
        SLOEVAL_TELEGRAM_API_URL=bot.url,
        SLOEVAL_TELEGRAM_MIN_INTERVAL="0.2",
        SLOEVAL_SMTP_HOST="127.0.0.1",
        SLOEVAL_SMTP_PORT=str(smtp.port),
        SLOEVAL_SMTP_TLS="starttls",
        SLOEVAL_SMTP_USERNAME=SMTP_USER,
        SLOEVAL_SMTP_PASSWORD=SMTP_PASSWORD,
        SLOEVAL_SMTP_CA_FILE=str(smtp.ca_file),
        SLOEVAL_EMAIL_FROM="sloeval@shop.test",
        SLOEVAL_EMAIL_TO="oncall@shop.test",
        SLOEVAL_NOTIFY_TIMEOUT="5",
    )


def notification_counts(daemon: Daemon) -> dict[tuple[str, str], float]:
    rows = samples(daemon.get("/metrics").text).get("sloeval_notifications_total", [])
    return {(labels["channel"], labels["outcome"]): value for labels, value in rows}


def received_texts(bot: BotApiStub, smtp: SmtpServer, transcript: Transcript) -> None:
    """What the servers got besides the credentials themselves: message texts, form fields, mail."""
    for token, method, params in bot.requests:
        assert token == TOKEN  # the token goes in the URL, to the Bot API only
        transcript.add(f"Bot API {method} params", json.dumps(params, default=str))
    for mail in smtp.received():
        transcript.add(f"mail {mail.message['Subject']!r}", mail.data)


def test_no_secret_leaks_from_any_command_or_message(
    prometheus: PrometheusServer, bot: BotApiStub, smtp: SmtpServer, tmp_path: Path
) -> None:
    env = secret_env(prometheus, bot, smtp, tmp_path)
    transcript = Transcript()

    # The CLI commands, with every secret set.
    result = run_sloeval(["check"], env)
    assert result.returncode == 0, result.stderr
    transcript.add_run("check", result)
    result = run_sloeval(["check", "--online"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    transcript.add_run("check --online", result)
    for fmt in ("table", "json"):
        result = run_sloeval(["eval", "--format", fmt], env)
        assert result.returncode == 0, result.stderr
        assert "shop-errors" in result.stdout
        transcript.add_run(f"eval --format {fmt}", result)
    bearer = SECRETS["SLOEVAL_PROMETHEUS_BEARER_TOKEN"][0]
    both = {**env, "SLOEVAL_PROMETHEUS_BEARER_TOKEN": bearer}
    result = run_sloeval(["eval"], both)  # basic auth and a bearer token: refused, not silently one of them
    assert result.returncode == 1
    assert "not both" in result.stderr
    transcript.add_run("eval (both auths)", result)
    bearer_only = {
        k: v for k, v in both.items() if k not in ("SLOEVAL_PROMETHEUS_USERNAME", "SLOEVAL_PROMETHEUS_PASSWORD")
    }
    result = run_sloeval(["eval", "--format", "json"], bearer_only)  # the bearer token actually sent
    assert result.returncode == 0, result.stderr
    transcript.add_run("eval (bearer only)", result)
    unreachable = {**env, "SLOEVAL_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}", "SLOEVAL_QUERY_ATTEMPTS": "1"}
    for args in (["eval"], ["check", "--online"]):
        result = run_sloeval(args, unreachable)
        transcript.add_run(f"{' '.join(args)} (Prometheus unreachable)", result)
    result = run_sloeval(["notify-test"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": sent") == 3, result.stdout  # two chats, one address
    transcript.add_run("notify-test", result)

    # notify-test failing every way it can: token rejected (PTB's message quotes the token),
    # Bot API 500, SMTP 451 and 550, and a Bot API that is not there.
    bot.fail_next("getMe", status=401)
    smtp.fail_next(stage="mail", code=451, message="4.3.0 Try again later")
    result = run_sloeval(["notify-test"], env)
    assert result.returncode == 1
    assert "FAILED" in result.stdout
    transcript.add_run("notify-test (token rejected, SMTP 451)", result)
    bot.fail_next("sendMessage", status=500, times=2)
    smtp.fail_next(stage="rcpt", code=550, message="5.1.1 No such user")
    result = run_sloeval(["notify-test"], env)
    assert result.returncode == 1
    transcript.add_run("notify-test (Bot API 500, SMTP 550)", result)
    gone = {**env, "SLOEVAL_TELEGRAM_API_URL": f"http://127.0.0.1:{free_port()}"}
    result = run_sloeval(["notify-test", "--channel", "telegram"], gone)
    assert result.returncode == 1
    transcript.add_run("notify-test (Bot API unreachable)", result)

    # Start-up failures print settings errors: they must name variables, not values.
    result = run_sloeval(["run"], {**env, "SLOEVAL_EVAL_INTERVAL": "-1"})
    assert result.returncode == 1
    assert "SLOEVAL_EVAL_INTERVAL" in result.stderr
    transcript.add_run("run (invalid settings)", result)
    result = run_sloeval(["run"], {**env, "SLOEVAL_SMTP_PASSWORD_FILE": str(tmp_path / "missing")})
    assert result.returncode == 1
    transcript.add_run("run (secret file missing)", result)

    # The daemon: the page fails once on each channel (Bot API 500, SMTP 451), is retried, goes out.
    bot.reset()
    smtp.reset()
    bot.fail_next("sendMessage", status=500, description="Internal Server Error: try later")
    smtp.fail_next(stage="data", code=451, message="4.7.1 Greylisted, try again")
    daemon = FullDaemon(prometheus.url, Path(env["SLOEVAL_SLO_FILE"]), tmp_path, **env)
    daemon.start()
    try:
        daemon.wait_for("/readyz", 200)
        bot.wait_for_messages(2, timeout=30)
        smtp.wait_for(1, timeout=30)
        wait_until(
            lambda: (
                notification_counts(daemon).get(("telegram", "sent")) == 2
                and notification_counts(daemon).get(("email", "sent")) == 1
            ),
            20,
            "both deliveries recorded",
        )
        counts = notification_counts(daemon)
        assert counts[("telegram", "retry")] >= 1
        assert counts[("email", "retry")] >= 1
        assert all(m.text.startswith("<b>FIRING: shop-errors") for m in bot.sent())
        for path in ("/metrics", "/readyz", "/healthz", "/", "/nowhere"):
            response = daemon.get(path)
            transcript.add(f"GET {path} ({response.status_code})", f"{response.headers}\n{response.text}")
    finally:
        code = daemon.stop()
    assert code == 0
    events = [e["event"] for e in daemon.events()]
    assert "notification_retry" in events
    assert "alert_state" in events
    transcript.add("sloeval run stderr", daemon.log())
    transcript.add("sloeval run stdout", daemon.stdout())
    received_texts(bot, smtp, transcript)

    assert transcript.leaks() == []
    # The test looked at what it meant to: debug logging on, real messages, error paths taken.
    everything = "\n".join(text for _, text in transcript.texts)
    for expected in ("Telegram refused", "<token>", "SMTP error 451", "SMTP server refused the recipient (550)"):
        assert expected in everything, expected
    assert "FIRING: shop-errors" in everything
    assert "samokoder_error_budget_remaining_percent" in everything


def test_credentials_in_the_prometheus_url_are_not_logged(
    prometheus: PrometheusServer, slo_file: Path, tmp_path: Path
) -> None:
    password = "UrlPw-Gk5Lz8Qw"
    url = prometheus.url.replace("http://", f"http://{PROMETHEUS_USER}:{password}@")
    daemon = FullDaemon(url, slo_file, tmp_path, SLOEVAL_LOG_LEVEL="debug")
    daemon.start()
    try:
        daemon.wait_for("/readyz", 200)
    finally:
        assert daemon.stop() == 0
    result = run_sloeval(["eval"], daemon.env)
    output = daemon.log() + daemon.stdout() + result.stdout + result.stderr
    assert password not in output
    assert password.lower() not in output.lower()
