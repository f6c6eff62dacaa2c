"""The SQLite backend of the state store: alert state and notification outbox in ``SLOEVAL_STATE_DIR``.

One transaction per evaluation cycle writes the new alert states together with the
messages they cause, so a crash at any point neither loses a resolve nor pages twice.
Delivery workers then take messages from the outbox and mark them sent or failed.

The store holds an exclusive lock on the directory (``sloeval.lock``, ``flock``) for as long as it
is open, so a second sloeval on the same state refuses to start instead of paging a second time.
A database file deleted or replaced under a running store is noticed at the next cycle: the store
starts a new file, carries the pending messages over and writes the whole alert state into it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio
import structlog

from sloeval.alerting.model import AlertKey, AlertState
from sloeval.alerting.store import NewMessage, OutboxItem, StateStoreError

log = structlog.get_logger("sloeval.state")

DB_NAME = "sloeval.sqlite3"
LOCK_NAME = "sloeval.lock"
SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (id TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    html TEXT,
    created_at REAL NOT NULL,
    deadline REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, channel, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_heads ON outbox (status, channel, recipient, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""
KEEP_DONE_SECONDS = 7 * 86400
UNKNOWN_FILE = (-1, -1)
OUTBOX_COLUMNS = (
    "id, channel, recipient, subject, body, html, created_at, deadline, next_attempt_at, attempts, status,"
    " last_error, done_at"
)


class SQLiteStateStore:
    """Synchronous SQLite access; every method is short and safe to call from a worker thread."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        *,
        lock_fd: int = -1,
        on_problem: Callable[[str], None] | None = None,
    ) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self.path = path
        self._lock_fd = lock_fd
        self._on_problem = on_problem or (lambda kind: None)
        self._file = _file_identity(path)
        self._lost: str | None = None  # why the file went away, until a new one is written
        self._orphans: list[tuple[object, ...]] | None = None  # pending messages read from the lost file
        self._write_all = False  # the next commit writes every alert state, whatever ``previous`` says

    @classmethod
    def open(cls, directory: Path, *, on_problem: Callable[[str], None] | None = None) -> SQLiteStateStore:
        """Lock ``directory`` for this process and open (or create) the database in it.

        ``on_problem`` hears of trouble the store recovers from on its own: ``"file_missing"`` and
        ``"file_replaced"``, the database file deleted or replaced while open (once each time).
        """
        _prepare_directory(directory)
        lock_fd = _lock_directory(directory)
        try:
            db = _open_database(directory / DB_NAME)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(db, directory / DB_NAME, lock_fd=lock_fd, on_problem=on_problem)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One caller at a time; a driver error leaves as the store's own :class:`StateStoreError`."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise StateStoreError(f"state database {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the database and release the directory lock (closing again does nothing)."""
        with self._locked():
            self._db.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def _follow_lock(self) -> None:
        """Keep the directory lock on the lock file that is there now.

        Deleting the directory's files deletes ``sloeval.lock`` with them; the lock would then guard
        a file nobody can see, and a second sloeval could start and page too. A lock file that is
        gone or replaced is locked again; if another sloeval holds the new one, this one stops
        writing (StateStoreError each cycle) rather than page beside it.
        """
        if self._lock_fd < 0:
            return
        path = self.path.parent / LOCK_NAME
        try:
            held, there = os.fstat(self._lock_fd), os.stat(path)
            if (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino):
                return
        except FileNotFoundError:
            pass
        log.error(
            "state_lock_file_lost", path=str(path), hint="locked again; do not delete the state directory's files"
        )
        self._on_problem("lock_lost")
        new_fd = _lock_directory(self.path.parent)  # StateStoreError when another sloeval took it meanwhile
        os.close(self._lock_fd)
        self._lock_fd = new_fd

    def _follow_file(self) -> None:
        """Notice the database file deleted or replaced since it was opened, and start a new one.

        The old file stays readable through the open connection: its pending messages are carried
        over with their ids (so a delivery in flight is marked in the new file), and the next commit
        writes every alert state. Called with the lock held.
        """
        if self._lost is None:
            current = _file_identity(self.path)
            if current in (self._file, UNKNOWN_FILE):
                return
            self._lost = "file_missing" if current is None else "file_replaced"
            self._on_problem(self._lost)
        if self._orphans is None:
            try:
                self._orphans = self._db.execute(
                    f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' ORDER BY id"  # noqa: S608
                ).fetchall()
            except sqlite3.Error:
                self._orphans = []
            self._db.close()
            stamp = int(time.time())
            for suffix in ("-wal", "-shm"):  # the lost file's journal: never to be replayed onto another file
                part = Path(f"{self.path}{suffix}")
                with contextlib.suppress(FileNotFoundError):
                    if self._lost == "file_missing":
                        part.unlink()
                    else:  # perhaps the replacement's own: kept for whoever put it there
                        part.rename(part.with_name(f"{part.name}.orphaned-{stamp}"))
        what = "deleted" if self._lost == "file_missing" else "replaced"
        try:
            _prepare_directory(self.path.parent)
            db = _open_database(self.path)
        except (StateStoreError, sqlite3.Error, OSError) as exc:
            raise StateStoreError(f"state database {self.path} was {what} and cannot be re-created: {exc}") from None
        try:
            db.executemany(
                f"INSERT OR IGNORE INTO outbox ({OUTBOX_COLUMNS}) VALUES ({', '.join('?' * 13)})",  # noqa: S608
                self._orphans,
            )
        except sqlite3.Error as exc:
            db.close()
            raise StateStoreError(f"state database {self.path} was {what} and cannot be re-created: {exc}") from None
        log.error(
            "state_file_recreated",
            path=str(self.path),
            reason=self._lost,
            pending_messages=len(self._orphans),
            hint=f"the state file was {what} while sloeval ran; the alert state in memory is written to a new one",
        )
        self._db, self._file = db, _file_identity(self.path)
        self._lost, self._orphans, self._write_all = None, None, True

    def load_alerts(self) -> dict[AlertKey, AlertState]:
        with self._locked():
            rows = self._db.execute("SELECT id, state FROM alerts").fetchall()
        return {AlertKey.from_id(key): AlertState.from_json(state) for key, state in rows}

    def last_cycle_at(self) -> float | None:
        with self._locked():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'last_cycle_at'").fetchone()
        return None if row is None else float(row[0])

    def commit_cycle(
        self,
        states: Mapping[AlertKey, AlertState],
        messages: Sequence[NewMessage],
        now: float,
        *,
        previous: Mapping[AlertKey, AlertState] | None = None,
    ) -> None:
        """Store the alert states and queue the messages, atomically.

        With ``previous`` (what the last commit stored), only what changed is written: an alert
        whose lifecycle (status, times, severity) is unchanged keeps its stored row, even though
        its facts (the numbers its messages would quote) moved. With thousands of firing alerts,
        rewriting every row each cycle would be megabytes per cycle for numbers that only a
        message after a restart would read, slightly older.
        """
        with self._locked():
            self._follow_lock()
            self._follow_file()
            if previous is None or self._write_all:
                upserts, removed = list(states.items()), None
            else:
                upserts = [(k, v) for k, v in states.items() if not _same_lifecycle(previous.get(k), v)]
                removed = [k.to_id() for k in previous.keys() - states.keys()]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if removed is None:
                    self._db.execute("DELETE FROM alerts")
                else:
                    self._db.executemany("DELETE FROM alerts WHERE id = ?", [(key,) for key in removed])
                self._db.executemany(
                    "INSERT OR REPLACE INTO alerts (id, state) VALUES (?, ?)",
                    [(key.to_id(), state.to_json()) for key, state in upserts],
                )
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_cycle_at', ?)", (now,))
                self._db.executemany(
                    "INSERT INTO outbox (channel, recipient, subject, body, html, created_at, deadline,"
                    " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(m.channel, m.recipient, m.subject, m.body, m.html, now, m.deadline, now) for m in messages],
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._write_all = False

    def due(self, channel: str, now: float, limit: int = 50) -> list[OutboxItem]:
        with self._locked():
            rows = self._db.execute(
                "SELECT id, channel, recipient, subject, body, html, created_at, deadline, attempts FROM outbox"
                " WHERE status = 'pending' AND channel = ? AND next_attempt_at <= ?"
                # In order per recipient: a RESOLVED never overtakes its FIRING that is still retrying.
                " AND NOT EXISTS (SELECT 1 FROM outbox AS older WHERE older.status = 'pending'"
                " AND older.channel = outbox.channel AND older.recipient = outbox.recipient AND older.id < outbox.id)"
                " ORDER BY id LIMIT ?",
                (channel, now, limit),
            ).fetchall()
        return [OutboxItem(*row) for row in rows]

    def next_attempt_at(self, channel: str) -> float | None:
        with self._locked():
            # Only the heads of the per-recipient queues: a message behind one that backs off must wait.
            row = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM outbox WHERE id IN (SELECT MIN(id) FROM outbox"
                " WHERE status = 'pending' AND channel = ? GROUP BY recipient)",
                (channel,),
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def prune(self, channel: str, now: float) -> int:
        with self._locked():
            cursor = self._db.execute(
                "DELETE FROM outbox WHERE channel = ? AND status != 'pending' AND done_at < ?",
                (channel, now - KEEP_DONE_SECONDS),
            )
        return cursor.rowcount

    def mark_sent(self, item_id: int, now: float) -> None:
        self._finish(item_id, "sent", None, now)

    def mark_failed(self, item_id: int, error: str, now: float) -> None:
        self._finish(item_id, "failed", error, now)

    def _finish(self, item_id: int, status: str, error: str | None, now: float) -> None:
        with self._locked():
            self._db.execute(
                "UPDATE outbox SET status = ?, last_error = ?, done_at = ?, attempts = attempts + 1 WHERE id = ?",
                (status, error, now, item_id),
            )

    def reschedule(self, item_id: int, next_attempt_at: float, error: str) -> None:
        with self._locked():
            self._db.execute(
                "UPDATE outbox SET next_attempt_at = ?, last_error = ?, attempts = attempts + 1 WHERE id = ?",
                (next_attempt_at, error, item_id),
            )

    def counts(self) -> dict[tuple[str, str], int]:
        """(channel, status) -> number of messages, for tests and diagnostics."""
        with self._locked():
            rows = self._db.execute("SELECT channel, status, COUNT(*) FROM outbox GROUP BY channel, status").fetchall()
        return {(channel, status): int(count) for channel, status, count in rows}


def _prepare_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateStoreError(f"cannot create state directory {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StateStoreError(f"state directory {directory} is not writable by this user (uid {os.getuid()})")


def _lock_directory(directory: Path) -> int:
    """Lock the state directory for this process (``flock`` on ``sloeval.lock``); return the lock's fd.

    The lock lasts until the fd is closed or the process ends, however it ends. The file holds
    the holder's pid, so the process refused can say who holds it.
    """
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StateStoreError(f"cannot create lock file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _pid_in(fd)
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            who = f"pid {holder}" if holder is not None else "pid unknown"
            raise StateStoreError(f"state directory {directory} is in use by another sloeval ({who})") from None
        raise StateStoreError(f"cannot lock {path}: {exc.strerror}") from None
    with contextlib.suppress(OSError):  # a full volume: the lock holds all the same, without the pid
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _pid_in(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _open_database(path: Path) -> sqlite3.Connection:
    """Connect to (or create) the database; a corrupt file is moved aside, never a locked or full one."""
    try:
        return _connect(path)
    except sqlite3.OperationalError as exc:
        # Locked, read-only, disk full: the file may be fine, so never move it aside.
        raise StateStoreError(f"state database {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        stamp = int(time.time())
        log.warning("state_corrupt_moved_aside", path=str(path), error=str(exc), suffix=f".corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{path}{suffix}")
            if part.exists():
                part.rename(part.with_name(f"{part.name}.corrupt-{stamp}"))
        return _connect(path)


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    try:
        result = db.execute("PRAGMA quick_check").fetchone()
        if result is None or result[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {result}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        db.execute("DELETE FROM outbox WHERE status != 'pending' AND done_at < ?", (time.time() - KEEP_DONE_SECONDS,))
        # Rows that no longer parse would crash the loop later: check them now.
        for key, text in db.execute("SELECT id, state FROM alerts"):
            AlertKey.from_id(key)
            AlertState.from_json(text)
    except sqlite3.OperationalError:
        db.close()
        raise
    except (sqlite3.DatabaseError, ValueError, KeyError, TypeError, AttributeError) as exc:
        db.close()
        raise sqlite3.DatabaseError(f"unreadable state: {exc}") from None
    return db


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``; None when there is none, UNKNOWN_FILE when it cannot be told."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    except OSError:
        return UNKNOWN_FILE
    return (stat.st_dev, stat.st_ino)


def _same_lifecycle(old: AlertState | None, new: AlertState) -> bool:
    return old is not None and replace(old, facts=new.facts) == new


class ThreadedSQLiteStore:
    """The (async) :class:`~sloeval.alerting.store.StateStore` of one process: each call of the blocking
    :class:`SQLiteStateStore` runs in a worker thread, so the event loop never waits on the disk."""

    def __init__(self, store: SQLiteStateStore) -> None:
        self.sync = store

    async def load_alerts(self) -> dict[AlertKey, AlertState]:
        return await anyio.to_thread.run_sync(self.sync.load_alerts)

    async def last_cycle_at(self) -> float | None:
        return await anyio.to_thread.run_sync(self.sync.last_cycle_at)

    async def commit_cycle(
        self,
        states: Mapping[AlertKey, AlertState],
        messages: Sequence[NewMessage],
        now: float,
        *,
        previous: Mapping[AlertKey, AlertState] | None = None,
    ) -> None:
        await anyio.to_thread.run_sync(partial(self.sync.commit_cycle, states, messages, now, previous=previous))

    async def due(self, channel: str, now: float, limit: int = 50) -> list[OutboxItem]:
        return await anyio.to_thread.run_sync(self.sync.due, channel, now, limit)

    async def next_attempt_at(self, channel: str) -> float | None:
        return await anyio.to_thread.run_sync(self.sync.next_attempt_at, channel)

    async def prune(self, channel: str, now: float) -> int:
        return await anyio.to_thread.run_sync(self.sync.prune, channel, now)

    async def mark_sent(self, item_id: int, now: float) -> None:
        await anyio.to_thread.run_sync(self.sync.mark_sent, item_id, now)

    async def mark_failed(self, item_id: int, error: str, now: float) -> None:
        await anyio.to_thread.run_sync(self.sync.mark_failed, item_id, error, now)

    async def reschedule(self, item_id: int, next_attempt_at: float, error: str) -> None:
        await anyio.to_thread.run_sync(self.sync.reschedule, item_id, next_attempt_at, error)

    async def counts(self) -> dict[tuple[str, str], int]:
        return await anyio.to_thread.run_sync(self.sync.counts)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.sync.close)
