"""The PostgreSQL backend: alert state, outbox and delivery log shared by several replicas.

Every replica evaluates and exports; exactly one, the leader, runs the alert engine and delivers.
Leadership is a session advisory lock (``pg_try_advisory_lock``) held on a connection of its own
(:class:`AdvisoryLockLeadership`); each time a replica takes it, it draws a new epoch from a
sequence and writes it to ``meta``, and every cycle's commit checks, inside its transaction, that no
newer epoch exists (a fencing token: a deposed leader whose lock the database already released
cannot write over its successor's state). Outbox rows are claimed with ``FOR UPDATE SKIP LOCKED``
and the claimer's epoch, so two processes never take the same row at once; a deposed leader claims
nothing (the same check as a commit's), and a row a newer leader claimed is never taken back.

A partitioned leader's session must not keep the lock for long: the server is told to probe the
idle connection with TCP keepalives (4 s idle, 2 s interval, 3 probes) and to give up on unacked
data after 10 s (``tcp_user_timeout``), so it releases the lock within about 10 s of the last packet.
The leader renews a lease every :data:`HEARTBEAT` seconds and stops leading (and sending) when it has
not heard from the database for :data:`LEASE`, which is shorter: it has stopped before anyone else
can start.

The schema is created and migrated by sloeval itself (``schema_version``); a database whose schema
is newer than this sloeval stops the start with one line.
"""

from __future__ import annotations

import contextlib
import math
import re
import select
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

import anyio
import psycopg
import structlog

from sloeval.alerting.model import AlertKey, AlertState
from sloeval.alerting.store import NewMessage, OutboxItem, StateStoreError

log = structlog.get_logger("sloeval.state")

SCHEMA_VERSION = 1
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE alerts (id TEXT PRIMARY KEY, state TEXT NOT NULL)",
        """CREATE TABLE outbox (
            id BIGSERIAL PRIMARY KEY,
            channel TEXT NOT NULL,
            recipient TEXT NOT NULL,
            subject TEXT NOT NULL,
            body TEXT NOT NULL,
            html TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            deadline DOUBLE PRECISION NOT NULL,
            next_attempt_at DOUBLE PRECISION NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'pending',
            last_error TEXT,
            done_at DOUBLE PRECISION,
            claimed_epoch BIGINT
        )""",
        "CREATE INDEX outbox_heads ON outbox (status, channel, recipient, id)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value DOUBLE PRECISION NOT NULL)",
        "CREATE SEQUENCE leader_epoch",
    ),
}
"""Schema version -> the statements that turn the previous version into it (all in one transaction)."""

LEADER_LOCK = 0x736C6F6576616C  # "sloeval": the advisory lock the leader holds
MIGRATION_LOCK = LEADER_LOCK + 1  # held (per transaction) while the schema is created or migrated
KEEP_DONE_SECONDS = 7 * 86400
HEARTBEAT = 2.0
LEASE = 6.0
IDLE_SESSION_TIMEOUT = 8.0
"""The leadership session's ``idle_session_timeout``: a frozen or paused leader (SIGSTOP, a VM pause, a
stuck event loop) still answers TCP keepalives from its kernel, so only its silence can end its session
and free the lock. Longer than the lease, so a live leader has stopped leading before it could expire."""
CONNECT_TIMEOUT = 5.0
QUERY_TIMEOUT = 10.0
#: libpq's own keepalives (the client notices a dead server) and the server's (it notices us).
CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": int(CONNECT_TIMEOUT),
    "keepalives": 1,
    "keepalives_idle": 4,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "application_name": "sloeval",
}
SESSION_SETTINGS = (
    "SET tcp_keepalives_idle = 4",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
    "SET tcp_user_timeout = 10000",
    "SET idle_in_transaction_session_timeout = 30000",
    f"SET statement_timeout = {int(QUERY_TIMEOUT * 1000)}",
)
OUTBOX_ITEM = "id, channel, recipient, subject, body, html, created_at, deadline, attempts"
OUTBOX_ITEM_OF_OUTBOX = ", ".join(f"outbox.{column}" for column in OUTBOX_ITEM.split(", "))


#: ``scheme://user:password@`` (up to the authority's last ``@``) and ``password=...`` in a conninfo string.
_URL_PASSWORD = re.compile(r"(\w+://[^:/?#@\s]*:)([^/?#]*)(@)")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def _passwords(url: str) -> set[str]:
    """Every form the password of ``url`` may take in an error text: as written, and percent-decoded."""
    found: set[str] = set()
    with contextlib.suppress(psycopg.Error, ValueError, TypeError):  # a malformed URL: the patterns below
        password = psycopg.conninfo.conninfo_to_dict(url).get("password")
        if password:
            found.add(str(password))
    for match in _URL_PASSWORD.finditer(url):
        found |= {match.group(2), unquote(match.group(2))}
    for match in _KEYWORD_PASSWORD.finditer(url):
        found.add(match.group(2).strip("'"))
    return {password for password in found if password}


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


