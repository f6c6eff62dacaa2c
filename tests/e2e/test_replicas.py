"""Several ``sloeval run`` replicas on one PostgreSQL: one page per incident, failover without a gap.

Real parts throughout: a throwaway PostgreSQL cluster (initdb/postgres on loopback), a real
Prometheus scraping a live exporter every second, the Bot API stand-in and an aiosmtpd server,
and the replicas as child processes. The incident is a burn the test starts and ends.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.postgres import PASSWORD, PostgresServer
from devtools.request_counter import RequestCounter
from devtools.servers import PrometheusServer
from devtools.smtp_server import SmtpServer
from devtools.tcp_proxy import TcpProxy
from devtools.telegram_stub import BotApiStub
from tests.e2e.conftest import samples, wait_until

pytestmark = pytest.mark.e2e

SLO_FILE = """
service: shop
period: 10m
notify:
  routes: [{severity: [critical], channels: [telegram, email]}]
  repeat_interval: 1h
  group_wait: 0s
slos:
  - name: checkout
    objective: 99
    ratio: {bad: 'shop_requests_total{code="500"}', total: shop_requests_total}
    alerts:
      - {name: FastBurn, severity: critical, burn_rate: {long: 20s, short: 10s, factor: 2}}
"""
#: Seconds another replica may take to lead after the leader is killed: its next heartbeat (2 s)
#: and the server noticing the dead session (at once on kill -9: the kernel closes the socket).
KILL_FAILOVER_BOUND = 2 * 1 + 10


class Stack:
    """Database, exporter, Prometheus, the two channels' servers, and the replicas."""

    def __init__(self, tmp_path: Path, daemon_factory: Any, pg: PostgresServer) -> None:
        self.tmp_path = tmp_path
        self.daemon_factory = daemon_factory
        self.pg = pg
        self.counter = RequestCounter()
        self.counter.start()
        self.counter.set_rates(ok_per_second=20, errors_per_second=0)
        scrape = [{"job_name": "shop", "static_configs": [{"targets": [f"127.0.0.1:{self.counter.port}"]}]}]
        self.prometheus = PrometheusServer(tmp_path / "prometheus", scrape_configs=scrape, scrape_interval="1s")
        self.prometheus.start()
        self.bot = BotApiStub()
        self.bot.start()
        self.smtp = SmtpServer(tls="none")
        self.smtp.start()
        self.slo_file = tmp_path / "slos.yaml"
        self.slo_file.write_text(SLO_FILE)
        self.replicas: list[Any] = []

    def replica(self, database_url: str | None = None) -> Any:
        url_file = self.tmp_path / f"database-url-{len(self.replicas)}"
        url_file.write_text((database_url or self.pg.url) + "\n")
        daemon = self.daemon_factory(
            self.prometheus.url,
            self.slo_file,
            SLOEVAL_DATABASE_URL_FILE=str(url_file),
            SLOEVAL_TELEGRAM_BOT_TOKEN=self.bot.token,
            SLOEVAL_TELEGRAM_CHAT_IDS="42",
            SLOEVAL_TELEGRAM_API_URL=self.bot.url,
            SLOEVAL_SMTP_HOST="127.0.0.1",
            SLOEVAL_SMTP_PORT=str(self.smtp.port),
            SLOEVAL_SMTP_TLS="none",
            SLOEVAL_EMAIL_TO="oncall@example.test",
        )
        self.replicas.append(daemon)
        return daemon

    def burn(self) -> None:
        self.counter.set_rates(ok_per_second=20, errors_per_second=20)

    def heal(self) -> None:
        self.counter.set_rates(ok_per_second=20, errors_per_second=0)

    def pages(self) -> dict[str, list[str]]:
        """First line (Telegram) or subject (email) of everything delivered so far."""
        return {
            "telegram": [m.text.split("\n")[0] for m in self.bot.messages],
            "email": [str(m.message["Subject"]) for m in self.smtp.received()],
        }

    def close(self) -> None:
        for closer in (self.smtp.stop, self.bot.stop, self.prometheus.cleanup, self.counter.stop):
            closer()


def metric(daemon: Any, name: str) -> float | None:
    try:
        text = daemon.get("/metrics").text
    except httpx.HTTPError:
        return None
    rows = samples(text).get(name, [])
    return rows[0][1] if rows else None


def alive(daemon: Any) -> bool:
    return daemon.process is not None and daemon.process.poll() is None


def leaders(replicas: list[Any]) -> list[Any]:
    return [d for d in replicas if alive(d) and metric(d, "sloeval_leader") == 1]


