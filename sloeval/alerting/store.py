"""What the alert engine and the outbox worker need from durable storage: the ``StateStore`` protocol.

Backends live in :mod:`sloeval.state` (SQLite in ``SLOEVAL_STATE_DIR`` today). A backend keeps alert
states and queued messages, writes one cycle's states together with the messages they cause in one
transaction (so a crash neither loses a resolve nor pages twice), and raises only
:class:`StateStoreError` for storage failures, so callers never see a driver's exceptions.

:class:`Leadership` says whether this process may run the alert engine and deliver: always, for a
store of one process; while it holds the database's leader lock, for a store shared by replicas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio

from sloeval.alerting.model import AlertKey, AlertState
from sloeval.errors import SloevalError


class StateStoreError(SloevalError):
    """The state cannot be read or written; the message says why and what to do."""


@dataclass(frozen=True)
class NewMessage:
    channel: str
    recipient: str
    subject: str
    body: str
    html: str | None
    deadline: float


@dataclass(frozen=True)
class OutboxItem:
    id: int
    channel: str
    recipient: str
    subject: str
    body: str
    html: str | None
    created_at: float
    deadline: float
    attempts: int


class StateStore(Protocol):
    """Alert states and the outbox, awaited from the event loop (a blocking backend runs in threads)."""

    async def load_alerts(self) -> dict[AlertKey, AlertState]:
        """Every stored alert state."""
        ...

    async def last_cycle_at(self) -> float | None:
        """The ``now`` of the last committed cycle (None before the first): how long nobody looked."""
        ...

    async def commit_cycle(
        self,
        states: Mapping[AlertKey, AlertState],
        messages: Sequence[NewMessage],
        now: float,
        *,
        previous: Mapping[AlertKey, AlertState] | None = None,
    ) -> None:
        """Store the alert states, queue the messages and remember ``now`` as the last cycle, atomically.

        With ``previous`` (what the last commit stored), only what changed need be written.
        """
        ...

    async def due(self, channel: str, now: float, limit: int = 50) -> list[OutboxItem]:
        """Pending messages of ``channel`` whose time has come, oldest first, in order per recipient."""
        ...

    async def next_attempt_at(self, channel: str) -> float | None:
        """When the earliest message of ``channel`` that :meth:`due` could return may be tried, if any.

        Only the oldest pending message of each recipient counts: the ones queued behind it wait
        for it (messages leave in order per recipient), however early their own time is.
        """
        ...

    async def prune(self, channel: str, now: float) -> int:
        """Drop ``channel``'s sent and failed messages older than the backend keeps them; return how many."""
        ...

    async def mark_sent(self, item_id: int, now: float) -> None: ...

    async def mark_failed(self, item_id: int, error: str, now: float) -> None: ...

    async def reschedule(self, item_id: int, next_attempt_at: float, error: str) -> None: ...

    async def counts(self) -> dict[tuple[str, str], int]:
        """(channel, status) -> number of messages, for tests and diagnostics."""
        ...

    async def aclose(self) -> None: ...


class Leadership(Protocol):
    """Whether this replica leads: only the leader runs the alert engine and delivers."""

    @property
    def database_up(self) -> bool:
        """Whether the state database answered the last time it was asked."""
        ...

    def is_leader(self) -> bool:
        """True while this process may commit alert state and send; asked before every send."""
        ...

    async def run(self) -> None:
        """Keep leadership up to date until cancelled (then give it up at once)."""
        ...


class SoleLeader:
    """The leadership of a store only one process uses (its own lock keeps others out)."""

    database_up = True

    def is_leader(self) -> bool:
        return True

    async def run(self) -> None:
        await anyio.sleep_forever()
