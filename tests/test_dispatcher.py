"""Dispatcher with a real StateStore and the real channels against the loopback peers."""

from __future__ import annotations

import contextlib
import random
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import structlog

from devtools.smtp_server import SmtpServer
from devtools.telegram_stub import BotApiStub
from sloeval.alerting.channels.smtp import EmailChannel
from sloeval.alerting.channels.telegram import TelegramChannel
from sloeval.alerting.dispatcher import MAX_BACKOFF, Dispatcher, backoff_delay
from sloeval.alerting.store import NewMessage, OutboxItem, StateStore
from sloeval.state.sqlite import KEEP_DONE_SECONDS, SQLiteStateStore, ThreadedSQLiteStore

CHAT = "4242"
ONCALL = "oncall@example.test"
SENDER = "sloeval@example.test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = SQLiteStateStore.open(tmp_path)
    yield opened
    with contextlib.suppress(sqlite3.ProgrammingError):
        opened.close()


@pytest.fixture
def stub() -> Iterator[BotApiStub]:
    with BotApiStub() as server:
        yield server


class Outcomes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, channel: str, outcome: str) -> None:
        self.seen.append((channel, outcome))

    def of(self, channel: str) -> list[str]:
        return [outcome for name, outcome in self.seen if name == channel]


def queue(
    store: StateStore, channel: str, recipient: str, text: str, *, deadline_in: float = 3600.0, html: str | None = None
) -> None:
    now = time.time()
    store.commit_cycle(
        {}, [NewMessage(channel, recipient, f"subject {text.strip()}", text, html, now + deadline_in)], now
    )


def telegram(stub: BotApiStub) -> TelegramChannel:
    return TelegramChannel(stub.token, (CHAT,), api_url=stub.url, timeout=2.0, min_interval=0.0)