def count(lines: list[str], word: str) -> int:
    return sum(1 for line in lines if word in line)


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def stack(tmp_path: Path, daemon_factory: Any, pg: PostgresServer) -> Iterator[Stack]:
    built = Stack(tmp_path, daemon_factory, pg)
    try:
        yield built
    finally:
        built.close()


def wait_for_pages(stack: Stack, word: str, expected: int, timeout: float) -> None:
    def arrived() -> bool:
        pages = stack.pages()
        return all(count(lines, word) >= expected for lines in pages.values())

    wait_until(arrived, timeout, f"{expected} {word} on each channel; got {stack.pages()}")


def test_three_replicas_page_once_fail_over_on_kill_and_resolve_once(stack: Stack) -> None:
    replicas = [stack.replica() for _ in range(3)]
    wait_until(lambda: len(leaders(replicas)) == 1, 30, "exactly one leader")
    wait_until(lambda: all(metric(d, "sloeval_database_up") == 1 for d in replicas), 10, "database up everywhere")

    stack.burn()
    wait_for_pages(stack, "FIRING", 1, 90)
    time.sleep(4)  # several cycles of three replicas: still one page per channel
    pages = stack.pages()
    assert (count(pages["telegram"], "FIRING"), count(pages["email"], "FIRING")) == (1, 1), pages

    (leader,) = leaders(replicas)
    leader.process.send_signal(signal.SIGKILL)
    leader.process.wait()
    killed_at = time.monotonic()
    survivors = [d for d in replicas if d is not leader]
    wait_until(lambda: len(leaders(survivors)) == 1, KILL_FAILOVER_BOUND, "a new leader after kill -9")
    failover = time.monotonic() - killed_at
    print(f"failover after kill -9: {failover:.1f}s")
    time.sleep(4)
    pages = stack.pages()
    assert (count(pages["telegram"], "FIRING"), count(pages["email"], "FIRING")) == (1, 1), pages

    stack.heal()
    wait_for_pages(stack, "RESOLVED", 1, 60)
    time.sleep(4)
    pages = stack.pages()
    assert [count(lines, "RESOLVED") for lines in pages.values()] == [1, 1], pages
    assert [count(lines, "FIRING") for lines in pages.values()] == [1, 1], pages
    # Every replica kept evaluating and exporting throughout.
    assert all(metric(d, "samokoder_error_budget_remaining_percent") is not None for d in survivors)
    for daemon in survivors:
        assert PASSWORD not in daemon.log()


def test_a_graceful_stop_hands_leadership_over_at_once(stack: Stack) -> None:
    first = stack.replica()
    wait_until(lambda: leaders([first]) == [first], 30, "the first replica leads")
    second = stack.replica()
    second.wait_for("/readyz", 200)
    stopped_at = time.monotonic()
    assert first.stop() == 0
    wait_until(lambda: leaders([second]) == [second], 8, "the second replica leads after SIGTERM")
    assert time.monotonic() - stopped_at < 8
    assert any(e["event"] == "leadership_released" for e in first.events())


def test_the_database_restarted_mid_incident_loses_nothing(stack: Stack) -> None:
    replicas = [stack.replica() for _ in range(2)]
    wait_until(lambda: len(leaders(replicas)) == 1, 30, "one leader")
    stack.burn()
    wait_for_pages(stack, "FIRING", 1, 90)
    # Delivered is not yet recorded: a database stopped between a send and its mark_sent makes the
    # next leader send it again (at least once, by design). Stop it once both sends are recorded.
    wait_until(
        lambda: sum(e["event"] == "notification_sent" for d in replicas for e in d.events()) >= 2,
        10,
        "both FIRING pages recorded as sent",
    )

    stack.pg.stop()
    wait_until(lambda: all(metric(d, "sloeval_database_up") == 0 for d in replicas), 20, "database down noticed")
    assert leaders(replicas) == []  # nobody may page without the shared state
    for daemon in replicas:  # still evaluating, exporting and ready: a sidecar's readiness is the pod's
        assert daemon.get("/readyz").status_code == 200
        assert metric(daemon, "samokoder_error_budget_remaining_percent") is not None
    stack.heal()  # the incident ends while the database is down
    time.sleep(3)
    stack.pg.start()

    wait_until(lambda: len(leaders(replicas)) == 1, 30, "a leader once the database is back")
    wait_for_pages(stack, "RESOLVED", 1, 60)
    time.sleep(4)
    pages = stack.pages()
    assert [count(lines, "FIRING") for lines in pages.values()] == [1, 1], pages
    assert [count(lines, "RESOLVED") for lines in pages.values()] == [1, 1], pages


