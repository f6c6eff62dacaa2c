"""What the alert engine and the outbox worker need from durable storage: the ``StateStore`` protocol.

Backends live in :mod:`sloeval.state` (SQLite in ``SLOEVAL_STATE_DIR`` today). A backend keeps alert
states and queued messages, writes one cycle's states together with the messages they cause in one
transaction (so a crash neither loses a resolve nor pages twice), and raises only
:class:`StateStoreError` for storage failures, so callers never see a driver's exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

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
    """Alert states and the outbox; every method is short and safe to call from a worker thread."""

    def load_alerts(self) -> dict[AlertKey, AlertState]:
        """Every stored alert state."""
        ...

    def commit_cycle(
        self,
        states: Mapping[AlertKey, AlertState],
        messages: Sequence[NewMessage],
        now: float,
        *,
        previous: Mapping[AlertKey, AlertState] | None = None,
    ) -> None:
        """Store the alert states and queue the messages, atomically.

        With ``previous`` (what the last commit stored), only what changed need be written.
        """
        ...

    def due(self, channel: str, now: float, limit: int = 50) -> list[OutboxItem]:
        """Pending messages of ``channel`` whose time has come, oldest first, in order per recipient."""
        ...

    def next_attempt_at(self, channel: str) -> float | None:
        """When the earliest pending message of ``channel`` may be tried, if any."""
        ...

    def mark_sent(self, item_id: int, now: float) -> None: ...

    def mark_failed(self, item_id: int, error: str, now: float) -> None: ...

    def reschedule(self, item_id: int, next_attempt_at: float, error: str) -> None: ...

    def counts(self) -> dict[tuple[str, str], int]:
        """(channel, status) -> number of messages, for tests and diagnostics."""
        ...

    def close(self) -> None: ...