def email(port: int, timeout: float = 2.0) -> EmailChannel:
    return EmailChannel(host="127.0.0.1", port=port, sender=SENDER, recipients=(ONCALL,), tls="none", timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def send_attempts(stub: BotApiStub) -> int:
    return sum(1 for _, method, _ in stub.requests if method == "sendMessage")


def last_error(store: StateStore) -> str | None:
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        row = db.execute("SELECT last_error FROM outbox ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else row[0]


def test_backoff_delay() -> None:
    rng = random.Random(7)
    for attempts, base in [(0, 1.0), (1, 2.0), (3, 8.0), (20, MAX_BACKOFF), (-1, 1.0)]:
        delays = [backoff_delay(attempts, rng) for _ in range(200)]
        assert min(delays) >= 0.8 * base
        assert max(delays) <= 1.2 * base
        assert max(delays) - min(delays) > 0.1 * base  # jittered


@pytest.mark.anyio
async def test_queued_message_is_delivered_once(store: StateStore, stub: BotApiStub) -> None:
    outcomes = Outcomes()
    channel = telegram(stub)
    dispatcher = Dispatcher(ThreadedSQLiteStore(store), channel, attempt_timeout=2.0, on_outcome=outcomes)
    queue(store, "telegram", CHAT, "<b>FIRING</b> api-errors")
    queue(store, "email", ONCALL, "not for telegram")
    try:
        assert await dispatcher.deliver_due() == 1
        assert await dispatcher.deliver_due() == 0
    finally:
        await channel.aclose()
    [sent] = stub.wait_for_messages(1, timeout=1)
    assert (sent.chat_id, sent.text, sent.parse_mode) == (CHAT, "<b>FIRING</b> api-errors", "HTML")
    assert send_attempts(stub) == 1
    assert store.counts() == {("telegram", "sent"): 1, ("email", "pending"): 1}
    assert outcomes.seen == [("telegram", "sent")]
    assert dispatcher.channel_name == "telegram"


@pytest.mark.anyio
async def test_email_with_html_part_is_delivered(store: StateStore) -> None:
    with SmtpServer() as server:
        dispatcher = Dispatcher(ThreadedSQLiteStore(store), email(server.port), attempt_timeout=2.0)
        queue(store, "email", ONCALL, "budget 42 %\n", html="<p>budget 42 %</p>")
        assert await dispatcher.deliver_due() == 1
        [mail] = server.wait_for(1, timeout=2)
    assert mail.rcpt_tos == [ONCALL]
    assert mail.message["Subject"] == "subject budget 42 %"
    plain, rich = mail.message.get_body(("plain",)), mail.message.get_body(("html",))
    assert plain is not None
    assert rich is not None
    assert plain.get_content() == "budget 42 %\n"
    assert rich.get_content().strip() == "<p>budget 42 %</p>"
    assert store.counts() == {("email", "sent"): 1}


@pytest.mark.anyio
async def test_telegram_429_waits_for_retry_after(
    store: StateStore, stub: BotApiStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    outcomes = Outcomes()
    channel = telegram(stub)
    dispatcher = Dispatcher(ThreadedSQLiteStore(store), channel, attempt_timeout=2.0, on_outcome=outcomes)
    stub.fail_next("sendMessage", status=429, retry_after=1)
    queue(store, "telegram", CHAT, "flood")
    try:
        started = time.time()
        assert await dispatcher.deliver_due() == 0
        assert outcomes.of("telegram") == ["retry"]
        assert store.counts() == {("telegram", "pending"): 1}
        next_at = store.next_attempt_at("telegram")
        assert next_at is not None
        assert next_at >= started + 1.0
        assert "429" in (last_error(store) or "")
        assert await dispatcher.deliver_due() == 0  # not due yet: nothing is sent
        assert send_attempts(stub) == 1
        await anyio.sleep(max(0.0, next_at - time.time()) + 0.05)
        assert await dispatcher.deliver_due() == 1
    finally:
        await channel.aclose()
    assert [m.text for m in stub.wait_for_messages(1, timeout=1)] == ["flood"]
    assert send_attempts(stub) == 2
    gap = stub.min_gap_per_chat()
    assert gap is not None
    assert gap >= 1.0 - 0.05
    assert store.counts() == {("telegram", "sent"): 1}
    assert outcomes.of("telegram") == ["retry", "sent"]


@pytest.mark.anyio
async def test_permanent_failure_is_never_retried(store: StateStore, stub: BotApiStub) -> None:
    outcomes = Outcomes()
    channel = telegram(stub)
    dispatcher = Dispatcher(ThreadedSQLiteStore(store), channel, attempt_timeout=2.0, on_outcome=outcomes)
    stub.fail_next("sendMessage", status=403)
    queue(store, "telegram", CHAT, "kicked")
    try:
        assert await dispatcher.deliver_due() == 0
        assert await dispatcher.deliver_due() == 0
    finally:
        await channel.aclose()
    assert store.counts() == {("telegram", "failed"): 1}
    assert outcomes.seen == [("telegram", "failed")]
    assert send_attempts(stub) == 1
    assert stub.sent() == []
    assert store.next_attempt_at("telegram") is None
    assert "bot was kicked" in (last_error(store) or "")


@pytest.mark.anyio
async def test_last_try_at_the_deadline_then_failed(store: StateStore, stub: BotApiStub) -> None:
    outcomes = Outcomes()
    channel = telegram(stub)
    dispatcher = Dispatcher(ThreadedSQLiteStore(store), channel, attempt_timeout=2.0, on_outcome=outcomes)
    stub.fail_next("sendMessage", status=500, times=2)
    queue(store, "telegram", CHAT, "late", deadline_in=0.5)  # the next backoff (~1 s) is past the deadline
    try:
        assert await dispatcher.deliver_due() == 0
        next_at = store.next_attempt_at("telegram")
        assert next_at is not None  # not given up yet: one more try, at the deadline
        await anyio.sleep(max(0.0, next_at - time.time()) + 0.05)
        assert await dispatcher.deliver_due() == 0
    finally:
        await channel.aclose()
    assert store.counts() == {("telegram", "failed"): 1}
    assert outcomes.seen == [("telegram", "retry"), ("telegram", "failed")]
    assert send_attempts(stub) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("deadline_in", [-10.0], ids=["already-past"])
async def test_deadline_passed_after_temporary_error(store: StateStore, stub: BotApiStub, deadline_in: float) -> None:
    outcomes = Outcomes()
    channel = telegram(stub)
    dispatcher = Dispatcher(ThreadedSQLiteStore(store), channel, attempt_timeout=2.0, on_outcome=outcomes)
    stub.fail_next("sendMessage", status=500)
    queue(store, "telegram", CHAT, "late", deadline_in=deadline_in)
    try:
        assert await dispatcher.deliver_due() == 0
        assert await dispatcher.deliver_due() == 0
    finally:
        await channel.aclose()
    assert store.counts() == {("telegram", "failed"): 1}
    assert outcomes.seen == [("telegram", "failed")]
    assert send_attempts(stub) == 1


@pytest.mark.anyio
async def test_retry_after_beyond_deadline_fails(
    store: StateStore, stub: BotApiStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    outcomes = Outcomes()
    channel = telegram(stub)
    dispatcher = Dispatcher(ThreadedSQLiteStore(store), channel, attempt_timeout=2.0, on_outcome=outcomes)
    stub.fail_next("sendMessage", status=429, retry_after=30)
    queue(store, "telegram", CHAT, "flooded", deadline_in=10.0)
    try:
        assert await dispatcher.deliver_due() == 0
    finally:
        await channel.aclose()
    assert store.counts() == {("telegram", "failed"): 1}
    assert outcomes.seen == [("telegram", "failed")]


@pytest.mark.anyio
@pytest.mark.parametrize("email_down", ["closed-port", "silent-server"])
async def test_one_channel_down_never_delays_the_other(store: StateStore, stub: BotApiStub, email_down: str) -> None:
    outcomes = Outcomes()
    with contextlib.ExitStack() as stack:
        if email_down == "closed-port":
            port = free_port()
        else:  # accepts TCP connections but never greets: every attempt hangs until its timeout
            silent = stack.enter_context(socket.socket())
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            port = silent.getsockname()[1]
        mail = Dispatcher(
            ThreadedSQLiteStore(store), email(port, timeout=1.0), attempt_timeout=1.0, on_outcome=outcomes
        )
        retries_to_see = 2 if email_down == "closed-port" else 1
        chat = Dispatcher(ThreadedSQLiteStore(store), telegram(stub), attempt_timeout=2.0, on_outcome=outcomes)
        queue(store, "email", ONCALL, "mail first")
        queue(store, "telegram", CHAT, "page")
        async with anyio.create_task_group() as group:
            group.start_soon(mail.run)
            await anyio.sleep(0.05)  # the email worker is busy with (or done failing) its first attempt
            group.start_soon(chat.run)
            [sent] = await anyio.to_thread.run_sync(stub.wait_for_messages, 1, 0.9)
            email_outcomes_when_paged = outcomes.of("email")
            with anyio.fail_after(4):
                while len(outcomes.of("email")) < retries_to_see:
                    await anyio.sleep(0.05)
            group.cancel_scope.cancel()
    assert sent.text == "page"
    if email_down == "silent-server":
        assert email_outcomes_when_paged == []  # paged while the email attempt was still hanging
    assert outcomes.of("telegram") == ["sent"]
    assert outcomes.of("email") == ["retry"] * retries_to_see
    assert store.counts() == {("telegram", "sent"): 1, ("email", "pending"): 1}


@pytest.mark.anyio
async def test_wake_delivers_new_message_without_waiting_for_idle_poll(store: StateStore, stub: BotApiStub) -> None:
    outcomes = Outcomes()
    dispatcher = Dispatcher(ThreadedSQLiteStore(store), telegram(stub), attempt_timeout=2.0, on_outcome=outcomes)
    async with anyio.create_task_group() as group:
        group.start_soon(dispatcher.run)
        await anyio.sleep(0.2)  # idle: nothing queued, the worker waits up to IDLE_POLL (5 s)
        queue(store, "telegram", CHAT, "woken")
        dispatcher.wake()
        [sent] = await anyio.to_thread.run_sync(stub.wait_for_messages, 1, 2.0)
        with anyio.fail_after(2):
            while not outcomes.seen:  # the stub records the message before the worker has its answer
                await anyio.sleep(0.02)
        group.cancel_scope.cancel()
    assert sent.text == "woken"
    assert outcomes.seen == [("telegram", "sent")]


@pytest.mark.anyio
async def test_pending_message_survives_restart(tmp_path: Path) -> None:
    with SmtpServer() as probe:
        port = probe.port  # a port that is free again once this server stops
    store = SQLiteStateStore.open(tmp_path)
    outcomes = Outcomes()
    queue(store, "email", ONCALL, "survives\n")
    assert (
        await Dispatcher(
            ThreadedSQLiteStore(store), email(port), attempt_timeout=2.0, on_outcome=outcomes
        ).deliver_due()
        == 0
    )
    assert outcomes.seen == [("email", "retry")]
    assert store.counts() == {("email", "pending"): 1}
    store.close()

    reopened = SQLiteStateStore.open(tmp_path)
    try:
        assert reopened.counts() == {("email", "pending"): 1}
        [item] = reopened.due("email", time.time() + 60)
        assert item.attempts == 1
        with SmtpServer(port=port) as server:
            dispatcher = Dispatcher(
                ThreadedSQLiteStore(reopened), email(port), attempt_timeout=2.0, on_outcome=outcomes
            )
            reopened.reschedule(item.id, time.time(), "made due by the test")
            assert await dispatcher.deliver_due() == 1
            [mail] = server.wait_for(1, timeout=2)
        assert mail.message["Subject"] == "subject survives"
        assert mail.message.get_content() == "survives\n"
        assert reopened.counts() == {("email", "sent"): 1}
        assert outcomes.seen == [("email", "retry"), ("email", "sent")]
    finally:
        reopened.close()


@pytest.mark.anyio
async def test_worker_survives_an_unusable_outbox(tmp_path: Path, stub: BotApiStub) -> None:
    broken = SQLiteStateStore.open(tmp_path / "broken")
    broken.close()  # every store call now raises sqlite3.ProgrammingError
    channel = telegram(stub)
    dispatcher = Dispatcher(ThreadedSQLiteStore(broken), channel, attempt_timeout=2.0)
    with anyio.move_on_after(0.5) as scope:
        await dispatcher.run()
    assert scope.cancelled_caught  # still running when time was up: the error did not end the worker


class PollCountingStore(SQLiteStateStore):
    """The real store, counting how often a worker asks it what is due."""

    polls = 0

    def due(self, channel: str, now: float, limit: int = 50) -> list[OutboxItem]:
        self.polls += 1
        return super().due(channel, now, limit)


@pytest.mark.anyio
async def test_worker_sleeps_while_the_head_of_a_queue_backs_off(
    tmp_path: Path, stub: BotApiStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    store = PollCountingStore.open(tmp_path)
    outcomes = Outcomes()
    stub.fail_next("sendMessage", status=429, retry_after=30)
    now = time.time()
    queued = [NewMessage("telegram", CHAT, f"s{i}", f"page {i}", None, now + 3600) for i in range(3000)]
    store.commit_cycle({}, queued, now)  # the first backs off 30 s; the 2,999 behind it wait for it
    try:
        with anyio.move_on_after(3):
            await Dispatcher(ThreadedSQLiteStore(store), telegram(stub), attempt_timeout=2.0, on_outcome=outcomes).run()
        assert store.counts() == {("telegram", "pending"): 3000}
    finally:
        store.close()
    assert outcomes.seen == [("telegram", "retry")]
    assert send_attempts(stub) == 1
    assert store.polls <= 2, f"{store.polls} polls of the outbox while nothing could be sent"


@pytest.mark.anyio
async def test_finished_messages_are_pruned_while_running(store: StateStore, stub: BotApiStub) -> None:
    queue(store, "telegram", CHAT, "long done")
    queue(store, "email", ONCALL, "another channel's")
    [page], [mail] = store.due("telegram", time.time()), store.due("email", time.time())
    long_ago = time.time() - KEEP_DONE_SECONDS - 60
    store.mark_sent(page.id, long_ago)  # finished long ago, yet after the store was opened (and pruned)
    store.mark_sent(mail.id, long_ago)
    dispatcher = Dispatcher(ThreadedSQLiteStore(store), telegram(stub), attempt_timeout=2.0, prune_interval=0.2)
    async with anyio.create_task_group() as group:
        group.start_soon(dispatcher.run)
        with anyio.fail_after(3):
            while store.counts().get(("telegram", "sent")):
                await anyio.sleep(0.05)
        group.cancel_scope.cancel()
    assert store.counts() == {("email", "sent"): 1}  # each worker prunes its own channel


@pytest.mark.anyio
async def test_worker_retries_an_unreadable_bot_api_answer(store: StateStore, stub: BotApiStub) -> None:
    outcomes = Outcomes()
    channel = telegram(stub)
    dispatcher = Dispatcher(ThreadedSQLiteStore(store), channel, attempt_timeout=2.0, on_outcome=outcomes)
    stub.answer_next("sendMessage", result={"message_id": 1})
    queue(store, "telegram", CHAT, "page")
    try:
        with structlog.testing.capture_logs() as logs:
            assert await dispatcher.deliver_due() == 0
        [item] = store.due("telegram", time.time() + 60)
        store.reschedule(item.id, time.time(), "made due by the test")
        assert await dispatcher.deliver_due() == 1
    finally:
        await channel.aclose()
    assert outcomes.seen == [("telegram", "retry"), ("telegram", "sent")]
    assert [e["event"] for e in logs] == ["notification_retry"]  # no notification_unexpected_error, no traceback
    assert logs[0]["error"].startswith("Telegram answered with a result that cannot be read (KeyError")
    assert [m.text for m in stub.sent()] == ["page"]