#: Refusals that pass by themselves: the server is full, starting, stopping or recovering.
_PASSING = ("too many clients", "the database system is", "remaining connection slots")


def _refused_for_good(message: str) -> bool:
    """Whether a failed connect is the settings' fault (a wrong password or database name, a bad URL),
    not the database being away for a while (refused, unreachable, full, restarting)."""
    if any(text in message for text in _PASSING):
        return False
    return "FATAL:" in message or "invalid" in message


def _scrubbed(error: BaseException, url: str) -> str:
    """A driver error in one line, without the URL's password (libpq quotes a malformed URL whole)."""
    text = _one_line(error)
    for password in sorted(_passwords(url), key=len, reverse=True):
        text = text.replace(password, "***")
    text = _URL_PASSWORD.sub(r"\1***\3", text)
    text = _KEYWORD_PASSWORD.sub(r"\1***", text)
    return text[:300]


def _store_error(error: BaseException, url: str) -> StateStoreError:
    return StateStoreError(f"state database: {_scrubbed(error, url)}")


def _cause(error: BaseException, url: str) -> BaseException | None:
    """The driver's error as the cause of the StateStoreError, unless it quotes the password (a
    traceback would print it)."""
    return error if _scrubbed(error, url) == _one_line(error)[:300] else None


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection with sloeval's keepalive and timeout settings."""
    with anyio.fail_after(CONNECT_TIMEOUT + 1):
        connection = await psycopg.AsyncConnection.connect(url, autocommit=True, **CONNECT_OPTIONS)
    try:
        for statement in SESSION_SETTINGS:
            await connection.execute(statement)
    except BaseException:
        await connection.close()
        raise
    return connection


