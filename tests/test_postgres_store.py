"""What only the PostgreSQL backend does: its schema and migrations, leadership by advisory lock, the
leader epoch as a fencing token, claims of outbox rows, outages of the database, and its password.

The StateStore behaviour it shares with SQLite is in ``test_state_contract.py``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import psycopg
import pytest
import structlog

from devtools.postgres import PASSWORD, USER, PostgresServer
from sloeval.alerting.model import AlertKey, AlertState, Facts
from sloeval.alerting.store import NewMessage, StateStoreError
from sloeval.config.settings import load_settings
from sloeval.state import open_state_store, postgres
from sloeval.state.postgres import SCHEMA_VERSION, AdvisoryLockLeadership, PostgresStateStore, migrate

if TYPE_CHECKING:
    from tests.pg import KillablePostgres

pytest_plugins = ("tests.pg",)
pytestmark = pytest.mark.anyio

NOW = 1_700_000_000.0
KEY = AlertKey("api-errors", "FastBurn", (("region", "eu"),))
OTHER = AlertKey("api-latency", "SlowBurn")
FIRING = AlertState("critical", "firing", NOW - 600, Facts(condition="burn"), firing_since=NOW - 300)
PENDING = AlertState("warning", "pending", NOW - 60, Facts(condition="budget"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def message(subject: str, recipient: str = "4242") -> NewMessage:
    return NewMessage("telegram", recipient, subject, "body", None, NOW + 3600)


@asynccontextmanager
async def connection(url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        yield db


async def fetch(url: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    async with connection(url) as db:
        cursor = await db.execute(query, params)
        return await cursor.fetchall() if cursor.description else []


async def sloeval_sessions(url: str) -> int:
    """Sessions of sloeval (its application_name) on the URL's database, once closed ones have gone."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'sloeval'"
    with anyio.move_on_after(3):
        while (await fetch(url, query))[0][0]:
            await anyio.sleep(0.02)
    return int((await fetch(url, query))[0][0])


async def lock_holder_pid(url: str) -> int:
    """The server process of the session that holds the leader lock."""
    [(pid,)] = await fetch(
        url,
        "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
    )
    return int(pid)


class Replica:
    """A store and its leadership on one database, as ``open_state_store`` pairs them."""

    def __init__(self, store: PostgresStateStore, leadership: AdvisoryLockLeadership) -> None:
        self.store = store
        self.leadership = leadership

    async def tick(self) -> bool:
        await self.leadership.tick()
        return self.leadership.is_leader()

    async def aclose(self) -> None:
        await self.leadership.release()
        await self.store.aclose()


@pytest.fixture
async def replicas(anyio_backend: str) -> AsyncIterator[list[Replica]]:
    """Replicas the test opens with :func:`replica`; released and closed after it."""
    opened: list[Replica] = []
    yield opened
    for made in opened:
        await made.aclose()


async def replica(url: str, opened: list[Replica]) -> Replica:
    store = await PostgresStateStore.open(url)
    made = Replica(store, AdvisoryLockLeadership(url, store))
    opened.append(made)
    return made


# --- schema ---------------------------------------------------------------------------------------