def test_a_leader_cut_off_from_the_database_stops_and_another_takes_over(stack: Stack) -> None:
    with TcpProxy(stack.pg.port, server_gives_up_after=10) as proxy:
        cut_off = stack.replica(stack.pg.url_for(proxy.port))
        wait_until(lambda: leaders([cut_off]) == [cut_off], 30, "the proxied replica leads")
        other = stack.replica()
        other.wait_for("/readyz", 200)
        stack.burn()
        wait_for_pages(stack, "FIRING", 1, 90)

        proxy.cut()
        cut_at = time.monotonic()
        stack.heal()  # the RESOLVED is now owed: only the new leader may send it
        wait_until(lambda: leaders([other]) == [other], 30, "the other replica leads")
        takeover = time.monotonic() - cut_at
        print(f"takeover after a partition: {takeover:.1f}s")
        assert metric(cut_off, "sloeval_leader") == 0  # it stepped down by itself
        assert cut_off.get("/readyz").status_code == 200
        wait_for_pages(stack, "RESOLVED", 1, 60)
        time.sleep(4)
        pages = stack.pages()
        assert [count(lines, "FIRING") for lines in pages.values()] == [1, 1], pages
        assert [count(lines, "RESOLVED") for lines in pages.values()] == [1, 1], pages
        events = cut_off.events()
        assert "leadership_lost" in [e["event"] for e in events]
        # Cut off from its database, it kept evaluating on its cadence (the alert engine's hung commit
        # does not hold the loop up): no gap between two cycles near the 10 s the database took to give up.
        cycles = [
            time.mktime(time.strptime(e["timestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
            for e in events
            if e["event"] == "evaluation_cycle"
        ]
        gaps = [b - a for a, b in itertools.pairwise(cycles)]
        assert max(gaps) <= 5, f"evaluation stalled for {max(gaps):.0f}s while the database was unreachable"


def test_a_replica_starts_without_its_database_and_leads_once_it_answers(stack: Stack) -> None:
    """A sidecar must not crash-loop while the database is away: its pod would turn unready."""
    stack.pg.stop()
    replica = stack.replica()
    replica.wait_for("/readyz", 200)
    wait_until(lambda: metric(replica, "sloeval_database_up") == 0, 20, "database down reported")
    assert metric(replica, "sloeval_leader") == 0
    budget = "samokoder_error_budget_remaining_percent"
    wait_until(lambda: metric(replica, budget) is not None, 30, "evaluating and exporting without the database")
    assert "database_unavailable" in [e["event"] for e in replica.events()]
    stack.pg.start()
    wait_until(lambda: leaders([replica]) == [replica], 30, "leads once the database answers")
    assert metric(replica, "sloeval_database_up") == 1
    stack.burn()
    wait_for_pages(stack, "FIRING", 1, 90)  # the schema was made when the database came: state works


def test_a_frozen_leader_loses_the_lock_and_sends_nothing_when_it_wakes(stack: Stack) -> None:
    """SIGSTOP (a VM pause, a stuck loop): its kernel still answers keepalives; its silence ends the session."""
    replicas = [stack.replica() for _ in range(2)]
    wait_until(lambda: len(leaders(replicas)) == 1, 30, "one leader")
    (frozen,) = leaders(replicas)
    (other,) = [d for d in replicas if d is not frozen]
    stack.burn()
    wait_for_pages(stack, "FIRING", 1, 90)
    # Frozen between a send and its record, a page is sent again by the next leader (at least once):
    # freeze it once both are recorded, so that what is measured is the takeover.
    wait_until(lambda: sum(e["event"] == "notification_sent" for e in frozen.events()) >= 2, 10, "both pages recorded")
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        wait_until(lambda: leaders([other]) == [other], 30, "the other replica leads while the leader is frozen")
        print(f"takeover from a frozen leader: {time.monotonic() - stopped_at:.1f}s")
        stack.heal()
        wait_for_pages(stack, "RESOLVED", 1, 60)
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    wait_until(lambda: metric(frozen, "sloeval_leader") == 0, 20, "the woken replica knows it lost")
    time.sleep(4)
    pages = stack.pages()
    assert [count(lines, "FIRING") for lines in pages.values()] == [1, 1], pages
    assert [count(lines, "RESOLVED") for lines in pages.values()] == [1, 1], pages
