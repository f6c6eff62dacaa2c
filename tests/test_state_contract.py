"""The StateStore protocol, one suite for every backend: SQLite (one process) and PostgreSQL (replicas).

Each test gets an empty store of each backend: SQLite in a temporary directory, PostgreSQL in a
database of its own on a cluster shared by the session (``tests/pg.py``). What only one backend
does (SQLite's directory lock and corrupt files, PostgreSQL's schema, leadership and fencing) is
tested in ``test_state_store.py`` and ``test_postgres_store.py``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from sloeval.alerting.model import AlertKey, AlertState, Facts, SLOSummary
from sloeval.alerting.store import NewMessage, OutboxItem, StateStore, StateStoreError
from sloeval.state import postgres, sqlite
from sloeval.state.postgres import PostgresStateStore
from sloeval.state.sqlite import SQLiteStateStore, ThreadedSQLiteStore

pytest_plugins = ("tests.pg",)
pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0
DEADLINE = NOW + 3600

KEY = AlertKey("api-errors", "FastBurn", (("endpoint", "/a\"b'c\\"), ("region", "zürich ✓ 東京")))
OTHER = AlertKey("api-latency", "SlowBurn")
FACTS = Facts(
    condition="burn rate over 1h and 5m above 14.4x",
    burn_rates=(("1h", 15.25), ("5m", None)),
    factor=14.4,
    sli=(("1h", 0.9875), ("5m", None)),
    objective=0.999,
    budget_remaining_percent=-3.5,
    budget_minutes_left=None,
    budget_minutes_total=43.2,
    exhausted_in_seconds=1234.5,
    note="ends without traffic",
    slo=SLOSummary("api-errors", "ratio", "shop", 0.999, "30d"),
)
FIRING = AlertState("critical", "firing", NOW - 600, FACTS, firing_since=NOW - 300, last_sent_at=NOW - 300)
PENDING = AlertState("warning", "pending", NOW - 60, Facts(condition="error budget below 25%"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Backend:
    """Opens stores of one backend on one place (a directory, a database); closes them after the test."""

    name = ""

    def __init__(self) -> None:
        self.opened: list[StateStore] = []

    async def open(self) -> StateStore:
        store = await self._open()
        self.opened.append(store)
        return store

    async def _open(self) -> StateStore:
        raise NotImplementedError


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    async def _open(self) -> StateStore:
        return ThreadedSQLiteStore(await anyio.to_thread.run_sync(SQLiteStateStore.open, self.directory))


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    async def _open(self) -> StateStore:
        return await PostgresStateStore.open(self.url)


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str) -> AsyncIterator[Backend]:
    opener: Backend
    if request.param == "sqlite":
        opener = SQLiteBackend(tmp_path / "state")
    else:
        opener = PostgresBackend(request.getfixturevalue("postgres_url"))
    yield opener
    for store in opener.opened:
        await store.aclose()


@pytest.fixture
async def store(backend: Backend) -> StateStore:
    return await backend.open()


def message(
    subject: str = "FIRING: api-errors",
    *,
    channel: str | None = "telegram",
    recipient: str = "4242",
    html: str | None = None,
) -> NewMessage:
    return NewMessage(channel, recipient, subject, f"body of {subject}", html, DEADLINE)  # type: ignore[arg-type]


async def queue(store: StateStore, *messages: NewMessage, now: float = NOW) -> None:
    """Queue messages in a cycle that stores no alert state."""
    await store.commit_cycle({}, messages, now)


def subjects(items: list[OutboxItem]) -> list[str]:
    return [item.subject for item in items]


async def test_a_new_store_is_empty(store: StateStore) -> None:
    assert await store.load_alerts() == {}
    assert await store.last_cycle_at() is None
    assert await store.counts() == {}
    assert await store.due("telegram", NOW) == []
    assert await store.next_attempt_at("telegram") is None
    assert await store.prune("telegram", NOW) == 0


async def test_alert_states_and_messages_round_trip(store: StateStore) -> None:
    html = "<b>FIRING</b> — zürich ✓ 東京 'quoted' \"double\" \\ %s %(x)s"
    await store.commit_cycle(
        {KEY: FIRING, OTHER: PENDING}, [message(html=html), message("plain", channel="email")], NOW
    )
    loaded = await store.load_alerts()
    assert loaded == {KEY: FIRING, OTHER: PENDING}
    [key] = [k for k in loaded if k.slo == "api-errors"]
    assert key.labels == KEY.labels
    assert loaded[KEY].facts.burn_rates == (("1h", 15.25), ("5m", None))
    assert loaded[KEY].facts.slo == FACTS.slo
    assert await store.last_cycle_at() == NOW
    [item] = await store.due("telegram", NOW)
    assert (item.channel, item.recipient, item.subject, item.body, item.html) == (
        "telegram",
        "4242",
        "FIRING: api-errors",
        "body of FIRING: api-errors",
        html,
    )
    assert (item.created_at, item.deadline, item.attempts) == (NOW, DEADLINE, 0)
    [mail] = await store.due("email", NOW)
    assert (mail.subject, mail.html) == ("plain", None)
    assert mail.id != item.id
    assert await store.counts() == {("telegram", "pending"): 1, ("email", "pending"): 1}


async def test_a_full_commit_replaces_every_state(store: StateStore) -> None:
    await store.commit_cycle({KEY: FIRING, OTHER: PENDING}, [], NOW)
    await store.commit_cycle({OTHER: PENDING}, [], NOW + 60)  # the firing alert resolved
    assert await store.load_alerts() == {OTHER: PENDING}
    await store.commit_cycle({}, [], NOW + 120)
    assert await store.load_alerts() == {}


async def test_a_commit_with_previous_writes_only_changed_lifecycles(backend: Backend) -> None:
    firing_key, pending_key, gone_key, new_key = (
        AlertKey("api-errors", "Burn"),
        AlertKey("api", "Low"),
        AlertKey("x", "Y"),
        AlertKey("new", "Z"),
    )
    first = {firing_key: FIRING, pending_key: PENDING, gone_key: PENDING}
    store = await backend.open()
    await store.commit_cycle(first, [], NOW)
    moved = replace(FIRING, facts=replace(FACTS, budget_remaining_percent=1.0))  # same lifecycle, new numbers
    fired = replace(PENDING, status="firing", firing_since=NOW)
    second = {firing_key: moved, pending_key: fired, new_key: PENDING}
    await store.commit_cycle(second, [], NOW + 20, previous=first)
    expected = {firing_key: FIRING, pending_key: fired, new_key: PENDING}  # the firing alert's row kept
    assert await store.load_alerts() == expected
    # Nothing changed at all: nothing written but the cycle's time.
    await store.commit_cycle(second, [], NOW + 40, previous=second)
    assert await store.load_alerts() == expected
    assert await store.last_cycle_at() == NOW + 40
    await store.aclose()
    reopened = await backend.open()
    assert await reopened.load_alerts() == expected


async def test_a_failing_commit_changes_nothing_and_the_store_stays_usable(store: StateStore) -> None:
    await store.commit_cycle({KEY: FIRING}, [message("first")], NOW)
    with pytest.raises(StateStoreError) as info:
        await store.commit_cycle(
            {OTHER: PENDING}, [message("ok"), message("broken", channel=None)], NOW + 60, previous={KEY: FIRING}
        )
    assert type(info.value) is StateStoreError
    assert "\n" not in str(info.value)
    assert await store.load_alerts() == {KEY: FIRING}
    assert await store.last_cycle_at() == NOW
    assert await store.counts() == {("telegram", "pending"): 1}
    assert subjects(await store.due("telegram", NOW)) == ["first"]
    # The next cycle goes through.
    await store.commit_cycle({OTHER: PENDING}, [message("second", recipient="other")], NOW + 120)
    assert await store.load_alerts() == {OTHER: PENDING}
    assert await store.last_cycle_at() == NOW + 120
    assert subjects(await store.due("telegram", NOW + 120)) == ["first", "second"]


async def test_last_cycle_at_is_the_last_commits_now(store: StateStore) -> None:
    await store.commit_cycle({KEY: FIRING}, [], NOW)
    assert await store.last_cycle_at() == NOW
    await store.commit_cycle({KEY: FIRING}, [], NOW + 15.25, previous={KEY: FIRING})
    assert await store.last_cycle_at() == NOW + 15.25
    await queue(store, message(), now=NOW + 30)  # a cycle with messages only
    assert await store.last_cycle_at() == NOW + 30


async def test_due_keeps_each_recipients_order_without_blocking_the_others(store: StateStore) -> None:
    await queue(
        store,
        message("[FIRING] a", recipient="a@x.test", channel="email"),
        message("[RESOLVED] a", recipient="a@x.test", channel="email"),
        message("[FIRING] b", recipient="b@x.test", channel="email"),
    )
    firing_a, firing_b = await store.due("email", NOW)
    assert (firing_a.subject, firing_b.subject) == ("[FIRING] a", "[FIRING] b")
    await store.mark_sent(firing_b.id, NOW + 1)
    await store.reschedule(firing_a.id, NOW + 500, "timeout")  # a's FIRING is retrying
    # a's RESOLVED waits for its FIRING however long that backs off; b's next message does not.
    await queue(store, message("[RESOLVED] b", recipient="b@x.test", channel="email"), now=NOW + 2)
    [resolved_b] = await store.due("email", NOW + 499)
    assert resolved_b.subject == "[RESOLVED] b"
    await store.mark_sent(resolved_b.id, NOW + 499)
    [again] = await store.due("email", NOW + 500)
    assert (again.id, again.subject, again.attempts) == (firing_a.id, "[FIRING] a", 1)
    await store.mark_sent(again.id, NOW + 501)
    [resolved_a] = [item for item in await store.due("email", NOW + 501) if item.recipient == "a@x.test"]
    assert resolved_a.subject == "[RESOLVED] a"
    # A message that failed for good no longer holds up the ones behind it either.
    await queue(store, message("c1", recipient="c"), message("c2", recipient="c"), now=NOW + 600)
    [c1] = await store.due("telegram", NOW + 600)
    await store.mark_failed(c1.id, "chat not found", NOW + 601)
    assert subjects(await store.due("telegram", NOW + 601)) == ["c2"]


async def test_due_returns_what_is_due_oldest_first_up_to_the_limit(store: StateStore) -> None:
    await queue(store, *[message(f"m{i}", recipient=f"r{i}") for i in range(6)], message("mail", channel="email"))
    assert await store.due("telegram", NOW - 1) == []  # not yet
    assert subjects(await store.due("telegram", NOW, limit=4)) == ["m0", "m1", "m2", "m3"]
    items = await store.due("telegram", NOW)
    assert subjects(items) == [f"m{i}" for i in range(6)]  # only its channel's
    assert [item.id for item in items] == sorted(item.id for item in items)
    await store.reschedule(items[0].id, NOW + 10, "429")
    assert subjects(await store.due("telegram", NOW + 9)) == [f"m{i}" for i in range(1, 6)]


async def test_next_attempt_at_counts_only_the_head_of_each_recipients_queue(store: StateStore) -> None:
    behind = [message(f"behind {i}") for i in range(5)]
    await queue(store, message("head"), *behind)
    assert await store.next_attempt_at("telegram") == NOW
    [head] = await store.due("telegram", NOW)
    await store.reschedule(head.id, NOW + 30, "429")  # the head backs off; the five behind it wait for it
    assert await store.due("telegram", NOW + 29) == []
    assert await store.next_attempt_at("telegram") == NOW + 30
    await queue(store, message("s", recipient="other"), now=NOW + 5)
    assert await store.next_attempt_at("telegram") == NOW + 5  # another recipient's head can go now
    assert await store.next_attempt_at("email") is None
    [other] = await store.due("telegram", NOW + 5)
    await store.mark_sent(other.id, NOW + 6)
    await store.mark_sent(head.id, NOW + 31)
    assert await store.next_attempt_at("telegram") == NOW  # the next one behind was queued at NOW


async def test_mark_sent_mark_failed_and_reschedule(store: StateStore) -> None:
    await queue(store, message("a"), message("b"), message("c", channel="email"))
    [a] = await store.due("telegram", NOW)
    await store.mark_sent(a.id, NOW + 1)
    [b] = await store.due("telegram", NOW + 1)
    assert b.subject == "b"
    await store.reschedule(b.id, NOW + 30, "Telegram error: boom")
    await store.reschedule(b.id, NOW + 60, "Telegram error: boom again")
    assert await store.due("telegram", NOW + 59) == []
    [again] = await store.due("telegram", NOW + 60)
    assert (again.id, again.attempts) == (b.id, 2)
    await store.mark_failed(b.id, "permanent", NOW + 61)
    assert await store.counts() == {("telegram", "sent"): 1, ("telegram", "failed"): 1, ("email", "pending"): 1}
    assert await store.due("telegram", NOW + 3600) == []
    assert await store.next_attempt_at("telegram") is None
    assert await store.next_attempt_at("email") == NOW


async def test_prune_drops_a_channels_old_finished_messages(store: StateStore) -> None:
    now = time.time()
    long_ago = now - max(sqlite.KEEP_DONE_SECONDS, postgres.KEEP_DONE_SECONDS) - 60
    await queue(
        store,
        message("old sent", recipient="1"),
        message("old failed", recipient="2"),
        message("recent", recipient="3"),
        message("pending", recipient="4"),
        message("old mail", channel="email"),
    )
    old_sent, old_failed, recent, _ = await store.due("telegram", NOW)
    [mail] = await store.due("email", NOW)
    await store.mark_sent(old_sent.id, long_ago)
    await store.mark_failed(old_failed.id, "x", long_ago)
    await store.mark_sent(mail.id, long_ago)
    await store.mark_failed(recent.id, "x", now - 60)
    assert await store.prune("telegram", now) == 2
    assert await store.counts() == {("telegram", "failed"): 1, ("telegram", "pending"): 1, ("email", "sent"): 1}
    assert await store.prune("telegram", now) == 0
    assert subjects(await store.due("telegram", NOW)) == ["pending"]


async def test_a_reopened_store_has_everything(backend: Backend) -> None:
    store = await backend.open()
    await store.commit_cycle(
        {KEY: FIRING, OTHER: PENDING}, [message("a"), message("b"), message("c", recipient="x")], NOW
    )
    a, c = await store.due("telegram", NOW)
    await store.mark_sent(a.id, time.time())  # (SQLite drops week-old finished messages on opening)
    await store.reschedule(c.id, NOW + 90, "429")
    await store.aclose()

    reopened = await backend.open()
    assert await reopened.load_alerts() == {KEY: FIRING, OTHER: PENDING}
    assert await reopened.last_cycle_at() == NOW
    assert await reopened.counts() == {("telegram", "sent"): 1, ("telegram", "pending"): 2}
    assert await reopened.next_attempt_at("telegram") == NOW  # b, now at the head of its recipient's queue
    [b] = await reopened.due("telegram", NOW + 1)
    assert (b.subject, b.attempts) == ("b", 0)
    [b_again, c_again] = await reopened.due("telegram", NOW + 90)
    assert (b_again.id, c_again.id, c_again.attempts) == (b.id, c.id, 1)
    await reopened.commit_cycle({}, [message("d", recipient="y")], NOW + 100)
    [d] = [item for item in await reopened.due("telegram", NOW + 100) if item.subject == "d"]
    assert d.id > c.id  # ids keep growing: order per recipient survives a restart


async def test_errors_are_state_store_errors(store: StateStore) -> None:
    await store.commit_cycle({KEY: FIRING}, [], NOW)
    for attempt in range(2):  # also once the store has recovered from the first failure
        with pytest.raises(StateStoreError) as info:
            await store.commit_cycle({KEY: FIRING}, [message(channel=None)], NOW + attempt)
        assert type(info.value) is StateStoreError
        assert str(info.value).strip()
    assert await store.load_alerts() == {KEY: FIRING}