def _hung_up(connection: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server has closed (or spoken on) an idle connection: a restart, a terminated
    session. Told without a round trip: its socket is readable though nothing was asked; so the
    first call after the database came back does not fail on the connection of before.
    """
    if connection.closed:
        return True
    try:
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (psycopg.Error, OSError, ValueError):
        return True


async def migrate(connection: psycopg.AsyncConnection[Any]) -> int:
    """Create or migrate the schema to :data:`SCHEMA_VERSION`; return the version found before.

    Replicas starting together take turns (a transaction-scoped advisory lock). A newer schema than
    this sloeval knows stops the start: an older sloeval must not write into it.
    """
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = await (await connection.execute("SELECT max(version) FROM schema_version")).fetchone()
        found = 0 if row is None or row[0] is None else int(row[0])
        if found > SCHEMA_VERSION:
            raise StateStoreError(
                f"the database's sloeval schema is version {found}, newer than this sloeval's {SCHEMA_VERSION}:"
                " upgrade sloeval (or point SLOEVAL_DATABASE_URL at another database)"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                await connection.execute(statement)
            await connection.execute("DELETE FROM schema_version")
            await connection.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            log.info("state_schema_migrated", backend="postgresql", version=version)
    return found


class PostgresStateStore:
    """The :class:`~sloeval.alerting.store.StateStore` of several replicas, on one connection.

    A broken connection is replaced at the next call; until then every call raises StateStoreError.
    """

    def __init__(self, url: str, connection: psycopg.AsyncConnection[Any] | None) -> None:
        self._url = url
        self._connection: psycopg.AsyncConnection[Any] | None = connection
        self._lock = anyio.Lock()
        self.epoch = 0  # this replica's leader epoch; 0 while it has never led
        self.schema_ready = connection is not None  # ``open`` migrated through the connection it made

    async def ensure_schema(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Create or migrate the schema through ``connection`` if no connection has yet (a replica
        that started while the database was away does it once the database answers)."""
        if not self.schema_ready:
            await migrate(connection)
            self.schema_ready = True

    @classmethod
    async def open(cls, url: str) -> PostgresStateStore:
        """Connect and create or migrate the schema; a newer schema stops the start (StateStoreError).

        A database that does not answer does not stop the start: a sidecar must not crash-loop (its
        pod would turn unready) because the database is away. The replica evaluates and exports, and
        the schema is made when the database answers.
        """
        try:
            connection = await connect(url)
        except (psycopg.OperationalError, OSError, TimeoutError) as exc:
            if isinstance(exc, psycopg.OperationalError) and _refused_for_good(str(exc)):
                # The server answered and refused (password, database name), or the URL is wrong.
                raise _store_error(exc, url) from _cause(exc, url)
            log.warning("database_unavailable", error=_scrubbed(exc, url), hint="alerting starts once it answers")
            return cls(url, None)
        except psycopg.Error as exc:
            raise _store_error(exc, url) from _cause(exc, url)
        try:
            await migrate(connection)
            await check_session_pooling(connection)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await connection.close()  # a refused start must not leave its session behind
            if isinstance(exc, (psycopg.Error, OSError, TimeoutError)):
                raise _store_error(exc, url) from _cause(exc, url)
            raise
        return cls(url, connection)

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The connection, one caller at a time; driver errors leave as StateStoreError."""
        async with self._lock:
            try:
                if self._connection is not None and _hung_up(self._connection):
                    stale, self._connection = self._connection, None
                    with anyio.CancelScope(shield=True):
                        await stale.close()
                if self._connection is None:
                    self._connection = await connect(self._url)
                    await self.ensure_schema(self._connection)
                with anyio.fail_after(QUERY_TIMEOUT + 2):
                    yield self._connection
            except StateStoreError:
                raise
            except (psycopg.Error, OSError, TimeoutError) as exc:
                broken, self._connection = self._connection, None
                if broken is not None:
                    with anyio.CancelScope(shield=True):
                        await broken.close()
                raise _store_error(exc, self._url) from _cause(exc, self._url)
            except BaseException:
                # Cancelled midway (a shutdown, leadership lost): a session left inside a query or a
                # transaction is of no use to the next call.
                left = self._connection
                if left is not None and left.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    self._connection = None
                    with anyio.CancelScope(shield=True):
                        await left.close()
                raise

    async def aclose(self) -> None:
        async with self._lock:
            if self._connection is not None:
                await self._connection.close()
                self._connection = None

    async def load_alerts(self) -> dict[AlertKey, AlertState]:
        async with self._session() as db:
            rows = await (await db.execute("SELECT id, state FROM alerts")).fetchall()
        states = {}
        for key, text in rows:
            try:
                states[AlertKey.from_id(key)] = AlertState.from_json(text)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("state_row_unreadable", backend="postgresql", error=str(exc)[:200], hint="row ignored")
        return states

    async def last_cycle_at(self) -> float | None:
        async with self._session() as db:
            row = await (await db.execute("SELECT value FROM meta WHERE key = 'last_cycle_at'")).fetchone()
        return None if row is None else float(row[0])

    async def commit_cycle(
        self,
        states: Mapping[AlertKey, AlertState],
        messages: Sequence[NewMessage],
        now: float,
        *,
        previous: Mapping[AlertKey, AlertState] | None = None,
    ) -> None:
        if previous is None:
            upserts, removed = list(states.items()), None
        else:
            upserts = [(k, v) for k, v in states.items() if not _same_lifecycle(previous.get(k), v)]
            removed = [k.to_id() for k in previous.keys() - states.keys()]
        async with self._session() as db, db.transaction():
            # The fencing token: a newer leader has been elected since this one: write nothing.
            await self._check_epoch(db, "FOR UPDATE")
            async with db.cursor() as cursor:
                if removed is None:
                    await cursor.execute("DELETE FROM alerts")
                elif removed:
                    await cursor.execute("DELETE FROM alerts WHERE id = ANY(%s)", (removed,))
                if upserts:
                    await cursor.executemany(
                        "INSERT INTO alerts (id, state) VALUES (%s, %s)"
                        " ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state",
                        [(key.to_id(), state.to_json()) for key, state in upserts],
                    )
                await cursor.execute(
                    "INSERT INTO meta (key, value) VALUES ('last_cycle_at', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (now,),
                )
                if messages:
                    await cursor.executemany(
                        "INSERT INTO outbox (channel, recipient, subject, body, html, created_at, deadline,"
                        " next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        [(m.channel, m.recipient, m.subject, m.body, m.html, now, m.deadline, now) for m in messages],
                    )

    async def due(self, channel: str, now: float, limit: int = 50) -> list[OutboxItem]:
        """Claim the due heads of ``channel``'s per-recipient queues for this replica's epoch.

        Rows another claimer holds at this moment are skipped (and so are the messages queued
        behind them); rows a newer leader claimed are never taken back, and a replica a newer
        leader has deposed claims nothing: it gets StateStoreError, as from :meth:`commit_cycle`.
        Its own claims (a message it did not get to) it takes again.
        """
        async with self._session() as db, db.transaction():
            await self._check_epoch(db, "FOR SHARE")  # a new leader's epoch waits for this claim
            rows = await (
                await db.execute(
                    "WITH picked AS (SELECT o.id FROM outbox o WHERE o.status = 'pending'"  # noqa: S608 - constant columns
                    " AND o.channel = %(channel)s"
                    " AND o.next_attempt_at <= %(now)s"
                    " AND (o.claimed_epoch IS NULL OR o.claimed_epoch <= %(epoch)s)"
                    # In order per recipient: a RESOLVED never overtakes its FIRING that is still retrying
                    # (or that another claimer holds).
                    " AND NOT EXISTS (SELECT 1 FROM outbox older WHERE older.status = 'pending'"
                    " AND older.channel = o.channel AND older.recipient = o.recipient AND older.id < o.id)"
                    " ORDER BY o.id LIMIT %(limit)s FOR UPDATE OF o SKIP LOCKED)"
                    " UPDATE outbox SET claimed_epoch = %(epoch)s FROM picked WHERE outbox.id = picked.id"
                    f" RETURNING {OUTBOX_ITEM_OF_OUTBOX}",
                    {"epoch": self.epoch, "channel": channel, "now": now, "limit": limit},
                )
            ).fetchall()
        return sorted((OutboxItem(*row) for row in rows), key=lambda item: item.id)

    async def _check_epoch(self, db: psycopg.AsyncConnection[Any], lock: str) -> None:
        """The fencing token: raise if a newer leader has been elected since this one (in a transaction)."""
        row = await (
            await db.execute(f"SELECT value FROM meta WHERE key = 'leader_epoch' {lock}")  # noqa: S608 - constant
        ).fetchone()
        current = 0 if row is None else int(row[0])
        if current > self.epoch:
            raise StateStoreError(f"no longer the leader (epoch {self.epoch}, the database has {current})")

    async def next_attempt_at(self, channel: str) -> float | None:
        async with self._session() as db:
            row = await (
                await db.execute(
                    "SELECT min(o.next_attempt_at) FROM outbox o WHERE o.status = 'pending' AND o.channel = %s"
                    " AND NOT EXISTS (SELECT 1 FROM outbox older WHERE older.status = 'pending'"
                    " AND older.channel = o.channel AND older.recipient = o.recipient AND older.id < o.id)",
                    (channel,),
                )
            ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def prune(self, channel: str, now: float) -> int:
        async with self._session() as db:
            cursor = await db.execute(
                "DELETE FROM outbox WHERE channel = %s AND status != 'pending' AND done_at < %s",
                (channel, now - KEEP_DONE_SECONDS),
            )
        return max(0, cursor.rowcount)

    async def mark_sent(self, item_id: int, now: float) -> None:
        await self._finish(item_id, "sent", None, now)

    async def mark_failed(self, item_id: int, error: str, now: float) -> None:
        await self._finish(item_id, "failed", error, now)

    async def _finish(self, item_id: int, status: str, error: str | None, now: float) -> None:
        async with self._session() as db:
            await db.execute(
                "UPDATE outbox SET status = %s, last_error = %s, done_at = %s, attempts = attempts + 1 WHERE id = %s",
                (status, error, now, item_id),
            )

    async def reschedule(self, item_id: int, next_attempt_at: float, error: str) -> None:
        async with self._session() as db:
            await db.execute(
                "UPDATE outbox SET next_attempt_at = %s, last_error = %s, attempts = attempts + 1 WHERE id = %s",
                (next_attempt_at, error, item_id),
            )

    async def counts(self) -> dict[tuple[str, str], int]:
        async with self._session() as db:
            rows = await (
                await db.execute("SELECT channel, status, count(*) FROM outbox GROUP BY channel, status")
            ).fetchall()
        return {(channel, status): int(count) for channel, status, count in rows}


def _same_lifecycle(old: AlertState | None, new: AlertState) -> bool:
    return old is not None and replace(old, facts=new.facts) == new


class AdvisoryLockLeadership:
    """Leadership by a session advisory lock on a connection of its own, renewed as a lease.

    :meth:`run` keeps it up: a standby tries the lock every :data:`HEARTBEAT` seconds; the leader
    pings its session as often and counts as leader only while the last ping is younger than
    :data:`LEASE` (:meth:`is_leader`, asked before every send).
    """

    def __init__(self, url: str, store: PostgresStateStore) -> None:
        self._url = url
        self._store = store
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._holding = False
        self._valid_until = -math.inf
        self.database_up = False
        self.changed = anyio.Event()  # set (and replaced) whenever leadership is taken or lost
        self._refusal = ""  # the last reason this replica may not lead, logged once

    def is_leader(self) -> bool:
        """Holding the lock, within the lease, and the lock's session not ended by the server (a
        terminated session frees the lock at once: asked before every send, so no send follows)."""
        if not (self._holding and time.monotonic() < self._valid_until):
            return False
        return self._connection is not None and not _hung_up(self._connection)

    @property
    def epoch(self) -> int:
        return self._store.epoch

    async def run(self) -> None:
        try:
            while True:
                await self.tick()
                await anyio.sleep(HEARTBEAT)
        finally:
            with anyio.CancelScope(shield=True):
                await self.release()

    async def tick(self) -> None:
        """One heartbeat: renew the lease, or try to take the lock."""
        was_leader = self.is_leader()
        if self._connection is not None and _hung_up(self._connection):
            # A restart or a terminated session: the lock went with it; a standby reconnects at once.
            await self._drop("the database closed the session")
        try:
            with anyio.fail_after(CONNECT_TIMEOUT + HEARTBEAT):
                if self._connection is None or self._connection.closed:
                    self._holding = False
                    self._connection = await connect(self._url)
                    await self._connection.execute(f"SET idle_session_timeout = {int(IDLE_SESSION_TIMEOUT * 1000)}")
                if self._holding:
                    asked = time.monotonic()  # the lease counts from the question, not the answer
                    await self._connection.execute("SELECT 1")
                    self._valid_until = asked + LEASE
                else:
                    await self._try_lock(self._connection)
            self.database_up = True
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self.database_up = False
            await self._drop(f"{type(exc).__name__}: {_scrubbed(exc, self._url)}")
        except StateStoreError as exc:  # a pooler in transaction mode, a newer schema: never lead
            self.database_up = True
            if str(exc) != self._refusal:
                log.error("leadership_refused", error=str(exc))
                self._refusal = str(exc)
            await self._drop(str(exc))
        if self.is_leader() != was_leader:
            log.info("leadership_changed", leader=self.is_leader(), epoch=self.epoch)
            self.changed.set()
            self.changed = anyio.Event()

    async def _try_lock(self, connection: psycopg.AsyncConnection[Any]) -> None:
        await migrate(connection)  # at every takeover: a schema newer than this sloeval refuses it
        self._store.schema_ready = True
        asked = time.monotonic()  # the lease counts from the question, not the answer
        row = await (await connection.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,))).fetchone()
        if row is None or not row[0]:
            return
        await check_session_pooling(connection)
        async with connection.transaction():
            epoch_row = await (await connection.execute("SELECT nextval('leader_epoch')")).fetchone()
            assert epoch_row is not None
            epoch = int(epoch_row[0])
            await connection.execute(
                "INSERT INTO meta (key, value) VALUES ('leader_epoch', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (epoch,),
            )
        self._store.epoch = epoch
        self._holding = True
        self._valid_until = asked + LEASE

    async def _drop(self, reason: str) -> None:
        if self._holding:
            log.warning("leadership_lost", reason=reason, epoch=self.epoch)
        else:
            log.warning("database_unavailable", error=reason)
        self._holding = False
        self._valid_until = -math.inf
        broken, self._connection = self._connection, None
        if broken is not None:
            with anyio.CancelScope(shield=True):
                await broken.close()

    async def release(self) -> None:
        """Give the lock back at once (a graceful stop): another replica leads at its next heartbeat."""
        connection, self._connection = self._connection, None
        holding, self._holding = self._holding, False
        self._valid_until = -math.inf
        if connection is None:
            return
        try:
            with anyio.fail_after(2):
                if holding:
                    await connection.execute("SELECT pg_advisory_unlock(%s)", (LEADER_LOCK,))
                    log.info("leadership_released", epoch=self.epoch)
        except (psycopg.Error, OSError, TimeoutError):
            pass  # closing the session releases it too
        finally:
            await connection.close()


async def check_session_pooling(connection: psycopg.AsyncConnection[Any]) -> None:
    """Refuse a pooler in transaction mode (PgBouncer ``pool_mode = transaction``): a session lock
    held there belongs to whichever client the server connection serves next.

    Detected as a server process that changes between two statements of one client connection;
    a pool of one server connection cannot be told from a session, so the README says to use
    session mode.
    """
    pids = set()
    for _ in range(3):
        row = await (await connection.execute("SELECT pg_backend_pid()")).fetchone()
        if row is not None:
            pids.add(int(row[0]))
    if len(pids) > 1:
        raise StateStoreError(
            "SLOEVAL_DATABASE_URL goes through a pooler in transaction mode (the server process changed between"
            " statements): leadership needs a session; use PgBouncer's session mode or connect directly"
        )