async def test_the_schema_is_created_on_first_open(postgres_url: str) -> None:
    store = await PostgresStateStore.open(postgres_url)
    await store.aclose()
    assert await fetch(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    tables = await fetch(postgres_url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    assert {name for (name,) in tables} == {"schema_version", "alerts", "outbox", "meta"}
    assert await fetch(postgres_url, "SELECT last_value, is_called FROM leader_epoch") == [(1, False)]
    async with connection(postgres_url) as db:
        assert await migrate(db) == SCHEMA_VERSION  # opened again: nothing to do
    assert await fetch(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_an_older_schema_is_migrated_in_one_transaction(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await PostgresStateStore.open(postgres_url)
    await store.commit_cycle({KEY: FIRING}, [message("kept")], NOW)
    await store.aclose()
    # Two versions after this one; the second fails: neither is applied.
    monkeypatch.setattr(postgres, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    monkeypatch.setitem(postgres.MIGRATIONS, SCHEMA_VERSION + 1, ("ALTER TABLE alerts ADD COLUMN note TEXT",))
    monkeypatch.setitem(postgres.MIGRATIONS, SCHEMA_VERSION + 2, ("CREATE INDEX broken ON alerts (no_such_column)",))
    with pytest.raises(StateStoreError, match="no_such_column"):
        await PostgresStateStore.open(postgres_url)
    assert await fetch(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    note = "SELECT 1 FROM information_schema.columns WHERE table_name = 'alerts' AND column_name = 'note'"
    assert await fetch(postgres_url, note) == []
    assert await sloeval_sessions(postgres_url) == 0

    monkeypatch.setitem(postgres.MIGRATIONS, SCHEMA_VERSION + 2, ("CREATE INDEX alerts_note ON alerts (note)",))
    store = await PostgresStateStore.open(postgres_url)
    try:
        assert await fetch(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION + 2,)]
        assert await fetch(postgres_url, note) == [(1,)]
        assert await store.load_alerts() == {KEY: FIRING}  # the data stays
        assert await store.counts() == {("telegram", "pending"): 1}
    finally:
        await store.aclose()


async def test_a_newer_schema_stops_the_start_with_one_line(postgres_url: str) -> None:
    store = await PostgresStateStore.open(postgres_url)
    await store.commit_cycle({KEY: FIRING}, [], NOW)
    await store.aclose()
    await fetch(postgres_url, "UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StateStoreError) as info:
        await PostgresStateStore.open(postgres_url)
    text = str(info.value)
    assert "\n" not in text
    assert f"version {SCHEMA_VERSION + 1}" in text
    assert f"this sloeval's {SCHEMA_VERSION}" in text
    assert await sloeval_sessions(postgres_url) == 0  # the refused start left no session behind
    assert await fetch(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION + 1,)]
    assert await fetch(postgres_url, "SELECT count(*) FROM alerts") == [(1,)]  # untouched


async def test_replicas_opening_an_empty_database_together_all_succeed(postgres_url: str) -> None:
    stores: list[PostgresStateStore] = []

    async def open_one() -> None:
        stores.append(await PostgresStateStore.open(postgres_url))

    try:
        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(open_one)
        assert len(stores) == 4
        assert await fetch(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        await stores[0].commit_cycle({KEY: FIRING}, [], NOW)
        assert await stores[3].load_alerts() == {KEY: FIRING}
    finally:
        for store in stores:
            await store.aclose()


# --- leadership -----------------------------------------------------------------------------------


async def test_one_of_two_replicas_leads_until_it_releases(postgres_url: str, replicas: list[Replica]) -> None:
    a, b = await replica(postgres_url, replicas), await replica(postgres_url, replicas)
    changed = a.leadership.changed
    assert not a.leadership.is_leader()
    assert not a.leadership.database_up  # not asked yet
    assert [await a.tick(), await b.tick()] == [True, False]
    assert a.leadership.database_up
    assert b.leadership.database_up
    assert changed.is_set()
    first = a.store.epoch
    assert first >= 1
    assert b.store.epoch == 0
    for _ in range(3):  # a heartbeat renews; it draws no new epoch
        assert [await b.tick(), await a.tick()] == [False, True]
    assert a.store.epoch == first
    assert await fetch(postgres_url, "SELECT value FROM meta WHERE key = 'leader_epoch'") == [(first,)]

    await a.leadership.release()
    assert not a.leadership.is_leader()
    assert await b.tick()  # at its next heartbeat
    assert b.store.epoch > first
    assert await fetch(postgres_url, "SELECT value FROM meta WHERE key = 'leader_epoch'") == [(b.store.epoch,)]
    assert not await a.tick()  # the lock is b's now
    assert a.leadership.database_up


async def test_a_deposed_leader_writes_and_claims_nothing(postgres_url: str, replicas: list[Replica]) -> None:
    a, b = await replica(postgres_url, replicas), await replica(postgres_url, replicas)
    assert await a.tick()
    await a.store.commit_cycle({KEY: FIRING}, [message("from a")], NOW)
    [claimed] = await a.store.due("telegram", NOW)
    # a's leader session dies without a noticing (its lease still runs): the database frees the lock.
    await fetch(postgres_url, "SELECT pg_terminate_backend(%s)", (await lock_holder_pid(postgres_url),))
    with anyio.fail_after(5):
        while not await b.tick():
            await anyio.sleep(0.05)
    assert b.store.epoch > a.store.epoch
    assert not a.leadership.is_leader()  # its ended session is seen before any send, lease or not
    with pytest.raises(StateStoreError, match="no longer the leader") as info:
        await a.store.commit_cycle({KEY: FIRING, OTHER: PENDING}, [message("from a, deposed")], NOW + 60)
    assert str(info.value) == f"no longer the leader (epoch {a.store.epoch}, the database has {b.store.epoch})"
    with pytest.raises(StateStoreError, match="no longer the leader"):
        await a.store.due("telegram", NOW + 60)
    assert await b.store.load_alerts() == {KEY: FIRING}
    assert await b.store.last_cycle_at() == NOW
    assert await b.store.counts() == {("telegram", "pending"): 1}
    # The new leader takes over what the old one claimed but did not send.
    [taken] = await b.store.due("telegram", NOW + 60)
    assert taken.id == claimed.id
    assert await fetch(postgres_url, "SELECT claimed_epoch FROM outbox") == [(b.store.epoch,)]
    await b.store.commit_cycle({OTHER: PENDING}, [message("from b")], NOW + 60)
    assert await b.store.load_alerts() == {OTHER: PENDING}
    assert not await a.tick()  # and its heartbeat agrees
    assert b.leadership.is_leader()


async def test_due_skips_what_another_claimer_holds_and_whatever_queues_behind_it(postgres_url: str) -> None:
    store = await PostgresStateStore.open(postgres_url)
    try:
        await store.commit_cycle({}, [message("a1", "a"), message("a2", "a"), message("b1", "b")], NOW)
        async with connection(postgres_url) as other, other.transaction():
            await other.execute("SELECT id FROM outbox WHERE subject = 'a1' FOR UPDATE")  # a claim in progress
            with anyio.fail_after(5):  # skipped, never waited for
                assert [item.subject for item in await store.due("telegram", NOW)] == ["b1"]
            assert await store.next_attempt_at("telegram") == NOW
        assert [item.subject for item in await store.due("telegram", NOW)] == ["a1", "b1"]
    finally:
        await store.aclose()


async def test_a_deposed_leader_and_its_successor_claiming_together_never_share_a_message(
    postgres_url: str, replicas: list[Replica]
) -> None:
    old, new = await replica(postgres_url, replicas), await replica(postgres_url, replicas)
    assert await old.tick()
    await old.store.commit_cycle({}, [message(f"m{i}", f"r{i % 7}") for i in range(60)], NOW)
    await old.leadership.release()
    assert await new.tick()
    got: dict[str, list[int]] = {"old": [], "new": []}

    async def deliver(name: str, store: PostgresStateStore) -> None:
        for _ in range(200):
            try:
                items = await store.due("telegram", NOW, limit=5)
            except StateStoreError:
                items = []
            for item in items:
                got[name].append(item.id)
                await store.mark_sent(item.id, NOW + 1)
            if not items and name == "new":
                return
            await anyio.sleep(0)

    async with anyio.create_task_group() as group:
        group.start_soon(deliver, "old", old.store)
        group.start_soon(deliver, "new", new.store)
    assert got["old"] == []
    assert sorted(got["new"]) == sorted(set(got["new"]))
    assert len(got["new"]) == 60
    assert await new.store.counts() == {("telegram", "sent"): 60}


async def test_leadership_through_a_database_kill_and_restart(
    killable_postgres: KillablePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "HEARTBEAT", 0.1)
    monkeypatch.setattr(postgres, "LEASE", 1.0)
    url = killable_postgres.url
    opened: list[Replica] = []
    try:
        a, b = await replica(url, opened), await replica(url, opened)
        assert [await a.tick(), await b.tick()] == [True, False]
        first = a.store.epoch
        with structlog.testing.capture_logs() as logs:
            killable_postgres.kill()
            killed = time.monotonic()
            while a.leadership.is_leader():
                assert time.monotonic() - killed <= postgres.LEASE
                await a.tick()
                await b.tick()
                await anyio.sleep(postgres.HEARTBEAT)
            await a.tick()
            await b.tick()
            assert not a.leadership.database_up
            assert not b.leadership.database_up
            assert not b.leadership.is_leader()
            killable_postgres.restart()
            with anyio.fail_after(10):
                while not (await a.tick() or await b.tick()):
                    await anyio.sleep(postgres.HEARTBEAT)
        leaders = [r for r in (a, b) if r.leadership.is_leader()]
        assert len(leaders) == 1
        assert leaders[0].store.epoch > first
        assert a.leadership.database_up or b.leadership.database_up
        events = [entry["event"] for entry in logs]
        assert "leadership_lost" in events
        assert "database_unavailable" in events
        assert PASSWORD not in repr(logs)
        # Its store works again too, and the epoch fences the commit.
        await leaders[0].store.commit_cycle({KEY: FIRING}, [], NOW)
        assert await leaders[0].store.load_alerts() == {KEY: FIRING}
    finally:
        for made in opened:
            await made.aclose()


async def test_the_lease_runs_out_while_the_database_does_not_answer(
    postgres_url: str, replicas: list[Replica], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "HEARTBEAT", 0.1)
    monkeypatch.setattr(postgres, "LEASE", 0.3)
    monkeypatch.setattr(postgres, "CONNECT_TIMEOUT", 0.8)  # a heartbeat gives up after 0.9 s
    leader = await replica(postgres_url, replicas)
    assert await leader.tick()
    pid = await lock_holder_pid(postgres_url)
    renewed = time.monotonic()
    assert await leader.tick()
    os.kill(pid, signal.SIGSTOP)  # its server process hangs: the heartbeat gets no answer
    try:
        heartbeat_over = anyio.Event()

        async def heartbeat() -> None:
            await leader.leadership.tick()
            heartbeat_over.set()

        async with anyio.create_task_group() as group:
            group.start_soon(heartbeat)
            while leader.leadership.is_leader():
                await anyio.sleep(0.01)
            # It stopped leading when its lease ran out, while the heartbeat still waited for an answer.
            assert not heartbeat_over.is_set()
            assert time.monotonic() - renewed >= postgres.LEASE
        assert time.monotonic() - renewed < 5  # the heartbeat gave up on its own
        assert not leader.leadership.is_leader()
        assert not leader.leadership.database_up
    finally:
        os.kill(pid, signal.SIGCONT)


# --- outages and secrets --------------------------------------------------------------------------


async def test_a_killed_database_raises_state_store_errors_and_the_store_recovers(
    killable_postgres: KillablePostgres,
) -> None:
    store = await PostgresStateStore.open(killable_postgres.url)
    try:
        await store.commit_cycle({KEY: FIRING}, [message("queued")], NOW)
        [item] = await store.due("telegram", NOW)
        killable_postgres.kill()
        calls = {
            "load_alerts": store.load_alerts,
            "last_cycle_at": store.last_cycle_at,
            "commit_cycle": lambda: store.commit_cycle({KEY: FIRING}, [message("lost")], NOW + 60),
            "due": lambda: store.due("telegram", NOW),
            "next_attempt_at": lambda: store.next_attempt_at("telegram"),
            "prune": lambda: store.prune("telegram", NOW),
            "mark_sent": lambda: store.mark_sent(item.id, NOW),
            "mark_failed": lambda: store.mark_failed(item.id, "x", NOW),
            "reschedule": lambda: store.reschedule(item.id, NOW + 30, "x"),
            "counts": store.counts,
        }
        for name, call in calls.items():
            with anyio.fail_after(10), pytest.raises(StateStoreError) as info:
                await call()
            assert type(info.value) is StateStoreError, name
            text = str(info.value)
            assert text.startswith("state database: "), (name, text)
            assert "\n" not in text, name
            assert PASSWORD not in text, name
        killable_postgres.restart()
        # The same store object: it connects again at its next call.
        assert await store.load_alerts() == {KEY: FIRING}
        assert [queued.subject for queued in await store.due("telegram", NOW)] == ["queued"]
        await store.commit_cycle({OTHER: PENDING}, [], NOW + 120)
        assert await store.load_alerts() == {OTHER: PENDING}
    finally:
        await store.aclose()


async def test_a_database_that_does_not_answer_does_not_stop_the_start(postgres_server: PostgresServer) -> None:
    """A sidecar must not crash-loop while its database is away; a refusing server stops the start."""
    store = await PostgresStateStore.open(f"postgresql://{USER}:{PASSWORD}@127.0.0.1:1/sloeval")
    assert not store.schema_ready
    with pytest.raises(StateStoreError) as info:
        await store.load_alerts()
    assert PASSWORD not in str(info.value)
    await store.aclose()


async def test_no_state_store_error_quotes_the_password(postgres_server: PostgresServer) -> None:
    port = postgres_server.port
    urls = {
        "wrong password": f"postgresql://{USER}:not-{PASSWORD}@127.0.0.1:{port}/sloeval",
        "no such database": f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/nowhere",
        "bad percent-encoding": f"postgresql://{USER}:{PASSWORD}%zz@127.0.0.1:{port}/sloeval",
        "unknown parameter": f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/sloeval?bogus=1",
        "bad IPv6 host": f"postgresql://{USER}:{PASSWORD}@[::1/sloeval",
        "bad port": f"postgresql://{USER}:{PASSWORD}@127.0.0.1:port/sloeval",
        "keywords": f"host=127.0.0.1 port={port} user={USER} password={PASSWORD} oops",
        "percent-encoded": f"postgresql://{USER}:{PASSWORD.replace('-', '%2D')}@127.0.0.1:{port}/nowhere",
    }
    for name, url in urls.items():
        with pytest.raises(StateStoreError) as info:
            await PostgresStateStore.open(url)
        error: BaseException | None = info.value
        while error is not None:  # nor does any error behind it, which a traceback would print
            assert PASSWORD not in str(error), (name, str(error))
            error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        assert "\n" not in str(info.value), name


async def test_open_state_store_picks_postgresql_for_a_database_url(postgres_url: str) -> None:
    settings = load_settings(database_url=postgres_url)
    store, leadership = await open_state_store(settings)
    try:
        assert isinstance(store, PostgresStateStore)
        assert isinstance(leadership, AdvisoryLockLeadership)
        await leadership.tick()
        assert leadership.is_leader()
        await store.commit_cycle({KEY: FIRING}, [], NOW)
        assert await store.load_alerts() == {KEY: FIRING}
    finally:
        if isinstance(leadership, AdvisoryLockLeadership):
            await leadership.release()
        await store.aclose()


async def test_a_session_the_server_ended_is_replaced_before_the_next_call(postgres_url: str) -> None:
    store = await PostgresStateStore.open(postgres_url)
    try:
        await store.commit_cycle({KEY: FIRING}, [], NOW)
        await fetch(
            postgres_url,
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'sloeval'",
        )
        assert await sloeval_sessions(postgres_url) == 0
        assert await store.load_alerts() == {KEY: FIRING}  # a new session, without a failed call first
    finally:
        await store.aclose()


async def test_a_call_cancelled_midway_leaves_the_store_usable(postgres_url: str, replicas: list[Replica]) -> None:
    leader = await replica(postgres_url, replicas)
    assert await leader.tick()
    store = leader.store
    await store.commit_cycle({KEY: FIRING}, [message("first")], NOW)
    async with connection(postgres_url) as other, other.transaction():
        await other.execute("SELECT value FROM meta WHERE key = 'leader_epoch' FOR UPDATE")
        with anyio.move_on_after(0.3) as scope:  # the commit waits for the row: shutdown cancels it
            await store.commit_cycle({OTHER: PENDING}, [message("cancelled")], NOW + 60)
        assert scope.cancelled_caught
    assert await store.load_alerts() == {KEY: FIRING}
    await store.commit_cycle({OTHER: PENDING}, [message("second")], NOW + 120)
    assert await store.load_alerts() == {OTHER: PENDING}
    assert [item.subject for item in await store.due("telegram", NOW + 120)] == ["first"]
    assert await store.counts() == {("telegram", "pending"): 2}


def test_only_a_refusal_that_will_not_pass_stops_the_start() -> None:
    from sloeval.state.postgres import _refused_for_good

    assert _refused_for_good('FATAL:  password authentication failed for user "sloeval"')
    assert _refused_for_good('FATAL:  database "nowhere" does not exist')
    assert _refused_for_good('invalid integer value "port" for connection option "port"')
    assert not _refused_for_good("FATAL:  sorry, too many clients already")
    assert not _refused_for_good("FATAL:  the database system is shutting down")
    assert not _refused_for_good("FATAL:  the database system is starting up")
    assert not _refused_for_good("Connection refused")


def test_a_password_with_a_space_is_scrubbed_too() -> None:
    from sloeval.state.postgres import _scrubbed

    url = "postgresql://u:S3cr3tPW x@127.0.0.1:5432/db"
    error = ValueError('unexpected spaces found in "S3cr3tPW x"')
    assert "S3cr3tPW" not in _scrubbed(error, url)
