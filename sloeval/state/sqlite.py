"""The SQLite backend of the state store: alert state and notification outbox in ``SLOEVAL_STATE_DIR``.

One transaction per evaluation cycle writes the new alert states together with the
messages they cause, so a crash at any point neither loses a resolve nor pages twice.
Delivery workers then take messages from the outbox and mark them sent or failed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import structlog

from sloeval.alerting.model import AlertKey, AlertState
from sloeval.alerting.store import NewMessage, OutboxItem, StateStoreError

log = structlog.get_logger("sloeval.state")

DB_NAME = "sloeval.sqlite3"
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
"""
KEEP_DONE_SECONDS = 7 * 86400


class SQLiteStateStore:
    """Synchronous SQLite access; every method is short and safe to call from a worker thread."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self.path = path

    @classmethod
    def open(cls, directory: Path) -> SQLiteStateStore:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateStoreError(f"cannot create state directory {directory}: {exc.strerror}") from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise StateStoreError(f"state directory {directory} is not writable by this user (uid {os.getuid()})")
        path = directory / DB_NAME
        try:
            return cls._connect(path)
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
            return cls._connect(path)

    @classmethod
    def _connect(cls, path: Path) -> SQLiteStateStore:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        try:
            result = db.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {result}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            db.execute(
                "DELETE FROM outbox WHERE status != 'pending' AND done_at < ?", (time.time() - KEEP_DONE_SECONDS,)
            )
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
        return cls(db, path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One caller at a time; a driver error leaves as the store's own :class:`StateStoreError`."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise StateStoreError(f"state database {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._locked():
            self._db.close()

    def load_alerts(self) -> dict[AlertKey, AlertState]:
        with self._locked():
            rows = self._db.execute("SELECT id, state FROM alerts").fetchall()
        return {AlertKey.from_id(key): AlertState.from_json(state) for key, state in rows}

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
        if previous is None:
            upserts, removed = list(states.items()), None
        else:
            upserts = [(k, v) for k, v in states.items() if not _same_lifecycle(previous.get(k), v)]
            removed = [k.to_id() for k in previous.keys() - states.keys()]
        with self._locked():
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
            row = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending' AND channel = ?", (channel,)
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

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


def _same_lifecycle(old: AlertState | None, new: AlertState) -> bool:
    return old is not None and replace(old, facts=new.facts) == new
