"""The SQLite state store: round trips, corruption handling, unusable directories, atomic cycles."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sloeval.alerting.model import AlertKey, AlertState, Facts
from sloeval.alerting.store import NewMessage, StateStore, StateStoreError
from sloeval.state import sqlite as state_store
from sloeval.state.sqlite import DB_NAME, SQLiteStateStore

NOW = 1_700_000_000.0

KEY = AlertKey("api-errors", "FastBurn", (("endpoint", "/a\"b'c\\"), ("region", "zürich ✓ 東京")))
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
)
FIRING = AlertState("critical", "firing", NOW - 600, FACTS, firing_since=NOW - 300, last_sent_at=NOW - 300)
PENDING = AlertState("warning", "pending", NOW - 60, Facts(condition="error budget below 25%"))


def message(channel: str | None = "telegram", subject: str = "FIRING: api-errors") -> NewMessage:
    return NewMessage(channel, "4242", subject, "body", None, NOW + 3600)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = SQLiteStateStore.open(tmp_path)
    yield opened
    opened.close()


def outbox_subjects(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("SELECT subject FROM outbox ORDER BY id")]


def test_round_trip_after_reopen(tmp_path: Path) -> None:
    second = AlertKey("api-latency", "SlowBurn")
    first = SQLiteStateStore.open(tmp_path)
    first.commit_cycle({KEY: FIRING, second: PENDING}, [message()], NOW)
    first.close()

    reopened = SQLiteStateStore.open(tmp_path)
    try:
        loaded = reopened.load_alerts()
        assert loaded == {KEY: FIRING, second: PENDING}
        [(key, state)] = [(k, v) for k, v in loaded.items() if k.slo == "api-errors"]
        assert key.labels == (("endpoint", "/a\"b'c\\"), ("region", "zürich ✓ 東京"))
        assert state.facts.burn_rates == (("1h", 15.25), ("5m", None))
        assert state.facts.budget_minutes_left is None
        assert reopened.counts() == {("telegram", "pending"): 1}
        [item] = reopened.due("telegram", NOW)
        assert (item.recipient, item.subject, item.body, item.html, item.attempts) == (
            "4242",
            "FIRING: api-errors",
            "body",
            None,
            0,
        )
        assert item.deadline == NOW + 3600
        # The next cycle replaces the states: a resolved alert disappears.
        reopened.commit_cycle({second: PENDING}, [], NOW + 60)
        assert reopened.load_alerts() == {second: PENDING}
    finally:
        reopened.close()
    with contextlib.closing(SQLiteStateStore.open(tmp_path)) as third:
        assert third.load_alerts() == {second: PENDING}


def test_outbox_status_transitions(store: StateStore) -> None:
    store.commit_cycle({}, [message(subject="a"), message(subject="b"), message("email", "c")], NOW)
    [a] = store.due("telegram", NOW)  # one recipient: one message at a time, in order
    assert a.subject == "a"
    assert store.due("telegram", NOW - 1) == []
    store.mark_sent(a.id, NOW + 1)
    [b] = store.due("telegram", NOW + 1)
    assert b.subject == "b"
    store.reschedule(b.id, NOW + 30, "Telegram error: boom")
    assert store.due("telegram", NOW + 29) == []
    [again] = store.due("telegram", NOW + 30)
    assert (again.id, again.attempts) == (b.id, 1)
    assert store.next_attempt_at("telegram") == NOW + 30
    assert store.next_attempt_at("email") == NOW
    assert store.next_attempt_at("nothing") is None
    store.mark_failed(b.id, "permanent", NOW + 31)
    assert store.counts() == {("telegram", "sent"): 1, ("telegram", "failed"): 1, ("email", "pending"): 1}
    assert store.next_attempt_at("telegram") is None


def corrupt_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{DB_NAME}.corrupt-*"))


def test_garbage_database_is_moved_aside(tmp_path: Path) -> None:
    garbage = b"this is not an SQLite database\x00\xff" * 200
    (tmp_path / DB_NAME).write_bytes(garbage)
    store = SQLiteStateStore.open(tmp_path)
    try:
        [aside] = corrupt_files(tmp_path)
        assert aside.read_bytes() == garbage
        assert store.load_alerts() == {}
        assert store.counts() == {}
        store.commit_cycle({KEY: FIRING}, [message()], NOW)  # the fresh database is usable
        assert store.load_alerts() == {KEY: FIRING}
    finally:
        store.close()


def test_truncated_database_is_moved_aside(tmp_path: Path) -> None:
    good = SQLiteStateStore.open(tmp_path)
    good.commit_cycle({KEY: FIRING}, [message()], NOW)
    good.close()
    path = tmp_path / DB_NAME
    path.write_bytes(path.read_bytes()[:1500])  # header intact, pages cut off
    store = SQLiteStateStore.open(tmp_path)
    try:
        assert len(corrupt_files(tmp_path)) == 1
        assert store.load_alerts() == {}
        assert store.counts() == {}
    finally:
        store.close()


def insert_alert_row(directory: Path, key_id: str, state: str) -> None:
    SQLiteStateStore.open(directory).close()
    with contextlib.closing(sqlite3.connect(directory / DB_NAME)) as db, db:
        db.execute("INSERT INTO alerts (id, state) VALUES (?, ?)", (key_id, state))
        db.execute(
            "INSERT INTO outbox (channel, recipient, subject, body, created_at, deadline, next_attempt_at)"
            " VALUES ('email', 'a@b', 'kept aside', 'x', 0, 0, 0)"
        )


GOOD_STATE = FIRING.to_json()
BAD_STATES = {
    "not json": "{not json",
    "json list": "[1, 2]",
    "unknown status": GOOD_STATE.replace('"firing"', '"exploded"'),
    "missing facts": json.dumps({"severity": "critical", "status": "firing", "active_since": 1.0}),
    "non-number time": GOOD_STATE.replace(str(NOW - 600), '"yesterday"'),
}


@pytest.mark.parametrize("bad", list(BAD_STATES.values()), ids=list(BAD_STATES))
def test_unparseable_alert_state_is_moved_aside(tmp_path: Path, bad: str) -> None:
    insert_alert_row(tmp_path, KEY.to_id(), bad)
    store = SQLiteStateStore.open(tmp_path)
    try:
        [aside] = corrupt_files(tmp_path)
        assert store.load_alerts() == {}
        assert store.counts() == {}
    finally:
        store.close()
    assert outbox_subjects(aside) == ["kept aside"]


def test_unparseable_alert_id_is_moved_aside(tmp_path: Path) -> None:
    insert_alert_row(tmp_path, "{not json", GOOD_STATE)
    store = SQLiteStateStore.open(tmp_path)
    try:
        assert len(corrupt_files(tmp_path)) == 1
        assert store.load_alerts() == {}
    finally:
        store.close()


def test_alert_state_with_malformed_facts_is_moved_aside(tmp_path: Path) -> None:
    data = json.loads(GOOD_STATE)
    data["facts"]["burn_rates"] = "1h"
    insert_alert_row(tmp_path, KEY.to_id(), json.dumps(data))
    store = SQLiteStateStore.open(tmp_path)
    try:
        assert len(corrupt_files(tmp_path)) == 1
        assert store.load_alerts() == {}
    finally:
        store.close()


def test_locked_database_is_not_moved_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = SQLiteStateStore.open(tmp_path)
    first.commit_cycle({KEY: FIRING}, [], NOW)
    first.close()
    holder = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    real_connect = sqlite3.connect

    def short_busy_timeout(*args: object, **kwargs: object) -> sqlite3.Connection:
        kwargs["timeout"] = 0.2  # the store waits 10 s for a lock; the outcome is the same, only faster
        return real_connect(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(state_store.sqlite3, "connect", short_busy_timeout)
    try:
        with pytest.raises(StateStoreError):
            SQLiteStateStore.open(tmp_path).close()
        assert corrupt_files(tmp_path) == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_waits_for_a_short_lock(tmp_path: Path) -> None:
    first = SQLiteStateStore.open(tmp_path)
    first.commit_cycle({KEY: FIRING}, [], NOW)
    first.close()
    holder = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        store = SQLiteStateStore.open(tmp_path)
    finally:
        release.join()
        holder.close()
    try:
        assert store.load_alerts() == {KEY: FIRING}
        assert corrupt_files(tmp_path) == []
    finally:
        store.close()


def test_read_only_directory(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        if os.access(directory, os.W_OK):
            pytest.skip("running with privileges that can write anyway (root)")
        with pytest.raises(StateStoreError, match="not writable") as info:
            SQLiteStateStore.open(directory)
        assert str(directory) in str(info.value)
        assert not (directory / DB_NAME).exists()
    finally:
        directory.chmod(0o700)


def test_directory_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, not a directory")
    target = blocker / "state"
    with pytest.raises(StateStoreError, match="cannot create state directory") as info:
        SQLiteStateStore.open(target)
    assert str(target) in str(info.value)
    assert blocker.read_text() == "a regular file, not a directory"


def test_commit_cycle_is_atomic(store: StateStore) -> None:
    store.commit_cycle({KEY: FIRING}, [message(subject="first")], NOW)
    other = AlertKey("api-latency", "SlowBurn")
    with pytest.raises(StateStoreError, match="NOT NULL") as info:
        store.commit_cycle({other: PENDING}, [message(subject="ok"), message(channel=None)], NOW + 60)
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)  # the driver's error, behind the store's own
    assert store.load_alerts() == {KEY: FIRING}
    assert store.counts() == {("telegram", "pending"): 1}
    assert [item.subject for item in store.due("telegram", NOW + 3600)] == ["first"]
    # The connection is still usable after the rollback.
    store.commit_cycle({other: PENDING}, [message(subject="second")], NOW + 120)
    assert store.load_alerts() == {other: PENDING}
    assert outbox_subjects(store.path) == ["first", "second"]


def test_commit_cycle_is_atomic_across_reopen(tmp_path: Path) -> None:
    store = SQLiteStateStore.open(tmp_path)
    store.commit_cycle({KEY: FIRING}, [], NOW)
    with pytest.raises(StateStoreError) as info:
        store.commit_cycle({}, [message(subject="lost"), message(channel=None)], NOW)
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
    store.close()
    reopened = SQLiteStateStore.open(tmp_path)
    try:
        assert reopened.load_alerts() == {KEY: FIRING}
        assert reopened.counts() == {}
    finally:
        reopened.close()


def test_old_finished_messages_are_pruned_on_open(tmp_path: Path) -> None:
    store = SQLiteStateStore.open(tmp_path)
    store.commit_cycle({}, [message(subject="old"), message(subject="recent"), message(subject="pending")], NOW)
    now = time.time()
    [old] = store.due("telegram", NOW)
    store.mark_sent(old.id, now - state_store.KEEP_DONE_SECONDS - 60)
    [recent] = store.due("telegram", NOW)
    store.mark_failed(recent.id, "x", now - 60)
    store.close()
    reopened = SQLiteStateStore.open(tmp_path)
    try:
        assert outbox_subjects(reopened.path) == ["recent", "pending"]
    finally:
        reopened.close()


def test_messages_to_one_recipient_go_out_in_order(tmp_path: Path) -> None:
    store = SQLiteStateStore.open(tmp_path)
    try:
        first = NewMessage("email", "a@x.test", "[FIRING] s", "b", None, 1e12)
        second = NewMessage("email", "a@x.test", "[RESOLVED] s", "b", None, 1e12)
        other = NewMessage("email", "b@x.test", "[FIRING] s", "b", None, 1e12)
        store.commit_cycle({}, [first, second, other], now=100.0)
        due = store.due("email", now=100.0)
        assert [(i.recipient, i.subject) for i in due] == [("a@x.test", "[FIRING] s"), ("b@x.test", "[FIRING] s")]
        store.reschedule(due[0].id, next_attempt_at=500.0, error="timeout")  # the FIRING is retrying
        assert [i.subject for i in store.due("email", now=200.0) if i.recipient == "a@x.test"] == []
        assert [i.subject for i in store.due("email", now=500.0) if i.recipient == "a@x.test"] == ["[FIRING] s"]
    finally:
        store.close()


def test_a_cycle_writes_only_what_changed_in_an_alerts_lifecycle(tmp_path: Path) -> None:
    firing_key, pending_key, gone_key = AlertKey("api-errors", "Burn"), AlertKey("api", "Low"), AlertKey("x", "Y")
    first = {firing_key: FIRING, pending_key: PENDING, gone_key: PENDING}
    with contextlib.closing(SQLiteStateStore.open(tmp_path)) as store:
        store.commit_cycle(first, [], NOW)
        moved = replace(FIRING, facts=replace(FACTS, budget_remaining_percent=1.0))  # same lifecycle, new numbers
        fired = replace(PENDING, status="firing", firing_since=NOW)
        store.commit_cycle({firing_key: moved, pending_key: fired}, [], NOW + 20, previous=first)
    with contextlib.closing(SQLiteStateStore.open(tmp_path)) as store:
        stored = store.load_alerts()
    assert stored == {firing_key: FIRING, pending_key: fired}  # the firing alert's row was not rewritten
    assert gone_key not in stored


def test_next_attempt_counts_only_the_head_of_each_recipients_queue(store: StateStore) -> None:
    behind = [NewMessage("telegram", "4242", f"behind {i}", "b", None, NOW + 3600) for i in range(5)]
    store.commit_cycle({}, [message(subject="head"), *behind], NOW)
    [head] = [item for item in store.due("telegram", NOW) if item.subject == "head"]
    store.reschedule(head.id, NOW + 30, "429")  # the head backs off; the five behind it wait for it
    assert store.due("telegram", NOW + 29) == []
    assert store.next_attempt_at("telegram") == NOW + 30
    store.commit_cycle({}, [NewMessage("telegram", "other", "s", "b", None, NOW + 3600)], NOW + 5)
    assert store.next_attempt_at("telegram") == NOW + 5  # another recipient's head can go now
    assert store.next_attempt_at("email") is None


def test_prune_drops_a_channels_old_finished_messages(store: StateStore) -> None:
    now = time.time()
    store.commit_cycle({}, [message(subject="old"), message(subject="recent"), message("email", "old mail")], NOW)
    [old], [mail] = store.due("telegram", NOW), store.due("email", NOW)
    store.mark_sent(old.id, now - state_store.KEEP_DONE_SECONDS - 60)
    store.mark_sent(mail.id, now - state_store.KEEP_DONE_SECONDS - 60)
    [recent] = store.due("telegram", NOW)
    store.mark_failed(recent.id, "x", now - 60)
    store.commit_cycle({}, [message(subject="pending")], NOW)
    assert store.prune("telegram", now) == 1
    assert outbox_subjects(store.path) == ["recent", "old mail", "pending"]  # other channels are theirs to prune
    assert store.prune("telegram", now) == 0


def test_a_second_store_on_the_directory_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    first = SQLiteStateStore.open(tmp_path)
    first.commit_cycle({KEY: FIRING}, [], NOW)
    with pytest.raises(StateStoreError) as info:
        SQLiteStateStore.open(tmp_path)
    assert str(info.value) == f"state directory {tmp_path} is in use by another sloeval (pid {os.getpid()})"
    assert first.load_alerts() == {KEY: FIRING}  # the holder is undisturbed
    first.close()
    first.close()  # closing twice releases nothing else
    second = SQLiteStateStore.open(tmp_path)  # released on close
    try:
        assert second.load_alerts() == {KEY: FIRING}
    finally:
        second.close()


def test_lock_is_released_when_opening_the_database_fails(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).mkdir()  # not a file: the database cannot be opened
    with pytest.raises(StateStoreError):
        SQLiteStateStore.open(tmp_path)
    (tmp_path / DB_NAME).rmdir()
    SQLiteStateStore.open(tmp_path).close()  # not "in use by another sloeval"


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_state_file_lost_while_open_is_recreated_with_the_whole_state(tmp_path: Path, how: str) -> None:
    import structlog

    problems: list[str] = []
    second = AlertKey("api-latency", "SlowBurn")
    states = {KEY: FIRING, second: PENDING}
    store = SQLiteStateStore.open(tmp_path / "state", on_problem=problems.append)
    try:
        store.commit_cycle(states, [message(subject="in flight"), message(subject="queued")], NOW)
        in_flight = store.due("telegram", NOW)[0]
        if how == "deleted":
            (tmp_path / "state" / DB_NAME).unlink()
        else:
            with contextlib.closing(SQLiteStateStore.open(tmp_path / "other")) as other:
                other.commit_cycle({AlertKey("stranger", "X"): PENDING}, [], NOW)
            (tmp_path / "other" / DB_NAME).replace(tmp_path / "state" / DB_NAME)
        with structlog.testing.capture_logs() as logs:
            # Nothing changed in this cycle: with ``previous`` only a diff would be written.
            store.commit_cycle(states, [message(subject="new")], NOW + 20, previous=states)
            store.commit_cycle(states, [], NOW + 40, previous=states)
        store.mark_sent(in_flight.id, time.time())  # the delivery that was in flight lands in the new file
    finally:
        store.close()
    kind = "file_missing" if how == "deleted" else "file_replaced"
    assert problems == [kind]  # once, not once per cycle
    [event] = [e for e in logs if e["event"] == "state_file_recreated"]
    assert (event["log_level"], event["reason"], event["pending_messages"]) == ("error", kind, 2)
    with contextlib.closing(SQLiteStateStore.open(tmp_path / "state")) as reopened:
        assert reopened.load_alerts() == states
        assert reopened.counts() == {("telegram", "pending"): 2, ("telegram", "sent"): 1}
        assert [i.subject for i in reopened.due("telegram", NOW + 60)] == ["queued"]
    # The lost file's journal is never replayed onto the new file: dropped, or kept aside next to a replacement.
    leftovers = sorted(p.name.split(".orphaned-")[0] for p in (tmp_path / "state").glob(f"{DB_NAME}-*"))
    assert leftovers == ([] if how == "deleted" else [f"{DB_NAME}-shm", f"{DB_NAME}-wal"])


def test_a_deleted_lock_file_is_locked_again_so_a_second_sloeval_is_still_refused(tmp_path: Path) -> None:
    problems: list[str] = []
    store = SQLiteStateStore.open(tmp_path, on_problem=problems.append)
    try:
        for path in tmp_path.iterdir():  # "rm state/*" while running
            path.unlink()
        store.commit_cycle({KEY: FIRING}, [], NOW)
        assert "lock_lost" in problems
        with pytest.raises(StateStoreError, match="in use by another sloeval"):
            SQLiteStateStore.open(tmp_path)
        assert store.load_alerts() == {KEY: FIRING}
    finally:
        store.close()
    SQLiteStateStore.open(tmp_path).close()  # released on close


def test_a_lock_file_taken_over_by_another_sloeval_stops_this_one_writing(tmp_path: Path) -> None:
    store = SQLiteStateStore.open(tmp_path)
    try:
        (tmp_path / "sloeval.lock").unlink()
        other = SQLiteStateStore.open(tmp_path)  # it got in before this one noticed
        try:
            with pytest.raises(StateStoreError, match="in use by another sloeval"):
                store.commit_cycle({KEY: FIRING}, [], NOW)
        finally:
            other.close()
    finally:
        store.close()
